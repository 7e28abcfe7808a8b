"""A user-space 802.1Q / 802.1ad switch between access ports and a trunk.

The test machines' kernel has neither 8021q nor bridge VLAN filtering, so
neither `ip link add ... type vlan` nor a VLAN-aware bridge can put a tag on
the wire.  This switch does what a hardware switch with one access port and
one trunk port does: a frame from the access port leaves on the trunk with
the configured tag stack (outermost first), and a frame from the trunk is
forwarded to the access port only if it carries exactly that stack, which
is then removed.  Two such port pairs joined by a veth make a tagged link
between two namespaces, and tcpdump on the trunk sees the tags.

It also finishes UDP checksums the sending kernel left to the (virtual)
NIC, as a real NIC would, since the frames leave through a raw socket.

Run: python vlanswitch.py --pair ACCESS,TRUNK [--pair ...] --tags 88a8:200,8100:100
It prints "ready" once its sockets are bound, exits on SIGTERM/SIGINT, and
stops by itself after --lifetime seconds.
"""
from __future__ import annotations

import argparse
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUXDATA = struct.Struct("=IIIHHHH")
MAX_FRAME = 65536


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def finish_udp_checksum(frame: bytes) -> bytes:
    """The frame with its UDP checksum computed over the pseudo-header."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 17:
            return frame
        l4 = 14 + ihl
        length = struct.unpack_from("!H", frame, l4 + 4)[0]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, 17, length)
    elif ethertype == 0x86DD:
        if frame[20] != 17:
            return frame
        l4 = 54
        length = struct.unpack_from("!H", frame, l4 + 4)[0]
        pseudo = frame[22:54] + struct.pack("!IxxxB", length, 17)
    else:
        return frame
    udp = frame[l4:l4 + 6] + b"\0\0" + frame[l4 + 8:l4 + length]
    checksum = ~_sum16(pseudo + udp) & 0xFFFF
    return frame[:l4 + 6] + struct.pack("!H", checksum or 0xFFFF) + frame[l4 + 8:]


def parse_tags(text: str) -> bytes:
    stack = b""
    for item in text.split(","):
        tpid, vid = item.split(":")
        stack += struct.pack("!HH", int(tpid, 16), int(vid) & 0x0FFF)
    return stack


def open_port(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((name, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def receive(sock: socket.socket) -> tuple[bytes, int] | None:
    """One frame as it was on the wire (the kernel takes the outer tag off
    into metadata; it is put back here) and its auxdata status; None for
    frames this host itself sent."""
    data, ancillary, _flags, address = sock.recvmsg(MAX_FRAME, socket.CMSG_SPACE(AUXDATA.size))
    if address[2] == PACKET_OUTGOING:
        return None
    status = tci = tpid = 0
    for level, kind, blob in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(blob) >= AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack_from(blob)
    if status & TP_STATUS_VLAN_VALID:
        if not status & TP_STATUS_VLAN_TPID_VALID:
            tpid = 0x8100
        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    return data, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", required=True, help="ACCESS,TRUNK interface names")
    parser.add_argument("--tags", required=True, help="tag stack, outermost first: TPIDHEX:VID,...")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args(argv)
    stack = parse_tags(args.tags)
    # socket fd -> (socket, where its frames go, True if it is an access port)
    route: dict[int, tuple[socket.socket, socket.socket, bool]] = {}
    for pair in args.pair:
        access_name, trunk_name = pair.split(",")
        access, trunk = open_port(access_name), open_port(trunk_name)
        route[access.fileno()] = (access, trunk, True)
        route[trunk.fileno()] = (trunk, access, False)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.lifetime
    print("ready", flush=True)
    dropped = 0
    while not stopping and time.monotonic() < deadline:
        try:
            readable, _, _ = select.select(list(route), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in readable:
            sock, target, from_access = route[fd]
            try:
                got = receive(sock)
            except BlockingIOError:
                continue
            if got is None:
                continue
            frame, status = got
            if from_access:
                if status & TP_STATUS_CSUMNOTREADY:
                    frame = finish_udp_checksum(frame)
                frame = frame[:12] + stack + frame[12:]
            elif frame[12:12 + len(stack)] == stack:
                frame = frame[:12] + frame[12 + len(stack):]
            else:
                dropped += 1
                continue
            target.send(frame)
    print(f"stopped, {dropped} untagged or foreign frame(s) dropped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
