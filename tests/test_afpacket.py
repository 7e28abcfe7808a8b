"""recorder.afpacket: TPACKET_V3 block walking and the classic BPF filter.

The filter is run here by a small classic-BPF interpreter over crafted frames
(tests/test_live_capture.py runs the same program in the kernel), and checked
against a plain-Python statement of what it must pass.
"""
from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.afpacket import (
    PACKET_HDR_LEN,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    BlockReader,
    Instruction,
    block_status,
    pack_program,
    release_block,
    sip_rtp_filter,
)
from recorder.batch import FrameBatch, join_batches
from tests.raw_frames import ARP, DOT1AD, DOT1Q, ICMP_ECHO, MAC, OPTIONS_5060, QINQ, eth, frag6, ipv4, ipv6, tcp, udp

# ---- a classic BPF interpreter (the kernel's semantics, <linux/filter.h>) ------

_SKF_AD_OFF = 0xFFFFF000
_SKF_AD_PKTTYPE = 4
_M32 = 0xFFFFFFFF


class _OutOfBounds(Exception):
    pass


def run_bpf(program: Sequence[Instruction], pkt: bytes, *, pkttype: int = 0) -> int:
    """What the kernel's classic BPF returns for ``pkt``: a packet load past
    the end ends the program with 0, as in the kernel."""
    try:
        return _run(program, pkt, pkttype)
    except _OutOfBounds:
        return 0


def _load(pkt: bytes, off: int, size: int, pkttype: int) -> int:
    if off >= _SKF_AD_OFF:
        if off - _SKF_AD_OFF == _SKF_AD_PKTTYPE and size == 4:
            return pkttype
        raise NotImplementedError(f"ancillary load {off - _SKF_AD_OFF}")
    if off + size > len(pkt):
        raise _OutOfBounds
    return int.from_bytes(pkt[off : off + size], "big")


def _run(program: Sequence[Instruction], pkt: bytes, pkttype: int) -> int:
    a = x = 0
    mem = [0] * 16
    pc = 0
    sizes = {0x00: 4, 0x08: 2, 0x10: 1}
    while True:  # classic BPF only jumps forward, so this ends
        code, jt, jf, k = program[pc]
        pc += 1
        cls, mode, src = code & 0x07, code & 0xE0, code & 0x08
        if cls in (0x00, 0x01):  # LD, LDX
            size = sizes[code & 0x18]
            if mode == 0x00:
                value = k
            elif mode == 0x20:
                value = _load(pkt, k, size, pkttype)
            elif mode == 0x40:
                value = _load(pkt, (x + k) & _M32, size, pkttype)
            elif mode == 0x60:
                value = mem[k]
            elif mode == 0x80:
                value = len(pkt)
            elif mode == 0xA0 and cls == 0x01:
                value = (_load(pkt, k, 1, pkttype) & 0x0F) * 4
            else:
                raise AssertionError(f"bad load {code:#x}")
            if cls == 0x00:
                a = value
            else:
                x = value
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:  # ALU
            op, operand = code & 0xF0, (x if src else k)
            if op == 0x00:
                a = (a + operand) & _M32
            elif op == 0x10:
                a = (a - operand) & _M32
            elif op == 0x20:
                a = (a * operand) & _M32
            elif op == 0x30:
                if operand == 0:
                    return 0
                a //= operand
            elif op == 0x40:
                a |= operand
            elif op == 0x50:
                a &= operand
            elif op == 0x60:
                a = (a << operand) & _M32 if operand < 32 else 0
            elif op == 0x70:
                a = a >> operand if operand < 32 else 0
            elif op == 0x80:
                a = -a & _M32
            elif op == 0x90:
                if operand == 0:
                    return 0
                a %= operand
            elif op == 0xA0:
                a ^= operand
            else:
                raise AssertionError(f"bad alu {code:#x}")
        elif cls == 0x05:  # JMP
            op, operand = code & 0xF0, (x if src else k)
            if op == 0x00:
                pc += k
                continue
            if op == 0x10:
                taken = a == operand
            elif op == 0x20:
                taken = a > operand
            elif op == 0x30:
                taken = a >= operand
            elif op == 0x40:
                taken = bool(a & operand)
            else:
                raise AssertionError(f"bad jump {code:#x}")
            pc += jt if taken else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x


