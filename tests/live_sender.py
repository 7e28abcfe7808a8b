"""Sends one SIP call with RTP both ways on real UDP sockets, paced in real
time, for the live daemon tests.  Run inside a test network namespace whose
loopback carries the trunk and PBX documentation addresses.  Writes the
payloads it sent (hex, per direction) as JSON to --record."""
from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.builders import PBX, TRUNK, rtp, sdp, sip  # noqa: E402


def udp(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--call-id", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tport", type=int, default=20000)
    parser.add_argument("--pport", type=int, default=40000)
    parser.add_argument("--callee", default="0263111111")
    parser.add_argument("--no-bye", action="store_true")
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    trunk_sip, pbx_sip = udp(TRUNK, 5060 + args.tport % 100), udp(PBX, 5060 + args.tport % 100)
    kw = dict(call_id=args.call_id, callee=args.callee)
    pbx_addr, trunk_addr = (PBX, pbx_sip.getsockname()[1]), (TRUNK, trunk_sip.getsockname()[1])
    trunk_sip.sendto(sip(f"INVITE sip:{args.callee}@{PBX} SIP/2.0", cseq="1 INVITE",
                         body=sdp(TRUNK, args.tport), **kw), pbx_addr)
    time.sleep(0.2)
    pbx_sip.sendto(sip("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1", body=sdp(PBX, args.pport), **kw), trunk_addr)
    trunk_sip.sendto(sip(f"ACK sip:{args.callee}@{PBX} SIP/2.0", cseq="1 ACK", to_tag="t1", **kw), pbx_addr)
    up, down = udp(TRUNK, args.tport), udp(PBX, args.pport)
    rng = random.Random(args.call_id)
    sent: dict[str, list[str]] = {"remote": [], "local": []}
    start = time.monotonic()
    for n in range(int(args.seconds * 50)):
        delay = start + n * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        a, b = rng.randbytes(160), rng.randbytes(160)
        up.sendto(rtp(n, n * 160, 0x1111, a), (PBX, args.pport))
        down.sendto(rtp(n + 500, n * 160 + 7, 0x2222, b), (TRUNK, args.tport))
        sent["remote"].append(a.hex())
        sent["local"].append(b.hex())
        if n % 25 == 24:
            args.record.write_text(json.dumps(sent))
    args.record.write_text(json.dumps(sent))
    if not args.no_bye:
        trunk_sip.sendto(sip(f"BYE sip:{args.callee}@{PBX} SIP/2.0", cseq="2 BYE", to_tag="t1", **kw), pbx_addr)
        pbx_sip.sendto(sip("SIP/2.0 200 OK", cseq="2 BYE", to_tag="t1", **kw), trunk_addr)


if __name__ == "__main__":
    main()
