"""The asyncio adapters around the UA core: SIP over UDP and TCP, RTP sockets, one pacing clock,
the core's timers, and the notice log.

Pacing: every stream is sent from one grid of absolute deadlines (start + k × 20 ms) kept with
loop.call_at, so 200 streams cost one timer callback per 20 ms and no stream drifts: a late tick
sends the frames that are due (at most CATCH_UP per stream) and the next deadline stays on the
grid instead of being 20 ms after the late one.
"""
from __future__ import annotations

import asyncio
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from policy.decide import PolicyDecider
from policy.schema import Policy
from storage.notices import Notice, NoticeLog
from storage.warnings import WarningList
from wire.rtp import FRAME_MS, PAYLOAD_TYPES, Packetiser, frames
from wire.sip import SipParseError, SipStreamFramer

from .audio import AnnouncementAudio
from .config import AnnouncerConfig
from .effects import (
    CallEnded,
    CallKey,
    NoticeChanged,
    NoticeState,
    RedirectFailed,
    ReleasePort,
    RetargetPlayback,
    StartPlayback,
    StopPlayback,
)
from .media import Stream
from .outcomes import HandOverResult
from .sipmsg import Peer
from .transaction import T1, Send
from .ua import UserAgent, never_warned

__all__ = ["AnnouncerService"]

log = structlog.get_logger("callrec.announcer")

TICK = FRAME_MS / 1000
CATCH_UP = 5


@dataclass(slots=True)
class _Playback:
    sock: socket.socket
    stream: Stream
    packetiser: Packetiser
    frames: list[bytes]
    index: int = 0


class _RtpPorts:
    """Even ports of the configured range (RFC 3550 §11), each bound to a socket while in use."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, low: int, high: int) -> None:
        self._loop = loop
        self._address = address
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._free = list(range(low + (low % 2), high + 1, 2))
        self.sockets: dict[int, socket.socket] = {}

    def open(self) -> int | None:
        for _ in range(len(self._free)):
            port = self._free.pop(0)
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.bind((self._address, port))
            except OSError:
                sock.close()
                self._free.append(port)  # another program holds it now; it may be free later
                continue
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._drain, sock)
            self.sockets[port] = sock
            return port
        return None

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        """The PBX's RTP towards us is not needed; read it so the socket buffer never fills."""
        try:
            while True:
                sock.recv(2048)
        except OSError:
            return

    def release(self, port: int) -> None:
        sock = self.sockets.pop(port, None)
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
            self._free.append(port)

    def close(self) -> None:
        for port in list(self.sockets):
            self.release(port)


