"""The batched media path: the common RTP frame placed a batch at a time.

On a busy mirror port nearly every frame is the same thing: Ethernet (at most
one VLAN tag), IPv4, UDP, an RTP packet of a call being recorded, next in its
sequence, in the law of the file, landing right where its channel's audio
ends.  For such a frame `Recorder._media_packet` does a fixed amount of
bookkeeping; here it is done for the whole batch with array operations over
the batch's one buffer (header fields at fixed offsets, sequence, timestamp
and placement checks per stream), and only the audio bytes are copied per
packet.  Every other frame (SIP, TCP, IPv6, fragments, RTCP, unknown flows,
foreign SSRCs, sequence jumps, marker bits, DTMF, anchor moves, commits,
on-demand lines, frames off the capture clock) goes through the per-frame
code, in capture order, and the results are the same to the byte.

Order is what makes that hold.  The frames are first decoded in order (the
de-duplication is the per-frame code's own).  Then, between two ticks of the
recorder's clock, the frames that qualify are checked against their stream's
state as it was when the stretch began; a stream's run of qualifying frames
ends at its first frame that does not qualify.  The other frames are handled
one by one, in order, and whenever the per-frame code is about to read or
change a call's media (`Recorder._touch`), that call's qualifying frames
before it are put in place first and its later ones join the per-frame queue.
What is left is put in place before the tick.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wire.pcap import Frame

if TYPE_CHECKING:
    from .engine import CallMedia, Recorder

__all__ = ["BatchPath", "FrameBatch"]

_CLOCK_JUMP = 2.0
"""recorder.engine.CLOCK_JUMP_SECONDS (not imported: the engine imports this module)."""
_TICK = 0.5
"""recorder.engine.TICK_SECONDS."""
_RATE = 8000
_AUDIO = 0
"""recorder.stream's kind of an audio payload type."""


@dataclass(slots=True)
class FrameBatch:
    """Frames in one buffer: frame i is data[offsets[i]:offsets[i] + lengths[i]],
    captured at times[i] on link type linktypes[i]."""

    data: bytes
    offsets: np.ndarray
    lengths: np.ndarray
    times: np.ndarray
    linktypes: np.ndarray

    @classmethod
    def from_frames(cls, frames: Sequence[Frame]) -> FrameBatch:
        """A batch of frames as the capture decoder and the live ring give them."""
        lengths = np.fromiter((len(f[2]) for f in frames), dtype=np.int64, count=len(frames))
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        return cls(b"".join(f[2] for f in frames), offsets, lengths,
                   np.fromiter((f[0] for f in frames), dtype=np.float64, count=len(frames)),
                   np.fromiter((f[1] for f in frames), dtype=np.int64, count=len(frames)))

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        start = int(self.offsets[i])
        return self.data[start:start + int(self.lengths[i])]

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """The frames as (time, link type, bytes), for the per-frame path."""
        stop = len(self) if stop is None else stop
        times, links = self.times.tolist(), self.linktypes.tolist()
        for i in range(start, stop):
            yield times[i], links[i], self.frame(i)


