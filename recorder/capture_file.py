"""File adapter around the sans-I/O :class:`~wire.pcap.CaptureDecoder`.

This is the only place in the packet-input path that touches the file system.
It reads in fixed-size chunks so a multi-gigabyte capture never sits in memory,
and it publishes how far it has read so a user interface can show progress.
The default chunk is small on purpose: a chunk and the frames cut from it stay
in the CPU's cache while the recorder works through them (measured: replay is
about 8% faster with 64 KiB chunks than with 1 MiB ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from os import SEEK_CUR
from pathlib import Path
from struct import Struct
from typing import BinaryIO

import numpy as np

from wire.pcap import MAX_CAPLEN, CaptureDecoder, CaptureFormatError, Frame

from .batch import FrameBatch

__all__ = ["BATCH_CHUNK_SIZE", "CHUNK_SIZE", "CaptureFile", "CaptureFormatError", "Frame", "read_capture"]

CHUNK_SIZE = 64 * 1024
BATCH_CHUNK_SIZE = 8 * 1024 * 1024
"""Chunk read for `frame_batches`: the batched path pays its fixed costs
once per batch and per stream once per stretch between two ticks of the
recorder's clock or batches, so a batch spanning several ticks (8 MiB:
about 2 s of a 200-call mirror port) costs about a sixth less CPU than one
of 2 MiB; its memory (about 4 MiB per MiB of batch, while the next batch's
de-duplication still reads the last one) is fixed, not per call."""
_CLASSIC_MAGICS = frozenset((b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"))
_PROBE_MAX = 4096
"""Records of one length checked at once while walking a classic pcap."""
_MIN_RUN = 8
"""Records of one length worth checking at once; after a shorter run the
next _ALONE records are taken one by one (a capture of mixed lengths)."""
_ALONE = 32


class CaptureFile:
    """Iterable over the frames of one capture file.

    Iterating yields ``(timestamp, linktype, frame)`` in file order.  If the file
    turns out to be corrupt or truncated, every frame before the fault is yielded
    first and then :class:`CaptureFormatError` is raised: whether a damaged file
    is still usable evidence is the caller's decision, not ours.

    ``bytes_read`` and ``size`` are meant for progress reporting; ``decoder``
    exposes the decoder's counters.  Iterating again starts over from the top.
    """

    def __init__(self, path: Path, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.size = self.path.stat().st_size
        self.bytes_read = 0
        self.decoder = CaptureDecoder()

    def __iter__(self) -> Iterator[Frame]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Frame]]:
        """The same frames as iterating, in the lists the decoder returns per
        chunk read (never empty): a consumer that takes a list at a time, like
        ``Recorder.feed_frames``, pays the generator's step once per chunk
        rather than once per frame."""
        self.bytes_read = 0
        self.decoder = decoder = CaptureDecoder()
        with self.path.open("rb") as fh:
            while chunk := fh.read(self.chunk_size):
                self.bytes_read += len(chunk)
                try:
                    frames = decoder.feed(chunk)
                except CaptureFormatError as exc:
                    if exc.frames:
                        yield exc.frames
                    raise
                if frames:
                    yield frames
        decoder.close()

    def frame_batches(self, chunk_size: int = BATCH_CHUNK_SIZE) -> Iterator[FrameBatch]:
        """The same frames as `batches`, as FrameBatches for
        `Recorder.feed_batch`.  A classic pcap's records are found without a
        Python step per record where consecutive records have one length (a
        mirror port's RTP), with the decoder's checks, errors and counters;
        pcapng goes through the decoder."""
        self.bytes_read = 0
        self.decoder = decoder = CaptureDecoder()
        with self.path.open("rb") as fh:
            chunk = fh.read(chunk_size)
            self.bytes_read = len(chunk)
            if len(chunk) < 24 or chunk[:4] not in _CLASSIC_MAGICS:
                yield from self._decoded(fh, decoder, chunk, chunk_size)
                return
            decoder.feed(chunk[:24])
            walker = _PcapWalker(decoder)
            chunk = chunk[24:]
            seekable = fh.seekable()
            while chunk:
                batch, error = walker.feed(chunk)
                if batch is not None:
                    yield batch
                if error is not None:
                    raise error
                tail = walker.pending
                if seekable and 0 < len(tail) <= chunk_size // 2:
                    # The record cut by the chunk's end is read again with
                    # the next chunk rather than copied in front of it (a
                    # copy of the whole chunk); half a chunk at least is new.
                    fh.seek(-len(tail), SEEK_CUR)
                    chunk = fh.read(chunk_size)
                    if len(chunk) > len(tail):
                        walker.pending = b""
                        self.bytes_read += len(chunk) - len(tail)
                        continue
                    break
                chunk = fh.read(chunk_size)
                self.bytes_read += len(chunk)
            walker.close()

    def _decoded(self, fh: BinaryIO, decoder: CaptureDecoder, chunk: bytes, chunk_size: int) -> Iterator[FrameBatch]:
        """A capture the decoder reads record by record (pcapng), from `chunk` on."""
        while chunk:
            try:
                frames = decoder.feed(chunk)
            except CaptureFormatError as exc:
                if exc.frames:
                    yield FrameBatch.from_frames(exc.frames)
                raise
            if frames:
                yield FrameBatch.from_frames(frames)
            chunk = fh.read(chunk_size)
            self.bytes_read += len(chunk)
        decoder.close()


class _PcapWalker:
    """Classic pcap records after the file header, a chunk at a time, as
    CaptureDecoder would cut them (same errors, same counters)."""

    def __init__(self, decoder: CaptureDecoder) -> None:
        self.decoder = decoder
        self.big = decoder._rec.format.startswith(">")
        self.u32 = Struct(">I" if self.big else "<I").unpack_from
        self.dtype = np.dtype(">u4" if self.big else "<u4")
        self.divisor = decoder._divisor
        self.linktype = decoder._linktype
        self.pending = b""
        self.consumed = 24

    def feed(self, chunk: bytes) -> tuple[FrameBatch | None, CaptureFormatError | None]:
        """The records `chunk` completes, and the error that stops the walk."""
        data = self.pending + chunk if self.pending else chunk
        offsets, used, absurd = self._walk(data)
        batch = self._batch(data, offsets) if offsets else None
        if absurd is not None:
            at = self.consumed + used
            self.pending = b""
            return batch, CaptureFormatError(f"absurd pcap record length {absurd} at offset {at}", offset=at)
        self.pending = data[used:]
        self.consumed += used
        return batch, None

    def _walk(self, data: bytes) -> tuple[list[np.ndarray], int, int | None]:
        """Record offsets in `data`, how far they reach, and the absurd
        record length that stops the walk there, if one does."""
        n = len(data)
        u32 = self.u32
        parts: list[np.ndarray] = []
        singles: list[int] = []
        probe = 16
        alone = 0  # records to take one by one before checking a run again
        off = 0
        while off + 16 <= n:
            caplen = u32(data, off + 8)[0]
            if caplen > MAX_CAPLEN:
                if singles:
                    parts.append(np.array(singles, dtype=np.int64))
                return parts, off, caplen
            stride = 16 + caplen
            if off + stride > n:
                break
            fit = min((n - off) // stride, probe)
            if alone or fit < _MIN_RUN:
                singles.append(off)
                off += stride
                alone = max(alone - 1, 0)
                continue
            lengths = np.ndarray((fit,), dtype=self.dtype, buffer=data, offset=off + 8, strides=(stride,))
            differ = np.flatnonzero(lengths != caplen)
            run = int(differ[0]) if differ.size else fit
            if singles:
                parts.append(np.array(singles, dtype=np.int64))
                singles = []
            parts.append(off + stride * np.arange(run, dtype=np.int64))
            off += stride * run
            if run == fit:
                probe = min(probe * 2, _PROBE_MAX)
            else:
                probe = 16
                alone = _ALONE if run < _MIN_RUN else 0
        if singles:
            parts.append(np.array(singles, dtype=np.int64))
        return parts, off, None

    def _batch(self, data: bytes, parts: list[np.ndarray]) -> FrameBatch:
        offsets = np.concatenate(parts) if len(parts) > 1 else parts[0]
        u8 = np.frombuffer(data, dtype=np.uint8)
        headers = np.lib.stride_tricks.sliding_window_view(u8, 16)[offsets].view(self.dtype).astype(np.int64)
        sec, frac, caplen, wirelen = headers[:, 0], headers[:, 1], headers[:, 2], headers[:, 3]
        stats = self.decoder.stats
        stats["records"] += len(offsets)
        stats["short_records"] += int(np.count_nonzero(caplen < wirelen))
        times = sec.astype(np.float64) + frac.astype(np.float64) / self.divisor
        return FrameBatch(data, offsets + 16, caplen, times, np.full(len(offsets), self.linktype, dtype=np.int64))

    def close(self) -> None:
        if self.pending:
            left = len(self.pending)
            self.decoder.stats["truncated_bytes"] = left
            raise CaptureFormatError(f"truncated capture: {left} bytes after last complete record",
                                     offset=self.consumed)


def read_capture(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[Frame]:
    """Yield the frames of the capture at ``path``; see :class:`CaptureFile`."""
    return iter(CaptureFile(path, chunk_size))
