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

from policy.decide import Direction
from recorder.record import CallResult, CallSnapshot
from wire.rtppcap import pcap_record

from .audiofile import AudioWriter, SideWriter, convert_to_l16, side_digest, wav_digest
from .index import CallIndex, SideFile, iso
from .keys import MasterKey
from .layout import RECORDINGS, ensure_private_dir
from .notices import NoticeLog, NoticeRow
from .vault import VaultError, repair_vault, shred

__all__ = ["DEFAULT_MIN_FREE_BYTES", "RecordingStore"]

log = structlog.get_logger("callrec.storage")

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
NOTICE_SLACK = 5.0
"""Seconds around an inbound call within which the announcer's notice of
it may have been received (clocks of mirror and announcer differ a little)."""
NOTICE_HEARD = ("announced",)

_WRITE_BATCH = 32 * 1024
"""Bytes of frames gathered before they are written even without a checkpoint:
the bound on what a recording holds in memory."""


class FileRecording:
    """One recording being written: its audio and any side files, encrypted.

    Frames are gathered and written at each checkpoint (about once a second
    of capture time) as one vault record, rather than at every interleaver
    commit: one write call per call and second instead of about five.  What
    is gathered is at most _WRITE_BATCH plus the latest append; a crash loses
    the frames committed since the last checkpoint, at most about a second,
    besides what the interleaver had not committed yet."""

    def __init__(self, store: RecordingStore, record_id: str, folder: Path, encoding: str) -> None:
        self._store = store
        self.record_id = record_id
        self._folder = folder
        self._side: dict[int, SideWriter] = {}
        self.wav_path = folder / f"{record_id}.wav.vault"
        self._pending: list[bytes] = []
        self._pending_size = 0
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
            self._wav = AudioWriter(self.wav_path, store.master, record_id, encoding)
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
            log.error("recording.write_failed", call_id=self.record_id, reason=self.failure)
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
        self._store.index.update(self.record_id, audio_path=self._store.relative(new), audio_format="L16")
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
        self._write_pending()
        if self.failure is None and self._wav is not None:
            try:
                self._wav.sync(durable=False)
                for writer in self._side.values():
                    writer.sync(durable=False)
            except OSError as exc:
                self._fail(exc)
        if self.failure is None and not self._store.space_left():
            self._fail(OSError(errno.ENOSPC, "free space below the floor"))
        self._store.retry_rows()

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

    def side_files(self) -> list[SideFile]:
        return [SideFile(ch, self._store.relative(self._side_path(ch)),
                         side_digest(self._side_path(ch), self._store.master, self.record_id,
                                     allow_torn=self.failure is not None))
                for ch in sorted(self._side)]

    def size_bytes(self) -> int:
        """What the recording occupies at rest, for the capacity ring."""
        paths = [self.wav_path, *(self._side_path(ch) for ch in self._side)]
        return sum(p.stat().st_size for p in paths if p.exists())


