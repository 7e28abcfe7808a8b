"""Vault write throughput against plain file writes of the same bytes.

Writes N seconds of stereo G.711 (16,000 bytes a second, flushed once a
second as the recorder does) into a vault and into a plain file, in the
same folder, and reports the median of several runs in MB/s and in
"calls per core" (how many live calls one core could encrypt and write).

    .venv/bin/python bench/bench_vault.py [--seconds 3600] [--runs 5] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402

from storage.keys import MasterKey  # noqa: E402
from storage.vault import VaultWriter, open_vault  # noqa: E402

SECOND = 16000


def plain(path: Path, audio: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        for start in range(0, len(audio), SECOND):
            os.write(fd, audio[start : start + SECOND])
        os.fsync(fd)
    finally:
        os.close(fd)


def vault(path: Path, audio: bytes, master: MasterKey) -> None:
    writer = VaultWriter(path, master, {"kind": "wav-data", "encoding": "PCMU", "channels": 2, "rate": 8000})
    for start in range(0, len(audio), SECOND):
        writer.append(audio[start : start + SECOND])
        writer.flush(durable=False)
    writer.close()


def timed(action: Callable[[Path], None], path: Path) -> float:
    start = time.perf_counter()
    action(path)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    master = MasterKey(os.urandom(32))
    audio = os.urandom(SECOND * args.seconds)
    megabytes = len(audio) / 1e6
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        target = Path(folder) / "bench"
        plain_times = [timed(lambda p: plain(p, audio), target) for _ in range(args.runs)]
        vault_times = [timed(lambda p: vault(p, audio, master), target) for _ in range(args.runs)]
        vault(target, audio, master)
        start = time.perf_counter()
        with open_vault(target, master) as reader:
            assert sum(len(chunk) for chunk in reader.chunks()) == len(audio)
        read_time = time.perf_counter() - start
    plain_s, vault_s = statistics.median(plain_times), statistics.median(vault_times)
    print(f"{args.seconds} s of stereo G.711 ({megabytes:.1f} MB), median of {args.runs} runs")
    print(f"plain file : {megabytes / plain_s:8.1f} MB/s")
    print(f"vault write: {megabytes / vault_s:8.1f} MB/s  ({vault_s / plain_s:.2f}x the plain time)")
    print(f"vault read : {megabytes / read_time:8.1f} MB/s (verifying every record)")
    print(f"one core could write the audio of about {int(args.seconds / vault_s)} live calls at once")


if __name__ == "__main__":
    main()
