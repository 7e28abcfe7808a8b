"""Sans-I/O TCP byte-stream reassembly, one direction at a time.

SIP over TCP is a byte stream; the SIP framer downstream needs those bytes in
order, exactly once.  A passive tap sees retransmissions, reordering, mirror-port
duplicates and, worse, segments it never saw at all.  This module restores the
order, drops bytes already delivered, and when a hole cannot be filled (the tap
lost the segment, so no retransmission will ever come) it skips the hole after
``gap_timeout`` seconds or once the per-stream buffer is full, and counts it.

Sequence numbers are unwrapped to unbounded integers relative to the stream, so
32-bit wrap-around needs no special case after the first comparison.

Bounds: ``max_streams`` directions (least recently used evicted first),
``max_buffer`` out-of-order bytes and ``MAX_SEGMENTS`` out-of-order segments per
direction, ``max_total_buffer`` out-of-order bytes over all directions.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

StreamKey = tuple[bytes, int, bytes, int]
"""``(src, sport, dst, dport)`` of one direction of a connection."""

FIN = 0x01
SYN = 0x02
RST = 0x04

MAX_SEGMENTS = 4096

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_RESYNC_DISTANCE = 1 << 24
"""A segment further than this from the expected sequence number cannot be a
retransmission or a reordering; it means a new connection on the same ports whose
SYN we missed, so the stream is picked up again at that segment."""

_STAT_KEYS = (
    "tcp_streams_opened",
    "tcp_duplicate_segments",
    "tcp_out_of_order",
    "tcp_gaps",
    "tcp_gap_bytes",
    "tcp_resyncs",
    "tcp_stream_evictions",
    "tcp_stream_expiries",
)


class _Stream:
    __slots__ = ("next", "isn", "last_ts", "ooo", "ooo_bytes", "gap_since", "fin", "closed")

    def __init__(self, next_seq: int, isn: int, ts: float) -> None:
        self.next = next_seq
        self.isn = isn
        self.last_ts = ts
        self.ooo: list[tuple[int, bytes]] = []
        self.ooo_bytes = 0
        self.gap_since = 0.0
        self.fin = -1
        self.closed = False


class TcpReassembler:
    """Per-direction reassembly; see the module docstring for the policy."""

    def __init__(
        self,
        *,
        max_streams: int = 4096,
        max_buffer: int = 256 * 1024,
        max_total_buffer: int = 32 << 20,
        gap_timeout: float = 3.0,
        idle_timeout: float = 900.0,
    ) -> None:
        self.max_streams = max_streams
        self.max_buffer = max_buffer
        self.max_total_buffer = max_total_buffer
        self.gap_timeout = gap_timeout
        self.idle_timeout = idle_timeout
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._gapped: set[StreamKey] = set()
        self._total_buffered = 0

    def __len__(self) -> int:
        return len(self._streams)

    def feed(
        self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int, payload: bytes
    ) -> bytes:
        """Take one segment; return the bytes it makes newly available in order."""
        key = (src, sport, dst, dport)
        streams = self._streams
        st = streams.get(key)
        if flags & RST:
            if st is not None:
                self._close(key, st)
            back = streams.get((dst, dport, src, sport))
            if back is not None:
                self._close((dst, dport, src, sport), back)
            return b""
        seq &= _MASK
        if flags & SYN:
            if st is None or st.closed or st.isn != seq:
                st = self._open(key, (seq + 1) & _MASK, seq, ts)
            else:
                streams.move_to_end(key)
            seq = (seq + 1) & _MASK
        elif st is None:
            if not payload:
                return b""
            st = self._open(key, seq, -1, ts)
        else:
            streams.move_to_end(key)
        st.last_ts = ts
        delta = ((seq - (st.next & _MASK) + _HALF) & _MASK) - _HALF
        if st.closed:
            if not payload:
                return b""
            if delta + len(payload) <= 0 and delta > -_RESYNC_DISTANCE:
                self.stats["tcp_duplicate_segments"] += 1
                return b""
            self.stats["tcp_resyncs"] += 1
            st = self._open(key, seq, -1, ts)
            delta = 0
        elif delta >= _RESYNC_DISTANCE or delta <= -_RESYNC_DISTANCE:
            if not payload:
                return b""
            self.stats["tcp_resyncs"] += 1
            st = self._open(key, seq, -1, ts)
            delta = 0
        pos = st.next + delta
        if flags & FIN:
            st.fin = pos + len(payload)
        if delta > 0:
            if payload:
                return self._buffer(key, st, pos, payload, ts)
            return b""
        if delta + len(payload) <= 0:
            if payload:
                self.stats["tcp_duplicate_segments"] += 1
            data = b""
        else:
            data = payload[-delta:] if delta else payload
            st.next += len(data)
            if st.ooo:
                data = self._drain(key, st, data)
        if 0 <= st.fin <= st.next:
            self._close(key, st)
        return data

    def expire(self, ts: float) -> list[tuple[StreamKey, bytes]]:
        """Skip holes that have waited ``gap_timeout`` and forget idle directions.

        Returns the bytes released by skipping holes, per direction.
        """
        released: list[tuple[StreamKey, bytes]] = []
        streams = self._streams
        for key in [k for k in self._gapped if ts - streams[k].gap_since >= self.gap_timeout]:
            st = streams[key]
            data = self._skip_gap(key, st, ts)
            if 0 <= st.fin <= st.next:
                self._close(key, st)
            if data:
                released.append((key, data))
        limit = ts - self.idle_timeout
        while streams:
            key, st = next(iter(streams.items()))
            if st.last_ts >= limit:
                break
            self._forget(key)
            self.stats["tcp_stream_expiries"] += 1
        return released

    def _open(self, key: StreamKey, next_seq: int, isn: int, ts: float) -> _Stream:
        streams = self._streams
        if key in streams:
            self._forget(key)
        while len(streams) >= self.max_streams:
            self._forget(next(iter(streams)))
            self.stats["tcp_stream_evictions"] += 1
        st = streams[key] = _Stream(next_seq, isn, ts)
        self.stats["tcp_streams_opened"] += 1
        return st

    def _buffer(self, key: StreamKey, st: _Stream, pos: int, payload: bytes, ts: float) -> bytes:
        self.stats["tcp_out_of_order"] += 1
        if not st.ooo:
            st.gap_since = ts
            self._gapped.add(key)
        heapq.heappush(st.ooo, (pos, payload))
        st.ooo_bytes += len(payload)
        self._total_buffered += len(payload)
        if (
            st.ooo_bytes > self.max_buffer
            or len(st.ooo) > MAX_SEGMENTS
            or self._total_buffered > self.max_total_buffer
        ):
            data = self._skip_gap(key, st, ts)
            if 0 <= st.fin <= st.next:
                self._close(key, st)
            return data
        return b""

    def _skip_gap(self, key: StreamKey, st: _Stream, ts: float) -> bytes:
        """Give up on the hole before the earliest buffered segment."""
        first = st.ooo[0][0]
        self.stats["tcp_gaps"] += 1
        self.stats["tcp_gap_bytes"] += first - st.next
        st.next = first
        data = self._drain(key, st, b"")
        if st.ooo:
            st.gap_since = ts
        return data

    def _drain(self, key: StreamKey, st: _Stream, data: bytes) -> bytes:
        """Append buffered segments that have become contiguous with ``data``."""
        parts = [data]
        ooo = st.ooo
        nxt = st.next
        released = 0
        while ooo and ooo[0][0] <= nxt:
            pos, payload = heapq.heappop(ooo)
            released += len(payload)
            end = pos + len(payload)
            if end > nxt:
                parts.append(payload[nxt - pos :])
                nxt = end
        st.next = nxt
        st.ooo_bytes -= released
        self._total_buffered -= released
        if not ooo:
            self._gapped.discard(key)
        return b"".join(parts)

    def _close(self, key: StreamKey, st: _Stream) -> None:
        """Free the buffers but keep the position so late retransmissions are recognised."""
        self._release(key, st)
        if st.fin >= 0:
            st.next = st.fin + 1
        st.fin = -1
        st.closed = True

    def _forget(self, key: StreamKey) -> None:
        self._release(key, self._streams.pop(key))

    def _release(self, key: StreamKey, st: _Stream) -> None:
        self._total_buffered -= st.ooo_bytes
        st.ooo = []
        st.ooo_bytes = 0
        self._gapped.discard(key)
