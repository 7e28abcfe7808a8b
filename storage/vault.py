"""An encrypted, append-only container for one recording file.

Why this shape: recordings are written a little at a time and must survive
kill -9 and power loss, and erasing one must be final even on an SSD. So
each file has its own random data key, wrapped by the master key, and the
audio is cut into records sealed one by one (the STREAM construction of
age and Tink): a crash loses at most the record being written, and
destroying the wrapped key destroys the audio wherever copies of the
ciphertext may linger.

Layout (integers big-endian)::

    header  = "CRVAULT" 0x01                       magic and version
              u8 n, key_id[n]                      master key fingerprint (ASCII)
              u32 m, meta[m]                       canonical JSON of the caller's dict
              u16 w, wrapped[w]                    data key wrapped by the master key,
                                                   context = every header byte before `wrapped`
    record  = u32 (final << 31 | c), ciphertext[c]  AES-GCM, c = plaintext + 16-byte tag
              nonce = index (11 bytes) || final (1 byte), AAD = index (8 bytes) || final

The record index lives only in the nonce and AAD, so reordering, dropping,
duplicating or splicing records fails authentication. The final record,
written by close(), is always empty: rewriting it after a crash produces
the very same bytes, so repair never reuses a nonce for other plaintext.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .durable import fsync_dir, pwrite_all
from .errors import StorageError
from .keys import MasterKey, MasterKeyError

log = structlog.get_logger("callrec.vault")

MAGIC = b"CRVAULT\x01"
RECORD_SIZE = 64 * 1024
"""Most plaintext bytes in one record: the writer's memory bound."""
TAG_SIZE = 16
_FINAL = 1 << 31
_MAX_META = 64 * 1024
_DATA_KEY_SIZE = 32
_WRAPPED_SIZE = 12 + _DATA_KEY_SIZE + TAG_SIZE
"""What MasterKey.wrap makes of a data key (nonce, key, tag); the header
states it before the blob so that the length is inside the wrap's context."""
_SHRED_CHUNK = 1024 * 1024
_READ_AHEAD = 256 * 1024
"""Bytes a reader reads at once (its memory bound beyond one record)."""


class VaultError(StorageError):
    """The file is not an intact vault for this master key; says where."""

    def __init__(self, path: Path, message: str, record: int | None = None, offset: int | None = None) -> None:
        where = "header" if record is None else f"record {record}"
        if offset is not None:
            where += f" at byte {offset}"
        super().__init__(f"{path}: {where}: {message}")
        self.path = path
        self.record = record
        self.offset = offset


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + bytes([final])


def _aad(index: int, final: bool) -> bytes:
    return struct.pack(">QB", index, final)


_AAD = struct.Struct(">QB")
_LENGTH = struct.Struct(">I")


def _seal(aead: AESGCM, index: int, final: bool, plaintext: bytes) -> bytes:
    # `_nonce` and `_aad` inline: a recording seals a record per checkpoint.
    ciphertext = aead.encrypt(index.to_bytes(11, "big") + (b"\x01" if final else b"\x00"), plaintext,
                              _AAD.pack(index, final))
    return _LENGTH.pack((_FINAL if final else 0) | len(ciphertext)) + ciphertext


def _canonical_meta(meta: dict[str, Any]) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError("vault metadata is a dict")
    raw = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(raw) > _MAX_META:
        raise ValueError(f"vault metadata is {len(raw)} bytes; at most {_MAX_META}")
    return raw


