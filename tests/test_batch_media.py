"""The batched media path (recorder/batch.py) against the per-frame one.

The same captures (every public one, and generated calls with and without
the damage networks and senders do: loss, reordering, copies, SSRC changes,
jumps, DTMF, RTCP, VLAN tags, both laws) are fed both ways, and everything
the recorder hands over must be equal: the recordings' audio, side packets,
results and checkpoints through a memory sink, every counter, and through
the real store the index rows, the decrypted audio and side files."""
from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.gen_calls import write_pcap
from callrec.replay import replay
from policy.decide import PolicyDecider
from policy.schema import Policy
from recorder.batch import FrameBatch
from recorder.capture_file import CaptureFile
from recorder.engine import Recorder
from storage.audiofile import side_bytes, wav_bytes
from storage.index import CallIndex
from storage.keys import KEY_SIZE, MasterKey
from storage.recordings import RecordingStore
from tests.interop import CAPTURE_NAMES, capture
from tests.memory_sink import MemorySink
from wire.pcap import CaptureFormatError

KEY = MasterKey(bytes(range(KEY_SIZE)))
ROW_NAMES = ("id", "audio_path", "side_files", "seal_mac")
"""Columns that name the recording (a random id, which the seal covers too)
rather than describe it; the side files are compared by their contents."""


def _generated(tmp_path: Path, name: str, calls: int, seconds: float, impair: int | None) -> Path:
    path = tmp_path / name
    with path.open("wb") as out:
        write_pcap(out, calls, seconds, impair=impair)
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cr-fast-gen")
    return {
        "clean": _generated(folder, "clean.pcap", 40, 6.0, None),
        "damaged-1": _generated(folder, "damaged1.pcap", 40, 8.0, 1),
        "damaged-2": _generated(folder, "damaged2.pcap", 25, 12.0, 2),
    }


def _memory_run(paths: list[Path], batched: bool, chunk: int | None = None) -> tuple[Any, ...]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(Policy()), sink)
    for path in paths:
        cap = CaptureFile(path)
        try:
            if batched:
                for batch in cap.frame_batches(*(() if chunk is None else (chunk,))):
                    recorder.feed_batch(batch)
            else:
                for frames in cap.batches():
                    recorder.feed_frames(frames)
        except CaptureFormatError:
            pass
    recorder.finish()
    recordings = [(r.started, r.origin, r.encoding, r.rate, bytes(r.audio), r.side, r.checkpoints, r.conversions,
                   r.result) for r in sink.recordings]
    return recordings, sink.begun, sink.without_audio, recorder.counters()


def _assert_same(paths: list[Path], chunk: int | None = None) -> None:
    scalar = _memory_run(paths, batched=False)
    batched = _memory_run(paths, batched=True, chunk=chunk)
    assert scalar[3] == batched[3], "counters differ"
    assert len(scalar[0]) == len(batched[0])
    for one, other in zip(scalar[0], batched[0], strict=True):
        assert one[4] == other[4], f"audio of {one[0].call_id} differs"
        assert one == other
    assert scalar == batched


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_public_capture_both_ways(name: str) -> None:
    _assert_same([capture(name)])


@pytest.mark.parametrize("name", ["clean", "damaged-1", "damaged-2"])
def test_generated_calls_both_ways(generated: dict[str, Path], name: str) -> None:
    path = generated[name]
    assert _memory_run([path], batched=True)[3]["rtp_packets"] > 10_000
    _assert_same([path])


def test_small_chunks_and_every_capture_in_one_run(generated: dict[str, Path]) -> None:
    """Batches cut anywhere (records across chunk ends, ticks inside and
    between batches), and one recorder across several files."""
    _assert_same([generated["damaged-1"], *(capture(n) for n in CAPTURE_NAMES)], chunk=7001)


