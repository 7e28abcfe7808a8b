"""Byte builders for tests: SIP messages, SDP bodies, RTP packets, frames
and pcap files, so each test states its traffic in a few lines."""
from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Iterable

from wire.rtp import RtpPacket

TRUNK, PBX = "203.0.113.1", "192.0.2.10"


def _rtpmap(codec: str) -> str:
    """A codec name gets the 8 kHz clock unless it says its own ('opus/48000/2')."""
    return codec if "/" in codec else f"{codec}/8000"


def sdp(addr: str, port: int, direction: str = "sendrecv", codec: tuple[int, str] = (0, "PCMU")) -> str:
    family = "IP6" if ":" in addr else "IP4"
    return (f"v=0\r\no=- 1 1 IN {family} {addr}\r\ns=-\r\nc=IN {family} {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {codec[0]} 101\r\na=rtpmap:{codec[0]} {_rtpmap(codec[1])}\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n")


def sip(first: str, *, cseq: str, to_tag: str | None = None, from_tag: str = "f1",
        call_id: str = "c1@x", body: str = "", extra: str = "",
        caller: str = "0312345678", callee: str = "0263111111") -> bytes:
    headers = [
        first,
        "Via: SIP/2.0/UDP 203.0.113.1;branch=z9hG4bK1",
        f"From: <sip:{caller}@{TRUNK}>;tag={from_tag}",
        f"To: <sip:{callee}@{PBX}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
    ]
    if extra:
        headers.append(extra)
    if body:
        headers.append("Content-Type: application/sdp")
    headers.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def rtp_packet(seq: int, ts: int, *, pt: int = 0, size: int = 160, ssrc: int = 0x1111, marker: bool = False,
               payload: bytes | None = None) -> RtpPacket:
    """A parsed packet; the default payload is size bytes of the low byte of seq, so each packet is tellable."""
    body = payload if payload is not None else bytes([seq & 0xFF]) * size
    return RtpPacket(pt, marker, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, body)


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 0,
              vlans: Iterable[int] = ()) -> bytes:
    """An Ethernet frame (optionally 802.1Q-tagged) carrying UDP over IPv4 or IPv6."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0,
                         s.packed, d.packed)
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, s.packed, d.packed)
        ethertype = 0x86DD
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01" + tags + struct.pack("!H", ethertype) + ip + udp


def write_pcap(path: Path, frames: Iterable[tuple[float, bytes]]) -> Path:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in sorted(frames, key=lambda f: f[0]):
            sec = int(ts)
            out.write(struct.pack("<IIII", sec, min(999_999, round((ts - sec) * 1e6)), len(frame), len(frame)))
            out.write(frame)
    return path
