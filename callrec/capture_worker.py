"""One capture worker: `python -m callrec.capture_worker FD`, started by the daemon.

The worker reads its share of the media (its socket in the interface's
``PACKET_FANOUT`` group) and all of the SIP (its own signalling socket), both
made by the daemon and inherited, and runs the unchanged recorder core over
them, a ring block at a time through its batched media path
(Recorder.feed_batch).  Which calls it writes, and why every worker can decide that alone,
is in recorder.fanout; how the rows stay one store is in callrec.workers.

Order.  The media and the SIP come from two rings the kernel hands over
independently (a block when full or when its timer runs out), so a 200 OK
can be read after RTP captured later than it.  Frames are held
``HOLD_SECONDS`` (longer than any ring's block timer) and released in capture
order across the rings: the core sees what the single-worker daemon sees.

Storage.  The worker writes nothing: the recorder's sink here sends each of
its calls (begin, audio, checkpoint, seal) to the daemon, which holds the one
index, ring, ledger and seal chain.  A worker that dies leaves its calls to
the daemon, which repairs them as after a crash and starts a new worker on
the same sockets.
"""
from __future__ import annotations

import os
import select
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from policy.decide import PolicyDecider
from policy.loader import PolicyError, load_policy
from policy.schema import Policy
from recorder.batch import FrameBatch, join_batches
from recorder.engine import Recorder
from recorder.fanout import Endpoint, call_owner, frame_endpoints
from recorder.live_capture import LiveCapture
from recorder.on_demand import StartOutcome
from recorder.record import CallResult, CallSnapshot

from . import logs
from .context import tune_gc
from .worker_channel import Channel

__all__ = ["HOLD_SECONDS", "Holdback", "WorkerSink", "main", "on_demand_report", "on_demand_start"]

log = structlog.get_logger("callrec.worker")

Frame = tuple[float, int, bytes]
HOLD_SECONDS = 0.08
"""How long a frame waits for frames captured before it in another ring:
more than the rings' block timers (callrec.workers: 20 ms media, 10 ms SIP)
and the way through the daemon of a forwarded frame."""
MAX_BLOCKS = 8
FEED_SECONDS = 0.2
"""How often the hold-back releases its frames to the recorder: a release is
one FrameBatch, and the batched media path costs per stream and batch as
well as per frame, so a batch of 0.2 s of traffic costs far less a packet
than one of the 20 ms a wake-up reads (recorder.batch.join_batches)."""
FEED_FRAMES = 30_000
"""Released sooner when this many frames are held (about 8 MiB of G.711 RTP),
and as soon as the frames released reach the recorder's next checkpoint
(`Recorder.next_tick`): a worker killed loses no more than the last second."""
REFRESH_SECONDS = 0.1
"""How soon a new SDP address of another worker's call is forwarded (a flow that lands elsewhere)."""
STATS_SECONDS = 1.0
_SPLIT_HEAD = 42
"""Bytes of a frame `WorkerSink.split` reads at once: Ethernet, one 802.1Q tag, IPv4 up to the UDP ports."""


class Holdback:
    """Frames from several sources (each FrameBatch in capture order once
    added), released in capture order once they are older than the cutoff,
    as one FrameBatch: the frames' bytes stay in the blocks they came in
    until a release that mixes blocks copies just the released ranges."""

    def __init__(self, sources: int) -> None:
        self._chunks: list[list[FrameBatch]] = [[] for _ in range(sources)]
        self.held = 0

    def add(self, source: int, batch: FrameBatch) -> None:
        if len(batch):
            times = batch.times
            if len(batch) > 1 and not bool(np.all(times[1:] >= times[:-1])):
                batch = _subset(batch, np.argsort(times, kind="stable"))
            self._chunks[source].append(batch)
            self.held += len(batch)

    def release(self, cutoff: float) -> FrameBatch | None:
        pieces: list[FrameBatch] = []
        for chunks in self._chunks:
            kept = []
            for batch in chunks:
                count = int(np.searchsorted(batch.times, cutoff, side="right"))
                if count == len(batch):
                    pieces.append(batch)
                    continue
                if count:
                    pieces.append(_slice(batch, 0, count))
                    batch = _slice(batch, count, len(batch))
                kept.append(batch)
            chunks[:] = kept
        if not pieces:
            return None
        released = sum(len(p) for p in pieces)
        self.held -= released
        if len(pieces) == 1:
            return pieces[0]
        merged = join_batches(pieces)
        times = merged.times
        if bool(np.all(times[1:] >= times[:-1])):
            return merged
        return _subset(merged, np.argsort(times, kind="stable"))


