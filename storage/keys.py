"""The master key: kept apart from the recordings so that destroying a
recording's wrapped data key (or the master key itself) makes its audio
unrecoverable even where overwriting cannot reach (SSD remapping, backups).

It comes from a systemd credential (LoadCredentialEncrypted= can seal it to
the machine's TPM) or from a key file outside the data folder; never from
the data folder itself, which would put the lock and the key in one box.
"""
from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .durable import fsync_dir, write_all
from .errors import StorageError

__all__ = ["KEY_SIZE", "MasterKey", "MasterKeyError", "MasterKeyMissing", "create_key_file", "load_master_key"]

log = structlog.get_logger("callrec.keys")

KEY_SIZE = 32
DEFAULT_CREDENTIAL = "callrec-master-key"
_NONCE_SIZE = 12
_WRAP_LABEL = "callrec key wrap v1"
_KEY_ID_LABEL = "callrec key id v1"
_MAX_KEY_FILE = 4096


class MasterKeyError(StorageError):
    """The master key cannot be used: names the file (if any) and why."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.reason = reason
        self.path = path


class MasterKeyMissing(MasterKeyError):
    """Neither the credential nor the key file exists: the caller may create
    a key file on a first start, but must not do so for any other error."""


class MasterKey:
    """32 secret bytes; only derived values ever leave this object."""

    __slots__ = ("_raw", "key_id")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_SIZE:
            raise MasterKeyError(f"a master key is {KEY_SIZE} bytes, not {len(raw)}")
        if not any(raw):
            raise MasterKeyError("the master key is all zero bytes (an empty file grown with truncate?)")
        self._raw = bytes(raw)
        # Derived, not a hash of the raw key, so the fingerprint printed in
        # logs and file headers tells nothing usable about the key itself.
        self.key_id: str = self.derive(_KEY_ID_LABEL)[:8].hex()

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def derive(self, label: str) -> bytes:
        """A 32-byte sub-key for one purpose, independent of every other label."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=label.encode())
        return hkdf.derive(self._raw)

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """nonce || AES-GCM(data_key) with the context as AAD: the blob opens
        only beside the exact bytes it was wrapped for."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        return nonce + AESGCM(self.derive(_WRAP_LABEL)).encrypt(nonce, data_key, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        if len(blob) <= _NONCE_SIZE + 16:
            raise MasterKeyError("wrapped key is too short")
        try:
            return AESGCM(self.derive(_WRAP_LABEL)).decrypt(blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], context)
        except InvalidTag:
            raise MasterKeyError(
                f"wrapped key does not open with master key {self.key_id}: another master key, "
                "or the wrapped key or its context was altered"
            ) from None


def parse_key_bytes(content: bytes, path: Path | None = None) -> MasterKey:
    """Exactly 32 raw bytes, or 64 hex digits and at most one newline."""
    if len(content) == KEY_SIZE:
        return _checked(content, path)
    text = content[:-1] if content.endswith(b"\n") else content
    if len(text) == 2 * KEY_SIZE:
        try:
            return _checked(bytes.fromhex(text.decode("ascii")), path)
        except (UnicodeDecodeError, ValueError):
            raise MasterKeyError("64 characters but not hex digits", path) from None
    raise MasterKeyError(
        f"{len(content)} bytes; a key file holds exactly {KEY_SIZE} raw bytes "
        f"or {2 * KEY_SIZE} hex digits and an optional newline",
        path,
    )


def _checked(raw: bytes, path: Path | None) -> MasterKey:
    try:
        return MasterKey(raw)
    except MasterKeyError as exc:
        raise MasterKeyError(exc.reason, path) from None


def _read_private(path: Path) -> bytes:
    """Read a key file, refusing what others could read or a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MasterKeyMissing("does not exist", path) from None
    except OSError as exc:
        raise MasterKeyError(f"cannot open: {exc.strerror} (a symlink is refused)", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyError("is not a regular file", path)
        if st.st_mode & 0o077:
            raise MasterKeyError(
                f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others read it; chmod 0600 or 0400", path
            )
        return os.read(fd, _MAX_KEY_FILE)
    finally:
        os.close(fd)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def load_master_key(
    key_file: Path | None,
    data_dir: Path,
    environ: Mapping[str, str],
    credential: str = DEFAULT_CREDENTIAL,
) -> MasterKey:
    """The systemd credential when the service was given one, else the key file.

    The credential wins so that a unit with LoadCredentialEncrypted= never
    silently falls back to a plain file left behind from an older setup.
    """
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / credential
        if cred.exists():
            key = parse_key_bytes(_read_private(cred), cred)
            log.info("keys.loaded", source="credential", key_id=key.key_id)
            return key
    if key_file is None:
        raise MasterKeyMissing(
            f"no master key: no systemd credential {credential!r} and no key file configured"
        )
    if _inside(key_file, data_dir):
        raise MasterKeyError(
            f"is inside the data folder {data_dir}; keep the master key apart from the recordings", key_file
        )
    key = parse_key_bytes(_read_private(key_file), key_file)
    log.info("keys.loaded", source="file", key_id=key.key_id)
    return key


def create_key_file(path: Path) -> MasterKey:
    """A new random key in hex (printable, so an operator can back it up on
    paper), created exclusively so an existing key is never replaced."""
    raw = secrets.token_bytes(KEY_SIZE)
    key = MasterKey(raw)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, raw.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    log.warning("keys.created", key_id=key.key_id, path=str(path))
    return key
