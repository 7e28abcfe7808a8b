"""The recorder core: frames in, recordings out.

Decoding, call tracking, RTP matching and sample placement happen here with
the capture timestamp as the clock.  Everything that touches a disk is
behind the RecordingSink given to the constructor, so the same core serves
`callrec replay` and the live daemon, and the tests can watch what it writes.

The capture clock is trusted only as far as the media agrees with it.  A
frame more than CLOCK_JUMP_SECONDS ahead of the clock, or behind the frames
before it, is held until the next one tells which it was: a stray timestamp
(the next frame is back on the clock: the held one is handled at the
clock's time) or a step of the clock (NTP after a boot without RTC, an
admin's `date`, a damaged capture).  For a step, the RTP of a call in
progress says how much time really passed (its timestamp went on 20 ms, not
an hour); whatever the capture clock jumped beyond that, everything in
flight (calls, their timers, their media timelines) is moved by, so that no
call ends, no ringing call is given up and no recording gets silence for
time that did not pass.  A forward jump that no media contradicts is time
that passed (a quiet line).  Steps, strays and such gaps are logged and
counted (`clock_steps`, `clock_strays`, `clock_gaps`).

A channel's media is the one its SDP and dialog set up: a flow from the
party's SDP address, from where the other party sends its media (symmetric
RTP, as the PBX latched it), or the first flow to reach the channel since
its SDP last changed; and within those, one SSRC at a time (see
recorder.stream).  Other packets aimed at the call are foreign: counted for
the call's channel (`foreign` in its stream report) and in `rtp_foreign`,
never recorded.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from policy.decide import PolicyDecider
from policy.harassment import MarkRule
from policy.on_demand import OnDemandRule
from wire.pcap import Frame
from wire.sip import SipMessage, SipParseError, SipStreamFramer, looks_like_sip, parse_sip

from .batch import BatchPath, FrameBatch
from .calls import Call, CallAnswered, CallDropped, CallEnded, CallEvent, CallTracker, MediaChanged
from .codecs import CallDecoders, file_rate
from .interleave import EncodingChange, StereoInterleaver
from .marks import MarkWatch
from .netdecode import PacketDecoder, split_flow
from .on_demand import OnDemandGate
from .record import CallResult, DtmfMark, MarkSink, RecordingHandle, RecordingSink, StreamReport
from .stream import DtmfEvent, RtpStream

__all__ = ["CLOCK_JUMP_SECONDS", "Recorder"]

log = structlog.get_logger("recorder.engine")

RATE = 8000
G711 = frozenset(("PCMU", "PCMA"))
# Audio is committed to the file this long after the wall clock, leaving
# room for jitter and reordering.
COMMIT_LAG_SECONDS = 0.5
TICK_SECONDS = 0.5
"""How often audio is committed and checkpointed: with the commit lag, a
crash loses at most a second."""
ORPHAN_SECONDS = 2.0
MAX_ORPHANS = 1024
MAX_PENDING_PER_CALL = 512
# Flows cached per channel; more (a flood aimed at a call's port) are
# still recorded but classified packet by packet.
MAX_FLOWS_PER_CHANNEL = 32
MAX_REPORTED_FLOWS = 8
MAX_NEGATIVE_FLOWS = 65536
MAX_TCP_FRAMERS = 4096
MAX_FOREIGN_FLOWS = 65536
"""Foreign flows remembered (all calls), so that a flood aimed at a call
costs one lookup per packet; beyond, they are judged packet by packet."""
MAX_FOREIGN_FLOWS_PER_CALL = 4096
"""Of which one call may hold: a flood aimed at one call cannot crowd out
the others'."""
CLOCK_JUMP_SECONDS = 2.0
"""How far a frame's capture time may lie ahead of the clock, or behind the
frames before it, before it is held to tell a stray from a step: more than
the frames of two interfaces drained in turn are apart, less than anything
that would matter in a recording."""
GAP_SAMPLES = 10 * RATE
"""A packet this far beyond what a recording has written (media resuming
after a pause) has the silence before it written first, in pieces."""
COMMIT_PIECE_SAMPLES = 10 * RATE
"""The most silence or audio handed to a recording at once: 320 KB of
16-bit stereo, whatever the length of a pause."""

Flow = bytes
"""A direction of traffic as recorder.netdecode names it: addresses and ports
in wire order (split_flow takes it apart)."""


