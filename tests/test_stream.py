from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.rtp import RtpPacket, parse_rtp
from recorder.stream import MAX_DTMF_EVENTS, MAX_SSRCS, AudioChunk, DtmfEvent, RtpStream
from tests.builders import rtp_packet as pkt
from tests.interop import capture, rtp_datagrams

ORIGIN = 1_000_000.0
PT_MAP = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 101: ("telephone-event", 8000)}


def run(
    stream: RtpStream, items: Iterable[tuple[float, RtpPacket]]
) -> list[AudioChunk]:
    chunks = []
    for arrival, packet in items:
        chunk = stream.push(arrival, packet)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def regular(
    count: int,
    *,
    seq0: int = 1000,
    ts0: int = 5000,
    t0: float = 0.0,
    ptime: int = 20,
    pt: int = 0,
    ssrc: int = 0x1111,
) -> list[tuple[float, RtpPacket]]:
    step = 8 * ptime
    return [
        (
            ORIGIN + t0 + i * ptime / 1000,
            pkt(seq0 + i, ts0 + i * step, size=step, pt=pt, ssrc=ssrc),
        )
        for i in range(count)
    ]


def positions(chunks: list[AudioChunk]) -> list[int]:
    return [c.position for c in chunks]


def test_in_order_stream() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(50, t0=0.5))
    assert positions(chunks) == [4000 + 160 * i for i in range(50)]
    assert {c.encoding for c in chunks} == {"PCMU"}
    assert chunks[3].payload == bytes([1003 & 0xFF]) * 160
    stats = s.stats
    assert (stats.packets, stats.lost, stats.duplicates, stats.resyncs) == (50, 0, 0, 0)
    assert stats.ssrcs == [0x1111] and stats.encodings == ["PCMU"]
    assert (
        stats.first_arrival == ORIGIN + 0.5
        and stats.last_arrival == ORIGIN + 0.5 + 49 * 0.02
    )
    assert s.end == 4000 + 160 * 50


@pytest.mark.parametrize("ptime", [10, 20, 30])
def test_ptime(ptime: int) -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(100, ptime=ptime))
    step = 8 * ptime
    assert positions(chunks) == [step * i for i in range(100)]
    assert all(len(c.payload) == step for c in chunks)
    assert s.end == 100 * step


def test_sequence_wrap() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(200, seq0=65500))
    assert positions(chunks) == [160 * i for i in range(200)]
    stats = s.stats
    assert (stats.lost, stats.duplicates, stats.seq_jumps, stats.out_of_order) == (
        0,
        0,
        0,
        0,
    )


def test_timestamp_wrap() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(200, ts0=(1 << 32) - 160 * 37))
    assert positions(chunks) == [160 * i for i in range(200)]
    assert s.stats.resyncs == 0


def test_duplicates_are_dropped() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(30)
    doubled = [x for item in items for x in (item, item)]
    doubled += [items[5], items[0]]  # late duplicates, inside the window
    chunks = run(s, doubled)
    assert positions(chunks) == [160 * i for i in range(30)]
    assert s.stats.duplicates == 32
    assert s.stats.lost == 0


def test_loss_leaves_gaps_and_counts() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(100)
    kept = [item for i, item in enumerate(items) if i not in (10, 11, 50)]
    chunks = run(s, kept)
    assert positions(chunks) == [160 * i for i in range(100) if i not in (10, 11, 50)]
    assert s.stats.lost == 3


def test_reordered_packet_fills_its_gap() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(20)
    order = items[:5] + items[6:9] + [items[5]] + items[9:]
    chunks = run(s, order)
    assert sorted(positions(chunks)) == [160 * i for i in range(20)]
    assert chunks[8].position == 5 * 160
    stats = s.stats
    assert (stats.lost, stats.out_of_order, stats.duplicates) == (0, 1, 0)


def test_packet_before_the_first_one_counts_as_received() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(10)
    chunks = run(s, [items[1], items[0], *items[2:]])
    assert sorted(positions(chunks)) == [160 * i for i in range(10)]
    assert s.stats.lost == 0


