"""Tests for recorder.netdecode.PacketDecoder, including real-capture cross-checks."""

from __future__ import annotations

import functools
import math
import random
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.capture_file import read_capture
from recorder.netdecode import Datagram, PacketDecoder, join_flow, split_flow
from tests.interop import CAPTURE_NAMES, capture, need, tshark_fields


S4 = socket.inet_pton(socket.AF_INET, "192.0.2.10")
D4 = socket.inet_pton(socket.AF_INET, "198.51.100.20")
S6 = socket.inet_pton(socket.AF_INET6, "2001:db8::10")
D6 = socket.inet_pton(socket.AF_INET6, "2001:db8:1::20")
RTP = bytes.fromhex("80000001000000a0deadbeef") + bytes(range(160))
SIP = b"OPTIONS sip:x@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


# -- builders ------------------------------------------------------------------------


def udp(payload: bytes, sport: int = 4000, dport: int = 5000, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length, 0) + payload


def tcp(
    payload: bytes, seq: int, flags: int = 0x18, sport: int = 5060, dport: int = 40000, doff: int = 5
) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, doff << 4, flags, 65535, 0, 0)
    return head + bytes(max(0, doff * 4 - 20)) + payload


def ipv4(
    payload: bytes,
    proto: int = 17,
    src: bytes = S4,
    dst: bytes = D4,
    ident: int = 1,
    ttl: int = 64,
    frag: int = 0x4000,
    options: bytes = b"",
    tlen: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload) if tlen is None else tlen
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, frag, ttl, proto, 0, src, dst)
    return head + options + payload


def ipv6(payload: bytes, nh: int = 17, src: bytes = S6, dst: bytes = D6, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hlim, src, dst) + payload


def ext6(nh: int, units: int = 0) -> bytes:
    """A generic IPv6 extension header of (units + 1) * 8 bytes."""
    return bytes([nh, units]) + bytes(6 + units * 8)


