"""`callrec run`: the live recorder under systemd.

Lifecycle as uvicorn does it: start (policy, index, crash recovery, capture
sockets, status socket), READY=1, serve (capture readiness drives the
recorder; a one-second timer drives time, health, STATUS and the watchdog),
then on SIGTERM/SIGINT a graceful stop that closes every open recording
(marked incomplete, playable, indexed) and exits 0.  SIGHUP reloads the
policy; a broken file is refused and the running policy stays.
"""
from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog

from access.service import AccessService
from announcer.audio import AnnouncementAudio, AudioError, load_announcement, load_warning
from announcer.service import AnnouncerService
from policy.announcement import exemption_summary
from policy.decide import PolicyDecider
from policy.loader import PolicyError, load_policy
from policy.schema import Policy
from recorder.batch import FrameBatch, join_batches
from recorder.engine import Recorder
from recorder.live_capture import LiveCapture
from storage.anchor import export_anchor
from storage.keys import MasterKeyError
from storage.layout import ensure_private_dir
from storage.ledger import Event, LedgerError
from storage.lock import DataDirLock
from storage.marks import KeypadMarks
from storage.recordings import RecordingStore
from storage.recovery import recover_store
from storage.store import Store, StoreError
from storage.sweep import sweep
from web.daemon_control import control_path
from wire.errors import CallrecError

from . import logs
from .central import CentralSync, enable_outbox
from .config import Config, load_config
from .context import tune_gc
from .control import Control, serve_control
from .health import Observations, Problem, assess
from .sdnotify import Notifier, watchdog_interval
from .site_server import SiteFetchServer
from .workers import WorkerPool

log = structlog.get_logger("callrec.daemon")

CLOCK_AND_MEDIA_COUNTERS = ("clock_steps", "clock_strays", "clock_gaps", "rtp_foreign")
"""The recorder's counters `callrec status` shows for the capture clock
(steps followed, stray timestamps, gaps taken as time) and for RTP aimed
at calls that was not theirs."""

MAX_BLOCKS_PER_WAKEUP = 8
FEED_BYTES = 8 << 20
"""The recorder is fed once this much of a source's ring has been read (or
FEED_SECONDS after its first block): several ring blocks as one FrameBatch,
because the batched media path costs per stream and batch as well as per
frame (recorder.batch.join_batches).  As `callrec replay`'s batches."""
FEED_SECONDS = 0.2
"""How long frames read from a ring wait for more before they are fed: far
inside the recorder's reordering window, and the clock's once-a-second
advance feeds them first."""
DAEMON_ACTOR = "callrec daemon"
POLICY_HASH_SETTING = "policy_sha256"
BYTES_PER_CALL_SECOND = 16_000
"""Stereo G.711 at rest, about: the reserve a sweep keeps for calls under way."""
UNHEALTHY_RETENTION = frozenset({"minimum_period_at_risk", "only_held_left"})


class PacketSource(Protocol):
    """What the daemon needs from a live capture (recorder.live_capture)."""

    def fileno(self) -> int: ...
    def read_batches(self, max_blocks: int) -> list[FrameBatch]: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def open_live_source(interface: str, config: Config) -> PacketSource:
    return LiveCapture(interface, promiscuous=config.promiscuous, sip_ports=tuple(config.sip_ports))


