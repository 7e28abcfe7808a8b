"""The centre's own 通話記録管理簿: what people did at the centre (sign-ins, filing, approvals,
refusals, grants issued, fetches, copies, disposals), as one chain in its PostgreSQL.

The sites' ledgers reach the centre too (ledger_entries, by the sync) and stay their own chains;
this one records the centre's acts, so that "who approved this and who fetched it" is answered at
the centre and, for the fetch, again in the owning site's book.

The entries are the site ledger's (storage/ledger.py): the same fields, the same canonical JSON,
mac = HMAC-SHA256(key, entry without mac), prev = the previous entry's mac (64 zeros first), so
one reading of the format serves both.  The key is derived from the centre's master key under a
label of its own.  A head row under a MAC of its own records the last entry, so rows cut off the
end are found as surely as rows edited.  Appends take an advisory lock inside the caller's
transaction (or their own), so two people acting at once get consecutive numbers and one chain.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from psycopg.types.json import Jsonb

from storage.ledger import LedgerEntry

from .errors import AccessError

__all__ = ["CENTRE_KEY_LABEL", "CentreLedger", "CentreLedgerError"]

log = structlog.get_logger("callrec.centre_ledger")

CENTRE_KEY_LABEL = "callrec centre ledger v1"
GENESIS = "0" * 64
_HEAD_DOMAIN = b"callrec centre ledger head v1\n"
_LOCK = 0x6C656467  # "ledg": one appender at a time, even on an empty chain (no head row to lock yet)


class CentreLedgerError(AccessError):
    """The centre's chain cannot be appended to safely; `callrec centre ledger verify` says why."""


def canonical(value: dict[str, Any]) -> bytes:
    """The site ledger's canonical JSON (storage/ledger.py), which the MAC covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _mac(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, _HEAD_DOMAIN + canonical({"seq": seq, "mac": mac}), hashlib.sha256).hexdigest()


class CentreLedger:
    """The chain in the centre's database; `conn` is a psycopg 3 connection in autocommit mode."""

    def __init__(self, conn: Any, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the centre ledger key is at least 32 bytes (MasterKey.derive(CENTRE_KEY_LABEL))")
        self.conn = conn
        self._key = key

    def append(self, event: StrEnum, actor: str, now: datetime, reason: str | None = None,
               approved_by: str | None = None, **details: Any) -> LedgerEntry:
        """One entry, committed before it returns (with the caller's transaction, if one is open)."""
        if now.utcoffset() is None:
            raise ValueError("ledger times carry their UTC offset; pass an aware datetime")
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            head = self.conn.execute("SELECT seq, mac, head_mac FROM centre_ledger_head").fetchone()
            last = self.conn.execute("SELECT seq, mac FROM centre_ledger ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = self._tail(head, last)
            body: dict[str, Any] = {"seq": seq + 1, "at": now.isoformat(timespec="milliseconds"),
                                    "event": str(event), "actor": actor, "reason": reason,
                                    "approved_by": approved_by, "details": details, "prev": prev}
            entry = {**body, "mac": _mac(self._key, body)}
            self.conn.execute(
                "INSERT INTO centre_ledger (seq, at, event, actor, reason, approved_by, details, prev, mac, entry) "
                "VALUES (%s, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s, %s)",
                (entry["seq"], entry["at"], entry["event"], actor, reason, approved_by, Jsonb(details), prev,
                 entry["mac"], canonical(entry).decode()))
            self.conn.execute(
                "INSERT INTO centre_ledger_head (one, seq, mac, head_mac) VALUES (TRUE, %s, %s, %s) "
                "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, head_mac = excluded.head_mac",
                (entry["seq"], entry["mac"], _head_mac(self._key, entry["seq"], entry["mac"])))
        log.info("centre_ledger.appended", seq=entry["seq"], ledger_event=str(event), actor=actor)
        return _to_entry(entry)

    def _tail(self, head: tuple[Any, ...] | None, last: tuple[Any, ...] | None) -> tuple[int, str]:
        """(seq, mac) to chain onto, after checking the last row against the head."""
        if head is None:
            if last is not None:
                raise CentreLedgerError("the centre ledger's head is missing but it has entries; "
                                        "run `callrec centre ledger verify`")
            return 0, GENESIS
        seq, mac, head_mac = int(head[0]), str(head[1]), str(head[2])
        if not hmac.compare_digest(head_mac, _head_mac(self._key, seq, mac)):
            raise CentreLedgerError("the centre ledger's head fails its MAC (edited, or another key): "
                                    "run `callrec centre ledger verify`")
        if last is None or (int(last[0]), str(last[1])) != (seq, mac):
            raise CentreLedgerError(f"the centre ledger does not end where its head says (seq {seq}): entries were "
                                    "removed or added behind its back; run `callrec centre ledger verify`")
        return seq, mac

    def entries(self) -> Iterator[LedgerEntry]:
        """Every entry in order, as stored (verify() checks them)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT entry FROM centre_ledger ORDER BY seq")
            for (line,) in cur:
                yield _to_entry(json.loads(line))

    def head(self) -> tuple[int, str] | None:
        row = self.conn.execute("SELECT seq, mac FROM centre_ledger_head").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def verify(self) -> list[str]:
        """Every problem found, each naming its seq; empty for a chain nobody altered.  Each row's
        columns must say what its MAC-covered line says, so an edit of a column is found too."""
        problems: list[str] = []
        expected_seq, expected_prev, last = 1, GENESIS, None
        with self.conn.cursor() as cur:
            cur.execute("SELECT seq, at, event, actor, reason, approved_by, details, prev, mac, entry "
                        "FROM centre_ledger ORDER BY seq")
            for row in cur:
                seq = int(row[0])
                try:
                    entry = json.loads(row[9])
                except ValueError:
                    problems.append(f"seq {seq}: the stored line is not JSON")
                    continue
                body = {k: v for k, v in entry.items() if k != "mac"}
                if not hmac.compare_digest(str(entry.get("mac")), _mac(self._key, body)):
                    problems.append(f"seq {seq}: bad MAC: the entry was edited or forged without the key")
                columns = (seq, row[2], row[3], row[4], row[5], row[6], row[7], row[8])
                stored = tuple(entry.get(k) for k in ("seq", "event", "actor", "reason", "approved_by", "details",
                                                      "prev", "mac"))
                if columns != stored or datetime.fromisoformat(str(entry.get("at"))) != row[1]:
                    problems.append(f"seq {seq}: the row's columns differ from the entry its MAC covers")
                if seq != expected_seq:
                    problems.append(f"seq {seq}: gap or repeat (expected {expected_seq})")
                if entry.get("prev") != expected_prev:
                    problems.append(f"seq {seq}: broken chain (an entry was removed, inserted or moved)")
                expected_seq, expected_prev, last = seq + 1, str(entry.get("mac")), (seq, str(entry.get("mac")))
        head = self.conn.execute("SELECT seq, mac, head_mac FROM centre_ledger_head").fetchone()
        if head is None:
            if last is not None:
                problems.append("the head is missing but the ledger has entries")
        elif not hmac.compare_digest(str(head[2]), _head_mac(self._key, int(head[0]), str(head[1]))):
            problems.append("the head fails its MAC (edited or written without the key)")
        elif last != (int(head[0]), str(head[1])):
            problems.append(f"the ledger does not end at the head's seq {head[0]} (entries cut off or added)")
        return problems


def _to_entry(entry: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(**{**entry, "at": datetime.fromisoformat(entry["at"])})
