"""Several capture workers (``capture_workers: N``): the daemon's side.

Why processes: the recorder core costs a few microseconds of Python per
packet, and one interpreter runs on one core.  A 1 Gbit/s mirror port
(about 525,000 RTP packets a second) needs the cores the machine has.

Who sees what.  For each interface the daemon makes, per worker, two packet
sockets and hands them to the worker (inherited descriptors):

* a media socket, member of one ``PACKET_FANOUT`` group: the kernel spreads
  the UDP media over the members by a symmetric flow function of ours
  (recorder.fanout), so both directions of symmetric RTP meet in one worker;
* a signalling socket outside the group: every worker reads all SIP (and
  every IP fragment).

Who decides what.  Every worker runs the unchanged recorder core with the
same policy over the same SIP, so every worker takes the same decisions,
at the same message: a call starts, is excluded, changes its media
addresses, ends.  No decision travels between processes, so none can arrive
after the media it governs; an excluded line is excluded by the same
policy in every worker, and no worker ever hands it to storage.  Each call
has one owner, computed alike by every worker from the call's SDP
(recorder.fanout.call_owner); only the owner writes it.  A flow of the
call that lands on another worker (asymmetric RTP, NAT, a B2BUA's other
leg) is forwarded by that worker, through the daemon, to the owner.

One store.  Workers write nothing.  Their sinks send the owner's calls
(begin, audio, checkpoints, seal) over a socket pair to the daemon, which
runs them against the one RecordingStore: one index, one capacity ring, one
ledger, one seal chain, one writer, as with one worker.  The audio travels
as the recorder commits it (16 kB a second per call).

A worker that dies.  The daemon sees its socket close.  What the worker had
handed over is written, its open recordings are left exactly as a crash
leaves them and repaired by storage.recovery (sealed incomplete,
`recovered_after_crash`, playable up to the last second received), the
other workers stop forwarding to it, and a new worker starts on the same
sockets: same place in the fanout group, same ring, nothing re-joined.
The calls under way when it died are not picked up again (as after a
daemon crash): their SIP start was before the new worker.

The daemon reads each socket's kernel counters (packets, drops) itself, so
`callrec status` shows them per worker even while a worker is down.

The console's on-demand start.  Each worker lists the on-demand calls it
owns in its stats; the daemon gives each a serial of its own (which the
recording keeps if it starts), and passes the console's start to the owner,
which starts the call at its capture time and answers (callrec.control
waits for that answer).  A line's DTMF start code works in the owner alone.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from recorder.live_capture import LiveCapture
from recorder.on_demand import LiveCall, StartOutcome
from recorder.record import CallResult, CallSnapshot, MarkSink, RecordingHandle
from storage.recordings import RecordingStore
from storage.recovery import recover_unfinished

from .config import Config
from .worker_channel import Reader, encode

__all__ = ["MEDIA_RING_BYTES", "SIGNALLING_RING_BYTES", "WorkerPool"]

log = structlog.get_logger("callrec.workers")

MEDIA_RING_BYTES = 64 << 20
MEDIA_BLOCK_BYTES = 256 << 10
MEDIA_BLOCK_TIMEOUT_MS = 20
SIGNALLING_RING_BYTES = 16 << 20
SIGNALLING_BLOCK_BYTES = 64 << 10
SIGNALLING_BLOCK_TIMEOUT_MS = 10
RESTART_DELAY_SECONDS = 0.5
START_SECONDS = 5.0
"""How long the console's on-demand start waits for the owning worker's answer."""
STOP_SECONDS = 30.0
SIP_COUNTERS = frozenset({"sip_messages", "sip_without_call_id", "sdp_errors", "calls", "excluded_calls",
                          "calls_evicted", "tombstones_evicted", "legs_linked", "sip_malformed"})
"""Counters of what every worker sees alike (all the SIP): reported once, not summed."""


@dataclass(slots=True)
class _Open:
    serial: int
    key: tuple[str, float]
    handle: RecordingHandle | None = None


@dataclass(slots=True)
class _Worker:
    index: int
    captures: list[tuple[LiveCapture, str]]
    proc: subprocess.Popen[bytes] | None = None
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    calls: dict[int, _Open] = field(default_factory=dict)
    on_demand: dict[int, int] = field(default_factory=dict)
    """The worker's serials of its on-demand calls -> the daemon's serial, given when the console first
    sees the call and kept by its recording if somebody starts it."""
    stopped: bool = False


class _PoolOnDemand:
    """The console's view of the on-demand calls (callrec.control): each is
    listed by the worker that owns it (its stats), under a serial of the
    daemon's that the recording keeps once it starts; a start is passed to
    that worker, which starts it at its own capture time and answers."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._requests = 0

    @property
    def stats(self) -> dict[str, int]:
        return {}

    def live(self) -> list[LiveCall]:
        pool = self._pool
        out = []
        for worker in pool.workers:
            for call in worker.report.get("on_demand", ()):
                serial = worker.on_demand.get(call.serial)
                if serial is None:
                    serial = worker.on_demand[call.serial] = pool._serial()
                out.append(dataclasses.replace(call, serial=serial))
        return sorted(out, key=lambda c: c.serial)

    def held_call_ids(self) -> set[str]:
        return {call_id for worker in self._pool.workers for call_id in worker.report.get("held", ())}

    async def start(self, serial: int, by: str, now: float) -> StartOutcome:
        """Passed to the owning worker; unknown if no worker lists the call, or
        if its worker does not answer within START_SECONDS (it died)."""
        for worker in self._pool.workers:
            local = next((k for k, v in worker.on_demand.items() if v == serial), None)
            if local is None or worker.writer is None:
                continue
            self._requests += 1
            request = self._requests
            answer = self._waiting[request] = asyncio.get_running_loop().create_future()
            worker.writer.write(encode(("start", request, local, by)))
            try:
                return StartOutcome(await asyncio.wait_for(answer, START_SECONDS))
            except TimeoutError:
                return StartOutcome.UNKNOWN
            finally:
                self._waiting.pop(request, None)
        return StartOutcome.UNKNOWN

    def answered(self, request: int, outcome: str) -> None:
        answer = self._waiting.get(request)
        if answer is not None and not answer.done():
            answer.set_result(outcome)