def test_clock_jumps_both_ways(tmp_path: Path, generated: dict[str, Path]) -> None:
    """Frames off the capture clock (a step forward, strays back) inside a
    batch: from there the per-frame path holds and judges them."""
    frames = list(CaptureFile(generated["damaged-2"]))
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for n, (ts, _, frame) in enumerate(frames):
        if n % 5000 == 1234:
            ts -= 30.0  # a stray
        elif n > len(frames) // 2:
            ts += 3600.0  # the clock stepped
        usec = round(ts * 1e6)
        out += struct.pack("<IIII", usec // 10**6, usec % 10**6, len(frame), len(frame)) + frame
    path = tmp_path / "cr-fast-jumps.pcap"
    path.write_bytes(out)
    result = _memory_run([path], batched=True)
    assert result[3]["clock_steps"] + result[3]["clock_strays"] > 0
    _assert_same([path])


def test_damaged_file_stops_the_same_way(tmp_path: Path, generated: dict[str, Path]) -> None:
    """An absurd record length: the frames before it are kept, the same error."""
    raw = bytearray(generated["clean"].read_bytes())
    at = 24
    for _ in range(3000):
        at += 16 + struct.unpack_from("<I", raw, at + 8)[0]
    struct.pack_into("<I", raw, at + 8, 1 << 30)
    path = tmp_path / "cr-fast-absurd.pcap"
    path.write_bytes(bytes(raw))
    errors = []
    for batched in (False, True):
        cap = CaptureFile(path)
        with pytest.raises(CaptureFormatError) as caught:
            for _ in (cap.frame_batches() if batched else cap.batches()):
                pass
        errors.append((str(caught.value), caught.value.offset, cap.decoder.stats["records"]))
    assert errors[0] == errors[1]
    _assert_same([path])


def test_frame_batch_from_frames() -> None:
    """What live capture hands over: frames of a ring block as one batch."""
    frames = list(CaptureFile(capture("sip-rtp-g711.pcap")))
    batch = FrameBatch.from_frames(frames)
    assert list(batch.frames()) == frames


def _store_run(tmp_path: Path, paths: list[Path], batched: bool) -> tuple[list[dict], list[bytes], list[bytes]]:
    data = tmp_path / ("cr-fast-batched" if batched else "cr-fast-scalar")
    data.mkdir()
    index = CallIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), KEY)
    recorder = Recorder(PolicyDecider(Policy()), store)
    assert replay(recorder, paths, batched=batched) == 0
    store.close()
    index.close()
    db = sqlite3.connect(data / "index.sqlite3")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY started_at, sip_call_id")]
    db.close()
    audio = [b"".join(wav_bytes(data / row["audio_path"], KEY, row["id"])[1]) for row in rows if row["audio_path"]]
    side = []
    for row in rows:
        for entry in _side_entries(row):
            side.append(b"".join(side_bytes(data / entry["path"], KEY, row["id"])))
    return [{k: v for k, v in row.items() if k not in ROW_NAMES} for row in rows], audio, side


def _side_entries(row: dict) -> list[dict]:
    value = row.get("side_files")
    return json.loads(value) if value else []


def test_store_rows_audio_and_side_files_both_ways(tmp_path: Path, generated: dict[str, Path]) -> None:
    """Through `callrec replay`'s own function and the real store: the index
    rows (but the random id), the decrypted audio and side files."""
    paths = [generated["damaged-1"], capture("sip-rtp-g722.pcap"), capture("SIP_DTMF2.pcap")]
    scalar = _store_run(tmp_path, paths, batched=False)
    batched = _store_run(tmp_path, paths, batched=True)
    assert len(scalar[0]) > 40 and scalar[2]
    assert scalar == batched


