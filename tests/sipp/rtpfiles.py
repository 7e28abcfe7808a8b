"""RTP streams written as pcap files for SIPp's `play_pcap_audio`.

SIPp ships one PCMA recording (g711a.pcap) and the RFC 2833 digits; every
other stream the scenarios play is made here, so that each party's audio is
distinct (a channel swap would otherwise go unseen), no payload is pure
silence (silence is what the recorder writes into gaps), and the sequence
numbers and timestamps continue across the pieces of one call the way a
phone's do across a hold.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

RATE = 8000
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}

_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def lin2alaw(pcm: np.ndarray) -> bytes:
    """16-bit linear to A-law, as in the ITU-T reference encoder."""
    value = pcm.astype(np.int32) >> 3
    positive = value >= 0
    mask = np.where(positive, 0xD5, 0x55)
    value = np.where(positive, value, -value - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


def lin2ulaw(pcm: np.ndarray) -> bytes:
    """16-bit linear to mu-law, as in the ITU-T reference encoder."""
    value = pcm.astype(np.int32) >> 2
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + 0x21
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, value)
    code = (np.minimum(segment, 7) << 4) | ((value >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


ENCODERS = {"PCMU": lin2ulaw, "PCMA": lin2alaw}


def sweep(seconds: float, low: float, high: float, seed: int) -> np.ndarray:
    """A rising tone with a little noise: every 20 ms of it differs from every
    other, so a payload found in a recording can only be found in one place."""
    n = int(round(seconds * RATE))
    t = np.arange(n) / RATE
    phase = 2 * np.pi * (low * t + (high - low) * t * t / (2 * seconds))
    noise = np.random.default_rng(seed).normal(0.0, 300.0, n)
    return np.clip(9000.0 * np.sin(phase) + noise, -32768, 32767).astype(np.int16)


@dataclass(frozen=True, slots=True)
class RtpSpec:
    at: float
    seq: int
    timestamp: int
    marker: bool
    payload_type: int
    ssrc: int
    payload: bytes


def talk(codec: str, audio: np.ndarray, *, ssrc: int, seq: int, timestamp: int,
         ptime: float = 0.02) -> list[RtpSpec]:
    """Packets of one talk spurt, the first with the marker bit."""
    step = int(round(ptime * RATE))
    encoded = ENCODERS[codec](audio)
    packets = []
    for i, start in enumerate(range(0, len(encoded) - step + 1, step)):
        packets.append(RtpSpec(
            at=i * ptime, seq=(seq + i) & 0xFFFF, timestamp=(timestamp + start) & 0xFFFFFFFF,
            marker=i == 0, payload_type=PAYLOAD_TYPES[codec], ssrc=ssrc,
            payload=encoded[start:start + step],
        ))
    return packets


def _ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return header + udp


def write_rtp_pcap(path: Path, packets: Sequence[RtpSpec], *, sport: int = 40000, dport: int = 40002) -> Path:
    """A classic little-endian pcap of Ethernet/IPv4/UDP/RTP frames.

    SIPp replays only the UDP part and rewrites ports and addresses, so the
    addresses here (documentation range) never reach the wire.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    src, dst = bytes([192, 0, 2, 250]), bytes([192, 0, 2, 251])
    ether = bytes.fromhex("020000000002" "020000000001" "0800")
    base = 1_700_000_000.0
    for p in packets:
        rtp = struct.pack("!BBHII", 0x80, (0x80 if p.marker else 0) | p.payload_type, p.seq, p.timestamp,
                          p.ssrc) + p.payload
        frame = ether + _ipv4_udp(src, dst, sport, dport, rtp)
        stamp = base + p.at
        seconds = int(stamp)
        micros = int(round((stamp - seconds) * 1_000_000))
        if micros == 1_000_000:
            seconds, micros = seconds + 1, 0
        out += struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path