@dataclass(slots=True, eq=False)
class CallMedia:
    """The media side of one call as the engine sees it."""

    call: Call
    pending: deque[tuple[float, int, Flow, bytes]] = field(default_factory=deque)
    origin: float | None = None
    streams: list[RtpStream] = field(default_factory=list)
    interleaver: StereoInterleaver | None = None
    handle: RecordingHandle | None = None
    flows: tuple[list[Flow], list[Flow]] = field(default_factory=lambda: ([], []))
    seen_flows: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))
    undecoded: set[str] = field(default_factory=set)
    last_media: float = 0.0
    """Arrival of the last RTP before the recording started (after, the
    streams know it)."""
    rtcp: list[int] = field(default_factory=lambda: [0, 0])
    """RTCP packets per channel, counted here: they never reach the stream."""
    decoders: CallDecoders | None = None
    """Decoding into the file of what is not its G.711 (recorder/codecs.py)."""
    wideband: bool = False
    """The file is 16 kHz: G.711 is decoded and interpolated too."""
    latched: list[bool] = field(default_factory=lambda: [False, False])
    """Whether a flow carries each channel since its SDP last changed."""
    foreign: list[int] = field(default_factory=lambda: [0, 0])
    """Packets of foreign flows per channel (foreign SSRCs: the streams)."""
    foreign_names: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))
    foreign_flows: list[Flow] = field(default_factory=list)
    limit: int = GAP_SAMPLES
    """A position beyond which a packet has the silence before it written
    first (never more than GAP_SAMPLES past what the file holds)."""
    clock_shift: float = 0.0
    """Seconds the call's times were moved by capture-clock steps."""


def _addr(packed: bytes, port: int) -> str:
    ip = ipaddress.ip_address(packed)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


