"""The batched media path: the common RTP frame placed a batch at a time.

On a busy mirror port nearly every frame is the same thing: Ethernet (at most
one VLAN tag), IPv4, UDP, an RTP packet of a call being recorded, next in its
sequence, in the law of the file, landing right where its channel's audio
ends.  For such a frame `Recorder._media_packet` does a fixed amount of
bookkeeping; here it is done for the whole batch with array operations over
the batch's one buffer (header fields at fixed offsets, flow numbers,
sequence, timestamp, anchor and placement checks per stream), the commits
the interleaver makes when a packet passes its window are made in frame
order but lazily (the frames stay in the ring until the tick), and then a
stream's audio is copied into its ring in one or two slices. Every other
frame (SIP, TCP, IPv6, fragments, RTCP, unknown flows, foreign SSRCs,
sequence or timestamp jumps, marker bits, DTMF, anchor moves, on-demand
lines, frames off the capture clock) goes through the per-frame code, in
capture order, and the results are the same to the byte.

Order is what makes that hold.  The frames are first decoded in order (the
de-duplication is the per-frame code's own).  Then, between two ticks of the
recorder's clock (a stretch), the frames that qualify are checked against
their stream's state as it was when the stretch began; a stream's run of
qualifying frames ends at its first frame that does not qualify.  The other
frames are handled one by one, in order, and whenever the per-frame code is
about to read or change a call's media (`Recorder._touch`), that call's
qualifying frames before it are put in place first and its later ones join
the per-frame queue.  Calls do not share media state, so the rest is put in
place at the end of the stretch, before the tick, which reads every call.
"""
from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from wire.pcap import Frame

if TYPE_CHECKING:
    from .engine import CallMedia, Recorder

__all__ = ["BatchPath", "FrameBatch", "join_batches"]

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


