from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import g711
from recorder.interleave import EncodingChange, StereoInterleaver, UnsupportedEncoding
from wire.rtp import parse_rtp
from recorder.stream import AudioChunk, RtpStream
from tests.builders import rtp_packet
from tests.interop import capture, rtp_datagrams

ORIGIN = 2_000_000.0


def chunk(
    position: int, value: int, size: int = 160, encoding: str = "PCMU"
) -> AudioChunk:
    return AudioChunk(position, encoding, bytes([value]) * size)


def frames(data: bytes, width: int = 1) -> tuple[bytes, bytes]:
    """Split interleaved frames into the two channels."""
    if width == 1:
        return data[0::2], data[1::2]
    samples = np.frombuffer(data, dtype="<i2")
    return samples[0::2].tobytes(), samples[1::2].tobytes()


def test_two_channels_interleave_with_silence() -> None:
    il = StereoInterleaver("PCMU")
    out = il.place(0, chunk(0, 1))
    out += il.place(1, chunk(160, 2))
    out += il.flush()
    left, right = frames(out)
    assert left == b"\x01" * 160 + b"\xff" * 160
    assert right == b"\xff" * 160 + b"\x02" * 160
    assert il.committed == 320


def test_pcma_silence_and_commit() -> None:
    il = StereoInterleaver("PCMA")
    il.place(0, chunk(100, 7, 10, "PCMA"))
    out = il.commit(50)
    assert out == b"\xd5" * 100
    assert il.commit(50) == b""
    out = il.commit(120)
    assert frames(out) == (b"\xd5" * 50 + b"\x07" * 10 + b"\xd5" * 10, b"\xd5" * 70)


def test_commit_far_beyond_window_is_silence() -> None:
    il = StereoInterleaver("PCMU", window_samples=800)
    il.place(1, chunk(0, 3))
    out = il.commit(5000)
    left, right = frames(out)
    assert left == b"\xff" * 5000
    assert right == b"\x03" * 160 + b"\xff" * 4840
    assert il.committed == 5000
    assert il.place(1, chunk(4900, 3)) == b""
    assert il.stats["late_samples"] == 100


def test_late_chunk_is_trimmed_and_counted() -> None:
    il = StereoInterleaver("PCMU")
    il.place(0, chunk(0, 1))
    il.commit(200)
    il.place(1, chunk(100, 9, 160))  # 100 samples late
    il.place(1, chunk(-500, 9, 160))  # entirely late
    out = il.flush()
    assert frames(out)[1] == b"\x09" * 60
    assert il.stats["late_samples"] == 100 + 160
    assert il.stats["late_chunks"] == 2


def test_overlap_overwrites_and_is_counted() -> None:
    il = StereoInterleaver("PCMU")
    il.place(0, chunk(0, 1, 160))
    il.place(0, chunk(100, 2, 160))
    il.place(0, chunk(400, 3, 10))
    il.place(0, chunk(300, 4, 50))  # fills a gap: no overlap
    left, _ = frames(il.flush())
    assert (
        left
        == b"\x01" * 100
        + b"\x02" * 160
        + b"\xff" * 40
        + b"\x04" * 50
        + b"\xff" * 50
        + b"\x03" * 10
    )
    assert il.stats["overlap_samples"] == 60
    assert il.stats["overlaps"] == 1


def test_chunks_wrap_around_the_ring() -> None:
    il = StereoInterleaver("PCMU", window_samples=1000)
    out = b""
    for i in range(40):
        out += il.place(i % 2, chunk(i * 70, i, 70))
    out += il.flush()
    left, right = frames(out)
    assert len(out) == 2 * 40 * 70
    for i in range(40):
        mine, other = (left, right) if i % 2 == 0 else (right, left)
        assert mine[i * 70 : (i + 1) * 70] == bytes([i]) * 70
        assert other[i * 70 : (i + 1) * 70] == b"\xff" * 70


def test_chunk_longer_than_window() -> None:
    il = StereoInterleaver("PCMU", window_samples=100)
    data = bytes(range(250))
    out = il.place(0, AudioChunk(10, "PCMU", data)) + il.flush()
    left, right = frames(out)
    assert left == b"\xff" * 10 + data
    assert right == b"\xff" * 260


