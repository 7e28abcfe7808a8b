"""Tests for recorder.ipfrag.FragmentReassembler."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.ipfrag import MAX_DATAGRAM, MAX_FRAGMENTS_PER_DATAGRAM, FragmentReassembler

KEY4 = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 4321, 17)
KEY6 = (b"\x20" + bytes(15), b"\x20" + bytes(14) + b"\x01", 0xDEADBEEF)


def split(data: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    """Cut ``data`` into ``(offset, more, chunk)`` fragments of ``size`` bytes (a multiple of 8)."""
    pieces = []
    for off in range(0, len(data), size):
        chunk = data[off : off + size]
        pieces.append((off, off + size < len(data), chunk))
    return pieces


def feed_all(
    reasm: FragmentReassembler, pieces: list[tuple[int, bool, bytes]], key: object = KEY4
) -> list[tuple[int, bytes]]:
    done = []
    for off, more, chunk in pieces:
        result = reasm.feed(0.0, key, 17, off, more, chunk)
        if result is not None:
            done.append(result)
    return done


PAYLOAD = bytes(range(256)) * 12


def test_in_order() -> None:
    reasm = FragmentReassembler()
    assert feed_all(reasm, split(PAYLOAD, 1480)) == [(17, PAYLOAD)]
    assert len(reasm) == 0
    assert reasm.stats["fragments"] == 3
    assert reasm.stats["reassembled"] == 1


def test_reverse_order() -> None:
    reasm = FragmentReassembler()
    assert feed_all(reasm, split(PAYLOAD, 512)[::-1]) == [(17, PAYLOAD)]


def test_exact_duplicate_fragments_are_harmless() -> None:
    pieces = split(PAYLOAD, 1024)
    reasm = FragmentReassembler()
    assert feed_all(reasm, [pieces[0], pieces[0], pieces[2], pieces[2], pieces[1]]) == [(17, PAYLOAD)]
    assert reasm.stats["fragment_conflicts"] == 0


def test_identical_overlap_with_different_fragmentation() -> None:
    reasm = FragmentReassembler()
    pieces = [(0, True, PAYLOAD[:1600]), (800, True, PAYLOAD[800:2400]), (2000, False, PAYLOAD[2000:])]
    assert feed_all(reasm, pieces) == [(17, PAYLOAD)]


def test_conflicting_overlap_discards_datagram() -> None:
    reasm = FragmentReassembler()
    forged = bytes(b ^ 0xFF for b in PAYLOAD[800:1608])
    pieces = [(0, True, PAYLOAD[:1600]), (800, True, forged), (1600, False, PAYLOAD[1600:])]
    assert feed_all(reasm, pieces) == []
    assert reasm.stats["fragment_conflicts"] == 1
    assert len(reasm) == 1  # the last fragment opened a new, never-completed set


def test_two_different_last_fragments_conflict() -> None:
    reasm = FragmentReassembler()
    assert reasm.feed(0, KEY4, 17, 1480, False, b"x" * 20) is None
    assert reasm.feed(0, KEY4, 17, 1480, False, b"x" * 30) is None
    assert reasm.stats["fragment_conflicts"] == 1
    assert len(reasm) == 0


def test_data_beyond_last_fragment_conflicts() -> None:
    reasm = FragmentReassembler()
    assert reasm.feed(0, KEY4, 17, 16, False, b"x" * 8) is None
    assert reasm.feed(0, KEY4, 17, 32, True, b"y" * 8) is None
    assert reasm.stats["fragment_conflicts"] == 1
    reasm.feed(0, KEY4, 17, 32, True, b"y" * 8)
    assert reasm.feed(0, KEY4, 17, 16, False, b"x" * 8) is None
    assert reasm.stats["fragment_conflicts"] == 2


def test_keys_are_independent() -> None:
    reasm = FragmentReassembler()
    a = split(b"A" * 3000, 1480)
    b = split(b"B" * 3000, 1480)
    other = (*KEY4[:2], KEY4[2] + 1, 17)
    out = []
    for pa, pb in zip(a, b):
        out += feed_all(reasm, [pa])
        out += feed_all(reasm, [pb], key=other)
    assert out == [(17, b"A" * 3000), (17, b"B" * 3000)]


def test_ipv6_protocol_comes_from_first_fragment() -> None:
    reasm = FragmentReassembler()
    pieces = split(PAYLOAD, 1232)
    assert reasm.feed(0, KEY6, 99, *pieces[2]) is None
    assert reasm.feed(0, KEY6, 60, *pieces[0]) is None
    assert reasm.feed(0, KEY6, 99, *pieces[1]) == (60, PAYLOAD)


def test_oversize_is_rejected() -> None:
    reasm = FragmentReassembler()
    assert reasm.feed(0, KEY4, 17, 0, True, bytes(1480)) is None
    assert reasm.feed(0, KEY4, 17, MAX_DATAGRAM - 8, False, bytes(16)) is None
    assert reasm.stats["fragment_oversize"] == 1
    assert len(reasm) == 0


def test_largest_legal_datagram() -> None:
    data = bytes(random.Random(1).randbytes(MAX_DATAGRAM))
    reasm = FragmentReassembler()
    assert feed_all(reasm, split(data, 8192)) == [(17, data)]


def test_timeout_by_passed_timestamps() -> None:
    reasm = FragmentReassembler(timeout=30.0)
    pieces = split(PAYLOAD, 1480)
    assert reasm.feed(100.0, KEY4, 17, *pieces[0]) is None
    assert reasm.feed(129.0, KEY4, 17, *pieces[1]) is None
    assert reasm.feed(131.0, KEY4, 17, *pieces[2]) is None
    assert reasm.stats["fragment_timeouts"] == 1
    assert len(reasm) == 1
    reasm.expire(200.0)
    assert len(reasm) == 0
    assert reasm.stats["fragment_timeouts"] == 2


def test_max_sets_evicts_oldest() -> None:
    reasm = FragmentReassembler(max_sets=3)
    for ident in range(5):
        reasm.feed(float(ident), (b"a", b"b", ident, 17), 17, 0, True, bytes(8))
    assert len(reasm) == 3
    assert reasm.stats["fragment_evictions"] == 2
    assert reasm.feed(9.0, (b"a", b"b", 0, 17), 17, 8, False, bytes(8)) is None
    assert reasm.feed(9.0, (b"a", b"b", 4, 17), 17, 8, False, bytes(8)) == (17, bytes(16))


def test_byte_budget_evicts_oldest() -> None:
    reasm = FragmentReassembler(max_bytes=100_000)
    for ident in range(4):
        reasm.feed(float(ident), (b"a", b"b", ident, 17), 17, 0, True, bytes(40_000))
    assert len(reasm) == 2
    assert reasm.stats["fragment_evictions"] == 2
    assert reasm._bytes == 80_000


def test_too_many_fragments() -> None:
    reasm = FragmentReassembler()
    for i in range(MAX_FRAGMENTS_PER_DATAGRAM + 1):
        assert reasm.feed(0, KEY4, 17, i * 8, True, bytes(8)) is None
    assert reasm.stats["fragment_too_many"] == 1
    assert len(reasm) == 0


def test_empty_fragments() -> None:
    reasm = FragmentReassembler()
    assert reasm.feed(0, KEY4, 17, 8, True, b"") is None
    assert reasm.feed(0, KEY4, 17, 0, True, b"a" * 8) is None
    assert reasm.feed(0, KEY4, 17, 8, False, b"b" * 3) == (17, b"a" * 8 + b"bbb")


@settings(max_examples=200)
@given(
    size=st.integers(min_value=9, max_value=9000),
    frag=st.integers(min_value=1, max_value=200).map(lambda n: n * 8),
    seed=st.integers(),
    dups=st.integers(min_value=0, max_value=5),
)
def test_any_order_with_duplicates_and_identical_overlaps(size: int, frag: int, seed: int, dups: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    frag = max(frag, (size // 400 + 1) * 8)  # stay well below MAX_FRAGMENTS_PER_DATAGRAM
    pieces = split(data, frag)
    for _ in range(dups):
        lo = rng.randrange(0, size // 8 + 1) * 8
        hi = min(size, lo + rng.randrange(8, 3000))
        if lo < hi:
            pieces.append((lo, hi < size, data[lo:hi]))
    rng.shuffle(pieces)
    reasm = FragmentReassembler()
    results = []
    for off, more, chunk in pieces:
        result = reasm.feed(1.0, KEY4, 17, off, more, chunk)
        if result is not None:
            results.append(result)
            break
    assert results == [(17, data)]
    assert reasm.stats["fragment_conflicts"] == 0


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=70000),
            st.booleans(),
            st.binary(max_size=64),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=60,
    )
)
def test_fuzz_bounded_and_never_raises(frags: list[tuple[int, bool, bytes, int]]) -> None:
    reasm = FragmentReassembler(max_sets=2, max_bytes=70000)
    for i, (off, more, chunk, ident) in enumerate(frags):
        result = reasm.feed(i * 0.5, (b"s", b"d", ident, 17), 17, off, more, chunk)
        if result is not None:
            assert len(result[1]) <= MAX_DATAGRAM
        assert len(reasm) <= 2
        assert reasm._bytes == sum(len(d.buf) for d in reasm._sets.values())