CASES: list[tuple[str, bytes, bool]] = [
    ("udp4 rtp port", eth(0x0800, ipv4(17, udp(40000, 20000))), True),
    ("udp4 sip", eth(0x0800, ipv4(17, udp(5060, 5060))), True),
    ("udp6", eth(0x86DD, ipv6(17, udp(30000, 5004))), True),
    ("tcp4 to 5060", eth(0x0800, ipv4(6, tcp(33000, 5060))), True),
    ("tcp4 from 5060", eth(0x0800, ipv4(6, tcp(5060, 33000))), True),
    ("tcp4 to 5060 with IP options", eth(0x0800, ipv4(6, tcp(33000, 5060), ihl=7)), True),
    ("tcp4 port 80", eth(0x0800, ipv4(6, tcp(33000, 80))), False),
    ("tcp4 to 5061 (TLS)", eth(0x0800, ipv4(6, tcp(33000, 5061))), False),
    ("tcp4 port 80 behind options that read 5060", eth(0x0800, OPTIONS_5060), False),
    ("tcp6 to 5060", eth(0x86DD, ipv6(6, tcp(33000, 5060))), True),
    ("tcp6 from 5060", eth(0x86DD, ipv6(6, tcp(5060, 33000))), True),
    ("tcp6 port 80", eth(0x86DD, ipv6(6, tcp(33000, 80))), False),
    ("icmp4", eth(0x0800, ipv4(1, ICMP_ECHO)), False),
    ("icmp6", eth(0x86DD, ipv6(58, ICMP_ECHO)), False),
    ("arp", eth(0x0806, ARP), False),
    ("udp4 first fragment", eth(0x0800, ipv4(17, udp(1, 2), frag=0x2000)), True),
    ("udp4 last fragment", eth(0x0800, ipv4(17, b"tail", frag=0x0010)), True),
    ("tcp4 non-first fragment", eth(0x0800, ipv4(6, b"tail", frag=0x2010)), True),
    ("icmp4 fragment", eth(0x0800, ipv4(1, b"tail", frag=0x0010)), False),
    ("udp4 DF set, not a fragment", eth(0x0800, ipv4(17, udp(1, 2), frag=0x4000)), True),
    ("tcp4 port 80 DF set", eth(0x0800, ipv4(6, tcp(1, 80), frag=0x4000)), False),
    ("udp6 fragment", eth(0x86DD, ipv6(44, frag6(17, b"tail", offset=100, more=False))), True),
    ("tcp6 fragment", eth(0x86DD, ipv6(44, frag6(6, b"tail", offset=100))), True),
    ("icmp6 fragment", eth(0x86DD, ipv6(44, frag6(58, b"tail"))), False),
    ("udp6 behind hop-by-hop (not followed)", eth(0x86DD, ipv6(0, bytes([17, 0]) + bytes(6) + udp(1, 2))), False),
    ("udp4, 1 tag 802.1Q", eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1Q, 10)]), True),
    ("udp4, 1 tag 802.1ad", eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1AD, 10)]), True),
    ("udp4, 1 tag 0x9100", eth(0x0800, ipv4(17, udp(1, 2)), [(QINQ, 10)]), True),
    ("udp6, 2 tags", eth(0x86DD, ipv6(17, udp(1, 2)), [(DOT1AD, 10), (DOT1Q, 20)]), True),
    ("tcp4 5060, 2 tags", eth(0x0800, ipv4(6, tcp(5060, 1)), [(QINQ, 10), (DOT1Q, 20)]), True),
    ("tcp6 5060, 1 tag", eth(0x86DD, ipv6(6, tcp(1, 5060)), [(DOT1Q, 20)]), True),
    ("tcp4 80, 2 tags", eth(0x0800, ipv4(6, tcp(80, 1)), [(DOT1AD, 10), (DOT1Q, 20)]), False),
    ("icmp4, 1 tag", eth(0x0800, ipv4(1, ICMP_ECHO), [(DOT1Q, 10)]), False),
    ("arp, 1 tag", eth(0x0806, ARP, [(DOT1Q, 10)]), False),
    ("udp4, 3 tags in the data", eth(0x0800, ipv4(17, udp(1, 2)), [(QINQ, 1), (DOT1AD, 2), (DOT1Q, 3)]), False),
    ("runt", MAC + b"\x08", False),
    ("ethernet header only", MAC + b"\x08\x00", False),
    ("tagged, truncated in the tag", MAC + b"\x81\x00\x00", False),
    ("ipv4 cut before the protocol", eth(0x0800, b"\x45" + bytes(7)), False),
    ("tcp4 cut before the ports", eth(0x0800, ipv4(6, b"")), False),
]


