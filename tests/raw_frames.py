"""Ethernet frames built layer by layer between fixed documentation
addresses (192.0.2.1 to .2, 2001:db8::1 to ::2), for the capture filter:
test_afpacket runs it over them in a BPF interpreter, test_live_capture
sends them through the kernel."""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

MAC = bytes.fromhex("020000000002020000000001")


def eth(ethertype: int, l3: bytes, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    return MAC + b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags) + struct.pack("!H", ethertype) + l3


def ipv4(proto: int, l4: bytes, *, frag: int = 0, ihl: int = 5, ident: int = 1) -> bytes:
    options = b"\x01" * ((ihl - 5) * 4)
    src, dst = ipaddress.IPv4Address("192.0.2.1").packed, ipaddress.IPv4Address("192.0.2.2").packed
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident, frag, 64, proto, 0, src, dst)
    return hdr + options + l4


def ipv6(nh: int, l4: bytes) -> bytes:
    src, dst = ipaddress.IPv6Address("2001:db8::1").packed, ipaddress.IPv6Address("2001:db8::2").packed
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nh, 64, src, dst) + l4


def frag6(nh: int, l4: bytes, offset: int = 0, more: bool = True) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset << 3 | more, 7) + l4


def udp(sport: int, dport: int, payload: bytes = b"x" * 12) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload


_with_options = ipv4(6, tcp(1, 80), ihl=6)
OPTIONS_5060 = _with_options[:20] + b"\x13\xc4\x13\xc4" + _with_options[24:]
ICMP_ECHO = b"\x08\x00\xf7\xff\x00\x00\x00\x00"
ARP = bytes.fromhex("0001080006040001") + bytes(20)
DOT1Q, DOT1AD, QINQ = 0x8100, 0x88A8, 0x9100