def test_encoding_change_then_l16() -> None:
    il = StereoInterleaver("PCMU")
    il.place(0, chunk(0, 0x10, 100))
    with pytest.raises(EncodingChange) as info:
        il.place(1, chunk(50, 0x20, 100, "PCMA"))
    assert info.value.encoding == "PCMA"
    assert il.encoding == "PCMU" and il.committed == 0
    il.to_l16()
    il.to_l16()  # idempotent
    assert il.encoding == "L16"
    il.place(1, chunk(50, 0x20, 100, "PCMA"))
    il.place(0, chunk(150, 0x30, 10, "PCMU"))
    left, right = frames(il.flush(), width=2)
    u = int(g711.ULAW_TO_PCM16[0x10]).to_bytes(2, "little", signed=True)
    u3 = int(g711.ULAW_TO_PCM16[0x30]).to_bytes(2, "little", signed=True)
    a = int(g711.ALAW_TO_PCM16[0x20]).to_bytes(2, "little", signed=True)
    assert left == u * 100 + bytes(2 * 50) + u3 * 10
    assert right == bytes(2 * 50) + a * 100 + bytes(2 * 10)


def test_l16_from_the_start() -> None:
    il = StereoInterleaver("L16", window_samples=64)
    out = b""
    for i in range(10):
        out += il.place(0, chunk(i * 20, 0x80 + i, 20, "PCMA"))
    out += il.flush()
    left, right = frames(out, width=2)
    assert np.array_equal(
        np.frombuffer(left, "<i2"),
        g711.ALAW_TO_PCM16[np.repeat(np.arange(0x80, 0x8A), 20)],
    )
    assert right == bytes(400)


def test_rejects_bad_input() -> None:
    il = StereoInterleaver("PCMU")
    with pytest.raises(UnsupportedEncoding):
        il.place(0, chunk(0, 1, encoding="G722"))
    with pytest.raises(UnsupportedEncoding):
        il.place(0, chunk(0, 1, encoding="PT97"))
    for channel in (2, -1):
        with pytest.raises(ValueError):
            il.place(channel, chunk(0, 1))
    with pytest.raises(ValueError):
        StereoInterleaver("G722")
    assert il.place(0, chunk(0, 1, 0)) == b""


def test_memory_is_bounded_by_the_window() -> None:
    il = StereoInterleaver("PCMU", window_samples=800)
    rng = random.Random(7)
    emitted = 0
    for i in range(5000):
        pos = i * 160 + rng.randint(-600, 600)
        emitted += len(il.place(rng.randint(0, 1), chunk(pos, 1)))
        # A window ahead of `committed`, half a window for lazy commits (`advance`).
        assert all(len(r) == 1200 for r in il._rings) and all(
            len(o) == 800 for o in il._occ
        )
        assert max(il._hi) - il.committed <= 800
        assert emitted == 2 * il.committed
    il.to_l16()
    assert all(len(r) == 2400 for r in il._rings)
    il.flush()
    assert il.committed == max(il._hi)


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=150),
    st.integers(0, 2**32 - 1),
    st.sampled_from([80, 160, 240]),
)
@settings(max_examples=150)
def test_reordering_within_window_gives_the_same_output(
    skips: list[int], seed: int, size: int
) -> None:
    window = 4000
    tolerance = window - window // 8 - size
    pos = 0
    positions = []
    for skip in skips:
        pos += skip * size
        positions.append(pos)
        positions.append(pos)  # same slot on the other channel
        pos += size
    items = [(i % 2, chunk(p, i % 251, size)) for i, p in enumerate(positions)]

    def output(order: list[tuple[int, AudioChunk]]) -> bytes:
        il = StereoInterleaver("PCMU", window_samples=window)
        out = b"".join(il.place(c, ch) for c, ch in order) + il.flush()
        assert il.stats["late_samples"] == 0 and il.stats["overlaps"] == 0
        return out

    rng = random.Random(seed)
    # Displace each chunk by a bounded amount of timeline: sort by a jittered key.
    max_jitter = tolerance // 2
    shuffled = sorted(
        items, key=lambda item: item[1].position + rng.randint(0, max_jitter)
    )
    assert output(shuffled) == output(items)


