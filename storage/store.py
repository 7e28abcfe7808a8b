"""A data folder opened for use: the index, the master key and the ledger.

Opening checks that the master key is the one the recordings were written
under before anything is recorded, so a wrong or replaced key is refused at
start rather than discovered when a recording is needed.
"""
from __future__ import annotations

import getpass
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from .errors import StorageError
from .index import CallIndex
from .keys import MasterKey, MasterKeyError, MasterKeyMissing, create_key_file, load_master_key
from .layout import INDEX_FILE, default_key_file, ensure_private_dir
from .ledger import KEY_LABEL, Ledger, default_anchor_dir
from .reserve import Reserve
from .seal_ledger import seal_key, seal_ledger

__all__ = ["Store", "StoreError", "actor", "default_anchor_dir"]

KEY_ID_SETTING = "master_key_id"


class StoreError(StorageError):
    """The data folder cannot be used as it is; says why and what to do."""


def actor() -> str:
    """Who is acting, for the ledger: the login behind sudo, if any."""
    user = getpass.getuser()
    behind = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {behind})" if behind and behind != user else user


@dataclass
class Store:
    data_dir: Path
    index: CallIndex
    master: MasterKey
    ledger: Ledger
    tz: ZoneInfo
    archive_dir: Path | None = None
    """The second medium's folder (config `archive_dir`), where storage/archive.py moves recordings."""
    anchor_dir: Path | None = field(default=None)

    @classmethod
    def open(cls, data_dir: Path, tz: ZoneInfo, key_file: Path | None = None,
             environ: Mapping[str, str] = os.environ, create_key: bool = False, *,
             archive_dir: Path | None = None, anchor_dir: Path | None = None, read_only: bool = False) -> Store:
        """`create_key` makes a key file on first use, for the embedded
        default; it is refused when the folder already holds recordings.

        `read_only` is for commands that only read or check: on a full disk
        the index is then opened read-only rather than not at all.  A writer
        that cannot open the index on a full disk releases the reserve
        (storage/reserve.py) and tries once more."""
        ensure_private_dir(data_dir)
        key_path = key_file or default_key_file(data_dir)
        anchors = anchor_dir or default_anchor_dir(data_dir)
        index = _open_index(data_dir, read_only)
        try:
            known = index.setting(KEY_ID_SETTING)
            try:
                master = load_master_key(key_path, data_dir, environ)
            except MasterKeyMissing as exc:
                if not create_key or known is not None:
                    raise StoreError(f"{exc}; the recordings in {data_dir} need the key they were written "
                                     "under" if known else str(exc)) from None
                master = create_key_file(key_path)
            except MasterKeyError as exc:
                raise StoreError(str(exc)) from None
            if known is None and not index.read_only:
                index.set_setting(KEY_ID_SETTING, master.key_id)
            elif known != master.key_id:
                raise StoreError(f"{data_dir} was written under master key {known}, but the key loaded is "
                                 f"{master.key_id}: give callrec the right key (systemd credential or key file)")
        except BaseException:
            index.close()
            raise
        return cls(data_dir, index, master, Ledger.in_data_dir(data_dir, master.derive(KEY_LABEL), anchors), tz,
                   archive_dir, anchors)

    @property
    def seals(self) -> Ledger:
        """The seal ledger (storage/seal_ledger.py), anchored beside the 管理簿."""
        return seal_ledger(self.data_dir, self.master, self.anchor_dir)

    @property
    def seal_key(self) -> bytes:
        return seal_key(self.master)

    def for_thread(self) -> Store:
        """The same store over a connection of its own, for a worker thread
        (an sqlite3 connection stays in the thread that made it)."""
        return replace(self, index=CallIndex(self.index.path))

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_index(data_dir: Path, read_only: bool) -> CallIndex:
    path = data_dir / INDEX_FILE
    if read_only:
        return CallIndex.for_reading(path)
    try:
        return CallIndex(path)
    except sqlite3.OperationalError:
        if not Reserve(data_dir).release():
            raise
        return CallIndex(path)
