"""Placing the RTP packets of one call channel on the call's sample timeline, sans-I/O.

A recording is evidence, so its timeline must match the wall clock of the call
even when the RTP timestamps do not: senders restart, put calls on hold and
resume with stale timestamps, or send garbage. RTP timestamps give the exact
spacing between packets (loss and silence suppression become gaps of the right
length); arrival time bounds how far they may drift from reality. A packet is
placed at `anchor_pos + (ts - anchor_ts) * rate / clock`; the anchor is taken
from the wall clock on the first packet of an SSRC and again whenever the
timestamp position and the wall-clock position disagree by more than
`resync_threshold`. Re-anchoring never moves a packet before audio this channel
already produced, so a channel never overlaps itself. No packet is ever placed
more than `resync_threshold` ahead of the wall clock (one that would have to be
is dropped and counted as an overrun), so a flood cannot stretch the recording
and a sender with a fast clock loses single packets rather than drifting away
from the other party. Every audio position lies within `resync_threshold` of
its packet's wall-clock position.

With `lock_ssrc` (what the recorder uses for a call's channel) only one SSRC
at a time is the channel's: the first that shows two packets in sequence, or
that stays alone for SSRC_IDLE_SECONDS (`settle`: a stream of one packet).
Another SSRC takes over only once it too has shown two in sequence and the
locked one has been silent for SSRC_IDLE_SECONDS (an SSRC change after a
hold, a PBX switching what it bridges); until then its packets are held, and
those that never take over are foreign: counted, never placed.  Packets
injected with random SSRCs, or alongside the real stream with one of their
own, never reach the file.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from wire.rtp import EVENT_NAMES, RtpPacket, parse_rtp_fast, serialize_rtp

__all__ = [
    "MAX_DTMF_EVENTS",
    "MAX_SSRCS",
    "SSRC_IDLE_SECONDS",
    "AudioChunk",
    "DtmfEvent",
    "RtpStream",
    "StreamStats",
]

MAX_DROPOUT: Final = 3000
"""RFC 3550 A.1: a forward sequence jump up to this is loss, beyond it a restart."""
MAX_MISORDER: Final = 100
"""RFC 3550 A.1: a packet this far behind the newest is a late one, not a restart."""
_WINDOW_BITS: Final = 128
"""Duplicate detection window in sequence numbers; must exceed MAX_MISORDER."""
_WINDOW_MASK: Final = (1 << _WINDOW_BITS) - 1

MAX_SSRCS: Final = 16
"""Per-SSRC state kept per channel; the least recently used one is dropped when
a further SSRC appears (its loss count is kept)."""
MAX_LISTED_SSRCS: Final = 64
"""SSRC values reported in stats; later ones are only counted."""
MAX_DTMF_EVENTS: Final = 4096
"""DTMF events kept per channel; further events are only counted."""
SSRC_IDLE_SECONDS: Final = 0.25
"""How long the locked SSRC must have been silent before another takes over:
longer than any packet interval, so a stream still talking is never
replaced, and short enough that a legitimate change loses nothing (the new
SSRC's packets are held meanwhile)."""
_PROBATION: Final = 2
"""Packets in sequence an SSRC shows before it may be locked (RFC 3550 A.1's
MIN_SEQUENTIAL): a flood of random SSRCs never shows two."""
_IN_SEQUENCE: Final = 16
"""A sequence step up to this continues a held SSRC's run (loss allowed)."""
_MAX_CANDIDATES: Final = 512
"""SSRCs held per channel while they prove themselves; the oldest is dropped
(as foreign) beyond that.  Large enough that the real stream's next packet
finds its first one still held under a flood of hundreds of random SSRCs
between two of its packets."""
_MAX_HELD: Final = 16
"""Packets held per candidate SSRC (320 ms at 20 ms): what a legitimate
change may lose at most while the old SSRC falls silent."""

_AUDIO: Final = 0
_CN: Final = 1
_EVENT: Final = 2
_IGNORED: Final = 3

_G711: Final = frozenset(("PCMU", "PCMA"))
_RECENT_EVENTS: Final = 8
"""Start timestamps of finished events remembered per SSRC, so that their
retransmitted end packets arriving late do not count as new events."""
_EVENT_HEADER: Final = struct.Struct("!BBH")
_RTP_HEADER: Final = struct.Struct("!HHII").unpack_from
"""Version/flags and marker/PT bytes as one number, sequence, timestamp, SSRC."""
_NO_END: Final = -(1 << 62)

STATIC_PAYLOAD_TYPES: Final[dict[int, tuple[str, int]]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
}
"""RFC 3551 static audio payload types; used where the SDP map is silent,
because their meaning is fixed whatever the SDP said."""


@dataclass(slots=True)
class AudioChunk:
    """Payload of one packet at `position` (samples at the stream rate from the
    call origin; negative for audio before the origin)."""

    position: int
    encoding: str
    payload: bytes


@dataclass(slots=True)
class DtmfEvent:
    """One RFC 4733 event. It is appended when its first packet arrives and its
    duration grows with later packets; `ended` tells whether an end packet was
    seen (a digit without one was cut off by loss or by the end of the call)."""

    digit: str
    position: int
    duration_ms: int
    ended: bool = False


@dataclass(slots=True)
class StreamStats:
    """Counters of one channel. `packets` counts every packet pushed. `lost` is
    RFC 3550 expected minus received, summed over SSRCs; duplicates are not
    counted as received, so it is never negative. `seq_jumps` are packets
    dropped as the first after a sequence jump (RFC 3550 A.1 waits for a
    second one to accept a restart). `overruns` are packets dropped because
    placing them would have put the channel more than the resync threshold
    ahead of the wall clock. `rtcp_packets` are RTCP multiplexed on the RTP
    port (RFC 5761), ignored. `foreign` are packets of SSRCs that never
    became the channel's (with lock_ssrc), `foreign_ssrcs` how many SSRCs
    they came with."""

    packets: int = 0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    seq_jumps: int = 0
    resyncs: int = 0
    overruns: int = 0
    cn_packets: int = 0
    dtmf_packets: int = 0
    dtmf_dropped: int = 0
    rtcp_packets: int = 0
    malformed: int = 0
    foreign: int = 0
    foreign_ssrcs: int = 0
    ssrc_count: int = 0
    ssrcs: list[int] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)
    first_arrival: float | None = None
    last_arrival: float | None = None


