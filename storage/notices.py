"""Proof of notice: one row per call the announcer handled, in the index file.

Shinagawa 第5条 asks that whether (and when) a caller was told of the recording can be shown
later; the recorder links its recording to the row of the same call (find()). The announcer
writes the row when the call arrives and brings it up to date at each step (hand-over, end),
always before the SIP of that step leaves, so whatever the recorder sees on the mirror already
has its notice on disk. Each write is one short transaction, in WAL mode like the calls table.
Rows of excluded lines keep no number at all (matsumoto §3(2)): the caller must not be traceable
through the notice log either.
"""
from __future__ import annotations

import sqlite3
import uuid
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from wire.sip import SipParseError, parse_uri, uri_number

from .index import connect, iso

__all__ = ["EXCLUDED", "NOTICE_SLACK", "Dialog", "Notice", "NoticeLog", "NoticeMatch", "NoticeRow", "Tie",
           "referral_token"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    id TEXT PRIMARY KEY,
    sip_call_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    received_epoch REAL NOT NULL,
    announced_from TEXT,
    announced_to TEXT,
    calling_number TEXT,
    called_number TEXT,
    announcement_sha256 TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    hand_over TEXT NOT NULL,
    destination TEXT
);
CREATE INDEX IF NOT EXISTS notices_received ON notices(received_epoch);
"""

ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("refer_target", "TEXT"),
    ("referred_by", "TEXT"),
    ("handed_over_at", "TEXT"),
    ("handover_epoch", "REAL"),
    ("link_seconds", "REAL"),
    ("left_at", "TEXT"),
    ("left_epoch", "REAL"),
    ("referral", "TEXT"),
    ("announcement", "TEXT"),
)
"""Columns added for linking the call a hand-over leads to; an older index gets them on open."""

LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS notices_call_id ON notices(sip_call_id);
CREATE INDEX IF NOT EXISTS notices_handover ON notices(handover_epoch);
CREATE INDEX IF NOT EXISTS notices_referral ON notices(referral);
"""

EXCLUDED = "excluded"
"""The outcome of a call to an excluded line: its row keeps no number."""

NOTICE_SLACK = 5.0
"""Seconds by which the announcer's clock and the mirror's may differ, and by which a PBX may
start a leg before the announcer has the call."""

DEFAULT_LINK_SECONDS = 15.0
"""The window after a hand-over for rows written before the policy set one (handover_seconds)."""

MAX_LINK_SECONDS = 120.0
"""How far back from an INVITE find() looks for a hand-over (the policy's largest window)."""

REFERRAL_PARAM = "callrec-ref"
"""The Referred-By parameter the announcer makes unique to one call (announcer.call)."""

HANDED_OVER = ("refer", "fallback_operator", "redirect_302")
"""Hand-overs after which the caller is in another call (or the same dialog, continued)."""

PASSED_ON = ("refer", "fallback_operator")
"""Hand-overs in which the announcer answered the dialog and then passed the caller on: that
dialog is the announcer's leg of the call it served, not a call of its own."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One handled call; times are Unix epoch seconds.  The outcome and the
    hand-over are the announcer's words for them (announcer.outcomes)."""

    sip_call_id: str
    received_at: float
    outcome: str
    hand_over: str
    announced_from: float | None = None
    announced_to: float | None = None
    calling_number: str | None = None
    called_number: str | None = None
    destination: str | None = None
    announcement_sha256: str | None = None
    reason: str = ""
    refer_target: str | None = None
    referred_by: str | None = None
    handed_over_at: float | None = None
    link_seconds: float | None = None
    left_at: float | None = None
    announcement: str | None = None  # which was played: "notice", or "warning" to a number marked as harassment


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """One stored notice; times are ISO 8601 with the site's offset (the *_epoch columns are
    what the matcher searches by). refer_target is the Refer-To (or the 302's Contact) the
    announcer sent last, referred_by its Referred-By; left_at is when the call left the
    announcer (None while it is there)."""

    id: str
    sip_call_id: str
    received_at: str
    received_epoch: float
    announced_from: str | None
    announced_to: str | None
    calling_number: str | None
    called_number: str | None
    announcement_sha256: str | None
    outcome: str
    reason: str
    hand_over: str
    destination: str | None
    refer_target: str | None = None
    referred_by: str | None = None
    handed_over_at: str | None = None
    handover_epoch: float | None = None
    link_seconds: float | None = None
    left_at: str | None = None
    left_epoch: float | None = None
    referral: str | None = None  # the token of referred_by, what an INVITE's Referred-By is looked up by
    announcement: str | None = None  # "notice" or "warning" once one was played; None before (and in older rows)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def passed_on(self) -> bool:
        return self.hand_over in PASSED_ON

    def target_numbers(self) -> set[str]:
        """The numbers the hand-over sent the caller to: the Refer-To's and the destination."""
        numbers = {self.destination} if self.destination else set()
        if self.refer_target:
            try:
                number = uri_number(parse_uri(self.refer_target))
            except SipParseError:
                number = None
            if number:
                numbers.add(number)
        return numbers


