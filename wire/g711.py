"""ITU-T G.711 decoding and encoding by table lookup.

Recordings are kept in the codec's own 8-bit form whenever possible, because that
is exactly what was on the wire (evidence); decoding is only needed when a call
switches between mu-law and A-law and the file has to become 16-bit PCM, and for
tests that compare decoded audio with other tools. Encoding is for the
announcer, which turns an administrator's recording into G.711 once at load
time. A table indexed with numpy (256 entries to decode, 65,536 to encode)
is both exact and the fastest way to do either in CPython.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ALAW_TO_PCM16", "SILENCE_BYTE", "ULAW_TO_PCM16", "decode", "encode", "table"]


def _ulaw(code: int) -> int:
    # G.711 mu-law, as in the ITU-T reference (and Sun's g711.c): the
    # value is biased by 0x84 (132) so that segment boundaries are powers of two.
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def _alaw(code: int) -> int:
    # G.711 A-law: even bits are inverted on the wire (XOR 0x55); sign bit set
    # means positive.
    a = code ^ 0x55
    segment = (a & 0x70) >> 4
    magnitude = (a & 0x0F) << 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if a & 0x80 else -magnitude


def _build(fn: Callable[[int], int]) -> npt.NDArray[np.int16]:
    values = np.array([fn(c) for c in range(256)], dtype="<i2")
    values.flags.writeable = False
    return values


ULAW_TO_PCM16: Final[npt.NDArray[np.int16]] = _build(_ulaw)
"""mu-law code -> linear int16 (little-endian dtype), ITU-T G.711 exact."""

ALAW_TO_PCM16: Final[npt.NDArray[np.int16]] = _build(_alaw)
"""A-law code -> linear int16 (little-endian dtype), ITU-T G.711 exact."""

SILENCE_BYTE: Final[dict[str, int]] = {"PCMU": 0xFF, "PCMA": 0xD5}
"""Code used to fill gaps. 0xFF is mu-law zero; 0xD5 is the A-law code
closest to zero (+8) and the value real devices send as silence."""

_TABLES: Final[dict[str, npt.NDArray[np.int16]]] = {
    "PCMU": ULAW_TO_PCM16,
    "PCMA": ALAW_TO_PCM16,
}


def table(law: str) -> npt.NDArray[np.int16]:
    """Decoding table for 'PCMU' or 'PCMA'; ValueError for anything else."""
    try:
        return _TABLES[law]
    except KeyError:
        raise ValueError(f"not a G.711 encoding: {law!r}") from None


def decode(law: str, data: bytes | bytearray | memoryview) -> bytes:
    """Decode G.711 bytes of `law` ('PCMU' or 'PCMA') to int16 little-endian PCM."""
    return table(law)[np.frombuffer(data, dtype=np.uint8)].tobytes()


def _ulaw_table() -> npt.NDArray[np.uint8]:
    # Sun's g711.c linear2ulaw for every 16-bit value: 14-bit magnitude,
    # biased by 0x21, segment from the highest set bit.
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(pcm), 8159) + 0x21
    ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(ends, value)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((value >> (seg + 1)) & 0xF))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _alaw_table() -> npt.NDArray[np.uint8]:
    # Sun's g711.c linear2alaw: 13-bit magnitude, even bits inverted (0x55).
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    value = np.where(pcm >= 0, pcm, -pcm - 1)
    ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(ends, value)
    low = np.where(seg < 2, value >> 1, value >> np.maximum(seg, 1)) & 0xF
    code = np.where(seg >= 8, 0x7F, (seg << 4) | low)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


_ENCODE: Final[dict[str, npt.NDArray[np.uint8]]] = {"PCMU": _ulaw_table(), "PCMA": _alaw_table()}


def encode(law: str, pcm: npt.NDArray[np.int16]) -> bytes:
    """int16 samples to G.711 bytes of law ('PCMU' or 'PCMA')."""
    return _ENCODE[law][pcm.astype(np.int32) + 32768].tobytes()
