"""`callrec replay`: captures processed exactly as live traffic, with the
capture timestamps as the clock."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import structlog

from recorder.capture_file import CaptureFile
from recorder.engine import Recorder
from wire.pcap import CaptureFormatError

log = structlog.get_logger("callrec.replay")


class Progress:
    """A one-line progress bar, only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self._shown = -1

    def update(self, done: int, label: str) -> None:
        if not self.enabled:
            return
        percent = min(100, done * 100 // self.total)
        if percent == self._shown:
            return
        self._shown = percent
        bar = "#" * (percent * 30 // 100)
        self.stream.write(f"\r{label[-30:]:30} [{bar:30}] {percent:3d}%")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def replay(recorder: Recorder, captures: list[Path], *, batched: bool = True) -> int:
    """Feed every capture in order; returns the number of unreadable files.

    A broken capture stops only itself: what was decoded before the damage
    is kept, the error is logged, and the next file is read.  `batched`
    takes the batched media path (recorder.batch), which gives the same
    results as the per-frame one (`batched=False`), faster.
    """
    failures = 0
    total = sum(p.stat().st_size for p in captures if p.exists())
    progress = Progress(total)
    done_before = 0
    try:
        for path in captures:
            capture = CaptureFile(path)
            try:
                if batched:
                    for batch in capture.frame_batches():
                        recorder.feed_batch(batch)
                        progress.update(done_before + capture.bytes_read, path.name)
                else:
                    for frames in capture.batches():
                        recorder.feed_frames(frames)
                        progress.update(done_before + capture.bytes_read, path.name)
            except CaptureFormatError as exc:
                failures += 1
                log.error("capture.unreadable", file=str(path), reason=str(exc))
            except OSError as exc:
                failures += 1
                log.error("capture.unreadable", file=str(path), reason=exc.strerror or str(exc))
            done_before += capture.size
    finally:
        # Also on Ctrl-C: every open call is closed, marked incomplete.
        recorder.finish()
        progress.close()
    return failures
