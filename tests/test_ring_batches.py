"""Live capture through the batched media path (issue 13): a TPACKET_V3 ring
block as one FrameBatch (BlockReader.read_batch), fed to Recorder.feed_batch
by the daemon and by each capture worker, against the per-frame path the
same blocks took before (BlockReader.read, Recorder.feed_frames).

Generated calls with and without damage (bench/gen_calls.py: loss,
reordering, copies, SSRC changes, DTMF, RTCP, VLAN tags, both laws) are laid
out in ring blocks as the kernel writes them (tests/test_afpacket.make_block),
with the outer VLAN tag moved into the packet header as the kernel strips it;
the recordings, results, checkpoints and every counter must be equal.  Then
the worker's own path: the media and the SIP in two rings, merged by the
hold-back (callrec.capture_worker.Holdback) at cutoffs that cut blocks
anywhere, and a worker's split of a block between its calls and another
worker's.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from bench.gen_calls import write_pcap
from callrec.capture_worker import HOLD_SECONDS, Holdback, WorkerSink
from callrec.workers import MEDIA_BLOCK_TIMEOUT_MS, SIGNALLING_BLOCK_TIMEOUT_MS
from policy.decide import PolicyDecider
from policy.schema import Policy
from recorder.afpacket import TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID, BlockReader
from recorder.batch import FrameBatch
from recorder.capture_file import CaptureFile
from recorder.engine import Recorder
from tests.memory_sink import MemorySink
from tests.test_afpacket import MAC_OFFSET, make_block

BLOCK = 1 << 16
_VLANS = (0x8100, 0x88A8)

Packet = tuple[int, int, bytes, int, int, int, int]


def _packet(ts: float, frame: bytes) -> Packet:
    """A frame as the kernel hands it over: its outer VLAN tag (if any) in the header."""
    usec = round(ts * 1e6)
    sec, nsec = usec // 10**6, usec % 10**6 * 1000
    tpid = struct.unpack_from("!H", frame, 12)[0]
    if tpid in _VLANS:
        tci = struct.unpack_from("!H", frame, 14)[0]
        data = frame[:12] + frame[16:]
        return (sec, nsec, data, TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, tci, tpid, len(data))
    return (sec, nsec, frame, 0, 0, 0, len(frame))


def blocks(frames: list[tuple[float, int, bytes]], timeout: float = 3600.0) -> list[bytes]:
    """The frames in ring blocks, in order, each handed over when full or
    ``timeout`` seconds after its first frame (the ring's block timer)."""
    out: list[bytes] = []
    packets: list[Packet] = []
    used = 48
    first = 0.0
    for ts, _, frame in frames:
        step = (MAC_OFFSET + len(frame) + 7) & ~7
        if packets and (used + step > BLOCK or ts > first + timeout):
            out.append(bytes(make_block(packets, size=BLOCK)))
            packets, used = [], 48
        if not packets:
            first = ts
        packets.append(_packet(ts, frame))
        used += step
    if packets:
        out.append(bytes(make_block(packets, size=BLOCK)))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    folder = tmp_path_factory.mktemp("cr-live2-ring")
    out = {}
    for name, calls, seconds, impair in (("clean", 30, 6.0, None), ("damaged", 30, 8.0, 3)):
        path = folder / f"{name}.pcap"
        with path.open("wb") as f:
            write_pcap(f, calls, seconds, impair=impair)
        out[name] = blocks(list(CaptureFile(path)))
    return out


def _outcome(sink: MemorySink, recorder: Recorder) -> tuple[Any, ...]:
    recorder.finish()
    recordings = [(r.started, r.origin, r.encoding, r.rate, bytes(r.audio), r.side, r.checkpoints, r.conversions,
                   r.result) for r in sink.recordings]
    return recordings, sink.begun, sink.without_audio, recorder.counters()


def _per_frame(ring: list[bytes]) -> tuple[tuple[Any, ...], dict[str, int]]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(Policy()), sink)
    reader = BlockReader(BLOCK)
    for block in ring:
        out: list[tuple[float, int, bytes]] = []
        reader.read(block, 0, out)
        recorder.feed_frames(out)
    return _outcome(sink, recorder), reader.stats


def _assert_same(one: tuple[Any, ...], two: tuple[Any, ...]) -> None:
    assert one[3] == two[3], "counters differ"
    assert len(one[0]) == len(two[0])
    for a, b in zip(one[0], two[0], strict=True):
        assert a[4] == b[4], f"audio of {a[0].call_id} differs"
        assert a == b
    assert one == two


@pytest.mark.parametrize("name", ["clean", "damaged"])
def test_a_ring_block_at_a_time_records_what_frame_by_frame_does(generated: dict[str, list[bytes]],
                                                                   name: str) -> None:
    ring = generated[name]
    scalar, scalar_stats = _per_frame(ring)
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(Policy()), sink)
    reader = BlockReader(BLOCK)
    for block in ring:
        batch = reader.read_batch(block, 0)
        assert batch is not None
        recorder.feed_batch(batch)
    batched = _outcome(sink, recorder)
    assert reader.stats == scalar_stats and scalar_stats["frames"] > 15_000
    assert scalar[3]["rtp_packets"] > 15_000 and len(scalar[0]) == 30
    if name == "damaged":
        assert scalar_stats["vlan_restored"] > 0  # gen_calls tags some calls: the tag went into the header
    _assert_same(scalar, batched)


