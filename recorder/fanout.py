"""Several capture workers on one interface: which worker a packet and a call belong to.

The kernel spreads one interface's packets over the sockets of a
``PACKET_FANOUT`` group (Documentation/networking/packet_mmap.rst), one
socket per worker process.  The mode is ``PACKET_FANOUT_CBPF``: the kernel
runs :func:`demux_program` on each packet and hands it to member
``result % members``.  Our own program rather than the kernel's flow hash
(``PACKET_FANOUT_HASH``) because the kernel's hash is keyed with a secret
random seed: nobody outside the kernel can tell where a flow will land.
Ours is :func:`flow_worker`, which the workers compute too, so that they can
agree on a call's owner from its SDP before its first RTP packet arrives.

The function is symmetric: ``a:p -> b:q`` and ``b:q -> a:p`` land on the
same worker, so both directions of symmetric RTP (RFC 4961, what PBXs and
SBCs send) meet in one worker without a word exchanged.  The 32-bit words
of both addresses and both ports are added (the order of source and
destination cancels out; XOR would too, but a PBX that takes the next port
pair on both sides for each call keeps ``sport ^ dport`` the same for many
calls), then mixed by a multiplication (the high half of the product, which
depends on every bit, is what the modulo sees).

Ownership (:func:`call_owner`): a call belongs to the worker its SDP pair
hashes to, the first media endpoint each party announced; a call without
both falls back to its Call-ID.  Every worker reads all SIP (its signalling
socket is outside the group, see :func:`recorder.afpacket.signalling_filter`)
and runs the same policy, so every worker tracks every call, takes the same
decisions (start, exclusion, end) on the same messages, and computes the
same owner: no decision has to travel, so none can arrive late.  Only the
owner writes the call; a flow that lands elsewhere (asymmetric RTP, NAT, a
B2BUA's other leg, a re-INVITE to a new address) is forwarded by the worker
that received it to the owner (:func:`frame_endpoints` finds its endpoints).

Nothing here does I/O: :mod:`recorder.live_capture` joins the group and
installs the program.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from struct import Struct

from .afpacket import Instruction, _assemble
from .calls import Endpoint

__all__ = ["MIX", "Endpoint", "call_owner", "demux_program", "flow_worker", "frame_endpoints"]

MIX = 0x9E3779B1
"""Knuth's multiplicative hash constant: the high half of the product depends on every bit."""

# Classic BPF opcodes (<linux/filter.h>).
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_LD_H_IND = 0x48
_LDX_MEM = 0x61
_LDX_MSH = 0xB1
_ST = 0x02
_STX = 0x03
_ALU_RSH_K = 0x74
_ALU_MUL_K = 0x24
_ALU_ADD_X = 0x0C
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06
_RET_A = 0x16

_SKF_AD_PROTOCOL = 0xFFFFF000  # SKF_AD_OFF (-0x1000) + SKF_AD_PROTOCOL (0), as u32
_ACC, _PORT = 0, 1  # scratch memory slots
_UDP = 17


