"""The access layer at the centre of several sites: the same people, rules, requests and copies
as on one appliance (access/desk.py), over the centre's PostgreSQL.

A call is named by its site and its id, written "site/id" (`call_ref`): a request may name calls
of several sites.  The calls are the rows the sites synced (the centre's `calls` table).  Every act
is written into the centre's own ledger chain (access/centre_ledger.py).

Audio stays at the site (issue 19, 4): to listen to a call or copy it, the centre signs a grant for
that call and that request (access/site_grants.py), ledgers it, and hands it to a fetcher that
calls the owning site over mutual TLS (callrec/site_client.py, injected: access/ does not import
the CLI's package).  What comes back is kept only if it is the call as sealed: a recording whose
SHA-256 is the seal the site synced; a copy package made and signed at the site (only the site
holds the key that signs its packages) whose signature verifies, whose number, site and call are
the ones granted, and whose recording's SHA-256 is that seal.  Anything else is removed and the
rejection ledgered.  The site ledgers the same fetch in its own book.

Where each site's fetch server listens is in the centre's `site_addresses` table
(`callrec centre site-address SITE HOST:PORT`); the site's certificate, not the address, says
who answered.
"""
from __future__ import annotations

import csv
import io
import json
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policy.access import Action
from policy.schema import Policy
from storage.layout import ensure_private_dir
from storage.ledger import LedgerEntry
from wire.errors import CallrecError

from . import requests as core
from .centre_book import CentreBook, SiteCheck
from .centre_ledger import CentreLedger
from .copies import CopyRecord, copy_deadline, copy_number
from .desk import DISCLOSING, AccessDesk, Fulfilment
from .errors import AccessError, Forbidden
from .forms import LEDGER_COLUMNS, ledger_book_rows, table_pdf
from .package import MANIFEST, verify_package
from .requests import AccessEvent, LedgerNote, Request, RequestState
from .rules import Actor, Grant
from .site_grants import Allowed, check_site_name, issue_grant, unverified_fields
from .store import AccessStore

__all__ = ["CENTRE_LABEL", "DISCLOSING", "CentreCall", "CentreEvent", "CentreService", "Fulfilment", "SiteFetched",
           "SiteFetcher", "call_ref", "split_ref"]

EXPORTS = "exports"
LISTENING = "listening"
GRANT_LIFETIME = timedelta(minutes=10)
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A call id as it may name a file at the centre; an id outside it is refused, not mangled."""
_CHUNK = 1 << 16
BOOK_SITE_COLUMN = "拠点"
CENTRE_LABEL = "センター"
"""How the combined book names the centre's own entries in its 拠点 column."""
_BOOK_WIDTHS = (22, 12, 38, 32, 24, 20, 40, 22, 51)


class CentreEvent(StrEnum):
    """The centre's own ledger events beside the access layer's; stable, auditors grep them."""

    GRANT_ISSUED = "grant_issued"
    SITE_FETCHED = "site_fetched"
    SITE_FETCH_FAILED = "site_fetch_failed"
    SITE_FETCH_REJECTED = "site_fetch_rejected"
    SITE_ADDRESS_SET = "site_address_set"


def call_ref(site: str, call_id: str) -> str:
    """How the centre names a call in a request and a copy: its site, a slash, its id there."""
    return f"{site}/{call_id}"


def split_ref(ref: str) -> tuple[str, str]:
    """(site, call id) of a "site/id" reference; AccessError for anything else."""
    site, sep, call_id = ref.partition("/")
    if not sep or not call_id or not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", site):
        raise AccessError(f"{ref!r}: at the centre a call is named SITE/ID (e.g. higashi/20260401-0001)")
    return site, call_id


_CALL_COLUMNS = ("site", "id", "started_at", "answered_at", "ended_at", "duration", "direction", "local_number",
                 "remote_number", "extension", "withheld_number", "sha256", "audio_format", "state", "erased_at",
                 "erased_reason", "held")


@dataclass(frozen=True, slots=True)
class CentreCall:
    """A call as the centre holds it (synced from its site), with times as ISO text in the policy's
    zone as the forms and manifests take them."""

    site: str
    id: str
    started_at: str
    answered_at: str | None
    ended_at: str | None
    duration: float | None
    direction: str
    local_number: str | None
    remote_number: str | None
    extension: str | None
    withheld_number: str | None
    sha256: str | None
    audio_format: str | None
    state: str
    erased_at: str | None
    erased_reason: str | None
    held: bool

    @property
    def ref(self) -> str:
        return call_ref(self.site, self.id)

    @property
    def sealed(self) -> bool:
        return self.state == "sealed"