def _two_rings(frames: list[tuple[float, int, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The media and the SIP as the workers' two sockets take them (by port, as their filters do)."""
    def sip(frame: bytes) -> bool:
        at = 18 if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
        sport, dport = struct.unpack_from("!HH", frame, at + 20)
        return 5060 in (sport, dport)

    return (blocks([f for f in frames if not sip(f[2])], MEDIA_BLOCK_TIMEOUT_MS / 1000),
            blocks([f for f in frames if sip(f[2])], SIGNALLING_BLOCK_TIMEOUT_MS / 1000))


def test_the_worker_hold_back_merges_two_rings_into_capture_order(tmp_path: Path) -> None:
    """Blocks of both rings read in turn, released at cutoffs that fall inside
    blocks: every frame is fed once, in capture order, and the recordings are
    those of the same frames fed one by one."""
    path = tmp_path / "cr-live2-rings.pcap"
    with path.open("wb") as f:
        write_pcap(f, 20, 6.0, impair=5)
    frames = list(CaptureFile(path))
    media, sip = _two_rings(frames)
    reader = BlockReader(BLOCK)
    hold = Holdback(2)
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(Policy()), sink)
    order: list[tuple[float, int, bytes]] = []
    ready = []
    for source, ring, timeout in ((0, media, MEDIA_BLOCK_TIMEOUT_MS), (1, sip, SIGNALLING_BLOCK_TIMEOUT_MS)):
        for block in ring:
            batch = reader.read_batch(block, 0)
            assert batch is not None
            # Handed over when full (its last frame) or when its timer ran out.
            ready.append((min(float(batch.times[-1]) + 0.001, float(batch.times[0]) + timeout / 1000), source, batch))
    ready.sort(key=lambda item: item[0])
    for when, source, batch in ready:
        hold.add(source, batch)
        released = hold.release(when - HOLD_SECONDS)
        if released is not None:
            order.extend(released.frames())
            recorder.feed_batch(released)
    last = hold.release(float("inf"))
    assert last is not None and hold.held == 0
    order.extend(last.frames())
    recorder.feed_batch(last)
    times = [f[0] for f in order]
    assert len(order) == len(frames) and times == sorted(times)
    assert sorted(f[2] for f in order) == sorted(f[2] for f in frames)
    sink_one = MemorySink()
    one = Recorder(PolicyDecider(Policy()), sink_one)
    one.feed_frames(order)
    _assert_same(_outcome(sink_one, one), _outcome(sink, recorder))


def test_a_worker_splits_a_block_between_its_calls_and_another_workers() -> None:
    """The whole block judged at once: the frames of another worker's call
    (by either end, IPv4 plain or tagged, IPv6 by frame_endpoints) are
    forwarded as frames, the rest stay in the block's buffer, in order."""
    from tests.raw_frames import DOT1Q, eth, ipv4, ipv6, udp

    class Wire:
        def __init__(self) -> None:
            self.sent: list[tuple] = []

        def send(self, message: tuple) -> None:
            self.sent.append(message)

    wire = Wire()
    sink = WorkerSink(wire, 0, 3)  # type: ignore[arg-type]
    a4, b4 = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    a6 = bytes.fromhex("20010db8000000000000000000000001")
    sink.set_forward({(b4, 5002): 2, (a4, 7000): 1, (a6, 4000): 1})
    frames = [
        (1.0, 1, eth(0x0800, ipv4(17, udp(4000, 5002, b"to-two")))),  # by destination
        (1.1, 1, eth(0x0800, ipv4(17, udp(4000, 5004, b"mine")))),
        (1.2, 1, eth(0x0800, ipv4(17, udp(7000, 9000, b"from-one")))),  # by source
        (1.3, 1, eth(0x0800, ipv4(17, udp(4000, 5002, b"tagged")), [(DOT1Q, 5)])),
        (1.4, 1, eth(0x86DD, ipv6(17, udp(4000, 5002, b"six")))),  # ipv6 source a6:4000
        (1.5, 1, eth(0x0800, ipv4(17, udp(4002, 5006, b"mine too")))),
        (1.6, 1, eth(0x0800, ipv4(17, udp(4000, 5002, b"cut")))[:40]),  # short, last in the buffer
    ]
    kept = sink.split(FrameBatch.from_frames(frames))
    assert [f[2] for f in kept.frames()] == [frames[1][2], frames[5][2]]
    assert {m[1]: [f[0] for f in m[2]] for m in wire.sent} == {2: [1.0, 1.3, 1.6], 1: [1.2, 1.4]}
    assert sink.stats["frames_forwarded"] == 5


def test_a_block_read_from_the_mapping_outlives_it() -> None:
    """The adapter passes the mmap itself: the batch is a copy (the block goes back to the
    kernel at once), and no view of the mapping is left behind to stop it from closing."""
    import mmap

    from tests.test_afpacket import F1, F3, plain

    with mmap.mmap(-1, 2 * BLOCK) as ring:
        ring[BLOCK:] = make_block([plain(1, 0, F1), (2, 0, F3, TP_STATUS_VLAN_VALID, 5, 0, len(F3))], size=BLOCK)
        batch = BlockReader(BLOCK).read_batch(ring, BLOCK)
        ring[BLOCK:] = bytes(BLOCK)
    assert batch is not None and type(batch.data) is bytes and len(batch.data) < BLOCK
    assert [f[2] for f in batch.frames()] == [F1, F3[:12] + b"\x81\x00\x00\x05" + F3[12:]]