def test_garbage_timestamp_jump_reanchors_to_wall_clock() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(100)
    jumped = [
        (a, pkt(p.sequence, p.timestamp + 123_456_789))
        for a, p in regular(100, seq0=1100, t0=2.0)
    ]
    chunks = run(s, items + jumped)
    assert positions(chunks) == [160 * i for i in range(200)]
    assert s.stats.resyncs == 1


def test_backward_timestamp_jump_never_overlaps() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = regular(100, ts0=10_000_000)
    back = [
        (a, pkt(p.sequence, p.timestamp - 5_000_000))
        for a, p in regular(100, seq0=1100, t0=2.0)
    ]
    chunks = run(s, items + back)
    assert positions(chunks) == [160 * i for i in range(200)]
    assert s.stats.resyncs == 1


def test_hold_with_stale_timestamps_uses_wall_clock_gap() -> None:
    # The sender stops for 30 s and resumes where its timestamps left off.
    s = RtpStream(ORIGIN, PT_MAP)
    first = regular(50)
    resumed = regular(50, seq0=1050, ts0=5000 + 50 * 160, t0=31.0)
    chunks = run(s, first + resumed)
    assert positions(chunks)[:50] == [160 * i for i in range(50)]
    assert positions(chunks)[50:] == [31 * 8000 + 160 * i for i in range(50)]
    assert s.stats.resyncs == 1


def test_silence_suppression_gap_follows_timestamps() -> None:
    # Marker bit after a timestamp jump that matches the wall-clock pause.
    s = RtpStream(ORIGIN, PT_MAP)
    first = regular(50)
    talk = [
        (a, pkt(p.sequence, p.timestamp, marker=i == 0))
        for i, (a, p) in enumerate(
            regular(50, seq0=1050, ts0=5000 + 8000 * 3 + 160 * 7, t0=3.0 + 0.14 + 0.003)
        )
    ]
    chunks = run(s, first + talk)
    assert positions(chunks)[50:] == [8000 * 3 + 160 * 7 + 160 * i for i in range(50)]
    assert s.stats.resyncs == 0 and s.stats.lost == 0


def test_comfort_noise_makes_no_audio() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    first = regular(10)
    cn = [
        (ORIGIN + 0.2 + 0.1 * i, pkt(1010 + i, 5000 + 1600 + 800 * i, pt=13, size=1))
        for i in range(5)
    ]
    talk = regular(10, seq0=1015, ts0=5000 + 1600 + 800 * 5, t0=0.2 + 0.5)
    chunks = run(s, first + cn + talk)
    assert positions(chunks) == [160 * i for i in range(10)] + [
        1600 + 4000 + 160 * i for i in range(10)
    ]
    assert s.stats.cn_packets == 5
    assert s.stats.lost == 0


def test_ssrc_change_continues_without_overlap() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    a = regular(50)
    # New SSRC starts 10 ms "early" relative to the end of the old one.
    b = regular(50, seq0=7, ts0=999_999, t0=50 * 0.02 - 0.01, ssrc=0x2222)
    chunks = run(s, a + b)
    assert positions(chunks) == [160 * i for i in range(100)]
    assert s.stats.ssrcs == [0x1111, 0x2222]
    assert s.stats.resyncs == 0


def test_ssrc_change_after_pause_starts_at_wall_clock() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(50) + regular(10, seq0=1, ts0=77, t0=5.0, ssrc=0x2222))
    assert positions(chunks)[50:] == [40_000 + 160 * i for i in range(10)]


def test_interleaved_ssrcs_keep_their_own_state() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    a = regular(20)
    b = regular(20, seq0=40000, ts0=3, ssrc=0x2222)
    mixed = [x for pair in zip(a, b, strict=True) for x in pair]
    run(s, mixed)
    stats = s.stats
    assert (stats.lost, stats.duplicates, stats.seq_jumps) == (0, 0, 0)


def test_restart_with_new_sequence_numbers() -> None:
    # RFC 3550 A.1: the first packet after a big jump is held to be stray, the
    # second consecutive one confirms a restart.
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, regular(20) + regular(20, seq0=30000, ts0=5000 + 20 * 160, t0=0.4))
    assert len(chunks) == 39
    assert positions(chunks)[20:] == [160 * i for i in range(21, 40)]
    stats = s.stats
    assert (stats.seq_jumps, stats.lost) == (1, 0)