class Daemon:
    """One running recorder; `run()` returns the process exit status."""

    def __init__(self, config: Config, config_path: Path | None = None,
                 open_source: Any = open_live_source) -> None:
        self.config = config
        self.config_path = config_path
        self._open_source = open_source
        self.policy = Policy()
        self._sources: dict[str, PacketSource] = {}
        self._pending: dict[PacketSource, list[FrameBatch]] = {}
        """Ring blocks read and not yet fed, per source (FEED_BYTES, FEED_SECONDS)."""
        self._pending_bytes: dict[PacketSource, int] = {}
        self._feed_timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._notifier = Notifier()
        self._started = time.time()
        self._last_sip: float | None = None
        self._last_rtp: float | None = None
        self._seen_sip = 0
        self._seen_rtp = 0
        self._kernel_drops = 0
        self._reported_drops = 0
        self._problems: list[Problem] = []
        self._packets_last = 0
        self._pps = 0.0
        self._retention: list[Problem] = []
        self._overdue_logged: tuple[str, ...] = ()
        self._store_bytes: int | None = None
        self.announcer: AnnouncerService | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._sweep_due = asyncio.Event()
        self._reserved_for = 0
        self._sweeping: asyncio.Task[None] | None = None
        self._anchored_on: str | None = None
        self.pool: WorkerPool | None = None
        """The capture workers, with `capture_workers` above 1 (callrec.workers)."""
        self.central: CentralSync | None = None

    # ---- start ------------------------------------------------------------
    async def run(self) -> int:
        config = self.config
        try:
            self.policy = load_policy(config.policy) if config.policy else Policy()
        except PolicyError as exc:
            log.error("policy.refused", reason=str(exc))
            return 2
        ensure_private_dir(config.data_dir)
        with DataDirLock(config.data_dir):
            try:
                store = Store.open(config.data_dir, ZoneInfo(self.policy.timezone), config.key_file,
                                   create_key=config.create_key, archive_dir=config.archive_dir,
                                   anchor_dir=config.anchor_dir)
            except (StoreError, MasterKeyError) as exc:
                log.error("store.refused", reason=str(exc))
                return 2
            try:
                return await self._serve(store)
            finally:
                store.close()

    async def _serve(self, data: Store) -> int:
        config = self.config
        tz = data.tz
        if config.central is not None:
            enable_outbox(data)
            self.central = CentralSync(config.central, data)
        recovered = recover_store(data, DAEMON_ACTOR)
        self.data = data
        self.store = RecordingStore(config.data_dir, data.index, tz, data.master, anchor_dir=data.anchor_dir)
        self._note_policy()
        # Harassment marks keyed on extensions: stored, ledgered and logged at once (storage/marks.py).
        self.marks = KeypadMarks(data, self.policy.harassment, self.store)
        loop = asyncio.get_running_loop()
        if config.capture_workers > 1:
            self.pool = WorkerPool(config, self.store, self.marks)
            self.recorder = self.pool  # type: ignore[assignment]  # answers for the workers' recorders
            try:
                self.pool.open()
            except OSError as exc:
                log.error("capture.failed", interface=",".join(config.interfaces), reason=exc.strerror or str(exc))
                return 1
            await self.pool.start()
        else:
            self.recorder = Recorder(PolicyDecider(self.policy), self.store, self.marks)
        self.control = Control(self.recorder, self.store)
        try:
            for name in config.interfaces if self.pool is None else ():
                source = self._open_source(name, config)
                self._sources[name] = source
                loop.add_reader(source.fileno(), self._drain, source)
        except OSError as exc:
            log.error("capture.failed", interface=name, reason=exc.strerror or str(exc))
            self._close_sources(loop)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if config.announcer is not None:
            try:
                self.announcer = AnnouncerService(config.announcer, self.policy, self._announcement(self.policy),
                                                  data.index.path, self._warning(self.policy))
                await self.announcer.start()
            except (AudioError, OSError) as exc:
                log.error("announcer.failed", reason=str(exc))
                self._close_sources(loop)
                if self.pool is not None:
                    await self.pool.stop()
                    self.pool.close()
                return 1
        status_server = await self._start_status_server()
        site_fetch = await self._start_site_fetch(data)
        control_server = await serve_control(control_path(config.status_path), self.control)
        log.info("daemon.started", interfaces=",".join(config.interfaces), recovered=len(recovered))
        self._notifier.notify(READY=1, STATUS=self.status_line())
        timer = asyncio.create_task(self._every_second())
        sweeper = asyncio.create_task(self._sweep_periodically())
        syncer = asyncio.create_task(self.central.run(self._stopping)) if self.central is not None else None
        try:
            await self._stopping.wait()
        finally:
            self._notifier.notify(STOPPING=1, STATUS="closing open recordings")
            timer.cancel()
            sweeper.cancel()
            if self.announcer is not None:
                await self.announcer.stop()
            if self._sweeping is not None:
                await asyncio.gather(self._sweeping, return_exceptions=True)
            for source in self._sources.values():
                self._drain(source, drain_all=True)
            self._feed_all()
            self._close_sources(loop)
            if self.pool is not None:
                await self.pool.stop()
                self.pool.close()
            else:
                self.recorder.finish("shutdown")
            if syncer is not None:
                await asyncio.gather(syncer, return_exceptions=True)
            self.store.close()
            self.marks.close()
            status_server.close()
            await status_server.wait_closed()
            if site_fetch is not None:
                await site_fetch.close()
            self.config.status_path.unlink(missing_ok=True)
            control_server.close()
            await control_server.wait_closed()
            control_path(self.config.status_path).unlink(missing_ok=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            log.info("daemon.stopped")
            self._notifier.close()
        return 0

    def stop(self) -> None:
        self._stopping.set()

    def _close_sources(self, loop: asyncio.AbstractEventLoop) -> None:
        for source in self._sources.values():
            loop.remove_reader(source.fileno())
            source.close()
        self._sources.clear()

    # ---- retention ----------------------------------------------------------
    async def _sweep_periodically(self) -> None:
        """At start, every sweep interval, and as soon as more calls record
        than the last sweep kept room for (so the ring makes room before the
        store would pass its capacity), in a worker thread with its own index
        connection, so erasing never stalls capture."""
        while True:
            self._reserved_for = active = self.recorder.active_recordings()
            reserve = int(active * (self.config.sweep_interval_seconds + 60) * BYTES_PER_CALL_SECOND)
            self._sweep_due.clear()
            self._sweeping = asyncio.create_task(asyncio.to_thread(self._sweep_once, time.time(), reserve))
            try:
                await asyncio.shield(self._sweeping)
            except Exception as exc:  # a failed sweep must not stop recording; it is logged and retried
                log.error("retention.sweep_failed", reason=str(exc))
            try:
                await asyncio.wait_for(self._sweep_due.wait(), self.config.sweep_interval_seconds)
            except TimeoutError:
                pass

    def _sweep_once(self, now: float, reserve: int) -> None:
        store = self.data.for_thread()
        try:
            result = sweep(store, self.policy.retention, now, DAEMON_ACTOR, incoming_bytes=reserve)
            overdue = self._overdue_copies(store)
            self._store_bytes = store.index.used_bytes()
        finally:
            store.close()
        plan = result.plan
        self._retention = [Problem(w.code, w.message) for w in plan.warnings] + overdue
        refusing = next((w.message for w in plan.warnings if plan.stop_recording), None)
        if refusing != self.store.refusing:
            if refusing:
                log.critical("recording.stopped_by_retention", reason=refusing)
            else:
                log.warning("recording.resumed")
            self.store.refusing = refusing

    def _overdue_copies(self, store: Store) -> list[Problem]:
        """Copies past their disposal deadline (さいたま 第4条6(2)), a warning until someone
        records their disposal; logged once each time the set of late copies changes."""
        if self.policy.access is None:
            return []
        with AccessService(store, self.policy) as access:
            late = access.overdue_copies()
        numbers = tuple(c.number for c in late)
        if numbers != self._overdue_logged:
            self._overdue_logged = numbers
            if numbers:
                log.warning("copies.overdue", copies=",".join(numbers))
        return [Problem("copy_overdue", f"copy {c.number} (request {c.request}, held by {c.holder}) was due for "
                        f"disposal on {c.deadline}: record it with `callrec copies dispose {c.number}`")
                for c in late]

    def _announcement(self, policy: Policy) -> AnnouncementAudio:
        """The policy's announcement, a relative path read beside the policy file."""
        return load_announcement(policy.announcement, self.config.policy.parent if self.config.policy else None)

    def _warning(self, policy: Policy) -> AnnouncementAudio | None:
        """The policy's warning announcement for marked numbers, if it names one, beside the policy file."""
        return load_warning(policy, self.config.policy.parent if self.config.policy else None)

    def _note_policy(self) -> None:
        """A ledger entry whenever the policy in force changes (its hash)."""
        path = self.config.policy
        content = path.read_bytes() if path else self.policy.model_dump_json().encode()
        digest = hashlib.sha256(content).hexdigest()
        index = self.data.index
        if index.setting(POLICY_HASH_SETTING) != digest:
            self.data.ledger.append(Event.POLICY_CHANGED, DAEMON_ACTOR, self.data.now(), sha256=digest,
                                    file=str(path) if path else "built-in default",
                                    organisation=self.policy.organisation,
                                    notice_exceptions=exemption_summary(self.policy))
            index.set_setting(POLICY_HASH_SETTING, digest)

    # ---- serve ------------------------------------------------------------
    def _drain(self, source: PacketSource, drain_all: bool = False) -> None:
        """Frames from the kernel's ring, a few blocks at a time so that timers
        and signals still run under load, each block handed back to the
        kernel as soon as it is copied; they reach the recorder as one
        FrameBatch (its batched media path) once FEED_BYTES of them are read,
        FEED_SECONDS after the first, once they reach the recorder's next
        checkpoint (so a crash loses no more than fed frame by frame), before
        the clock advances, and at the end (``drain_all``)."""
        held = self._pending.setdefault(source, [])
        read = 0
        while drain_all or read < MAX_BLOCKS_PER_WAKEUP:
            batches = source.read_batches(1)
            if not batches:
                break
            held.extend(batches)
            self._pending_bytes[source] = self._pending_bytes.get(source, 0) + sum(len(b.data) for b in batches)
            due = any(len(b) and b.times[-1] >= self.recorder.next_tick for b in batches)
            if due or self._pending_bytes[source] >= FEED_BYTES:
                self._feed(source)
                held = self._pending.setdefault(source, [])
            read += 1
        if drain_all:
            self._feed(source)
        elif held and self._feed_timer is None:
            self._feed_timer = asyncio.get_running_loop().call_later(FEED_SECONDS, self._feed_all)

    def _feed_all(self) -> None:
        if self._feed_timer is not None:
            self._feed_timer.cancel()
            self._feed_timer = None
        for source in list(self._pending):
            self._feed(source)

    def _feed(self, source: PacketSource) -> None:
        """The blocks read from ``source`` into the recorder as one batch.  A
        bug that a batch trips is logged and that batch dropped; capture goes
        on for every other call."""
        pieces = self._pending.pop(source, [])
        self._pending_bytes.pop(source, None)
        if not pieces:
            return
        batch = join_batches(pieces)
        del pieces
        try:
            self.recorder.feed_batch(batch)
        except Exception:  # one bad batch must not stop the recorder
            log.exception("recorder.batch_failed", frames=len(batch))

    async def _every_second(self) -> None:
        interval = watchdog_interval()
        last_ping = 0.0
        while True:
            await asyncio.sleep(1.0 if interval is None else min(1.0, interval))
            now = time.time()
            self._feed_all()  # frames read are fed before time passes: the clock never runs ahead of them
            self.recorder.advance(now)
            self.store.retry_rows()
            if self.recorder.active_recordings() > self._reserved_for:
                self._sweep_due.set()
            if self._syncing is None or self._syncing.done():
                self._syncing = asyncio.create_task(asyncio.to_thread(sync_filesystem, self.config.data_dir))
            self._observe(now)
            self._export_anchor_daily(now)
            self._notifier.notify(STATUS=self.status_line())
            if interval is not None and now - last_ping >= interval:
                self._notifier.notify(WATCHDOG=1)
                last_ping = now

    def _observe(self, now: float) -> None:
        counters = self.recorder.counters()
        if counters["sip_messages"] > self._seen_sip:
            self._seen_sip, self._last_sip = counters["sip_messages"], now
        if counters["rtp_packets"] > self._seen_rtp:
            self._seen_rtp, self._last_rtp = counters["rtp_packets"], now
        packets = counters["frames"]
        self._pps = float(packets - self._packets_last)
        self._packets_last = packets
        self._kernel_drops = sum(int(s.stats().get("kernel_drops", 0)) for s in self._sources.values())
        if self.pool is not None:
            self._kernel_drops += self.pool.kernel_drops()
        usage = shutil.disk_usage(self.config.data_dir)
        held = self.recorder.on_demand.held_call_ids()  # nobody asked for them: not even their Call-IDs are logged
        obs = Observations(
            now=now, started=self._started, last_sip=self._last_sip, last_rtp=self._last_rtp,
            kernel_drops=self._kernel_drops, disk_used_percent=100.0 * usage.used / usage.total,
            active_calls=self.recorder.active_recordings(),
            one_sided_calls=[call_id for call_id in self.recorder.one_sided_recordings(now, 10.0)
                             if call_id not in held],
        )
        local = datetime.fromtimestamp(now, ZoneInfo(self.policy.timezone))
        problems = assess(obs, self.config.health, local, self._reported_drops)
        self._reported_drops = self._kernel_drops
        new = {p.code for p in problems} - {p.code for p in self._problems}
        for problem in problems:
            if problem.code in new or problem.code == "kernel_drops":
                log.warning("health.problem", code=problem.code, detail=problem.message)
        for code in {p.code for p in self._problems} - {p.code for p in problems}:
            log.info("health.recovered", code=code)
        self._problems = problems
        self._disk_percent = obs.disk_used_percent

    def _export_anchor_daily(self, now: float) -> None:
        """Once a day (and at start) the signed heads of both ledgers go into
        the journal, so that a log server receiving it holds a copy no one on
        this machine can put back (storage/anchor.py)."""
        day = datetime.fromtimestamp(now, self.data.tz).date().isoformat()
        if day == self._anchored_on:
            return
        self._anchored_on = day
        try:
            export = export_anchor(self.data, self.data.now())
        except (LedgerError, OSError) as exc:
            log.error("ledger.anchor_export_failed", reason=str(exc))
            return
        log.info("ledger.anchor_exported", anchor=json.dumps(export, ensure_ascii=False, sort_keys=True))

    def status_line(self) -> str:
        recorder = getattr(self, "recorder", None)
        calls = recorder.active_recordings() if recorder is not None else 0
        return (f"{calls} active calls, {self._pps:.0f} packets/s, {self._kernel_drops} kernel drops, "
                f"disk {getattr(self, '_disk_percent', 0.0):.0f}% used")

    def _storage_problems(self) -> list[Problem]:
        """Storage faults under way (a full disk): unhealthy until they clear."""
        store = getattr(self, "store", None)
        if store is None:
            return []
        lost = store.faults.totals()
        counted = f"; calls affected so far: {', '.join(f'{n} {what}' for what, n in sorted(lost.items()))}" \
            if lost else ""
        return [Problem("storage", f"{code}: {reason}{counted}") for code, reason in store.faults.active.items()
                if code != "not_recorded_retention"]

    def status(self) -> dict[str, Any]:
        problems = (self._problems + [p for p in self._retention if p.code in UNHEALTHY_RETENTION]
                    + self._storage_problems())
        return {
            "healthy": not problems,
            "problems": [{"code": p.code, "message": p.message} for p in problems],
            "warnings": [{"code": p.code, "message": p.message} for p in self._retention
                         if p.code not in UNHEALTHY_RETENTION],
            "recording_stopped": self.store.refusing,
            "storage_faults": self.store.faults.as_dict(),
            "announcer_calls": self.announcer.active_calls if self.announcer is not None else None,
            "active_calls": self.recorder.active_recordings(),
            "packets_per_second": self._pps,
            "kernel_drops": self._kernel_drops,
            "calls_evicted": self.recorder.counters().get("calls_evicted", 0),
            "tombstones_evicted": self.recorder.counters().get("tombstones_evicted", 0),
            **{key: self.recorder.counters().get(key, 0) for key in CLOCK_AND_MEDIA_COUNTERS},
            "disk_used_percent": round(getattr(self, "_disk_percent", 0.0), 1),
            "store_bytes": self._store_bytes,
            "capacity_bytes": self.policy.retention.capacity,
            "last_sip": self._last_sip,
            "last_rtp": self._last_rtp,
            "interfaces": list(self._sources) or list(self.config.interfaces),
            "capture_workers": self.pool.status() if self.pool is not None else [],
            "policy": str(self.config.policy) if self.config.policy else "built-in default",
            "uptime_seconds": round(time.time() - self._started),
            "on_demand": self.control.live(),
            "central": self.central.status(time.time()) if self.central is not None else None,
        }

    async def _start_site_fetch(self, data: Store) -> SiteFetchServer | None:
        """The centre's way to the recordings (config `site_fetch:`).  If it cannot start (not
        enrolled, port taken) the site records on and says so: a site records alone."""
        if self.config.site_fetch is None:
            return None
        server = None
        try:
            server = SiteFetchServer(data, self.config.site_fetch.listen, self.config.site_fetch.port)
            await server.start()
        except (CallrecError, OSError) as exc:
            log.error("site_fetch.failed", reason=str(exc))
            if server is not None:
                await server.close()
            return None
        return server

    async def _start_status_server(self) -> asyncio.AbstractServer:
        path = self.config.status_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(json.dumps(self.status(), ensure_ascii=False).encode() + b"\n")
            try:
                await writer.drain()
            finally:
                writer.close()

        old_umask = os.umask(0o117)
        try:
            server = await asyncio.start_unix_server(answer, path=str(path))
        finally:
            os.umask(old_umask)
        return server

    # ---- reload -----------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: a new policy for new calls; calls under way keep theirs."""
        if self.config_path is not None:
            try:
                new_config = load_config(self.config_path)
            except PolicyError as exc:
                log.error("config.refused", reason=str(exc))
                return
            needs = self.config.restart_needed(new_config)
            if needs:
                log.warning("config.restart_needed", settings=",".join(needs))
            self.config = self.config.model_copy(update={
                "policy": new_config.policy, "log_level": new_config.log_level, "health": new_config.health})
        try:
            policy = load_policy(self.config.policy) if self.config.policy else Policy()
        except PolicyError as exc:
            log.error("policy.refused", file=exc.path, line=exc.line, field=exc.field, reason=exc.reason)
            return
        if self.announcer is not None:
            try:
                self.announcer.update_policy(policy, self._announcement(policy), self._warning(policy))
            except AudioError as exc:
                log.error("policy.refused", file=str(self.config.policy), reason=str(exc))
                return
        self.policy = policy
        self.marks.book.section = policy.harassment
        if self.pool is not None:
            self.pool.reload(self.config.policy)
        else:
            self.recorder.set_decider(PolicyDecider(policy))
        self._note_policy()
        log.info("policy.loaded", file=str(self.config.policy or "built-in default"))


def sync_filesystem(folder: Path) -> None:
    """Every recording written so far made durable with one syncfs(2) for
    the data folder's filesystem, once a second and off the event loop: a
    power loss then costs at most the last second, as a crash does."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            log.error("store.sync_failed", reason=os.strerror(err))
    finally:
        os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)


def run_daemon(config_path: Path | None) -> int:
    config = load_config(config_path) if config_path is not None else Config()
    logs.configure(config.log_level)
    tune_gc()
    return asyncio.run(Daemon(config, config_path).run())