class _SipDatagrams(asyncio.DatagramProtocol):
    def __init__(self, service: AnnouncerService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.service.sip_datagram(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("announcer.udp_error", reason=str(exc))


class AnnouncerService:
    """The announcer as a service the daemon (or `callrec announcer`) runs: start(), stop().

    `warning` is the policy's warning announcement (harassment.warning), if it names one: the
    core plays it to callers whose number this adapter finds warned in the index (storage/warnings.py),
    read at each INVITE so a mark or a clear counts from the next call on."""

    def __init__(self, config: AnnouncerConfig, policy: Policy, audio: AnnouncementAudio, index_path: Path,
                 warning: AnnouncementAudio | None = None) -> None:
        self.config = config
        self.policy = policy
        self.audio = audio
        self.warning = warning
        self.index_path = index_path
        self._warnings: WarningList | None = None
        self.core: UserAgent | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._pending_tcp: dict[tuple[str, int], list[bytes]] = {}
        self._ports: _RtpPorts | None = None
        self._playing: dict[CallKey, _Playback] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._notices: NoticeLog | None = None
        self._rows: dict[CallKey, str] = {}
        self._redirects: dict[CallKey, tuple[str, float]] = {}
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active_calls(self) -> int:
        return len(self.core.calls) if self.core is not None else 0

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        cfg = self.config
        self._notices = NoticeLog(self.index_path, self.policy.timezone)
        self._ports = _RtpPorts(loop, cfg.listen_address, *cfg.rtp_ports)
        self.core = UserAgent(cfg, PolicyDecider(self.policy), self.audio, self._ports.open)
        self._arm_warning()
        if "udp" in cfg.transports:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _SipDatagrams(self), local_addr=(cfg.listen_address, cfg.listen_port))
        if "tcp" in cfg.transports:
            self._tcp = await asyncio.start_server(self._tcp_connection, cfg.listen_address, cfg.listen_port)
        self.core.start(loop.time())
        self._service()
        log.info("announcer.ready", address=cfg.listen_address, port=cfg.listen_port, transports=cfg.transports,
                 hand_over=str(cfg.hand_over), announcement_sha256=self.audio.sha256,
                 warning_sha256=self.warning.sha256 if self._warnings is not None and self.warning else None)

    def update_policy(self, policy: Policy, audio: AnnouncementAudio, warning: AnnouncementAudio | None = None) -> None:
        """SIGHUP: new calls get the new rules and announcement; calls under way keep theirs."""
        self.policy, self.audio, self.warning = policy, audio, warning
        if self.core is not None:
            self.core.decider = PolicyDecider(policy)
            self.core.audio = audio
            self._arm_warning()

    def _arm_warning(self) -> None:
        """Give the core the warning and the predicate over the index's marks, or neither."""
        assert self.core is not None
        if self._warnings is not None:
            self._warnings.close()
            self._warnings = None
        rule = self.policy.harassment.warning if self.policy.harassment is not None else None
        if rule is None or self.warning is None:
            self.core.warning, self.core.warned = None, never_warned
            return
        self._warnings = WarningList(self.index_path, rule, self.policy.numbering.country_code)
        self.core.warning, self.core.warned = self.warning, self._warned

    def _warned(self, number: str) -> bool:
        """The index is asked at each INVITE; a failing index plays the ordinary notice (the caller
        must still reach a person) and says so."""
        assert self._warnings is not None
        try:
            return self._warnings.warned(number, time.time())
        except sqlite3.Error as exc:
            log.error("announcer.warning_lookup_failed", reason=str(exc))
            return False

    async def stop(self) -> None:
        """Calls in progress are handed over at once; waits for them up to stop_timeout."""
        if self.core is None or self._loop is None:
            return
        self.core.stop(self._loop.time())
        self._service()
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.stop_timeout)
        except TimeoutError:
            log.error("announcer.stop_timeout", calls=len(self.core.calls))
        for handle in (self._timer, self._tick):
            if handle is not None:
                handle.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for writer in list(self._conns.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._ports is not None:
            self._ports.close()
        if self._notices is not None:
            self._notices.close()
        if self._warnings is not None:
            self._warnings.close()
        log.info("announcer.stopped")

    # ---- SIP in ---------------------------------------------------------------------
    def sip_datagram(self, data: bytes, peer: Peer) -> None:
        assert self.core is not None and self._loop is not None
        self.core.receive_datagram(data, peer, self._loop.time())
        self._service()

    async def _tcp_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        await self._read_tcp(Peer("tcp", host, port), reader, writer)

    async def _read_tcp(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.core is not None and self._loop is not None
        self._conns[(peer.host, peer.port)] = writer
        framer = SipStreamFramer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if isinstance(item, SipParseError):
                        log.debug("announcer.unparsable", peer=peer.host, reason=str(item))
                        continue
                    self.core.receive(item, peer, self._loop.time())
                self._service()
        except ConnectionError:
            pass
        finally:
            if self._conns.get((peer.host, peer.port)) is writer:
                del self._conns[(peer.host, peer.port)]
            writer.close()

    # ---- SIP out --------------------------------------------------------------------
    def _send(self, send: Send) -> None:
        peer = send.peer
        if peer.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(send.data, (peer.host, peer.port))
            return
        writer = self._conns.get((peer.host, peer.port))
        if writer is not None and not writer.is_closing():
            writer.write(send.data)
            return
        queue = self._pending_tcp.setdefault((peer.host, peer.port), [])
        queue.append(send.data)
        if len(queue) == 1:
            task = asyncio.ensure_future(self._connect(peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer) -> None:
        """A TCP flow we open (registration, or a PBX that dropped its connection)."""
        try:
            reader, writer = await asyncio.open_connection(peer.host, peer.port)
        except OSError as exc:
            log.error("announcer.tcp_connect_failed", peer=peer.host, port=peer.port, reason=str(exc))
            self._pending_tcp.pop((peer.host, peer.port), None)
            return
        for data in self._pending_tcp.pop((peer.host, peer.port), []):
            writer.write(data)
        await self._read_tcp(peer, reader, writer)

    # ---- effects and timers -----------------------------------------------------------
    def _service(self) -> None:
        core, loop = self.core, self._loop
        assert core is not None and loop is not None
        effects = core.pop_effects()
        for effect in effects:
            # Notices first: whatever SIP the same step sends, its notice is on disk before it leaves.
            if isinstance(effect, (NoticeChanged, CallEnded, RedirectFailed)):
                try:
                    self._record(effect)
                except sqlite3.Error as exc:  # a full or failing disk must not keep the caller from a person
                    log.error("announcer.notice_write_failed", call_id=effect.sip_call_id, reason=str(exc))
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)
            elif isinstance(effect, StartPlayback):
                self._start_playback(effect)
            elif isinstance(effect, RetargetPlayback):
                self._retarget(effect)
            elif isinstance(effect, StopPlayback):
                self._playing.pop(effect.key, None)
            elif isinstance(effect, ReleasePort):
                assert self._ports is not None
                self._ports.release(effect.port)
        deadline = core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer) if deadline is not None else None
            self._timer_at = deadline
        if core.idle and core.stopping:
            self._idle.set()

    def _on_timer(self) -> None:
        assert self.core is not None and self._loop is not None
        self._timer = self._timer_at = None
        self.core.handle_timer(self._loop.time())
        self._service()

    def _record(self, effect: NoticeChanged | CallEnded | RedirectFailed) -> None:
        """Write a call's notice: a row when the call arrives, brought up to date at each step."""
        assert self._notices is not None and self._loop is not None
        now = self._loop.time()
        if isinstance(effect, RedirectFailed):
            row = self._redirects.pop(effect.key, None)
            if row is not None:
                self._notices.set_hand_over(row[0], str(HandOverResult.REDIRECT_FAILED))
            return
        notice = self._notice(effect)
        final = isinstance(effect, CallEnded)
        row_id = self._rows.pop(effect.key, None) if final else self._rows.get(effect.key)
        if row_id is None:
            row_id = self._notices.record(notice)
            if not final:
                self._rows[effect.key] = row_id
        else:
            self._notices.update(row_id, notice)
        if final:
            for key, (_, until) in list(self._redirects.items()):
                if until <= now:
                    del self._redirects[key]
            if effect.hand_over is HandOverResult.REDIRECT_302:
                self._redirects[effect.key] = (row_id, now + 64 * T1 + 1)
            log.info("announcer.notice_recorded", notice_id=row_id, call_id=effect.sip_call_id,
                     outcome=str(effect.outcome))

    def _notice(self, state: NoticeState) -> Notice:
        assert self._loop is not None
        offset = time.time() - self._loop.time()

        def wall(t: float | None) -> float | None:
            return None if t is None else t + offset

        return Notice(
            sip_call_id=state.sip_call_id, received_at=state.received_at + offset, outcome=state.outcome,
            hand_over=state.hand_over, announced_from=wall(state.announced_from),
            announced_to=wall(state.announced_to), calling_number=state.calling_number,
            called_number=state.called_number, destination=state.destination,
            announcement_sha256=state.announcement_sha256,
            announcement=str(state.announcement) if state.announcement is not None else None,
            reason=state.reason, refer_target=state.refer_target, referred_by=state.referred_by,
            handed_over_at=wall(state.handed_over_at), link_seconds=state.link_seconds,
            left_at=time.time() if isinstance(state, CallEnded) else None)

    # ---- RTP ----------------------------------------------------------------------------
    def _start_playback(self, start: StartPlayback) -> None:
        assert self._ports is not None and self._loop is not None
        sock = self._ports.sockets[start.port]
        packetiser = Packetiser(start.stream.payload_type, secrets.randbits(32), secrets.randbits(16),
                                secrets.randbits(32))
        self._playing[start.key] = _Playback(sock, start.stream, packetiser, frames(start.audio))
        if self._tick is None:
            self._next_tick = self._loop.time() + TICK
            self._tick = self._loop.call_at(self._next_tick, self._on_tick)

    def _retarget(self, change: RetargetPlayback) -> None:
        playback = self._playing.get(change.key)
        if playback is None:
            return
        playback.stream = change.stream
        playback.frames = frames(change.audio)
        playback.packetiser.switch(PAYLOAD_TYPES[change.stream.law])

    def _on_tick(self) -> None:
        loop, core = self._loop, self.core
        assert loop is not None and core is not None
        now = loop.time()
        due = min(CATCH_UP, int((now - self._next_tick) / TICK) + 1)
        finished = []
        for key, playback in self._playing.items():
            stream = playback.stream
            for _ in range(due):
                if playback.index >= len(playback.frames):
                    break
                packet = playback.packetiser.packet(playback.frames[playback.index])
                playback.index += 1
                if stream.sends:
                    try:
                        playback.sock.sendto(packet, (stream.host, stream.port))
                    except (BlockingIOError, ConnectionRefusedError):
                        pass
            if playback.index >= len(playback.frames):
                finished.append(key)
        for key in finished:
            core.playback_done(key, now)
        if finished:
            self._service()
        self._next_tick += TICK * max(due, int((now - self._next_tick) / TICK) + 1)
        if self._playing:
            self._tick = loop.call_at(self._next_tick, self._on_tick)
        else:
            self._tick = None