def test_codec_change_and_unknown_payload_type() -> None:
    s = RtpStream(ORIGIN, {0: ("PCMU", 8000)})
    first = run(s, regular(5))
    s.set_payload_types({8: ("pcma", 8000), 96: ("G7221", 16000)})
    second = run(s, regular(5, seq0=1005, ts0=5000 + 800, t0=0.1, pt=8))
    third = run(s, [(ORIGIN + 0.2, pkt(1010, 5000 + 1600, pt=97))])
    assert {c.encoding for c in first} == {"PCMU"}
    assert {c.encoding for c in second} == {"PCMA"}
    assert positions(second) == [800 + 160 * i for i in range(5)]
    assert [(c.encoding, c.position) for c in third] == [("PT97", 1600)]
    assert s.stats.encodings == ["PCMU", "PCMA", "PT97"]


def test_static_payload_types_apply_without_sdp() -> None:
    s = RtpStream(ORIGIN, {})
    chunks = run(s, regular(2, pt=8) + regular(1, seq0=1002, ts0=5320, t0=0.04, pt=9))
    assert [c.encoding for c in chunks] == ["PCMA", "PCMA", "G722"]


def test_muxed_rtcp_is_ignored() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(
        s,
        regular(3) + [(ORIGIN + 0.06, pkt(7, 99, pt=72 + i, ssrc=5)) for i in range(5)],
    )
    assert len(chunks) == 3
    assert s.stats.rtcp_packets == 5 and s.stats.ssrcs == [0x1111]


def test_wideband_clock_scales_to_the_timeline() -> None:
    s = RtpStream(ORIGIN, {96: ("OPUS", 48000)})
    chunks = run(
        s, [(ORIGIN + i * 0.02, pkt(i, 960 * i, pt=96, size=60)) for i in range(10)]
    )
    assert positions(chunks) == [160 * i for i in range(10)]
    assert s.stats.resyncs == 0


def event_packets(
    *,
    seq0: int,
    ts: int,
    t0: float,
    digit: int,
    total: int = 1600,
    step: int = 400,
    ends: int = 3,
) -> list[tuple[float, RtpPacket]]:
    """An RFC 4733 event as senders emit it: marker on the first packet, updates
    every `step` units with the growing duration, `ends` end packets."""
    out = []
    seq = seq0
    durations = list(range(step, total, step))
    for i, units in enumerate(durations):
        body = bytes([digit, 10]) + units.to_bytes(2, "big")
        out.append(
            (
                ORIGIN + t0 + units / 8000,
                pkt(seq, ts, pt=101, marker=i == 0, payload=body),
            )
        )
        seq += 1
    for k in range(ends):
        body = bytes([digit, 0x80 | 10]) + total.to_bytes(2, "big")
        out.append(
            (ORIGIN + t0 + total / 8000 + 0.005 * k, pkt(seq, ts, pt=101, payload=body))
        )
        seq += 1
    return out


def test_dtmf_realistic_sequence() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    audio = regular(50)
    five = event_packets(seq0=1050, ts=5000 + 8000, t0=1.0, digit=5)
    hash_ = event_packets(
        seq0=1050 + len(five), ts=5000 + 8000 + 4000, t0=1.5, digit=11
    )
    chunks = run(s, audio + five + hash_)
    assert len(chunks) == 50
    assert s.dtmf == [DtmfEvent("5", 8000, 200, True), DtmfEvent("#", 12000, 200, True)]
    assert s.stats.dtmf_packets == len(five) + len(hash_)


def test_dtmf_without_audio_uses_wall_clock() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    run(s, event_packets(seq0=1, ts=123, t0=2.0, digit=1))
    assert s.dtmf == [DtmfEvent("1", 16000, 200, True)]


def test_dtmf_cut_off_and_retransmitted_and_straggling() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    one = event_packets(seq0=1, ts=1000, t0=0.0, digit=1, ends=0)  # end packets lost
    two = event_packets(seq0=10, ts=9000, t0=1.0, digit=2)
    straggler = [
        (ORIGIN + 1.5, pkt(30, 1000, pt=101, payload=bytes([1, 0x8A, 6, 0x40])))
    ]
    run(s, one + two + straggler)
    assert [(e.digit, e.ended) for e in s.dtmf] == [("1", False), ("2", True)]
    assert s.dtmf[0].duration_ms == 150


