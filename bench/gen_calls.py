"""Write a pcap of N simultaneous G.711 calls, for benchmarks.

Each call is an inbound INVITE from the trunk (203.0.113.1) to the PBX
(192.0.2.10), 200 OK, ACK, then PCMU RTP every 20 ms in both directions, and
a BYE.  Calls start 10 ms apart so their packets interleave as on a real
mirror port.  Addresses are from the documentation ranges.

With `--impair SEED` the media is damaged the way networks and senders
damage it (seeded, so a capture can be made again): loss, reordering,
mirror-port copies and repeated packets, SSRC changes, sequence and
timestamp jumps, marker bits, RFC 4733 digits, RTCP on the RTP port,
802.1Q tags, some calls in PCMA; the tests feed such captures through both
media paths of the recorder.
"""
from __future__ import annotations

import argparse
import heapq
import random
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

TRUNK, PBX = bytes([203, 0, 113, 1]), bytes([192, 0, 2, 10])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def _frame(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes, ident: int, vlan: int = 0) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    tag = struct.pack("!HH", 0x8100, vlan) if vlan else b""
    return MAC_B + MAC_A + tag + b"\x08\x00" + ip + udp


def _sdp(addr: str, port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n").encode()


def _sip(first: str, call: int, cseq: str, to_tag: bool, body: bytes = b"") -> bytes:
    head = (f"{first}\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK{call}x{cseq.split()[0]}\r\n"
            f"From: <sip:03{call:08d}@203.0.113.1>;tag=f{call}\r\n"
            f"To: <sip:0263{call % 1000000:06d}@192.0.2.10>{';tag=t%d' % call if to_tag else ''}\r\n"
            f"Call-ID: bench-{call}@203.0.113.1\r\nCSeq: {cseq}\r\n"
            f"Contact: <sip:03{call:08d}@203.0.113.1>\r\n"
            f"{'Content-Type: application/sdp' + chr(13) + chr(10) if body else ''}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _impaired(rng: random.Random, call: int, t0: float, seconds: float, ports: tuple[int, int],
              vlan: int) -> Iterator[tuple[float, bytes]]:
    """The media of one call, damaged (see the module docstring)."""
    pt = 8 if call % 5 == 4 else 0
    for side in (0, 1):
        src, dst = (TRUNK, PBX) if side == 0 else (PBX, TRUNK)
        sport, dport = ports if side == 0 else ports[::-1]
        ssrc = (0x10000000 if side == 0 else 0x20000000) + call
        seq, stamp = rng.randrange(0x10000), rng.randrange(1 << 32)
        payload = bytes((i * (7 + 6 * side) + call) & 0xFF for i in range(160))
        ident = rng.randrange(0x10000)
        for n in range(int(seconds * 50)):
            ts = t0 + n * 0.02 + side * 0.0005 + rng.uniform(0, 0.004)
            marker = 0x80 if n == 0 else 0
            roll = rng.random()
            if roll < 0.002:
                ssrc, seq = rng.randrange(1 << 32), rng.randrange(0x10000)
                marker = 0x80
            elif roll < 0.004:
                seq = (seq + rng.choice((500, 5000, 40000))) & 0xFFFF
            elif roll < 0.006:
                stamp = (stamp + rng.choice((8000, 800000, 1 << 31))) & 0xFFFFFFFF
            seq, stamp, ident = (seq + 1) & 0xFFFF, (stamp + 160) & 0xFFFFFFFF, (ident + 1) & 0xFFFF
            if rng.random() < 0.01:
                continue  # lost
            if rng.random() < 0.004:
                # An RFC 4733 digit in place of the audio, start and end.
                body = struct.pack("!BBH", rng.randrange(16), 0x8A if rng.random() < 0.5 else 0x0A, 800)
                head = struct.pack("!BBHII", 0x80, 0x80 | 101, seq, stamp, ssrc)
                yield ts, _frame(src, sport, dst, dport, head + body, ident, vlan)
                continue
            head = struct.pack("!BBHII", 0x80, marker | pt, seq, stamp, ssrc)
            frame = _frame(src, sport, dst, dport, head + payload, ident, vlan)
            roll = rng.random()
            if roll < 0.01:
                ts += rng.uniform(0.02, 0.08)  # reordered
            yield ts, frame
            if roll > 0.99:
                yield ts + 0.0001, frame  # the mirror port's copy
            elif roll > 0.985:
                yield ts + 0.001, _frame(src, sport, dst, dport, head + payload, ident + 7, vlan)  # sent twice
            if rng.random() < 0.002:
                rtcp = struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20)
                yield ts + 0.002, _frame(src, sport, dst, dport, rtcp, ident, vlan)