def _be16(u8: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (u8[pos].astype(np.int64) << 8) | u8[pos + 1]


def _be32(u8: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (_be16(u8, pos) << 16) | _be16(u8, pos + 2)


def _geometry(batch: FrameBatch, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, where its flow starts (-1 unless Ethernet, at most one
    802.1Q tag, IPv4 with a 20-byte header, UDP, not a fragment, lengths
    consistent: PacketDecoder's fast test) and where its UDP payload ends."""
    starts = np.full(count, -1, dtype=np.int64)
    ends = np.zeros(count, dtype=np.int64)
    off, size = batch.offsets[:count], batch.lengths[:count]
    sel = np.flatnonzero((batch.linktypes[:count] == 1) & (size >= 42))
    if not sel.size:
        return starts, ends
    u8 = np.frombuffer(batch.data, dtype=np.uint8)
    off, size = off[sel], size[sel]
    vlan = (_be16(u8, off + 12) == 0x8100) & (size >= 46)
    base = off + np.where(vlan, 4, 0)
    link = np.where(vlan, 18, 14)
    tlen = _be16(u8, base + 16)
    ulen = _be16(u8, base + 38)
    ok = (
        (_be16(u8, base + 12) == 0x0800)
        & (u8[base + 14] == 0x45)
        & ((_be32(u8, base + 20) & 0x3FFF00FF) == 17)
        & (ulen >= 8) & (ulen <= tlen - 20) & (link + tlen <= size)
    )
    good = sel[ok]
    starts[good] = (off + link + 12)[ok]
    ends[good] = (off + link + 20 + ulen)[ok]
    return starts, ends


@dataclass(slots=True)
class _Run:
    """A stream's qualifying frames in the current stretch, in order."""

    media: CallMedia
    channel: int
    index: np.ndarray
    """Frame numbers in the batch."""
    audio: np.ndarray
    """Where each frame's audio starts in the batch's buffer."""
    size: np.ndarray
    pos: np.ndarray
    rtp_ts: np.ndarray
    arrival: np.ndarray


@dataclass(slots=True)
class _Stream:
    media: CallMedia
    channel: int
    params: tuple[int, ...]
    origin: float


class BatchPath:
    """Feeds FrameBatches to a Recorder; see the module docstring."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self._runs: dict[int, list[_Run]] = {}
        self._queue: list[int] = []
        self._cursor = 0
        self._mv: memoryview | None = None
        self._times: list[float] = []

    # ---- the batch ----------------------------------------------------------
    def feed(self, batch: FrameBatch) -> None:
        rec = self.rec
        count = len(batch)
        if not count:
            return
        if rec._held:
            rec.feed_frames(list(batch.frames()))
            return
        times = batch.times
        # The clock as feed_frames keeps it, before (now, frame_ts) and
        # after (now1, frame1) each frame; frames from the first one off the
        # clock on take the per-frame path, which holds them.
        now0, frame0 = rec.now, rec._frame_ts
        before = np.empty(count)
        before[0] = -np.inf
        if count > 1:
            np.maximum.accumulate(times[:-1], out=before[1:])
        now = np.maximum(before, now0)
        frame_ts = np.where(before > now0, np.maximum(before, frame0), frame0)
        lo = frame_ts - _CLOCK_JUMP
        hi = np.where(frame_ts == -np.inf, np.inf, now + _CLOCK_JUMP)
        on_clock = (lo <= times) & (times <= hi)
        stop = count if on_clock.all() else int(np.argmin(on_clock))
        if stop:
            raised = times[:stop] > now[:stop]
            now1 = np.maximum(now[:stop], times[:stop])
            frame1 = np.where(raised, times[:stop], frame_ts[:stop])
            self._feed_on_clock(batch, stop, raised, now1.tolist(), frame1.tolist())
        if stop < count:
            rec.feed_frames(list(batch.frames(stop)))

    def _feed_on_clock(self, batch: FrameBatch, count: int, raised: np.ndarray, now1: list[float],
                       frame1: list[float]) -> None:
        rec = self.rec
        starts, ends = _geometry(batch, count)
        self._times = times = batch.times[:count].tolist()
        quick, general = rec.decoder.decode_prepared(batch.data, times, batch.linktypes[:count].tolist(), starts.tolist(),
                                                     ends.tolist(), batch.frame)
        # Ticks: where a frame raises the clock to the next tick.
        ticks = []
        next_tick = rec._next_tick
        rising = np.flatnonzero(raised)
        rising_ts = batch.times[rising]
        at = 0
        while True:
            at += int(np.searchsorted(rising_ts[at:], next_tick, side="left"))
            if at >= len(rising):
                break
            frame = int(rising[at])
            ticks.append(frame)
            next_tick = times[frame] + _TICK
            at += 1
        self._mv = memoryview(batch.data)
        rec._touch = self._touch
        try:
            begin = 0
            for tick in [*ticks, count]:
                if tick > begin:
                    self._stretch(batch, begin, tick, starts, ends, quick, general, now1, frame1)
                if tick < count:
                    rec.now = rec._frame_ts = times[tick]
                    rec._tick(times[tick])
                begin = tick
        finally:
            self._place_all()
            rec._touch = None
            self._mv = None
        rec.now, rec._frame_ts = now1[-1], frame1[-1]

    # ---- one stretch between ticks ---------------------------------------------
    def _stretch(self, batch: FrameBatch, begin: int, end: int, starts: np.ndarray, ends: np.ndarray,
                 quick: list[Any], general: list[Any], now1: list[float], frame1: list[float]) -> None:
        rec = self.rec
        candidates = [i for i in range(begin, end) if quick[i] is not None]
        qualified = self._qualify(batch, candidates, starts, ends, quick)
        pending = [i for i in range(begin, end) if quick[i] is not None or general[i]]
        if qualified.size:
            keep = np.ones(end - begin, dtype=bool)
            keep[qualified - begin] = False
            pending = [i for i in pending if keep[i - begin]]
        queue = self._queue = pending
        heapq.heapify(queue)
        rtp = 0
        while queue:
            i = heapq.heappop(queue)
            self._cursor = i
            rec.now, rec._frame_ts = now1[i], frame1[i]
            datagram = quick[i]
            rtp += rec._datagrams(self._times[i], (datagram,) if datagram is not None else general[i])
        rec.stats["rtp_packets"] += rtp
        self._cursor = end
        self._place_all()

    def _streams(self, flows: list[bytes]) -> tuple[list[_Stream], dict[bytes, int]]:
        """The streams of these flows that can take frames in bulk now, and
        each flow's stream number."""
        rec = self.rec
        streams: list[_Stream] = []
        numbers: dict[int, int] = {}
        of_flow: dict[bytes, int] = {}
        for flow in flows:
            route = rec._flows.get(flow)
            if route is None:
                continue
            media, channel = route
            key = id(media) * 2 + channel
            number = numbers.get(key)
            if number is None:
                stream = self._eligible(media, channel)
                number = numbers[key] = -1 if stream is None else len(streams)
                if stream is not None:
                    streams.append(stream)
            if number >= 0:
                of_flow[flow] = number
        return streams, of_flow

    def _eligible(self, media: CallMedia, channel: int) -> _Stream | None:
        """The stream's state, if its next in-order audio packet would take
        the per-packet path of `locate` and `place_samples` without a
        branch: a recording in G.711 at 8 kHz, in the file's law, anchored in
        the stream's clock, not an on-demand line."""
        rec = self.rec
        if (media.origin is None or media.interleaver is None or media.handle is None or media.wideband
                or media.call.classification.on_demand is not None or rec._media.get(media.call.serial) is not media):
            return None
        stream = media.streams[channel]
        interleaver = media.interleaver
        kind, encoding, clock, width = stream._last_info
        src = stream._src
        if (stream._last_head < 0 or kind != _AUDIO or width != 1 or clock != _RATE or stream.rate != _RATE
                or encoding != interleaver.encoding or interleaver.rate != _RATE or src.unit_clock != clock
                or stream._src_id < 0):
            return None
        params = (stream._last_head, stream._src_id, src.max_seq, src.last_ts, src.offset, src.floor,
                  stream._threshold, interleaver._hi[channel], interleaver._limit, media.limit)
        if max(abs(p) for p in params) >= 1 << 62:
            return None
        return _Stream(media, channel, params, stream.origin)

    def _qualify(self, batch: FrameBatch, candidates: list[int], starts: np.ndarray, ends: np.ndarray,
                 quick: list[Any]) -> np.ndarray:
        """The frames that take the bulk path in this stretch (see the module
        docstring); their runs are registered for `_touch` and `_place_all`."""
        if not candidates:
            return np.empty(0, dtype=np.int64)
        streams, of_flow = self._streams(list({quick[i][1]: None for i in candidates}))
        if not streams:
            return np.empty(0, dtype=np.int64)
        number = np.fromiter((of_flow.get(quick[i][1], -1) for i in candidates), dtype=np.int64,
                             count=len(candidates))
        chosen = number >= 0
        index = np.asarray(candidates, dtype=np.int64)[chosen]
        number = number[chosen]
        if not index.size:
            return index
        order = np.argsort(number, kind="stable")
        index, number = index[order], number[order]
        u8 = np.frombuffer(batch.data, dtype=np.uint8)
        start = starts[index] + 16
        size = ends[index] - start - 12
        safe = np.where(size >= 0, start, 0)
        head = _be16(u8, safe)
        seq = _be16(u8, safe + 2)
        rtp_ts = _be32(u8, safe + 4)
        ssrc = _be32(u8, safe + 8)
        params = np.array([s.params for s in streams], dtype=np.int64)
        origin = np.array([s.origin for s in streams], dtype=np.float64)
        p = params[number]
        first = np.ones(len(number), dtype=bool)
        first[1:] = number[1:] != number[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(number)), 0))
        rank = np.arange(len(number)) - group_start + 1
        prev_ts = np.empty_like(rtp_ts)
        prev_ts[0] = 0
        prev_ts[1:] = rtp_ts[:-1]
        prev_ts = np.where(first, p[:, 3], prev_ts)
        arrival = batch.times[index]
        wall = np.rint((arrival - origin[number]) * _RATE).astype(np.int64)
        pos = rtp_ts + p[:, 4]
        drift = pos - wall
        step = rtp_ts - prev_ts
        audio = np.maximum(size, 0)
        filled = np.cumsum(audio)
        before = filled - audio - (filled - audio)[group_start]
        end = pos + audio
        ok = (
            (size >= 0)
            & (head == p[:, 0]) & (ssrc == p[:, 1])
            & (((head & 0xFF) < 200) | ((head & 0xFF) > 204))  # never RTCP (multiplexed, RFC 5761)
            & (seq == ((p[:, 2] + rank) & 0xFFFF))
            & (step >= -0x80000000) & (step < 0x80000000)
            & (p[:, 5] <= drift) & (drift <= p[:, 6])
            & (pos == p[:, 7] + before)
            & (end <= p[:, 8]) & (pos <= p[:, 9])
        )
        bad = np.cumsum(~ok)
        bad_before = bad - (~ok) - (bad - (~ok))[group_start]
        good = ok & (bad_before == 0)
        take = np.flatnonzero(good)
        if not take.size:
            return take
        number = number[take]
        bounds = np.flatnonzero(np.r_[True, number[1:] != number[:-1], True])
        runs = self._runs
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            stream = streams[int(number[a])]
            sel = take[a:b]
            runs.setdefault(id(stream.media), []).append(_Run(
                stream.media, stream.channel, index[sel], start[sel] + 12, audio[sel], pos[sel], rtp_ts[sel],
                arrival[sel]))
        return index[take]

    # ---- putting runs in place --------------------------------------------------
    def _touch(self, media: CallMedia) -> None:
        """The per-frame code is about to use `media`: its frames before the
        current one go in place, its later ones join the per-frame queue."""
        runs = self._runs.pop(id(media), None)
        if runs is None:
            return
        for run in runs:
            cut = int(np.searchsorted(run.index, self._cursor))
            self._place(run, cut)
            for i in run.index[cut:].tolist():
                heapq.heappush(self._queue, i)

    def _place_all(self) -> None:
        runs, self._runs = self._runs, {}
        for group in runs.values():
            for run in group:
                self._place(run, len(run.index))

    def _place(self, run: _Run, count: int) -> None:
        """Do what `_media_packet` does for the run's first `count` frames."""
        if not count:
            return
        media, channel = run.media, run.channel
        stream = media.streams[channel]
        interleaver = media.interleaver
        assert interleaver is not None and self._mv is not None
        src = stream._src
        last = count - 1
        src.max_seq += count
        src.last_ts = int(run.rtp_ts[last])
        stream._last_arrival = float(run.arrival[last])
        end = int(run.pos[last] + run.size[last])
        stream._last_end = max(stream._last_end, end)
        interleaver._hi[channel] = end
        ring = interleaver._rings[channel]
        window = interleaver._window
        mv = self._mv
        for at, size, pos in zip(run.audio[:count].tolist(), run.size[:count].tolist(), run.pos[:count].tolist(),
                                 strict=True):
            i = pos % window
            j = i + size
            if j <= window:
                ring[i:j] = mv[at:at + size]
            else:
                k = window - i
                ring[i:] = mv[at:at + k]
                ring[:j - window] = mv[at + k:at + size]
        self.rec.stats["rtp_packets"] += count