def test_dtmf_after_a_backward_timestamp_jump_is_kept() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    one = event_packets(seq0=1, ts=900_000, t0=0.0, digit=1)
    two = event_packets(seq0=20, ts=1000, t0=3.0, digit=2)  # sender restarted its clock
    late_end = [
        (ORIGIN + 3.5, pkt(40, 900_000, pt=101, payload=bytes([1, 0x8A, 6, 0x40])))
    ]
    run(s, one + two + late_end)
    assert [(e.digit, e.ended) for e in s.dtmf] == [("1", True), ("2", True)]
    assert s.dtmf[1].position == 3 * 8000


def test_dtmf_long_event_segments_merge() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    first = [
        (
            ORIGIN + u / 8000,
            pkt(
                i,
                0,
                pt=101,
                marker=i == 0,
                payload=bytes([0, 10]) + u.to_bytes(2, "big"),
            ),
        )
        for i, u in enumerate([8000 * k for k in range(1, 9)] + [0xFFFF])
    ]
    second = [
        (
            ORIGIN + (0xFFFF + u) / 8000,
            pkt(
                20 + i,
                0xFFFF,
                pt=101,
                payload=bytes([0, 0x8A if last else 10]) + u.to_bytes(2, "big"),
            ),
        )
        for i, (u, last) in enumerate([(8000, False), (16000, True)])
    ]
    run(s, first + second)
    assert s.dtmf == [DtmfEvent("0", 0, (0xFFFF + 16000) * 1000 // 8000, True)]


def test_malformed_event_is_counted() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    run(s, [(ORIGIN, pkt(1, 0, pt=101, payload=b"\x01"))])
    assert s.dtmf == [] and s.stats.malformed == 1


def test_dtmf_list_is_bounded() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    items = [
        (
            ORIGIN + i * 0.001,
            pkt(i, i * 10, pt=101, marker=True, payload=bytes([1, 0x8A, 0, 80])),
        )
        for i in range(MAX_DTMF_EVENTS + 10)
    ]
    run(s, items)
    assert len(s.dtmf) == MAX_DTMF_EVENTS
    assert s.stats.dtmf_dropped == 10


def test_ssrc_state_is_bounded() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    run(s, [(ORIGIN + i * 0.02, pkt(i, i, ssrc=i * 7919)) for i in range(1000)])
    assert len(s._sources) <= MAX_SSRCS
    stats = s.stats
    assert stats.ssrc_count == 1000 and len(stats.ssrcs) == 64


def test_flood_cannot_stretch_the_timeline() -> None:
    # 50 packets of 20 ms every millisecond, with garbage timestamps.
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, [(ORIGIN + i * 0.001, pkt(i, i * 7777777)) for i in range(5000)])
    assert s.end is not None and s.end <= 5 * 8000 + 8000 + 160
    assert max(c.position for c in chunks) <= 5 * 8000 + 8000
    assert len(chunks) < 5 * 50 + 60
    assert s.stats.overruns > 0


def test_fast_sender_clock_stays_near_wall_clock() -> None:
    # A sender whose clock runs 1 % fast for 5 minutes: some audio has to go,
    # but the channel stays aligned with the wall clock and never overlaps.
    s = RtpStream(ORIGIN, PT_MAP)
    last = -160
    dropped = []
    for i in range(15000):
        arrival = ORIGIN + i * 0.02 / 1.01
        chunk = s.push(arrival, pkt(i, 160 * i))
        if chunk is None:
            dropped.append(i)
        else:
            wall = round((arrival - ORIGIN) * 8000)
            assert wall <= chunk.position <= wall + 8000
            assert chunk.position >= last + 160
            last = chunk.position
    assert s.stats.overruns == len(dropped)
    # About 1 % of the packets must go: single ones, spread out.
    assert 90 <= len(dropped) <= 150
    assert all(b - a > 50 for a, b in pairwise(dropped))


def test_slow_sender_clock_gets_gaps_not_overlaps() -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, [(ORIGIN + i * 0.02 * 1.01, pkt(i, 160 * i)) for i in range(15000)])
    pos = positions(chunks)
    assert len(chunks) == 15000
    assert all(b - a >= 160 for a, b in pairwise(pos))
    assert (
        s.end is not None
        and abs(s.end - round(15000 * 0.02 * 1.01 * 8000)) <= 8000 + 160
    )