class Tie(StrEnum):
    """What ties a recorded dialog to a notice."""

    SAME_DIALOG = "same_dialog"  # the dialog the announcer itself had (its leg, or a 302 the PBX followed)
    REPLACES = "replaces"  # the INVITE's Replaces names the announcer's dialog
    REFERRED_BY = "referred_by"  # the INVITE carries the Referred-By token of the announcer's REFER
    TRANSFER = "transfer"  # begun after the hand-over, from the caller to the REFER's target / the destination
    CALLED = "called"  # the caller's leg to the number dialled, under way while the announcer had the call

    @property
    def strength(self) -> int:
        """0 strongest: a tie named by the signalling beats one inferred from numbers and time."""
        return _STRENGTH[self]


_STRENGTH = {Tie.SAME_DIALOG: 0, Tie.REPLACES: 1, Tie.REFERRED_BY: 1, Tie.TRANSFER: 2, Tie.CALLED: 2}


@dataclass(frozen=True, slots=True)
class Dialog:
    """What the recorder saw of one call, as the link to its notice needs it (epoch seconds,
    numbers in the index's form). replaces is the Call-ID the INVITE's Replaces names."""

    sip_call_id: str
    invite_ts: float
    end_ts: float | None
    caller: str | None
    callee: str | None
    caller_withheld: bool = False
    referred_by: str | None = None
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeMatch:
    row: NoticeRow
    tie: Tie
    distance: float  # seconds between the dialog's INVITE and the moment of the notice that ties them


_NOTICE_FIELDS = tuple(f.name for f in fields(NoticeRow))


def referral_token(value: str | None) -> str | None:
    """The announcer's per-call token in a Referred-By value, however the PBX re-rendered the rest."""
    if not value:
        return None
    for param in value.replace(">", ";").split(";")[1:]:
        name, _, token = param.partition("=")
        token = token.strip().strip('"')
        if name.strip().lower() == REFERRAL_PARAM and token.isascii() and token.isalnum():
            return token
    return None


