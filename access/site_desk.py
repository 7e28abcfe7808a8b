"""The site's side of the centre's word: honour a grant (once), apply a hold order (once), and
write every use and every refusal into the site's own ledger.

The centre decides; the site checks and keeps the record.  The site's 通話記録管理簿 names each
fetch with the request, the call, who approved it, the nonce and the client certificate, and each
refusal with why (a forged or foreign grant, an expired one, a used one, a client the TLS layer
turned away), so the site's book alone answers "who took this recording out, on whose word",
even if the centre's were lost.

Used nonces, applied orders and refused orders are kept in small tables of the index file; their
primary keys make a second use fail even when two connections race.  Every order, applied or
refused, is noted before it is ledgered and answered after, so an order the centre shows again
(its batch never committed) gets the same answer and no second entry, even across a crash in
between.
"""
from __future__ import annotations

import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Self

import structlog

from storage.central_sync import OrderAnswer, PendingOrder
from storage.errors import StorageError
from storage.index import CallRow, connect
from storage.layout import INDEX_FILE, ensure_private_dir
from storage.ledger import Event, LedgerEntry
from storage.records import RecordUnavailable, RequestRefused, ledger_hold, sealed_files, sealed_row, set_hold
from storage.store import Store

from .copy_manifest import call_evidence, call_fields
from .errors import PackageError
from .package import write_package
from .site_grants import (
    Allowed,
    GrantRefused,
    HoldConfirmation,
    HoldOrder,
    Refusal,
    SiteGrant,
    check_grant,
    confirm_hold,
    read_hold_order,
    unverified_fields,
)
from .site_identity import SiteIdentity, load_site

__all__ = ["REFUSALS_LEDGERED", "REFUSAL_WINDOW", "Peer", "RefusalCap", "RefusalSummary", "Served", "SiteDesk",
           "SiteEvent", "answer_hold_order", "apply_hold_order"]

log = structlog.get_logger("callrec.site_server")

REFUSALS_LEDGERED = 10
"""Connection refusals ledgered per source address and window; the rest are counted and summed up."""
REFUSAL_WINDOW = timedelta(minutes=10)
REFUSAL_SOURCES = 4096
"""Source addresses counted at once; refusals from further ones are counted together (a scan from
many addresses must not grow the desk without bound)."""
OTHER_SOURCES = "other addresses"

SCHEMA = """
CREATE TABLE IF NOT EXISTS site_grant_uses (
    nonce TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    request TEXT NOT NULL,
    allow TEXT NOT NULL,
    used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS site_hold_orders (
    order_id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    confirmation TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS site_hold_order_notes (
    order_id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    held_before INTEGER,
    noted_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS site_order_refusals (
    token_sha256 TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    noted_at TEXT NOT NULL,
    confirmation TEXT
);
"""

_CHUNK = 1 << 16


class SiteEvent(StrEnum):
    """The site's ledger events for the centre's grants and orders; stable, auditors grep them."""

    ENROLLED = "site_enrolled"
    REVOCATIONS_UPDATED = "site_revocations_updated"
    GRANT_USED = "site_grant_used"
    GRANT_REFUSED = "site_grant_refused"
    CONNECTION_REFUSED = "site_connection_refused"
    CONNECTIONS_REFUSED_MORE = "site_connections_refused_more"
    FETCH_CUT_SHORT = "site_fetch_cut_short"
    HOLD_ORDER_REFUSED = "site_hold_order_refused"
    HOLD_ORDER_ALREADY = "site_hold_order_already"


@dataclass(frozen=True)
class Peer:
    """Who is on the other end: the address, and the client certificate once TLS verified it."""

    address: str
    subject: str | None = None
    serial: str | None = None

    def details(self) -> dict[str, str]:
        return {"peer": self.address, **({"client": self.subject} if self.subject else {}),
                **({"client_serial": self.serial} if self.serial else {})}

    @property
    def actor(self) -> str:
        return self.subject or f"unidentified client {self.address}"

    @property
    def source(self) -> str:
        """The address without its port: what a scan keeps and a cap counts by."""
        host, sep, port = self.address.rpartition(":")
        return host.strip("[]") if sep and port.isdigit() else self.address


