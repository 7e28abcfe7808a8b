"""After a crash: every recording that was being written is made readable,
sealed as incomplete and indexed, before anything new is recorded; and the
seal ledger brought up to date with the index (rows sealed just before the
crash, and at the first start after an upgrade the rows sealed before rows
had seals)."""
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
from .seal_ledger import flush_seals, seal_key, seal_unsealed
from .store import Store
from .vault import VaultError, repair_vault, shred

__all__ = ["recover_store", "recover_unfinished"]

log = structlog.get_logger("callrec.storage")

END_REASON = "recovered_after_crash"
_SIDE = re.compile(r"\.ch([01])\.rtp\.pcap\.vault$")


def recover_unfinished(data_dir: Path, index: CallIndex, tz: ZoneInfo, master: MasterKey,
                       only: set[str] | None = None) -> list[str]:
    """Repair and seal what a crash left open; returns the recovered ids.
    ``only``: just these (the calls of a capture worker that died while the
    daemon and the other workers go on, callrec.workers).

    Every complete vault record is kept (a record is written about once a
    second), so the audio up to the crash survives; the end time is the
    file's last modification, which is when its last audio was written.
    """
    recovered = []
    key = seal_key(master)
    for row in index.unfinished():
        record_id = row.id
        if only is not None and record_id not in only:
            continue
        if index.seal_of(record_id) is not None:
            # Sealed once, then set back to `recording`: sealing it again
            # would bless whatever was done to it.  verify names it.
            log.error("recording.unsealed_after_seal", call_id=record_id)
            continue
        update: dict[str, object] = {"state": "sealed", "complete": False, "end_reason": END_REASON}
        if row.audio_path:
            path = data_dir / row.audio_path
            try:
                update.update(_recover_files(data_dir, path, record_id, master))
            except (OSError, VaultError, AudioFileError) as exc:
                log.error("recording.unrepairable", call_id=record_id, reason=str(exc))
                update["end_reason"] = "lost_in_crash"
                index.seal(record_id, key, **update)
                recovered.append(record_id)
                continue
            ended = os.stat(path).st_mtime
            update["ended_at"] = iso(ended, tz)
            if row.answered_at:
                answered = datetime.fromisoformat(row.answered_at).timestamp()
                update["duration"] = round(max(0.0, ended - answered), 3)
        index.seal(record_id, key, **update)
        log.warning("recording.recovered", call_id=record_id)
        recovered.append(record_id)
    return recovered


def recover_store(store: Store, actor: str) -> list[str]:
    """Everything a writer (the daemon, replay) does at start before it
    records: recover what a crash left open, anchor both ledgers if they
    are not yet, seal the rows of an older version at the first start after
    the upgrade (`adopted`), and name in the seal ledger every seal it does
    not name yet.  Returns the recovered ids."""
    recovered = recover_unfinished(store.data_dir, store.index, store.tz, store.master)
    seals = store.seals
    for ledger in (store.ledger, seals):
        ledger.ensure_anchor()
    if not seals.path.exists() or seals.path.stat().st_size == 0:
        adopted = seal_unsealed(store.index, seals, store.seal_key, actor, store.now())
        if adopted:
            log.warning("seals.adopted", rows=adopted,
                        detail="rows sealed before rows had seals are sealed as they read now")
    flush_seals(store.index, seals, actor, store.now())
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