@pytest.mark.parametrize(("frame", "passes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter_verdicts(frame: bytes, passes: bool) -> None:
    verdict = run_bpf(sip_rtp_filter(), frame)
    assert (verdict != 0) == passes
    if passes:
        assert verdict >= 0x40000  # never cuts a frame short


def test_other_sip_ports() -> None:
    program = sip_rtp_filter((5060, 5080))
    assert run_bpf(program, eth(0x0800, ipv4(6, tcp(5080, 1))))
    assert run_bpf(program, eth(0x86DD, ipv6(6, tcp(1, 5080))))
    assert not run_bpf(program, eth(0x0800, ipv4(6, tcp(1, 5070))))
    only = sip_rtp_filter((5080,))
    assert not run_bpf(only, eth(0x0800, ipv4(6, tcp(1, 5060))))
    assert run_bpf(only, eth(0x0800, ipv4(17, udp(1, 2))))


def test_outgoing_dropped_only_when_asked() -> None:
    frame = eth(0x0800, ipv4(17, udp(1, 2)))
    loop = sip_rtp_filter(drop_outgoing=True)
    assert not run_bpf(loop, frame, pkttype=4)
    for pkttype in (0, 1, 2, 3):
        assert run_bpf(loop, frame, pkttype=pkttype)
    assert run_bpf(sip_rtp_filter(), frame, pkttype=4)


@pytest.mark.parametrize("ports", [(), (0,), (65536,), (5060, -1)])
def test_bad_ports_refused(ports: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        sip_rtp_filter(ports)


def test_program_is_well_formed() -> None:
    """What the kernel's checker (bpf_check_classic) insists on: known opcodes,
    jumps inside the program, a return at the end."""
    known = {0x20, 0x28, 0x48, 0x50, 0x01, 0x54, 0x64, 0x0C, 0x07, 0x15, 0x45, 0x06}
    for ports in ((5060,), tuple(range(5060, 5100))):
        for drop in (False, True):
            program = sip_rtp_filter(ports, drop_outgoing=drop)
            assert program[-1][0] == 0x06
            for pc, (code, jt, jf, _k) in enumerate(program):
                assert code in known
                if code & 0x07 == 0x05:
                    assert pc + 1 + max(jt, jf) < len(program)
            packed = pack_program(program)
            assert len(packed) == 8 * len(program)
            assert struct.unpack_from("=HBBI", packed, 8 * (len(program) - 1)) == program[-1]


def test_too_many_ports_for_jumps_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        sip_rtp_filter(tuple(range(1000, 1300)))


def test_pack_program_bounds() -> None:
    with pytest.raises(ValueError):
        pack_program([])
    with pytest.raises(ValueError):
        pack_program([(0x06, 0, 0, 0)] * 4097)


def reference(frame: bytes, ports: tuple[int, ...], drop_outgoing: bool, pkttype: int) -> bool:
    """The filter's contract in plain Python, read field by field in the
    order a reader naturally would (a field past the end means no)."""
    if drop_outgoing and pkttype == 4:
        return False

    def u8(off: int) -> int:
        if off >= len(frame):
            raise IndexError
        return frame[off]

    def u16(off: int) -> int:
        return u8(off) << 8 | u8(off + 1)

    try:
        off = 12
        for _ in range(2):
            if u16(off) not in (DOT1Q, DOT1AD, QINQ):
                break
            off += 4
        etype, ip = u16(off), off + 2
        if etype == 0x0800:
            proto = u8(ip + 9)
            if proto == 17:
                return True
            if proto != 6:
                return False
            if u16(ip + 6) & 0x3FFF:
                return True
            l4 = ip + (u8(ip) & 0x0F) * 4
            return u16(l4) in ports or u16(l4 + 2) in ports
        if etype == 0x86DD:
            nh = u8(ip + 6)
            if nh == 17:
                return True
            if nh == 6:
                return u16(ip + 40) in ports or u16(ip + 42) in ports
            return nh == 44 and u8(ip + 40) in (6, 17)
        return False
    except IndexError:
        return False


_ports = st.sampled_from([5060, 5080, 80, 443, 0, 65535]) | st.integers(0, 65535)
_tag = st.tuples(st.sampled_from([DOT1Q, DOT1AD, QINQ, 0x0800, 0x1234]), st.integers(0, 0xFFFF))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    proto = draw(st.sampled_from([6, 17, 1, 44, 58, 0]) | st.integers(0, 255))
    if proto == 6:
        l4 = tcp(draw(_ports), draw(_ports))
    elif proto == 17:
        l4 = udp(draw(_ports), draw(_ports))
    elif proto == 44:
        l4 = frag6(draw(st.sampled_from([6, 17, 58])), draw(st.binary(max_size=8)), draw(st.integers(0, 8191)))
    else:
        l4 = draw(st.binary(max_size=24))
    family = draw(st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8847]))
    if family == 0x0800:
        frag = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x1FFF, 0x8000]) | st.integers(0, 0xFFFF))
        l3 = ipv4(proto, l4, frag=frag, ihl=draw(st.integers(5, 15)))
        l3 = bytes([draw(st.sampled_from([l3[0], draw(st.integers(0, 255))]))]) + l3[1:]
    elif family == 0x86DD:
        l3 = ipv6(proto, l4)
    else:
        l3 = draw(st.binary(max_size=64))
    frame = eth(family, l3, draw(st.lists(_tag, max_size=3)))
    return frame[: draw(st.integers(0, len(frame)))] if draw(st.booleans()) else frame


