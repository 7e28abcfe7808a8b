"""`callrec replay` over damaged captures (issue 17): every public capture,
mutated with a fixed seed the way disks, copies and clocks damage them (bit
flips, truncation, timestamps jumping forward and back, duplicated and
reordered frames), replayed by the real command in a child process whose
address space is capped.  Whatever the damage: no traceback, an exit
status that says whether every file could be read (0 or 1), and no row
left `recording`."""
from __future__ import annotations

import random
import resource
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.capture_file import CaptureFile
from storage.layout import INDEX_FILE
from tests.interop import CAPTURE_NAMES, REPO, capture
from wire.pcap import CaptureFormatError, Frame

SEED = 1717
ROUNDS = 4
"""Replays, each of one mutant of every capture: a few seconds each."""
MEMORY_LIMIT = 1536 << 20
"""Address space of the replaying process: the interpreter and its
libraries take about 600 MiB of it; a recording padded with a day of
silence (the issue's stray frame) needs gigabytes."""
TIMEOUT = 120
JUMPS = (0.7, 3.0, 45.0, 3600.0, 86400.0, 400 * 86400.0, 1.0e9)
"""Seconds a timestamp moves: jitter, a few seconds, a minute, an hour, a
day, a year, and as far as a 32-bit pcap time reaches."""


def _frames(path: Path) -> list[Frame]:
    frames: list[Frame] = []
    try:
        for batch in CaptureFile(path).batches():
            frames.extend(batch)
    except CaptureFormatError as exc:
        raise AssertionError(f"the public capture {path} should read whole") from exc
    return frames


def _pcap(frames: list[Frame]) -> bytearray:
    """Classic pcap (microseconds) of the frames of the first frame's link type."""
    linktype = frames[0][1] if frames else 1
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    for ts, kind, frame in frames:
        if kind != linktype:
            continue
        usec = max(0, min(round(ts * 1e6), (2**32 - 1) * 10**6))
        out += struct.pack("<IIII", usec // 10**6, usec % 10**6, len(frame), len(frame)) + frame
    return out


def _stray(rng: random.Random, frames: list[Frame]) -> None:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(frames))
        ts, kind, frame = frames[i]
        frames[i] = (ts + rng.choice((-1, 1)) * rng.choice(JUMPS), kind, frame)


def _step(rng: random.Random, frames: list[Frame]) -> None:
    i = rng.randrange(len(frames))
    delta = rng.choice((-1, 1)) * rng.choice(JUMPS)
    frames[i:] = [(ts + delta, kind, frame) for ts, kind, frame in frames[i:]]


def _duplicate(rng: random.Random, frames: list[Frame]) -> None:
    for _ in range(rng.randint(1, 50)):
        i = rng.randrange(len(frames))
        frames.insert(rng.randrange(i, min(len(frames), i + 20) + 1), frames[i])


def _reorder(rng: random.Random, frames: list[Frame]) -> None:
    for _ in range(rng.randint(1, 50)):
        i = rng.randrange(len(frames))
        j = min(len(frames) - 1, i + rng.randint(1, 30))
        frames[i], frames[j] = frames[j], frames[i]


def _damage_frames(rng: random.Random, frames: list[Frame]) -> None:
    for _ in range(rng.randint(1, 40)):
        i = rng.randrange(len(frames))
        ts, kind, frame = frames[i]
        if frame:
            data = bytearray(frame)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            frames[i] = (ts, kind, bytes(data))


FRAME_MUTATIONS = (_stray, _step, _duplicate, _reorder, _damage_frames)


def mutant(rng: random.Random, source: Path) -> bytes:
    """One damaged copy of `source`: one to three frame mutations, then
    maybe bit flips anywhere in the file, then maybe a cut."""
    frames = _frames(source)
    for mutate in rng.sample(FRAME_MUTATIONS, rng.randint(1, 3)):
        mutate(rng, frames)
    data = _pcap(frames)
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.3:
        del data[rng.randrange(24, len(data)):]
    return bytes(data)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _replay(files: list[Path], data_dir: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "callrec", "replay", *map(str, files), "--data-dir", str(data_dir)]
    try:
        return subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"replay of {[f.name for f in files]} ran over {TIMEOUT} s") from None


def _states(data_dir: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{data_dir / INDEX_FILE}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM calls GROUP BY state").fetchall())
    finally:
        db.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_replay_survives_damaged_captures(tmp_path: Path, round_: int) -> None:
    rng = random.Random(f"{SEED}/{round_}")
    files = []
    for name in CAPTURE_NAMES:
        path = tmp_path / f"{Path(name).stem}-{round_}.pcap"
        path.write_bytes(mutant(rng, capture(name)))
        files.append(path)
    data_dir = tmp_path / "data"
    result = _replay(files, data_dir)
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr[-4000:]
    assert result.returncode in (0, 1), f"exit status {result.returncode}:\n{result.stderr[-4000:]}"
    states = _states(data_dir)
    assert states.get("recording", 0) == 0, states
    assert states.get("sealed", 0) > 0, "the damage left calls to record"


def test_the_mutants_are_the_same_every_run() -> None:
    """A fixed seed: a failure found once is found again."""
    source = capture("rtp-protocol.pcap")
    assert mutant(random.Random(SEED), source) == mutant(random.Random(SEED), source)