arrivals_and_packets = st.lists(
    st.tuples(
        st.floats(0, 0.5),
        st.integers(0, 127),
        st.booleans(),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([1, 2, 3]),
        st.integers(0, 320),
    ),
    max_size=200,
)


@given(arrivals_and_packets)
@settings(max_examples=200)
def test_fuzz_positions_stay_bounded(
    items: list[tuple[float, int, bool, int, int, int, int]],
) -> None:
    s = RtpStream(ORIGIN, PT_MAP)
    now = ORIGIN
    for gap, pt, marker, seq, ts, ssrc, size in items:
        now += gap
        chunk = s.push(now, RtpPacket(pt, marker, seq, ts, ssrc, bytes(size)))
        if chunk is not None:
            wall = round((now - ORIGIN) * 8000)
            assert wall - 8000 <= chunk.position <= wall + 8000
    stats = s.stats
    assert stats.lost >= 0
    assert stats.packets == len(items)


@given(st.sets(st.integers(1, 198), max_size=60), st.randoms(use_true_random=False))
def test_lost_is_exactly_the_missing_packets(
    missing: set[int], rnd: random.Random
) -> None:
    kept = [item for i, item in enumerate(regular(200)) if i not in missing]
    for i in range(1, len(kept) - 8, 8):  # reorder within blocks of 8
        block = kept[i : i + 8]
        rnd.shuffle(block)
        kept[i : i + 8] = block
    s = RtpStream(ORIGIN, PT_MAP)
    chunks = run(s, kept)
    assert s.stats.lost == len(missing)
    assert sorted(positions(chunks)) == [
        160 * i for i in range(200) if i not in missing
    ]
    assert s.stats.duplicates == 0


def test_dtmf_from_real_capture() -> None:
    rows = rtp_datagrams(capture("SIP_DTMF2.pcap"))
    packets = [(when, parse_rtp(data)) for when, _, data in rows]
    mine = [(when, p) for when, p in packets if p is not None and p.ssrc == 0x5711BF84]
    origin = mine[0][0]
    first_ts = mine[0][1].timestamp
    s = RtpStream(origin, {8: ("PCMA", 8000), 96: ("telephone-event", 8000)})
    chunks = run(s, mine)
    assert [e.digit for e in s.dtmf] == list("6789123")
    assert all(e.ended and e.duration_ms == 120 for e in s.dtmf)
    event_ts = sorted({p.timestamp for _, p in mine if p.payload_type == 96})
    assert [e.position for e in s.dtmf] == [ts - first_ts for ts in event_ts]
    assert all(len(c.payload) == 240 for c in chunks)
    assert s.stats.resyncs == 0 and s.stats.lost == 0


def test_loss_from_real_capture() -> None:
    rows = rtp_datagrams(capture("SIP_DTMF2.pcap"))
    packets = [(when, parse_rtp(data)) for when, _, data in rows]
    mine = [(when, p) for when, p in packets if p is not None and p.ssrc == 0x9A7B5382]
    s = RtpStream(mine[0][0], {8: ("PCMA", 8000)})
    chunks = run(s, mine)
    assert s.stats.lost == 2  # tshark -z rtp,streams agrees
    pos = positions(chunks)
    gaps = [b - a for a, b in pairwise(pos) if b - a != 240]
    assert gaps == [480, 480]  # two single 30 ms packets missing


def test_comfort_noise_from_real_capture() -> None:
    rows = rtp_datagrams(capture("rtp-protocol.pcap"))
    parsed = [(when, parse_rtp(data)) for when, port, data in rows if port == 6020]
    mine = [(when, p) for when, p in parsed if p is not None]
    assert len(mine) == len(parsed)
    s = RtpStream(mine[0][0], {8: ("PCMA", 8000)})
    chunks = run(s, mine)
    first_ts = mine[0][1].timestamp
    audio_ts = [p.timestamp for _, p in mine if p.payload_type == 8]
    assert positions(chunks) == [ts - first_ts for ts in audio_ts]
    assert s.stats.cn_packets == 8 and s.stats.resyncs == 0