@settings(max_examples=1500, deadline=None)
@given(
    frame=frames(),
    ports=st.lists(_ports.filter(lambda p: p > 0), min_size=1, max_size=4).map(tuple),
    drop_outgoing=st.booleans(),
    pkttype=st.integers(0, 7),
)
def test_filter_matches_its_contract(frame: bytes, ports: tuple[int, ...], drop_outgoing: bool, pkttype: int) -> None:
    program = sip_rtp_filter(ports, drop_outgoing=drop_outgoing)
    verdict = run_bpf(program, frame, pkttype=pkttype)
    assert (verdict != 0) == reference(frame, ports, drop_outgoing, pkttype)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 7))
def test_filter_on_arbitrary_bytes(frame: bytes, pkttype: int) -> None:
    assert (run_bpf(sip_rtp_filter(), frame, pkttype=pkttype) != 0) == reference(frame, (5060,), False, pkttype)


# ---- ring blocks ----------------------------------------------------------------

BLOCK = 4096
MAC_OFFSET = 82  # where the kernel puts an Ethernet frame: TPACKET_ALIGN(68 + 16) - 14


def _align8(n: int) -> int:
    return (n + 7) & ~7


def make_block(
    packets: Sequence[tuple[int, int, bytes, int, int, int, int]],
    *,
    size: int = BLOCK,
    status: int = TP_STATUS_USER,
) -> bytearray:
    """A block laid out as the kernel writes one: ``(sec, nsec, data, tp_status,
    vlan_tci, vlan_tpid, tp_len)`` per packet."""
    block = bytearray(size)
    pos = 48
    for i, (sec, nsec, data, pstatus, tci, tpid, length) in enumerate(packets):
        step = _align8(MAC_OFFSET + len(data))
        nxt = step if i + 1 < len(packets) else 0
        struct.pack_into("=IIIIIIHHIIHH", block, pos, nxt, sec, nsec, len(data), length, pstatus,
                         MAC_OFFSET, MAC_OFFSET + 14, 0, tci, tpid, 0)
        struct.pack_into("=HHiHBB", block, pos + PACKET_HDR_LEN, 17, 0x0300, 2, 1, 0, 6)
        block[pos + MAC_OFFSET : pos + MAC_OFFSET + len(data)] = data
        pos += step
    struct.pack_into("=IIIIII", block, 0, 1, 0, status, len(packets), 48, pos)
    return block


