"""The recording files and their rows: the sink the recorder core writes to.

File names are made here from the recording's own id and date, never from
anything that arrived on the wire, so no SIP header can steer a path.
"""
from __future__ import annotations

import errno
import os
import secrets
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from recorder.record import CallResult, CallSnapshot, RecordingHandle
from wire.rtppcap import pcap_record

from .audiofile import AudioWriter, SideWriter, audio_format, convert_to_l16, side_digest, wav_digest
from .faults import FaultLog
from .index import CallIndex, SideFile, iso
from .keys import MasterKey
from .layout import RECORDINGS, ensure_private_dir
from .ledger import LedgerError, default_anchor_dir
from .notices import NOTICE_SLACK, Dialog, NoticeLog, NoticeMatch, Tie
from .reserve import RESERVE_BYTES, Reserve
from .seal_ledger import flush_seals, seal_key, seal_ledger
from .vault import VaultError, repair_vault, shred

__all__ = ["DEFAULT_MIN_FREE_BYTES", "RecordingStore"]

log = structlog.get_logger("callrec.storage")

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
NOTICE_HEARD = ("announced",)
ANNOUNCER_LEG = "announcer"

MAX_PENDING_ROWS = 10_000
"""Rows held in memory while the index refuses them (about 2 KiB each); a
call beyond that is counted as lost rather than held."""
ACTOR = "callrec recorder"
AUDIO_FAULTS = ("write_failed", "not_recorded_index", "not_recorded_retention")

_WRITE_BATCH = 32 * 1024
"""Bytes of frames gathered before they are written even without a checkpoint:
the bound on what a recording holds in memory."""
ROUND_BYTES = 1024 * 1024
"""Bytes written after which a round of checkpoints asks the filesystem for
its free space again (see RecordingStore.space_left_in_round)."""