@given(st.sets(st.integers(1, 298), max_size=120), st.integers(0, 2**32 - 1))
@settings(max_examples=100)
def test_loss_becomes_silence_of_exactly_the_missing_length(
    missing: set[int], seed: int
) -> None:
    rng = random.Random(seed)
    streams = [RtpStream(ORIGIN, {0: ("PCMU", 8000)}) for _ in range(2)]
    il = StereoInterleaver("PCMU")
    arrivals = []
    for channel in (0, 1):
        for i in range(300):
            if channel == 0 and i in missing:
                continue
            value = 1 + (i % 200)  # never the silence code
            packet = rtp_packet(7 + i, 1000 + 160 * i, ssrc=55 + channel, payload=bytes([value]) * 160)
            jitter = rng.random() * 0.05 if i else 0.0  # the first packet anchors at 0
            arrivals.append((ORIGIN + 0.02 * i + jitter, channel, packet))
    arrivals.sort(key=lambda x: x[0])  # network jitter reorders up to 50 ms
    out = b""
    for when, channel, packet in arrivals:
        c = streams[channel].push(when, packet)
        assert c is not None
        out += il.place(channel, c)
    out += il.flush()
    left, right = frames(out)
    assert len(left) == 300 * 160
    assert streams[0].stats.lost == len(missing)
    for i in range(300):
        expected = b"\xff" * 160 if i in missing else bytes([1 + i % 200]) * 160
        assert left[i * 160 : (i + 1) * 160] == expected
        assert right[i * 160 : (i + 1) * 160] == bytes([1 + i % 200]) * 160


def test_comfort_noise_gaps_from_real_capture() -> None:
    """rtp-protocol.pcap: both parties use silence suppression; the recording
    must be silent exactly where they sent comfort noise and have the audio
    exactly where the timestamps put it."""
    rows = rtp_datagrams(capture("rtp-protocol.pcap"))
    origin = rows[0][0]
    channel_of = {6020: 0, 6040: 1}
    streams = [RtpStream(origin, {8: ("PCMA", 8000)}) for _ in range(2)]
    il = StereoInterleaver("PCMA")
    wav = b""
    expected: list[dict[int, bytes]] = [{}, {}]
    for when, port, data in rows:
        channel = channel_of[port]
        packet = parse_rtp(data)
        assert packet is not None
        c = streams[channel].push(when, packet)
        if c is not None:
            expected[channel][c.position] = c.payload
            wav += il.place(channel, c)
    wav += il.flush()
    channels = frames(wav)
    duration = rows[-1][0] - origin
    assert abs(len(channels[0]) / 8000 - duration) < 0.1
    for channel in (0, 1):
        audio = bytearray(b"\xd5" * len(channels[channel]))
        for position, payload in expected[channel].items():
            audio[position : position + len(payload)] = payload
        assert channels[channel] == bytes(audio)
        assert streams[channel].stats.resyncs == 0
    # The 3.46 s pause of the 6020 side is silence in the file.
    starts = sorted(expected[0])
    gap_start, gap_end = max(
        ((a + len(expected[0][a]), b) for a, b in pairwise(starts)),
        key=lambda g: g[1] - g[0],
    )
    assert gap_end - gap_start == 849445116 - (849415516 + 160)
    assert channels[0][gap_start:gap_end] == b"\xd5" * (gap_end - gap_start)


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("place"),
            st.integers(0, 1),
            st.integers(-20, 600),
            st.integers(0, 90),
            st.integers(0, 254),
        ),
        st.tuples(st.just("commit"), st.integers(0, 700)),
        st.tuples(st.just("l16")),
    ),
    max_size=60,
)