def plain(sec: int, nsec: int, data: bytes) -> tuple[int, int, bytes, int, int, int, int]:
    return (sec, nsec, data, 0, 0, 0, len(data))


F1 = eth(0x0800, ipv4(17, udp(40000, 20000, b"A" * 172)))
F2 = eth(0x86DD, ipv6(17, udp(40000, 20000, b"B" * 172)))
F3 = eth(0x0800, ipv4(6, tcp(5060, 33000, b"INVITE")))


def test_block_frames_and_timestamps() -> None:
    block = bytes(make_block([plain(1_700_000_000, 123_456_789, F1), plain(1_700_000_001, 0, F2),
                              plain(1_700_000_001, 999_999_999, F3)]))
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    assert reader.read(block, 0, out) == 3
    assert [f[2] for f in out] == [F1, F2, F3]
    assert all(f[1] == 1 and type(f[2]) is bytes for f in out)
    assert out[0][0] == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert out[2][0] == pytest.approx(1_700_000_001.999999999, abs=1e-6)
    assert reader.stats == {"blocks": 1, "frames": 3, "vlan_restored": 0, "truncated": 0, "malformed_blocks": 0}


def test_stripped_vlan_tag_is_put_back() -> None:
    inner = eth(0x0800, ipv4(17, udp(1, 2)))
    stripped_8021ad = eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1Q, 20)])  # inner tag stays in the data
    flags = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID
    block = bytes(make_block([
        (1, 0, inner, flags, 0xA00A, DOT1Q, len(inner)),
        (2, 0, stripped_8021ad, flags, 10, DOT1AD, len(stripped_8021ad)),
        (3, 0, inner, TP_STATUS_VLAN_VALID, 0, 0, len(inner)),  # priority tag, TPID not reported
        (4, 0, inner, 0, 77, DOT1Q, len(inner)),  # stale tci without the flag: no tag
    ]))
    out: list[tuple[float, int, bytes]] = []
    reader = BlockReader(BLOCK)
    assert reader.read(block, 0, out) == 4
    assert out[0][2] == eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1Q, 0xA00A)])
    assert out[1][2] == eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1AD, 10), (DOT1Q, 20)])
    assert out[2][2] == eth(0x0800, ipv4(17, udp(1, 2)), [(DOT1Q, 0)])
    assert out[3][2] == inner
    assert reader.vlan_restored == 3


def test_truncated_frames_counted() -> None:
    block = bytes(make_block([(1, 0, F1[:60], 0, 0, 0, len(F1)), plain(2, 0, F2)]))
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    assert reader.read(block, 0, out) == 2
    assert out[0][2] == F1[:60] and reader.truncated == 1