def demux_program() -> list[Instruction]:
    """The classic BPF program for ``PACKET_FANOUT_DATA``: :func:`flow_worker`
    before the modulo (the kernel takes it) for UDP over IPv4 (unfragmented)
    and IPv6 (UDP as the first header); 0 for anything else, which the
    fanout sockets' filter rejects anyway (:func:`recorder.afpacket.media_filter`).

    Unlike a socket filter, the demux runs before the packet socket pushes
    the link header back: the data starts at the IP header, and the
    EtherType is the skb's protocol (``SKF_AD_PROTOCOL``), the VLAN tag the
    NIC or the kernel took off already out of the way.  A frame still
    carrying a second tag in its data goes to worker 0 (and is forwarded
    from there if another worker owns its call)."""
    add_to_acc = [(_LDX_MEM, 0, 0, _ACC), (_ALU_ADD_X, 0, 0, 0), (_ST, 0, 0, _ACC)]
    ops: list = [
        (_LD_W_ABS, 0, 0, _SKF_AD_PROTOCOL),
        (_JEQ_K, "ipv4", 0, 0x0800),
        (_JEQ_K, "ipv6", "zero", 0x86DD),
        "ipv4",
        (_LD_B_ABS, 0, 0, 9),
        (_JEQ_K, 0, "zero", _UDP),
        (_LD_H_ABS, 0, 0, 6),
        (_JSET_K, "zero", 0, 0x3FFF),
        (_LD_W_ABS, 0, 0, 12),
        (_ST, 0, 0, _ACC),
        (_LD_W_ABS, 0, 0, 16),
        *add_to_acc,
        (_LDX_MSH, 0, 0, 0),  # X = 4 * (IHL)
        (_LD_H_IND, 0, 0, 0),
        (_ST, 0, 0, _PORT),
        (_LD_H_IND, 0, 0, 2),
        (_JEQ_K, "ports", "ports", 0),
        "ipv6",
        (_LD_B_ABS, 0, 0, 6),
        (_JEQ_K, 0, "zero", _UDP),
        (_LD_W_ABS, 0, 0, 8),
        (_ST, 0, 0, _ACC),
    ]
    for offset in range(12, 40, 4):
        ops += [(_LD_W_ABS, 0, 0, offset), *add_to_acc]
    ops += [
        (_LD_H_ABS, 0, 0, 40),
        (_ST, 0, 0, _PORT),
        (_LD_H_ABS, 0, 0, 42),
        "ports",
        (_LDX_MEM, 0, 0, _PORT),
        (_ALU_ADD_X, 0, 0, 0),
        (_LDX_MEM, 0, 0, _ACC),
        (_ALU_ADD_X, 0, 0, 0),
        (_ALU_MUL_K, 0, 0, MIX),
        (_ALU_RSH_K, 0, 0, 16),
        (_RET_A, 0, 0, 0),
        "zero",
        (_RET_K, 0, 0, 0),
    ]
    return _assemble(ops)


def flow_worker(src: bytes, sport: int, dst: bytes, dport: int, workers: int) -> int:
    """The worker the kernel hands a UDP packet ``src:sport -> dst:dport`` to
    (addresses packed, 4 or 16 bytes), as :func:`demux_program` computes it."""
    acc = sport + dport
    for i in range(0, len(src), 4):
        acc += int.from_bytes(src[i:i + 4], "big") + int.from_bytes(dst[i:i + 4], "big")
    return ((((acc & 0xFFFFFFFF) * MIX) & 0xFFFFFFFF) >> 16) % workers


def call_owner(endpoints: tuple[Sequence[Endpoint], Sequence[Endpoint]], call_id: str, workers: int) -> int:
    """The worker that records a call: where its parties' first SDP media
    endpoints meet (both directions of their symmetric RTP land there), else
    a hash of the Call-ID.  Every worker computes it alike from the same SIP."""
    if workers == 1:
        return 0
    first, second = endpoints
    if first and second and len(first[0][0]) == len(second[0][0]):
        (a, a_port), (b, b_port) = first[0], second[0]
        return flow_worker(a, a_port, b, b_port, workers)
    return zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % workers


_U16 = Struct("!H").unpack_from
_VLANS = (0x8100, 0x88A8, 0x9100)


def frame_endpoints(frame: bytes) -> tuple[Endpoint, Endpoint] | None:
    """Source and destination ``(address, port)`` of an Ethernet frame
    carrying UDP over IPv4 or IPv6 (up to two VLAN tags), else None: what a
    worker looks up to forward a flow of another worker's call."""
    pos = 12
    ethertype = _U16(frame, pos)[0] if len(frame) >= 14 else 0
    for _ in range(2):
        if ethertype not in _VLANS or len(frame) < pos + 6:
            break
        pos += 4
        ethertype = _U16(frame, pos)[0]
    ip = pos + 2
    if ethertype == 0x0800 and len(frame) >= ip + 20 and frame[ip + 9] == _UDP:
        udp = ip + (frame[ip] & 0x0F) * 4
        if len(frame) < udp + 4:
            return None
        return ((frame[ip + 12:ip + 16], _U16(frame, udp)[0]), (frame[ip + 16:ip + 20], _U16(frame, udp + 2)[0]))
    if ethertype == 0x86DD and len(frame) >= ip + 44 and frame[ip + 6] == _UDP:
        return ((frame[ip + 8:ip + 24], _U16(frame, ip + 40)[0]), (frame[ip + 24:ip + 40], _U16(frame, ip + 42)[0]))
    return None