def _rewritten(frames: list, big: bool, nano: bool) -> bytes:
    """The frames as a classic pcap in the given byte order and resolution."""
    order = ">" if big else "<"
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for n, (ts, _, frame) in enumerate(frames):
        scale = 10**9 if nano else 10**6
        ticks = round(ts * scale)
        wire = len(frame) + (n % 7 == 0)  # some records cut short by the snap length
        out += struct.pack(order + "IIII", ticks // scale, ticks % scale, len(frame), wire) + frame
    return bytes(out)


@pytest.mark.parametrize(("big", "nano"), [(False, False), (True, False), (False, True), (True, True)])
def test_frame_batches_read_as_the_decoder_does(tmp_path: Path, generated: dict[str, Path], big: bool,
                                                nano: bool) -> None:
    """Records found in bulk are the decoder's records: times, link types,
    bytes and counters, in either byte order and resolution, cut into
    chunks anywhere; pcapng goes through the decoder."""
    frames = list(CaptureFile(generated["damaged-1"]))[:20000]
    path = tmp_path / "cr-fast-order.pcap"
    path.write_bytes(_rewritten(frames, big, nano))
    for source in (path, capture("b2bua-asterisk.pcapng")):
        for chunk in (4099, 1 << 20):
            reference = CaptureFile(source)
            expected = list(reference)
            bulk = CaptureFile(source)
            got = [frame for batch in bulk.frame_batches(chunk) for frame in batch.frames()]
            assert got == expected
            assert bulk.decoder.stats["records"] == reference.decoder.stats["records"]
            assert bulk.decoder.stats["short_records"] == reference.decoder.stats["short_records"]


def test_truncated_capture_stops_the_same_way(tmp_path: Path, generated: dict[str, Path]) -> None:
    raw = generated["clean"].read_bytes()
    path = tmp_path / "cr-fast-cut.pcap"
    path.write_bytes(raw[:-100])
    errors = []
    for batched in (False, True):
        cap = CaptureFile(path)
        count = 0
        with pytest.raises(CaptureFormatError) as caught:
            for item in (cap.frame_batches() if batched else cap.batches()):
                count += len(item)
        errors.append((str(caught.value), caught.value.offset, count))
    assert errors[0] == errors[1]


def test_hash_matches_are_compared_byte_for_byte(tmp_path: Path, generated: dict[str, Path]) -> None:
    """The batched de-duplication finds a run's keys by a hash of their
    start: a twin that differs only at its end (same IP identification,
    flow, length and RTP header) is a new packet, an exact copy a duplicate,
    both ways alike."""
    frames = list(CaptureFile(generated["clean"]))
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def record(ts: float, frame: bytes) -> None:
        usec = round(ts * 1e6)
        out.extend(struct.pack("<IIII", usec // 10**6, usec % 10**6, len(frame), len(frame)) + frame)

    for n, (ts, _, frame) in enumerate(frames):
        record(ts, frame)
        if len(frame) > 100 and n % 7 == 3:
            record(ts, frame[:-1] + bytes([frame[-1] ^ 0x55]))  # a twin: new
        elif len(frame) > 100 and n % 7 == 5:
            record(ts + 0.001, frame)  # a mirror copy: a duplicate
    path = tmp_path / "cr-fast-twins.pcap"
    path.write_bytes(bytes(out))
    counters = _memory_run([path], batched=True)[3]
    assert counters["duplicates"] > 1000
    _assert_same([path])


def test_sequence_and_timestamp_wrap_inside_a_batch(tmp_path: Path, generated: dict[str, Path]) -> None:
    """Every stream's RTP sequence number passes 65535 and its timestamp
    2**32 a few seconds in, inside one batch: the bulk checks (sequence
    modulo 2**16, timestamp steps within 2**31) take the frames across the
    wrap as the per-frame path does, to the byte."""
    frames = list(CaptureFile(generated["clean"]))
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    rtp = 0
    for ts, _, frame in frames:
        frame = bytearray(frame)
        ports = struct.unpack_from("!HH", frame, 34)
        if len(frame) > 54 and 5060 not in ports:
            # The generator's calls number one direction's packets from 0,
            # the other's from 1000: both wrap 2 to 3 s in.
            seq, stamp = struct.unpack_from("!HI", frame, 44)
            shift = 65536 - 100 if ports[0] < 40000 else 65536 - 1150
            struct.pack_into("!HI", frame, 44, (seq + shift) & 0xFFFF, (stamp + (1 << 32) - 16000) & 0xFFFFFFFF)
            rtp += 1
        usec = round(ts * 1e6)
        out += struct.pack("<IIII", usec // 10**6, usec % 10**6, len(frame), len(frame)) + frame
    path = tmp_path / "cr-fast-wrap.pcap"
    path.write_bytes(bytes(out))
    scalar = _memory_run([path], batched=False)
    assert rtp > 10_000 and scalar[3]["rtp_packets"] == rtp
    assert all(len(r[4]) > 2 * 8000 * 5 for r in scalar[0]), "a recording stopped at the wrap"
    _assert_same([path])


def _rewrite(frames: list, change: Any) -> bytes:
    """A classic pcap of `frames`, each RTP frame (not SIP) as `change`
    returns it (None: left out)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for ts, _, frame in frames:
        ports = struct.unpack_from("!HH", frame, 34)
        if len(frame) > 54 and 5060 not in ports:
            frame = change(ts, ports, bytearray(frame))
            if frame is None:
                continue
        usec = round(ts * 1e6)
        out += struct.pack("<IIII", usec // 10**6, usec % 10**6, len(frame), len(frame)) + frame
    return bytes(out)


def test_law_switch_with_lazy_commits_pending(tmp_path: Path, generated: dict[str, Path]) -> None:
    """One party of every call switches from PCMU to PCMA halfway: the
    recording becomes 16-bit PCM after the frames its batched commits left
    in the ring (StereoInterleaver.advance) are written in the old law.
    The PBX's side switches in the last 40 ms before a tick, the calls at
    moments 2 ms apart, so that some switch just after a batched commit
    (12 of the 40 when this was written)."""
    frames = list(CaptureFile(generated["clean"]))
    start = frames[0][0]

    def switch(ts: float, ports: tuple[int, int], frame: bytearray) -> bytearray:
        if ports[0] >= 40000 and ts > start + 3.46 + (ports[1] // 2 % 20) * 0.002:
            frame[43] = (frame[43] & 0x80) | 8
        return frame

    path = tmp_path / "cr-fast-law.pcap"
    path.write_bytes(_rewrite(frames, switch))
    scalar = _memory_run([path], batched=False)
    assert sum(r[7] for r in scalar[0]) >= 30, "the calls did not switch law"
    _assert_same([path])


def test_one_party_stops_while_commits_move_on(tmp_path: Path, generated: dict[str, Path]) -> None:
    """One party of every call falls silent for two seconds, and the other
    for a moment later: commits move the quiet channel's end past its
    frames (the batched path then leaves the rest of that stretch to the
    per-frame path) and resume it after the pause, the same both ways."""
    frames = list(CaptureFile(generated["clean"]))
    start = frames[0][0]

    def pause(ts: float, ports: tuple[int, int], frame: bytearray) -> bytearray | None:
        if ports[0] < 40000 and start + 2.0 < ts < start + 4.0:
            return None
        if ports[0] >= 40000 and start + 4.6 < ts < start + 4.9:
            return None
        return frame

    path = tmp_path / "cr-fast-pause.pcap"
    path.write_bytes(_rewrite(frames, pause))
    _assert_same([path])