def test_kernel_owned_block_yields_nothing_and_status_round_trip() -> None:
    ring = make_block([plain(1, 0, F1)], status=TP_STATUS_KERNEL) + make_block([plain(2, 0, F2)])
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    assert block_status(ring, 0) == TP_STATUS_KERNEL
    assert reader.read(bytes(ring), 0, out) == 0 and reader.blocks == 0
    assert block_status(ring, BLOCK) & TP_STATUS_USER
    assert reader.read(bytes(ring), BLOCK, out) == 1 and out[0][2] == F2
    release_block(ring, BLOCK)
    assert block_status(ring, BLOCK) == TP_STATUS_KERNEL


def test_reads_from_a_mapping_give_bytes() -> None:
    """The adapter passes the mmap itself: frames must be copies, not views."""
    with mmap.mmap(-1, 2 * BLOCK) as ring:
        ring[BLOCK:] = make_block([plain(1, 0, F1), (2, 0, F3, TP_STATUS_VLAN_VALID, 5, 0, len(F3))])
        out: list[tuple[float, int, bytes]] = []
        assert BlockReader(BLOCK).read(ring, BLOCK, out) == 2
        release_block(ring, BLOCK)
        ring[BLOCK:] = bytes(BLOCK)
    assert out[0][2] == F1 and type(out[0][2]) is bytes
    assert out[1][2] == F3[:12] + b"\x81\x00\x00\x05" + F3[12:]


def _corrupt(field: str, value: int) -> bytes:
    block = make_block([plain(1, 0, F1), plain(2, 0, F2), plain(3, 0, F3)])
    second = 48 + _align8(MAC_OFFSET + len(F1))
    where = {
        "num_pkts": (12, "I"), "offset_to_first_pkt": (16, "I"), "blk_len": (20, "I"),
        "next_offset": (second, "I"), "snaplen": (second + 12, "I"), "mac": (second + 24, "H"),
    }[field]
    struct.pack_into("=" + where[1], block, where[0], value)
    return bytes(block)


@pytest.mark.parametrize(("field", "value", "kept"), [
    ("num_pkts", BLOCK, 0),
    ("num_pkts", 5, 3),
    ("offset_to_first_pkt", 8, 0),
    ("offset_to_first_pkt", BLOCK - 10, 0),
    ("blk_len", BLOCK + 1, 0),
    ("next_offset", 0, 2),
    ("next_offset", 16, 2),
    ("next_offset", 1 << 30, 2),
    ("snaplen", BLOCK, 1),
    ("mac", 20, 1),
    ("mac", 0xFFFF, 1),
])
def test_malformed_blocks_stop_the_walk(field: str, value: int, kept: int) -> None:
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    assert reader.read(_corrupt(field, value), 0, out) == kept
    assert [f[2] for f in out] == [F1, F2, F3][:kept]
    assert reader.malformed == 1


def test_block_outside_the_ring() -> None:
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    assert reader.read(bytes(make_block([plain(1, 0, F1)])), BLOCK, out) == 0
    assert reader.read(bytes(make_block([plain(1, 0, F1)]))[:100], 0, out) == 0
    assert reader.malformed == 2 and not out


def test_block_size_bound() -> None:
    with pytest.raises(ValueError):
        BlockReader(64)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.integers(0, BLOCK - 1), st.integers(0, 255)), max_size=12))
def test_damaged_block_never_raises(damage: list[tuple[int, int]]) -> None:
    block = make_block([plain(1, 0, F1), (2, 5, F2, TP_STATUS_VLAN_VALID, 3, 0, 9999), plain(3, 0, F3)])
    for where, value in damage:
        block[where] = value
    reader = BlockReader(BLOCK)
    out: list[tuple[float, int, bytes]] = []
    got = reader.read(bytes(block), 0, out)
    assert got == len(out) <= BLOCK // PACKET_HDR_LEN
    assert all(type(f[2]) is bytes and len(f[2]) <= BLOCK for f in out)


RUN_BLOCK = 1 << 15


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from((0, 1, 2)), min_size=0, max_size=90),
       st.lists(st.tuples(st.integers(0, RUN_BLOCK - 1), st.integers(0, 255)), max_size=6))
