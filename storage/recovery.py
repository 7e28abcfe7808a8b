"""After a crash: every recording that was being written is made playable,
sealed as incomplete and indexed, before anything new is recorded."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import soundfile
import structlog

from recorder.wavfile import WavFormatError, repair_wav, sha256_file

from .index import CallIndex
from .recordings import iso

log = structlog.get_logger("callrec.storage")

_SUBTYPES = {"ULAW": "PCMU", "ALAW": "PCMA", "PCM_16": "L16"}
END_REASON = "recovered_after_crash"


def recover_unfinished(data_dir: Path, index: CallIndex, tz: ZoneInfo) -> list[str]:
    """Repair and seal what a crash left open; returns the recovered ids.

    The audio up to the crash is kept (the WAV writer appends unbuffered and
    its header is repaired from the file length); the end time is the file's
    last modification, which is when its last audio was written.
    """
    recovered = []
    for row in index.unfinished():
        values = row.values
        record_id = row.id
        update: dict[str, object] = {"state": "sealed", "complete": False, "end_reason": END_REASON}
        if values["audio_path"]:
            path = data_dir / values["audio_path"]
            try:
                frames = repair_wav(path)
            except (OSError, WavFormatError) as exc:
                log.error("recording.unrepairable", call_id=record_id, reason=str(exc))
                update["end_reason"] = "lost_in_crash"
                index.update(record_id, **update)
                recovered.append(record_id)
                continue
            ended = os.stat(path).st_mtime
            update.update(
                audio_frames=frames,
                audio_format=_SUBTYPES.get(soundfile.info(str(path)).subtype, values["audio_format"]),
                sha256=sha256_file(path),
                ended_at=iso(ended, tz),
            )
            if values["answered_at"]:
                answered = datetime.fromisoformat(values["answered_at"]).timestamp()
                update["duration"] = round(max(0.0, ended - answered), 3)
        index.update(record_id, **update)
        log.warning("recording.recovered", call_id=record_id)
        recovered.append(record_id)
    return recovered
