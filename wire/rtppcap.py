"""Side files for payloads callrec does not decode (G.722, G.729, Opus...).

The packets are kept verbatim in a classic pcap with raw-IP link type, with
IP and UDP headers rebuilt from the addresses they travelled between, so any
Wireshark or tshark (Debian's 4.0 included, which cannot read rtpdump) and
any later decoder of ours can play them.  The store appends these records
to an encrypted side file as they come; pcap has no trailer, so what a crash
leaves is still a readable capture.
"""
from __future__ import annotations

import ipaddress
import struct

__all__ = ["LINKTYPE_RAW", "pcap_file_header", "pcap_record"]

LINKTYPE_RAW = 101
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_UDP = struct.Struct("!HHHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


def _v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return address.packed if address.version == 6 else ipaddress.IPv6Address(f"::ffff:{address}").packed


def udp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet carrying payload in UDP (checksums left 0,
    which tshark does not flag by default)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    udp = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    if s.version == 4 and d.version == 4:
        return _IPV4.pack(0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s.packed, d.packed) + udp
    return _IPV6.pack(6 << 28, len(udp), 17, 64, _v6(s), _v6(d)) + udp


def pcap_file_header() -> bytes:
    """The global header that starts every side file."""
    return _GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)


def pcap_record(arrival: float, src: str, sport: int, dst: str, dport: int, rtp: bytes) -> bytes:
    """One RTP packet as a pcap record, stamped with its arrival."""
    packet = udp_packet(src, sport, dst, dport, rtp)
    seconds = int(arrival)
    micros = min(int(round((arrival - seconds) * 1_000_000)), 999_999)
    return _RECORD.pack(seconds, micros, len(packet), len(packet)) + packet
