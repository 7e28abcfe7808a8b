"""The sync to the centre, sans I/O: outbox entries, rows and ledger lines in, batches out; and
the sender's health (lag, back-off, when to warn) from the times it is given.

A batch is the unit the centre applies in one transaction: the rows the entries name (as they
stand now, each with `version` = the highest outbox seq queued for it, so an older copy never
overwrites a newer one and the same copy twice changes nothing), the changes themselves in
order, the ledgers' next lines, and the cursor the centre keeps (the last seq in the batch).
The adapter (storage/central_link.py) reads the inputs and writes the batch.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import StorageError
from .outbox import OutboxEntry

__all__ = ["CENTRAL_COLUMNS", "LEDGERS", "MARK_COLUMNS", "Batch", "LedgerLine", "OrderAnswer", "PendingOrder",
           "SyncHealth", "SyncRefused", "build_batch", "central_mark", "central_row", "ledger_lines"]

CENTRAL_COLUMNS = (
    "id", "sip_call_id", "started_at", "answered_at", "ended_at", "duration", "direction", "local_number",
    "remote_number", "caller", "callee", "caller_withheld", "codecs", "audio_format", "audio_frames", "sha256",
    "streams", "dtmf", "undecoded", "late_samples", "end_reason", "complete", "state", "recorded_at", "size_bytes",
    "held", "hold_reason", "held_since", "erased_at", "erased_reason", "notice_id", "announced_at", "extension",
    "withheld_number", "leg_call_ids", "leg", "started_by", "start_requested_at", "gaps", "stored_on", "archived_at",
    "seal_mac", "evidence_until",
)
"""What the centre keeps of a row: everything but where the site keeps its files (audio stays
at the site) and the seal ledger's local bookkeeping (the centre has the seal ledger itself)."""

JSON_COLUMNS = frozenset({"codecs", "streams", "dtmf", "undecoded", "leg_call_ids", "gaps"})
BOOL_COLUMNS = frozenset({"caller_withheld", "complete", "held"})
LEDGERS = ("ledger", "seals")
"""The site's two chains by the name the centre files them under: the 通話記録管理簿 and the seal ledger."""


MARK_COLUMNS = ("id", "call_id", "category", "marked_by", "marked_at", "via", "hold_until", "withdrawn_by",
                "withdrawn_at", "withdrawn_reason", "released_by", "released_at", "released_reason")
"""What the centre keeps of a harassment mark (storage/marks.py): who, when, how, which category and
its hold, and its withdrawal; never the note (it may tell what the caller said: only whether
there is one) and no number (the calls row holds what the centre may know of the caller)."""