class Recorder:
    """Feeds frames through decoding, signalling and media to a sink."""

    def __init__(self, decider: PolicyDecider, sink: RecordingSink, marks: MarkSink | None = None) -> None:
        self.decider = decider
        # On-demand lines' audio stops in the gate until somebody asks (recorder.on_demand).
        self.on_demand = OnDemandGate(sink, self._on_demand_view)
        # Harassment marks keyed on the extension go to `marks` while the call goes on (recorder.marks).
        harassment = decider.policy.harassment
        self.marks = MarkWatch(self.on_demand, MarkRule.of(harassment) if harassment else None, self._staff_digits,
                               marks)
        self.sink: RecordingSink = self.marks
        self.decoder = PacketDecoder()
        self.tracker = CallTracker(decider)
        self._media: dict[int, CallMedia] = {}
        self._flows: dict[Flow, tuple[CallMedia, int]] = {}
        # Classified flows by their two ends: a flow that leaves from where
        # another arrives is the other direction of the same conversation.
        self._sent_from: dict[tuple[bytes, int], tuple[CallMedia, int]] = {}
        self._sent_to: dict[tuple[bytes, int], tuple[CallMedia, int]] = {}
        self._unmatched: set[Flow] = set()
        self._unmatched_generation = -1
        self._orphans: deque[tuple[float, Flow, bytes]] = deque()
        self._orphan_generation = -1
        self._framers: dict[Flow, SipStreamFramer] = {}
        self._foreign: dict[Flow, tuple[CallMedia, int]] = {}
        self._next_tick = 0.0
        self.now = 0.0
        self._frame_ts = -math.inf
        """The latest capture time of a frame taken on the clock."""
        self._held: list[tuple[float, tuple[int, bytes] | None]] = []
        """Frames (or the daemon's clock, None) held off the clock."""
        self._peek = PacketDecoder(dedup_window=0)
        self._touch: Callable[[CallMedia], None] | None = None
        """While a batch is fed (recorder.batch): told before scalar code
        reads or changes a call's media, so that the batch's earlier packets
        of that call are in place first."""
        self._batch = BatchPath(self)
        self.stats = {
            "rtp_packets": 0, "rtp_unmatched": 0, "rtp_foreign": 0,
            "rtcp_packets": 0, "rtp_not_recorded": 0, "sip_malformed": 0, "udp_other": 0,
            "recordings": 0, "unanswered": 0, "clock_steps": 0, "clock_strays": 0, "clock_gaps": 0,
        }

    # ---- input ------------------------------------------------------------
    def feed_frame(self, ts: float, linktype: int, frame: bytes) -> None:
        """One captured frame; ts is its capture time, the core's only clock."""
        self.feed_frames(((ts, linktype, frame),))

    def feed_frames(self, frames: Iterable[Frame]) -> None:
        """Captured frames in capture order, as `feed_frame` one by one.

        Readers deliver frames in batches (a chunk of a file, a block of the
        kernel's ring); taking the batch keeps the per-frame work in one loop
        with its lookups and its RTP packet count in local variables."""
        decode = self.decoder.decode_flows
        flows = self._flows
        media_packet = self._media_packet
        rtp = 0
        now = self.now
        next_tick = self._next_tick
        frame_ts = self._frame_ts
        lo, hi = self._window()
        try:
            for ts, linktype, frame in frames:
                if not lo <= ts <= hi:
                    # Off the clock (or frames are held): the slow path.
                    self.stats["rtp_packets"] += rtp
                    rtp = 0
                    self._frame_ts = frame_ts
                    self._off_clock(ts, (linktype, frame))
                    now, next_tick, frame_ts = self.now, self._next_tick, self._frame_ts
                    lo, hi = self._window()
                    continue
                if ts > now:
                    self.now = now = frame_ts = ts
                    lo, hi = ts - CLOCK_JUMP_SECONDS, ts + CLOCK_JUMP_SECONDS
                    if ts >= next_tick:
                        self._tick(ts)
                        next_tick = self._next_tick
                for proto, flow, payload in decode(ts, linktype, frame):
                    if proto == 17:
                        # A known media flow is the common case: one dict subscript,
                        # on a flow whose hash the decoder's de-duplication cached.
                        try:
                            media, channel = flows[flow]
                        except KeyError:
                            if looks_like_sip(payload):
                                self._sip_datagram(ts, flow, payload)
                            else:
                                self._classify_udp(ts, flow, payload)
                        else:
                            # RTCP multiplexed on the RTP port (RFC 5761): packet types
                            # 200-204 where RTP has its marker bit and payload type.
                            if len(payload) > 1 and 199 < payload[1] < 205:
                                self._rtcp(media, channel)
                            else:
                                rtp += 1
                                media_packet(ts, media, channel, flow, payload)
                    else:
                        self._sip_stream(ts, flow, payload)
        finally:
            self.stats["rtp_packets"] += rtp
            self._frame_ts = frame_ts

    def feed_batch(self, batch: FrameBatch) -> None:
        """The frames of `batch` as `feed_frames` takes them, with the same
        results to the byte: the common RTP frame of a call being recorded is
        placed a batch at a time with array operations, everything else takes
        the per-frame path in order (recorder.batch).  Live capture calls it
        with `FrameBatch.from_frames` of a ring block."""
        self._batch.feed(batch)

    def _datagrams(self, ts: float, datagrams: Iterable[tuple[int, Flow, bytes]]) -> int:
        """One frame's datagrams as feed_frames handles them (its clock
        already set); returns the RTP packets given to `_media_packet`, which
        the caller counts.  The batch path's per-frame fallback."""
        flows = self._flows
        rtp = 0
        for proto, flow, payload in datagrams:
            if proto != 17:
                self._sip_stream(ts, flow, payload)
                continue
            route = flows.get(flow)
            if route is None:
                if looks_like_sip(payload):
                    self._sip_datagram(ts, flow, payload)
                else:
                    self._classify_udp(ts, flow, payload)
            elif len(payload) > 1 and 199 < payload[1] < 205:
                self._rtcp(route[0], route[1])
            else:
                rtp += 1
                self._media_packet(ts, route[0], route[1], flow, payload)
        return rtp

    def finish(self, reason: str = "capture_end") -> None:
        """End of input (or of the daemon): close every open call, incomplete."""
        while self._held:
            self._resolve(final=True)
        self._handle(self.tracker.close_all(self.now, reason))

    @property
    def next_tick(self) -> float:
        """The capture time at which the recorder next commits and checkpoints
        every recording.  A caller that holds frames to feed them in larger
        batches feeds them once they reach it, so a crash loses no more than
        it would had each frame been fed as it came."""
        return self._next_tick

    def advance(self, now: float) -> None:
        """Let time pass without packets (a live daemon on a quiet line):
        timeouts fire and open recordings are committed up to `now`.  While
        calls are being recorded, a clock that jumps ahead is judged as a
        frame would be (their media will tell); with none, it is time."""
        if self._held or (now > self.now + CLOCK_JUMP_SECONDS and self.active_recordings()):
            self._off_clock(now, None)
        else:
            self._advance_clock(now)

    def _advance_clock(self, now: float) -> None:
        if now > self.now:
            self.now = now
            if now >= self._next_tick:
                self._tick(now)

    def set_decider(self, decider: PolicyDecider) -> None:
        """A reloaded policy: new calls follow it, calls under way keep the
        classification they started with."""
        self.decider = decider
        self.tracker.decider = decider
        self.marks.rule = MarkRule.of(decider.policy.harassment) if decider.policy.harassment else None

    def counters(self) -> dict[str, int]:
        """Every counter of the pipeline, for logs, status and health."""
        return {**self.decoder.stats, **self.tracker.stats, **self.stats, **self.on_demand.stats, **self.marks.stats}

    def active_recordings(self) -> int:
        return sum(1 for media in self._media.values() if media.origin is not None)

    def one_sided_recordings(self, now: float, after: float) -> list[str]:
        """Calls recording for `after` seconds with RTP from one side only."""
        found = []
        for media in self._media.values():
            if media.origin is None or now - media.origin < after or not media.streams:
                continue
            counts = [stream.stats.packets for stream in media.streams]
            if (counts[0] == 0) != (counts[1] == 0):
                found.append(media.call.call_id)
        return found

    # ---- signalling -------------------------------------------------------
    def _sip_datagram(self, ts: float, flow: Flow, payload: bytes) -> None:
        try:
            msg = parse_sip(payload)
        except SipParseError:
            self.stats["sip_malformed"] += 1
            return
        self._sip_message(ts, flow, msg)

    def _sip_stream(self, ts: float, flow: Flow, data: bytes) -> None:
        framer = self._framers.get(flow)
        if framer is None:
            if len(self._framers) >= MAX_TCP_FRAMERS:
                self._framers.pop(next(iter(self._framers)))
            framer = self._framers[flow] = SipStreamFramer()
        for item in framer.feed(data):
            if isinstance(item, SipParseError):
                self.stats["sip_malformed"] += 1
            else:
                self._sip_message(ts, flow, item)

    def _sip_message(self, ts: float, flow: Flow, msg: SipMessage) -> None:
        src_ip, _, dst_ip, _ = split_flow(flow)
        src = str(ipaddress.ip_address(src_ip))
        dst = str(ipaddress.ip_address(dst_ip))
        self._handle(self.tracker.on_message(ts, src, dst, msg))

    def _handle(self, events: list[CallEvent]) -> None:
        if self._orphans and self._orphan_generation != self.tracker.endpoint_generation:
            # New endpoints may explain RTP that came first; it joins its
            # call before an answer fixes where the recording starts.
            self._orphan_generation = self.tracker.endpoint_generation
            self._adopt_orphans()
        for event in events:
            media = self._media.get(event.call.serial)
            if media is not None and self._touch is not None:
                self._touch(media)
            if isinstance(event, CallAnswered):
                if event.call.classification.record:
                    media = media or self._media_for(event.call)
                    # The answer may come from another fork than the early
                    # media did: each channel may latch onto a new source.
                    media.latched[:] = [False, False]
                    self._start(media, event.call.answer_ts or self.now)
            elif isinstance(event, MediaChanged):
                if media is not None:
                    # New SDP: the flows are judged again, and each channel
                    # may latch onto a new source.
                    self._forget_flows(media)
                    media.latched[:] = [False, False]
                    for channel, stream in enumerate(media.streams):
                        stream.set_payload_types(event.call.pt_map_for(self._party(event.call, channel)))
            elif isinstance(event, CallEnded):
                if media is not None:
                    self._stop(media)
            elif isinstance(event, CallDropped):
                if media is not None:
                    self._forget_flows(media)
                    del self._media[event.call.serial]
                if event.call.classification.record:
                    self.stats["unanswered"] += 1

    # ---- media ------------------------------------------------------------
    @staticmethod
    def _party(call: Call, channel: int) -> int:
        return call.local_party if channel == 0 else 1 - call.local_party

    def _media_for(self, call: Call) -> CallMedia:
        media = self._media.get(call.serial)
        if media is None:
            media = self._media[call.serial] = CallMedia(call)
        return media

    def _classify_udp(self, ts: float, flow: Flow, payload: bytes) -> None:
        if len(payload) < 12 or payload[0] & 0xC0 != 0x80:
            self.stats["udp_other"] += 1
            return
        if 200 <= payload[1] <= 204:
            # RTCP first on a flow is routed as RTP would be, so that it counts
            # for its call and the flow is known when RTP follows on it.
            route = self._route(flow)
            if route is None or not route[2]:
                self.stats["rtcp_packets"] += 1
            else:
                self._rtcp(route[0], route[1])
            return
        route = self._route(flow)
        if route is None:
            self.stats["rtp_unmatched"] += 1
            self._orphans.append((ts, flow, payload))
            if len(self._orphans) > MAX_ORPHANS:
                self._orphans.popleft()
        elif route[2]:
            self.stats["rtp_packets"] += 1
            self._media_packet(ts, route[0], route[1], flow, payload)
        else:
            self._foreign_packet(route[0], route[1])

    def _rtcp(self, media: CallMedia, channel: int) -> None:
        """RTCP of a call's flow: counted for the call's channel, kept out of
        its stream (whose packet count is RTP only) and out of rtp_packets."""
        self.stats["rtcp_packets"] += 1
        media.rtcp[channel] += 1

    def _foreign_packet(self, media: CallMedia, channel: int) -> None:
        media.foreign[channel] += 1
        self.stats["rtp_foreign"] += 1

    def _route(self, flow: Flow) -> tuple[CallMedia, int, bool] | None:
        """Match a new flow to a call and channel through the SDP endpoints,
        and judge whether it is the channel's media (True) or foreign.

        The destination decides first (a party receives where its SDP says,
        even behind NAT); then the source (symmetric RTP).  A flow to a
        party is its peer's media if it comes from the peer's SDP address,
        from where the party sends its own media (the party latched onto
        it), or is the first to reach the channel: a latch that also teaches
        the sender's real address, so media from an address other than the
        SDP's is matched in both directions.  Foreign flows are remembered
        (bounded) until the call's SDP or legitimate flows change.
        """
        known = self._foreign.get(flow)
        if known is not None:
            return known[0], known[1], False
        tracker = self.tracker
        if self._unmatched_generation != tracker.endpoint_generation:
            self._unmatched.clear()
            self._unmatched_generation = tracker.endpoint_generation
        if flow in self._unmatched:
            return None
        src, sport, dst, dport = split_flow(flow)
        reverse = self._sent_from.get((dst, dport)) or self._sent_to.get((src, sport))
        hit = tracker.endpoints.get((dst, dport))
        learn = False
        if reverse is not None:
            call = reverse[0].call
            speaker = self._party(call, 1 - reverse[1])
        elif hit is not None:
            call, receiver = hit
            speaker = 1 - receiver
            learn = True
        else:
            hit = tracker.endpoints.get((src, sport))
            if hit is None:
                if len(self._unmatched) >= MAX_NEGATIVE_FLOWS:
                    self._unmatched.clear()
                self._unmatched.add(flow)
                return None
            call, speaker = hit
        media = self._media_for(call)
        channel = call.channel_of(speaker)
        name = f"{_addr(src, sport)}>{_addr(dst, dport)}"
        if not self._legitimate(media, channel, speaker, (src, sport)):
            names = media.foreign_names[channel]
            if name not in names and len(names) < MAX_REPORTED_FLOWS:
                names.append(name)
            if len(media.foreign_flows) < MAX_FOREIGN_FLOWS_PER_CALL and len(self._foreign) < MAX_FOREIGN_FLOWS:
                media.foreign_flows.append(flow)
                self._foreign[flow] = (media, channel)
            return media, channel, False
        if learn:
            tracker.add_endpoint(call, speaker, (src, sport))
            self._unmatched_generation = tracker.endpoint_generation
        media.latched[channel] = True
        route = (media, channel)
        flows = media.flows[channel]
        seen = media.seen_flows[channel]
        if name not in seen and len(seen) < MAX_REPORTED_FLOWS:
            seen.append(name)
        if len(flows) < MAX_FLOWS_PER_CHANNEL:
            flows.append(flow)
            self._flows[flow] = route
            self._sent_from[(src, sport)] = route
            self._sent_to[(dst, dport)] = route
            # A new source of the call's media may explain flows judged
            # foreign before it (the PBX latched onto a new address).
            self._forget_foreign(media)
        return media, channel, True

    def _legitimate(self, media: CallMedia, channel: int, speaker: int, source: tuple[bytes, int]) -> bool:
        """Whether media from `source` on `channel` is the one the dialog set
        up; see _route."""
        if not media.latched[channel]:
            return True
        known = self.tracker.endpoints.get(source)
        if known is not None and known[0] is media.call and known[1] == speaker:
            return True
        answered = self._sent_to.get(source)
        return answered is not None and answered[0] is media and answered[1] != channel

    def _media_packet(self, ts: float, media: CallMedia, channel: int, flow: Flow, payload: bytes) -> None:
        """The per-packet path: kept flat, one parse, and no object beyond the
        (position, encoding, audio) tuple the stream hands to the interleaver.
        The caller counts the packet in stats["rtp_packets"] (feed_frames in a
        local variable, once per batch).

        Only a recorded call gets an origin, so a started recording skips the
        policy lookup (two more objects to fetch per packet)."""
        if self._touch is not None:
            self._touch(media)
        if media.origin is None:
            if not media.call.classification.record:
                self.stats["rtp_not_recorded"] += 1
                return
            media.last_media = ts
            pending = media.pending
            pending.append((ts, channel, flow, payload))
            if len(pending) > MAX_PENDING_PER_CALL:
                pending.popleft()
            return
        stream = media.streams[channel]
        located = stream.locate(ts, payload)
        if located is None:
            if stream.released:
                self._replay_released(media, channel, flow)
            return
        position, encoding, audio = located
        if position > media.limit:
            self._bound_gap(media, position, encoding)
        if encoding in G711 and not media.wideband:
            interleaver = media.interleaver
            if interleaver is None:
                interleaver = self._open(media, encoding)
            try:
                data = interleaver.place_samples(channel, position, encoding, audio)
            except EncodingChange:
                self._to_l16(media)
                data = interleaver.place_samples(channel, position, encoding, audio)
            if data:
                media.handle.append(data)  # type: ignore[union-attr]
        else:
            self._undecoded(ts, media, channel, flow, position, encoding, audio, payload)

    def _replay_released(self, media: CallMedia, channel: int, flow: Flow) -> None:
        """An SSRC took over the channel: the packets it sent meanwhile, in order."""
        for arrival, data in media.streams[channel].take_released():
            self._media_packet(arrival, media, channel, flow, data)

    def _settle(self, media: CallMedia, now: float) -> None:
        """A channel whose only SSRC sent a single packet takes it, once
        `now` shows no other came (see RtpStream.settle)."""
        for channel, stream in enumerate(media.streams):
            if stream.settle(now):
                flows = media.flows[channel]
                self._replay_released(media, channel, flows[0] if flows else bytes(12))

    def _undecoded(self, ts: float, media: CallMedia, channel: int, flow: Flow, position: int, encoding: str,
                   audio: bytes, raw: bytes) -> None:
        """Audio that is not in the file's G.711: decoded into 16-bit PCM (the
        file becomes PCM) where a decoder exists, and, unless it is G.711, kept
        as it came in the channel's side file too, decoded or not."""
        interleaver = media.interleaver
        if interleaver is None:
            interleaver = self._open(media, "L16", file_rate(encoding))
        handle = media.handle
        assert handle is not None and media.decoders is not None
        if encoding not in G711:
            src, sport, dst, dport = split_flow(flow)
            handle.side_packet(channel, ts, raw, (str(ipaddress.ip_address(src)), sport,
                                                  str(ipaddress.ip_address(dst)), dport))
        chunks = media.decoders.decode(channel, position, encoding, raw, audio)
        if chunks is None:
            media.undecoded.add(encoding)
            return
        if chunks and interleaver.encoding != "L16":
            self._to_l16(media)
        for start, pcm in chunks:
            data = interleaver.place_pcm(channel, start, pcm)
            if data:
                handle.append(data)

    @staticmethod
    def _to_l16(media: CallMedia) -> None:
        """The recording becomes 16-bit PCM: what the interleaver committed
        lazily goes to the file first, in the law it was placed in."""
        interleaver, handle = media.interleaver, media.handle
        assert interleaver is not None and handle is not None
        pending = interleaver.drain()
        if pending:
            handle.append(pending)
        handle.convert_to_l16()
        interleaver.to_l16()

    def _open(self, media: CallMedia, encoding: str, rate: int = RATE) -> StereoInterleaver:
        """The recording's file is made when its first audio arrives, in the
        law of that audio; a call with no G.711 audio first gets a PCM file,
        at 16 kHz if that audio is wideband (recorder/codecs.py)."""
        assert media.origin is not None
        media.handle = self.sink.open_audio(media.call.snapshot(), media.origin, encoding, rate=rate)
        media.interleaver = StereoInterleaver(encoding, window_samples=rate, rate=rate)
        media.decoders = CallDecoders(rate)
        media.wideband = rate != RATE
        return media.interleaver

    def _start(self, media: CallMedia, now: float) -> None:
        """The call is answered: fix the timeline's origin, start the
        recording, and play what arrived shortly before the answer."""
        call = media.call
        preroll = self.decider.policy.recording.preroll_seconds
        earliest = media.pending[0][0] if media.pending else now
        media.origin = max(min(earliest, now), now - preroll, call.invite_ts)
        media.streams = [
            RtpStream(media.origin, call.pt_map_for(self._party(call, channel)), lock_ssrc=True)
            for channel in (0, 1)
        ]
        self.sink.begin(call.snapshot(), media.origin)
        self.stats["recordings"] += 1
        pending, media.pending = media.pending, deque()
        for ts, channel, flow, payload in pending:
            if ts >= media.origin:
                self._media_packet(ts, media, channel, flow, payload)

    def _stop(self, media: CallMedia) -> None:
        call = media.call
        self._forget_flows(media)
        del self._media[call.serial]
        if media.origin is None:
            return
        end_ts = call.end_ts if call.end_ts is not None else self.now
        self._settle(media, math.inf)
        interleaver = media.interleaver
        frames, late = 0, 0
        if interleaver is not None and media.handle is not None:
            # A call that ended (BYE) is recorded to its end; one closed for
            # it (RTP timeout, end of capture, shutdown) to its last media.
            end_pos = round((end_ts - media.origin) * interleaver.rate) if call.complete else self._frontier(media)
            self._commit(media, end_pos)
            media.handle.append(interleaver.flush())
            frames = interleaver.committed
            late = int(interleaver.stats.get("late_samples", 0))
        for stream in media.streams:
            self.stats["rtp_foreign"] += stream.stats.foreign
        result = CallResult(
            call=call.snapshot(), origin=media.origin, frames=frames,
            encoding=interleaver.encoding if interleaver is not None else None,
            streams=tuple(
                StreamReport(channel, tuple(media.seen_flows[channel]), self._stream_stats(media, channel, stream))
                for channel, stream in enumerate(media.streams)
            ),
            dtmf=tuple(
                DtmfMark(channel, ev.digit, ev.position, ev.duration_ms, ev.ended)
                for channel, stream in enumerate(media.streams) for ev in stream.dtmf
            ),
            undecoded=tuple(sorted(media.undecoded)),
            late_samples=late,
        )
        if media.handle is not None:
            media.handle.close(result)
        else:
            self.sink.finish_without_audio(result)

    @staticmethod
    def _stream_stats(media: CallMedia, channel: int, stream: RtpStream) -> dict[str, object]:
        """The stream's counters with the channel's RTCP, which the engine
        counts before any packet reaches the stream."""
        stats = dataclasses.asdict(stream.stats)
        stats["rtcp_packets"] += media.rtcp[channel]
        if media.decoders is not None:
            stats.update(media.decoders.stats(channel))
        stats["foreign"] += media.foreign[channel]
        stats["foreign_flows"] = list(media.foreign_names[channel])
        stats["clock_shift"] = round(media.clock_shift, 3)
        return stats

    def _forget_flows(self, media: CallMedia) -> None:
        for flows in media.flows:
            for flow in flows:
                src, sport, dst, dport = split_flow(flow)
                ends = ((self._flows, flow), (self._sent_from, (src, sport)), (self._sent_to, (dst, dport)))
                for table, end in ends:
                    if table.get(end, (None,))[0] is media:
                        del table[end]
            flows.clear()
        self._forget_foreign(media)

    def _forget_foreign(self, media: CallMedia) -> None:
        for flow in media.foreign_flows:
            if self._foreign.get(flow, (None,))[0] is media:
                del self._foreign[flow]
        media.foreign_flows.clear()

    def _adopt_orphans(self) -> None:
        """RTP that came before the SDP that explains it (e.g. the callee
        sends media before its 200 OK reached the mirror)."""
        horizon = self.now - ORPHAN_SECONDS
        orphans, self._orphans = self._orphans, deque()
        for ts, flow, payload in orphans:
            if ts < horizon:
                continue
            known = self._flows.get(flow)
            route = (*known, True) if known is not None else self._route(flow)
            if route is None:
                self._orphans.append((ts, flow, payload))
                continue
            self.stats["rtp_unmatched"] -= 1
            if route[2]:
                self.stats["rtp_packets"] += 1
                self._media_packet(ts, route[0], route[1], flow, payload)
            else:
                self._foreign_packet(route[0], route[1])

    # ---- clock ------------------------------------------------------------
    def _window(self) -> tuple[float, float]:
        """The capture times feed_frames takes on its fast path: none while
        frames are held, any before the first frame."""
        if self._held:
            return math.inf, -math.inf
        if self._frame_ts == -math.inf:
            return -math.inf, math.inf
        return self._frame_ts - CLOCK_JUMP_SECONDS, self.now + CLOCK_JUMP_SECONDS

    def _on_clock(self, ts: float) -> bool:
        return self._frame_ts - CLOCK_JUMP_SECONDS <= ts <= self.now + CLOCK_JUMP_SECONDS

    def _off_clock(self, ts: float, item: tuple[int, bytes] | None) -> None:
        """A frame (None: the daemon's clock) off the clock, or any while
        others are held; see the module docstring."""
        if not math.isfinite(ts):
            if item is not None:
                self._count_strays(1, ts)
                self._take(self.now, item)
            return
        if self._on_clock(ts):
            if self._held:
                self._strays()
            self._take(ts, item)
            return
        if self._held and (ts > self.now) != (self._held[0][0] > self.now):
            self._strays()
        self._held.append((ts, item))
        if len(self._held) > 1:
            self._resolve(final=False)

    def _strays(self) -> None:
        """The held frames were off a clock the next frame is back on: they
        are taken at the clock's time."""
        held, self._held = self._held, []
        frames = [item for _, item in held if item is not None]
        if frames:
            self._count_strays(len(frames), held[0][0])
        for item in frames:
            self._take(self.now, item)

    def _count_strays(self, count: int, ts: float) -> None:
        self.stats["clock_strays"] += count
        log.warning("capture.clock_stray", frames=count, seconds=round(ts - self.now, 3)
                    if math.isfinite(ts) else str(ts))

    def _take(self, ts: float, item: tuple[int, bytes] | None) -> None:
        """A frame (or clock reading) at `ts`, which is on the clock."""
        if item is None:
            self._advance_clock(ts)
        else:
            self.feed_frames(((ts, item[0], item[1]),))

    def _resolve(self, *, final: bool) -> None:
        """Frames held off the clock were followed by one that is not back
        on it (or the input ended): a step of the clock or a gap of real
        time.  The media in progress tells them apart; see the module
        docstring.  At the end of input, a single frame that the media calls
        a step is taken as a stray."""
        held, self._held = self._held, []
        first = held[0][0]
        forward = first > self.now
        jump = first - self.now if forward else first - self._frame_ts
        evidence = self._evidence(held)
        if evidence is None:
            step = 0.0 if forward else jump
        else:
            when, last, elapsed = evidence
            step = min(when - last - min(elapsed, self.decider.policy.recording.rtp_timeout_seconds), jump)
            if forward and step <= CLOCK_JUMP_SECONDS:
                step = 0.0
        if forward and step and final:
            self._held = held
            self._strays()
            return
        if step:
            self.stats["clock_steps"] += 1
            log.warning("capture.clock_step", seconds=round(step, 3), measured_by_rtp=evidence is not None)
            self._shift(step)
        else:
            self.stats["clock_gaps"] += 1
            log.info("capture.clock_gap", seconds=round(first - self.now, 3))
        self._advance_clock(first)
        if held[0][1] is not None:
            self._frame_ts = max(self._frame_ts, first)
        for ts, item in held:
            if item is None:
                self.advance(ts)
            else:
                self.feed_frames(((ts, item[0], item[1]),))

    def _evidence(self, held: list[tuple[float, tuple[int, bytes] | None]]) -> tuple[float, float, float] | None:
        """The first held RTP packet that continues a recorded stream:
        (its capture time, the stream's last arrival, media seconds between
        them by RTP timestamp).  Decoded apart (no de-duplication or
        reassembly state is touched) before the frames are taken."""
        for ts, item in held:
            if item is None:
                continue
            for proto, flow, payload in self._peek.decode_flows(ts, item[0], item[1]):
                route = self._flows.get(flow) if proto == 17 else None
                if route is None or not route[0].streams:
                    continue
                found = route[0].streams[route[1]].elapsed(payload)
                if found is not None:
                    return ts, found[0], found[1]
        return None

    def _shift(self, step: float) -> None:
        """The capture clock stepped by `step` seconds more than the media
        says passed: everything in flight moves with it (the calls and their
        timers, the recordings' timelines, RTP waiting for its call), so
        that their durations and gaps stay what the media says."""
        self.now += step
        self._frame_ts += step
        self._next_tick += step
        self.tracker.shift_clock(step)
        self._orphans = deque((ts + step, flow, payload) for ts, flow, payload in self._orphans)
        for media in self._media.values():
            media.pending = deque((ts + step, channel, flow, payload) for ts, channel, flow, payload in media.pending)
            if media.last_media:
                media.last_media += step
            if media.origin is not None:
                media.origin += step
            media.clock_shift += step
            for stream in media.streams:
                stream.shift(step)

    # ---- time -------------------------------------------------------------
    def _tick(self, now: float) -> None:
        self._next_tick = now + TICK_SECONDS
        last_media = {serial: self._last_media(m) for serial, m in self._media.items()}
        self._handle(self.tracker.on_timer(now, self.decider.policy.recording.rtp_timeout_seconds, last_media))
        for media in self._media.values():
            for stream in media.streams:
                if stream._lock == -1 and stream._candidates:
                    self._settle(media, now)
                    break
        # Every recording's commit and checkpoint, `_frontier` inlined: this
        # loop runs for every call twice a second.
        for media in self._media.values():
            interleaver, handle, origin = media.interleaver, media.handle, media.origin
            if interleaver is None or handle is None or origin is None:
                continue
            last = media.last_media
            ends = None
            for stream in media.streams:
                arrival = stream._last_arrival
                if arrival is not None and arrival > last:
                    last = arrival
                if ends is None or stream._last_end > ends:
                    ends = stream._last_end
            frontier = int((last - origin) * RATE)
            if ends is not None and ends > frontier:
                frontier = ends
            rate = interleaver._rate
            # Not beyond the media: if none follows, the file ends there.
            upto = min(int((now - origin - COMMIT_LAG_SECONDS) * rate), frontier * rate // RATE)
            if upto > interleaver._committed:
                if upto - interleaver._committed <= COMMIT_PIECE_SAMPLES:
                    # `_commit` in one piece, the common case.
                    handle.append(interleaver._emit(upto))
                    media.limit = upto * RATE // rate + GAP_SAMPLES
                else:
                    self._commit(media, upto)
            elif interleaver._emitted != interleaver._committed:
                # What the batched path committed lazily (StereoInterleaver.advance).
                handle.append(interleaver.drain())
            handle.checkpoint()
        horizon = now - ORPHAN_SECONDS
        while self._orphans and self._orphans[0][0] < horizon:
            self._orphans.popleft()

    # ---- on-demand lines ----------------------------------------------------
    def _on_demand_view(self, serial: int) -> tuple[OnDemandRule | None, Sequence[DtmfEvent]]:
        """For the gate: a call's on-demand rule, from the classification it started with, and
        the digits its staff side (channel 0) has keyed so far."""
        media = self._media.get(serial)
        if media is None:
            return None, ()
        return media.call.classification.on_demand, media.streams[0].dtmf if media.streams else ()

    def _staff_digits(self, serial: int) -> Sequence[DtmfEvent]:
        """For the mark watch: the digits a call's staff side (channel 0) has keyed so far."""
        media = self._media.get(serial)
        return media.streams[0].dtmf if media is not None and media.streams else ()

    @staticmethod
    def _last_media(media: CallMedia) -> float:
        """Arrival of the call's last RTP (foreign packets do not count)."""
        last = media.last_media
        for stream in media.streams:
            arrival = stream.last_arrival
            if arrival is not None and arrival > last:
                last = arrival
        return last

    def _frontier(self, media: CallMedia) -> int:
        """Where the call's media ends so far, in the file's samples: the end of
        its audio, or of its last packet of any kind (comfort noise, DTMF).  The
        streams count on the 8 kHz timeline; a 16 kHz file has twice as many."""
        assert media.origin is not None and media.interleaver is not None
        frontier = int((self._last_media(media) - media.origin) * RATE)
        for stream in media.streams:
            end = stream.end
            if end is not None and end > frontier:
                frontier = end
        return frontier * media.interleaver.rate // RATE

    def _commit(self, media: CallMedia, upto: int) -> None:
        """Commit the recording up to `upto`, in pieces of at most
        COMMIT_PIECE_SAMPLES (of the 8 kHz timeline) however far that is; `upto`
        and `media.limit` as in _frontier."""
        interleaver, handle = media.interleaver, media.handle
        assert interleaver is not None and handle is not None
        rate = interleaver.rate
        piece = COMMIT_PIECE_SAMPLES * rate // RATE
        committed = interleaver.committed
        while committed < upto:
            handle.append(interleaver.commit(min(upto, committed + piece)))
            committed = interleaver.committed
        media.limit = committed * RATE // rate + GAP_SAMPLES

    def _bound_gap(self, media: CallMedia, position: int, encoding: str) -> None:
        """A packet far beyond what the file holds (media resuming after a
        pause): the silence before it is committed in pieces first, rather
        than in one piece as long as the pause."""
        if media.interleaver is None:
            if encoding not in G711:
                return
            self._open(media, encoding)
        assert media.interleaver is not None
        self._commit(media, (position - RATE) * media.interleaver.rate // RATE)