class RecordingStore:
    """Implements the recorder's RecordingSink over a data folder."""

    def __init__(self, data_dir: Path, index: CallIndex, tz: ZoneInfo, master: MasterKey,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        self.data_dir = data_dir
        self.index = index
        self.master = master
        self.tz = tz
        self.min_free_bytes = min_free_bytes
        self._notices: NoticeLog | None = None
        self._unindexed: set[str] = set()
        self._unwritten: dict[str, dict[str, object]] = {}
        self.unsealed: set[Path] = set()
        self.refusing: str | None = None
        """Why new calls are not recorded, when the retention policy says
        so (stop_recording rather than cut a minimum period short)."""
        self._ids: dict[int, str] = {}
        ensure_private_dir(data_dir / RECORDINGS)

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
        try:
            self.index.insert(
                id=record_id, sip_call_id=call.sip_call_id,
                started_at=iso(call.invite_ts, self.tz), answered_at=iso(call.answer_ts, self.tz),
                direction=str(call.direction), local_number=call.local_number, remote_number=call.remote_number,
                caller=call.caller, callee=call.callee, caller_withheld=call.caller_withheld,
                codecs=list(call.codecs), state="recording", recorded_at=call.answer_ts or call.invite_ts,
            )
        except sqlite3.Error as exc:
            log.error("index.write_failed", call_id=record_id, reason=str(exc))
            self._unindexed.add(record_id)
        log.info("recording.started", call_id=record_id, direction=str(call.direction))

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str) -> FileRecording:
        record_id = self._ids[call.serial]
        day = datetime.fromtimestamp(origin, self.tz)
        folder = self.data_dir / RECORDINGS / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        ensure_private_dir(folder)
        handle = FileRecording(self, record_id, folder, encoding)
        if handle.has_audio:
            self._write_row(record_id, audio_path=self.relative(handle.wav_path), audio_format=encoding)
        return handle

    def refusal(self, record_id: str) -> tuple[str, str] | None:
        """Why this recording must not write audio, as (end reason, message):
        audio with no row would be evidence nobody can find or erase."""
        if record_id in self._unindexed:
            return "not_recorded_index", "the index could not be written"
        if self.refusing is not None:
            return "not_recorded_retention", self.refusing
        return None

    def _write_row(self, record_id: str, **values: object) -> None:
        """A row update that a failing index (full disk) cannot turn into a
        crash: it is logged and kept, and tried again at every checkpoint
        until the disk has room (or the next start's recovery seals it)."""
        if record_id in self._unindexed:
            return
        pending = self._unwritten.pop(record_id, {})
        pending.update(values)
        try:
            self.index.update(record_id, **pending)
        except sqlite3.Error as exc:
            self._unwritten[record_id] = pending
            log.error("index.write_failed", call_id=record_id, reason=str(exc))

    def retry_rows(self) -> None:
        """What a full disk held back: row updates, and the final record of
        files it kept from being sealed (which does not change their audio
        or its sealed hash)."""
        for record_id in list(self._unwritten):
            self._write_row(record_id)
        for path in list(self.unsealed):
            try:
                repair_vault(path, self.master)
            except OSError:
                continue
            except VaultError as exc:
                log.error("recording.unrepairable", path=self.relative(path), reason=str(exc))
            self.unsealed.discard(path)

    def _notice_for(self, call: CallSnapshot) -> NoticeRow | None:
        """The announcer's record of this inbound call, if it handled it.

        The announcer's leg has a Call-ID of its own, so the call is found
        by its numbers (both normalised by the same policy) and by time: the
        PBX sends it to the announcer between the INVITE and the end."""
        if call.direction is not Direction.INBOUND or call.invite_ts is None:
            return None
        if self._notices is None:
            self._notices = NoticeLog(self.index.path, str(self.tz))
        end = call.end_ts if call.end_ts is not None else call.invite_ts
        found = self._notices.find(call.remote_number, call.local_number, call.invite_ts - NOTICE_SLACK,
                                   end + NOTICE_SLACK)
        return found[0] if found else None

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
            end_reason=call.end_reason,
            complete=call.complete,
            state="sealed",
        )
        if handle is not None and handle.failure is not None:
            values.update(end_reason=handle.failure_code, complete=False)
        notice = self._notice_for(call)
        if notice is not None:
            values.update(notice_id=notice.id, announced_at=notice.announced_from
                          if notice.outcome in NOTICE_HEARD else None)
        if handle is not None and handle.has_audio:
            try:
                audio, values["sha256"] = wav_digest(handle.wav_path, self.master, record_id,
                                                     allow_torn=handle.failure is not None)
                values["audio_frames"] = audio.frames
                values["audio_format"] = audio.encoding
                values["side_files"] = handle.side_files()
                values["size_bytes"] = handle.size_bytes()
            except (OSError, VaultError) as exc:
                log.error("recording.seal_failed", call_id=record_id, reason=str(exc))
                values.update(end_reason="write_failed", complete=False)
        if record_id in self._unindexed:
            self._unindexed.discard(record_id)
            return
        self._write_row(record_id, **values)
        log.info("recording.sealed", call_id=record_id, direction=str(call.direction),
                 complete=values["complete"], end_reason=values["end_reason"], frames=frames)