def frag6(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


def eth(payload: bytes, etype: int = 0x0800, tags: tuple[int, ...] = (), pad: bool = True) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    for tpid in tags:
        head += struct.pack("!HH", tpid, 100)
    frame = head + struct.pack("!H", etype) + payload
    return frame + bytes(max(0, 60 - len(frame))) if pad else frame


def sll(payload: bytes, etype: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", etype) + payload


def sll2(payload: bytes, etype: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", etype, 0, 3, 1, 0, 6, b"\x02" * 6 + b"\0\0") + payload


def fragments4(
    transport: bytes, size: int, proto: int = 17, ident: int = 77, src: bytes = S4, dst: bytes = D4
) -> list[bytes]:
    out = []
    for off in range(0, len(transport), size):
        flags = 0x2000 if off + size < len(transport) else 0
        out.append(ipv4(transport[off : off + size], proto, src, dst, ident=ident, frag=flags | off // 8))
    return out


def decode(
    frames: list[tuple[int, bytes]], dec: PacketDecoder | None = None, t0: float = 100.0
) -> list[Datagram]:
    dec = dec or PacketDecoder()
    out: list[Datagram] = []
    for i, (linktype, frame) in enumerate(frames):
        out += dec.decode(t0 + i * 0.001, linktype, frame)
    return out


# -- link layers ----------------------------------------------------------------------


def test_fast_path_ethernet_ipv4_udp() -> None:
    dec = PacketDecoder()
    assert dec.decode(1.0, 1, eth(ipv4(udp(RTP)))) == ((17, S4, 4000, D4, 5000, RTP),)
    assert dec.stats["frames"] == 1


@pytest.mark.parametrize(
    "tags", [(0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100), (0x88A8, 0x8100, 0x8100), (0x9100,)]
)
def test_vlan_tags(tags: tuple[int, ...]) -> None:
    assert decode([(1, eth(ipv4(udp(RTP)), tags=tags))]) == [(17, S4, 4000, D4, 5000, RTP)]
    assert decode([(1, eth(ipv6(udp(SIP)), 0x86DD, tags=tags))]) == [(17, S6, 4000, D6, 5000, SIP)]


def test_ethernet_padding_is_trimmed() -> None:
    frame = eth(ipv4(udp(b"hi")))
    assert len(frame) == 60
    assert decode([(1, frame)]) == [(17, S4, 4000, D4, 5000, b"hi")]
    assert decode([(1, eth(ipv4(udp(b"hi")), tags=(0x8100,)))]) == [(17, S4, 4000, D4, 5000, b"hi")]


def test_ethernet_fcs_is_trimmed_by_ip_length() -> None:
    frame = eth(ipv4(udp(RTP)), pad=False) + b"\xde\xad\xbe\xef"
    assert decode([(1, frame)]) == [(17, S4, 4000, D4, 5000, RTP)]


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip(linktype: int) -> None:
    packets = [ipv4(udp(RTP)), ipv6(udp(SIP)), b"\x50" + bytes(40), b""]
    frames = [(linktype, p) for p in packets]
    dec = PacketDecoder()
    assert decode(frames, dec) == [(17, S4, 4000, D4, 5000, RTP), (17, S6, 4000, D6, 5000, SIP)]
    assert dec.stats["non_ip"] == 1
    assert dec.stats["malformed"] == 1


def test_ipv4_and_ipv6_linktypes() -> None:
    assert decode([(228, ipv4(udp(RTP))), (229, ipv6(udp(SIP)))]) == [
        (17, S4, 4000, D4, 5000, RTP),
        (17, S6, 4000, D6, 5000, SIP),
    ]


def test_linux_cooked_v1_and_v2() -> None:
    frames = [
        (113, sll(ipv4(udp(RTP)))),
        (113, sll(ipv6(udp(SIP)), 0x86DD)),
        (113, sll(struct.pack("!HH", 7, 0x0800) + ipv4(udp(b"vlan")), 0x8100)),
        (276, sll2(ipv4(udp(RTP)))),
        (276, sll2(ipv6(udp(SIP)), 0x86DD)),
        (276, sll2(struct.pack("!HH", 7, 0x86DD) + ipv6(udp(b"vlan")), 0x8100)),
    ]
    assert decode(frames, PacketDecoder(dedup_window=0)) == [
        (17, S4, 4000, D4, 5000, RTP),
        (17, S6, 4000, D6, 5000, SIP),
        (17, S4, 4000, D4, 5000, b"vlan"),
        (17, S4, 4000, D4, 5000, RTP),
        (17, S6, 4000, D6, 5000, SIP),
        (17, S6, 4000, D6, 5000, b"vlan"),
    ]


@pytest.mark.parametrize(
    ("linktype", "header", "packet"),
    [
        (0, struct.pack("<I", 2), ipv4(udp(RTP))),
        (0, struct.pack(">I", 2), ipv4(udp(RTP))),
        (0, struct.pack("<I", 24), ipv6(udp(RTP))),
        (0, struct.pack(">I", 28), ipv6(udp(RTP))),
        (0, struct.pack("<I", 30), ipv6(udp(RTP))),
        (108, struct.pack(">I", 2), ipv4(udp(RTP))),
        (108, struct.pack(">I", 30), ipv6(udp(RTP))),
    ],
)
def test_bsd_loopback(linktype: int, header: bytes, packet: bytes) -> None:
    [(proto, src, sport, dst, dport, payload)] = decode([(linktype, header + packet)])
    assert (proto, sport, dport, payload) == (17, 4000, 5000, RTP)
    assert src in (S4, S6)


def test_non_ip_and_unsupported() -> None:
    dec = PacketDecoder()
    arp = eth(bytes(28), 0x0806)
    llc = eth(b"\xaa\xaa\x03" + bytes(40), 46)
    frames = [
        (1, arp),
        (1, llc),
        (113, sll(bytes(28), 0x0806)),
        (147, ipv4(udp(RTP))),
        (0, struct.pack("<I", 7) + bytes(30)),
    ]
    assert decode(frames, dec) == []
    assert dec.stats["non_ip"] == 4
    assert dec.stats["unsupported_linktype"] == 1


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, b"\x00" * 13),
        (1, eth(b"", 0x8100, pad=False)),
        (113, b"\x00" * 15),
        (276, b"\x00" * 19),
        (0, b"\x02\x00"),
    ],
)
def test_short_link_headers_are_malformed(linktype: int, frame: bytes) -> None:
    dec = PacketDecoder()
    assert dec.decode(0.0, linktype, frame) == ()
    assert dec.stats["malformed"] == 1


# -- IPv4 -------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" + b"\x01" * 8])
def test_ipv4_options(options: bytes) -> None:
    assert decode([(1, eth(ipv4(udp(RTP), options=options)))]) == [(17, S4, 4000, D4, 5000, RTP)]


def test_ipv4_total_length_zero_means_offloaded() -> None:
    assert decode([(101, ipv4(udp(RTP), tlen=0))]) == [(17, S4, 4000, D4, 5000, RTP)]


def test_truncated_by_snaplen() -> None:
    dec = PacketDecoder()
    assert dec.decode(0.0, 1, eth(ipv4(udp(RTP)))[:100]) == ()
    assert dec.decode(0.0, 1, eth(ipv6(udp(RTP)), 0x86DD)[:100]) == ()
    assert dec.stats["truncated"] == 2


@pytest.mark.parametrize(
    "packet",
    [
        ipv4(udp(RTP), tlen=10),
        b"\x55" + ipv4(udp(RTP))[1:],
        b"\x44" + ipv4(udp(RTP))[1:],
        ipv4(udp(RTP, length=7)),
        ipv4(udp(RTP, length=len(RTP) + 9)),
        ipv4(b"\x00\x01\x02"),
        ipv4(tcp(b"x", 1, doff=4), proto=6),
        ipv4(struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 0xF0, 0x18, 0, 0, 0) + b"x", proto=6),
        ipv4(b"\x00" * 10, proto=6),
        ipv6(udp(RTP), nh=0),
        b"\x70" + ipv6(udp(RTP))[1:],
    ],
    ids=[
        "ip-total-length-below-header",
        "ip-version-5",
        "ip-header-length-16",
        "udp-length-7",
        "udp-length-beyond-ip",
        "udp-header-cut",
        "tcp-offset-below-20",
        "tcp-offset-beyond-packet",
        "tcp-header-cut",
        "ipv6-hop-by-hop-overrun",
        "ip-version-7",
    ],
)
def test_malformed_packets(packet: bytes) -> None:
    dec = PacketDecoder()
    etype = 0x86DD if packet[0] >> 4 in (6, 7) else 0x0800
    assert dec.decode(0.0, 1, eth(packet, etype)) == ()
    assert dec.stats["malformed"] == 1


def test_udp_length_shorter_than_ip_payload() -> None:
    packet = ipv4(udp(b"abc", length=10) + b"trailer")
    assert decode([(1, eth(packet))]) == [(17, S4, 4000, D4, 5000, b"ab")]


def test_other_protocols_are_counted() -> None:
    dec = PacketDecoder()
    frames = [
        (1, eth(ipv4(bytes(8), proto=1))),
        (1, eth(ipv6(bytes(8), nh=58), 0x86DD)),
        (101, ipv6(b"", nh=59)),
    ]
    assert decode(frames, dec) == []
    assert dec.stats["other_proto"] == 3


def test_ipv4_fragments_out_of_order_with_duplicates() -> None:
    big = SIP + b"v=0\r\n" * 700
    frags = fragments4(udp(big), 1480)
    order = [frags[2], frags[0], frags[0], frags[1]]
    dec = PacketDecoder()
    assert decode([(1, eth(f)) for f in order], dec) == [(17, S4, 4000, D4, 5000, big)]
    stats = dec.stats
    assert (stats["fragments"], stats["reassembled"], stats["fragment_sets"]) == (4, 1, 0)


def test_ipv4_fragmented_tcp_segment() -> None:
    frags = fragments4(tcp(b"REGISTER sip:x SIP/2.0\r\n" * 10, 1000), 64, proto=6)
    dec = PacketDecoder()
    out = decode([(1, eth(f)) for f in reversed(frags)], dec)
    assert out == [(6, S4, 5060, D4, 40000, b"REGISTER sip:x SIP/2.0\r\n" * 10)]


def test_fragments_from_different_sources_do_not_mix() -> None:
    a = fragments4(udp(b"A" * 3000), 1480, ident=5)
    b = fragments4(udp(b"B" * 3000), 1480, ident=5, src=D4, dst=S4)
    out = decode([(1, eth(f)) for pair in zip(a, b) for f in pair])
    assert out == [(17, S4, 4000, D4, 5000, b"A" * 3000), (17, D4, 4000, S4, 5000, b"B" * 3000)]


# -- IPv6 -------------------------------------------------------------------------------


def test_ipv6_extension_header_chain() -> None:
    ah = bytes([60, 2]) + bytes(14)  # AH: (2 + 2) * 4 = 16 bytes
    chain = ext6(43, 1) + ext6(51, 0) + ah + ext6(17, 2)
    packet = ipv6(chain + udp(SIP), nh=0)
    assert decode([(1, eth(packet, 0x86DD))]) == [(17, S6, 4000, D6, 5000, SIP)]


def test_ipv6_extension_header_overrun_and_loops() -> None:
    dec = PacketDecoder()
    overrun = ipv6(bytes([17, 9]) + bytes(6), nh=60)
    endless = ipv6(ext6(60) * 20 + udp(SIP), nh=60)
    assert decode([(229, overrun), (229, endless), (229, ipv6(b"\x11", nh=44))], dec) == []
    assert dec.stats["malformed"] == 3


def test_ipv6_fragments_with_headers_in_the_fragmentable_part() -> None:
    transport = ext6(17, 1) + udp(SIP * 40)
    pieces = []
    for off in range(0, len(transport), 1232):
        more = off + 1232 < len(transport)
        pieces.append(ipv6(ext6(44) + frag6(60, off, more, 0xABCDEF01) + transport[off : off + 1232], nh=0))
    dec = PacketDecoder()
    out = decode([(229, p) for p in reversed(pieces)], dec)
    assert out == [(17, S6, 4000, D6, 5000, SIP * 40)]
    assert dec.stats["reassembled"] == 1


def test_ipv6_atomic_fragment() -> None:
    packet = ipv6(frag6(17, 0, False, 9) + udp(SIP), nh=44)
    dec = PacketDecoder()
    assert decode([(229, packet)], dec) == [(17, S6, 4000, D6, 5000, SIP)]
    assert dec.stats["fragments"] == 0


def test_ipv6_nested_fragment_header_after_reassembly_is_malformed() -> None:
    inner = frag6(17, 8, False, 2) + udp(SIP)
    dec = PacketDecoder()
    first = ipv6(frag6(44, 0, True, 1) + inner[:8], nh=44)
    last = ipv6(frag6(44, 8, False, 1) + inner[8:], nh=44)
    assert decode([(229, first), (229, last)], dec) == []
    assert dec.stats["malformed"] == 1


# -- TCP --------------------------------------------------------------------------------


def test_tcp_over_ipv4_and_ipv6() -> None:
    dec = PacketDecoder()
    frames = [
        (1, eth(ipv4(tcp(b"", 99, flags=0x02), proto=6))),
        (1, eth(ipv4(tcp(b"world", 106), proto=6))),
        (1, eth(ipv4(tcp(b"hello ", 100), proto=6))),
        (1, eth(ipv4(tcp(b"", 111, flags=0x10), proto=6))),
        (1, eth(ipv6(tcp(b"INVITE", 5000, doff=8), nh=6), 0x86DD)),
    ]
    assert decode(frames, dec) == [
        (6, S4, 5060, D4, 40000, b"hello world"),
        (6, S6, 5060, D6, 40000, b"INVITE"),
    ]
    assert dec.stats["tcp_segments"] == 5


def test_tcp_gap_released_by_housekeeping_on_a_later_frame() -> None:
    dec = PacketDecoder()
    assert dec.decode(10.0, 1, eth(ipv4(tcp(b"", 0, flags=0x02), proto=6))) == ()
    assert dec.decode(10.1, 1, eth(ipv4(tcp(b"after loss", 50), proto=6))) == ()
    assert dec.decode(12.0, 1, eth(ipv4(udp(RTP)))) == ((17, S4, 4000, D4, 5000, RTP),)
    out = dec.decode(14.0, 1, eth(ipv4(udp(RTP), ident=2)))
    assert out == ((6, S4, 5060, D4, 40000, b"after loss"), (17, S4, 4000, D4, 5000, RTP))
    assert dec.stats["tcp_gaps"] == 1


# -- de-duplication -----------------------------------------------------------------------


_ENDS = st.sampled_from((4, 16)).flatmap(
    lambda size: st.tuples(
        st.binary(min_size=size, max_size=size),
        st.integers(0, 65535),
        st.binary(min_size=size, max_size=size),
        st.integers(0, 65535),
    )
)


@given(_ENDS)
def test_flow_join_and_split_are_inverse(ends: tuple[bytes, int, bytes, int]) -> None:
    flow = join_flow(*ends)
    assert len(flow) == 2 * len(ends[0]) + 4
    assert split_flow(flow) == ends


def test_decode_flows_names_datagrams_by_their_wire_flow() -> None:
    """The fast path (Ethernet/IPv4/UDP) and the general path (another link
    type, IPv6, TCP) name a direction the same way, addresses then ports."""
    ports = struct.pack("!HH", 4000, 5000)
    dec = PacketDecoder(dedup_window=0)
    assert dec.decode_flows(1.0, 1, eth(ipv4(udp(RTP)))) == ((17, S4 + D4 + ports, RTP),)
    assert dec.decode_flows(1.0, 228, ipv4(udp(RTP))) == ((17, S4 + D4 + ports, RTP),)
    assert dec.decode_flows(1.0, 1, eth(ipv6(udp(SIP)), 0x86DD)) == ((17, S6 + D6 + ports, SIP),)
    dec.decode_flows(1.0, 1, eth(ipv4(tcp(b"", 0, flags=0x02), proto=6)))
    tcp_ports = struct.pack("!HH", 5060, 40000)
    segment = eth(ipv4(tcp(b"REGISTER", 1), proto=6))
    assert dec.decode_flows(1.1, 1, segment) == ((6, S4 + D4 + tcp_ports, b"REGISTER"),)


def test_copy_on_the_general_path_is_a_duplicate_of_the_fast_path_original() -> None:
    dec = PacketDecoder()
    assert dec.decode_flows(1.000, 1, eth(ipv4(udp(RTP), ident=9)))
    assert dec.decode_flows(1.001, 1, eth(ipv4(udp(RTP), ident=9), tags=(0x88A8, 0x8100))) == ()
    assert dec.decode_flows(1.002, 228, ipv4(udp(RTP), ident=9, ttl=3)) == ()
    assert dec.stats["duplicates"] == 2


def test_mirror_duplicate_with_other_vlan_and_ttl_is_dropped() -> None:
    dec = PacketDecoder()
    original = eth(ipv4(udp(RTP), ident=42, ttl=64))
    copy = eth(ipv4(udp(RTP), ident=42, ttl=63), tags=(0x8100,))
    assert dec.decode(1.000, 1, original) == ((17, S4, 4000, D4, 5000, RTP),)
    assert dec.decode(1.004, 1, copy) == ()
    assert dec.decode(1.008, 1, copy) == ()
    assert dec.stats["duplicates"] == 2


def test_duplicate_detection_window_and_identity() -> None:
    dec = PacketDecoder(dedup_window=0.05)
    pkt = eth(ipv4(udp(RTP), ident=42))
    assert dec.decode(1.0, 1, pkt)
    assert dec.decode(1.06, 1, pkt)
    assert dec.decode(1.06, 1, eth(ipv4(udp(RTP), ident=43)))
    assert not dec.decode(1.059, 1, pkt)
    assert dec.decode(1.07, 1, eth(ipv4(udp(RTP[:-1]), ident=42)))
    assert dec.decode(1.07, 1, eth(ipv4(udp(RTP, sport=4001), ident=42)))
    assert dec.decode(5.0, 1, pkt)
    assert dec.stats["duplicates"] == 1


def test_ipv6_duplicates_and_disabled_dedup() -> None:
    pkt = eth(ipv6(udp(SIP)), 0x86DD)
    dec = PacketDecoder()
    assert len(decode([(1, pkt), (1, pkt)], dec)) == 1
    assert len(decode([(1, pkt), (1, pkt)], PacketDecoder(dedup_window=0))) == 2


def test_dedup_across_generation_boundary() -> None:
    dec = PacketDecoder(dedup_window=0.05)
    other = eth(ipv4(udp(b"other"), ident=1))
    pkt = eth(ipv4(udp(RTP), ident=42))
    assert dec.decode(1.000, 1, other)
    assert dec.decode(1.049, 1, pkt)
    assert dec.decode(1.051, 1, eth(ipv4(udp(b"x"), ident=3)))
    assert not dec.decode(1.090, 1, pkt)


def test_non_finite_timestamps_do_not_break_anything() -> None:
    dec = PacketDecoder()
    for ts in (math.inf, math.nan, -math.inf, 1.0):
        dec.decode(ts, 1, eth(ipv4(udp(RTP))))
        dec.decode(ts, 1, eth(ipv4(tcp(b"x", 1), proto=6)))
    assert dec.stats["frames"] == 8


# -- real captures ----------------------------------------------------------------------


def _pton(text: str) -> bytes:
    text = text.split(",")[0]
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def tshark_udp(path: Path) -> list[Datagram]:
    """UDP datagrams as tshark dissects them, after its default IP reassembly."""
    rows = tshark_fields(
        path,
        ("ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst", "udp.dstport", "udp.payload"),
        "udp and not icmp and not icmpv6",
    )
    result: list[Datagram] = []
    for src4, src6, sport, dst4, dst6, dport, payload in rows:
        result.append(
            (17, _pton(src4 or src6), int(sport), _pton(dst4 or dst6), int(dport), bytes.fromhex(payload))
        )
    return result


def decode_file(path: Path, **kw: float) -> tuple[list[Datagram], dict[str, int]]:
    dec = PacketDecoder(**kw)  # type: ignore[arg-type]
    out: list[Datagram] = []
    for ts, linktype, frame in read_capture(path):
        out += dec.decode(ts, linktype, frame)
    return out, dec.stats


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_udp_matches_tshark_in_every_container(name: str, tmp_path: Path) -> None:
    path = capture(name)
    expected = tshark_udp(path)
    assert expected
    ng = tmp_path / "conv.pcapng"
    nsec = tmp_path / "conv.nsec.pcap"
    subprocess.run([need("editcap"), "-F", "pcapng", str(path), str(ng)], check=True, capture_output=True)
    subprocess.run([need("editcap"), "-F", "nsecpcap", str(path), str(nsec)], check=True, capture_output=True)
    for variant in (path, ng, nsec):
        got, stats = decode_file(variant)
        udp_only = [d for d in got if d[0] == 17]
        assert len(udp_only) == len(expected), (variant, stats)
        assert udp_only == expected
        assert stats["malformed"] == stats["truncated"] == stats["duplicates"] == 0


def test_ipv6_fragment_capture_reassembles() -> None:
    got, stats = decode_file(capture("ipv6frag.pcap"))
    assert stats["fragments"] == 4
    assert stats["reassembled"] == 2
    assert max(len(d[5]) for d in got) > 1500


def test_duplicated_capture_with_vlan_copies_yields_original() -> None:
    path = capture("sip-rtp-g711.pcap")
    frames = list(read_capture(path))
    reference = decode([(lt, f) for _, lt, f in frames], PacketDecoder(dedup_window=0))
    dec = PacketDecoder()
    got: list[Datagram] = []
    for ts, linktype, frame in frames:
        copy = bytearray(frame[:12] + struct.pack("!HH", 0x8100, 200) + frame[12:])
        copy[18 + 8] -= 1  # TTL
        got += dec.decode(ts, linktype, frame)
        got += dec.decode(ts + 0.0002, linktype, bytes(copy))
    assert got == reference
    assert dec.stats["duplicates"] == len(reference)


def test_real_sip_fragmented_and_shuffled_matches_tshark() -> None:
    path = capture("rtp-protocol.pcap")
    expected = tshark_udp(path)
    rng = random.Random(3)
    frames: list[tuple[int, bytes]] = []
    for ident, (_, linktype, frame) in enumerate(read_capture(path)):
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        tlen = struct.unpack_from("!H", ip, 2)[0]
        transport = ip[ihl:tlen]
        if ip[9] == 17 and len(transport) > 300:
            pieces = [eth(p) for p in fragments4(transport, 128, src=ip[12:16], dst=ip[16:20], ident=ident)]
            rng.shuffle(pieces)
            frames += [(1, p) for p in pieces]
        else:
            frames.append((linktype, frame))
    dec = PacketDecoder()
    got = decode(frames, dec)
    assert [d for d in got if d[0] == 17] == expected
    assert dec.stats["reassembled"] >= 9


# -- fuzzing ----------------------------------------------------------------------------

_SEEDS = [
    (1, eth(ipv4(udp(RTP)))),
    (1, eth(ipv4(udp(SIP), options=b"\x01\x01\x01\x00"), tags=(0x88A8, 0x8100))),
    (1, eth(ipv6(ext6(60) + frag6(17, 0, True, 5) + udp(SIP)[:16], nh=0), 0x86DD)),
    (1, eth(ipv6(frag6(17, 16, False, 5) + udp(SIP)[16:], nh=44), 0x86DD)),
    (1, eth(ipv4(udp(SIP * 3)[:64], ident=9, frag=0x2000))),
    (1, eth(ipv4(udp(SIP * 3)[64:], ident=9, frag=8))),
    (1, eth(ipv4(tcp(b"INVITE", 7), proto=6))),
    (113, sll(ipv4(udp(RTP)))),
    (276, sll2(ipv6(udp(RTP)), 0x86DD)),
    (0, struct.pack("<I", 2) + ipv4(udp(RTP))),
    (101, ipv6(ext6(43, 1) + udp(RTP), nh=43)),
]
_LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


def _check_output(out: tuple[Datagram, ...]) -> None:
    assert isinstance(out, tuple)
    for proto, src, sport, dst, dport, payload in out:
        assert proto in (6, 17)
        assert len(src) in (4, 16) and len(dst) == len(src)
        assert 0 <= sport <= 65535 and 0 <= dport <= 65535
        assert isinstance(payload, bytes)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_LINKTYPES), st.binary(max_size=120)), max_size=20))