@dataclass(frozen=True)
class RefusalSummary:
    """Refusals from one source that were counted, not ledgered one by one, within a window."""

    source: str
    count: int
    first: datetime
    last: datetime
    refusals: dict[str, int]

    @property
    def text(self) -> str:
        return (f"{self.count} more refused from {self.source} between {self.first.isoformat(timespec='seconds')} "
                f"and {self.last.isoformat(timespec='seconds')}")


@dataclass
class _Window:
    started: datetime
    ledgered: int = 0
    more: int = 0
    first: datetime | None = None
    last: datetime | None = None
    refusals: dict[str, int] = field(default_factory=dict)


class RefusalCap:
    """Which connection refusals go into the ledger one by one, sans I/O (times are passed in).

    A port scan or a misconfigured client would otherwise fill the 管理簿 with one entry per
    attempt.  Per source address, the first `limit` refusals of a `window` are ledgered each;
    the rest only counted, and once the window is over one summary entry says how many more,
    from where and between when.  The journal gets every one.  Counts live in memory: a restart
    writes what is due at `close` (`flush`), so nothing counted goes unsaid."""

    def __init__(self, limit: int = REFUSALS_LEDGERED, window: timedelta = REFUSAL_WINDOW,
                 sources: int = REFUSAL_SOURCES) -> None:
        self.limit = limit
        self.window = window
        self.sources = sources
        self._windows: dict[str, _Window] = {}

    def admit(self, source: str, refusal: str, now: datetime) -> bool:
        """Note a refusal; True when it is to be ledgered itself (call `due` first)."""
        if source not in self._windows and len(self._windows) >= self.sources:
            source = OTHER_SOURCES
        window = self._windows.setdefault(source, _Window(now))
        if window.ledgered < self.limit:
            window.ledgered += 1
            return True
        window.more += 1
        window.first = window.first or now
        window.last = now
        window.refusals[refusal] = window.refusals.get(refusal, 0) + 1
        return False

    def due(self, now: datetime) -> list[RefusalSummary]:
        """The summaries of windows over by `now` (those windows are forgotten)."""
        over = [s for s, w in self._windows.items() if now - w.started >= self.window]
        return self._close(over)

    def flush(self) -> list[RefusalSummary]:
        """Every summary still counting (at close)."""
        return self._close(list(self._windows))

    def _close(self, sources: list[str]) -> list[RefusalSummary]:
        found = []
        for source in sources:
            window = self._windows.pop(source)
            if window.more and window.first is not None and window.last is not None:
                found.append(RefusalSummary(source, window.more, window.first, window.last, dict(window.refusals)))
        return found


@dataclass
class Served:
    """A grant honoured: what to send (the sealed WAV, or the copy package), its SHA-256 (the seal,
    or the package's), its media type, and its size where known; `close` removes what was made."""

    grant: SiteGrant
    media_type: str
    sha256: str
    size: int | None
    chunks: Iterator[bytes]
    ledger_seq: int
    _cleanup: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        self._cleanup()