def _call_packets(call: int, start: float, seconds: float,
                  rng: random.Random | None = None) -> Iterator[tuple[float, bytes]]:
    trunk_port, pbx_port = 20000 + 2 * (call % 20000), 40000 + 2 * (call % 10000)
    ruri = f"sip:0263{call % 1000000:06d}@192.0.2.10"
    yield start, _frame(TRUNK, 5060, PBX, 5060, _sip(f"INVITE {ruri} SIP/2.0", call, "1 INVITE", False,
                                                   _sdp("203.0.113.1", trunk_port)), call)
    yield start + 0.5, _frame(PBX, 5060, TRUNK, 5060, _sip("SIP/2.0 200 OK", call, "1 INVITE", True,
                                                         _sdp("192.0.2.10", pbx_port)), call)
    yield start + 0.51, _frame(TRUNK, 5060, PBX, 5060, _sip(f"ACK {ruri} SIP/2.0", call, "1 ACK", True), call)
    t0 = start + 0.52
    if rng is not None:
        yield from sorted(_impaired(rng, call, t0, seconds, (trunk_port, pbx_port), call % 3 * 100),
                          key=lambda item: item[0])
    ssrc_a, ssrc_b = 0x10000000 + call, 0x20000000 + call
    payload_a = bytes((i * 7 + call) & 0xFF for i in range(160))
    payload_b = bytes((i * 13 + call) & 0xFF for i in range(160))
    for n in range(0 if rng is not None else int(seconds * 50)):
        ts = t0 + n * 0.02
        hdr_a = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc_a)
        hdr_b = struct.pack("!BBHII", 0x80, 0, (n + 1000) & 0xFFFF, (n * 160 + 5) & 0xFFFFFFFF, ssrc_b)
        yield ts, _frame(TRUNK, trunk_port, PBX, pbx_port, hdr_a + payload_a, n)
        yield ts + 0.0005, _frame(PBX, pbx_port, TRUNK, trunk_port, hdr_b + payload_b, n)
    end = t0 + seconds
    yield end, _frame(TRUNK, 5060, PBX, 5060, _sip(f"BYE {ruri} SIP/2.0", call, "2 BYE", True), call)
    yield end + 0.01, _frame(PBX, 5060, TRUNK, 5060, _sip("SIP/2.0 200 OK", call, "2 BYE", True), call)


def write_pcap(out: BinaryIO, calls: int, seconds: float, start: float = 1_764_000_000.0,
               impair: int | None = None) -> int:
    """Write the capture; returns the number of frames.  `impair` is the seed
    of the damage done to the media (none when None)."""
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    rng = random.Random(impair) if impair is not None else None
    streams = [_call_packets(c, start + c * 0.01, seconds, rng) for c in range(calls)]
    count = 0
    for ts, frame in heapq.merge(*streams, key=lambda item: item[0]):
        sec = int(ts)
        out.write(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)) % 1_000_000, len(frame), len(frame)))
        out.write(frame)
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--impair", type=int, metavar="SEED", help="damage the media (see above)")
    args = parser.parse_args()
    with args.output.open("wb") as out:
        frames = write_pcap(out, args.calls, args.seconds, impair=args.impair)
    print(f"{args.output}: {frames} frames, {args.calls} calls of {args.seconds} s")


if __name__ == "__main__":
    main()