class NoticeLog:
    """The notices table of the index file at path."""

    def __init__(self, path: Path, timezone: str = "Asia/Tokyo") -> None:
        self.path = path
        self._zone = ZoneInfo(timezone)
        self._db = connect(path)
        self._db.executescript(SCHEMA)
        present = {r["name"] for r in self._db.execute("PRAGMA table_info(notices)")}
        for name, decl in ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE notices ADD COLUMN {name} {decl}")
        self._db.executescript(LATE_INDEXES)

    def close(self) -> None:
        self._db.close()

    def record(self, notice: Notice) -> str:
        """Store notice; returns its id."""
        row_id = uuid.uuid4().hex
        values = self._values(notice)
        columns = ["id", *values]
        self._db.execute(f"INSERT INTO notices ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                         (row_id, *values.values()))
        return row_id

    def update(self, row_id: str, notice: Notice) -> None:
        """The notice of row_id as it stands now (a later step of the same call)."""
        values = self._values(notice)
        self._db.execute(f"UPDATE notices SET {', '.join(f'{c} = ?' for c in values)} WHERE id = ?",
                         (*values.values(), row_id))

    def set_hand_over(self, row_id: str, hand_over: str) -> None:
        """What became of the hand-over after the call left (a 302 the PBX did not carry out).
        The reason column keeps the policy's reason; the announcer logs why the hand-over failed."""
        self._db.execute("UPDATE notices SET hand_over = ? WHERE id = ?", (hand_over, row_id))

    def _values(self, notice: Notice) -> dict[str, Any]:
        """The row's columns; numbers of an excluded line are dropped here as well, whatever the
        caller passed."""
        excluded = notice.outcome == EXCLUDED
        zone = self._zone
        return {
            "sip_call_id": notice.sip_call_id, "received_at": iso(notice.received_at, zone),
            "received_epoch": notice.received_at, "announced_from": iso(notice.announced_from, zone),
            "announced_to": iso(notice.announced_to, zone),
            "calling_number": None if excluded else notice.calling_number,
            "called_number": None if excluded else notice.called_number,
            "announcement_sha256": notice.announcement_sha256, "outcome": str(notice.outcome),
            "reason": notice.reason, "hand_over": str(notice.hand_over),
            "destination": None if excluded else notice.destination,
            "refer_target": None if excluded else notice.refer_target,
            "referred_by": None if excluded else notice.referred_by,
            "referral": None if excluded else referral_token(notice.referred_by),
            "handed_over_at": iso(notice.handed_over_at, zone), "handover_epoch": notice.handed_over_at,
            "link_seconds": notice.link_seconds, "left_at": iso(notice.left_at, zone), "left_epoch": notice.left_at,
            "announcement": notice.announcement,
        }

    def get(self, notice_id: str) -> NoticeRow | None:
        row = self._db.execute("SELECT * FROM notices WHERE id = ?", (notice_id,)).fetchone()
        return None if row is None else _row(row)

    def find(self, dialog: Dialog, slack: float = NOTICE_SLACK) -> list[NoticeMatch]:
        """The notices a recorded dialog may belong to, the one that belongs to it first: by the
        strongest tie (its own Call-ID, Replaces, Referred-By, then caller and number in the
        window of a hand-over or of the announcer's time with the call), then the nearest in time.

        The announcer's leg has another Call-ID than most legs the recorder sees, so numbers and
        time are the fallback; a hand-over's window follows the announcement (it opens when the
        announcement ended and the call was handed over) and the policy (handover_seconds)."""
        end = dialog.end_ts if dialog.end_ts is not None else dialog.invite_ts
        token = referral_token(dialog.referred_by)
        rows = self._db.execute(
            "SELECT * FROM notices WHERE sip_call_id = ? OR sip_call_id = ?"
            " OR received_epoch BETWEEN ? AND ? OR handover_epoch BETWEEN ? AND ? OR referral = ?",
            (dialog.sip_call_id, dialog.replaces or dialog.sip_call_id, dialog.invite_ts - slack, end + slack,
             dialog.invite_ts - MAX_LINK_SECONDS, dialog.invite_ts + slack,
             token)).fetchall()
        found = [m for m in (_match(_row(r), dialog, token, slack) for r in rows) if m is not None]
        found.sort(key=lambda m: (m.tie.strength, m.distance, m.row.received_epoch, m.row.id))
        return found


def _match(row: NoticeRow, dialog: Dialog, token: str | None, slack: float) -> NoticeMatch | None:
    """How row ties to dialog, if it does."""
    start, end = dialog.invite_ts, dialog.end_ts if dialog.end_ts is not None else dialog.invite_ts
    handover = row.handover_epoch
    if row.sip_call_id == dialog.sip_call_id:
        return NoticeMatch(row, Tie.SAME_DIALOG, abs(row.received_epoch - start))
    after_hand_over = abs(start - handover) if handover is not None else abs(start - row.received_epoch)
    if dialog.replaces and row.sip_call_id == dialog.replaces:
        return NoticeMatch(row, Tie.REPLACES, after_hand_over)
    if token is not None and row.referral == token:
        return NoticeMatch(row, Tie.REFERRED_BY, after_hand_over)
    if row.outcome == EXCLUDED or not _same_caller(row, dialog):
        return None
    window = row.link_seconds if row.link_seconds is not None else DEFAULT_LINK_SECONDS
    if (handover is not None and row.hand_over in HANDED_OVER and handover - slack <= start <= handover + window
            and dialog.callee in row.target_numbers()):
        return NoticeMatch(row, Tie.TRANSFER, abs(start - handover))
    left = row.left_epoch
    if (dialog.callee is not None and dialog.callee == row.called_number
            and start - slack <= row.received_epoch <= end + slack and (left is None or left >= start - slack)):
        return NoticeMatch(row, Tie.CALLED, abs(row.received_epoch - start))
    return None


def _same_caller(row: NoticeRow, dialog: Dialog) -> bool:
    """The same caller: the same number, or none the announcer could see and a withheld (or
    numberless) caller on the dialog, whose number may still have come in P-Asserted-Identity."""
    ours, theirs = _number(row.calling_number), _number(dialog.caller)
    if ours is None:
        return theirs is None or dialog.caller_withheld
    return ours == theirs


def _number(value: str | None) -> str | None:
    """A number, not a word such as 'anonymous' that a withheld From carries."""
    return value if value and any(ch.isdigit() for ch in value) else None


def _row(row: sqlite3.Row) -> NoticeRow:
    return NoticeRow(**{name: row[name] for name in _NOTICE_FIELDS})