class _Source:
    """State of one SSRC: RFC 3550 A.1 sequence tracking with a duplicate
    bitmap, timestamp extension, the timeline anchor and the DTMF in progress.

    Sequence numbers are extended (no wrap). Bit i of `window` says whether
    `window_top - i` was received; every number in (window_top, max_seq] was,
    so consecutive packets only advance max_seq and the bitmap is shifted only
    when a gap appears. `missing` is expected minus received since `base_seq`,
    so the packets received are derived (`received`) rather than counted.

    Timestamps are extended as `timestamp + ts_base`, `ts_base` being the
    multiple of 2**32 that puts the last timestamp (`last_ts`, as on the wire)
    on the extended scale; it moves by a cycle when consecutive timestamps
    differ by 2**31 or more. `offset` and `unit_clock` restate the anchor for
    the common case of a clock equal to the stream rate, where the position is
    `timestamp + offset` (extension and anchor in one addition); `unit_clock`
    is 0 (never a payload clock) while the anchor is in another clock or there
    is none."""

    __slots__ = (
        "anchor_clock",
        "anchor_pos",
        "anchor_ts",
        "bad_seq",
        "base_seq",
        "ev",
        "ev_code",
        "ev_ended",
        "ev_prior_units",
        "ev_seg_units",
        "ev_ts",
        "ev_recent",
        "floor",
        "last_ts",
        "last_used",
        "lost_prior",
        "max_seq",
        "missing",
        "offset",
        "received_prior",
        "ts_base",
        "unit_clock",
        "window",
        "window_top",
    )

    def __init__(self, seq: int, ts: int, arrival: float) -> None:
        self.max_seq = seq - 1
        self.base_seq = seq
        self.bad_seq = -1
        self.window = 0
        self.window_top = seq - 1
        self.missing = 0
        self.lost_prior = 0
        self.received_prior = 0
        self.last_ts = ts
        self.ts_base = 0
        self.anchor_clock = 0
        self.anchor_pos = 0
        self.anchor_ts = 0
        self.offset = 0
        self.unit_clock = 0
        self.floor = 0
        self.last_used = arrival
        self.ev_ts: int | None = None
        self.ev_recent: deque[int] = deque(maxlen=_RECENT_EVENTS)
        self.ev: DtmfEvent | None = None
        self.ev_code = -1
        self.ev_ended = False
        self.ev_prior_units = 0
        self.ev_seg_units = 0

    def lost(self) -> int:
        return self.lost_prior + max(0, self.missing)

    def received(self) -> int:
        """Packets accepted (neither duplicate nor a dropped jump), restarts included."""
        return self.received_prior + self.max_seq - self.base_seq + 1 - self.missing

    def unwrap(self, timestamp: int) -> None:
        """`timestamp` is 2**31 or more from the last one: the nearer reading
        is a cycle up (it wrapped) or down (a late one from before the wrap)."""
        step = 0x100000000 if timestamp < self.last_ts else -0x100000000
        self.ts_base += step
        self.offset += step