class FileRecording:
    """One recording being written: its audio and any side files, encrypted.

    Frames are gathered and written at each checkpoint (about once a second
    of capture time) as one vault record, rather than at every interleaver
    commit: one write call per call and second instead of about five.  What
    is gathered is at most _WRITE_BATCH plus the latest append; a crash loses
    the frames committed since the last checkpoint, at most about a second,
    besides what the interleaver had not committed yet."""

    def __init__(self, store: RecordingStore, record_id: str, folder: Path, encoding: str, rate: int = 8000) -> None:
        self._store = store
        self.record_id = record_id
        self._folder = folder
        self._side: dict[int, SideWriter] = {}
        self.wav_path = folder / f"{record_id}.wav.vault"
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._round = -1
        """The store's round of checkpoints this recording last took part in."""
        self.failure: str | None = None
        self.failure_code = "write_failed"
        self._wav: AudioWriter | None = None
        refusal = store.refusal(record_id)
        if refusal is not None:
            self.failure_code, reason = refusal
            self._fail(OSError(errno.ENOSPC, reason))
            return
        try:
            if not store.space_left():
                raise OSError(errno.ENOSPC, "free space below the floor")
            self._wav = AudioWriter(self.wav_path, store.master, record_id, encoding, rate=rate)
        except OSError as exc:
            if self.wav_path.exists():
                shred(self.wav_path)
            self._fail(exc)

    @property
    def has_audio(self) -> bool:
        return self._wav is not None

    def _fail(self, exc: OSError) -> None:
        """A full or failing disk stops this recording, cleanly: what is on
        disk stays playable and the row says why it is short.  Later calls
        try again, so recording resumes when space returns."""
        if self.failure is None:
            self.failure = exc.strerror or str(exc)
            self._store.faults.failed(self.failure_code, self.failure, "recording.write_failed",
                                      call_id=self.record_id)
        self._pending.clear()
        self._pending_size = 0

    def append(self, data: bytes) -> None:
        if data and self.failure is None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size >= _WRITE_BATCH:
                self._write_pending()

    def _write_pending(self) -> None:
        pending = self._pending
        if pending and self._wav is not None and self.failure is None:
            try:
                self._wav.append(pending[0] if len(pending) == 1 else b"".join(pending))
            except OSError as exc:
                self._fail(exc)
            self._store.written_in_round += self._pending_size
            pending.clear()
            self._pending_size = 0

    def convert_to_l16(self) -> None:
        """The call switched G.711 law: from here on the recording is
        16-bit PCM.  The converted copy is complete and named by the row
        before the G.711 file is erased."""
        self._write_pending()
        if self._wav is None or self.failure is not None or self._wav.encoding == "L16":
            return
        old = self.wav_path
        new = self._folder / f"{self.record_id}.l16.wav.vault"
        try:
            self._wav.close()
            self._wav = convert_to_l16(old, new, self._store.master, self.record_id)
        except OSError as exc:
            self._fail(exc)
            return
        self.wav_path = new
        self._store._write_row(self.record_id, audio_path=self._store.relative(new), audio_format="L16")
        shred(old)

    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None:
        """Payloads we cannot decode, kept verbatim with where they travelled."""
        if self.failure is not None:
            return
        try:
            writer = self._side.get(channel)
            if writer is None:
                writer = self._side[channel] = SideWriter(self._side_path(channel), self._store.master,
                                                          self.record_id, channel)
            writer.write(pcap_record(arrival, *flow, rtp))
        except OSError as exc:
            self._fail(exc)

    def _side_path(self, channel: int) -> Path:
        return self._folder / f"{self.record_id}.ch{channel}.rtp.pcap.vault"

    def checkpoint(self) -> None:
        """Called about once a second of capture time: what was gathered
        becomes a record a crash cannot take back.  Below the free-space
        floor the recording stops here, after keeping what it gathered (the
        floor leaves room for that), with room left for the index to seal it."""
        pending, wav = self._pending, self._wav
        if pending and wav is not None and self.failure is None and not self._side:
            # `_write_pending` and the sync below in one call (the common
            # checkpoint: one record of what the last tick committed).
            frames = wav.frames
            try:
                wav.append_synced(pending[0] if len(pending) == 1 else b"".join(pending))
            except OSError as exc:
                taken = wav.frames != frames
                size = self._pending_size
                self._fail(exc)
                if taken:
                    self._store.written_in_round += size
            else:
                self._store.written_in_round += self._pending_size
            pending.clear()
            self._pending_size = 0
        else:
            self._checkpoint_writers()
        if self.failure is None and not self._store.space_left_in_round(self):
            self._fail(OSError(errno.ENOSPC, "free space below the floor"))
        self._store.retry_rows()

    def _checkpoint_writers(self) -> None:
        self._write_pending()
        if self.failure is None and self._wav is not None:
            try:
                self._wav.sync(durable=False)
                for writer in self._side.values():
                    writer.sync(durable=False)
            except OSError as exc:
                self._fail(exc)

    def close(self, result: CallResult) -> None:
        self._write_pending()
        frames = 0
        if self._wav is not None:
            try:
                frames = self._wav.close()
            except OSError as exc:
                self._fail(exc)
                frames = self._wav.frames
                self._store.unsealed.add(self.wav_path)
        for channel, writer in self._side.items():
            try:
                writer.close()
            except OSError as exc:
                self._fail(exc)
                self._store.unsealed.add(self._side_path(channel))
        self._store.seal(result, self, frames)

    def abandon(self) -> None:
        """The capture worker writing this recording died (callrec.workers):
        what it handed over is written and the files are left open-ended,
        exactly as a crash leaves them, for recovery to repair and seal."""
        self._write_pending()
        for writer in (self._wav, *self._side.values()):
            if writer is not None:
                try:
                    writer._vault.abandon()
                except OSError as exc:
                    self._fail(exc)

    def side_files(self) -> list[SideFile]:
        return [SideFile(ch, self._store.relative(self._side_path(ch)),
                         side_digest(self._side_path(ch), self._store.master, self.record_id,
                                     allow_torn=self.failure is not None))
                for ch in sorted(self._side)]

    def size_bytes(self) -> int:
        """What the recording occupies at rest, for the capacity ring."""
        paths = [self.wav_path, *(self._side_path(ch) for ch in self._side)]
        return sum(p.stat().st_size for p in paths if p.exists())


def _parties(call: CallSnapshot) -> dict[str, object]:
    """The staff side and the legs of a call, as the row keeps them."""
    return {"extension": call.extension, "withheld_number": call.withheld_number,
            "leg_call_ids": list(call.leg_call_ids)}