@dataclass(frozen=True, slots=True)
class SiteFetched:
    """What a fetch brought: the file, its SHA-256 as hashed on arrival (the client keeps nothing
    that differs from what the site announced), and the site's ledger entry for the fetch."""

    path: Path
    sha256: str
    size: int
    site_ledger_seq: int | None


class SiteFetcher(Protocol):
    """Fetch what `token` grants from the site's fetch server at host:port into the new file
    `output` (mutual TLS, the centre's client certificate); raise a CallrecError on any failure,
    leaving nothing at `output`.  callrec/centre_access.py makes one from the centre's CA."""

    def __call__(self, site: str, host: str, port: int, token: str, output: Path) -> SiteFetched: ...


class CentreService(AccessDesk):
    """People, requests and copies at the centre of several sites.

    `conn` is a psycopg 3 connection in autocommit mode (storage.central_link.connect), kept open
    by its owner; `ledger_key` the centre ledger's key (MasterKey.derive(CENTRE_KEY_LABEL));
    `grant_key` the centre's Ed25519 grant key (callrec/pki.py); `folder` the centre's folder,
    where copies (exports/) and listening files in passing (listening/) are written."""

    def __init__(self, conn: Any, policy: Policy, *, ledger_key: bytes, grant_key: Ed25519PrivateKey,
                 folder: Path, fetcher: SiteFetcher | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.conn = conn
        self._setup(policy, lambda: AccessStore(conn))
        self.ledger = CentreLedger(conn, ledger_key)
        self._grant_key = grant_key
        self.folder = folder
        self._fetcher = fetcher
        self._zone = ZoneInfo(policy.timezone)
        self._clock = clock or (lambda: datetime.now(self._zone))

    # ---- where things are ---------------------------------------------------------
    def now(self) -> datetime:
        return self._clock()

    def _append(self, event: StrEnum, actor: str, now: datetime, reason: str | None = None,
                approved_by: str | None = None, **details: object) -> LedgerEntry:
        return self.ledger.append(event, actor, now, reason=reason, approved_by=approved_by, **details)

    def _find_call(self, call_id: str) -> CentreCall | None:
        site, local_id = split_ref(call_id)
        row = self.conn.execute(f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE site = %s AND id = %s",
                                (site, local_id)).fetchone()
        if row is None:
            return None
        values = dict(zip(_CALL_COLUMNS, row, strict=True))
        for name in ("started_at", "answered_at", "ended_at", "erased_at"):
            if values[name] is not None:
                values[name] = values[name].astimezone(self._zone).isoformat(timespec="milliseconds")
        return CentreCall(**values)

    def call(self, ref: str) -> CentreCall:
        """One call of any site, as the centre holds it ("site/id")."""
        found = self._find_call(ref)
        if found is None:
            raise AccessError(f"no call {ref} at the centre (has its site synced?)")
        return found

    def _ledger_entries(self) -> Iterable[LedgerEntry]:
        return self.ledger.entries()

    def _signing_fingerprint(self, copies: list[CopyRecord]) -> str | None:
        """The keys the sites signed these copies' packages with (each site signs its own)."""
        found = sorted({f for c in copies if (f := _package_signer(Path(c.package))) is not None})
        return ", ".join(found) or None

    def _default_exports(self) -> Path:
        return self.folder / EXPORTS

    # ---- the sites' addresses ---------------------------------------------------------
    def set_site_address(self, by: Actor | None, site: str, host: str, port: int) -> None:
        """Where a site's fetch server listens.  Set by a person who manages users, or (by=None)
        from the administrator's shell at the centre, like the first account."""
        check_site_name(site)
        if not 0 < port < 65536 or not host.strip():
            raise AccessError(f"{host}:{port} is not an address to call")
        grant = self._permit(by, Action.MANAGE_USERS) if by is not None else None
        who = grant.actor if grant is not None else _shell_user()
        with self.conn.transaction():
            self.conn.execute("INSERT INTO site_addresses (site, host, port, set_by) VALUES (%s, %s, %s, %s) "
                              "ON CONFLICT (site) DO UPDATE SET host = excluded.host, port = excluded.port, "
                              "set_by = excluded.set_by, set_at = now()", (site, host.strip(), port, who))
            self._append(CentreEvent.SITE_ADDRESS_SET, who, self.now(), site=site, host=host.strip(), port=port,
                         **(grant.ledger_details() if grant is not None else {}))

    def site_addresses(self) -> dict[str, tuple[str, int]]:
        return {str(s): (str(h), int(p)) for s, h, p in self.conn.execute(
            "SELECT site, host, port FROM site_addresses ORDER BY site")}

    def _address(self, site: str) -> tuple[str, int]:
        row = self.conn.execute("SELECT host, port FROM site_addresses WHERE site = %s", (site,)).fetchone()
        if row is None:
            raise AccessError(f"the centre does not know where site {site} listens: "
                              f"callrec centre site-address {site} HOST:PORT")
        return str(row[0]), int(row[1])

    # ---- handing recordings out: fetched from the owning site -----------------------
    def _fetch(self, grant: Grant, request: Request, call: CentreCall, allow: Allowed, output: Path,
               copy: dict[str, Any] | None = None) -> SiteFetched:
        """Sign a grant for this call and request, ledger it, and fetch; a failure is ledgered."""
        if self._fetcher is None:
            raise AccessError("this centre service has no way to reach the sites (no fetcher given)")
        host, port = self._address(call.site)
        now = self.now()
        token = issue_grant(self._grant_key, site=call.site, call_id=call.id, request=request.number, allow=allow,
                            now=now, approved_by=request.decided_by, lifetime=GRANT_LIFETIME, copy=copy)
        nonce = str(unverified_fields(token)["nonce"])
        where = {"site": call.site, "call_id": call.id, "request": request.number, "allow": str(allow),
                 "nonce": nonce}
        self._append(CentreEvent.GRANT_ISSUED, grant.actor, now, reason=f"request {request.number}",
                     approved_by=request.decided_by, **where, not_after=(now + GRANT_LIFETIME).isoformat(
                         timespec="seconds"), address=f"{host}:{port}", **grant.ledger_details())
        try:
            fetched = self._fetcher(call.site, host, port, token, output)
        except CallrecError as exc:
            output.unlink(missing_ok=True)
            self._append(CentreEvent.SITE_FETCH_FAILED, grant.actor, self.now(), reason=str(exc), **where)
            raise AccessError(f"{call.ref}: the fetch from site {call.site} failed: {exc}") from None
        return fetched

    def _reject(self, grant: Grant, request: Request, call: CentreCall, path: Path, why: str,
                fetched: SiteFetched) -> AccessError:
        """A fetch that is not the call as sealed: removed, ledgered, and refused."""
        path.unlink(missing_ok=True)
        self._append(CentreEvent.SITE_FETCH_REJECTED, grant.actor, self.now(), reason=why, site=call.site,
                     call_id=call.id, request=request.number, sha256=fetched.sha256, sealed_sha256=call.sha256,
                     site_ledger_seq=fetched.site_ledger_seq)
        return AccessError(f"{call.ref}: what site {call.site} sent is not the call as sealed ({why}); nothing "
                           "was kept")

    def _sealed(self, ref: str) -> CentreCall:
        call = self.call(ref)
        if call.erased_at:
            raise AccessError(f"{ref} was erased on {call.erased_at} ({call.erased_reason})")
        if not call.sealed or not call.sha256:
            raise AccessError(f"{ref} is still being recorded (or its seal has not reached the centre yet)")
        if not _SAFE.fullmatch(call.id):
            raise AccessError(f"{ref}: the call's id cannot name a file at the centre")
        return call

    def _copies(self, grant: Grant, request: Request, holder: str, folder: Path, now: datetime) -> Fulfilment:
        """One numbered copy package per call, made and signed at the owning site against a copy
        grant, checked here before it is registered.  A call that already has a copy for this
        request (a fulfilment cut short by a site that was away) is not fetched again."""
        made: list[CopyRecord] = []
        deadline = copy_deadline(self.access.copies, now.date())
        have = {c.call_id: c for c in self.tables.copies() if c.request == request.number and not c.disposed}
        for ref in request.call_ids:
            if ref in have:
                made.append(have[ref])
                continue
            call = self._sealed(ref)
            with self.tables.transaction():
                number = copy_number(now.year, self.tables.next_serial(f"copy-{now.year}"))
            path = folder / f"{number}.zip"
            fetched = self._fetch(grant, request, call, Allowed.COPY, path,
                                  copy=self._copy_fields(number, request, holder, deadline))
            problem = _package_problem(path, number, call, evidence=self._is_evidence(request))
            if problem is not None:
                raise self._reject(grant, request, call, path, problem, fetched)
            record = CopyRecord(number, request.number, ref, str(call.sha256), str(path), holder, grant.actor,
                                now.isoformat(timespec="seconds"), deadline.isoformat() if deadline else None)
            self.tables.add_copy(record)
            self._ledger(LedgerNote(AccessEvent.COPY_MADE, grant, approved_by=request.decided_by, details={
                "copy": number, "request": request.number, "call_id": ref, "site": call.site, "sha256": call.sha256,
                "package_sha256": fetched.sha256, "holder": holder, "deadline": record.deadline, "package": str(path),
                "signing_key": _package_signer(path), "site_ledger_seq": fetched.site_ledger_seq}), now)
            made.append(record)
        return Fulfilment(request, copies=tuple(made))

    def _copy_fields(self, number: str, request: Request, holder: str, deadline: date | None) -> dict[str, Any]:
        """The copy's manifest as the centre fills it in; the site adds the call's own fields and,
        for an evidence export (`evidence: true`), the call's proof of notice and marks, which
        only the site holds (the centre has neither the notices nor the marks' notes)."""
        purpose = self.access.purpose(request.purpose)
        return {
            "copy_number": number, "organisation": self.access.forms,
            "purpose": {"key": request.purpose, "label": purpose.label if purpose else request.purpose,
                        "clause": purpose.clause if purpose else ""},
            "approved_by": request.decided_by, "approved_at": request.decided_at, "holder": holder,
            "conditions": self.access.copies.conditions, "dispose_by": deadline.isoformat() if deadline else None,
            "keep_rule": {"keep": self.access.copies.keep, "clause": self.access.copies.clause},
            **({"evidence": True} if self._is_evidence(request) else {}),
        }

    def _is_evidence(self, request: Request) -> bool:
        purpose = self.access.purpose(request.purpose)
        return purpose is not None and purpose.evidence

    def _listening(self, grant: Grant, request: Request, folder: Path, now: datetime) -> Fulfilment:
        if self.access.on_device_listening == "never":
            raise Forbidden(f"recordings are not listened to on the device ({self.access.listening_clause})")
        files = []
        for ref in request.call_ids:
            call = self._sealed(ref)
            out = folder / f"{request.number}-{call.site}-{call.id}.wav"
            fetched = self._fetch_recording(grant, request, call, out)
            files.append(out)
            self._ledger(LedgerNote(AccessEvent.LISTENED, grant, approved_by=request.decided_by, details={
                "request": request.number, "call_id": ref, "site": call.site, "sha256": fetched.sha256,
                "site_ledger_seq": fetched.site_ledger_seq}), now)
        return Fulfilment(request, files=tuple(files))

    def _fetch_recording(self, grant: Grant, request: Request, call: CentreCall, out: Path) -> SiteFetched:
        fetched = self._fetch(grant, request, call, Allowed.LISTEN, out)
        if fetched.sha256 != call.sha256:
            raise self._reject(grant, request, call, out, f"SHA-256 {fetched.sha256} is not the seal {call.sha256}",
                               fetched)
        self._append(CentreEvent.SITE_FETCHED, grant.actor, self.now(), reason=f"request {request.number}",
                     approved_by=request.decided_by, site=call.site, call_id=call.id, request=request.number,
                     sha256=fetched.sha256, size=fetched.size, site_ledger_seq=fetched.site_ledger_seq)
        return fetched

    def listen(self, by: Actor, number: str, call_id: str) -> Iterator[bytes]:
        """One call of an approved listening request, fetched from its site, checked against its
        seal, streamed to the browser and removed; ledgered; the first play fulfils the request."""
        grant, request = self._may_listen(by, number, call_id)
        call = self._sealed(call_id)
        passing = self.folder / LISTENING
        ensure_private_dir(passing)
        out = passing / f"{secrets.token_hex(8)}.wav"
        fetched = self._fetch_recording(grant, request, call, out)
        now = self.now()
        self._ledger(LedgerNote(AccessEvent.LISTENED, grant, approved_by=request.decided_by, details={
            "request": number, "call_id": call_id, "site": call.site, "sha256": fetched.sha256, "via": "console",
            "site_ledger_seq": fetched.site_ledger_seq}), now)
        if request.state is RequestState.APPROVED:
            moved, note = core.fulfilled(request, grant, now, holder=grant.actor)
            self.tables.save_request(moved)
            self._ledger(note, now)
        return _stream_then_remove(out)

    # ---- the centre's chain, and the one 管理簿 of every site -------------------------
    def verify_ledger(self, by: Actor | None = None) -> list[str]:
        """The centre's chain checked (problems, empty when intact); by a person who may read the
        ledger, or from the administrator's shell (by=None)."""
        if by is not None:
            self._permit(by, Action.READ_LEDGER)
        return self.ledger.verify()

    def book(self, by: Actor | None = None) -> CentreBook:
        """The combined 通話記録管理簿: the centre's entries and every site's synced ones
        (access/centre_book.py); for a person who may read the ledger, or the administrator's shell."""
        if by is not None:
            self._permit(by, Action.READ_LEDGER)
        return CentreBook(self.conn, self._zone)

    def verify_book(self, by: Actor | None = None) -> tuple[list[str], list[SiteCheck]]:
        """The centre's chain by its MAC, and each site's synced chain as far as the centre can
        check it without the site's key (CentreBook.check_site)."""
        return self.verify_ledger(by), self.book(by).check_sites()

    def ledger_book(self, by: Actor, pdf: bool) -> bytes:
        """The one 管理簿 of the city, with a 拠点 column: the centre's entries and every site's,
        oldest first."""
        entries = list(self.book(by).entries())
        rows = ledger_book_rows(e.as_ledger() for e in entries)
        table = [(BOOK_SITE_COLUMN, *LEDGER_COLUMNS),
                 *((e.site or CENTRE_LABEL, *row) for e, row in zip(entries, rows, strict=True))]
        if pdf:
            return table_pdf("通話記録管理簿", self.access.forms, "", table, _BOOK_WIDTHS)
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\r\n").writerows(table)
        return out.getvalue().encode("utf-8-sig")


def _shell_user() -> str:
    from storage.store import actor
    return actor()


def _stream_then_remove(path: Path) -> Iterator[bytes]:
    """The file's bytes, then the file is gone (also when the listener leaves half way)."""
    try:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def _package_signer(path: Path) -> str | None:
    """The fingerprint a package's manifest names as its signer (verify_package checks it)."""
    try:
        with zipfile.ZipFile(path) as zf:
            signer = json.loads(zf.read(MANIFEST)).get("signer") or {}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    value = signer.get("fingerprint")
    return value if isinstance(value, str) else None


def _package_problem(path: Path, number: str, call: CentreCall, evidence: bool = False) -> str | None:
    """Why a package from a site is not the copy granted, or None: its signature and every file's
    SHA-256 must verify, it must be copy `number` of this site's call, its recording must be the
    call's seal as the centre holds it, and an evidence export must carry its evidence (a site
    that ignored the grant's `evidence: true` made an ordinary copy)."""
    report = verify_package(path)
    if not report.ok:
        return "; ".join(str(p) for p in report.problems)
    manifest = report.manifest or {}
    call_fields = manifest.get("call") if isinstance(manifest.get("call"), dict) else {}
    if manifest.get("copy_number") != number:
        return f"the package is copy {manifest.get('copy_number')}, not {number}"
    if manifest.get("site") != call.site or call_fields.get("id") != call.id:
        return f"the package is of {manifest.get('site')}/{call_fields.get('id')}, not {call.ref}"
    audio = next((f for f in report.files if f.name == f"{number}.wav"), None)
    if audio is None or audio.sha256 != call.sha256:
        return f"its recording's SHA-256 {audio.sha256 if audio else None} is not the seal {call.sha256}"
    if evidence and not isinstance(manifest.get("evidence"), dict):
        return "an evidence export without the call's proof of notice and marks"
    return None