def _geometry(batch: FrameBatch, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, where its flow starts (-1 unless Ethernet, at most one
    802.1Q tag, IPv4 with a 20-byte header, UDP, not a fragment, lengths
    consistent: PacketDecoder's fast test), where its UDP payload ends, its
    IP identification, a number naming its flow (addresses and ports
    mixed; `_flow_ids` makes them exact) and the flow as three words."""
    starts = np.full(count, -1, dtype=np.int64)
    ends = np.zeros(count, dtype=np.int64)
    idents = np.zeros(count, dtype=np.int64)
    mixed = np.zeros(count, dtype=np.uint64)
    words3 = np.zeros((count, 3), dtype=np.uint32)
    off, size = batch.offsets[:count], batch.lengths[:count]
    u8 = np.frombuffer(batch.data, dtype=np.uint8)
    sel = np.flatnonzero((batch.linktypes[:count] == 1) & (size >= 42) & (off + _HEAD <= len(u8)))
    if not sel.size:
        return starts, ends, idents, mixed, words3
    off, size = off[sel], size[sel]
    head = np.lib.stride_tricks.sliding_window_view(u8, _HEAD)[off]
    vlan = (head[:, 12] == 0x81) & (head[:, 13] == 0x00) & (size >= 46)
    # The IPv4 and UDP headers where they are, with or without the tag
    # (read in place when no frame has one, as on most mirror ports).
    if vlan.any():
        ip = np.where(vlan[:, None], head[:, 18:46], head[:, 14:42])
        link = np.where(vlan, 18, 14)
        etype = np.where(vlan, head[:, 16:18].view(">u2")[:, 0], head[:, 12:14].view(">u2")[:, 0])
    else:
        ip = head[:, 14:42]
        link = np.int64(14)
        etype = head[:, 12:14].view(">u2")[:, 0]
    words = ip.view(">u2")[:, [1, 2, 12]].astype(np.int64)
    flags_proto = ip[:, 6:10].view(">u4")[:, 0]
    tlen, ulen = words[:, 0], words[:, 2]
    ok = (
        (etype == 0x0800)
        & (ip[:, 0] == 0x45)
        & ((flags_proto & 0x3FFF00FF) == 17)
        & (ulen >= 8) & (ulen <= tlen - 20) & (link + tlen <= size)
    )
    good = sel[ok]
    starts[good] = (off + link + 12)[ok]
    ends[good] = (off + link + 20 + ulen)[ok]
    idents[good] = words[ok, 1]
    flow = ip[ok, 12:24].view(">u4")
    words3[good] = flow
    flow = flow.astype(np.uint64)
    mixed[good] = (flow[:, 0] << np.uint64(32)) ^ flow[:, 1] ^ (flow[:, 2] * np.uint64(0x9E3779B97F4A7C15))
    return starts, ends, idents, mixed, words3


def _flow_ids(flows: np.ndarray, mixed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Numbers the flows (their three words and `mixed`, from `_geometry`):
    per frame its flow's number, and per number a frame that has it.  None
    if two flows would share a number (a hash collision: the caller goes
    flow by flow)."""
    _, first, number = np.unique(mixed, return_index=True, return_inverse=True)
    number = number.reshape(-1)
    if not (flows[first[number]] == flows).all():
        return None
    return number, first


@dataclass(slots=True)
class _Stretch:
    """The qualifying frames of one stretch, grouped by stream: what the
    runs share (lists where they are bisected, arrays where one item is
    read)."""

    order: array[int]
    """Frame numbers in the batch."""
    ends: array[int]
    """Where each frame's audio ends on the timeline (its position + size)."""
    size: np.ndarray
    audio: np.ndarray
    """Where each frame's audio starts in the batch's buffer."""
    rtp_ts: np.ndarray
    arrival: np.ndarray


@dataclass(slots=True)
class _Run:
    """A stream's qualifying frames in the current stretch: items
    [first, stop) of the stretch."""

    media: CallMedia
    channel: int
    stretch: _Stretch
    first: int
    stop: int
    rows: memoryview | None
    """The frames' audio, back to back, when they all have one size."""


_NONE = np.empty(0)
"""No batch's arrays (between batches)."""
_HEAD = 46
"""Bytes of a frame read for its geometry: Ethernet, a tag, IPv4 and UDP."""
_MAX_SIZES = 4
_PARAMS = 10
"""Integers of a stream's state that `_qualify` checks frames against (`_streams`)."""
"""Distinct audio sizes per stretch whose audio is gathered in bulk."""


class BatchPath:
    """Feeds FrameBatches to a Recorder; see the module docstring."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self._runs: dict[int, list[_Run]] = {}
        self._queue: list[int] = []
        self._cursor = 0
        self._mv: memoryview | None = None
        self._u8: np.ndarray | None = None
        # The batch's frames for the per-frame way: time, clock after, datagram.
        self._times = self._now1 = self._frame1 = _NONE
        self._data = b""
        self._starts = self._ends = _NONE

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
            self._feed_on_clock(batch, stop, raised, now1, frame1)
        if stop < count:
            rec.feed_frames(list(batch.frames(stop)))

    def _feed_on_clock(self, batch: FrameBatch, count: int, raised: np.ndarray, now1: np.ndarray,
                       frame1: np.ndarray) -> None:
        """The frames [0, count), all on the clock; now1 and frame1 are the
        clock after each (arrays, read an item at a time: most frames never are)."""
        rec = self.rec
        starts, ends, idents, mixed, words3 = _geometry(batch, count)
        times = batch.times[:count]
        quick, general, _ = rec.decoder.decode_prepared(
            batch.data, batch.times[:count], batch.linktypes[:count].tolist(), idents, starts, ends, batch.frame)
        other = np.zeros(count, dtype=bool)
        other[np.array([i for i, datagrams in general.items() if datagrams], dtype=np.int64)] = True
        self._u8 = np.frombuffer(batch.data, dtype=np.uint8)
        numbered = np.flatnonzero(quick)
        ids = _flow_ids(words3[numbered], mixed[numbered]) if numbered.size else None
        flow_of = np.full(count, -1, dtype=np.int64)
        if ids is not None:
            flow_of[numbered] = ids[0]
            names = [batch.data[at:at + 12] for at in starts[numbered[ids[1]]].tolist()]
        else:
            names = []
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
            next_tick = times.item(frame) + _TICK
            at += 1
        self._mv = memoryview(batch.data)
        self._times, self._now1, self._frame1 = times, now1, frame1
        self._data, self._starts, self._ends = batch.data, starts, ends
        rec._touch = self._touch
        try:
            begin = 0
            for tick in [*ticks, count]:
                if tick > begin:
                    qualified = self._qualify(batch, begin, tick, quick, flow_of, names, starts, ends)
                    waiting = quick[begin:tick] | other[begin:tick]
                    waiting[qualified - begin] = False
                    self._scalar((np.flatnonzero(waiting) + begin).tolist(), general, times, now1, frame1)
                    self._cursor = tick
                    self._place_all()
                if tick < count:
                    rec.now = rec._frame_ts = times.item(tick)
                    rec._tick(times.item(tick))
                begin = tick
        finally:
            self._place_all()
            rec._touch = None
            self._mv = self._u8 = None
            self._times = self._now1 = self._frame1 = _NONE
            self._data, self._starts, self._ends = b"", _NONE, _NONE
        rec.now, rec._frame_ts = now1.item(-1), frame1.item(-1)

    def _scalar(self, queue: list[int], general: dict[int, Any], times: np.ndarray, now1: np.ndarray,
                frame1: np.ndarray) -> None:
        """The frames of a stretch that take the per-frame path, in order
        (`_touch` adds to the queue)."""
        rec = self.rec
        self._queue = queue
        rtp = 0
        while queue:
            i = heapq.heappop(queue)
            self._cursor = i
            rec.now, rec._frame_ts = now1.item(i), frame1.item(i)
            datagrams = general[i] if i in general else (self._datagram(i),)
            rtp += rec._datagrams(times.item(i), datagrams)
        rec.stats["rtp_packets"] += rtp

    def _datagram(self, i: int) -> tuple[int, bytes, bytes]:
        """A prepared frame's datagram for the per-frame path, cut from the
        batch's buffer when it is needed (most frames never are)."""
        at = self._starts.item(i)
        return 17, self._data[at:at + 12], self._data[at + 16:self._ends.item(i)]

    # ---- one stretch between ticks ---------------------------------------------
    def _streams(self, names: list[bytes], present: np.ndarray
                 ) -> tuple[list[tuple[CallMedia, int]], list[int], list[float], np.ndarray]:
        """The streams that can take frames in bulk now (their call and
        channel, the state `_qualify` checks frames against, their origin),
        (_PARAMS integers a stream, back to back), and per flow number its
        stream's number (-1: none).  A stream qualifies if its next
        in-order audio packet would take the per-packet path of `locate` and
        `place_samples` without a branch: a recording in G.711 at 8 kHz, in
        the file's law, anchored in the stream's clock, not an on-demand
        line.  One loop with its lookups in locals: it runs for every stream
        between two ticks."""
        flows = self.rec._flows
        recording = self.rec._media
        streams: list[tuple[CallMedia, int]] = []
        params: list[int] = []
        origins: list[float] = []
        # By route: (call, channel), equal for every flow of one stream.
        numbers: dict[tuple[CallMedia, int], int] = {}
        of_flow = [-1] * len(names)
        for flow_id in present.tolist():
            route = flows.get(names[flow_id])
            if route is None:
                continue
            number = numbers.get(route)
            if number is None:
                media, channel = route
                number = numbers[route] = -1
                interleaver = media.interleaver
                if (media.origin is not None and interleaver is not None and media.handle is not None
                        and not media.wideband and media.call.classification.on_demand is None
                        and recording.get(media.call.serial) is media):
                    stream = media.streams[channel]
                    kind, encoding, clock, width = stream._last_info
                    src = stream._src
                    if (stream._last_head >= 0 and kind == _AUDIO and width == 1 and clock == _RATE
                            and stream.rate == _RATE and encoding == interleaver._encoding
                            and interleaver._rate == _RATE and src.unit_clock == clock and stream._src_id >= 0):
                        number = numbers[route] = len(streams)
                        streams.append(route)
                        params.extend((stream._last_head, stream._src_id, src.max_seq, src.last_ts, src.offset,
                                       src.floor, stream._threshold, interleaver._hi[channel], interleaver._window,
                                       media.limit))
                        origins.append(stream.origin)
            of_flow[flow_id] = number
        return streams, params, origins, np.array(of_flow, dtype=np.int64)

    def _qualify(self, batch: FrameBatch, begin: int, end: int, quick: np.ndarray, flow_of: np.ndarray,
                 names: list[bytes], starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The frames of [begin, end) that take the bulk path (see the module
        docstring); their runs are registered for `_touch` and `_place_all`."""
        none = np.empty(0, dtype=np.int64)
        flow = flow_of[begin:end]
        index = np.flatnonzero(flow >= 0)
        if not index.size:
            return none
        flow = flow[index]
        index += begin
        streams, state, origins, of_flow = self._streams(names, np.flatnonzero(np.bincount(flow, minlength=len(names))))
        if not streams:
            return none
        try:
            params = np.frombuffer(array("q", state), dtype=np.int64).reshape(-1, _PARAMS)
        except OverflowError:
            return none
        number = of_flow[flow]
        chosen = number >= 0
        index, number = index[chosen], number[chosen]
        if not index.size:
            return none
        # A stable sort of small numbers is a radix sort in numpy.
        order = np.argsort(number.astype(np.int16) if len(streams) < 0x7FFF else number, kind="stable")
        index, number = index[order], number[order]
        u8 = self._u8
        assert u8 is not None
        start = starts[index] + 16
        size = ends[index] - start - 12
        header = np.lib.stride_tricks.sliding_window_view(u8, 12)[np.where(size >= 0, start, 0)]
        shorts = header.view(">u2")
        longs = header.view(">u4")
        head, seq = shorts[:, 0].astype(np.int64), shorts[:, 1].astype(np.int64)
        rtp_ts, ssrc = longs[:, 1].astype(np.int64), longs[:, 2].astype(np.int64)
        origin = np.array(origins, dtype=np.float64)
        p = params[number]
        count = len(number)
        first = np.ones(count, dtype=bool)
        first[1:] = number[1:] != number[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(count), 0))
        rank = np.arange(count) - group_start + 1
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
        filled = np.cumsum(audio) - audio
        before = filled - filled[group_start]
        low = head & 0xFF
        ok = (
            (size >= 0)
            & (head == p[:, 0]) & (ssrc == p[:, 1])
            & ((low < 200) | (low > 204))  # never RTCP (multiplexed, RFC 5761)
            & (seq == ((p[:, 2] + rank) & 0xFFFF))
            & (step >= -0x80000000) & (step < 0x80000000)
            & (p[:, 5] <= drift) & (drift <= p[:, 6])
            & (pos == p[:, 7] + before)
            & (audio <= p[:, 8]) & (pos <= p[:, 9])
        )
        bad = np.cumsum(~ok)
        bad_before = bad - (~ok) - (bad - (~ok))[group_start]
        take = np.flatnonzero(ok & (bad_before == 0))
        if not take.size:
            return none
        number = number[take]
        sizes = audio[take]
        audio_at = start[take] + 12
        heads = np.flatnonzero(np.r_[True, number[1:] != number[:-1], True])
        taken = index[take]
        # Bisected and read an item at a time: arrays of machine integers,
        # made with one copy where a list would make an object per frame.
        stretch = _Stretch(array("q", taken.astype(np.int64).tobytes()),
                           array("q", (pos[take] + sizes).astype(np.int64).tobytes()),
                           sizes, audio_at, rtp_ts[take], arrival[take])
        rows = self._gather(u8, sizes, audio_at, heads)
        bounds = heads.tolist()
        runs = self._runs
        for n, (a, b), which in zip(range(len(rows)), pairwise(bounds), number[heads[:-1]].tolist(), strict=True):
            media, channel = streams[which]
            runs.setdefault(id(media), []).append(_Run(media, channel, stretch, a, b, rows[n]))
        return taken

    @staticmethod
    def _gather(u8: np.ndarray, sizes: np.ndarray, audio_at: np.ndarray, heads: np.ndarray) -> list[memoryview | None]:
        """Per run (from each head to the next), its audio as rows of one
        size back to back, gathered with one copy per size (a flat
        memoryview: `_copy` slices it without a numpy step); None for a run
        of mixed sizes."""
        count = len(heads) - 1
        lo, hi = int(sizes.min()), int(sizes.max())
        if lo == hi:
            if lo <= 0 or lo > len(u8):
                return [None] * count
            flat = memoryview(np.lib.stride_tricks.sliding_window_view(u8, lo)[audio_at]).cast("B")
            return [flat[a * lo:b * lo] for a, b in pairwise(heads.tolist())]
        out: list[memoryview | None] = [None] * count
        starts = heads[:-1]
        mixed = np.zeros(len(sizes), dtype=np.int64)
        mixed[1:] = sizes[1:] != sizes[:-1]
        mixed[starts] = 0
        uniform = np.add.reduceat(mixed, starts) == 0
        run_size = sizes[starts]
        for size in np.unique(run_size[uniform])[:_MAX_SIZES].tolist():
            if size <= 0 or size > len(u8):
                continue
            members = sizes == size
            rank = np.cumsum(members) - 1
            flat = memoryview(np.lib.stride_tricks.sliding_window_view(u8, size)[audio_at[members]]).cast("B")
            for r in np.flatnonzero(uniform & (run_size == size)).tolist():
                a, b = int(heads[r]), int(heads[r + 1])
                first = int(rank[a])
                out[r] = flat[first * size:(first + b - a) * size]
        return out

    # ---- putting runs in place --------------------------------------------------
    def _touch(self, media: CallMedia) -> None:
        """The per-frame code is about to use `media`: its frames before the
        current one go in place, its later ones join the per-frame queue."""
        runs = self._runs.pop(id(media), None)
        if runs is None:
            return
        cursor = self._cursor
        cuts = [bisect_left(run.stretch.order, cursor, run.first, run.stop) for run in runs]
        for run, cut in zip(runs, cuts, strict=True):
            for i in run.stretch.order[cut:run.stop]:
                heapq.heappush(self._queue, i)
        self._place(media, runs, cuts)

    def _place_all(self) -> None:
        runs, self._runs = self._runs, {}
        for group in runs.values():
            self._place(group[0].media, group, [run.stop for run in group])

    def _place(self, media: CallMedia, runs: list[_Run], counts: list[int]) -> None:
        """Do what `_media_packet` does for the call's runs (one per
        channel) up to `counts` (items of the stretch), in frame order.  The
        frames that take the interleaver past its window commit as they would
        one by one (`StereoInterleaver._put`), but lazily
        (`StereoInterleaver.advance`: the window moves, the frames stay in
        the ring until the tick), so each run's audio is then copied in one
        piece.  Should a commit move the other channel's end, its frames no
        longer follow on and the rest go the per-frame way, in order; where
        a commit cannot be lazy, the rest is placed step by step
        (`_step_place`)."""
        interleaver = media.interleaver
        assert interleaver is not None
        done = [run.first for run in runs]
        window, step = interleaver._window, interleaver._step
        room = interleaver._size - window
        # Each channel's end as the frames so far would leave it.
        ends = interleaver._hi[:]
        while True:
            limit = interleaver._limit
            trigger, which = _next_trigger(runs, done, counts, limit)
            if trigger < 0:
                done = counts
                break
            run = runs[which]
            stretch = run.stretch
            at = stretch.order[trigger]
            for n, other in enumerate(runs):
                upto = trigger if n == which else bisect_left(other.stretch.order, at, done[n], counts[n])
                if upto > other.first:
                    ends[other.channel] = other.stretch.ends[upto - 1]
                done[n] = upto
            end = stretch.ends[trigger]
            target = min(end - window + step, end - stretch.size.item(trigger))
            committed = interleaver._committed
            if target - interleaver._emitted > room or target - committed > window or interleaver._marked > committed:
                # Not lazily: the frames before the trigger go in place, the rest step by step.
                self._copy_runs(runs, done)
                self._step_place(media, runs, done, counts)
                return
            interleaver.advance(target)
            done[which] = trigger + 1
            ends[run.channel] = end
            other = 1 - run.channel
            if ends[other] < target:
                ends[other] = target
                if any(done[n] < counts[n] for n in range(len(runs)) if n != which):
                    break
        self._settle(media, runs, done, counts)

    def _settle(self, media: CallMedia, runs: list[_Run], done: list[int], counts: list[int]) -> None:
        """`_copy_runs` then `_finish` in one loop, the common end of `_place`:
        each run's audio in one piece (two at the ring's end), its stream's
        state, and the frames from `done` to `counts` the per-frame way."""
        interleaver = media.interleaver
        assert interleaver is not None
        rings, hi, slots = interleaver._rings, interleaver._hi, interleaver._size
        placed = 0
        for run, stop in zip(runs, done, strict=True):
            first = run.first
            if stop <= first:
                continue
            stretch, channel, rows = run.stretch, run.channel, run.rows
            last = stop - 1
            end = stretch.ends[last]
            if rows is None or stop != run.stop:
                self._copy(run, first, stop)
            else:
                _ring_write(rings[channel], (stretch.ends[first] - stretch.size.item(first)) % slots, rows, slots)
                hi[channel] = max(hi[channel], end)
            stream = media.streams[channel]
            src = stream._src
            src.max_seq += stop - first
            src.last_ts = stretch.rtp_ts.item(last)
            stream._last_arrival = stretch.arrival.item(last)
            stream._last_end = max(stream._last_end, end)
            placed += stop - first
        self.rec.stats["rtp_packets"] += placed
        if done != counts:
            self._rest(runs, done, counts)

    def _copy_runs(self, runs: list[_Run], done: list[int]) -> None:
        """The runs' items up to `done` into the rings, a run at a time."""
        for run, stop in zip(runs, done, strict=True):
            self._copy(run, run.first, stop)

    def _step_place(self, media: CallMedia, runs: list[_Run], done: list[int], counts: list[int]) -> None:
        """`_place` from `done` on with eager commits: the audio copied in
        bulk between the frames that take the interleaver past its window,
        each of which commits before the frames after it are copied."""
        interleaver = media.interleaver
        assert interleaver is not None
        done = done[:]
        window = interleaver._window
        hi = interleaver._hi
        while True:
            limit = interleaver._limit
            trigger, which = _next_trigger(runs, done, counts, limit)
            if trigger < 0:
                for n, run in enumerate(runs):
                    self._copy(run, done[n], counts[n])
                    done[n] = counts[n]
                break
            run = runs[which]
            at = run.stretch.order[trigger]
            for n, other in enumerate(runs):
                upto = trigger if n == which else bisect_left(other.stretch.order, at, done[n], counts[n])
                self._copy(other, done[n], upto)
                done[n] = upto
            end = run.stretch.ends[trigger]
            before = hi[1 - run.channel]
            out = interleaver._emit(min(end - window + interleaver._step, end - run.stretch.size.item(trigger)))
            if out:
                assert media.handle is not None
                media.handle.append(out)
            if hi[1 - run.channel] != before and any(done[n] < counts[n] for n in range(len(runs)) if n != which):
                self._copy(run, trigger, trigger + 1)
                done[which] = trigger + 1
                self._finish(media, runs, done, counts)
                return
            if end > interleaver._limit:
                self._copy(run, trigger, trigger + 1)
                done[which] = trigger + 1
            # Otherwise the trigger's audio, which no longer passes the window,
            # is copied with the frames after it (after the commit, as one by one).
        self._finish(media, runs, done, done)

    def _copy(self, run: _Run, begin: int, end: int) -> None:
        """The audio of the run's items [begin, end) into its ring; its end
        into the interleaver."""
        if end <= begin:
            return
        interleaver = run.media.interleaver
        assert interleaver is not None and self._mv is not None
        ring = interleaver._rings[run.channel]
        window = interleaver._size
        stretch = run.stretch
        if run.rows is not None:
            size = stretch.size.item(begin)
            audio = run.rows[(begin - run.first) * size:(end - run.first) * size]
            _ring_write(ring, (stretch.ends[begin] - size) % window, audio, window)
        else:
            mv = self._mv
            for at, size, stop in zip(stretch.audio[begin:end].tolist(), stretch.size[begin:end].tolist(),
                                      stretch.ends[begin:end], strict=True):
                i = (stop - size) % window
                j = i + size
                if j <= window:
                    ring[i:j] = mv[at:at + size]
                else:
                    k = window - i
                    ring[i:] = mv[at:at + k]
                    ring[:j - window] = mv[at + k:at + size]
        # Not below where a lazy commit took the channel (`_place`).
        hi = interleaver._hi
        hi[run.channel] = max(hi[run.channel], stretch.ends[end - 1])

    def _finish(self, media: CallMedia, runs: list[_Run], done: list[int], counts: list[int]) -> None:
        """The streams' state after their items up to `done`, and the frames
        from there to `counts` the per-frame way, in order."""
        placed = 0
        for run, stop in zip(runs, done, strict=True):
            count = stop - run.first
            if not count:
                continue
            stream = media.streams[run.channel]
            src = stream._src
            last = stop - 1
            stretch = run.stretch
            src.max_seq += count
            src.last_ts = stretch.rtp_ts.item(last)
            stream._last_arrival = stretch.arrival.item(last)
            stream._last_end = max(stream._last_end, stretch.ends[last])
            placed += count
        self.rec.stats["rtp_packets"] += placed
        if done != counts:
            self._rest(runs, done, counts)

    def _rest(self, runs: list[_Run], done: list[int], counts: list[int]) -> None:
        """The runs' items from `done` to `counts` the per-frame way, in order."""
        rest = sorted(i for run, a, b in zip(runs, done, counts, strict=True) for i in run.stretch.order[a:b])
        if rest:
            rec = self.rec
            now, frame_ts = rec.now, rec._frame_ts
            for i in rest:
                rec.now, rec._frame_ts = self._now1.item(i), self._frame1.item(i)
                rec.stats["rtp_packets"] += rec._datagrams(self._times.item(i), (self._datagram(i),))
            rec.now, rec._frame_ts = now, frame_ts


def _next_trigger(runs: list[_Run], done: list[int], counts: list[int], limit: int) -> tuple[int, int]:
    """The first frame, in capture order over every run from `done` on, that
    ends beyond the interleaver's `limit` (so takes it past its window), as
    (its index in its run's stretch, the run's number); (-1, -1) if none."""
    trigger, which = -1, -1
    for n, run in enumerate(runs):
        if done[n] < counts[n]:
            k = bisect_right(run.stretch.ends, limit, done[n], counts[n])
            if k < counts[n] and (trigger < 0 or run.stretch.order[k] < runs[which].stretch.order[trigger]):
                trigger, which = k, n
    return trigger, which


def _ring_write(ring: bytearray, at: int, audio: bytes | memoryview, slots: int) -> None:
    """`audio` into the ring of `slots` G.711 samples from slot `at` on, wrapping round its end."""
    end = at + len(audio)
    if end <= slots:
        ring[at:end] = audio
    else:
        ring[at:] = audio[:slots - at]
        ring[:end - slots] = audio[slots - at:]


def join_batches(pieces: Sequence[FrameBatch]) -> FrameBatch:
    """The (non-empty) pieces' frames one after the other, as one FrameBatch in one
    buffer: what each buffer's frames span is copied once (a buffer shared
    by several pieces, once).  Live capture reads a ring block at a time but
    feeds the recorder several blocks at once, because the batched media
    path costs per stream and batch as well as per frame: fed a 1 MiB block
    at a time (some 3,500 frames, a few per stream with 1,000 calls), a
    packet costs 1.5 to 2 times what it costs in 8 MiB batches."""
    if len(pieces) == 1:
        return pieces[0]
    spans: dict[int, list[int]] = {}
    buffers: dict[int, bytes] = {}
    for piece in pieces:
        lo, hi = int(piece.offsets.min()), int((piece.offsets + piece.lengths).max())
        span = spans.setdefault(id(piece.data), [lo, hi, 0])
        span[0], span[1] = min(span[0], lo), max(span[1], hi)
        buffers[id(piece.data)] = piece.data
    parts = []
    at = 0
    for key, span in spans.items():
        parts.append(memoryview(buffers[key])[span[0]:span[1]])
        span[2] = at - span[0]
        at += span[1] - span[0]
    return FrameBatch(b"".join(parts), np.concatenate([p.offsets + spans[id(p.data)][2] for p in pieces]),
                      np.concatenate([p.lengths for p in pieces]), np.concatenate([p.times for p in pieces]),
                      np.concatenate([p.linktypes for p in pieces]))