def _slice(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    return FrameBatch(batch.data, batch.offsets[start:stop], batch.lengths[start:stop], batch.times[start:stop],
                      batch.linktypes[start:stop])


def _subset(batch: FrameBatch, index: np.ndarray) -> FrameBatch:
    """The frames ``index`` names, in that order, in the same buffer."""
    return FrameBatch(batch.data, batch.offsets[index], batch.lengths[index], batch.times[index],
                      batch.linktypes[index])


class _Proxy:
    """The handle of a call this worker owns: every write goes to the daemon."""

    __slots__ = ("_send", "_serial", "_sink")

    def __init__(self, sink: WorkerSink, serial: int) -> None:
        self._sink = sink
        self._send = sink.channel.send
        self._serial = serial

    def append(self, data: bytes) -> None:
        if data:
            self._send(("append", self._serial, data))

    def convert_to_l16(self) -> None:
        self._send(("convert", self._serial))

    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None:
        self._send(("side", self._serial, channel, arrival, rtp, flow))

    def checkpoint(self) -> None:
        self._send(("checkpoint", self._serial))

    def close(self, result: CallResult) -> None:
        self._send(("close", self._serial, result))
        self._sink.ended(self._serial)


class _Elsewhere:
    """The handle of a call another worker owns: its audio here is what this
    worker's share held before the flow was known to forward; dropped, since
    the owner has (or is forwarded) the packets."""

    __slots__ = ("_serial", "_sink")

    def __init__(self, sink: WorkerSink, serial: int) -> None:
        self._sink = sink
        self._serial = serial

    def append(self, data: bytes) -> None:
        pass

    def convert_to_l16(self) -> None:
        pass

    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def close(self, result: CallResult) -> None:
        self._sink.ended(self._serial)


class WorkerSink:
    """The recorder's sink in worker ``me`` of ``workers``: the owner's calls
    go to the daemon, the others' are followed only to forward their flows."""

    def __init__(self, channel: Channel, me: int, workers: int) -> None:
        self.channel = channel
        self.me = me
        self.workers = workers
        self.tracker: Any = None
        """The recorder's call tracker (recorder.calls), read for the calls' SDP endpoints."""
        self.owner: dict[int, int] = {}
        """Serial -> owning worker, for the calls begun here (fixed at begin)."""
        self._keys: dict[int, tuple[str, float]] = {}
        self._sticky: dict[tuple[str, float], tuple[int, set[Endpoint]]] = {}
        """Another worker's recording, by (Call-ID, INVITE time): its endpoints stay
        forwarded until the owner ends it, even once this worker's own view of
        the call ended (no media reached it: its RTP timeout)."""
        self.forward: dict[Endpoint, int] = {}
        self._table: tuple[np.ndarray, np.ndarray] = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))
        """The IPv4 endpoints of ``forward`` as sorted ``address << 16 | port`` keys, and their owners."""
        self._generation = -1
        self._owned_ids: dict[int, str] = {}
        self.stats = {"frames_forwarded": 0, "audio_elsewhere": 0}

    def _owner_of(self, call: Any) -> int | None:
        """The call's owner: fixed once it began recording; before, where its
        SDP pair lands, or None while one party's SDP is still unknown (the
        Call-ID fallback is for calls that begin without it)."""
        root = call
        while root.link is not None:
            root = root.link
        owner = self.owner.get(root.serial)
        if owner is None and root.endpoints[0] and root.endpoints[1]:
            owner = call_owner(root.endpoints, root.call_id, self.workers)
        return owner

    # ---- RecordingSink ----------------------------------------------------
    def begin(self, call: CallSnapshot, origin: float) -> None:
        assert self.tracker is not None
        live = self.tracker.live(call.serial)
        owner = self._owner_of(live) if live is not None else None
        if owner is None:
            owner = call_owner(([], []), call.sip_call_id, self.workers)
        self.owner[call.serial] = owner
        if owner == self.me:
            self._owned_ids[call.serial] = call.sip_call_id
            self.channel.send(("begin", call.serial, call, origin))
        else:
            key = (call.sip_call_id, call.invite_ts)
            self._keys[call.serial] = key
            self._sticky[key] = (owner, set())
            self._generation = -1  # the next refresh (within REFRESH_SECONDS) keeps its endpoints

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> _Proxy | _Elsewhere:
        if self.owner.get(call.serial, self.me) == self.me:
            self.channel.send(("open", call.serial, call, origin, encoding, rate))
            return _Proxy(self, call.serial)
        self.stats["audio_elsewhere"] += 1
        return _Elsewhere(self, call.serial)

    def finish_without_audio(self, result: CallResult) -> None:
        serial = result.call.serial
        if self.owner.get(serial, self.me) == self.me:
            self.channel.send(("noaudio", serial, result))
        self.ended(serial)

    # ---- MarkSink --------------------------------------------------------
    def mark(self, call: CallSnapshot, category: str, at: float) -> None:
        """A harassment mark keyed on the staff side: the owner, the one worker that sees the
        call's media and so its digits, hands it to the daemon, which stores, ledgers and logs it."""
        if self.owner.get(call.serial) == self.me:
            self.channel.send(("mark", call.serial, call, category, at))

    def owns(self, serial: int) -> bool:
        """Whether this worker records the call numbered ``serial``: fixed once
        it began, else as `begin` will decide (where its SDP pair lands, else
        by its Call-ID).  A call the tracker no longer holds is nobody's."""
        owner = self.owner.get(serial)
        if owner is None:
            live = self.tracker.live(serial) if self.tracker is not None else None
            if live is None:
                return False
            owner = self._owner_of(live)
            if owner is None:
                owner = call_owner(([], []), live.call_id, self.workers)
        return owner == self.me

    def ended(self, serial: int) -> None:
        """This worker's view of the call ended: an owned call's endpoints
        are released here; another's stay forwarded until its owner ends it."""
        self.owner.pop(serial, None)
        self._owned_ids.pop(serial, None)
        self._keys.pop(serial, None)

    @property
    def owned_call_ids(self) -> set[str]:
        return set(self._owned_ids.values())

    # ---- forwarding ---------------------------------------------------------
    def owner_ended(self, key: tuple[str, float]) -> None:
        """The daemon: the owner sealed this call."""
        if self._sticky.pop(key, None) is not None:
            self._generation = -1

    def refresh(self, force: bool = False) -> None:
        """The endpoints of other workers' calls, from the call tracker (same
        SIP, same decisions in every worker)."""
        tracker = self.tracker
        if tracker is None or (not force and tracker.endpoint_generation == self._generation):
            return
        self._generation = tracker.endpoint_generation
        forward: dict[Endpoint, int] = {}
        if self.workers > 1:
            me = self.me
            for endpoint, (call, _) in tracker.endpoints.items():
                owner = self._owner_of(call)
                if owner is not None and owner != me:
                    forward[endpoint] = owner
                    root = call
                    while root.link is not None:
                        root = root.link
                    key = self._keys.get(root.serial)
                    if key is not None and key in self._sticky:
                        self._sticky[key][1].add(endpoint)
            for owner, endpoints in self._sticky.values():
                for endpoint in endpoints:
                    forward.setdefault(endpoint, owner)
        self.set_forward(forward)

    def set_forward(self, forward: dict[Endpoint, int]) -> None:
        """Where other workers' flows go: the endpoints, and their IPv4 ones as the table `split` searches."""
        self.forward = forward
        four = sorted((int.from_bytes(address, "big") << 16 | port, owner)
                      for (address, port), owner in forward.items() if len(address) == 4)
        self._table = (np.array([k for k, _ in four], dtype=np.uint64), np.array([o for _, o in four], dtype=np.int64))

    def split(self, batch: FrameBatch) -> FrameBatch:
        """Frames of other workers' calls are sent to their owners (through
        the daemon); the rest are this worker's, in the same buffer.  The
        common frame (IPv4 without options, untagged or behind one 802.1Q
        tag) is judged with the whole batch at once, its two ends looked up
        in the sorted table of the forwarded IPv4 endpoints; the rest are
        taken apart one by one by frame_endpoints."""
        forward = self.forward
        count = len(batch)
        if not forward or not count:
            return batch
        u8 = np.frombuffer(batch.data, dtype=np.uint8)
        owner = np.full(count, -1, dtype=np.int64)
        fast = np.zeros(count, dtype=bool)
        if len(u8) >= _SPLIT_HEAD:
            head = np.lib.stride_tricks.sliding_window_view(u8, _SPLIT_HEAD)[
                np.minimum(batch.offsets, len(u8) - _SPLIT_HEAD)]
            plain = (head[:, 12] == 0x08) & (head[:, 13] == 0x00)
            tagged = (head[:, 12] == 0x81) & (head[:, 13] == 0x00) & (head[:, 16] == 0x08) & (head[:, 17] == 0x00)
            ip = np.where(tagged[:, None], head[:, 18:42], head[:, 14:38])
            fast = ((plain | tagged) & (batch.lengths >= np.where(tagged, 42, 38))
                    & (batch.offsets + _SPLIT_HEAD <= len(u8))  # else its header was read from elsewhere
                    & (ip[:, 0] == 0x45) & (ip[:, 9] == 17) & (batch.linktypes == 1))
            if fast.any():
                ends = ip[fast, 12:24].view(">u2").astype(np.uint64)
                src = (ends[:, 0] << np.uint64(32)) | (ends[:, 1] << np.uint64(16)) | ends[:, 4]
                dst = (ends[:, 2] << np.uint64(32)) | (ends[:, 3] << np.uint64(16)) | ends[:, 5]
                found = self._lookup(dst)
                found = np.where(found >= 0, found, self._lookup(src))
                owner[fast] = found
        for i in np.flatnonzero(~fast).tolist():
            ends4 = frame_endpoints(batch.frame(i))
            owner[i] = self._verdict(forward, *ends4) if ends4 is not None else -1
        moved = np.flatnonzero(owner >= 0)
        if not moved.size:
            return batch
        times, links = batch.times.tolist(), batch.linktypes.tolist()
        out: dict[int, list[Frame]] = {}
        for i in moved.tolist():
            out.setdefault(int(owner[i]), []).append((times[i], links[i], batch.frame(i)))
        for target, sent in out.items():
            self.channel.send(("forward", target, sent))
            self.stats["frames_forwarded"] += len(sent)
        return _subset(batch, np.flatnonzero(owner < 0))

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """The owner of each IPv4 endpoint ``address << 16 | port`` in the forward table, -1 if none."""
        table, owners = self._table
        if not len(table):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[at] == keys, owners[at], -1)

    @staticmethod
    def _verdict(forward: dict[Endpoint, int], src: Endpoint, dst: Endpoint) -> int:
        """The worker a flow goes to, by its destination first (as the recorder
        matches it), -1 for this one."""
        owner = forward.get(dst)
        if owner is None:
            owner = forward.get(src)
        return -1 if owner is None else owner