class VaultWriter:
    """Writes one vault; append() and flush() may raise OSError (ENOSPC)
    and the file then still reads up to its last complete record.

    Creating the file does not fsync it: the header becomes durable with
    the first durable flush, with close(), or with the store's once-a-second
    syncfs, like the records after it (two fsyncs per recording saved, 6 %
    of replay time at 500 calls)."""

    def __init__(self, path: Path, master: MasterKey, meta: dict[str, Any]) -> None:
        self.path = path
        data_key = secrets.token_bytes(_DATA_KEY_SIZE)
        key_id = master.key_id.encode("ascii")
        context = MAGIC + bytes([len(key_id)]) + key_id
        context += struct.pack(">I", len(meta_raw := _canonical_meta(meta))) + meta_raw
        context += struct.pack(">H", _WRAPPED_SIZE)
        wrapped = master.wrap(data_key, context)
        assert len(wrapped) == _WRAPPED_SIZE, "MasterKey.wrap changed its output size"
        header = context + wrapped
        self._aead = AESGCM(data_key)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            pwrite_all(self._fd, header, 0)
        except BaseException:
            os.close(self._fd)
            os.unlink(path)
            raise
        self._end = len(header)
        self._index = 0
        self._buffer = bytearray()
        self._pending: bytes | None = None
        self._length = 0
        self._closed = False

    @property
    def plaintext_length(self) -> int:
        """Bytes accepted by append(), written or not yet."""
        return self._length

    def append(self, data: bytes | memoryview) -> None:
        """Buffers data and writes every full record.

        If a record could not be written earlier, it is retried first and,
        if that fails again, this data is NOT taken (the caller decides what
        to drop); otherwise the data is taken even when writing it fails,
        and it is written by the next successful call.
        """
        self._check_open()
        self._write_pending()
        self._buffer += data
        self._length += len(data)
        while len(self._buffer) >= RECORD_SIZE:
            self._write_record(self._take(RECORD_SIZE))

    def writes_through(self, size: int) -> bool:
        """Whether `write_through` of `size` bytes is `append` then
        `flush(durable=False)`: nothing buffered or left to retry, less than
        a record."""
        return not self._buffer and self._pending is None and size < RECORD_SIZE and not self._closed

    def write_through(self, data: bytes) -> None:
        """`append(data)` then `flush(durable=False)` when `writes_through`
        says so (a checkpoint's few KB, twice a second per recording): the
        record is sealed straight from `data`.  The same record, index and
        length, and an OSError from the same write, as the two calls."""
        self._length += len(data)
        if data:
            # `_write_record` and `_write_pending` inline, with their order:
            # the record sealed and kept before it is written.
            pending = self._pending = _seal(self._aead, self._index, False, data)
            self._index += 1
            try:
                pwrite_all(self._fd, pending, self._end)
            except OSError:
                os.ftruncate(self._fd, self._end)
                raise
            self._end += len(pending)
            self._pending = None

    def flush(self, durable: bool) -> None:
        """Everything appended so far becomes complete records on disk
        (durable: fsynced too), so a crash from here on keeps it."""
        self._check_open()
        self._write_pending()
        while self._buffer:
            self._write_record(self._take(RECORD_SIZE))
        if durable:
            os.fsync(self._fd)

    def close(self) -> int:
        """Seals the file with the final record; returns the plaintext length.

        The descriptor is closed even when this raises: an unsealed file is
        then left for repair_vault(), like one cut short by a crash.
        """
        self._check_open()
        try:
            self.flush(durable=False)
            self._write_record(b"", final=True)
            os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)
        fsync_dir(self.path.parent)
        log.debug("vault.sealed", path=str(self.path), plaintext_length=self._length, records=self._index)
        return self._length

    def abandon(self) -> None:
        """Write what was appended and close without the final record, as a
        crash leaves the file: repair_vault() seals it later."""
        if self._closed:
            return
        try:
            self.flush(durable=False)
        finally:
            self._closed = True
            os.close(self._fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: vault writer is closed")

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        if len(buffer) <= size:
            # A checkpoint's few KB: the whole buffer, copied once.
            chunk = bytes(buffer)
            buffer.clear()
            return chunk
        chunk = bytes(buffer[:size])
        del buffer[:size]
        return chunk

    def _write_record(self, plaintext: bytes, final: bool = False) -> None:
        # Sealed once and kept until it is on disk: a retry writes the very
        # same bytes, so a nonce is never used for two different plaintexts.
        self._pending = _seal(self._aead, self._index, final, plaintext)
        self._index += 1
        self._write_pending()

    def _write_pending(self) -> None:
        if self._pending is None:
            return
        try:
            pwrite_all(self._fd, self._pending, self._end)
        except OSError:
            # A partly written record would read as torn: cut it off so the
            # file stays a clean prefix. Shrinking needs no space.
            os.ftruncate(self._fd, self._end)
            raise
        self._end += len(self._pending)
        self._pending = None


@dataclass(frozen=True)
class VaultHeader:
    key_id: str
    meta: dict[str, Any]
    context: bytes
    """Every header byte before the wrapped key: what the wrap is bound to."""
    wrapped: bytes

    @property
    def size(self) -> int:
        return len(self.context) + len(self.wrapped)


def read_header(path: Path) -> VaultHeader:
    """The header as stored, without any key: for an auditor, and for the
    erasure test that searches a disk image for the wrapped key."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _read_header(path, fd)
    finally:
        os.close(fd)


def _read_header(path: Path, fd: int) -> VaultHeader:
    head = os.pread(fd, len(MAGIC) + 1 + 255 + 4, 0)
    if len(head) < len(MAGIC) and MAGIC.startswith(head):
        raise VaultError(path, "header is cut short")
    if head[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise VaultError(path, "not a callrec vault (bad magic)")
    if head[len(MAGIC) - 1] != MAGIC[-1]:
        raise VaultError(path, f"unsupported vault version {head[len(MAGIC) - 1]}")
    pos = len(MAGIC)
    if len(head) < pos + 1:
        raise VaultError(path, "header is cut short")
    id_len = head[pos]
    key_id_raw = head[pos + 1 : pos + 1 + id_len]
    pos += 1 + id_len
    if len(head) < pos + 4:
        raise VaultError(path, "header is cut short")
    (meta_len,) = struct.unpack(">I", head[pos : pos + 4])
    if meta_len > _MAX_META:
        raise VaultError(path, f"metadata length {meta_len} is out of range")
    rest = os.pread(fd, meta_len + 2, pos + 4)
    if len(rest) < meta_len + 2:
        raise VaultError(path, "header is cut short")
    meta_raw = rest[:meta_len]
    (wrapped_len,) = struct.unpack(">H", rest[meta_len:])
    context_len = pos + 4 + meta_len + 2
    wrapped = os.pread(fd, wrapped_len, context_len)
    if len(wrapped) < wrapped_len:
        raise VaultError(path, "header is cut short")
    context = head[:pos] + struct.pack(">I", meta_len) + rest
    try:
        key_id = key_id_raw.decode("ascii")
        meta = json.loads(meta_raw)
    except (UnicodeDecodeError, ValueError):
        raise VaultError(path, "key id or metadata is not readable (altered?)") from None
    if not isinstance(meta, dict):
        raise VaultError(path, "metadata is not a JSON object (altered?)")
    return VaultHeader(key_id, meta, context, wrapped)


class VaultReader:
    """An opened vault: header authenticated, records framed; chunks()
    authenticates every record as it reads it."""

    def __init__(self, path: Path, master: MasterKey, allow_torn: bool = False) -> None:
        self.path = path
        self._ahead = b""
        self._ahead_at = 0
        self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._open(master, allow_torn)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, master: MasterKey, allow_torn: bool) -> None:
        path = self.path
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            raise VaultError(path, "not a regular file")
        header = _read_header(path, self._fd)
        if header.key_id != master.key_id:
            raise VaultError(
                path, f"written under another master key (key id {header.key_id}; this key is {master.key_id})"
            )
        try:
            self._aead = AESGCM(master.unwrap(header.wrapped, header.context))
        except MasterKeyError:
            raise VaultError(path, "header fails authentication: the metadata or the wrapped key was altered") from None
        self.meta: dict[str, Any] = header.meta
        self.header_size = header.size
        self._records, self.torn_at = self._frame(allow_torn)
        last = self._records[-1] if self._records else None
        # Where the last complete record ends: what repair keeps.
        self.records_end = self.header_size if last is None else last[0] + 4 + last[1]
        self.sealed = False
        if last is not None and last[2]:
            try:
                self._open_record(len(self._records) - 1)
            except VaultError:
                # Name the first record that fails, which is where a drop,
                # swap or splice happened, not only the displaced end.
                for index in range(len(self._records) - 1):
                    self._open_record(index)
                raise
            self.sealed = True
        elif not allow_torn:
            raise VaultError(
                path, "file ends without the final record: cut short by a crash or truncated (repair_vault seals it)",
                len(self._records), self.records_end,
            )

    def _frame(self, allow_torn: bool) -> tuple[list[tuple[int, int, bool]], int | None]:
        """(offset, ciphertext length, final) of every complete record, and
        where a torn tail begins (None if the file ends on a record)."""
        size = os.fstat(self._fd).st_size
        records: list[tuple[int, int, bool]] = []
        offset = self.header_size
        while offset < size:
            index = len(records)
            if records and records[-1][2]:
                raise VaultError(self.path, "data after the final record", index, offset)
            prefix = self._view(4, offset)
            word = struct.unpack(">I", prefix)[0] if len(prefix) == 4 else None
            length = 0 if word is None else word & ~_FINAL
            if word is None or offset + 4 + length > size or (word == 0 and self._zero_tail(offset, size)):
                # Power loss may leave zeros where the last record was
                # going to be (no record has length 0): a torn tail too.
                if not allow_torn:
                    raise VaultError(
                        self.path, "torn record: the file was cut short by a crash (repair_vault seals it)",
                        index, offset,
                    )
                return records, offset
            if not TAG_SIZE <= length <= RECORD_SIZE + TAG_SIZE:
                raise VaultError(self.path, f"record length {length} is out of range (altered?)", index, offset)
            records.append((offset, length, bool(word & _FINAL)))
            offset += 4 + length
        return records, None

    def _zero_tail(self, offset: int, size: int) -> bool:
        """True when every byte from offset to the end is zero (read in
        bounded pieces)."""
        while offset < size:
            piece = os.pread(self._fd, min(RECORD_SIZE, size - offset), offset)
            if piece.count(0) != len(piece):
                return False
            offset += len(piece)
        return True

    def _open_record(self, index: int) -> bytes:
        offset, length, final = self._records[index]
        ciphertext = self._view(length, offset + 4)
        try:
            return self._aead.decrypt(_nonce(index, final), ciphertext, _aad(index, final))
        except InvalidTag:
            raise self._refused(index, offset) from None

    def _refused(self, index: int, offset: int) -> VaultError:
        return VaultError(self.path,
                          "fails authentication: altered, reordered, dropped, duplicated or taken from another file",
                          index, offset)

    def _view(self, length: int, offset: int) -> memoryview:
        """Bytes of the file, through a read-ahead of _READ_AHEAD bytes and
        not copied out of it: a recording's records are as small as a
        checkpoint's audio (about 8 KB), and framing and reading them one
        pread each cost more than the decryption (sealing reads every
        recording back at its end)."""
        start = offset - self._ahead_at
        if 0 <= start and start + length <= len(self._ahead):
            return memoryview(self._ahead)[start:start + length]
        if length >= _READ_AHEAD:
            return memoryview(os.pread(self._fd, length, offset))
        self._ahead = os.pread(self._fd, _READ_AHEAD, offset)
        self._ahead_at = offset
        return memoryview(self._ahead)[:length]

    @property
    def records(self) -> int:
        return len(self._records)

    def final_record(self) -> bytes:
        """The final record that belongs after the complete records: always
        the same bytes for the same file, which is what makes repair safe."""
        return _seal(self._aead, len(self._records), True, b"")

    def plaintext_length(self) -> int:
        """From the record framing; chunks() is what authenticates the bytes."""
        return sum(length - TAG_SIZE for _, length, _ in self._records)

    def chunks(self) -> Iterator[bytes]:
        """The plaintext, one authenticated record at a time (an empty final
        record yields nothing)."""
        # `_open_record` with its lookups in locals: sealing reads every
        # recording back, a record per checkpoint.
        decrypt, read, aad = self._aead.decrypt, self._view, _AAD.pack
        for index, (offset, length, final) in enumerate(self._records):
            try:
                plaintext = decrypt(index.to_bytes(11, "big") + (b"\x01" if final else b"\x00"),
                                    read(length, offset + 4), aad(index, final))
            except InvalidTag:
                raise self._refused(index, offset) from None
            if plaintext:
                yield plaintext

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> VaultReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_vault(path: Path, master: MasterKey, allow_torn: bool = False) -> VaultReader:
    """Opens a vault for reading; strict unless allow_torn (used by repair),
    which reports a crash-cut file as not sealed instead of failing."""
    return VaultReader(path, master, allow_torn)


def repair_vault(path: Path, master: MasterKey) -> int:
    """After a crash: keeps every complete record (each one authenticated
    first, so nothing altered gets sealed), cuts off a torn tail and seals
    the file. Returns the plaintext length kept; a sealed file is left as is.

    Only a tail that cannot be a record (cut short, or all zeros as power
    loss can leave) is cut; a complete record that fails authentication is
    a VaultError here too, because cutting it could destroy evidence.
    """
    with open_vault(path, master, allow_torn=True) as reader:
        length = sum(len(chunk) for chunk in reader.chunks())
        if reader.sealed:
            return length
        end = reader.records_end
        final = reader.final_record()
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, end)
        pwrite_all(fd, final, end)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    log.warning("vault.repaired", path=str(path), plaintext_length=length, cut_bytes=reader.torn_at is not None)
    return length


def shred(path: Path) -> None:
    """Sure erasure of one vault: overwrite in place with random bytes
    (header first, which holds the wrapped data key), fsync, unlink, fsync
    the folder.

    On an SSD (and on copy-on-write or log-structured filesystems, thin
    volumes and snapshots) overwriting in place is not guaranteed to reach
    the old blocks: the device remaps writes and may keep the old cells.
    That is why the content was encrypted with a key of its own: once the
    wrapped key is gone from the live file, what may linger is ciphertext
    under a key that no longer exists anywhere (the master key alone cannot
    open it). On a plain disk or an ext4 image the overwrite also removes
    the ciphertext itself.
    """
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file; refusing to shred")
        offset = 0
        while offset < st.st_size:
            piece = secrets.token_bytes(min(_SHRED_CHUNK, st.st_size - offset))
            pwrite_all(fd, piece, offset)
            offset += len(piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    fsync_dir(path.parent)
    log.debug("vault.shredded", path=str(path), bytes=st.st_size)
