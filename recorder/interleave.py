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

A commit may also be made lazily (`advance`, the batched media path's): the
window moves on at once (what is late, where the limit is, the channels'
ends), but the frames stay in the rings until the next commit, `drain` or
`flush` returns them together with whatever that commit adds.  The rings
therefore hold window_samples + window_samples // 2 samples, so that up to
half a window of lazily committed audio sits behind a full window of
placed audio; `advance` commits eagerly (returns the frames) whenever that
would not fit or occupancy is marked in what it commits.  The bytes
returned, concatenated, are the same either way; a caller that switches
the file's law drains first (`to_l16` needs nothing pending).

Memory per interleaver: two rings of 1.5 × window_samples samples (1 byte
each for G.711, 2 for L16) and two occupancy maps of window_samples bytes
(to count overlaps and to silence untouched samples on an L16 switch). The constant
silence and fill patterns are shared by all interleavers of one window size
(at most _MAX_PATTERNS of them are kept), so a recorder with hundreds of calls
copies from one cache-warm buffer instead of hundreds of cold ones. The
returned bytes are as long as the timeline advance they cover: callers that
commit by wall clock as time passes keep each one small.

The per-packet case, a G.711 chunk that starts exactly where its channel
ended and fits before the ring's end and the commit limit, is one slice copy.
Contiguous audio is not marked in the occupancy maps as it arrives: each
channel has a run [run, hi) known to be filled, which is marked only when the
map is about to be read (an overlapping chunk, the L16 switch) or a gap ends
the run. In-order audio thus never touches the maps, and commits clear them
only where something was marked.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np

from wire import g711
from wire.errors import LocalProtocolError

from .errors import RecorderError
from .stream import AudioChunk

__all__ = ["EncodingChange", "StereoInterleaver", "UnsupportedEncoding"]

_G711: Final = frozenset(("PCMU", "PCMA"))
_MODES: Final = frozenset(("PCMU", "PCMA", "L16"))
_MAX_PATTERNS: Final = 32
"""Distinct (fill, size) constant patterns kept for sharing between interleavers."""


@lru_cache(maxsize=_MAX_PATTERNS)
def _pattern(fill: bytes, count: int) -> memoryview:
    """`fill` repeated `count` times, read-only and shared between interleavers."""
    return memoryview(fill * count)


class EncodingChange(RecorderError):
    """A chunk's G.711 law differs from the file's. The caller converts the file
    to 16-bit PCM, calls `to_l16()` and places the same chunk again; nothing was
    changed by the refused call."""

    def __init__(self, encoding: str) -> None:
        super().__init__(f"chunk encoding {encoding} differs from the file's")
        self.encoding = encoding


class UnsupportedEncoding(RecorderError, LocalProtocolError):
    """A chunk that is not G.711 (or G.711 for a file not at 8 kHz) was handed
    over: such audio is decoded to 16-bit PCM first (recorder/codecs.py)."""


class StereoInterleaver:
    """Two-channel timeline writer; see the module docstring for the window rules."""

    __slots__ = (
        "_committed",
        "_emitted",
        "_encoding",
        "_frame_silence",
        "_hi",
        "_late_chunks",
        "_late_samples",
        "_limit",
        "_marked",
        "_occ",
        "_ones",
        "_overlap_samples",
        "_overlaps",
        "_rate",
        "_rings",
        "_run",
        "_shift",
        "_silence",
        "_size",
        "_step",
        "_window",
        "_zeros",
    )

    def __init__(self, encoding: str, window_samples: int = 8000, rate: int = 8000) -> None:
        if encoding not in _MODES:
            raise ValueError(f"unsupported file encoding {encoding!r}")
        if rate != 8000 and encoding != "L16":
            raise ValueError("G.711 files are 8 kHz")
        # Positions count samples at this rate; G.711 chunks are placed only at 8 kHz.
        self._rate = rate
        if window_samples < 8:
            raise ValueError("window_samples must be at least 8")
        self._window = window_samples
        self._step = window_samples // 8
        # Ring slots: a window ahead of `committed`, and behind it up to half
        # a window committed lazily and not yet returned (`_emitted` on).
        self._size = window_samples + window_samples // 2
        self._committed = 0
        self._emitted = 0
        # committed + window: a chunk ending beyond it forces a commit.
        self._limit = window_samples
        self._hi = [0, 0]
        # Per channel, [max(run, committed), hi) is filled but not yet marked
        # in the occupancy map; see _settle.
        self._run = [0, 0]
        self._occ = (bytearray(window_samples), bytearray(window_samples))
        # End of the furthest position ever marked in either map: when it is
        # not beyond what a commit covers, the maps are clear there already.
        self._marked = 0
        self._ones = _pattern(b"\x01", window_samples)
        self._zeros = _pattern(b"\x00", window_samples)
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
        self._silence = _pattern(fill, self._size)
        self._frame_silence = fill * 2
        self._rings = rings or (bytearray(self._silence), bytearray(self._silence))

    @property
    def encoding(self) -> str:
        """Current file encoding: 'PCMU', 'PCMA' or 'L16'."""
        return self._encoding

    @property
    def rate(self) -> int:
        """Samples per second of the file, and so of every position."""
        return self._rate

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
        return self.place_samples(channel, chunk.position, chunk.encoding, chunk.payload)

    def place_samples(self, channel: int, start: int, encoding: str, data: bytes) -> bytes:
        """`place` for a chunk given by its fields: the per-packet path, which
        spares the caller an AudioChunk per packet."""
        hi = self._hi
        if channel in (0, 1) and start == hi[channel] and encoding == self._encoding:
            # Contiguous chunk in the file's law: not late, no overlap, and its
            # occupancy is implied by the run (see _settle).
            slots = self._size
            size = len(data)
            i = start % slots
            j = i + size
            end = start + size
            if j <= slots and end <= self._limit:
                self._rings[channel][i:j] = data
                hi[channel] = end
                return b""
            return self._put(channel, start, data)
        if channel != 0 and channel != 1:
            raise ValueError(f"channel must be 0 or 1, not {channel!r}")
        if encoding != self._encoding:
            if encoding not in _G711 or self._rate != 8000:
                raise UnsupportedEncoding(encoding)
            if self._encoding != "L16":
                raise EncodingChange(encoding)
            data = g711.decode(encoding, data)
        return self._put(channel, start, data)

    def place_pcm(self, channel: int, start: int, data: bytes) -> bytes:
        """Put 16-bit little-endian samples decoded from another codec
        (recorder/codecs.py) on `channel` of an L16 file; as `place`.

        Not through `place_samples`, whose per-packet path counts in bytes."""
        if self._encoding != "L16":
            raise UnsupportedEncoding("L16")
        if channel != 0 and channel != 1:
            raise ValueError(f"channel must be 0 or 1, not {channel!r}")
        return self._put(channel, start, data)

    def _settle(self, channel: int) -> None:
        """Mark the channel's run in the occupancy map, before the map is read
        or a gap ends the run."""
        hi = self._hi[channel]
        lo = max(self._run[channel], self._committed)
        self._run[channel] = hi
        if lo < hi:
            self._mark(channel, lo, hi)

    def _mark(self, channel: int, lo: int, hi: int) -> None:
        """Mark timeline positions [lo, hi) (within the window) as placed."""
        if hi > self._marked:
            self._marked = hi
        window = self._window
        occ = self._occ[channel]
        i = lo % window
        j = i + hi - lo
        if j <= window:
            occ[i:j] = self._ones[: j - i]
        else:
            occ[i:] = self._ones[: window - i]
            occ[: j - window] = self._ones[: j - window]

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
        i = start % window
        j = i + n
        hi = self._hi[channel]
        if start < hi:
            # The chunk may land on placed samples: count them on an exact map.
            self._settle(channel)
            occ = self._occ[channel]
            if j <= window:
                hits = occ.count(1, i, j)
            else:
                hits = occ.count(1, i, window) + occ.count(1, 0, j - window)
            if hits:
                self._overlap_samples += hits
                self._overlaps += 1
            self._mark(channel, start, end)
            if end > hi:
                self._hi[channel] = end
            self._run[channel] = self._hi[channel]
        else:
            if start > hi:
                # A gap ends the run; this chunk starts the next one.
                self._settle(channel)
                self._run[channel] = start
            self._hi[channel] = end
        ring = self._rings[channel]
        slots = self._size
        i = start % slots
        j = i + n
        if j <= slots:
            ring[i << shift : j << shift] = data
        else:
            k = slots - i
            ring[i << shift :] = data[: k << shift]
            ring[: (j - slots) << shift] = data[k << shift :]
        return out

    def commit(self, upto: int) -> bytes:
        """Frames [committed, upto) with silence where nothing was placed,
        after any committed lazily and not returned yet; b"" if there are
        none."""
        return self._emit(upto)

    def advance(self, upto: int) -> bytes:
        """`commit(upto)`, lazily where it can be: the window moves on now
        and the frames are returned by a later commit, `drain` or `flush`
        (see the module docstring); otherwise what `commit` returns."""
        committed = self._committed
        if upto <= committed:
            return b""
        if upto - self._emitted > self._size - self._window or upto - committed > self._window \
                or self._marked > committed:
            return self._emit(upto)
        self._committed = upto
        self._limit = upto + self._window
        hi = self._hi
        hi[0] = max(hi[0], upto)
        hi[1] = max(hi[1], upto)
        return b""

    def drain(self) -> bytes:
        """The frames committed lazily and not yet returned."""
        return self._emit(self._committed)

    def flush(self) -> bytes:
        """Commit everything placed so far (end of call)."""
        return self._emit(max(self._hi))

    def _emit(self, upto: int) -> bytes:
        """Frames [emitted, max(upto, committed)): what was committed lazily,
        then the commit up to `upto`."""
        committed = self._committed
        window = self._window
        if upto - committed > window:
            head = self._emit(committed + window)
            count = upto - self._committed
            self._committed = self._emitted = upto
            self._limit = upto + window
            hi = self._hi
            hi[0] = max(hi[0], upto)
            hi[1] = max(hi[1], upto)
            return head + self._frame_silence * count
        upto = max(upto, committed)
        emitted = self._emitted
        count = upto - emitted
        if count <= 0:
            return b""
        shift = self._shift
        slots = self._size
        i = emitted % slots
        j = i + count
        r0, r1 = self._rings
        if j <= slots:
            a = r0[i << shift : j << shift]
            b = r1[i << shift : j << shift]
        else:
            a = r0[i << shift :] + r0[: (j - slots) << shift]
            b = r1[i << shift :] + r1[: (j - slots) << shift]
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
        self._clear(i, min(j, slots))
        if j > slots:
            self._clear(0, j - slots)
        if self._marked > committed and upto > committed:
            # Occupancy is marked only at or beyond `committed` (a lazy
            # commit never covers any): cleared for what this commit adds.
            k = committed % window
            m = k + upto - committed
            zeros = self._zeros
            for occ in self._occ:
                if m <= window:
                    occ[k:m] = zeros[: m - k]
                else:
                    occ[k:] = zeros[: window - k]
                    occ[: m - window] = zeros[: m - window]
        self._committed = self._emitted = upto
        self._limit = upto + window
        hi = self._hi
        hi[0] = max(hi[0], upto)
        hi[1] = max(hi[1], upto)
        return out

    def _clear(self, i: int, j: int) -> None:
        """Silence ring slots [i, j) for reuse: in-order audio leaves the
        occupancy maps untouched, and so the maps of hundreds of calls stay
        out of the cache."""
        shift = self._shift
        silence = self._silence[: (j - i) << shift]
        self._rings[0][i << shift : j << shift] = silence
        self._rings[1][i << shift : j << shift] = silence

    def to_l16(self) -> None:
        """Switch to 16-bit PCM, decoding what is pending; samples nothing was
        placed on become 0 rather than the decoded G.711 silence code."""
        if self._encoding == "L16":
            return
        if self._emitted != self._committed:
            raise RecorderError("frames committed lazily are pending: drain() before the switch")
        self._settle(0)
        self._settle(1)
        decode = g711.table(self._encoding)
        # Each ring slot's timeline position, from `committed` on; only the
        # window's positions can hold audio (the rest become silence too).
        slots = self._size
        window = self._window
        first = self._committed
        position = first + (np.arange(slots) - first) % slots
        live = position < first + window
        rings = []
        for ring, occ in zip(self._rings, self._occ, strict=True):
            samples = decode[np.frombuffer(ring, dtype=np.uint8)]
            placed = np.frombuffer(occ, dtype=np.uint8)[position % window] != 0
            samples[~(placed & live)] = 0
            rings.append(bytearray(samples.tobytes()))
        self._set_mode("L16", (rings[0], rings[1]))
