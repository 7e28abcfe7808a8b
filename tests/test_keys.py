"""The master key: file formats, refused files, credential precedence, wrapping."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.keys import (
    DEFAULT_CREDENTIAL,
    MasterKey,
    MasterKeyError,
    MasterKeyMissing,
    create_key_file,
    load_master_key,
)

RAW = bytes(range(1, 33))


def write_key(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    return folder


@pytest.mark.parametrize(
    "content",
    [RAW, RAW.hex().encode(), RAW.hex().encode() + b"\n", RAW.hex().upper().encode() + b"\n"],
    ids=["raw", "hex", "hex-newline", "HEX"],
)
def test_key_file_formats_give_the_same_key(tmp_path: Path, data_dir: Path, content: bytes) -> None:
    key = load_master_key(write_key(tmp_path / "k", content), data_dir, {})
    assert key.key_id == MasterKey(RAW).key_id


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "0 bytes"),
        (RAW[:31], "31 bytes"),
        (RAW + b"\n", "33 bytes"),
        (RAW.hex().encode() + b"\n\n", "66 bytes"),
        (RAW.hex().encode() + b"\r\n", "66 bytes"),
        (b"g" * 64, "not hex"),
        (b"0" * 64, "all zero"),
        (bytes(32), "all zero"),
    ],
)
def test_malformed_key_files_are_refused_with_path_and_reason(
    tmp_path: Path, data_dir: Path, content: bytes, reason: str
) -> None:
    path = write_key(tmp_path / "k", content)
    with pytest.raises(MasterKeyError) as caught:
        load_master_key(path, data_dir, {})
    assert isinstance(caught.value, StorageError)
    assert caught.value.path == path
    assert reason in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_readable_key_file_is_refused(tmp_path: Path, data_dir: Path, mode: int) -> None:
    path = write_key(tmp_path / "k", RAW.hex().encode(), mode)
    with pytest.raises(MasterKeyError, match=f"mode {mode:04o}.*chmod 0600"):
        load_master_key(path, data_dir, {})


def test_read_only_owner_mode_is_accepted(tmp_path: Path, data_dir: Path) -> None:
    assert load_master_key(write_key(tmp_path / "k", RAW, 0o400), data_dir, {}).key_id == MasterKey(RAW).key_id


def test_key_file_inside_the_data_folder_is_refused(data_dir: Path) -> None:
    path = write_key(data_dir / "master.key", RAW)
    with pytest.raises(MasterKeyError, match="inside the data folder"):
        load_master_key(path, data_dir, {})
    nested = data_dir / "keys"
    nested.mkdir()
    with pytest.raises(MasterKeyError, match="inside the data folder"):
        load_master_key(write_key(nested / "k", RAW), data_dir, {})


def test_key_file_reached_through_a_symlink_into_the_data_folder_is_refused(tmp_path: Path, data_dir: Path) -> None:
    write_key(data_dir / "master.key", RAW)
    link = tmp_path / "k"
    link.symlink_to(data_dir / "master.key")
    with pytest.raises(MasterKeyError):
        load_master_key(link, data_dir, {})


def test_missing_key_file_is_its_own_error(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(MasterKeyMissing, match="does not exist"):
        load_master_key(tmp_path / "absent", data_dir, {})
    with pytest.raises(MasterKeyMissing, match="no master key"):
        load_master_key(None, data_dir, {})


def test_a_directory_is_not_a_key_file(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "k"
    folder.mkdir(mode=0o700)
    with pytest.raises(MasterKeyError, match="not a regular file"):
        load_master_key(folder, data_dir, {})


def test_systemd_credential_wins_over_the_key_file(tmp_path: Path, data_dir: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    other = bytes(range(100, 132))
    write_key(creds / DEFAULT_CREDENTIAL, other, 0o400)
    key_file = write_key(tmp_path / "k", RAW)
    key = load_master_key(key_file, data_dir, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert key.key_id == MasterKey(other).key_id
    named = load_master_key(None, data_dir, {"CREDENTIALS_DIRECTORY": str(creds)}, credential=DEFAULT_CREDENTIAL)
    assert named.key_id == key.key_id


def test_key_file_is_used_when_the_credentials_folder_lacks_the_key(tmp_path: Path, data_dir: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    write_key(creds / "something-else", bytes(range(100, 132)), 0o400)
    key = load_master_key(write_key(tmp_path / "k", RAW), data_dir, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert key.key_id == MasterKey(RAW).key_id


def test_malformed_credential_is_refused_not_skipped(tmp_path: Path, data_dir: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    write_key(creds / DEFAULT_CREDENTIAL, b"short", 0o400)
    with pytest.raises(MasterKeyError, match=DEFAULT_CREDENTIAL):
        load_master_key(write_key(tmp_path / "k", RAW), data_dir, {"CREDENTIALS_DIRECTORY": str(creds)})


def test_create_key_file_is_private_exclusive_and_loads_back(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "master.key"
    created = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(path, data_dir, {}).key_id == created.key_id
    with pytest.raises(FileExistsError):
        create_key_file(path)
    assert load_master_key(path, data_dir, {}).key_id == created.key_id


def test_create_key_file_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        create_key_file(link)
    assert not target.exists()


def test_key_id_is_derived_not_a_plain_hash_and_repr_hides_the_key() -> None:
    import hashlib

    key = MasterKey(RAW)
    assert len(key.key_id) == 16
    assert key.key_id not in hashlib.sha256(RAW).hexdigest()
    assert RAW.hex() not in repr(key) and key.key_id in repr(key)
    assert MasterKey(os.urandom(32)).key_id != key.key_id


def test_derive_gives_independent_labelled_subkeys() -> None:
    key = MasterKey(RAW)
    ledger = key.derive("callrec ledger v1")
    assert len(ledger) == 32 and ledger == key.derive("callrec ledger v1")
    assert ledger != key.derive("callrec ledger v2") and ledger != RAW


def test_wrap_unwrap_round_trip() -> None:
    key = MasterKey(RAW)
    data_key = os.urandom(32)
    blob = key.wrap(data_key, b"header bytes")
    assert data_key not in blob
    assert key.unwrap(blob, b"header bytes") == data_key
    assert key.wrap(data_key, b"header bytes") != blob, "a fresh nonce every time"


def test_unwrap_refuses_wrong_key_context_or_altered_blob() -> None:
    key = MasterKey(RAW)
    blob = key.wrap(os.urandom(32), b"context")
    with pytest.raises(MasterKeyError, match="does not open"):
        MasterKey(bytes(range(2, 34))).unwrap(blob, b"context")
    with pytest.raises(MasterKeyError, match="does not open"):
        key.unwrap(blob, b"other context")
    altered = bytearray(blob)
    altered[20] ^= 1
    with pytest.raises(MasterKeyError, match="does not open"):
        key.unwrap(bytes(altered), b"context")
    with pytest.raises(MasterKeyError, match="too short"):
        key.unwrap(blob[:20], b"context")
