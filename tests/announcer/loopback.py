"""The AnnouncerService as the daemon runs it (start()/stop() inside its
event loop) on loopback with real UDP sockets, the test playing the PBX:
`setup` starts the service and places one answered call, `hand_over` plays
the PBX's side of the REFER and the BYE that end it."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import soundfile

from announcer.audio import load_announcement
from announcer.config import AnnouncerConfig
from announcer.service import AnnouncerService
from policy.schema import Policy
from wire.sip import SipMessage, parse_sip
from tests.announcer.pbx import SDP_PCMU, answer, invite, notify


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pbx(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.queue.put_nowait(parse_sip(data))

    async def expect(self, what: str | int) -> SipMessage:
        while True:
            message = await asyncio.wait_for(self.queue.get(), 15)
            if message.method == what or message.status == what:
                return message


class Media(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.packets.append(data)


async def setup(tmp_path: Path, seconds: float):
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    policy = Policy.model_validate({"announcement": {"audio": str(tmp_path / "a.wav")}})
    port = free_port()
    config = AnnouncerConfig.model_validate({"listen_address": "127.0.0.1", "listen_port": port, "transports": ["udp"],
                                             "pbx": ["127.0.0.1/32"], "operator": "9000",
                                             "rtp_ports": [41000, 41100]})
    service = AnnouncerService(config, policy, load_announcement(policy.announcement), tmp_path / "index.sqlite3")
    await service.start()
    loop = asyncio.get_running_loop()
    pbx_transport, pbx = await loop.create_datagram_endpoint(Pbx, local_addr=("127.0.0.1", 0))
    media_transport, media = await loop.create_datagram_endpoint(Media, local_addr=("127.0.0.1", 0))
    media_port = media_transport.get_extra_info("sockname")[1]
    sdp = SDP_PCMU.replace(b"192.0.2.10", b"127.0.0.1").replace(b"40000", str(media_port).encode())
    pbx_transport.sendto(invite(body=sdp), ("127.0.0.1", port))
    ok = await pbx.expect(200)
    ack = (f"ACK sip:announcer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKack\r\n"
           f"From: {ok.header('from')}\r\nTo: {ok.header('to')}\r\nCall-ID: {ok.call_id}\r\nCSeq: 1 ACK\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    pbx_transport.sendto(ack, ("127.0.0.1", port))
    return service, pbx, pbx_transport, media, media_transport, ok, port


async def hand_over(pbx: Pbx, transport: asyncio.DatagramTransport, ok: SipMessage, port: int) -> None:
    refer = await pbx.expect("REFER")
    transport.sendto(answer(refer, 202, "Accepted"), ("127.0.0.1", port))
    transport.sendto(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn", terminated=True), ("127.0.0.1", port))
    bye = await pbx.expect("BYE")
    transport.sendto(answer(bye, 200, "OK"), ("127.0.0.1", port))


async def hand_over_to_the_end(service: AnnouncerService, pbx: Pbx, transport: asyncio.DatagramTransport,
                               media_transport: asyncio.DatagramTransport, ok: SipMessage, port: int) -> None:
    """The hand-over, then the wait for the call's end; the service stopped and both sockets closed
    whatever happens on the way."""
    try:
        await hand_over(pbx, transport, ok, port)
        while service.active_calls:
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
        transport.close()
        media_transport.close()
