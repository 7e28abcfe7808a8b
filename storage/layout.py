"""Where things are in a data folder, and the modes they are made with.

Every path is made here or beside here from callrec's own names, never from
anything that arrived on the wire.  Folders are 0700 (the daemon's user
alone reads recordings; people get copies through callrec), files 0600.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from .errors import StorageError

__all__ = ["DIR_MODE", "INDEX_FILE", "RECORDINGS", "FolderNotPrivate", "default_key_file", "ensure_private_dir"]

DIR_MODE = 0o700
INDEX_FILE = "index.sqlite3"
RECORDINGS = "recordings"

log = structlog.get_logger("callrec.storage")


class FolderNotPrivate(StorageError):
    """A folder others may read that callrec cannot make 0700."""


def ensure_private_dir(path: Path) -> None:
    """Make the folder 0700, or make an existing one 0700: a data folder
    made by hand (mkdir leaves 0755) must not let other users list what is
    recorded.  Only a folder this process owns is changed, and the change is
    logged; one it cannot change is refused with what to do."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    found = path.stat()
    mode = stat.S_IMODE(found.st_mode)
    if not mode & 0o077:
        return
    euid = os.geteuid()
    if found.st_uid != euid:
        raise FolderNotPrivate(
            f"folder {path} is mode {mode:04o} and belongs to uid {found.st_uid}, not to this process "
            f"(uid {euid}): make it private (chmod 700 {path}) or run callrec as its owner")
    try:
        os.chmod(path, DIR_MODE)
    except OSError as exc:
        raise FolderNotPrivate(f"folder {path} is mode {mode:04o} and cannot be made 0700: {exc.strerror}") from None
    log.warning("folder.made_private", path=str(path), mode=f"{mode:04o}")


def default_key_file(data_dir: Path) -> Path:
    """Beside the data folder, never inside it: a copy of the folder alone
    (a stolen disk image of it, a backup) must not carry its own key."""
    return data_dir.parent / f"{data_dir.name}.key"
