"""Tests for recorder.tcpstream.TcpReassembler, including real-capture cross-checks."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.capture_file import read_capture
from recorder.netdecode import PacketDecoder
from recorder.tcpstream import FIN, MAX_SEGMENTS, RST, SYN, TcpReassembler

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"
A = b"\x0a\x00\x00\x01"
B = b"\x0a\x00\x00\x02"
ACK = 0x10


def fwd(r: TcpReassembler, seq: int, data: bytes = b"", flags: int = ACK, ts: float = 0.0) -> bytes:
    return r.feed(ts, A, 5060, B, 40000, seq, flags, data)


def back(r: TcpReassembler, seq: int, data: bytes = b"", flags: int = ACK, ts: float = 0.0) -> bytes:
    return r.feed(ts, B, 40000, A, 5060, seq, flags, data)


def test_syn_then_in_order() -> None:
    r = TcpReassembler()
    assert fwd(r, 1000, flags=SYN) == b""
    assert fwd(r, 1001, b"INVITE ") == b"INVITE "
    assert fwd(r, 1008, b"sip:x") == b"sip:x"
    assert r.stats["tcp_streams_opened"] == 1


def test_out_of_order_is_held_back_then_released() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    assert fwd(r, 6, b"world") == b""
    assert fwd(r, 11, b"!") == b""
    assert fwd(r, 1, b"hello") == b"helloworld!"
    assert r.stats["tcp_out_of_order"] == 2
    assert r._total_buffered == 0


def test_retransmissions_and_partial_overlaps() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    assert fwd(r, 1, b"abcdef") == b"abcdef"
    assert fwd(r, 1, b"abcdef") == b""
    assert fwd(r, 4, b"defghi") == b"ghi"
    assert fwd(r, 12, b"lmn") == b""
    assert fwd(r, 10, b"jkl") == b"jklmn"
    assert fwd(r, 3, b"c") == b""
    assert r.stats["tcp_duplicate_segments"] == 2


def test_overlapping_out_of_order_segments() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    assert fwd(r, 5, b"efgh") == b""
    assert fwd(r, 3, b"cdefg") == b""
    assert fwd(r, 5, b"efgh") == b""
    assert fwd(r, 1, b"ab") == b"abcdefgh"


def test_sequence_wrap_around() -> None:
    r = TcpReassembler()
    isn = 0xFFFFFFF0
    fwd(r, isn, flags=SYN)
    first = bytes(range(20))
    assert fwd(r, isn + 1, first) == first
    assert fwd(r, (isn + 31) & 0xFFFFFFFF, b"later") == b""
    assert fwd(r, (isn + 21) & 0xFFFFFFFF, b"0123456789") == b"0123456789later"
    assert fwd(r, isn + 1, first) == b""


def test_syn_payload_and_retransmitted_syn() -> None:
    r = TcpReassembler()
    assert fwd(r, 500, b"fast open", flags=SYN) == b"fast open"
    assert fwd(r, 500, b"fast open", flags=SYN) == b""
    assert fwd(r, 510, b"!") == b"!"
    assert r.stats["tcp_streams_opened"] == 1


def test_new_syn_on_same_ports_starts_over() -> None:
    r = TcpReassembler()
    fwd(r, 100, flags=SYN)
    fwd(r, 101, b"old")
    assert fwd(r, 9_000_000, flags=SYN) == b""
    assert fwd(r, 9_000_001, b"new") == b"new"
    assert r.stats["tcp_streams_opened"] == 2


def test_midstream_pickup_and_pure_acks() -> None:
    r = TcpReassembler()
    assert fwd(r, 123456, b"") == b""
    assert len(r) == 0
    assert fwd(r, 123456, b"BYE sip:") == b"BYE sip:"
    assert fwd(r, 123464, b"a@b") == b"a@b"
    assert fwd(r, 123467) == b""
    assert len(r) == 1


def test_fin_closes_and_late_retransmission_is_dropped() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    assert fwd(r, 1, b"last words", flags=FIN | ACK) == b"last words"
    assert r._streams[(A, 5060, B, 40000)].closed
    assert fwd(r, 1, b"last words", flags=FIN | ACK) == b""
    assert fwd(r, 12) == b""
    assert r.stats["tcp_duplicate_segments"] == 1


def test_fin_before_a_hole_closes_when_the_hole_fills() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    assert fwd(r, 4, b"def", flags=FIN | ACK) == b""
    assert not r._streams[(A, 5060, B, 40000)].closed
    assert fwd(r, 1, b"abc") == b"abcdef"
    assert r._streams[(A, 5060, B, 40000)].closed


def test_new_connection_after_close_without_seeing_syn() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    fwd(r, 1, b"x", flags=FIN | ACK)
    assert fwd(r, 3_000_000_000, b"REGISTER") == b"REGISTER"
    assert r.stats["tcp_resyncs"] == 1


def test_rst_forgets_both_directions() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    back(r, 7000, flags=SYN | ACK)
    fwd(r, 10, b"pending")
    back(r, 7001, b"ok")
    assert r._total_buffered == 7
    assert fwd(r, 1, flags=RST) == b""
    assert r._total_buffered == 0
    assert r._streams[(A, 5060, B, 40000)].closed
    assert r._streams[(B, 40000, A, 5060)].closed
    assert back(r, 7001, b"ok") == b""


def test_far_away_sequence_number_resyncs() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    fwd(r, 1, b"a")
    assert fwd(r, 0x80000000) == b""
    assert r.stats["tcp_resyncs"] == 0
    assert fwd(r, 0x80000000, b"elsewhere") == b"elsewhere"
    assert fwd(r, 0x80000009, b"!") == b"!"
    assert r.stats["tcp_resyncs"] == 1


def test_buffer_limit_skips_the_hole() -> None:
    r = TcpReassembler(max_buffer=100)
    fwd(r, 0, flags=SYN)
    assert fwd(r, 51, b"x" * 60) == b""
    assert fwd(r, 111, b"y" * 50) == b"x" * 60 + b"y" * 50
    assert r.stats["tcp_gaps"] == 1
    assert r.stats["tcp_gap_bytes"] == 50
    assert fwd(r, 161, b"z") == b"z"


def test_segment_count_limit_skips_the_hole() -> None:
    r = TcpReassembler()
    fwd(r, 0, flags=SYN)
    for i in range(MAX_SEGMENTS):
        assert fwd(r, 10 + i, b"s") == b""
    assert fwd(r, 10 + MAX_SEGMENTS, b"s") == b"s" * (MAX_SEGMENTS + 1)
    assert r.stats["tcp_gaps"] == 1


def test_total_buffer_limit() -> None:
    r = TcpReassembler(max_total_buffer=1000)
    for port in range(2):
        r.feed(0, A, port, B, 1, 0, SYN, b"")
        assert r.feed(0, A, port, B, 1, 100, ACK, bytes(400)) == b""
    r.feed(0, A, 2, B, 1, 0, SYN, b"")
    assert r.feed(0, A, 2, B, 1, 100, ACK, bytes(400)) == bytes(400)
    assert r._total_buffered == 800
    assert r.stats["tcp_gaps"] == 1


def test_expire_releases_data_after_gap_timeout() -> None:
    r = TcpReassembler(gap_timeout=2.0)
    fwd(r, 0, flags=SYN, ts=10.0)
    assert fwd(r, 5, b"after hole", ts=10.5) == b""
    assert r.expire(12.0) == []
    assert r.expire(12.5) == [((A, 5060, B, 40000), b"after hole")]
    assert fwd(r, 1, b"lost", ts=13.0) == b""
    assert fwd(r, 15, b"next", ts=13.0) == b"next"


def test_expire_forgets_idle_streams() -> None:
    r = TcpReassembler(idle_timeout=60.0)
    fwd(r, 0, b"a", ts=0.0)
    back(r, 0, b"b", ts=50.0)
    r.expire(100.0)
    assert len(r) == 1
    r.expire(111.0)
    assert len(r) == 0
    assert r.stats["tcp_stream_expiries"] == 2


def test_lru_eviction_bounds_streams() -> None:
    r = TcpReassembler(max_streams=2)
    r.feed(0, A, 1, B, 9, 0, ACK, b"1")
    r.feed(0, A, 2, B, 9, 0, ACK, b"2")
    r.feed(0, A, 1, B, 9, 1, ACK, b"1")
    r.feed(0, A, 3, B, 9, 0, ACK, b"3")
    assert set(k[1] for k in r._streams) == {1, 3}
    assert r.stats["tcp_stream_evictions"] == 1


@settings(max_examples=200)
@given(
    size=st.integers(min_value=1, max_value=5000),
    seed=st.integers(),
    isn=st.integers(min_value=0, max_value=0xFFFFFFFF),
    reorder=st.integers(min_value=0, max_value=6),
    dup_ratio=st.floats(min_value=0, max_value=0.5),
)
def test_reordered_duplicated_segments_rebuild_the_stream(
    size: int, seed: int, isn: int, reorder: int, dup_ratio: float
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    segments = []
    pos = 0
    while pos < size:
        n = rng.randint(1, 700)
        segments.append(((isn + 1 + pos) & 0xFFFFFFFF, data[pos : pos + n]))
        pos += n
    for i in range(len(segments)):
        if rng.random() < dup_ratio:
            segments.append(segments[i])
    segments.sort(key=lambda s: ((s[0] - isn) & 0xFFFFFFFF) + rng.randint(0, reorder) * 700)
    r = TcpReassembler()
    out = [fwd(r, isn, flags=SYN)]
    out += [fwd(r, seq, seg) for seq, seg in segments]
    assert b"".join(out) == data
    assert r.stats["tcp_gaps"] == 0


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=0xFFFFFFFF),
            st.integers(min_value=0, max_value=0xFF),
            st.binary(max_size=300),
            st.booleans(),
            st.floats(min_value=0, max_value=10),
        ),
        max_size=80,
    )
)
def test_fuzz_never_raises_and_stays_bounded(segments: list[tuple[int, int, bytes, bool, float]]) -> None:
    r = TcpReassembler(max_streams=3, max_buffer=1000, max_total_buffer=2000, gap_timeout=1.0)
    ts = 0.0
    for seq, flags, payload, reverse, step in segments:
        ts += step
        out = back(r, seq, payload, flags, ts) if reverse else fwd(r, seq, payload, flags, ts)
        assert isinstance(out, bytes)
        r.expire(ts)
        assert len(r) <= 3
        assert 0 <= r._total_buffered <= 2000
        assert r._total_buffered == sum(s.ooo_bytes for s in r._streams.values())


# -- real captures: in-order bytes per direction equal tshark's "follow tcp" ----------------


def _captures() -> Path:
    if not CAPTURES.is_dir():
        pytest.fail(f"real captures missing: {CAPTURES} (CI must provide shared/captures beside the clone)")
    if shutil.which("tshark") is None:
        pytest.fail("tshark is required (apt package tshark)")
    return CAPTURES


def _tshark(*args: str | Path) -> str:
    return subprocess.run(["tshark", *map(str, args)], check=True, capture_output=True, text=True).stdout


def tshark_follow(path: Path) -> dict[tuple[str, str], bytes]:
    """Per direction ``("ip:port", "ip:port") -> bytes`` as tshark's follow,tcp,raw reports it."""
    result: dict[tuple[str, str], bytes] = {}
    numbers = _tshark("-r", path, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream").split()
    streams = sorted(set(numbers), key=int)
    for stream in streams:
        nodes: dict[int, str] = {}
        data = {0: bytearray(), 1: bytearray()}
        for line in _tshark("-r", path, "-q", "-z", f"follow,tcp,raw,{stream}").splitlines():
            if line.startswith("Node 0: ") or line.startswith("Node 1: "):
                nodes[int(line[5])] = line[8:]
            elif line.strip() and not line.startswith(("=", "Follow:", "Filter:")):
                data[1 if line.startswith("\t") else 0] += bytes.fromhex(line.strip())
        result[(nodes[0], nodes[1])] = bytes(data[0])
        result[(nodes[1], nodes[0])] = bytes(data[1])
    return result


def decoded_streams(frames: list[tuple[float, int, bytes]]) -> dict[tuple[str, str], bytes]:
    decoder = PacketDecoder()
    got: dict[tuple[str, str], bytes] = {}
    for ts, linktype, frame in frames:
        for proto, src, sport, dst, dport, payload in decoder.decode(ts, linktype, frame):
            if proto == 6:
                key = (f"{socket.inet_ntoa(src)}:{sport}", f"{socket.inet_ntoa(dst)}:{dport}")
                got[key] = got.get(key, b"") + payload
    return got


@pytest.mark.parametrize("name", ["sip-over-tcp.pcap", "aaa.pcap"])
def test_streams_match_tshark_follow(name: str) -> None:
    path = _captures() / name
    expected = tshark_follow(path)
    assert any(expected.values())
    got = decoded_streams(list(read_capture(path)))
    for key, data in expected.items():
        assert got.get(key, b"") == data, key
    assert set(k for k, v in got.items() if v) == set(k for k, v in expected.items() if v)


def test_sip_over_tcp_survives_reordering_and_duplication() -> None:
    path = _captures() / "sip-over-tcp.pcap"
    expected = tshark_follow(path)
    frames = list(read_capture(path))
    rng = random.Random(7)
    shuffled = list(frames)
    for i in range(3, len(shuffled) - 1, 2):
        if rng.random() < 0.5:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    shuffled += [f for f in frames[2:] if rng.random() < 0.3]
    got = decoded_streams(shuffled)
    for key, data in expected.items():
        assert got.get(key, b"") == data, key
