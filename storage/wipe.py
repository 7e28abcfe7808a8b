"""Decommissioning (yamagata 第8条3): everything erased so nothing can be
restored, before a leased device goes back.

Every vault is shredded (its wrapped key first), every row cleared to a
tombstone, the index compacted so freed pages hold nothing, and a final
ledger entry says what was done.  The master key goes last: without it no
copy of any vault that may linger on the medium can ever be opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from .archive import shred_medium
from .layout import RECORDINGS
from .ledger import Event
from .seal_ledger import flush_seals
from .store import Store
from .vault import shred

__all__ = ["WipeResult", "destroy_key_file", "wipe_all"]

log = structlog.get_logger("callrec.storage")


@dataclass(frozen=True, slots=True)
class WipeResult:
    files: int
    rows: int
    ledger_seq: int
    archive_files: int | None = None
    """Shredded on the archive medium; None when no medium of this recorder was mounted."""


def wipe_all(store: Store, actor: str, reason: str | None) -> WipeResult:
    files = 0
    for path in sorted((store.data_dir / RECORDINGS).rglob("*")):
        if path.is_file() and not path.is_symlink():
            shred(path)
            files += 1
    archived = shred_medium(store)
    at = store.now().isoformat(timespec="milliseconds")
    ids = [row.id for row in store.index.rows() if not row.erased_at]
    key = store.seal_key
    with store.index.transaction():
        for record_id in ids:
            store.index.mark_erased(record_id, at, "wipe", key)
    flush_seals(store.index, store.seals, actor, store.now())
    store.index.compact()
    entry = store.ledger.append(Event.WIPE, actor, store.now(), reason=reason, files=files, recordings=len(ids),
                                master_key_id=store.master.key_id, archive_files=archived)
    log.warning("store.wiped", files=files, recordings=len(ids))
    return WipeResult(files, len(ids), entry.seq, archived)


def destroy_key_file(path: Path) -> bool:
    """Shred the master key file, if the key came from one; a systemd
    credential is the administrator's to remove (its file lives outside
    what the service may write)."""
    if path.is_file() and not path.is_symlink():
        shred(path)
        return True
    return False