def test_a_block_as_a_batch_holds_the_frames_read_one_by_one(kinds: list[int],
                                                              damage: list[tuple[int, int]]) -> None:
    """BlockReader.read_batch finds runs of equal steps with array reads
    (afpacket._walk): on blocks of long runs, short runs and mixed sizes,
    damaged anywhere, it yields what BlockReader.read yields, frame for frame,
    with the same counters."""
    sizes = (F1, F2 + b"\x00" * 40, F3)
    packets = [(1 + i, i * 1000, sizes[k], TP_STATUS_VLAN_VALID if k == 1 else 0, 7, 0, len(sizes[k]))
               for i, k in enumerate(kinds)]
    block = make_block(packets, size=RUN_BLOCK)
    for where, value in damage:
        block[where] = value
    one, batched = BlockReader(RUN_BLOCK), BlockReader(RUN_BLOCK)
    out: list[tuple[float, int, bytes]] = []
    one.read(bytes(block), 0, out)
    batch = batched.read_batch(bytes(block), 0)
    assert (list(batch.frames()) if batch is not None else []) == out
    assert batched.stats == one.stats


def test_long_runs_of_one_size_are_read_whole() -> None:
    """A block of one frame size and a few others between runs: every frame, in order."""
    kinds = [0] * 40 + [2] + [0] * 30 + [1, 1, 2] + [0] * 20
    frames = (F1, F2, F3)
    block = make_block([plain(1 + i, 0, frames[k]) for i, k in enumerate(kinds)], size=RUN_BLOCK)
    batch = BlockReader(RUN_BLOCK).read_batch(bytes(block), 0)
    assert batch is not None
    assert [f[2] for f in batch.frames()] == [frames[k] for k in kinds]
    assert batch.times.tolist() == [1.0 + i for i in range(len(kinds))]


@st.composite
def _pieces(draw: st.DrawFn) -> list[FrameBatch]:
    """Batches as a ring gives them: each over a buffer of its own or a slice of one it shares
    with the next (a block read in two wake-ups), frames with gaps between them."""
    pieces: list[FrameBatch] = []
    for _ in range(draw(st.integers(1, 6))):
        sizes = draw(st.lists(st.integers(1, 60), min_size=1, max_size=12))
        gaps = draw(st.lists(st.integers(0, 9), min_size=len(sizes), max_size=len(sizes)))
        starts = [sum(sizes[:i]) + sum(gaps[: i + 1]) for i in range(len(sizes))]
        data = bytes(draw(st.binary(min_size=starts[-1] + sizes[-1], max_size=starts[-1] + sizes[-1])))
        shared = pieces and draw(st.booleans())
        if shared:
            before = pieces[-1]
            data = before.data + data
            starts = [s + len(before.data) for s in starts]
            pieces[-1] = FrameBatch(data, before.offsets, before.lengths, before.times, before.linktypes)
        first_time = draw(st.floats(0, 1e9, allow_nan=False))
        pieces.append(FrameBatch(data, np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64),
                                 np.array([first_time + i for i in range(len(sizes))], dtype=np.float64),
                                 np.array([draw(st.sampled_from([1, 113])) for _ in sizes], dtype=np.int64)))
    return pieces


@given(_pieces())
@settings(max_examples=300, deadline=None)
def test_joined_batches_hold_each_piece_s_frames_in_order(pieces: list[FrameBatch]) -> None:
    """What the daemon and each worker feed the recorder (several ring blocks at once) is every
    piece's frames, in order, with their times and link types, and nothing between them."""
    joined = join_batches(pieces)
    expected = [(p.frame(i), float(p.times[i]), int(p.linktypes[i])) for p in pieces for i in range(len(p))]
    assert [(joined.frame(i), float(joined.times[i]), int(joined.linktypes[i]))
            for i in range(len(joined))] == expected
    assert len(joined.data) <= sum(len(p.data) for p in {id(p.data): p for p in pieces}.values())