class RecordingStore:
    """Implements the recorder's RecordingSink over a data folder."""

    def __init__(self, data_dir: Path, index: CallIndex, tz: ZoneInfo, master: MasterKey,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, *, anchor_dir: Path | None = None,
                 reserve_bytes: int = RESERVE_BYTES) -> None:
        self.data_dir = data_dir
        self.index = index
        self.master = master
        self.tz = tz
        self.min_free_bytes = min_free_bytes
        self._notices: NoticeLog | None = None
        self._unwritten: dict[str, _PendingRow] = {}
        self.unsealed: set[Path] = set()
        self.refusing: str | None = None
        """Why new calls are not recorded, when the retention policy says
        so (stop_recording rather than cut a minimum period short)."""
        self._ids: dict[int, str] = {}
        self.faults = FaultLog(tz)
        self._seal_key = seal_key(master)
        self.seals = seal_ledger(data_dir, master, anchor_dir or default_anchor_dir(data_dir))
        self._seals_due = False
        self._dropped: set[str] = set()
        self.reserve = Reserve(data_dir, reserve_bytes)
        self._space_round = 0
        self._room = False
        self.written_in_round = 0
        """Bytes the recordings wrote since the round's `space_left`."""
        ensure_private_dir(data_dir / RECORDINGS)
        self._released = not self.reserve.keep(self.min_free_bytes) and not self.space_left()
        """The reserve was given to the index (or the disk was full at start):
        no audio until the reserve is back."""

    def space_left_in_round(self, recording: FileRecording) -> bool:
        """`space_left` for a checkpoint, asked of the filesystem once per
        round of checkpoints (every recording's, once a tick) rather than
        once per recording: a round begins when a recording checkpoints a
        second time, or when the round has written ROUND_BYTES.  A single
        recording asks every time, as before, and a disk below the floor is
        asked again at every checkpoint (space may come back any time)."""
        if (not self._room or recording._round == self._space_round
                or self.written_in_round >= ROUND_BYTES):
            self._space_round += 1
            self._room = self.space_left()
            self.written_in_round = 0
        recording._round = self._space_round
        return self._room

    def space_left(self) -> bool:
        """Whether the filesystem is above the floor that keeps the index
        writable (VoIPmonitor's emergency cleaning plays the same part)."""
        st = os.statvfs(self.data_dir)
        return st.f_bavail * st.f_frsize >= self.min_free_bytes

    def relative(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    def _new_id(self, origin: float) -> str:
        stamp = datetime.fromtimestamp(origin, self.tz).strftime("%Y%m%dT%H%M%S")
        return f"{stamp}-{secrets.token_hex(4)}"

    def begin(self, call: CallSnapshot, origin: float) -> None:
        record_id = self._new_id(origin)
        self._ids[call.serial] = record_id
        self._write_backlog()
        self._unwritten[record_id] = _PendingRow(call.invite_ts, insert={
            "id": record_id, "sip_call_id": call.sip_call_id,
            "started_at": iso(call.invite_ts, self.tz), "answered_at": iso(call.answer_ts, self.tz),
            "direction": str(call.direction), "local_number": call.local_number,
            "remote_number": call.remote_number, "caller": call.caller, "callee": call.callee,
            "caller_withheld": call.caller_withheld, "codecs": list(call.codecs), "state": "recording",
            "recorded_at": call.answer_ts or call.invite_ts, **_parties(call), **self._started_by(call),
        })
        self._write_row(record_id)
        log.info("recording.started", call_id=record_id, direction=str(call.direction),
                 **({"started_by": call.started_by} if call.started_by else {}))

    def _started_by(self, call: CallSnapshot) -> dict[str, object]:
        """Who or what asked for an on-demand line's recording, and when (nothing for the rest)."""
        if call.started_by is None:
            return {}
        return {"started_by": call.started_by, "start_requested_at": iso(call.start_requested_at, self.tz)}

    def record_id(self, serial: int) -> str | None:
        """The id of the recording the recorder's call `serial` is writing, while it is open."""
        return self._ids.get(serial)

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> FileRecording:
        record_id = self._ids[call.serial]
        day = datetime.fromtimestamp(origin, self.tz)
        folder = self.data_dir / RECORDINGS / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        ensure_private_dir(folder)
        handle = FileRecording(self, record_id, folder, encoding, rate)
        if handle.has_audio:
            self._write_row(record_id, audio_path=self.relative(handle.wav_path),
                            audio_format=audio_format(encoding, rate))
        return handle

    def abandon(self, serial: int, handle: RecordingHandle | None) -> str | None:
        """Let go of a recording whose capture worker died; its id, for recovery."""
        if isinstance(handle, FileRecording):
            handle.abandon()
        return self._ids.pop(serial, None)

    def refusal(self, record_id: str) -> tuple[str, str] | None:
        """Why this recording must not write audio, as (end reason, message):
        audio with no row would be evidence nobody can find or erase, and
        audio written into the reserve would take the room kept for rows."""
        pending = self._unwritten.get(record_id)
        if pending is not None and pending.insert is not None:
            return "not_recorded_index", "the index could not be written"
        if self.refusing is not None:
            return "not_recorded_retention", self.refusing
        if self._released:
            return "write_failed", "the disk is full: only the call's metadata is kept"
        return None

    def _write_row(self, record_id: str, seal: bool = False, **values: object) -> bool:
        """A row insert or update that a failing index (full disk) cannot turn
        into a crash: the first failure releases the reserve and tries again;
        what still fails is kept and tried again at every checkpoint until
        the disk has room (or the next start's recovery seals the row).
        Whether it was written."""
        if record_id in self._dropped:
            if seal:
                self._dropped.discard(record_id)
            return False
        pending = self._unwritten.get(record_id)
        if pending is None:
            pending = self._unwritten[record_id] = _PendingRow(None)
        pending.update.update(values)
        pending.seal = pending.seal or seal
        for attempt in range(2):
            try:
                pending.write(self.index, record_id, self._seal_key)
            except sqlite3.Error as exc:
                self.faults.failed("index", str(exc), "index.write_failed", at=pending.at, call_id=record_id)
                if attempt == 0 and self.reserve.release():
                    self._released = True
                    continue
                self._hold(record_id, pending)
                return False
            break
        del self._unwritten[record_id]
        self.faults.cleared("index")
        if pending.seal:
            self._seals_due = True
        if self._released and not self._unwritten:
            self._take_back_reserve()
        return True

    def _take_back_reserve(self) -> None:
        """Everything held back is written: once the disk has room beyond the
        floor again, the reserve is allocated again and audio resumes."""
        if self.reserve.keep(self.min_free_bytes):
            self._released = False
            log.warning("recording.resumed_after_disk_full")

    def _hold(self, record_id: str, pending: _PendingRow) -> None:
        """Keep a row the index refused, within MAX_PENDING_ROWS; past that
        the call is counted as lost (and its later updates dropped)."""
        if len(self._unwritten) > MAX_PENDING_ROWS and pending.insert is not None:
            del self._unwritten[record_id]
            if not pending.seal:
                self._dropped.add(record_id)
            self.faults.lost("no_row", pending.at)

    def retry_rows(self) -> None:
        """What a full disk held back: rows, seals, and the final record of
        files it kept from being sealed (which does not change their audio
        or its sealed hash).  Once the disk has room again the reserve is
        allocated again and audio is written again."""
        if not (self._unwritten or self.unsealed or self._released or self._seals_due):
            return  # the common case, at every recording's checkpoint
        self._write_backlog()
        for path in list(self.unsealed):
            try:
                repair_vault(path, self.master)
            except OSError:
                continue
            except VaultError as exc:
                log.error("recording.unrepairable", path=self.relative(path), reason=str(exc))
            self.unsealed.discard(path)
        if self._released and not self._unwritten:
            self._take_back_reserve()
        if self._seals_due:
            self.flush_seals()

    def _write_backlog(self) -> None:
        """Rows the index refused, oldest first, until one is refused again
        (the disk is still full: the rest waits for the next checkpoint)."""
        for record_id in list(self._unwritten):
            if not self._write_row(record_id):
                break

    def flush_seals(self) -> None:
        """Name the rows sealed since the last flush in the seal ledger; a
        disk that refuses is a fault like any other, and the rows stay to be
        named at the next flush."""
        try:
            flush_seals(self.index, self.seals, ACTOR, datetime.now(self.tz))
        except (OSError, LedgerError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.faults.failed("seal_ledger", reason, "seals.write_failed")
            return
        self._seals_due = False
        self.faults.cleared("seal_ledger")

    def close(self) -> None:
        """After the last call: everything held back is tried once more, the
        seals are named, and what could not be written is counted as lost
        (its calls stay without a row, or in `recording` for the next start's
        recovery)."""
        self.retry_rows()
        self.flush_seals()
        for pending in self._unwritten.values():
            self.faults.lost("no_row" if pending.insert is not None else "unsealed", pending.at)
        lost = self.faults.totals()
        if lost:
            log.error("storage.calls_lost", **lost, detail="per hour in `callrec status`")

    def _notice_for(self, call: CallSnapshot) -> NoticeMatch | None:
        """The announcer's record of this call, if it handled it, and how the two are tied.

        The recorder may see the announcer's own dialog (same Call-ID), the caller's leg to the
        number dialled (under way while the announcer had the call), or the call a REFER or a
        302 led to: a new dialog from the caller to the hand-over's target, begun within the
        policy's window after the announcement ended, or one whose Replaces or Referred-By names
        the announcer's dialog. The strongest tie wins, then the nearest in time, so a caller
        who hung up during the announcement and called again gets the notice of the second call.
        The direction is not asked: the call after a transfer may look internal to the PBX."""
        if self._notices is None:
            self._notices = NoticeLog(self.index.path, str(self.tz))
        found = self._notices.find(Dialog(
            sip_call_id=call.sip_call_id, invite_ts=call.invite_ts, end_ts=call.end_ts, caller=call.caller,
            callee=call.callee, caller_withheld=call.caller_withheld, referred_by=call.referred_by,
            replaces=call.replaces), NOTICE_SLACK)
        return found[0] if found else None

    def _notice_values(self, call: CallSnapshot, record_id: str) -> dict[str, object]:
        """The row's link to its notice. The dialog the announcer answered and then passed the
        caller on from is recorded as the announcer's leg of the call it served (they share the
        notice), not as a call of its own."""
        match = self._notice_for(call)
        if match is None:
            return {}
        notice = match.row
        leg = ANNOUNCER_LEG if match.tie is Tie.SAME_DIALOG and notice.passed_on else None
        if leg is not None:
            log.info("recording.announcer_leg", call_id=record_id, notice_id=notice.id)
        return {"notice_id": notice.id, "leg": leg,
                "announced_at": notice.announced_from if notice.outcome in NOTICE_HEARD else None}

    def finish_without_audio(self, result: CallResult) -> None:
        self._seal_row(result, None, 0)

    def seal(self, result: CallResult, handle: FileRecording, frames: int) -> None:
        self._seal_row(result, handle, frames)

    def _seal_row(self, result: CallResult, handle: FileRecording | None, frames: int) -> None:
        call = result.call
        record_id = self._ids.pop(call.serial)
        end = call.end_ts
        answered = call.answer_ts
        values: dict[str, object] = dict(
            # As they stand at the end: a step of the capture clock during
            # the call moved them with it (recorder.engine).
            started_at=iso(call.invite_ts, self.tz), answered_at=iso(answered, self.tz),
            ended_at=iso(end, self.tz),
            duration=round(end - answered, 3) if end is not None and answered is not None else None,
            codecs=list(call.codecs),
            audio_frames=frames,
            streams=[
                {"channel": s.channel, "party": "local" if s.channel == 0 else "remote",
                 "flows": list(s.flows), **s.stats}
                for s in result.streams
            ],
            dtmf=[
                {"channel": mark.channel, "digit": mark.digit, "at": iso(result.origin + mark.position / 8000, self.tz),
                 "offset": round(mark.position / 8000, 3), "duration_ms": mark.duration_ms, "ended": mark.ended}
                for mark in result.dtmf
            ],
            undecoded=list(result.undecoded),
            late_samples=result.late_samples,
            gaps=[{"offset": round(gap.offset, 3), "seconds": round(gap.seconds, 3), "reason": gap.reason,
                   "from": iso(result.origin + gap.offset, self.tz),
                   "to": iso(result.origin + gap.offset + gap.seconds, self.tz)} for gap in result.gaps],
            end_reason=call.end_reason,
            complete=call.complete,
            state="sealed",
        )
        if handle is not None and handle.failure is not None:
            values.update(end_reason=handle.failure_code, complete=False)
            self.faults.lost(handle.failure_code, call.invite_ts)
        elif handle is not None and handle.has_audio:
            for code in AUDIO_FAULTS:
                self.faults.cleared(code)
        values.update(_parties(call))
        values.update(self._notice_values(call, record_id))
        if handle is not None and handle.has_audio:
            try:
                audio, values["sha256"] = wav_digest(handle.wav_path, self.master, record_id,
                                                     allow_torn=handle.failure is not None)
                values["audio_frames"] = audio.frames
                values["audio_format"] = audio.format
                values["side_files"] = handle.side_files()
                values["size_bytes"] = handle.size_bytes()
            except (OSError, VaultError) as exc:
                log.error("recording.seal_failed", call_id=record_id, reason=str(exc))
                values.update(end_reason="write_failed", complete=False)
        self._write_row(record_id, seal=True, **values)
        log.info("recording.sealed", call_id=record_id, direction=str(call.direction),
                 complete=values["complete"], end_reason=values["end_reason"], frames=frames)


class _PendingRow:
    """A row write the index refused: the insert (until the row exists), the
    updates since, and whether they seal it; `at` is the call's start, for
    counting what a fault cost per hour."""

    __slots__ = ("at", "insert", "seal", "update")

    def __init__(self, at: float | None, insert: dict[str, object] | None = None) -> None:
        self.at = at
        self.insert = insert
        self.update: dict[str, object] = {}
        self.seal = False

    def write(self, index: CallIndex, record_id: str, key: bytes) -> None:
        if self.insert is not None:
            index.insert(**self.insert)
            self.insert = None
        if self.seal:
            index.seal(record_id, key, **self.update)
        elif self.update:
            index.update(record_id, **self.update)
        self.update = {}