@given(operations, st.sampled_from(["PCMU", "PCMA"]), st.integers(8, 100))
@settings(max_examples=300)
def test_matches_a_reference_timeline(
    ops: list[tuple[Any, ...]], law: str, window: int
) -> None:
    """Against a dict-of-samples model of the documented rules: samples before
    `committed` are late, later chunks overwrite, what is left of a chunk is
    placed in pieces of at most `window`, each forcing a commit to
    min(end - window + window // 8, start) if it reaches past the ring, and
    unplaced samples are silence (0 once in L16)."""
    il = StereoInterleaver(law, window_samples=window)
    table = g711.table(law)
    model: list[dict[int, int]] = [{}, {}]  # pending sample -> decoded value
    final: list[list[int]] = [[], []]  # decoded values the file must hold
    state = {
        "committed": 0,
        "late": 0,
        "overlap": 0,
        "silence": int(table[g711.SILENCE_BYTE[law]]),
    }
    emitted = [b"", b""]  # before and after the switch to L16

    def advance(upto: int) -> None:
        for s in range(state["committed"], upto):
            for channel in (0, 1):
                final[channel].append(model[channel].pop(s, state["silence"]))
        state["committed"] = max(state["committed"], upto)

    for op in ops:
        mode = 1 if il.encoding == "L16" else 0
        if op[0] == "place":
            _, channel, pos, size, value = op
            emitted[mode] += il.place(
                channel, AudioChunk(pos, law, bytes([value]) * size)
            )
            first = pos
            if size and pos < state["committed"]:
                state["late"] += min(state["committed"], pos + size) - pos
                first = state["committed"]
            for start in range(first, pos + size, window):
                end = min(start + window, pos + size)
                if end > state["committed"] + window:
                    advance(min(end - window + window // 8, start))
                for s in range(start, end):
                    state["overlap"] += s in model[channel]
                    model[channel][s] = int(table[value])
        elif op[0] == "commit":
            emitted[mode] += il.commit(op[1])
            advance(op[1])
        else:
            il.to_l16()
            state["silence"] = 0
        assert il.committed == state["committed"]
    mode = 1 if il.encoding == "L16" else 0
    emitted[mode] += il.flush()
    advance(max((max(m) + 1 for m in model if m), default=0))
    assert il.committed == state["committed"]
    assert il.stats["late_samples"] == state["late"]
    assert il.stats["overlap_samples"] == state["overlap"]
    decoded = np.concatenate(
        [
            table[np.frombuffer(emitted[0], dtype=np.uint8)],
            np.frombuffer(emitted[1], dtype="<i2"),
        ]
    ).reshape(-1, 2)
    assert decoded[:, 0].tolist() == final[0]
    assert decoded[:, 1].tolist() == final[1]


def _lazy_and_eager(steps: list[tuple[str, int, int, int]], encoding: str = "PCMU") -> None:
    """The same steps on two interleavers, one committing with `advance`
    (lazily where it can) and one with `commit`: the bytes returned,
    concatenated, the counters, the window and the channels' ends agree
    after every step, and so does the file after a switch to L16."""
    lazy, eager = StereoInterleaver(encoding, window_samples=800), StereoInterleaver(encoding, window_samples=800)
    out_lazy, out_eager = bytearray(), bytearray()
    for kind, channel, position, size in steps:
        if kind == "place":
            data = bytes([1 + (position // 7) % 200]) * size
            out_lazy += lazy.place_samples(channel, position, encoding, data)
            out_eager += eager.place_samples(channel, position, encoding, data)
        elif kind == "commit":
            out_lazy += lazy.advance(position)
            out_eager += eager.commit(position)
        elif kind == "drain":
            out_lazy += lazy.drain()
        else:
            out_lazy += lazy.drain()
            lazy.to_l16()
            eager.to_l16()
            out_lazy = bytearray(g711.decode(encoding, bytes(out_lazy)))
            out_eager = bytearray(g711.decode(encoding, bytes(out_eager)))
            encoding = "L16"
        assert lazy._hi == eager._hi and lazy.committed == eager.committed and lazy._limit == eager._limit
        assert lazy.stats == eager.stats
        assert out_eager.startswith(out_lazy)
    out_lazy += lazy.flush()
    out_eager += eager.flush()
    assert out_lazy == out_eager


def test_lazy_commits_return_the_same_frames() -> None:
    """`advance` in the cases it takes lazily and those it cannot: in-order
    audio, a lagging channel, a commit past half a window of pending
    frames, marked occupancy (a gap, an overlap), a ring wrap, a far
    commit, a law switch with frames pending."""
    steps: list[tuple[str, int, int, int]] = []
    for i in range(40):
        steps += [("place", 0, i * 160, 160), ("place", 1, i * 160, 160)]
        if i % 5 == 4:
            steps.append(("commit", 0, i * 160 - 700, 0))
    steps += [("place", 0, 40 * 160 + 320, 160), ("commit", 0, 40 * 160 - 300, 0),  # a gap marks
              ("place", 1, 40 * 160 - 100, 160), ("commit", 0, 40 * 160 + 100, 0),  # an overlap
              ("commit", 0, 40 * 160 + 400, 0), ("place", 1, 50 * 160, 80), ("commit", 0, 60 * 160, 0),
              ("drain", 0, 0, 0), ("place", 0, 60 * 160, 160), ("commit", 0, 60 * 160 + 100, 0),
              ("place", 1, 60 * 160 + 100, 160), ("switch", 0, 0, 0), ("place", 1, 60 * 160 + 260, 320)]
    _lazy_and_eager(steps, "PCMU")
    _lazy_and_eager(steps, "PCMA")


@given(st.lists(st.tuples(st.sampled_from(["place", "place", "place", "commit", "drain"]), st.integers(0, 1),
                          st.integers(-200, 1400), st.sampled_from([80, 160, 400])), max_size=120))
@settings(max_examples=200)
def test_lazy_commits_agree_with_eager_ones_on_any_sequence(raw: list[tuple[str, int, int, int]]) -> None:
    """Random placements (in order, late, overlapping, ahead) and commits,
    positions moving forward on average."""
    steps = [(kind, channel, max(0, n * 60 + shift), size) for n, (kind, channel, shift, size) in enumerate(raw)]
    _lazy_and_eager(steps, "PCMU")