_PtInfo = tuple[int, str, int, int]
"""(kind, encoding, clock rate, G.711 width) of a payload type. The width tells
how a payload's length becomes samples at the stream rate: 0 not G.711, 1 one
sample per byte (the stream rate is 8000), 2 scaled to the stream rate."""

_MAX_SHARED_INFO: Final = 256
"""Distinct payload type descriptions kept for sharing between streams."""


@lru_cache(maxsize=_MAX_SHARED_INFO)
def _shared_info(kind: int, encoding: str, clock: int, width: int) -> _PtInfo:
    """One tuple (and encoding string) per distinct description, shared by all
    streams: every packet reads it, and with hundreds of calls a per-stream
    copy would be one more cache miss per packet."""
    return (kind, encoding, clock, width)


class _Candidate:
    """An SSRC that is not the channel's yet: how far its run of packets in
    sequence goes, and the packets held until it takes over or is dropped."""

    __slots__ = ("held", "last_seq", "run")

    def __init__(self, seq: int) -> None:
        self.last_seq = seq
        self.run = 1
        self.held: list[tuple[float, bytes]] = []


Located = tuple[int, str, bytes]
"""(position, encoding, payload): an AudioChunk's fields, as `locate` returns them."""


class RtpStream:
    """All RTP of one (call, channel), every SSRC, turned into positioned chunks.

    Memory is bounded: at most MAX_SSRCS sources of fixed size, MAX_DTMF_EVENTS
    events and one stats entry per payload type; with lock_ssrc, at most
    _MAX_CANDIDATES held SSRCs of at most _MAX_HELD packets each.

    With lock_ssrc, `locate` returns None for a packet whose SSRC is not the
    channel's; when such an SSRC takes over, its held packets (the one just
    given included) are in `released`, to be given to `locate` again in
    order (`take_released`)."""

    __slots__ = (
        "_candidates",
        "_gate",
        "_last_arrival",
        "_last_head",
        "_last_end",
        "_last_info",
        "_lock",
        "_lost_evicted",
        "_pt_info",
        "_received_evicted",
        "_sources",
        "_src",
        "_src_id",
        "_stats",
        "_threshold",
        "dtmf",
        "origin",
        "rate",
        "released",
    )

    def __init__(
        self,
        origin: float,
        payload_types: dict[int, tuple[str, int]],
        rate: int = 8000,
        resync_threshold: float = 1.0,
        lock_ssrc: bool = False,
    ) -> None:
        if rate <= 0 or resync_threshold <= 0:
            raise ValueError("rate and resync_threshold must be positive")
        self.origin = origin
        self.rate = rate
        self.dtmf: list[DtmfEvent] = []
        self._threshold = round(resync_threshold * rate)
        self._pt_info: dict[int, _PtInfo] = {}
        self._last_head = -1
        self._last_info: _PtInfo = (_IGNORED, "", 0, 0)
        self._sources: dict[int, _Source] = {}
        # A placeholder until the first packet: _src_id -1 matches no SSRC.
        self._src = _Source(0, 0, origin)
        self._src_id = -1
        self._last_end = _NO_END
        self._lost_evicted = 0
        self._received_evicted = 0
        self._last_arrival: float | None = None
        self._stats = StreamStats()
        self._gate = lock_ssrc
        self._lock = -1
        self._candidates: dict[int, _Candidate] = {}
        self.released: list[tuple[float, bytes]] = []
        self.set_payload_types(payload_types)

    def set_payload_types(self, payload_types: dict[int, tuple[str, int]]) -> None:
        """Replace the SDP payload type map (pt -> (encoding, clock rate)), e.g.
        after a re-INVITE. ValueError for a PT outside 0-127 or a clock <= 0."""
        info: dict[int, _PtInfo] = {}
        for pt, (encoding, clock) in {**STATIC_PAYLOAD_TYPES, **payload_types}.items():
            if not 0 <= pt <= 127 or clock <= 0:
                raise ValueError(f"bad payload type entry {pt}: {encoding}/{clock}")
            name = encoding.upper()
            kind = (
                _CN if name == "CN" else _EVENT if name == "TELEPHONE-EVENT" else _AUDIO
            )
            info[pt] = _shared_info(kind, name, clock, self._g711_width(name))
        self._pt_info = info
        self._last_head = -1

    def _g711_width(self, encoding: str) -> int:
        """See _PtInfo."""
        if encoding not in _G711:
            return 0
        return 1 if self.rate == 8000 else 2

    @property
    def end(self) -> int | None:
        """End position of the audio produced so far, None before any."""
        return None if self._last_end == _NO_END else self._last_end

    @property
    def last_arrival(self) -> float | None:
        """Capture time of the channel's last packet (of its SSRC)."""
        return self._last_arrival

    @property
    def stats(self) -> StreamStats:
        """Snapshot of the counters (a copy; the stream keeps counting).
        Packets still held for an SSRC that has not taken over count as
        foreign: had the call ended now, they would be."""
        s = self._stats
        lost = self._lost_evicted + sum(src.lost() for src in self._sources.values())
        received = self._received_evicted + sum(src.received() for src in self._sources.values())
        held = sum(len(c.held) for c in self._candidates.values())
        return StreamStats(
            # Every packet past the header parse is RTCP, a duplicate, a
            # dropped sequence jump, foreign or received: derived, not
            # counted per packet.
            packets=s.rtcp_packets + s.duplicates + s.seq_jumps + s.foreign + held + received,
            duplicates=s.duplicates,
            lost=lost,
            out_of_order=s.out_of_order,
            seq_jumps=s.seq_jumps,
            resyncs=s.resyncs,
            overruns=s.overruns,
            cn_packets=s.cn_packets,
            dtmf_packets=s.dtmf_packets,
            dtmf_dropped=s.dtmf_dropped,
            rtcp_packets=s.rtcp_packets,
            malformed=s.malformed,
            foreign=s.foreign + held,
            foreign_ssrcs=s.foreign_ssrcs + sum(1 for c in self._candidates.values() if c.held),
            ssrc_count=s.ssrc_count,
            ssrcs=list(s.ssrcs),
            encodings=list(s.encodings),
            first_arrival=s.first_arrival,
            last_arrival=self._last_arrival,
        )

    def push(self, arrival: float, pkt: RtpPacket) -> AudioChunk | None:
        """Account for `pkt` captured at `arrival`; its audio, or None."""
        return self.push_raw(arrival, serialize_rtp(pkt))

    def push_raw(self, arrival: float, data: bytes) -> AudioChunk | None:
        """`push` for the packet's bytes as captured."""
        located = self.locate(arrival, data)
        return None if located is None else AudioChunk(*located)

    def locate(self, arrival: float, data: bytes) -> Located | None:
        """`push_raw` returning the chunk's fields as a tuple: the per-packet
        path, which spares the recorder an AudioChunk per packet.

        Kept flat for the common packet (12-byte header, the payload type and
        SSRC of the previous packet, next sequence number, an anchor in the
        stream's clock): one header parse and no method calls."""
        try:
            head, sequence, timestamp, ssrc = _RTP_HEADER(data, 0)
        except struct.error:
            self._stats.malformed += 1
            return None
        if ssrc != self._src_id and self._gate and ssrc != self._lock:
            self._hold(arrival, head, ssrc, sequence, data)
            return None
        if head == self._last_head:
            kind, encoding, clock, g711 = self._last_info
            payload = data[12:]
        else:
            described = self._describe(head, data, admitted=True)
            if described is None:
                return None
            kind, encoding, clock, g711, payload = described
        src = self._src if ssrc == self._src_id else self._switch(ssrc, sequence, timestamp, arrival)
        self._last_arrival = arrival

        udelta = (sequence - src.max_seq) & 0xFFFF
        if udelta == 1:
            src.max_seq += 1
        elif not self._sequence(src, sequence, udelta):
            return None

        if not -0x80000000 <= timestamp - src.last_ts < 0x80000000:
            src.unwrap(timestamp)
        src.last_ts = timestamp

        if kind != _AUDIO:
            if kind == _CN:
                self._stats.cn_packets += 1
            else:
                self._event(src, arrival, bool(head & 0x80), timestamp + src.ts_base, clock, payload)
            return None

        wall = round((arrival - self.origin) * self.rate)
        if clock == src.unit_clock:
            pos = timestamp + src.offset
            if not src.floor <= pos - wall <= self._threshold:
                pos = self._anchor(src, timestamp + src.ts_base, clock, wall)
                if pos is None:
                    return None
        else:
            pos = self._scaled(src, timestamp + src.ts_base, clock, wall)
            if pos is None:
                return None
        if g711 == 1:
            end = pos + len(payload)
        elif g711:
            end = pos + len(payload) * self.rate // 8000
        else:
            end = pos
        if end > self._last_end:
            self._last_end = end
        return pos, encoding, payload

    def _describe(self, head: int, data: bytes, admitted: bool) -> tuple[int, str, int, int, bytes] | None:
        """Payload and payload type information of a packet whose first two
        header bytes differ from the previous packet's; None (counted) if it
        is malformed or RTCP on the RTP port.

        Only for an admitted packet (not one held for its SSRC) is the
        encoding listed in the stats and a plain 12-byte header (version byte
        0x80) of an RTP payload type remembered for the next packet, so that
        a match in `locate` means the payload starts at byte 12 and is not
        RTCP."""
        if head >> 8 == 0x80:
            payload = data[12:]
        else:
            fields = parse_rtp_fast(data)
            if fields is None:
                self._stats.malformed += 1
                return None
            payload = fields[5]
        pt = head & 0x7F
        info = self._pt_info.get(pt)
        if info is None:
            # rtcp-mux (RFC 5761): RTCP types 200-204 read as PT 72-76 with M set.
            info = (
                _shared_info(_IGNORED, "", 0, 0)
                if 72 <= pt <= 76
                else _shared_info(_AUDIO, f"PT{pt}", 8000, 0)
            )
            self._pt_info[pt] = info
        if info[0] == _IGNORED:
            self._stats.rtcp_packets += 1
            return None
        if not admitted:
            return info[0], info[1], info[2], info[3], payload
        if info[1] not in self._stats.encodings:
            self._stats.encodings.append(info[1])
        if head >> 8 == 0x80:
            self._last_head = head
            self._last_info = info
        return info[0], info[1], info[2], info[3], payload

    def _hold(self, arrival: float, head: int, ssrc: int, seq: int, data: bytes) -> None:
        """A packet of an SSRC that is not the channel's (lock_ssrc): held
        while its SSRC proves itself, then released or counted as foreign;
        see the module docstring."""
        if self._describe(head, data, admitted=False) is None:
            return
        candidates = self._candidates
        cand = candidates.get(ssrc)
        if cand is None:
            if len(candidates) >= _MAX_CANDIDATES:
                self._reject(candidates.pop(next(iter(candidates))))
            cand = candidates[ssrc] = _Candidate(seq)
        else:
            step = (seq - cand.last_seq) & 0xFFFF
            if step == 0:
                self._stats.duplicates += 1
                return
            if step <= _IN_SEQUENCE:
                cand.run += 1
            else:
                self._stats.foreign += len(cand.held)
                cand.held.clear()
                cand.run = 1
        cand.last_seq = seq
        held = cand.held
        held.append((arrival, data))
        if len(held) > _MAX_HELD:
            del held[0]
            self._stats.foreign += 1
        last = self._last_arrival
        if cand.run < _PROBATION or (last is not None and arrival - last < SSRC_IDLE_SECONDS):
            return
        # It takes over: what it sent while the old SSRC still talked is foreign.
        del candidates[ssrc]
        self._lock = ssrc
        keep = held if last is None else [packet for packet in held if packet[0] > last]
        self._stats.foreign += len(held) - len(keep)
        self.released = keep

    def _reject(self, cand: _Candidate) -> None:
        self._stats.foreign += len(cand.held)
        self._stats.foreign_ssrcs += 1

    def settle(self, now: float) -> bool:
        """Time passed (`now`): before any SSRC is the channel's, one that
        has been the only one for SSRC_IDLE_SECONDS takes it even without a
        second packet.  True when it did: its packets are in `released`."""
        candidates = self._candidates
        if self._lock != -1 or len(candidates) != 1:
            return False
        ssrc, cand = next(iter(candidates.items()))
        if not cand.held or now - cand.held[-1][0] < SSRC_IDLE_SECONDS:
            return False
        del candidates[ssrc]
        self._lock = ssrc
        self.released = cand.held
        return True

    def take_released(self) -> list[tuple[float, bytes]]:
        """The packets (arrival, bytes) of an SSRC that just took over, to be
        located again in order; empties the list."""
        released, self.released = self.released, []
        return released

    def elapsed(self, data: bytes) -> tuple[float, float] | None:
        """(arrival of the channel's last packet, media seconds from it to
        `data` by RTP timestamp), if `data` continues the current SSRC in
        sequence (a step below MAX_DROPOUT) with an audio or comfort-noise
        timestamp at or after the last one; else None.  Nothing changes.

        The recorder asks this of the first packets after its capture clock
        jumped: a stream that went on in sequence 20 ms later says the jump
        was not time that passed."""
        last = self._last_arrival
        if last is None or len(data) < 12:
            return None
        head, sequence, timestamp, ssrc = _RTP_HEADER(data, 0)
        if ssrc != self._src_id:
            return None
        src = self._src
        if not 0 < (sequence - src.max_seq) & 0xFFFF < MAX_DROPOUT:
            return None
        info = self._pt_info.get(head & 0x7F)
        if info is None or (info[0] != _AUDIO and info[0] != _CN):
            return None
        delta = (timestamp - src.last_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            return None
        return last, delta / info[2]

    def shift(self, delta: float) -> None:
        """Move every capture time the stream holds by `delta` seconds: the
        recorder's clock stepped and the call moves with it, so positions
        (counted from the origin) stay what they were."""
        self.origin += delta
        if self._last_arrival is not None:
            self._last_arrival += delta
        if self._stats.first_arrival is not None:
            self._stats.first_arrival += delta
        for src in self._sources.values():
            src.last_used += delta
        for cand in self._candidates.values():
            cand.held = [(when + delta, data) for when, data in cand.held]
        self.released = [(when + delta, data) for when, data in self.released]

    def _switch(self, ssrc: int, seq: int, ts: int, arrival: float) -> _Source:
        stats = self._stats
        if self._last_arrival is not None:
            self._src.last_used = self._last_arrival
        src = self._sources.get(ssrc)
        if src is None:
            if stats.first_arrival is None:
                stats.first_arrival = arrival
            if len(self._sources) >= MAX_SSRCS:
                oldest = min(self._sources, key=lambda k: self._sources[k].last_used)
                evicted = self._sources.pop(oldest)
                self._lost_evicted += evicted.lost()
                self._received_evicted += evicted.received()
            src = _Source(seq, ts, arrival)
            self._sources[ssrc] = src
            stats.ssrc_count += 1
            if len(stats.ssrcs) < MAX_LISTED_SSRCS:
                stats.ssrcs.append(ssrc)
        self._src = src
        self._src_id = ssrc
        return src

    def _sequence(self, src: _Source, seq: int, udelta: int) -> bool:
        """RFC 3550 A.1 outside the in-order case; False drops the packet."""
        stats = self._stats
        if udelta == 0:
            stats.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            run = src.max_seq - src.window_top
            window = src.window
            if run >= _WINDOW_BITS:
                window = _WINDOW_MASK
            elif run:
                window = ((window << run) | ((1 << run) - 1)) & _WINDOW_MASK
            src.window = (window << (udelta - 1)) & _WINDOW_MASK
            src.window_top = src.max_seq + udelta - 1
            src.max_seq += udelta
            src.missing += udelta - 1
            return True
        if udelta > 0x10000 - MAX_MISORDER:
            ext = src.max_seq - (0x10000 - udelta)
            if ext > src.window_top:
                stats.duplicates += 1
                return False
            bit = 1 << (src.window_top - ext)
            if src.window & bit:
                stats.duplicates += 1
                return False
            src.window |= bit
            stats.out_of_order += 1
            if ext < src.base_seq:
                src.missing += src.base_seq - ext - 1
                src.base_seq = ext
            else:
                src.missing -= 1
            return True
        if seq == src.bad_seq:
            # Two consecutive packets after a big jump: the sender restarted.
            src.lost_prior = src.lost()
            src.received_prior = src.received()
            src.base_seq = src.max_seq = seq
            src.window = 0
            src.window_top = seq - 1
            src.missing = 0
            src.bad_seq = -1
            return True
        src.bad_seq = (seq + 1) & 0xFFFF
        stats.seq_jumps += 1
        return False

    def _scaled(self, src: _Source, ext_ts: int, clock: int, wall: int) -> int | None:
        """Position of a packet whose clock is not the anchor's unit clock:
        scaled from the anchor if that is in the packet's clock and within
        bounds of the wall clock, else anchored anew; None if dropped."""
        if clock == src.anchor_clock:
            pos = src.anchor_pos + (ext_ts - src.anchor_ts) * self.rate // clock
            if src.floor <= pos - wall <= self._threshold:
                return pos
        return self._anchor(src, ext_ts, clock, wall)

    def _anchor(self, src: _Source, ext_ts: int, clock: int, wall: int) -> int | None:
        pos = wall if wall > self._last_end else self._last_end
        if pos - wall > self._threshold:
            self._stats.overruns += 1
            return None
        if src.anchor_clock:
            self._stats.resyncs += 1
        src.anchor_pos = pos
        src.anchor_ts = ext_ts
        src.anchor_clock = clock
        src.offset = src.ts_base + pos - ext_ts
        src.unit_clock = clock if clock == self.rate else 0
        # Anchoring ahead of the wall clock (to avoid overlap) moves the lower
        # bound with it, so the same drift is tolerated in both directions.
        src.floor = pos - wall - self._threshold
        return pos

    def _event(
        self,
        src: _Source,
        arrival: float,
        marker: bool,
        ext_ts: int,
        clock: int,
        payload: bytes,
    ) -> None:
        stats = self._stats
        stats.dtmf_packets += 1
        if len(payload) < 4:
            stats.malformed += 1
            return
        code, flags, units = _EVENT_HEADER.unpack_from(payload)
        end = flags > 0x7F
        if ext_ts == src.ev_ts:
            if src.ev_ended:
                return
            if units > src.ev_seg_units:
                src.ev_seg_units = units
            if src.ev is not None:
                src.ev.duration_ms = (
                    (src.ev_prior_units + src.ev_seg_units) * 1000 // clock
                )
                src.ev.ended = end
            src.ev_ended = end
            return
        if ext_ts in src.ev_recent:
            return  # a late retransmission of an earlier event
        prev_ts = src.ev_ts
        if prev_ts is not None:
            src.ev_recent.append(prev_ts)
        if (
            prev_ts is not None
            and not marker
            and not src.ev_ended
            and code == src.ev_code
            and src.ev_seg_units == 0xFFFF
            and ext_ts == prev_ts + 0xFFFF
        ):
            # RFC 4733 2.5.1.3: a long event continues in a new segment.
            src.ev_prior_units += 0xFFFF
        else:
            src.ev_prior_units = 0
            src.ev = self._new_event(src, arrival, ext_ts, clock, code, units)
        src.ev_ts = ext_ts
        src.ev_code = code
        src.ev_seg_units = units
        src.ev_ended = end
        if src.ev is not None:
            src.ev.duration_ms = (src.ev_prior_units + units) * 1000 // clock
            src.ev.ended = end

    def _new_event(
        self,
        src: _Source,
        arrival: float,
        ext_ts: int,
        clock: int,
        code: int,
        units: int,
    ) -> DtmfEvent | None:
        if len(self.dtmf) >= MAX_DTMF_EVENTS:
            self._stats.dtmf_dropped += 1
            return None
        rate = self.rate
        # Updates arrive `units` after the event began, so the wall-clock start
        # is the arrival minus the duration reported so far.
        wall_start = round((arrival - self.origin) * rate) - units * rate // clock
        pos = wall_start
        if src.anchor_clock:
            ts_pos = src.anchor_pos + (ext_ts - src.anchor_ts) * rate // clock
            if src.floor <= ts_pos - wall_start <= self._threshold:
                pos = ts_pos
        event = DtmfEvent(
            EVENT_NAMES.get(code, f"event-{code}"), pos, units * 1000 // clock
        )
        self.dtmf.append(event)
        return event
