"""Merging the two channels of a call into interleaved WAV frames, sans-I/O.

Packets of the two parties arrive independently, a little out of order and with
gaps; the WAV file must be written strictly in order. The interleaver keeps a
ring of `window_samples` per channel ahead of the last sample written
(`committed`): chunks are copied into the rings, and when a chunk reaches past
the ring the oldest part is committed, i.e. returned as interleaved frames with
silence wherever nothing arrived. The ring is committed in steps of
window_samples // 8 so that the per-commit cost is shared by many packets; a
chunk is therefore always accepted if it starts no more than
window_samples - window_samples // 8 samples before the end of the newest chunk.
Anything older is late: the part before `committed` is dropped and counted.

Memory per interleaver: two rings of window_samples samples (1 byte each for
G.711, 2 for L16), two occupancy maps of window_samples bytes (to count
overlaps and to silence untouched samples on an L16 switch), and constant
silence and fill patterns of the same sizes. The returned bytes are as long as
the timeline advance they cover: callers that commit by wall clock as time
passes keep each one small.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from . import g711
from .stream import AudioChunk

__all__ = ["EncodingChange", "StereoInterleaver", "UnsupportedEncoding"]

_G711: Final = frozenset(("PCMU", "PCMA"))
_MODES: Final = frozenset(("PCMU", "PCMA", "L16"))


class EncodingChange(Exception):
    """A chunk's G.711 law differs from the file's. The caller converts the file
    to 16-bit PCM, calls `to_l16()` and places the same chunk again; nothing was
    changed by the refused call."""

    def __init__(self, encoding: str) -> None:
        super().__init__(f"chunk encoding {encoding} differs from the file's")
        self.encoding = encoding


class UnsupportedEncoding(ValueError):
    """A chunk that is not G.711; such media belongs in a side file."""


class StereoInterleaver:
    """Two-channel timeline writer; see the module docstring for the window rules."""

    def __init__(self, encoding: str, window_samples: int = 8000) -> None:
        if encoding not in _MODES:
            raise ValueError(f"unsupported file encoding {encoding!r}")
        if window_samples < 8:
            raise ValueError("window_samples must be at least 8")
        self._window = window_samples
        self._step = window_samples // 8
        self._committed = 0
        self._hi = [0, 0]
        self._occ = (bytearray(window_samples), bytearray(window_samples))
        self._ones = memoryview(b"\x01" * window_samples)
        self._zeros = memoryview(bytes(window_samples))
        self._late_samples = 0
        self._late_chunks = 0
        self._overlap_samples = 0
        self._overlaps = 0
        self._set_mode(encoding, None)

    def _set_mode(
        self, encoding: str, rings: tuple[bytearray, bytearray] | None
    ) -> None:
        self._encoding = encoding
        self._shift = 1 if encoding == "L16" else 0
        fill = bytes(2) if encoding == "L16" else bytes((g711.SILENCE_BYTE[encoding],))
        self._silence = memoryview(fill * self._window)
        self._frame_silence = fill * 2
        self._rings = rings or (bytearray(self._silence), bytearray(self._silence))

    @property
    def encoding(self) -> str:
        """Current file encoding: 'PCMU', 'PCMA' or 'L16'."""
        return self._encoding

    @property
    def committed(self) -> int:
        """Timeline position up to which frames have been returned."""
        return self._committed

    @property
    def stats(self) -> dict[str, int]:
        """late_samples/late_chunks: dropped as older than `committed`;
        overlap_samples/overlaps: overwritten by a later chunk."""
        return {
            "late_samples": self._late_samples,
            "late_chunks": self._late_chunks,
            "overlap_samples": self._overlap_samples,
            "overlaps": self._overlaps,
        }

    def place(self, channel: int, chunk: AudioChunk) -> bytes:
        """Put `chunk` on `channel` (0 or 1); returns frames that became final.

        Raises EncodingChange for the other G.711 law in G.711 mode,
        UnsupportedEncoding for non-G.711 chunks, ValueError for a bad channel."""
        data = chunk.payload
        start = chunk.position
        hi = self._hi
        n = len(data)
        if (
            n
            and chunk.encoding == self._encoding
            and (channel == 0 or channel == 1)
            and start >= hi[channel]
        ):
            # In-order G.711 chunk (hi >= committed, so it is neither late nor
            # overlapping): copy it into the ring, nothing else to check.
            window = self._window
            end = start + n
            out = b""
            if end > self._committed + window:
                if n > window:
                    return self._put(channel, start, data)
                out = self._emit(min(end - window + self._step, start))
            i = start % window
            j = i + n
            if j > window:
                return out + self._put(channel, start, data)
            self._rings[channel][i:j] = data
            self._occ[channel][i:j] = self._ones[:n]
            hi[channel] = end
            return out
        if channel != 0 and channel != 1:
            raise ValueError(f"channel must be 0 or 1, not {channel!r}")
        if chunk.encoding != self._encoding:
            if chunk.encoding not in _G711:
                raise UnsupportedEncoding(chunk.encoding)
            if self._encoding != "L16":
                raise EncodingChange(chunk.encoding)
            data = g711.decode(chunk.encoding, data)
        return self._put(channel, start, data)

    def _put(self, channel: int, start: int, data: bytes) -> bytes:
        shift = self._shift
        n = len(data) >> shift
        if n == 0:
            return b""
        committed = self._committed
        if start < committed:
            cut = committed - start
            self._late_chunks += 1
            if cut >= n:
                self._late_samples += n
                return b""
            self._late_samples += cut
            data = data[cut << shift :]
            start = committed
            n -= cut
        window = self._window
        if n > window:
            parts = [
                self._put(channel, start + k, data[k << shift : (k + window) << shift])
                for k in range(0, n, window)
            ]
            return b"".join(parts)
        end = start + n
        out = (
            self._emit(min(end - window + self._step, start))
            if end > committed + window
            else b""
        )
        ring = self._rings[channel]
        occ = self._occ[channel]
        i = start % window
        j = i + n
        if start < self._hi[channel]:
            if j <= window:
                hits = occ.count(1, i, j)
            else:
                hits = occ.count(1, i, window) + occ.count(1, 0, j - window)
            if hits:
                self._overlap_samples += hits
                self._overlaps += 1
        if j <= window:
            ring[i << shift : j << shift] = data
            occ[i:j] = self._ones[:n]
        else:
            k = window - i
            ring[i << shift :] = data[: k << shift]
            ring[: (j - window) << shift] = data[k << shift :]
            occ[i:] = self._ones[:k]
            occ[: j - window] = self._ones[: n - k]
        if end > self._hi[channel]:
            self._hi[channel] = end
        return out

    def commit(self, upto: int) -> bytes:
        """Frames [committed, upto) with silence where nothing was placed;
        b"" if `upto` is not beyond `committed`."""
        return self._emit(upto)

    def flush(self) -> bytes:
        """Commit everything placed so far (end of call)."""
        return self._emit(max(self._hi))

    def _emit(self, upto: int) -> bytes:
        committed = self._committed
        count = upto - committed
        if count <= 0:
            return b""
        window = self._window
        if count > window:
            head = self._emit(committed + window)
            self._committed = upto
            hi = self._hi
            hi[0] = max(hi[0], upto)
            hi[1] = max(hi[1], upto)
            return head + self._frame_silence * (count - window)
        shift = self._shift
        i = committed % window
        j = i + count
        r0, r1 = self._rings
        if j <= window:
            a = r0[i << shift : j << shift]
            b = r1[i << shift : j << shift]
        else:
            a = r0[i << shift :] + r0[: (j - window) << shift]
            b = r1[i << shift :] + r1[: (j - window) << shift]
        if shift:
            frames = np.empty((count, 2), dtype="<i2")
            frames[:, 0] = np.frombuffer(a, dtype="<i2")
            frames[:, 1] = np.frombuffer(b, dtype="<i2")
            out = frames.tobytes()
        else:
            buf = bytearray(2 * count)
            buf[0::2] = a
            buf[1::2] = b
            out = bytes(buf)
        self._clear(i, min(j, window))
        if j > window:
            self._clear(0, j - window)
        self._committed = upto
        hi = self._hi
        if hi[0] < upto:
            hi[0] = upto
        if hi[1] < upto:
            hi[1] = upto
        return out

    def _clear(self, i: int, j: int) -> None:
        shift = self._shift
        silence = self._silence[: (j - i) << shift]
        self._rings[0][i << shift : j << shift] = silence
        self._rings[1][i << shift : j << shift] = silence
        self._occ[0][i:j] = self._zeros[: j - i]
        self._occ[1][i:j] = self._zeros[: j - i]

    def to_l16(self) -> None:
        """Switch to 16-bit PCM, decoding what is pending; samples nothing was
        placed on become 0 rather than the decoded G.711 silence code."""
        if self._encoding == "L16":
            return
        decode = g711.table(self._encoding)
        rings = []
        for ring, occ in zip(self._rings, self._occ, strict=True):
            samples = decode[np.frombuffer(ring, dtype=np.uint8)]
            samples[np.frombuffer(occ, dtype=np.uint8) == 0] = 0
            rings.append(bytearray(samples.tobytes()))
        self._set_mode("L16", (rings[0], rings[1]))
