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
import secrets
from collections.abc import Callable
from dataclasses import dataclass
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

_HASH_MUL = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class _Segment:
    """Prepared frames entered into a de-duplication generation at once
    (decode_prepared): their keys stay in the batch's buffer, found by
    hash and compared byte for byte only when a later key's hash matches."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    idents: np.ndarray
    times: np.ndarray
    hashes: np.ndarray

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
    A batch of prepared frames (``decode_prepared``) enters its new keys by a
    64-bit hash computed in bulk, the keys left in the batch's buffer; the bytes
    are compared only when a hash matches.
    ``dedup_window <= 0`` disables it.
    """

    __slots__ = (
        "frames",
        "_counts",
        "_window",
        "_rotate_at",
        "_cur",
        "_prev",
        "_cur_h",
        "_prev_h",
        "_cur_bulk",
        "_prev_bulk",
        "_cur_bulk_n",
        "_seed",
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
        # Generations that took frames in bulk (decode_prepared) hold them as
        # segments of the batch's buffer, and a set of every entry's
        # `_key_hash` (None: the generation holds tuple keys only).
        self._cur_h: set[int] | None = None
        self._prev_h: set[int] | None = None
        self._cur_bulk: list[_Segment] = []
        self._prev_bulk: list[_Segment] = []
        self._cur_bulk_n = 0
        self._seed = secrets.randbits(64)
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
                    and self._cur_h is None
                    and self._prev_h is None
                    and key not in cur
                    and key not in self._prev
                ):
                    cur[key] = ts
                    return ((17, flow, payload),)
                return self._deliver_udp(ts, key, (17, flow, payload))
        return self._decode_general(ts, linktype, frame)

    def decode_prepared(
        self, data: bytes, times: np.ndarray, links: list[int], idents: np.ndarray, starts: np.ndarray,
        ends: np.ndarray, frame_at: Callable[[int], bytes],
    ) -> tuple[np.ndarray, dict[int, tuple[FlowDatagram, ...]], list[int]]:
        """Frames of one buffer whose common Ethernet/IPv4/UDP geometry was
        checked in bulk (recorder.batch): `starts[i]` is where frame i's flow
        begins in `data` (its payload 16 bytes later, up to `ends[i]`; its IP
        identification is `idents[i]`), or -1 for a frame that takes
        `decode_flows` (`frame_at(i)` gives its bytes, `links[i]` its link type).

        Returns, per frame, whether it is a prepared frame that is not a
        duplicate (its flow and payload are the slices of `data` named
        above); the result of `decode_flows` for the others, by frame
        number; and the prepared frames that were duplicates.  The
        de-duplication is decode_flows's own with the same state and
        counters after every frame: a run of prepared frames within one
        generation is entered at once by the hashes of their keys, and a
        frame whose hash was seen (in the run or the generations) is
        checked on its own, byte for byte."""
        count = len(times)
        fresh = np.zeros(count, dtype=bool)
        general: dict[int, tuple[FlowDatagram, ...]] = {}
        dropped: list[int] = []
        prepared = np.flatnonzero(starts >= 0)
        hashes = np.zeros(count, dtype=np.uint64)
        if self._window > 0 and prepared.size:
            hashes[prepared] = self.key_hashes(np.frombuffer(data, dtype=np.uint8), starts[prepared], ends[prepared],
                                               idents[prepared])
        # The frames that are not prepared, and after the last one the end.
        unprepared = np.append(np.flatnonzero(starts < 0), count)
        i = 0
        while i < count:
            ts = times.item(i)
            at = starts.item(i)
            if at < 0 or not ts < self._tick:
                general[i] = self.decode_flows(ts, links[i], frame_at(i))
                i += 1
                continue
            limit = min(self._tick, self._rotate_at)
            upto = unprepared.item(np.searchsorted(unprepared, i))
            stop = min(upto, i + max(_DEDUP_MAX_ENTRIES - len(self._cur) - self._cur_bulk_n, 0))
            late = np.flatnonzero(~(times[i:stop] < limit))
            if late.size:
                stop = i + int(late[0])
            if stop > i:
                self._enter_run(_Segment(data, starts[i:stop], ends[i:stop], idents[i:stop], times[i:stop],
                                         hashes[i:stop]), i, fresh, dropped)
                i = stop
                continue
            key = (idents.item(i), data[at : at + 12], data[at + 16 : ends.item(i)])
            self.frames += 1
            if self._deliver_udp(ts, key, (17, key[1], key[2])):
                fresh[i] = True
            else:
                dropped.append(i)
            i += 1
        return fresh, general, dropped

    def _enter_run(self, run: _Segment, begin: int, fresh: np.ndarray, dropped: list[int]) -> None:
        """decode_prepared's frames from `begin`, all within the current
        generation, its time and its room.  A frame whose hash is new to the
        run and to both generations is a new key: those are entered at once
        as a segment of the buffer; the others (a copy, or a hash that
        matched by chance) go through _deliver_udp in their place, which
        compares bytes.  No frame after one of those can equal it (its hash
        would have been seen), so entering the new ones first changes no
        answer."""
        count = len(run.hashes)
        cur, prev = self._cur, self._prev
        if self._cur_h is None:
            self._cur_h = {self._key_hash(key) for key in cur}
        if self._prev_h is None and prev:
            self._prev_h = {self._key_hash(key) for key in prev}
        listed = run.hashes.tolist()
        cur_h, prev_h = self._cur_h, self._prev_h
        check = None
        if len(set(listed)) != count or not cur_h.isdisjoint(listed) or (prev_h is not None
                                                                          and not prev_h.isdisjoint(listed)):
            _, first, inverse = np.unique(run.hashes, return_index=True, return_inverse=True)
            check = first[inverse.reshape(-1)] != np.arange(count)
            check |= np.fromiter((h in cur_h or (prev_h is not None and h in prev_h) for h in listed), dtype=bool,
                                 count=count)
        new = np.flatnonzero(~check) if check is not None else None
        segment = run if new is None else _Segment(run.data, run.starts[new], run.ends[new], run.idents[new],
                                                   run.times[new], run.hashes[new])
        if len(segment.hashes):
            self._cur_bulk.append(segment)
            self._cur_bulk_n += len(segment.hashes)
            cur_h.update(listed if new is None else segment.hashes.tolist())
        self.frames += count
        if new is None:
            fresh[begin : begin + count] = True
            return
        fresh[begin + new] = True
        data = run.data
        for n in np.flatnonzero(check).tolist():
            at, end = int(run.starts[n]), int(run.ends[n])
            key = (int(run.idents[n]), data[at : at + 12], data[at + 16 : end])
            if self._deliver_udp(float(run.times[n]), key, (17, key[1], key[2])):
                fresh[begin + n] = True
            else:
                dropped.append(begin + n)

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
        if ts < self._rotate_at + self._window:
            self._prev, self._prev_h, self._prev_bulk = self._cur, self._cur_h, self._cur_bulk
        else:
            self._prev, self._prev_h, self._prev_bulk = {}, None, []
        self._cur = cur = {}
        self._cur_h, self._cur_bulk, self._cur_bulk_n = None, [], 0
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
            if ts >= self._rotate_at or len(cur) + self._cur_bulk_n >= _DEDUP_MAX_ENTRIES:
                cur = self._rotate(ts)
            if self._cur_h is None and self._prev_h is None:
                if key in cur or key in self._prev:
                    seen = cur.get(key)
                    if seen is None:
                        seen = self._prev[key]
                    if -window <= ts - seen <= window:
                        self._counts["duplicates"] += 1
                        return _NOTHING
                cur[key] = ts
                return (dgram,)
            digest = self._key_hash(key)
            seen = self._seen(cur, self._cur_h, self._cur_bulk, key, digest)
            if seen is None:
                seen = self._seen(self._prev, self._prev_h, self._prev_bulk, key, digest)
            if seen is not None and -window <= ts - seen <= window:
                self._counts["duplicates"] += 1
                return _NOTHING
            cur[key] = ts
            if self._cur_h is not None:
                self._cur_h.add(digest)
        return (dgram,)

    @staticmethod
    def _seen(entries: dict[_DedupKey, float], digests: set[int] | None, bulk: list[_Segment], key: _DedupKey,
              digest: int) -> float | None:
        """When a generation saw `key`, if it did: its tuple keys, then, if
        the key's hash is among the generation's, its segments byte for byte."""
        seen = entries.get(key)
        if seen is not None or digests is None or digest not in digests:
            return seen
        ident, flow, payload = key
        for segment in bulk:
            data = segment.data
            for n in np.flatnonzero(segment.hashes == np.uint64(digest)).tolist():
                at, end = int(segment.starts[n]), int(segment.ends[n])
                if (int(segment.idents[n]) == ident and data[at : at + 12] == flow
                        and data[at + 16 : end] == payload):
                    return float(segment.times[n])
        return None

    def _key_hash(self, key: _DedupKey) -> int:
        """`key_hashes` of one key: a frame the per-frame code de-duplicates
        while generations hold bulk entries."""
        ident, flow, payload = key
        row = flow[:12].ljust(12, b"\0") + ((ident & 0xFFFF) | (len(payload) & 0xFFFF) << 16).to_bytes(4, "little")
        row += payload[:16].ljust(16, b"\0")
        h = self._seed
        for at in range(0, 32, 8):
            h = ((h ^ int.from_bytes(row[at : at + 8], "little")) * _HASH_MUL) & _MASK64
            h ^= h >> 31
        return h ^ (h >> 29)

    def key_hashes(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, idents: np.ndarray) -> np.ndarray:
        """Per prepared frame (see decode_prepared), a 64-bit hash of its
        de-duplication key: the IP identification, the flow, the payload's
        length and its first 16 bytes, mixed with this decoder's random
        seed.  Equal keys hash equal; a match is always checked byte for
        byte, so a hash that leaves out most of the payload costs only
        time when two packets differ there alone."""
        count = len(starts)
        rows = np.zeros((count, 32), dtype=np.uint8)
        if count:
            # The flow, the UDP length and checksum (replaced: not part of
            # the key) and the payload's start, read in place; a frame too
            # near the buffer's end for that is read byte by byte.
            near = starts > len(data) - 32
            rows = np.lib.stride_tricks.sliding_window_view(data, 32)[np.where(near, 0, starts)]
            if near.any():
                rows[near] = np.take(data, starts[near][:, None] + np.arange(32), mode="clip")
            size = ends - starts - 16
            rows[:, 12:16] = ((idents & 0xFFFF) | ((size & 0xFFFF) << 16)).astype("<u4").view(np.uint8).reshape(-1, 4)
            rows[:, 16:32][np.arange(16) >= size[:, None]] = 0
        words = rows.view("<u8")
        h = np.full(count, self._seed, dtype=np.uint64)
        for column in range(4):
            h ^= words[:, column]
            h *= np.uint64(_HASH_MUL)
            h ^= h >> np.uint64(31)
        return h ^ (h >> np.uint64(29))


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
