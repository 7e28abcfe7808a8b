"""After a crash: every recording that was being written is made readable,
sealed as incomplete and indexed, before anything new is recorded."""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from .audiofile import AudioFileError, side_digest, wav_digest
from .index import CallIndex, SideFile, iso
from .keys import MasterKey
from .vault import VaultError, repair_vault, shred

__all__ = ["recover_unfinished"]

log = structlog.get_logger("callrec.storage")

END_REASON = "recovered_after_crash"
_SIDE = re.compile(r"\.ch([01])\.rtp\.pcap\.vault$")


def recover_unfinished(data_dir: Path, index: CallIndex, tz: ZoneInfo, master: MasterKey) -> list[str]:
    """Repair and seal what a crash left open; returns the recovered ids.

    Every complete vault record is kept (a record is written about once a
    second), so the audio up to the crash survives; the end time is the
    file's last modification, which is when its last audio was written.
    """
    recovered = []
    for row in index.unfinished():
        record_id = row.id
        update: dict[str, object] = {"state": "sealed", "complete": False, "end_reason": END_REASON}
        if row.audio_path:
            path = data_dir / row.audio_path
            try:
                update.update(_recover_files(data_dir, path, record_id, master))
            except (OSError, VaultError, AudioFileError) as exc:
                log.error("recording.unrepairable", call_id=record_id, reason=str(exc))
                update["end_reason"] = "lost_in_crash"
                index.update(record_id, **update)
                recovered.append(record_id)
                continue
            ended = os.stat(path).st_mtime
            update["ended_at"] = iso(ended, tz)
            if row.answered_at:
                answered = datetime.fromisoformat(row.answered_at).timestamp()
                update["duration"] = round(max(0.0, ended - answered), 3)
        index.update(record_id, **update)
        log.warning("recording.recovered", call_id=record_id)
        recovered.append(record_id)
    return recovered


def _recover_files(data_dir: Path, path: Path, record_id: str, master: MasterKey) -> dict[str, object]:
    """Seal the recording's vaults and erase the leftovers of a law change
    that the crash interrupted (the file the row does not name)."""
    repair_vault(path, master)
    audio, digest = wav_digest(path, master, record_id)
    sides: list[SideFile] = []
    size = path.stat().st_size
    for other in sorted(path.parent.glob(f"{record_id}.*")):
        if other == path:
            continue
        side = _SIDE.search(other.name)
        if side is None:
            shred(other)
            log.warning("recording.leftover_erased", call_id=record_id)
            continue
        repair_vault(other, master)
        sides.append(SideFile(int(side.group(1)), other.relative_to(data_dir).as_posix(),
                              side_digest(other, master, record_id)))
        size += other.stat().st_size
    return {"audio_frames": audio.frames, "audio_format": audio.format, "sha256": digest,
            "side_files": sides, "size_bytes": size}