class SyncRefused(StorageError):
    """The centre must not take this batch as it is (a ledger that does not continue the chain
    the centre holds, a site name another data folder uses); says which and why."""


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One ledger entry as the site stored it, with its parsed fields and the byte offset after it."""

    ledger: str
    entry: dict[str, Any]
    line: str
    end: int


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """A hold order the centre placed for this site and still shows as pending."""

    order_id: str
    call_id: str
    token: str


@dataclass(frozen=True, slots=True)
class OrderAnswer:
    """The site's answer to a hold order, carried back in a batch: `confirmation` is the site's
    signed token (the centre checks it with the site's certificate), `outcome` held, released
    or refused, `at` ISO 8601, `ledger_seq` the site's ledger entry that recorded it."""

    order_id: str
    confirmation: str
    outcome: str
    detail: str
    at: str
    ledger_seq: int | None

    @property
    def state(self) -> str:
        """The centre's state of the order once answered."""
        return "refused" if self.outcome == "refused" else "confirmed"


@dataclass(frozen=True)
class Batch:
    site: str
    instance: str
    last_seq: int
    """The cursor after this batch: the highest outbox seq it covers (0 with no entries)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    changes: list[OutboxEntry] = field(default_factory=list)
    ledger: list[LedgerLine] = field(default_factory=list)
    backlog: int = 0
    """Outbox entries left at the site after this batch."""
    oldest_pending: float | None = None
    marks: list[dict[str, Any]] = field(default_factory=list)
    """The marks of the calls in `rows` (MARK_COLUMNS, has_note and the call's version)."""
    answers: list[OrderAnswer] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.ledger and not self.answers


def central_row(row: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A stored index row (sqlite3.Row or mapping) as the centre's columns: JSON documents decoded,
    flags as booleans, and the version it is sent at."""
    values: dict[str, Any] = {"version": version}
    for name in CENTRAL_COLUMNS:
        value = row[name]
        if name in JSON_COLUMNS:
            value = json.loads(value) if isinstance(value, str) else value
        elif name in BOOL_COLUMNS:
            value = bool(value)
        values[name] = value
    return values


def central_mark(row: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A stored marks row as the centre keeps it: the note reduced to whether there is one."""
    return {"version": version, **{name: row[name] for name in MARK_COLUMNS}, "has_note": bool(row["note"])}


def build_batch(site: str, instance: str, after: int, entries: Sequence[OutboxEntry],
                rows: Mapping[str, Mapping[str, Any]], versions: Mapping[str, int], ledger: Sequence[LedgerLine],
                backlog: int, oldest_pending: float | None) -> Batch:
    """The batch for these entries (in seq order, all after the cursor `after`): one row per
    distinct id, at the highest seq queued for it; a row that no longer exists is not sent (rows
    are never deleted, so that is an entry for an insert that rolled back)."""
    ordered = sorted(entries, key=lambda e: e.seq)
    if ordered and ordered[0].seq <= after:
        raise ValueError("outbox entries at or before the cursor: the caller reads after the cursor")
    seen: dict[str, dict[str, Any]] = {}
    for entry in ordered:
        if entry.call_id not in seen and entry.call_id in rows:
            seen[entry.call_id] = central_row(rows[entry.call_id], versions.get(entry.call_id, entry.seq))
    last = ordered[-1].seq if ordered else after
    return Batch(site, instance, last, list(seen.values()), ordered, list(ledger), backlog, oldest_pending)


def ledger_lines(name: str, lines: Sequence[tuple[bytes, int]], head: tuple[int, str] | None) -> list[LedgerLine]:
    """The lines after the centre's head of that ledger, checked to continue its chain (seq one
    more, prev = the head's mac): a ledger replaced or rewritten at the site is refused here, not
    merged into the centre's copy.  Lines the centre already has are dropped."""
    seq, mac = head if head is not None else (0, "0" * 64)
    out: list[LedgerLine] = []
    for raw, end in lines:
        try:
            entry = json.loads(raw)
            entry_seq, prev, entry_mac = int(entry["seq"]), str(entry["prev"]), str(entry["mac"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SyncRefused(f"{name}: a line at byte {end - len(raw) - 1} is not a ledger entry ({exc}); "
                              "run `callrec ledger verify`") from None
        if entry_seq <= seq:
            continue
        if entry_seq != seq + 1 or prev != mac:
            raise SyncRefused(f"{name}: entry {entry_seq} does not continue the chain the centre holds "
                              f"(seq {seq}): the site's ledger was replaced or rewritten; run `callrec verify`")
        out.append(LedgerLine(name, entry, raw.decode(), end))
        seq, mac = entry_seq, entry_mac
    return out


@dataclass
class SyncHealth:
    """The sender's state for `callrec status` and the journal: when it last reached the centre,
    the backlog, the lag (age of the oldest unsent change), the back-off after a failure, and a
    warning once the lag passes `warn_after` seconds (logged once, and once when it clears)."""

    warn_after: float
    retry_min: float = 1.0
    retry_max: float = 60.0
    last_sync: float | None = None
    backlog: int = 0
    oldest_pending: float | None = None
    failing_since: float | None = None
    error: str | None = None
    retry_in: float = 0.0
    warned: bool = False

    def sent(self, now: float, backlog: int, oldest_pending: float | None) -> None:
        self.last_sync, self.backlog, self.oldest_pending = now, backlog, oldest_pending
        self.failing_since, self.error, self.retry_in = None, None, 0.0

    def failed(self, now: float, reason: str, backlog: int, oldest_pending: float | None) -> float:
        """Note a failure; returns how long to wait before the next try (doubling up to retry_max)."""
        if self.failing_since is None:
            self.failing_since = now
        self.error, self.backlog, self.oldest_pending = reason, backlog, oldest_pending
        self.retry_in = min(self.retry_max, max(self.retry_min, self.retry_in * 2))
        return self.retry_in

    def lag(self, now: float) -> float:
        return 0.0 if self.oldest_pending is None else max(0.0, now - self.oldest_pending)

    def warning(self, now: float) -> str | None:
        """'lagging' when the lag first passes the threshold, 'caught_up' when it falls back under
        it; None otherwise (so the journal gets one line per crossing)."""
        late = self.lag(now) > self.warn_after
        if late and not self.warned:
            self.warned = True
            return "lagging"
        if not late and self.warned:
            self.warned = False
            return "caught_up"
        return None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"last_sync": self.last_sync, "backlog": self.backlog, "lag_seconds": round(self.lag(now), 1),
                "lagging": self.lag(now) > self.warn_after, "error": self.error,
                "failing_since": self.failing_since}
