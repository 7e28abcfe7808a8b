"""Where things are in a data folder, and the modes they are made with.

Every path is made here or beside here from callrec's own names, never from
anything that arrived on the wire.  Folders are 0700 (the daemon's user
alone reads recordings; people get copies through callrec), files 0600.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DIR_MODE", "INDEX_FILE", "RECORDINGS", "default_key_file", "ensure_private_dir"]

DIR_MODE = 0o700
INDEX_FILE = "index.sqlite3"
RECORDINGS = "recordings"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def default_key_file(data_dir: Path) -> Path:
    """Beside the data folder, never inside it: a copy of the folder alone
    (a stolen disk image of it, a backup) must not carry its own key."""
    return data_dir.parent / f"{data_dir.name}.key"
