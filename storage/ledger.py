"""The 通話記録管理簿 (matsumoto 第10条, REQUIREMENTS U5): who did what to
which recordings, when, why and approved by whom, kept so that an auditor
can prove nothing was edited, removed or inserted afterwards.

Format: `ledger.jsonl`, one JSON object per line::

    {"seq": n, "at": ISO 8601 with offset, "event": str, "actor": str,
     "reason": str|null, "approved_by": str|null, "details": {...},
     "prev": hex, "mac": hex}

mac = HMAC-SHA256(ledger key, canonical JSON of the entry without "mac"),
canonical = sort_keys, separators (",", ":"), ensure_ascii=False, UTF-8;
prev = mac of entry seq-1 (the first entry: 64 zeros). The key is derived
from the master key (label KEY_LABEL), so a forger who can write the file
but lacks the key cannot rebuild a chain that verifies: a plain hash chain
could be recomputed by anyone after an edit.

`ledger.head` holds the last seq and mac under a MAC of its own and is
replaced atomically after each append, so cutting entries off the end
(which leaves a valid chain) is still detected.

Crash rule: a line is fsynced before the head moves. After a crash the
ledger may therefore end in a torn line (no newline; never acknowledged to
its caller) or in one complete entry the head does not cover yet. verify()
reports the torn line as a problem; the next append() cuts it off and
carries on, because that entry was never recorded. append() refuses to
continue a ledger whose end does not match its head (entries removed, head
deleted or forged): appending would rewrite the head and hide that.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from .durable import fsync_dir, write_all
from .errors import StorageError
from .layout import ensure_private_dir

__all__ = ["Event", "Ledger", "LedgerEntry", "LedgerError", "default_anchor_dir"]

log = structlog.get_logger("callrec.ledger")

KEY_LABEL = "callrec ledger v1"
LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "ledger.head"
GENESIS = "0" * 64
_HEAD_DOMAIN = b"callrec ledger head v1\n"
_FIELDS = ("seq", "at", "event", "actor", "reason", "approved_by", "details", "prev", "mac")
_TAIL_WINDOW = 64 * 1024


_EVENT_NAME = re.compile(r"[a-z][a-z_]{0,39}")
"""Every event name: storage's own below (a plain string must be one of them), and the layers
above (the access layer's requests and copies) bring theirs as StrEnum members of the same form."""


class Event(StrEnum):
    """Storage's event names written to the ledger; stable, auditors grep them."""

    ERASURE = "erasure"  # one per sweep: count, period from-to, rule
    HOLD_ADDED = "hold_added"
    HOLD_RELEASED = "hold_released"
    POLICY_CHANGED = "policy_changed"  # sha256 of the new policy
    VERIFICATION = "verification"  # result
    MINIMUM_PERIOD_BREACH = "minimum_period_breach"
    WIPE = "wipe"
    AUDIO_ACCESS = "audio_access"  # call id, reason
    CAPACITY_WARNING = "capacity_warning"
    EXPORT = "export"


def default_anchor_dir(data_dir: Path) -> Path:
    """Beside the data folder, never inside it, like the key file: where the
    ledgers' heads are anchored unless the config names a second medium."""
    return data_dir.parent / f"{data_dir.name}.anchor"


class LedgerError(StorageError):
    """The ledger cannot be appended to safely; `callrec ledger verify` says why."""


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    at: datetime
    event: str
    actor: str
    reason: str | None
    approved_by: str | None
    details: dict[str, Any] = field(hash=False)
    prev: str
    mac: str

    def as_json(self) -> dict[str, Any]:
        """The entry as stored (and as `ledger list --json` shows it)."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(timespec="milliseconds"),
            "event": self.event,
            "actor": self.actor,
            "reason": self.reason,
            "approved_by": self.approved_by,
            "details": self.details,
            "prev": self.prev,
            "mac": self.mac,
        }


@dataclass(frozen=True)
class LedgerProblem:
    line: int | None
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        return f"{', '.join(where) or 'ledger'}: {self.problem}"


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _entry_mac(key: bytes, entry: dict[str, Any]) -> str:
    body = {name: value for name, value in entry.items() if name != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, _HEAD_DOMAIN + canonical({"seq": seq, "mac": mac}), hashlib.sha256).hexdigest()


def _parse(line: bytes) -> dict[str, Any]:
    """A stored entry with the right fields and types, or ValueError."""
    entry = json.loads(line)
    if not isinstance(entry, dict) or sorted(entry) != sorted(_FIELDS):
        raise ValueError("not a ledger entry (fields missing or extra)")
    checks = (
        isinstance(entry["seq"], int) and not isinstance(entry["seq"], bool) and entry["seq"] >= 1,
        all(isinstance(entry[name], str) for name in ("at", "event", "actor", "prev", "mac")),
        all(entry[name] is None or isinstance(entry[name], str) for name in ("reason", "approved_by")),
        isinstance(entry["details"], dict),
    )
    if not all(checks):
        raise ValueError("a field has the wrong type")
    datetime.fromisoformat(entry["at"])
    return entry


def _to_entry(entry: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(**{**entry, "at": datetime.fromisoformat(entry["at"])})


class Ledger:
    """An append-only, keyed hash chain shared by the daemon and the CLI.

    With an `anchor_path` (outside the data folder, best on a second
    medium), every head is also written there, and neither append() nor
    verify() accepts a ledger that ends before the anchor: a ledger and head
    put back from an earlier copy (a backup, a snapshot) are named, not
    continued."""

    def __init__(self, path: Path, head_path: Path, key: bytes, anchor_path: Path | None = None) -> None:
        if len(key) < 32:
            raise ValueError("the ledger key is at least 32 bytes (MasterKey.derive(KEY_LABEL))")
        self.path = path
        self.head_path = head_path
        self.anchor_path = anchor_path
        self.lock_path = path.with_name(path.name + ".lock")
        self._key = key
        self._anchor_failing = False

    @classmethod
    def in_data_dir(cls, data_dir: Path, key: bytes, anchor_dir: Path | None = None) -> Ledger:
        return cls(data_dir / LEDGER_FILE, data_dir / HEAD_FILE, key,
                   anchor_dir / HEAD_FILE if anchor_dir is not None else None)

    def append(
        self,
        event: StrEnum | str,
        actor: str,
        now: datetime,
        reason: str | None = None,
        approved_by: str | None = None,
        **details: Any,
    ) -> LedgerEntry:
        """Adds one entry, durably, before returning it.

        Several processes may call this at once: an flock on a lock file
        beside the ledger serialises them (the lock file, not the ledger,
        so that reading never waits).
        """
        with self._locked():
            return self._append_locked(event, actor, now, reason, approved_by, **details)

    @contextmanager
    def batch(self) -> Iterator[Callable[..., LedgerEntry]]:
        """The ledger locked across a read and the appends that follow from
        it (the seal ledger: which rows it does not name yet); yields the
        append function to use meanwhile."""
        with self._locked():
            yield self._append_locked

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock_fd)

    def _append_locked(
        self,
        event: StrEnum | str,
        actor: str,
        now: datetime,
        reason: str | None = None,
        approved_by: str | None = None,
        **details: Any,
    ) -> LedgerEntry:
        if now.utcoffset() is None:
            raise ValueError("ledger times carry their UTC offset; pass an aware datetime")
        if not isinstance(event, StrEnum):
            event = Event(event)
        if not _EVENT_NAME.fullmatch(event):
            raise ValueError(f"ledger event names are lower-case words joined by _, not {event!r}")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            seq, prev = self._tail(fd)
            body: dict[str, Any] = {
                "seq": seq + 1,
                "at": now.isoformat(timespec="milliseconds"),
                "event": str(event),
                "actor": actor,
                "reason": reason,
                "approved_by": approved_by,
                "details": details,
                "prev": prev,
            }
            entry = {**body, "mac": _entry_mac(self._key, body)}
            write_all(fd, canonical(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if seq == 0:
            fsync_dir(self.path.parent)
        self._write_head(entry["seq"], entry["mac"])
        log.info("ledger.appended", ledger=self.path.name, seq=entry["seq"], ledger_event=str(event), actor=actor)
        return _to_entry(entry)

    def _tail(self, fd: int) -> tuple[int, str]:
        """(seq, mac) to chain onto, after checking the end against the head
        and the anchor, and cutting off a torn line."""
        size = os.fstat(fd).st_size
        window = min(size, _TAIL_WINDOW)
        while True:
            data = os.pread(fd, window, size - window)
            lines = data.split(b"\n")
            torn = lines.pop()
            if len(lines) >= 2 or window == size:
                break
            window = min(size, window * 2)
        last = None
        if lines:
            try:
                last = _parse(lines[-1])
            except ValueError as exc:
                raise LedgerError(
                    f"{self.path}: the last entry cannot be read ({exc}); run `callrec ledger verify`"
                ) from None
        head = self._read_head()
        if isinstance(head, str):
            raise LedgerError(f"{self.head_path}: {head}; run `callrec ledger verify`")
        if head is None and last is not None:
            raise LedgerError(f"{self.head_path} is missing but the ledger has entries; run `callrec ledger verify`")
        if head is not None:
            head_seq, head_mac = head
            covered = last is not None and (last["seq"], last["mac"]) == (head_seq, head_mac)
            next_to_head = last is not None and last["seq"] == head_seq + 1 and last["prev"] == head_mac
            if not (covered or next_to_head):
                raise LedgerError(
                    f"{self.path} does not end where {self.head_path.name} says (seq {head_seq}): "
                    "entries were removed or the head was replaced; run `callrec ledger verify`"
                )
        anchor = self._read_anchor()
        if isinstance(anchor, tuple) and last is not None and (
                anchor[0] > last["seq"] or (anchor[0] == last["seq"] and anchor[1] != last["mac"])):
            raise LedgerError(f"{self.path} ends before its anchor {self.anchor_path} (seq {anchor[0]}): "
                              "the ledger was put back from an earlier copy; run `callrec verify`")
        if torn:
            os.ftruncate(fd, size - len(torn))
            os.fsync(fd)
            log.warning("ledger.torn_tail_removed", bytes=len(torn))
        return (0, GENESIS) if last is None else (last["seq"], last["mac"])

    def _read_head(self) -> tuple[int, str] | str | None:
        """(seq, mac); None when absent; a reason string when it is bad."""
        return self._read_head_file(self.head_path)

    def _read_anchor(self) -> tuple[int, str] | str | None:
        return None if self.anchor_path is None else self._read_head_file(self.anchor_path)

    def _read_head_file(self, path: Path) -> tuple[int, str] | str | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        try:
            head = json.loads(raw)
            seq, mac, head_mac = head["seq"], head["mac"], head["head_mac"]
            if not (isinstance(seq, int) and isinstance(mac, str) and isinstance(head_mac, str)):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return "head is not readable"
        if not hmac.compare_digest(head_mac, _head_mac(self._key, seq, mac)):
            return "head fails its MAC (edited or written without the key)"
        return seq, mac

    def _write_head(self, seq: int, mac: str) -> None:
        _replace_file(self.head_path, canonical({"seq": seq, "mac": mac, "head_mac": _head_mac(self._key, seq, mac)}))
        if self.anchor_path is not None:
            self._write_anchor(seq, mac)

    def _write_anchor(self, seq: int, mac: str) -> None:
        """The anchor follows the head; a second medium that is gone (unplugged,
        unmounted) must not stop the ledger, so a failure is logged once and the
        anchor catches up with the next append that can write it."""
        assert self.anchor_path is not None
        try:
            ensure_private_dir(self.anchor_path.parent)
            _replace_file(self.anchor_path,
                          canonical({"seq": seq, "mac": mac, "head_mac": _head_mac(self._key, seq, mac)}))
        except OSError as exc:
            if not self._anchor_failing:
                log.error("ledger.anchor_failed", anchor=str(self.anchor_path), reason=exc.strerror or str(exc))
            self._anchor_failing = True
            return
        if self._anchor_failing:
            log.warning("ledger.anchor_resumed", anchor=str(self.anchor_path), seq=seq)
        self._anchor_failing = False

    def ensure_anchor(self) -> None:
        """At a writer's start: a ledger that has no anchor yet (made before
        anchors, or its anchor folder is new) is anchored at its head, after
        the same checks an append makes."""
        if self.anchor_path is None or self._read_anchor() is not None:
            return
        with self._locked():
            head = self._read_head()
            if not isinstance(head, tuple):
                return
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                seq, mac = self._tail(fd)
            finally:
                os.close(fd)
            if (seq, mac) == head:
                self._write_anchor(seq, mac)
                log.warning("ledger.anchored", ledger=self.path.name, anchor=str(self.anchor_path), seq=seq)

    def head(self) -> tuple[int, str] | None:
        """(seq, mac) of the last entry as the head records it; None for an
        empty ledger; LedgerError when the head is bad."""
        head = self._read_head()
        if isinstance(head, str):
            raise LedgerError(f"{self.head_path}: {head}; run `callrec ledger verify`")
        return head

    def mac_at(self, seq: int) -> str | None:
        """The mac of entry `seq` as stored, or None when the ledger does not reach it."""
        for number, line, complete in self._lines():
            if not complete:
                return None
            try:
                entry = _parse(line)
            except ValueError as exc:
                raise LedgerError(f"{self.path}: line {number} is not a ledger entry ({exc})") from None
            if entry["seq"] == seq:
                return str(entry["mac"])
        return None

    def _lines(self) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, line, complete) in file order, read as a stream: a
        seal ledger grows by a line a second.  Only the last can be torn."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as file:
            for number, line in enumerate(file, 1):
                if line.endswith(b"\n"):
                    yield number, line[:-1], True
                elif line:
                    yield number, line, False

    def entries(self) -> Iterator[LedgerEntry]:
        """Every complete entry in file order, unchecked (verify() checks);
        a torn last line is not an entry."""
        for number, line, complete in self._lines():
            if not complete:
                return
            try:
                yield _to_entry(_parse(line))
            except ValueError as exc:
                raise LedgerError(f"{self.path}: line {number} is not a ledger entry ({exc})") from None

    def lines_from(self, offset: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to `limit` complete lines from byte `offset` on, each with the offset after it: the
        sync to the centre (storage/central_sync.py) reads on from where it stopped rather than
        from the start of a ledger that grows by a line a second.  A torn last line is not read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        found: list[tuple[bytes, int]] = []
        with os.fdopen(fd, "rb") as file:
            file.seek(offset)
            while len(found) < limit and (line := file.readline()).endswith(b"\n"):
                offset += len(line)
                found.append((line[:-1], offset))
        return found

    def verify(self, require_anchor: bool = True) -> list[LedgerProblem]:
        """Everything that does not match, each naming its line and seq; an
        empty list is a ledger nobody has altered.  `require_anchor=False`
        accepts a ledger without an anchor yet (made by a version before
        anchors, not yet opened by a newer recorder)."""
        problems: list[LedgerProblem] = []
        expected_seq, expected_prev = 1, GENESIS
        last: dict[str, Any] | None = None
        lines = 0
        anchor = self._read_anchor()
        anchored_mac: str | None = None
        for number, line, complete in self._lines():
            if not complete:
                problems.append(
                    LedgerProblem(number, None, "torn last entry (no newline): a crash during an append; "
                                  "that entry was never recorded and the next append removes it")
                )
                break
            lines = number
            try:
                entry = _parse(line)
            except ValueError as exc:
                problems.append(LedgerProblem(number, None, f"unparseable line ({exc})"))
                continue
            seq = entry["seq"]
            if not hmac.compare_digest(entry["mac"], _entry_mac(self._key, entry)):
                problems.append(LedgerProblem(number, seq, "bad MAC: the entry was edited or forged without the key"))
            if seq != expected_seq:
                kind = "repeated or out-of-order" if seq < expected_seq else "gap:"
                problems.append(LedgerProblem(number, seq, f"{kind} seq (expected {expected_seq})"))
            if entry["prev"] != expected_prev:
                problems.append(
                    LedgerProblem(number, seq, "broken chain: prev is not the MAC of the entry before "
                                  "(an entry was removed, inserted or moved)")
                )
            if isinstance(anchor, tuple) and seq == anchor[0]:
                anchored_mac = entry["mac"]
            expected_seq, expected_prev, last = seq + 1, entry["mac"], entry
        head = self._read_head()
        if isinstance(head, str):
            problems.append(LedgerProblem(None, None, head))
        elif head is None:
            if last is not None:
                problems.append(LedgerProblem(None, None, "head is missing but the ledger has entries"))
        else:
            head_seq, head_mac = head
            if last is None or last["seq"] < head_seq:
                ends = "is empty" if last is None else f"ends at seq {last['seq']}"
                problems.append(
                    LedgerProblem(None, head_seq, f"tail missing: the head says seq {head_seq} but the ledger {ends}")
                )
            elif last["seq"] == head_seq and last["mac"] != head_mac:
                problems.append(LedgerProblem(lines, head_seq, "last entry is not the one the head recorded"))
            elif last["seq"] > head_seq + 1 or (last["seq"] == head_seq + 1 and last["prev"] != head_mac):
                problems.append(
                    LedgerProblem(lines, last["seq"], f"entries after seq {head_seq} that the head never recorded")
                )
        problems.extend(self._anchor_problems(anchor, last, anchored_mac, require_anchor))
        return problems

    def _anchor_problems(self, anchor: tuple[int, str] | str | None, last: dict[str, Any] | None,
                         anchored_mac: str | None, require_anchor: bool) -> list[LedgerProblem]:
        """The ledger against its anchor: it may run ahead of the anchor (a
        second medium that was away), never behind it or beside it."""
        if self.anchor_path is None:
            return []
        where = str(self.anchor_path)
        if isinstance(anchor, str):
            return [LedgerProblem(None, None, f"anchor {where}: {anchor}")]
        if anchor is None:
            return [] if last is None or not require_anchor else [LedgerProblem(None, None, f"anchor {where} is missing: the ledger "
                                                          "cannot be checked against an earlier copy of itself")]
        seq, mac = anchor
        if last is None or last["seq"] < seq:
            ends = "is empty" if last is None else f"ends at seq {last['seq']}"
            return [LedgerProblem(None, seq, f"rolled back: the anchor {where} recorded seq {seq} but the ledger "
                                  f"{ends} (the ledger and its head were replaced by an earlier copy)")]
        if anchored_mac != mac:
            return [LedgerProblem(None, seq, f"entry seq {seq} is not the one the anchor {where} recorded "
                                  "(the ledger was rewritten)")]
        return []


def _replace_file(path: Path, content: bytes) -> None:
    """Write a small file whole and durably in place of the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, content + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
