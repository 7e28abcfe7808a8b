"""Write a pcap of N simultaneous G.711 calls, for benchmarks.

Each call is an inbound INVITE from the trunk (203.0.113.1) to the PBX
(192.0.2.10), 200 OK, ACK, then PCMU RTP every 20 ms in both directions, and
a BYE.  Calls start 10 ms apart so their packets interleave as on a real
mirror port.  Addresses are from the documentation ranges.
"""
from __future__ import annotations

import argparse
import heapq
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

TRUNK, PBX = bytes([203, 0, 113, 1]), bytes([192, 0, 2, 10])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def _frame(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes, ident: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    return MAC_B + MAC_A + b"\x08\x00" + ip + udp


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


def _call_packets(call: int, start: float, seconds: float) -> Iterator[tuple[float, bytes]]:
    trunk_port, pbx_port = 20000 + 2 * (call % 20000), 40000 + 2 * (call % 10000)
    ruri = f"sip:0263{call % 1000000:06d}@192.0.2.10"
    yield start, _frame(TRUNK, 5060, PBX, 5060, _sip(f"INVITE {ruri} SIP/2.0", call, "1 INVITE", False,
                                                   _sdp("203.0.113.1", trunk_port)), call)
    yield start + 0.5, _frame(PBX, 5060, TRUNK, 5060, _sip("SIP/2.0 200 OK", call, "1 INVITE", True,
                                                         _sdp("192.0.2.10", pbx_port)), call)
    yield start + 0.51, _frame(TRUNK, 5060, PBX, 5060, _sip(f"ACK {ruri} SIP/2.0", call, "1 ACK", True), call)
    ssrc_a, ssrc_b = 0x10000000 + call, 0x20000000 + call
    payload_a = bytes((i * 7 + call) & 0xFF for i in range(160))
    payload_b = bytes((i * 13 + call) & 0xFF for i in range(160))
    t0 = start + 0.52
    for n in range(int(seconds * 50)):
        ts = t0 + n * 0.02
        hdr_a = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc_a)
        hdr_b = struct.pack("!BBHII", 0x80, 0, (n + 1000) & 0xFFFF, (n * 160 + 5) & 0xFFFFFFFF, ssrc_b)
        yield ts, _frame(TRUNK, trunk_port, PBX, pbx_port, hdr_a + payload_a, n)
        yield ts + 0.0005, _frame(PBX, pbx_port, TRUNK, trunk_port, hdr_b + payload_b, n)
    end = t0 + seconds
    yield end, _frame(TRUNK, 5060, PBX, 5060, _sip(f"BYE {ruri} SIP/2.0", call, "2 BYE", True), call)
    yield end + 0.01, _frame(PBX, 5060, TRUNK, 5060, _sip("SIP/2.0 200 OK", call, "2 BYE", True), call)


def write_pcap(out: BinaryIO, calls: int, seconds: float, start: float = 1_764_000_000.0) -> int:
    """Write the capture; returns the number of frames."""
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    streams = [_call_packets(c, start + c * 0.01, seconds) for c in range(calls)]
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
    args = parser.parse_args()
    with args.output.open("wb") as out:
        frames = write_pcap(out, args.calls, args.seconds)
    print(f"{args.output}: {frames} frames, {args.calls} calls of {args.seconds} s")


if __name__ == "__main__":
    main()
