"""Sans-I/O link, network and transport decoding of captured frames.

``PacketDecoder.decode_flows`` turns one frame into the transport payloads it
carries: UDP datagrams (after IP fragment reassembly and mirror-port
de-duplication) and newly in-order TCP stream bytes, each named by its *flow*:
the source and destination addresses and the two ports, as one bytes object in
wire order.  One object, not four, because the recorder looks every packet up
by its flow: a bytes object hashes once (the hash is cached in it), and it is
the very slice the de-duplication key already holds.  ``decode`` gives the same
with the addresses and ports apart.  Everything else is counted and dropped;
bad input never raises.

The common case on a PBX mirror port, an RTP packet in Ethernet (optionally one
802.1Q tag) / IPv4 / UDP, is decoded with a single ``struct`` call and two
slices; every other frame takes the general path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from struct import Struct

import numpy as np

from .ipfrag import FragmentReassembler
from .tcpstream import TcpReassembler

FlowDatagram = tuple[int, bytes, bytes]
"""``(ipproto, flow, payload)``; ``ipproto`` is 17 (UDP) or 6 (TCP, where
``payload`` is the next run of in-order stream bytes); ``flow`` is ``src + dst +
sport + dport`` as on the wire (12 bytes for IPv4, 36 for IPv6; see
``split_flow``)."""

Datagram = tuple[int, bytes, int, bytes, int, bytes]
"""``(ipproto, src, sport, dst, dport, payload)``: a FlowDatagram with its flow
split; addresses are packed 4- or 16-byte strings."""

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_DLT_RAW_ALIASES = (12, 14)  # DLT_RAW as written by some BSDs; libpcap maps both to raw IP

IPPROTO_TCP = 6
IPPROTO_UDP = 17

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset((24, 28, 30))  # NetBSD/OpenBSD, FreeBSD, Darwin

_IPV6_GENERIC_EXT = frozenset((0, 43, 60, 139, 140))  # hop-by-hop, routing, dest opts, HIP, shim6
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_MAX_IPV6_EXT_HEADERS = 16

_HOUSEKEEPING_INTERVAL = 1.0
_DEDUP_MAX_ENTRIES = 16384

# Ethernet/IPv4/UDP in one go: ethertype, ver+ihl, total length, id, flags+frag
# offset+TTL+protocol (one number, so that "not a fragment, UDP" is one test),
# udp length; the addresses and ports between are sliced as the flow.  Applied
# at offset 4 it reads the same fields behind one VLAN tag.
_FAST = Struct("!12xHBxHHI14xH").unpack_from
_UNFRAGMENTED_UDP_MASK = 0x3FFF00FF
"""Fragment offset and MF flag, and protocol, of the flags..protocol number."""
_FAST_LEN = 42
_IPV4 = Struct("!BxHHHxB2x4s4s").unpack_from
_IPV6 = Struct("!IHB1x16s16s").unpack_from
_IPV6_FRAG = Struct("!BxHI").unpack_from
_UDP = Struct("!HHH").unpack_from
_TCP = Struct("!HHI4xH").unpack_from
_U16 = Struct("!H").unpack_from
_PORTS = Struct("!HH")

_DedupKey = tuple[int, bytes, bytes]
"""``(ident, flow, payload)``."""

_NOTHING: tuple[FlowDatagram, ...] = ()

_STAT_KEYS = (
    "non_ip",
    "malformed",
    "truncated",
    "duplicates",
    "other_proto",
    "unsupported_linktype",
    "tcp_segments",
)


class PacketDecoder:
    """Stateful frame decoder: owns fragment, TCP and de-duplication state.

    De-duplication: a mirror port often delivers the same packet twice (both
    directions of a span, or two spans), possibly with a different VLAN tag or
    TTL.  A UDP datagram whose addresses, ports and payload equal one seen within
    ``dedup_window`` seconds is dropped.  The IP identification is part of the
    match (IPv4, and IPv6 when a fragment header carries one): a copy of the same
    packet keeps it, whereas a sender that really transmits identical bytes twice
    (a SIP UA answering an INVITE retransmission with a second, identical
    ``100 Trying`` 0.3 ms later) uses a new one, and both are kept as evidence.
    Two generations of exact-match dicts keep this O(1) per packet; equality is by
    bytes, never by hash alone.  A key is ``(ident, addresses + ports, payload)``:
    the payload is the delivered object and the addresses and ports one small
    slice (4+4+4 bytes for IPv4, 16+16+4 for IPv6, so the families never compare
    equal).  What a key holds stays alive for two windows, and at hundreds of
    calls that memory is what the per-packet path waits for: a key holding the
    datagram tuple kept eight objects per packet alive, this one four.  Bound:
    the datagrams of the last two windows, and at most 16384 per generation (a
    generation closes early when full, which at more than 300k packets/s can
    let a late copy through).
    ``dedup_window <= 0`` disables it.
    """

    __slots__ = (
        "frames",
        "_counts",
        "_window",
        "_rotate_at",
        "_cur",
        "_prev",
        "_frag",
        "_tcp",
        "_tick",
    )

    def __init__(
        self, *, dedup_window: float = 0.05, max_fragment_sets: int = 1024, max_tcp_streams: int = 4096
    ) -> None:
        self.frames = 0
        self._counts: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._window = dedup_window
        self._rotate_at = -math.inf
        self._cur: dict[_DedupKey, float] = {}
        self._prev: dict[_DedupKey, float] = {}
        self._frag = FragmentReassembler(max_sets=max_fragment_sets)
        self._tcp = TcpReassembler(max_streams=max_tcp_streams)
        self._tick = -math.inf

    @property
    def stats(self) -> dict[str, int]:
        """Snapshot of all counters, including fragment and TCP reassembly."""
        merged = {"frames": self.frames, **self._counts, **self._frag.stats, **self._tcp.stats}
        merged["fragment_sets"] = len(self._frag)
        merged["tcp_streams"] = len(self._tcp)
        return merged

    def decode(self, ts: float, linktype: int, frame: bytes) -> tuple[Datagram, ...]:
        """``decode_flows`` with each flow split into addresses and ports."""
        return tuple(
            (proto, *split_flow(flow), payload) for proto, flow, payload in self.decode_flows(ts, linktype, frame)
        )

    def decode_flows(self, ts: float, linktype: int, frame: bytes) -> tuple[FlowDatagram, ...]:
        """Return the datagrams/stream bytes carried by ``frame`` (often none).

        The fast path handles the common frame completely when it is new and
        no de-duplication generation has to close; everything else goes
        through ``_deliver_udp``, which decides the same way."""
        if ts >= self._tick:
            return self._decode_with_housekeeping(ts, linktype, frame)
        self.frames += 1
        size = len(frame)
        if linktype == 1 and size >= _FAST_LEN:
            etype, vihl, tlen, ident, flags_proto, ulen = _FAST(frame, 0)
            link = 14
            if etype == 0x8100 and size >= _FAST_LEN + 4:
                etype, vihl, tlen, ident, flags_proto, ulen = _FAST(frame, 4)
                link = 18
            if (
                etype == 0x0800
                and vihl == 0x45
                and flags_proto & _UNFRAGMENTED_UDP_MASK == IPPROTO_UDP
                and 8 <= ulen <= tlen - 20
                and link + tlen <= size
            ):
                flow = frame[link + 12 : link + 24]
                payload = frame[link + 28 : link + 20 + ulen]
                key = (ident, flow, payload)
                cur = self._cur
                if (
                    ts < self._rotate_at
                    and len(cur) < _DEDUP_MAX_ENTRIES
                    and key not in cur
                    and key not in self._prev
                ):
                    cur[key] = ts
                    return ((17, flow, payload),)
                return self._deliver_udp(ts, key, (17, flow, payload))
        return self._decode_general(ts, linktype, frame)

    def decode_prepared(
        self, data: bytes, times: np.ndarray, links: list[int], idents: list[int], starts: np.ndarray,
        ends: list[int], frame_at: Callable[[int], bytes],
    ) -> tuple[list[bytes | None], list[bytes | None], dict[int, tuple[FlowDatagram, ...]], list[int]]:
        """Frames of one buffer whose common Ethernet/IPv4/UDP geometry was
        checked in bulk (recorder.batch): `starts[i]` is where frame i's flow
        begins in `data` (its payload 16 bytes later, up to `ends[i]`; its IP
        identification is `idents[i]`), or -1 for a frame that takes
        `decode_flows` (`frame_at(i)` gives its bytes, `links[i]` its link type).

        Returns, per frame, the flow and payload of a prepared frame that is
        not a duplicate (else None); the result of `decode_flows` for the
        others, by frame number; and the prepared frames that were
        duplicates.  The de-duplication is decode_flows's own with the same
        state and counters after every frame: a run of prepared frames within
        one generation whose keys are new and distinct is entered at once
        (what decode_flows's fast path would do frame by frame), any other
        frame on its own."""
        count = len(times)
        flows: list[bytes | None] = [None] * count
        payloads: list[bytes | None] = [None] * count
        general: dict[int, tuple[FlowDatagram, ...]] = {}
        dropped: list[int] = []
        when = times.tolist()
        start_at = starts.tolist()
        # Per frame, the next frame at or after it that is not prepared.
        unprepared = np.flatnonzero(starts < 0)
        upto_at = np.append(unprepared, count)[np.searchsorted(unprepared, np.arange(count))].tolist()
        i = 0
        while i < count:
            ts = when[i]
            if start_at[i] < 0 or not ts < self._tick:
                general[i] = self.decode_flows(ts, links[i], frame_at(i))
                i += 1
                continue
            limit = min(self._tick, self._rotate_at)
            stop = min(upto_at[i], i + max(_DEDUP_MAX_ENTRIES - len(self._cur), 0))
            late = np.flatnonzero(~(times[i:stop] < limit))
            if late.size:
                stop = i + int(late[0])
            if stop - i > 1:
                self._enter_run(data, when, idents, start_at, ends, i, stop, flows, payloads, dropped)
                i = stop
                continue
            self._enter_one(data, ts, idents[i], start_at[i], ends[i], i, flows, payloads, dropped)
            i += 1
        return flows, payloads, general, dropped

    def _enter_run(self, data: bytes, when: list[float], idents: list[int], start_at: list[int], ends: list[int],
                   begin: int, stop: int, flows: list[bytes | None], payloads: list[bytes | None],
                   dropped: list[int]) -> None:
        """decode_prepared's frames [begin, stop), all within the current
        generation, its time and its room: the keys that are new are entered
        at once, the others (a copy within the run, or of a key already kept)
        one by one in their place."""
        run_flows = [data[at : at + 12] for at in start_at[begin:stop]]
        run_payloads = [data[at + 16 : end] for at, end in zip(start_at[begin:stop], ends[begin:stop], strict=True)]
        keys = list(zip(idents[begin:stop], run_flows, run_payloads, strict=True))
        cur, prev = self._cur, self._prev
        if len(set(keys)) == len(keys) and cur.keys().isdisjoint(keys) and prev.keys().isdisjoint(keys):
            cur.update(zip(keys, when[begin:stop], strict=True))
            flows[begin:stop] = run_flows
            payloads[begin:stop] = run_payloads
            self.frames += stop - begin
            return
        seen: set[_DedupKey] = set()
        known = []
        for n, key in enumerate(keys):
            if key in seen or key in cur or key in prev:
                known.append(n)
            seen.add(key)
        done = 0
        for n in [*known, len(keys)]:
            if n > done:
                cur.update(zip(keys[done:n], when[begin + done : begin + n], strict=True))
                flows[begin + done : begin + n] = run_flows[done:n]
                payloads[begin + done : begin + n] = run_payloads[done:n]
                self.frames += n - done
            if n < len(keys):
                self.frames += 1
                if self._deliver_udp(when[begin + n], keys[n], (17, run_flows[n], run_payloads[n])):
                    flows[begin + n] = run_flows[n]
                    payloads[begin + n] = run_payloads[n]
                else:
                    dropped.append(begin + n)
            done = n + 1

    def _enter_one(self, data: bytes, ts: float, ident: int, at: int, end: int, i: int, flows: list[bytes | None],
                   payloads: list[bytes | None], dropped: list[int]) -> None:
        """One decode_prepared frame as decode_flows's fast path (or
        _deliver_udp) takes it."""
        self.frames += 1
        flow = data[at : at + 12]
        payload = data[at + 16 : end]
        key = (ident, flow, payload)
        cur = self._cur
        if ts < self._rotate_at and len(cur) < _DEDUP_MAX_ENTRIES and key not in cur and key not in self._prev:
            cur[key] = ts
        elif not self._deliver_udp(ts, key, (17, flow, payload)):
            dropped.append(i)
            return
        flows[i] = flow
        payloads[i] = payload

    def _decode_with_housekeeping(self, ts: float, linktype: int, frame: bytes) -> tuple[FlowDatagram, ...]:
        """Run periodic expiry, then decode.  The NaN tick makes the nested
        ``decode_flows`` skip this branch whatever ``ts`` is (even infinite)."""
        self._tick = math.nan
        released = tuple((6, join_flow(*key), data) for key, data in self._tcp.expire(ts))
        self._frag.expire(ts)
        result = self.decode_flows(ts, linktype, frame)
        self._tick = ts + _HOUSEKEEPING_INTERVAL
        return released + result if released else result

    def _rotate(self, ts: float) -> dict[_DedupKey, float]:
        """Start a new de-duplication generation; older than two windows is forgotten."""
        self._prev = self._cur if ts < self._rotate_at + self._window else {}
        self._cur = cur = {}
        self._rotate_at = ts + self._window
        return cur

    # -- general path ------------------------------------------------------------

    def _decode_general(self, ts: float, linktype: int, frame: bytes) -> tuple[FlowDatagram, ...]:
        n = len(frame)
        if linktype == LINKTYPE_ETHERNET:
            etype, off = _skip_vlan_tags(frame, 12)
        elif linktype == LINKTYPE_LINUX_SLL:
            etype, off = _skip_vlan_tags(frame, 14)
        elif linktype == LINKTYPE_LINUX_SLL2:
            if n < 20:
                return self._count("malformed")
            etype, off = _U16(frame, 0)[0], 20
            if etype in _VLAN_TPIDS:
                etype, off = _skip_vlan_tags(frame, 22)
        elif linktype == LINKTYPE_RAW or linktype in _DLT_RAW_ALIASES:
            if not n:
                return self._count("malformed")
            version = frame[0] >> 4
            etype = _ETHERTYPE_IPV4 if version == 4 else _ETHERTYPE_IPV6 if version == 6 else 0
            off = 0
        elif linktype == LINKTYPE_IPV4:
            etype, off = _ETHERTYPE_IPV4, 0
        elif linktype == LINKTYPE_IPV6:
            etype, off = _ETHERTYPE_IPV6, 0
        elif linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
            if n < 4:
                return self._count("malformed")
            family = int.from_bytes(frame[:4], "big")
            if linktype == LINKTYPE_NULL and family > 0xFFFF:
                family = int.from_bytes(frame[:4], "little")
            if family == _BSD_AF_INET:
                etype = _ETHERTYPE_IPV4
            else:
                etype = _ETHERTYPE_IPV6 if family in _BSD_AF_INET6 else 0
            off = 4
        else:
            return self._count("unsupported_linktype")
        if etype == _ETHERTYPE_IPV4:
            return self._ipv4(ts, frame, off)
        if etype == _ETHERTYPE_IPV6:
            return self._ipv6(ts, frame, off)
        if etype < 0:
            return self._count("malformed")
        return self._count("non_ip")

    def _count(self, what: str) -> tuple[FlowDatagram, ...]:
        self._counts[what] += 1
        return _NOTHING

    def _ipv4(self, ts: float, buf: bytes, off: int) -> tuple[FlowDatagram, ...]:
        n = len(buf)
        if n - off < 20:
            return self._count("malformed")
        vihl, tlen, ident, frag, proto, src, dst = _IPV4(buf, off)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return self._count("malformed")
        if tlen == 0:
            tlen = n - off  # segmentation offload on the capturing host leaves the length zero
        if tlen < ihl:
            return self._count("malformed")
        end = off + tlen
        if end > n:
            return self._count("truncated")
        start = off + ihl
        if frag & 0x3FFF:
            key = (src, dst, ident, proto)
            done = self._frag.feed(ts, key, proto, (frag & 0x1FFF) * 8, bool(frag & 0x2000), buf[start:end])
            if done is None:
                return _NOTHING
            proto, payload = done
            return self._transport(ts, proto, src, dst, ident, payload, 0, len(payload))
        return self._transport(ts, proto, src, dst, ident, buf, start, end)

    def _ipv6(self, ts: float, buf: bytes, off: int) -> tuple[FlowDatagram, ...]:
        n = len(buf)
        if n - off < 40:
            return self._count("malformed")
        vtf, plen, nh, src, dst = _IPV6(buf, off)
        if vtf >> 28 != 6:
            return self._count("malformed")
        pos = off + 40
        end = pos + plen if plen else n  # zero: jumbogram or segmentation offload
        if end > n:
            return self._count("truncated")
        reassembled = False
        ident = -1
        for _ in range(_MAX_IPV6_EXT_HEADERS):
            if nh == IPPROTO_UDP or nh == IPPROTO_TCP:
                return self._transport(ts, nh, src, dst, ident, buf, pos, end)
            if nh in _IPV6_GENERIC_EXT or nh == _IPV6_AH:
                if end - pos < 8:
                    return self._count("malformed")
                size = (buf[pos + 1] + 2) * 4 if nh == _IPV6_AH else (buf[pos + 1] + 1) * 8
                if pos + size > end:
                    return self._count("malformed")
                nh = buf[pos]
                pos += size
            elif nh == _IPV6_FRAGMENT:
                if end - pos < 8:
                    return self._count("malformed")
                nxt, offset_flags, ident = _IPV6_FRAG(buf, pos)
                pos += 8
                offset = offset_flags & 0xFFF8
                more = bool(offset_flags & 1)
                if offset or more:
                    if reassembled:
                        return self._count("malformed")
                    done = self._frag.feed(ts, (src, dst, ident), nxt, offset, more, buf[pos:end])
                    if done is None:
                        return _NOTHING
                    nxt, buf = done
                    pos, end = 0, len(buf)
                    reassembled = True
                nh = nxt
            else:
                return self._count("other_proto")
        return self._count("malformed")

    def _transport(
        self, ts: float, proto: int, src: bytes, dst: bytes, ident: int, buf: bytes, start: int, end: int
    ) -> tuple[FlowDatagram, ...]:
        if proto == IPPROTO_UDP:
            if end - start < 8:
                return self._count("malformed")
            sport, dport, ulen = _UDP(buf, start)
            if ulen < 8 or start + ulen > end:
                return self._count("malformed")
            payload = buf[start + 8 : start + ulen]
            flow = src + dst + buf[start : start + 4]
            return self._deliver_udp(ts, (ident, flow, payload), (17, flow, payload))
        if proto == IPPROTO_TCP:
            if end - start < 20:
                return self._count("malformed")
            sport, dport, seq, off_flags = _TCP(buf, start)
            doff = (off_flags >> 12) * 4
            if doff < 20 or start + doff > end:
                return self._count("malformed")
            self._counts["tcp_segments"] += 1
            data = self._tcp.feed(ts, src, sport, dst, dport, seq, off_flags & 0xFF, buf[start + doff : end])
            return ((6, src + dst + buf[start : start + 4], data),) if data else _NOTHING
        return self._count("other_proto")

    def _deliver_udp(self, ts: float, key: _DedupKey, dgram: FlowDatagram) -> tuple[FlowDatagram, ...]:
        """The datagram, unless it repeats one of the last window (see the class
        docstring).  A new datagram costs two membership tests and one insert."""
        window = self._window
        if window > 0:
            cur = self._cur
            if ts >= self._rotate_at or len(cur) >= _DEDUP_MAX_ENTRIES:
                cur = self._rotate(ts)
            if key in cur or key in self._prev:
                seen = cur.get(key)
                if seen is None:
                    seen = self._prev[key]
                if -window <= ts - seen <= window:
                    self._counts["duplicates"] += 1
                    return _NOTHING
            cur[key] = ts
        return (dgram,)


def split_flow(flow: bytes) -> tuple[bytes, int, bytes, int]:
    """``(src, sport, dst, dport)`` of a flow."""
    size = (len(flow) - 4) >> 1
    sport, dport = _PORTS.unpack_from(flow, 2 * size)
    return flow[:size], sport, flow[size : 2 * size], dport


def join_flow(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The flow of ``(src, sport, dst, dport)``; inverse of ``split_flow``."""
    return src + dst + _PORTS.pack(sport, dport)


def _skip_vlan_tags(frame: bytes, pos: int) -> tuple[int, int]:
    """Read the EtherType at ``pos``, stepping over any stack of VLAN tags.

    Returns ``(ethertype, payload offset)``, or ``(-1, 0)`` if the frame ends first.
    """
    n = len(frame)
    while pos + 2 <= n:
        etype = (frame[pos] << 8) | frame[pos + 1]
        if etype not in _VLAN_TPIDS:
            return etype, pos + 2
        pos += 4
    return -1, 0
