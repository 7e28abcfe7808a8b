"""WAV recording files: the I/O adapter that turns interleaved frames into evidence.

The file is playable at every `sync()`: sizes in the header are rewritten to
match what is on disk and the data is fsynced, so a crash loses at most what
was appended since, and `repair_wav` makes the remainder playable. Files are
created 0600, never through a symlink and never over an existing file, because
recordings are confidential and must not be redirected or clobbered.

G.711 files use the WAVE_FORMAT_MULAW (7) / WAVE_FORMAT_ALAW (6) tags with an
18-byte fmt chunk and a fact chunk, as the WAVE spec requires for non-PCM
formats; 16-bit files use WAVE_FORMAT_PCM (1). The RIFF size field limits a
file to 4 GiB (about 74 hours of stereo G.711, 37 hours of stereo L16).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Final

from . import g711

__all__ = ["WavFormatError", "WavLimitError", "WavWriter", "repair_wav", "sha256_file"]

_FORMAT_TAGS: Final[dict[str, int]] = {"L16": 1, "PCMA": 6, "PCMU": 7}
_MAX_RIFF: Final = 0xFFFFFFFF
_CONVERT_BLOCK: Final = 1 << 16
"""Bytes of G.711 read at a time by convert_to_l16 (memory bound)."""
_HEADER_SCAN: Final = 4096
"""Bytes of header repair_wav looks at to find the data chunk."""


class WavFormatError(ValueError):
    """The file is not a WAV file repair_wav can make sense of."""


class WavLimitError(Exception):
    """Appending would exceed the 4 GiB RIFF size limit; nothing was written."""


def _header(
    encoding: str, channels: int, rate: int, frames: int, padded: bool = False
) -> bytes:
    # RIFF wants odd-sized chunks padded; the pad byte is only counted once it
    # is on disk (written by close), so a synced file's RIFF size is exact.
    tag = _FORMAT_TAGS[encoding]
    width = 2 if encoding == "L16" else 1
    block = channels * width
    data = frames * block
    if tag == 1:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 16)
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    else:
        fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * block, block, 8, 0)
        chunks = (
            b"fmt "
            + struct.pack("<I", len(fmt))
            + fmt
            + b"fact"
            + struct.pack("<II", 4, frames)
        )
    chunks += b"data" + struct.pack("<I", data)
    riff = 4 + len(chunks) + data + (data & 1 if padded else 0)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + chunks


def _create(path: Path) -> int:
    flags = (
        os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    )
    return os.open(path, flags, 0o600)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WavWriter:
    """A WAV file being recorded. Not thread-safe; one writer per file."""

    def __init__(
        self, path: Path, encoding: str, channels: int = 2, rate: int = 8000
    ) -> None:
        if encoding not in _FORMAT_TAGS:
            raise ValueError(f"unsupported encoding {encoding!r}")
        if not 1 <= channels <= 0xFFFF or not 1 <= rate <= 0xFFFFFFFF // 4:
            raise ValueError("bad channel count or rate")
        self.path = Path(path)
        self.channels = channels
        self.rate = rate
        self._fd: int | None = _create(self.path)
        self._frames = 0
        self._padded = False
        self._set_encoding(encoding)
        try:
            _write_all(self._fd, _header(encoding, channels, rate, 0))
            os.fsync(self._fd)
            _fsync_dir(self.path)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _set_encoding(self, encoding: str) -> None:
        self.encoding = encoding
        self._block = self.channels * (2 if encoding == "L16" else 1)
        self._header_size = len(_header(encoding, self.channels, self.rate, 0))

    @property
    def frames(self) -> int:
        """Frames appended so far."""
        return self._frames

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError("WAV file is closed")
        return self._fd

    def append(self, data: bytes) -> None:
        """Append whole frames (ValueError otherwise; WavLimitError past 4 GiB)."""
        fd = self._require_open()
        if len(data) % self._block:
            raise ValueError("data is not a whole number of frames")
        if not data:
            return
        total = self._frames * self._block + len(data)
        if self._header_size - 8 + total + (total & 1) > _MAX_RIFF:
            raise WavLimitError(f"{self.path} would exceed the RIFF size limit")
        _write_all(fd, data)
        self._frames += len(data) // self._block

    def sync(self, durable: bool = True) -> None:
        """Make the header match the data written; with durable, force both
        to disk.  Data is written unbuffered, so without durable the file is
        still complete after the process dies, only not after a power loss;
        the daemon batches durability for all files at once."""
        fd = self._require_open()
        header = _header(
            self.encoding, self.channels, self.rate, self._frames, self._padded
        )
        os.pwrite(fd, header, 0)
        if durable:
            os.fsync(fd)

    def close(self) -> int:
        """Finish the file (pad byte, final sizes, fsync); returns frames.
        Closing again only returns the frame count."""
        if self._fd is None:
            return self._frames
        fd = self._fd
        try:
            if (self._frames * self._block) & 1:
                _write_all(fd, b"\x00")
                self._padded = True
            self.sync()
        finally:
            os.close(fd)
            self._fd = None
        return self._frames

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def convert_to_l16(self) -> None:
        """Rewrite the file so far as 16-bit PCM and continue in that format.

        Used when a call switches G.711 law mid-call. The new file is built
        beside the old one and renamed over it, so a crash leaves either the
        complete old file or the complete new one (plus possibly the partial
        temporary `.NAME.l16tmp`, never a half-converted recording)."""
        fd = self._require_open()
        if self.encoding == "L16":
            return
        law = self.encoding
        tmp = self.path.with_name(f".{self.path.name}.l16tmp")
        new_fd = _create(tmp)
        try:
            _write_all(new_fd, _header("L16", self.channels, self.rate, self._frames))
            remaining = self._frames * self._block
            offset = self._header_size
            while remaining:
                block = os.pread(fd, min(_CONVERT_BLOCK, remaining), offset)
                if not block:
                    raise OSError(f"{self.path} is shorter than the data written to it")
                _write_all(new_fd, g711.decode(law, block))
                offset += len(block)
                remaining -= len(block)
            os.fsync(new_fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(new_fd)
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)
        os.close(fd)
        self._fd = new_fd
        self._set_encoding("L16")


def repair_wav(path: Path) -> int:
    """Make a WAV file left by a crash consistent; returns its frame count.

    Sizes in the RIFF, fact and data headers are set from the file length;
    a trailing partial frame (an interrupted write) is cut off. A file whose
    header already matches its length is left untouched, so running this
    twice changes nothing. WavFormatError if the header cannot be parsed."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        head = os.pread(fd, _HEADER_SCAN, 0)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavFormatError(f"{path}: not a RIFF/WAVE file")
        block: int = 0
        fact_at = -1
        pos = 12
        while True:
            if pos + 8 > len(head):
                raise WavFormatError(f"{path}: no data chunk in the header")
            chunk_id = head[pos : pos + 4]
            (size,) = struct.unpack_from("<I", head, pos + 4)
            if chunk_id == b"data":
                break
            if chunk_id == b"fmt ":
                if size < 16 or pos + 24 > len(head):
                    raise WavFormatError(f"{path}: short fmt chunk")
                (block,) = struct.unpack_from("<H", head, pos + 20)
            elif chunk_id == b"fact" and size >= 4:
                fact_at = pos + 8
            pos += 8 + size + (size & 1)
        if block == 0:
            raise WavFormatError(f"{path}: no usable fmt chunk before the data")
        data_at = pos + 8
        length = os.fstat(fd).st_size
        stored: int = struct.unpack_from("<I", head, pos + 4)[0]
        riff: int = struct.unpack_from("<I", head, 4)[0]
        frames = stored // block
        fact_ok = fact_at < 0 or struct.unpack_from("<I", head, fact_at)[0] == frames
        if (
            stored % block == 0
            and data_at + stored + (stored & 1) == length
            and riff == length - 8
            and fact_ok
        ):
            return frames
        frames = max(0, length - data_at) // block
        data = frames * block
        if data_at + data + (data & 1) > _MAX_RIFF + 8:
            raise WavFormatError(f"{path}: longer than a RIFF file can describe")
        os.ftruncate(fd, data_at + data)
        if data & 1:
            os.pwrite(fd, b"\x00", data_at + data)
        os.pwrite(fd, struct.pack("<I", data), pos + 4)
        if fact_at >= 0:
            os.pwrite(fd, struct.pack("<I", frames), fact_at)
        os.pwrite(fd, struct.pack("<I", data_at + data + (data & 1) - 8), 4)
        os.fsync(fd)
        return frames
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's contents, read in bounded blocks."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