def test_fuzz_random_frames(frames: list[tuple[int, bytes]]) -> None:
    dec = PacketDecoder()
    for i, (linktype, frame) in enumerate(frames):
        _check_output(dec.decode(i * 0.7, linktype, frame))


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(_SEEDS) - 1),
            st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
            st.integers(min_value=0, max_value=400),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_fuzz_mutated_frames(plan: list[tuple[int, list[tuple[int, int]], int]]) -> None:
    dec = PacketDecoder()
    for i, (which, mutations, cut) in enumerate(plan):
        linktype, frame = _SEEDS[which]
        data = bytearray(frame)
        for pos, value in mutations:
            data[pos % len(data)] = value
        _check_output(dec.decode(i * 0.01, linktype, bytes(data[: len(data) - cut % 20])))


@functools.cache
def _real_frames() -> tuple[tuple[int, bytes], ...]:
    frames: list[tuple[int, bytes]] = []
    for name, count in (("ipv6frag.pcap", 34), ("sip-over-tcp.pcap", 12), ("b2bua-asterisk.pcapng", 30)):
        frames += [(linktype, frame) for _, linktype, frame in list(read_capture(capture(name)))[:count]]
    return tuple(frames)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
            st.integers(min_value=0, max_value=2000),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_fuzz_mutated_real_frames(plan: list[tuple[int, list[tuple[int, int]], int]]) -> None:
    real = _real_frames()
    dec = PacketDecoder()
    for i, (which, mutations, cut) in enumerate(plan):
        linktype, frame = real[which % len(real)]
        data = bytearray(frame)
        for pos, value in mutations:
            data[pos % len(data)] = value
        _check_output(dec.decode(i * 0.01, linktype, bytes(data[: max(0, len(data) - cut)])))


def test_dedup_memory_is_bounded_per_generation() -> None:
    dec = PacketDecoder()
    for i in range(40000):
        dec.decode(1.0, 1, eth(ipv4(udp(i.to_bytes(4, "big")), ident=i & 0xFFFF)))
    assert len(dec._cur) <= 16384 and len(dec._prev) <= 16384
    assert dec.decode(1.0, 1, eth(ipv4(udp((39999).to_bytes(4, "big")), ident=39999 & 0xFFFF))) == ()