def on_demand_report(recorder: Recorder, sink: WorkerSink) -> dict[str, Any]:
    """The on-demand calls this worker owns, for the daemon's status and the
    console (callrec.workers), and the Call-IDs of those nobody asked for
    (kept out of health reports): every worker follows every call's SIP,
    only the owner sees its media, its digits and its audio."""
    calls = [c for c in recorder.on_demand.live() if sink.owns(c.serial)]
    held = [recorder.tracker.live(c.serial) for c in calls if not c.recording]
    return {"on_demand": calls, "held": [call.call_id for call in held if call is not None]}


def on_demand_start(recorder: Recorder, sink: WorkerSink, serial: int, by: str) -> StartOutcome:
    """The console's 録音開始, passed on by the daemon to the owner: the gate
    starts the call at the worker's capture time, and its recording reaches
    the daemon as any call this worker owns (begin, then its audio from the
    start)."""
    if not sink.owns(serial):
        return StartOutcome.UNKNOWN
    return recorder.on_demand.start(serial, by, recorder.now)


class Worker:
    """The loop of one worker process."""

    def __init__(self, channel: Channel, init: dict[str, Any]) -> None:
        self.channel = channel
        self.me: int = init["index"]
        self.captures: list[tuple[LiveCapture, str]] = [
            (LiveCapture.adopt(fd, interface, ring_bytes=ring, block_bytes=block), part)
            for fd, interface, part, ring, block in init["captures"]]
        self.sink = WorkerSink(channel, self.me, init["workers"])
        self.recorder = Recorder(PolicyDecider(self._policy(init["policy"])), self.sink, self.sink)
        self.sink.tracker = self.recorder.tracker
        self.hold = Holdback(len(self.captures) + 1)
        self.stopping = False

    @staticmethod
    def _policy(path: str | None) -> Policy:
        return load_policy(Path(path)) if path else Policy()

    def run(self) -> int:
        poller = select.poll()
        for capture, _ in self.captures:
            poller.register(capture.fileno(), select.POLLIN)
        poller.register(self.channel.sock.fileno(), select.POLLIN)
        next_stats = next_refresh = next_feed = 0.0
        while True:
            poller.poll(20)
            quiet, behind = self._read_rings()
            try:
                messages = self.channel.receive()
            except EOFError:
                log.error("worker.daemon_gone", worker=self.me)
                return 1
            for message in messages:
                self.on_message(message)
            now = time.time()
            if self.stopping:
                return self._stop()
            ready = min(now - HOLD_SECONDS, behind)
            if now >= next_feed or self.hold.held >= FEED_FRAMES or ready >= self.recorder.next_tick:
                self._feed(self.hold.release(ready))
                next_feed = now + FEED_SECONDS
            if now >= next_refresh:
                self.sink.refresh()
                next_refresh = now + REFRESH_SECONDS
            if now >= next_stats:
                if quiet and not self.hold.held:
                    # A quiet line: time passes without frames.  Never while frames wait
                    # (held here or in a ring not yet handed over): the clock would run
                    # ahead of them and commit silence where their audio belongs.
                    self.recorder.advance(now - HOLD_SECONDS)
                self.channel.send(("stats", self._stats(now)))
                next_stats = now + STATS_SECONDS
            self.channel.flush()

    def _read_rings(self, drain: bool = False) -> tuple[bool, float]:
        """Frames from every ring into the hold-back, a few blocks each; whether
        none came, and the capture time up to which every ring has been read
        (a ring with more blocks waiting holds the others back: the SIP of
        other calls must not carry the recorder's clock past media not yet
        read, or that media would come too late for its place in the file)."""
        count = 0
        behind = float("inf")
        for source, (capture, part) in enumerate(self.captures):
            while True:
                try:
                    batches = capture.read_batches(MAX_BLOCKS)
                except OSError as exc:
                    log.warning("capture.error", interface=capture.interface, reason=exc.strerror or str(exc))
                    break
                for batch in batches:
                    self.hold.add(source, self.sink.split(batch) if part == "media" else batch)
                    count += len(batch)
                if not batches:
                    break
                if not drain:
                    if capture.ready():
                        behind = min(behind, float(batches[-1].times.max()))
                    break
        return count == 0, behind

    def on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "frames":
            self.hold.add(len(self.captures), FrameBatch.from_frames(message[1]))
        elif kind == "ended":
            self.sink.owner_ended(message[1])
        elif kind == "policy":
            try:
                self.recorder.set_decider(PolicyDecider(self._policy(message[1])))
            except PolicyError as exc:
                log.error("policy.refused", worker=self.me, reason=str(exc))
        elif kind == "start":
            _, request, serial, by = message
            outcome = on_demand_start(self.recorder, self.sink, serial, by)
            self.channel.send(("started", request, str(outcome)))
        elif kind == "stop":
            self.stopping = True

    def _feed(self, batch: FrameBatch | None) -> None:
        if batch is not None:
            try:
                self.recorder.feed_batch(batch)
            except Exception:  # one bad batch must not stop the recorder
                log.exception("recorder.batch_failed", frames=len(batch), worker=self.me)

    def _stats(self, now: float) -> dict[str, Any]:
        owned = self.sink.owned_call_ids
        return {"counters": self.recorder.counters(), "pid": os.getpid(), **on_demand_report(self.recorder, self.sink),
                "one_sided": [c for c in self.recorder.one_sided_recordings(now, 10.0) if c in owned],
                "capture": [capture.stats() for capture, _ in self.captures], **self.sink.stats}

    def _stop(self) -> int:
        """SIGTERM to the daemon: the rings drained, every frame fed, every
        open call closed (incomplete, as one worker does)."""
        self._read_rings(drain=True)
        self._feed(self.hold.release(float("inf")))
        self.recorder.finish("shutdown")
        self.channel.send(("stats", self._stats(time.time())))
        self.channel.send(("stopped",))
        self.channel.flush()
        return 0


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    sock.setblocking(True)
    channel = Channel(sock)
    messages: list[Any] = []
    while not messages:
        select.select([sock], [], [])
        messages = channel.receive()
    init = messages.pop(0)
    logs.configure(init["log_level"])
    tune_gc()
    worker = Worker(channel, init)
    for message in messages:
        worker.on_message(message)
    return worker.run()


def _entry(run: Callable[[list[str]], int]) -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    _entry(main)