class WorkerPool:
    """The capture workers of one daemon, and the daemon's recorder for them:
    the methods the daemon calls on a Recorder (active_recordings, counters,
    one_sided_recordings, advance, on_demand) answer for all workers."""

    def __init__(self, config: Config, store: RecordingStore, marks: MarkSink | None = None) -> None:
        self.config = config
        self.store = store
        self.marks = marks
        """Where the workers' harassment marks go (storage.marks.KeypadMarks): the one store."""
        self.count = config.capture_workers
        self.workers: list[_Worker] = []
        self.on_demand = _PoolOnDemand(self)
        self._next_serial = 0
        self._stopping = False
        self._policy: Path | None = config.policy

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ---- sockets and processes ----------------------------------------------
    def open(self) -> None:
        """Every worker's sockets, in the daemon (CAP_NET_RAW is needed once)."""
        config = self.config
        self.workers = [_Worker(k, []) for k in range(self.count)]
        try:
            for i, interface in enumerate(config.interfaces):
                group = (os.getpid() + i) & 0xFFFF
                for worker in self.workers:
                    media = LiveCapture(interface, promiscuous=config.promiscuous, ring_bytes=MEDIA_RING_BYTES,
                                        block_bytes=MEDIA_BLOCK_BYTES, block_timeout_ms=MEDIA_BLOCK_TIMEOUT_MS,
                                        sip_ports=tuple(config.sip_ports), part="media", fanout_group=group)
                    worker.captures.append((media, "media"))
                    sip = LiveCapture(interface, promiscuous=config.promiscuous,
                                      ring_bytes=SIGNALLING_RING_BYTES, block_bytes=SIGNALLING_BLOCK_BYTES,
                                      block_timeout_ms=SIGNALLING_BLOCK_TIMEOUT_MS,
                                      sip_ports=tuple(config.sip_ports), part="signalling")
                    worker.captures.append((sip, "signalling"))
        except OSError:
            self.close()
            raise

    async def start(self) -> None:
        for worker in self.workers:
            await self._spawn(worker)

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker.proc = _start_process(theirs, [capture.fileno() for capture, _ in worker.captures])
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker.writer = writer
        worker.stopped = False
        writer.write(encode({
            "index": worker.index, "workers": self.count, "log_level": self.config.log_level,
            "policy": str(self._policy) if self._policy else None,
            "captures": [(capture.fileno(), capture.interface, part,
                          MEDIA_RING_BYTES if part == "media" else SIGNALLING_RING_BYTES,
                          MEDIA_BLOCK_BYTES if part == "media" else SIGNALLING_BLOCK_BYTES)
                         for capture, part in worker.captures]}))
        worker.task = asyncio.create_task(self._serve(worker, reader))
        log.info("worker.started", worker=worker.index, pid=worker.proc.pid, restarts=worker.restarts)

    async def _serve(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        messages = Reader()
        try:
            while data := await reader.read(1 << 20):
                for message in messages.feed(data):
                    try:
                        self._dispatch(worker, message)
                    except Exception:  # one bad message must not stop the daemon's side
                        log.exception("worker.message_failed", worker=worker.index, kind=message[0])
        except (ConnectionError, ValueError) as exc:
            log.error("worker.channel_failed", worker=worker.index, reason=str(exc))
        proc = worker.proc
        assert proc is not None
        status = await asyncio.to_thread(proc.wait)
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        if worker.stopped and self._stopping:
            return
        log.error("worker.died", worker=worker.index, pid=proc.pid, status=status)
        self._repair(worker)
        if not self._stopping:
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            worker.restarts += 1
            await self._spawn(worker)

    def _repair(self, worker: _Worker) -> None:
        """The dead worker's recordings: as after a crash (storage.recovery)."""
        worker.on_demand.clear()
        worker.report = {**worker.report, "on_demand": [], "held": []}
        ids = set()
        for entry in worker.calls.values():
            record_id = self.store.abandon(entry.serial, entry.handle)
            if record_id is not None:
                ids.add(record_id)
            self._ended(worker, entry.key)
        worker.calls.clear()
        if ids:
            self.store.retry_rows()
            store = self.store
            recovered = recover_unfinished(store.data_dir, store.index, store.tz, store.master, only=ids)
            store.flush_seals()
            log.warning("worker.calls_recovered", worker=worker.index, calls=len(recovered))

    # ---- messages --------------------------------------------------------------
    def _dispatch(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "append":
            entry = worker.calls.get(message[1])
            if entry is not None and entry.handle is not None:
                entry.handle.append(message[2])
        elif kind == "checkpoint":
            entry = worker.calls.get(message[1])
            if entry is not None and entry.handle is not None:
                entry.handle.checkpoint()
        elif kind == "forward":
            target = self.workers[message[1]] if 0 <= message[1] < self.count else None
            if target is not None and target.writer is not None:
                target.writer.write(encode(("frames", message[2])))
        elif kind == "begin":
            _, serial, call, origin = message
            entry = _Open(worker.on_demand.get(serial) or self._serial(), (call.sip_call_id, call.invite_ts))
            worker.calls[serial] = entry
            self.store.begin(_renumber(call, entry.serial), origin)
        elif kind == "open":
            _, serial, call, origin, encoding, rate = message
            entry = worker.calls.get(serial)
            if entry is not None:
                entry.handle = self.store.open_audio(_renumber(call, entry.serial), origin, encoding, rate)
        elif kind == "convert":
            entry = worker.calls.get(message[1])
            if entry is not None and entry.handle is not None:
                entry.handle.convert_to_l16()
        elif kind == "side":
            _, serial, channel, arrival, rtp, flow = message
            entry = worker.calls.get(serial)
            if entry is not None and entry.handle is not None:
                entry.handle.side_packet(channel, arrival, rtp, flow)
        elif kind in ("close", "noaudio"):
            entry = worker.calls.pop(message[1], None)
            worker.on_demand.pop(message[1], None)
            if entry is not None:
                result = _result_renumbered(message[2], entry.serial)
                if entry.handle is not None and kind == "close":
                    entry.handle.close(result)
                else:
                    self.store.finish_without_audio(result)
                self._ended(worker, entry.key)
        elif kind == "mark":
            _, serial, call, category, at = message
            entry = worker.calls.get(serial)
            if entry is not None and self.marks is not None:
                self.marks.mark(_renumber(call, entry.serial), category, at)
        elif kind == "stats":
            worker.report = message[1]
            listed = {call.serial for call in worker.report.get("on_demand", ())}
            for gone in [k for k in worker.on_demand if k not in listed and k not in worker.calls]:
                del worker.on_demand[gone]
        elif kind == "started":
            self.on_demand.answered(message[1], message[2])
        elif kind == "stopped":
            worker.stopped = True

    def _serial(self) -> int:
        self._next_serial += 1
        return self._next_serial

    def _ended(self, owner: _Worker, key: tuple[str, float]) -> None:
        """The others stop forwarding the call's flows."""
        for worker in self.workers:
            if worker is not owner and worker.writer is not None:
                worker.writer.write(encode(("ended", key)))

    # ---- the daemon's recorder ------------------------------------------------
    def reload(self, policy: Path | None) -> None:
        self._policy = policy
        for worker in self.workers:
            if worker.writer is not None:
                worker.writer.write(encode(("policy", str(policy) if policy else None)))

    def set_decider(self, decider: object) -> None:
        """The daemon's reload: the workers read the policy file themselves."""
        self.reload(self._policy)

    def advance(self, now: float) -> None:
        """Each worker keeps its own time."""

    def active_recordings(self) -> int:
        return sum(len(worker.calls) for worker in self.workers)

    def one_sided_recordings(self, now: float, after: float) -> list[str]:
        return [call for worker in self.workers for call in worker.report.get("one_sided", ())]

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {"sip_messages": 0, "rtp_packets": 0, "frames": 0}  # before the first report
        for worker in self.workers:
            for name, value in worker.report.get("counters", {}).items():
                total[name] = max(total.get(name, 0), value) if name in SIP_COUNTERS else total.get(name, 0) + value
        return total

    def kernel_drops(self) -> int:
        return sum(item["kernel_drops"] for item in self.status())

    def status(self) -> list[dict[str, Any]]:
        """Per worker: its process, its sockets' kernel counters (read here, so
        they are there while a worker is down) and what it forwarded."""
        out = []
        for worker in self.workers:
            kernel = [capture.stats() for capture, _ in worker.captures]
            report = worker.report
            out.append({
                "worker": worker.index,
                "pid": worker.proc.pid if worker.proc is not None and worker.proc.poll() is None else None,
                "restarts": worker.restarts,
                "kernel_packets": sum(k["kernel_packets"] for k in kernel),
                "kernel_drops": sum(k["kernel_drops"] for k in kernel),
                "media_packets": sum(k["kernel_packets"] for k, (_, part) in zip(kernel, worker.captures, strict=True)
                                     if part == "media"),
                "active_calls": len(worker.calls),
                "frames_forwarded": report.get("frames_forwarded", 0),
                "rtp_packets": report.get("counters", {}).get("rtp_packets", 0),
            })
        return out

    async def stop(self) -> None:
        """SIGTERM: each worker drains its rings and closes its calls
        (incomplete, playable, indexed) before the daemon closes the store."""
        self._stopping = True
        for worker in self.workers:
            if worker.writer is not None:
                worker.writer.write(encode(("stop",)))
        tasks = [w.task for w in self.workers if w.task is not None]
        _, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS) if tasks else (set(), set())
        for worker in self.workers:
            if worker.task in pending and worker.proc is not None:
                log.error("worker.stop_timeout", worker=worker.index)
                worker.proc.send_signal(signal.SIGKILL)
        if pending:
            await asyncio.wait(pending)
        for worker in self.workers:
            if worker.calls:
                self._repair(worker)

    def close(self) -> None:
        for worker in self.workers:
            for capture, _ in worker.captures:
                capture.close()


def _start_process(channel: socket.socket, fds: list[int]) -> subprocess.Popen[bytes]:
    """The worker process, with its end of the channel and its sockets inherited (and nothing else)."""
    return subprocess.Popen([sys.executable, "-m", "callrec.capture_worker", str(channel.fileno())],
                            pass_fds=(channel.fileno(), *fds))


def _renumber(call: CallSnapshot, serial: int) -> CallSnapshot:
    return dataclasses.replace(call, serial=serial)


def _result_renumbered(result: CallResult, serial: int) -> CallResult:
    return dataclasses.replace(result, call=_renumber(result.call, serial))