class SiteDesk:
    """One site's data folder, answering the centre."""

    def __init__(self, store: Store, identity: SiteIdentity, cap: RefusalCap | None = None) -> None:
        self.store = store
        self.identity = identity
        self.cap = cap or RefusalCap()
        self._db = connect(store.data_dir / INDEX_FILE)
        self._db.executescript(SCHEMA)

    @classmethod
    def of(cls, store: Store, cap: RefusalCap | None = None) -> SiteDesk:
        return cls(store, load_site(store.data_dir), cap)

    def close(self) -> None:
        self._db.close()

    def clear_outgoing(self) -> None:
        """Remove copy packages a crash left between making and streaming them: each one was
        ledgered as used, none may stay at the site in a second form."""
        if self.identity.files.outgoing.exists():
            for leftover in self.identity.files.outgoing.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- refusals -------------------------------------------------------------------------
    def refuse_connection(self, peer: Peer, reason: Refusal, message: str) -> None:
        """A client turned away before any grant was read (TLS, certificate, revocation): in the
        journal always, in the ledger as the cap allows (`RefusalCap`)."""
        now = self.store.now()
        self.summarise_refusals(now)
        ledgered = self.cap.admit(peer.source, str(reason), now)
        log.warning("site_fetch.connection_refused", refusal=str(reason), reason=message, ledgered=ledgered,
                    **peer.details())
        if ledgered:
            self.store.ledger.append(SiteEvent.CONNECTION_REFUSED, peer.actor, now, reason=message,
                                     refusal=str(reason), site=self.identity.name, **peer.details())

    def summarise_refusals(self, now: datetime | None = None) -> int:
        """Ledger the summaries of the refusal windows that are over (all of them with no `now`:
        at close); returns how many entries were written."""
        summaries = self.cap.due(now) if now is not None else self.cap.flush()
        for summary in summaries:
            self.store.ledger.append(SiteEvent.CONNECTIONS_REFUSED_MORE, f"unidentified clients {summary.source}",
                                     self.store.now(), reason=summary.text, site=self.identity.name,
                                     peer=summary.source, count=summary.count,
                                     first=summary.first.isoformat(timespec="seconds"),
                                     last=summary.last.isoformat(timespec="seconds"), refusals=summary.refusals)
            log.warning("site_fetch.refusals_summarised", peer=summary.source, count=summary.count)
        return len(summaries)

    def _refuse_grant(self, peer: Peer, exc: GrantRefused, **asked: str) -> None:
        self.store.ledger.append(SiteEvent.GRANT_REFUSED, peer.actor, self.store.now(), reason=str(exc),
                                 refusal=str(exc.reason), site=self.identity.name, **asked, **peer.details())

    # ---- grants ---------------------------------------------------------------------------
    def open(self, token: str, *, call_id: str, request: str, allow: Allowed, peer: Peer) -> Served:
        """What the grant lets the centre fetch, ledgered before a byte leaves; GrantRefused
        (ledgered) when the grant does not hold for this call and request, was used already, or
        the recording cannot be served."""
        asked = {"call_id": call_id, "request": request, "allow": str(allow)}
        now = self.store.now()
        try:
            grant = check_grant(token, self.identity.grant_key, site=self.identity.name, call_id=call_id,
                                request=request, allow=allow, now=now)
            row = self._row(call_id)
            self._use(grant, now)
            served = self._copy(grant, row) if grant.allow is Allowed.COPY else self._listen(grant, row)
        except GrantRefused as exc:
            self._refuse_grant(peer, exc, **asked)
            raise
        try:
            entry = self.store.ledger.append(
                SiteEvent.GRANT_USED, peer.actor, now, reason=f"request {grant.request}",
                approved_by=grant.approved_by, site=self.identity.name, **asked, nonce=grant.nonce,
                issued_at=grant.issued_at.isoformat(), not_after=grant.not_after.isoformat(),
                sha256=served.sha256, sealed_sha256=row.sha256,
                **({"copy": grant.copy.get("copy_number")} if grant.copy else {}), **peer.details())
        except BaseException:
            served.close()
            raise
        served.ledger_seq = entry.seq
        return served

    def cut_short(self, served: Served, peer: Peer, sent: int, why: str) -> None:
        """The stream broke off after its use was ledgered: say how far it got."""
        self.store.ledger.append(SiteEvent.FETCH_CUT_SHORT, peer.actor, self.store.now(), reason=why,
                                 call_id=served.grant.call_id, request=served.grant.request, nonce=served.grant.nonce,
                                 bytes_sent=sent, use_entry=served.ledger_seq, **peer.details())

    def _row(self, call_id: str) -> CallRow:
        try:
            return sealed_row(self.store, call_id)
        except RecordUnavailable as exc:
            raise GrantRefused(Refusal.UNAVAILABLE, str(exc)) from None

    def _use(self, grant: SiteGrant, now: datetime) -> None:
        try:
            self._db.execute("INSERT INTO site_grant_uses (nonce, call_id, request, allow, used_at) "
                             "VALUES (?, ?, ?, ?, ?)", (grant.nonce, grant.call_id, grant.request, str(grant.allow),
                                                        now.isoformat(timespec="seconds")))
        except sqlite3.IntegrityError:
            raise GrantRefused(Refusal.REPLAYED, f"the grant {grant.nonce} was used already") from None

    def _listen(self, grant: SiteGrant, row: CallRow) -> Served:
        try:
            audio = sealed_files(self.store, row)[0]
        except StorageError as exc:
            raise GrantRefused(Refusal.UNAVAILABLE, str(exc)) from None
        return Served(grant, "audio/wav", audio.sha256, None, audio.chunks, 0)

    def _copy(self, grant: SiteGrant, row: CallRow) -> Served:
        """The numbered copy package, made here (only the site holds the key that signs it), kept
        until streamed, then removed: the centre keeps the copy, the site its ledger entry.  Its
        manifest is the box's (access/copy_manifest.py): the centre's fields, the call's, and for
        an evidence export (the grant's copy says `evidence: true`) the proof of notice and the
        marks, which only the site holds."""
        assert grant.copy is not None
        ensure_private_dir(self.identity.files.outgoing)
        folder = Path(tempfile.mkdtemp(dir=self.identity.files.outgoing))
        path = folder / "copy.zip"
        try:
            manifest = {**grant.copy, "request": grant.request, "site": self.identity.name, "call": call_fields(row)}
            if grant.copy.get("evidence") is True:
                manifest["evidence"] = call_evidence(self.store, row, str(self.store.tz))
            info = write_package(path, sealed_files(self.store, row), manifest, self.store.master)
        except (PackageError, StorageError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise GrantRefused(Refusal.UNAVAILABLE, f"the copy package cannot be made: {exc}") from None
        return Served(grant, "application/zip", info.sha256, path.stat().st_size, _read(path), 0,
                      lambda: shutil.rmtree(folder, ignore_errors=True))

    # ---- hold orders ----------------------------------------------------------------------
    def apply_hold_order(self, token: str, actor: str = "centre") -> str:
        """Apply the centre's hold order and answer with the site's signed confirmation.  An
        order applied before gets the same confirmation again and changes nothing; an order
        that cannot apply (unknown or erased call) is confirmed as refused, so the centre stops
        showing it pending and shows why."""
        try:
            order = read_hold_order(token, self.identity.grant_key, site=self.identity.name)
        except GrantRefused as exc:
            self.store.ledger.append(SiteEvent.HOLD_ORDER_REFUSED, actor, self.store.now(), reason=str(exc),
                                     refusal=str(exc.reason), site=self.identity.name)
            raise
        known = self._db.execute("SELECT confirmation FROM site_hold_orders WHERE order_id = ?",
                                 (order.order_id,)).fetchone()
        if known is not None:
            return str(known[0])
        row = self.store.index.get(order.call_id)
        noted = self._db.execute("SELECT held_before FROM site_hold_order_notes WHERE order_id = ?",
                                 (order.order_id,)).fetchone()
        entry = None
        if noted is None:
            self._db.execute("INSERT INTO site_hold_order_notes (order_id, call_id, held_before, noted_at) "
                             "VALUES (?, ?, ?, ?)", (order.order_id, order.call_id, _held(row),
                                                     self.store.now().isoformat(timespec="seconds")))
        else:
            entry = self._entry_after_crash(order, None if noted[0] is None else bool(noted[0]), row)
        if entry is None:
            entry = self._apply(order, row)
        state, detail = _outcome(entry, order.hold)
        confirmation = confirm_hold(self.identity.key, HoldConfirmation(
            site=self.identity.name, order_id=order.order_id, call_id=order.call_id, state=state, detail=detail,
            at=entry.at, ledger_seq=entry.seq))
        self._db.execute("INSERT INTO site_hold_orders (order_id, call_id, confirmation, applied_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
                         (order.order_id, order.call_id, confirmation, entry.at.isoformat(timespec="seconds")))
        stored = self._db.execute("SELECT confirmation FROM site_hold_orders WHERE order_id = ?",
                                  (order.order_id,)).fetchone()
        return str(stored[0])

    def _apply(self, order: HoldOrder, row: CallRow | None) -> LedgerEntry:
        """Apply the order as the row stands and ledger what happened: held or released, already
        so, or refused (unknown or erased call)."""
        now = self.store.now()
        via = {"order": order.order_id, "via": "centre", "ordered_by": order.ordered_by}
        if _held(row) == order.hold:
            return self.store.ledger.append(SiteEvent.HOLD_ORDER_ALREADY, order.ordered_by, now, reason=order.reason,
                                            approved_by=order.approved_by, call_id=order.call_id, **via)
        try:
            return set_hold(self.store, order.call_id, order.hold, actor=order.ordered_by, reason=order.reason,
                            approved_by=order.approved_by, role=via)
        except (RecordUnavailable, RequestRefused) as exc:
            return self.store.ledger.append(SiteEvent.HOLD_ORDER_REFUSED, order.ordered_by, now, reason=str(exc),
                                            approved_by=order.approved_by, refusal=str(Refusal.UNAVAILABLE),
                                            call_id=order.call_id, site=self.identity.name, **via)

    def _entry_after_crash(self, order: HoldOrder, held_before: bool | None,
                           row: CallRow | None) -> LedgerEntry | None:
        """An order noted and never answered had its turn cut short by a crash.  Its entry, if
        written, is found in the ledger rather than written again.  If the crash fell inside
        `set_hold`, after the row changed and before the ledger did, the row now says what the
        order asked where it said otherwise when the order was noted: the entry is written now,
        so no hold stands without its line in the 管理簿.  Otherwise nothing was done, and the
        order is applied as the first time."""
        found = None
        for entry in self.store.ledger.entries():
            if entry.details.get("order") == order.order_id and "token_sha256" not in entry.details:
                found = entry
        if found is not None:
            log.info("site_orders.entry_found", order=order.order_id, seq=found.seq)
            return found
        if held_before is None or held_before == order.hold or _held(row) != order.hold:
            return None
        assert row is not None
        log.warning("site_orders.hold_ledgered_after_crash", order=order.order_id, call_id=order.call_id)
        return ledger_hold(self.store, order.call_id, order.hold, actor=order.ordered_by, reason=order.reason,
                           approved_by=order.approved_by, now=self.store.now(),
                           role={"order": order.order_id, "via": "centre", "ordered_by": order.ordered_by})

    def answer_order(self, pending: PendingOrder) -> OrderAnswer:
        """The answer the sync carries back for an order the centre shows pending: the order
        applied (`apply_hold_order`), or, when it does not verify or is not the order the centre's
        row names, refused (ledgered here) with a refusal the site signs, so the centre stops
        showing it pending and shows why."""
        try:
            order = read_hold_order(pending.token, self.identity.grant_key, site=self.identity.name)
            if (order.order_id, order.call_id) != (pending.order_id, pending.call_id):
                raise GrantRefused(Refusal.MALFORMED, f"the signed order is {order.order_id} for call "
                                   f"{order.call_id}, not the {pending.order_id} for {pending.call_id} it came as")
        except GrantRefused as exc:
            token = self._refuse_order(pending, exc)
        else:
            token = self.apply_hold_order(pending.token)
        fields = unverified_fields(token)
        return OrderAnswer(pending.order_id, token, str(fields["state"]), str(fields["detail"]), str(fields["at"]),
                           fields["ledger_seq"])

    def _refuse_order(self, pending: PendingOrder, exc: GrantRefused) -> str:
        """The signed refusal of an order that does not verify, ledgered once per token and row: the
        same token shown again under the same order and call (a batch that carried the answer never
        committed at the centre) gets the answer it got before.  The token is noted first; a noted
        token without an answer had its turn cut short by a crash, and its entry, if written, is
        found in the ledger by the token's SHA-256 rather than written again."""
        digest = hashlib.sha256(f"{pending.order_id}\n{pending.call_id}\n{pending.token}".encode()).hexdigest()
        noted = self._db.execute("SELECT confirmation FROM site_order_refusals WHERE token_sha256 = ?",
                                 (digest,)).fetchone()
        if noted is not None and noted[0] is not None:
            return str(noted[0])
        entry = None
        if noted is None:
            self._db.execute("INSERT INTO site_order_refusals (token_sha256, order_id, call_id, noted_at) "
                             "VALUES (?, ?, ?, ?)", (digest, pending.order_id, pending.call_id,
                                                     self.store.now().isoformat(timespec="seconds")))
        else:
            entry = next((e for e in self.store.ledger.entries() if e.event == SiteEvent.HOLD_ORDER_REFUSED
                          and e.details.get("token_sha256") == digest), None)
        if entry is None:
            entry = self.store.ledger.append(SiteEvent.HOLD_ORDER_REFUSED, "centre", self.store.now(), reason=str(exc),
                                             refusal=str(exc.reason), site=self.identity.name,
                                             order=pending.order_id, call_id=pending.call_id, via="sync",
                                             token_sha256=digest)
        else:
            log.info("site_orders.refusal_found", order=pending.order_id, seq=entry.seq)
        token = confirm_hold(self.identity.key, HoldConfirmation(
            site=self.identity.name, order_id=pending.order_id, call_id=pending.call_id, state="refused",
            detail=entry.reason or str(exc), at=entry.at, ledger_seq=entry.seq))
        self._db.execute("UPDATE site_order_refusals SET confirmation = ? WHERE token_sha256 = ?", (token, digest))
        return token


def _held(row: CallRow | None) -> bool | None:
    """Whether a call is held, or None when there is no sealed, unerased recording to hold."""
    if row is None or not row.sealed or row.erased_at:
        return None
    return bool(row.held)


def _outcome(entry: LedgerEntry, hold: bool) -> tuple[str, str]:
    """The confirmation's state and detail for the ledger entry that answered an order."""
    if entry.event == SiteEvent.HOLD_ORDER_REFUSED:
        return "refused", entry.reason or ""
    if entry.event == SiteEvent.HOLD_ORDER_ALREADY:
        return ("held" if hold else "released"), "already so at the site"
    return ("held" if entry.event == Event.HOLD_ADDED else "released"), ""


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


def answer_hold_order(store: Store, order: PendingOrder) -> OrderAnswer:
    """The sync's entry point for a pending order (callrec/central.py hands it to the sender)."""
    with SiteDesk.of(store) as desk:
        return desk.answer_order(order)


def apply_hold_order(store: Store, order: str) -> str:
    """The site's entry point for a hold order, whoever carries it (the sync's outbox, a file on a
    stick): `order` is the centre's token (`access.site_grants.issue_hold_order`), the answer the
    site's signed confirmation (`access.site_grants.check_confirmation` reads it at the centre)."""
    with SiteDesk.of(store) as desk:
        return desk.apply_hold_order(order)
