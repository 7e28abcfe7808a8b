"""The WAV format of a recording, as handed out to an authorised reader.

Recordings are stored encrypted (storage/vault.py) as their bare audio data;
the WAV header is made from the format and the length when the recording is
read, so the header never has to be rewritten in place while recording and
the file handed out is byte for byte the one whose SHA-256 was sealed.

G.711 files use the WAVE_FORMAT_MULAW (7) / WAVE_FORMAT_ALAW (6) tags with an
18-byte fmt chunk and a fact chunk, as the WAVE spec requires for non-PCM
formats; 16-bit files use WAVE_FORMAT_PCM (1). The RIFF size field limits a
file to 4 GiB (about 74 hours of stereo G.711, 37 hours of stereo L16).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from .errors import CallrecError, WireFormatError

__all__ = ["ENCODINGS", "WavFormatError", "WavLimitError", "frame_bytes", "room_for_data", "wav_header", "wav_stream",
           "read_wav", "write_new_file"]

_FORMAT_TAGS: Final[dict[str, int]] = {"L16": 1, "PCMA": 6, "PCMU": 7}
ENCODINGS: Final = frozenset(_FORMAT_TAGS)
_MAX_RIFF: Final = 0xFFFFFFFF


class WavFormatError(WireFormatError):
    """Bytes that are not a WAV as callrec writes one."""


class WavLimitError(CallrecError, OSError):
    """Appending would exceed the 4 GiB RIFF size limit; nothing was written.
    An OSError (EFBIG), so the store stops that recording as it does on a
    full disk: what was written stays playable and sealed."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EFBIG, message)


def frame_bytes(encoding: str, channels: int = 2) -> int:
    """Bytes per frame (one sample of every channel)."""
    if encoding not in _FORMAT_TAGS:
        raise ValueError(f"unsupported encoding {encoding!r}")
    return channels * (2 if encoding == "L16" else 1)


def wav_header(encoding: str, channels: int, rate: int, frames: int) -> bytes:
    """The RIFF/WAVE header for `frames` frames of audio data; an odd data
    size is followed by a pad byte, which the RIFF size counts."""
    tag = _FORMAT_TAGS[encoding]
    block = frame_bytes(encoding, channels)
    data = frames * block
    if tag == 1:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 16)
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    else:
        fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * block, block, 8, 0)
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, frames)
    chunks += b"data" + struct.pack("<I", data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + data + (data & 1)) + b"WAVE" + chunks


def room_for_data(encoding: str, channels: int) -> int:
    """The most audio data bytes one RIFF file can describe (with the pad
    byte an odd size needs), in whole frames."""
    room = _MAX_RIFF - (len(wav_header(encoding, channels, 8000, 0)) - 8) - 1
    return room - room % frame_bytes(encoding, channels)


def wav_stream(encoding: str, channels: int, rate: int, data_bytes: int,
               data: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes of the WAV file: header, the audio data, the pad byte.

    `data` must yield exactly `data_bytes` bytes (a whole number of frames);
    anything else is an error, because the sealed hash covers the header."""
    block = frame_bytes(encoding, channels)
    if data_bytes % block:
        raise ValueError("audio data is not a whole number of frames")
    yield wav_header(encoding, channels, rate, data_bytes // block)
    seen = 0
    for chunk in data:
        seen += len(chunk)
        yield chunk
    if seen != data_bytes:
        raise ValueError(f"audio data is {seen} bytes, expected {data_bytes}")
    if data_bytes & 1:
        yield b"\x00"


def write_new_file(path: Path, chunks: Iterable[bytes]) -> str:
    """Write a new file (0600, never over an existing file or through a
    symlink) and return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        for chunk in chunks:
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return digest.hexdigest()


def read_wav(blob: bytes) -> tuple[str, int, int, bytes]:
    """(encoding, channels, rate, data) of a WAV as callrec writes one (PCM 16-bit, A-law or
    µ-law), for pictures of a recording; raises WavFormatError for anything else."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(blob):
        kind, size = blob[pos:pos + 4], struct.unpack_from("<I", blob, pos + 4)[0]
        body = blob[pos + 8:pos + 8 + size]
        if kind == b"fmt " and len(body) >= 16:
            fmt = struct.unpack_from("<HHI", body)
        elif kind == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise WavFormatError("a WAV needs a fmt and a data chunk")
    tag, channels, rate = fmt
    encoding = next((name for name, value in _FORMAT_TAGS.items() if value == tag), None)
    if encoding is None or channels < 1:
        raise WavFormatError(f"WAV format {tag} with {channels} channels is not one callrec writes")
    return encoding, channels, rate, data
