"""Memory per active call of live capture (issue 13): under 100 KiB with one
capture worker and with two, and nothing that grows with the call's length.

Python-level memory (tracemalloc) of everything a call costs: with one worker
the daemon's recorder and its writer (storage.recordings); with two, both
workers' recorders (each follows every call's SIP, only the owner its media)
and the daemon's side (callrec.workers: the writer of each recording the
owners hand over).  Generated calls (bench/gen_calls.py) are fed a ring
block's worth at a time through the batched path as live capture feeds
them; the fanout's split is computed as the kernel would
(recorder.fanout.flow_worker).  Not timed.
"""
from __future__ import annotations

import gc
import secrets
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.gen_calls import write_pcap
from callrec.capture_worker import WorkerSink
from callrec.config import Config
from callrec.workers import WorkerPool, _Worker
from policy.decide import PolicyDecider
from policy.schema import Policy
from recorder.batch import FrameBatch
from recorder.capture_file import CaptureFile
from recorder.engine import Recorder
from recorder.fanout import flow_worker
from storage.index import CallIndex
from storage.keys import KEY_SIZE, MasterKey
from storage.recordings import RecordingStore

CALLS = 60
SECONDS = 12.0
BLOCK_FRAMES = 1000
LIMIT = 100 * 1024

Frame = tuple[float, int, bytes]


def _frames(tmp_path: Path) -> list[Frame]:
    path = tmp_path / "cr-live2-memory.pcap"
    with path.open("wb") as out:
        write_pcap(out, CALLS, SECONDS)
    return list(CaptureFile(path))


def _store(tmp_path: Path) -> tuple[RecordingStore, CallIndex]:
    data = tmp_path / "data"
    data.mkdir()
    index = CallIndex(data / "index.sqlite3")
    return RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), MasterKey(secrets.token_bytes(KEY_SIZE))), index


class _Pipe:
    """A worker's channel straight into the daemon's side (WorkerPool._dispatch)."""

    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self._pool, self._worker = pool, worker

    def send(self, message: tuple[Any, ...]) -> None:
        self._pool._dispatch(self._worker, message)


def _per_call(frames: list[Frame], feeders: list[Callable[[list[Frame]], None]], active: Callable[[], int]
              ) -> list[float]:
    """Bytes per active call at three points of the calls (all under way from the first)."""
    start = frames[0][0]
    marks = [start + CALLS * 0.01 + 2.0, start + SECONDS * 0.5, start + SECONDS * 0.95]
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    out = []
    done = 0
    for mark in marks:
        upto = next((i for i in range(done, len(frames)) if frames[i][0] >= mark), len(frames))
        for i in range(done, upto, BLOCK_FRAMES):
            block = frames[i:min(i + BLOCK_FRAMES, upto)]
            for feed in feeders:
                feed(block)
        done = upto
        gc.collect()
        assert active() == CALLS
        out.append((tracemalloc.get_traced_memory()[0] - base) / CALLS)
    return out


@pytest.fixture()
def traced() -> Any:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def test_one_worker_under_100_kib_per_call_and_flat(tmp_path: Path, traced: None) -> None:
    frames = _frames(tmp_path)
    store, index = _store(tmp_path)
    recorder = Recorder(PolicyDecider(Policy()), store)
    sizes = _per_call(frames, [lambda block: recorder.feed_batch(FrameBatch.from_frames(block))],
                      recorder.active_recordings)
    recorder.finish()
    index.close()
    print("KiB per call:", [round(s / 1024, 1) for s in sizes])
    assert max(sizes) < LIMIT, [round(s / 1024, 1) for s in sizes]
    assert sizes[2] - sizes[1] < 2048, [round(s / 1024, 1) for s in sizes]


def test_two_workers_under_100_kib_per_call_and_flat(tmp_path: Path, traced: None) -> None:
    """Both workers and the daemon's side together; each worker keeps little of the calls it does not own."""
    frames = _frames(tmp_path)
    store, index = _store(tmp_path)
    config = Config(data_dir=tmp_path / "data", capture_workers=2)
    pool = WorkerPool(config, store)
    pool.workers = [_Worker(k, []) for k in range(2)]
    feeders = []
    recorders = []
    for worker in pool.workers:
        sink = WorkerSink(_Pipe(pool, worker), worker.index, 2)  # type: ignore[arg-type]
        recorder = Recorder(PolicyDecider(Policy()), sink, sink)
        sink.tracker = recorder.tracker
        recorders.append(recorder)
        feeders.append(_share(worker.index, sink, recorder))
    sizes = _per_call(frames, feeders, pool.active_recordings)
    assert [r.active_recordings() for r in recorders] == [CALLS, CALLS]  # every worker follows every call
    for recorder in recorders:
        recorder.finish()
    index.close()
    print("KiB per call:", [round(s / 1024, 1) for s in sizes])
    assert max(sizes) < LIMIT, [round(s / 1024, 1) for s in sizes]
    assert sizes[2] - sizes[1] < 2048, [round(s / 1024, 1) for s in sizes]


def _share(me: int, sink: WorkerSink, recorder: Recorder) -> Callable[[list[Frame]], None]:
    """Worker ``me``'s feed: all SIP, and the media the kernel's fanout hands it."""
    def mine(frame: Frame) -> bool:
        data = frame[2]
        sport, dport = struct.unpack_from("!HH", data, 34)
        return 5060 in (sport, dport) or flow_worker(data[26:30], sport, data[30:34], dport, 2) == me

    def feed(block: list[Frame]) -> None:
        recorder.feed_batch(sink.split(FrameBatch.from_frames([f for f in block if mine(f)])))
        sink.refresh()

    return feed
