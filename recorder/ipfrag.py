"""Sans-I/O IPv4/IPv6 fragment reassembly.

SIP over UDP with large SDP bodies (and any SIP over IPv6 past 1280 bytes) is
routinely fragmented, so a recorder that ignores fragments loses calls.

Overlap policy: a fragment may overlap data already held only if the overlapping
bytes are identical (mirror ports and re-fragmenting routers produce such copies).
Conflicting overlaps discard the whole datagram, because we cannot know which
version the receiver accepted and evidence must not be guessed (this also follows
RFC 5722 for IPv6).

Bounds: at most ``max_sets`` datagrams in progress and ``max_bytes`` buffered in
total (oldest evicted first), at most ``MAX_FRAGMENTS_PER_DATAGRAM`` fragments per
datagram, datagrams of at most ``MAX_DATAGRAM`` bytes, and an incomplete datagram
is abandoned ``timeout`` seconds (by the timestamps passed in) after its first
fragment.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

MAX_DATAGRAM = 65535
MAX_FRAGMENTS_PER_DATAGRAM = 512

_STAT_KEYS = (
    "fragments",
    "reassembled",
    "fragment_timeouts",
    "fragment_evictions",
    "fragment_conflicts",
    "fragment_oversize",
    "fragment_too_many",
)


class _Datagram:
    """Reassembly state: the bytes so far plus the sorted, disjoint covered ranges."""

    __slots__ = ("created", "buf", "covered", "total", "proto", "count")

    def __init__(self, created: float) -> None:
        self.created = created
        self.buf = bytearray()
        self.covered: list[tuple[int, int]] = []
        self.total = -1
        self.proto = -1
        self.count = 0


class FragmentReassembler:
    """Collects fragments per key and returns ``(proto, payload)`` once complete.

    ``key`` identifies the original datagram: ``(src, dst, ident, proto)`` for
    IPv4 and ``(src, dst, ident)`` for IPv6.  ``proto`` is the protocol of the
    reassembled payload; for IPv6 only the value carried by the offset-zero
    fragment counts (RFC 8200, section 4.5).
    """

    def __init__(self, *, max_sets: int = 1024, timeout: float = 30.0, max_bytes: int = 4 << 20) -> None:
        self.max_sets = max_sets
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._sets: OrderedDict[Hashable, _Datagram] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._sets)

    def feed(
        self, ts: float, key: Hashable, proto: int, offset: int, more: bool, data: bytes
    ) -> tuple[int, bytes] | None:
        """Add one fragment; ``offset`` is in bytes.  Returns the datagram when complete."""
        stats = self.stats
        stats["fragments"] += 1
        self.expire(ts)
        end = offset + len(data)
        sets = self._sets
        dgram = sets.get(key)
        if end > MAX_DATAGRAM:
            stats["fragment_oversize"] += 1
            if dgram is not None:
                self._drop(key)
            return None
        if dgram is None:
            while len(sets) >= self.max_sets:
                self._evict_oldest()
            dgram = sets[key] = _Datagram(ts)
        dgram.count += 1
        if dgram.count > MAX_FRAGMENTS_PER_DATAGRAM:
            stats["fragment_too_many"] += 1
            self._drop(key)
            return None
        if not self._accept(dgram, offset, end, more, data):
            stats["fragment_conflicts"] += 1
            self._drop(key)
            return None
        if offset == 0:
            dgram.proto = proto
        if data:
            self._store(dgram, offset, end, data)
            while self._bytes > self.max_bytes and len(sets) > 1:
                self._evict_oldest()
            if key not in sets:
                return None
        if dgram.total >= 0 and dgram.covered == [(0, dgram.total)]:
            del sets[key]
            self._bytes -= len(dgram.buf)
            stats["reassembled"] += 1
            return dgram.proto, bytes(dgram.buf)
        return None

    def expire(self, ts: float) -> None:
        """Abandon datagrams whose first fragment is older than the timeout."""
        sets = self._sets
        limit = ts - self.timeout
        while sets:
            key, dgram = next(iter(sets.items()))
            if dgram.created >= limit:
                break
            self._drop(key)
            self.stats["fragment_timeouts"] += 1

    def _accept(self, dgram: _Datagram, offset: int, end: int, more: bool, data: bytes) -> bool:
        """Check the fragment against what is known; False means a conflict."""
        covered = dgram.covered
        if not more:
            if dgram.total >= 0 and dgram.total != end:
                return False
            if covered and covered[-1][1] > end:
                return False
            dgram.total = end
        elif dgram.total >= 0 and end > dgram.total:
            return False
        buf = dgram.buf
        for start, stop in covered:
            if start >= end:
                break
            if stop <= offset:
                continue
            lo = max(start, offset)
            hi = min(stop, end)
            if buf[lo:hi] != data[lo - offset : hi - offset]:
                return False
        return True

    def _store(self, dgram: _Datagram, offset: int, end: int, data: bytes) -> None:
        buf = dgram.buf
        before = len(buf)
        if offset > before:
            buf.extend(bytes(offset - before))
        buf[offset:end] = data
        self._bytes += len(buf) - before
        merged: list[tuple[int, int]] = []
        lo, hi = offset, end
        placed = False
        for start, stop in dgram.covered:
            if stop < lo:
                merged.append((start, stop))
            elif start > hi:
                if not placed:
                    merged.append((lo, hi))
                    placed = True
                merged.append((start, stop))
            else:
                lo = min(lo, start)
                hi = max(hi, stop)
        if not placed:
            merged.append((lo, hi))
        dgram.covered = merged

    def _evict_oldest(self) -> None:
        key = next(iter(self._sets))
        self._drop(key)
        self.stats["fragment_evictions"] += 1

    def _drop(self, key: Hashable) -> None:
        dgram = self._sets.pop(key)
        self._bytes -= len(dgram.buf)
