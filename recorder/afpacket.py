"""Sans-I/O half of live capture: TPACKET_V3 ring blocks and the kernel filter.

Linux hands captured frames to user space in blocks of a memory-mapped ring
(``PACKET_RX_RING`` with ``TPACKET_V3``, see the kernel's
Documentation/networking/packet_mmap.rst and ``<linux/if_packet.h>``).  This
module knows the layout of those blocks and turns one into
``(timestamp, linktype, frame)`` tuples, the same shape the pcap reader yields,
so live frames take the recorder's existing path.  It also builds the classic
BPF program the kernel runs on every packet before it is copied into the ring:
only what can carry SIP or RTP costs ring space and Python time.

Nothing here makes a system call; :mod:`recorder.live_capture` owns the socket
and the mapping and passes the mapped ring in.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from struct import Struct

import numpy as np

from .batch import FrameBatch

__all__ = [
    "BLOCK_DESC_LEN",
    "BlockReader",
    "Frame",
    "Instruction",
    "LINKTYPE_ETHERNET",
    "PACKET_HDR_LEN",
    "TP_STATUS_KERNEL",
    "TP_STATUS_USER",
    "TP_STATUS_VLAN_TPID_VALID",
    "TP_STATUS_VLAN_VALID",
    "block_status",
    "media_filter",
    "pack_program",
    "release_block",
    "signalling_filter",
    "sip_rtp_filter",
]

Frame = tuple[float, int, bytes]
"""``(seconds since the epoch, linktype, frame bytes)`` as fed to the recorder."""

Instruction = tuple[int, int, int, int]
"""One classic BPF instruction, ``(code, jt, jf, k)`` as in ``struct sock_filter``."""

LINKTYPE_ETHERNET = 1

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

BLOCK_DESC_LEN = 48
"""``ALIGN_8(sizeof(struct tpacket_block_desc))``: the first packet never starts earlier."""
PACKET_HDR_LEN = 48
"""``TPACKET_ALIGN(sizeof(struct tpacket3_hdr))``; ``struct sockaddr_ll`` follows it."""
_SOCKADDR_LL_LEN = 20
_MIN_MAC_OFFSET = PACKET_HDR_LEN + _SOCKADDR_LL_LEN
_ETH_ADDRS = 12

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, blk_len (read from offset 8).
_BLOCK_STATUS_OFFSET = 8
_BLOCK = Struct("=IIII").unpack_from
_U32 = Struct("=I")
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len,
# tp_status, tp_mac, tp_net (skipped), hv1.tp_rxhash (skipped), hv1.tp_vlan_tci,
# hv1.tp_vlan_tpid.
_PACKET = Struct("=IIIIIIH6xIH").unpack_from
_VLAN_TAG = Struct("!HH").pack
_ETH_P_8021Q = 0x8100
_HEADER = np.dtype([("next", "=u4"), ("sec", "=u4"), ("nsec", "=u4"), ("snaplen", "=u4"), ("len", "=u4"),
                    ("status", "=u4"), ("mac", "=u2"), ("net", "=u2"), ("rxhash", "=u4"), ("tci", "=u4"),
                    ("tpid", "=u2"), ("pad", "V10")])
"""struct tpacket3_hdr (with hv1) as numpy reads it: the fields `_PACKET` unpacks, for a whole block at once."""
_FOUR_BYTES = np.arange(4)
"""Offsets of a 32-bit field: a VLAN tag, a frame's tp_next_offset."""
_ADDR_BYTES = np.arange(_ETH_ADDRS)


def block_status(ring: bytes | mmap.mmap, base: int) -> int:
    """``block_status`` of the block at ``base``; TP_STATUS_USER set means ours to read."""
    return _U32.unpack_from(ring, base + _BLOCK_STATUS_OFFSET)[0]


def release_block(ring: bytearray | mmap.mmap, base: int) -> None:
    """Give the block at ``base`` back to the kernel.  Until this is done the
    kernel cannot write into it, so a block held too long costs drops."""
    _U32.pack_into(ring, base + _BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)


class BlockReader:
    """Turns ring blocks into frames and counts what it saw.

    The kernel strips the outermost VLAN tag of a received frame into
    ``tp_vlan_tci``/``tp_vlan_tpid``; the tag is written back between the MAC
    addresses and the EtherType, as libpcap does, so a frame reads as it was on
    the wire and the decoder sees the VLAN.

    Frames are copies (slices of ``bytes`` or of an ``mmap``, never views): the
    block goes back to the kernel right after it is read, and a frame must
    outlive it.

    A block that breaks the layout rules (a count, offset or length pointing
    outside the block) stops the walk: frames before the fault are kept and
    ``malformed`` is counted.  The kernel never writes such a block, so seeing
    one means the ring was not set up as this reader assumes.  Bound: a block
    yields at most ``block_size // PACKET_HDR_LEN`` frames.
    """

    __slots__ = ("block_size", "blocks", "frames", "vlan_restored", "truncated", "malformed")

    def __init__(self, block_size: int) -> None:
        if block_size < BLOCK_DESC_LEN + _MIN_MAC_OFFSET:
            raise ValueError("block_size is smaller than one packet header")
        self.block_size = block_size
        self.blocks = 0
        self.frames = 0
        self.vlan_restored = 0
        self.truncated = 0
        self.malformed = 0

    @property
    def stats(self) -> dict[str, int]:
        return {
            "blocks": self.blocks,
            "frames": self.frames,
            "vlan_restored": self.vlan_restored,
            "truncated": self.truncated,
            "malformed_blocks": self.malformed,
        }

    def read_batch(self, ring: bytes | mmap.mmap, base: int) -> FrameBatch | None:
        """The user-owned block at ``ring[base:]`` as one FrameBatch (None if it
        is the kernel's or yields no frame): the block is copied once, as one
        bytes object, and its frames are named by their offsets in it, so no
        frame becomes an object of its own.  Same frames, same times, same
        counters and the same rules for a broken layout as :meth:`read`.

        The copy ends where the block's last frame ends.  A restored VLAN
        tag needs four more bytes in front of the frame: the kernel leaves
        at least the 20 bytes of ``struct sockaddr_ll`` there
        (``tp_mac >= 68``), which this copy no longer needs, so the first 12
        bytes of such a frame are moved back by four and the tag written
        after them, for all of the block's tagged frames at once."""
        size = self.block_size
        if base < 0 or base + size > len(ring):
            self.malformed += 1
            return None
        status, count, first, used = _BLOCK(ring, base + _BLOCK_STATUS_OFFSET)
        if not status & TP_STATUS_USER:
            return None
        self.blocks += 1
        if count > size // PACKET_HDR_LEN or first < BLOCK_DESC_LEN or used > size:
            self.malformed += 1
            return None
        view = np.frombuffer(ring, dtype=np.uint8, count=size, offset=base)
        try:
            at = _walk(ring, base, view, first, count, size)
            head = np.lib.stride_tricks.sliding_window_view(view, PACKET_HDR_LEN)[at].copy().view(_HEADER)[:, 0]
        finally:
            del view  # an exported mmap cannot be closed
        mac = head["mac"].astype(np.int64)
        snaplen = head["snaplen"].astype(np.int64)
        start = at + mac
        bad = np.flatnonzero((mac < _MIN_MAC_OFFSET) | (start + snaplen > size))
        done = int(bad[0]) if bad.size else len(at)
        if done < count:
            self.malformed += 1
        if not done:
            return None
        head, start, snaplen = head[:done], start[:done], snaplen[:done]
        self.frames += done
        self.truncated += int(np.count_nonzero(snaplen < head["len"][:done]))
        tagged = np.flatnonzero((head["status"] & TP_STATUS_VLAN_VALID != 0) & (snaplen >= _ETH_ADDRS))
        # One copy, up to the end of the last frame: the block's unused rest never leaves the ring.
        data = block = ring[base:base + int((start + snaplen).max())]
        if tagged.size:
            self.vlan_restored += len(tagged)
            tpid = np.where(head["status"][tagged] & TP_STATUS_VLAN_TPID_VALID != 0, head["tpid"][tagged],
                            _ETH_P_8021Q).astype(np.int64)
            tci = head["tci"][tagged].astype(np.int64) & 0xFFFF
            tags = np.stack((tpid >> 8, tpid & 0xFF, tci >> 8, tci & 0xFF), axis=1).astype(np.uint8)
            data = _with_tags(np.frombuffer(block, dtype=np.uint8), start, snaplen, tagged, tags)
        times = head["sec"].astype(np.float64) + head["nsec"].astype(np.float64) * 1e-9
        return FrameBatch(data, start, snaplen, times, np.full(done, LINKTYPE_ETHERNET, dtype=np.int64))

    def read(self, ring: bytes | mmap.mmap, base: int, out: list[Frame]) -> int:
        """Append the frames of the user-owned block at ``ring[base:]`` to
        ``out``; returns how many.  A block still owned by the kernel yields none."""
        size = self.block_size
        end = base + size
        if base < 0 or end > len(ring):
            self.malformed += 1
            return 0
        status, count, first, used = _BLOCK(ring, base + _BLOCK_STATUS_OFFSET)
        if not status & TP_STATUS_USER:
            return 0
        self.blocks += 1
        if count > size // PACKET_HDR_LEN or first < BLOCK_DESC_LEN or used > size:
            self.malformed += 1
            return 0
        append = out.append
        pos = base + first
        done = 0
        vlans = 0
        truncated = 0
        for left in range(count - 1, -1, -1):
            if pos + PACKET_HDR_LEN > end:
                break
            step, sec, nsec, snaplen, length, pstatus, mac, tci, tpid = _PACKET(ring, pos)
            start = pos + mac
            stop = start + snaplen
            if mac < _MIN_MAC_OFFSET or stop > end:
                break
            if pstatus & TP_STATUS_VLAN_VALID and snaplen >= _ETH_ADDRS:
                tag = _VLAN_TAG(tpid if pstatus & TP_STATUS_VLAN_TPID_VALID else _ETH_P_8021Q, tci & 0xFFFF)
                mid = start + _ETH_ADDRS
                append((sec + nsec * 1e-9, LINKTYPE_ETHERNET, ring[start:mid] + tag + ring[mid:stop]))
                vlans += 1
            else:
                append((sec + nsec * 1e-9, LINKTYPE_ETHERNET, ring[start:stop]))
            if snaplen < length:
                truncated += 1
            done += 1
            if left and step < PACKET_HDR_LEN:
                break
            pos += step
        if done < count:
            self.malformed += 1
        self.frames += done
        self.vlan_restored += vlans
        self.truncated += truncated
        return done


_RUN_AFTER = 16
"""Frames walked one by one after a run of equal steps proved shorter than this (doubling each time)."""


def _walk(ring: bytes | mmap.mmap, base: int, view: np.ndarray, first: int, count: int, size: int) -> np.ndarray:
    """Where the block's frames start, following each ``tp_next_offset`` as
    the kernel chains them, with the same stops as :meth:`BlockReader.read`.
    A mirror port's RTP comes in runs of frames of one size, one step apart:
    once two steps in a row are equal, the rest of the run is found with one
    array read (every frame's step checked against it) instead of a Python
    step a frame; where runs prove short, frames are walked one by one for a
    while (twice as long after each short run), so mixed sizes cost no more
    than before."""
    unpack = _U32.unpack_from
    runs: list[np.ndarray] = []
    single: list[int] = []
    pos, left = first, count
    last, quiet, backoff = -1, 0, _RUN_AFTER
    while left:
        if pos + PACKET_HDR_LEN > size:
            break
        step = unpack(ring, base + pos)[0]
        if left == 1 or step < PACKET_HDR_LEN:
            single.append(pos)
            break
        if quiet or step != last:
            quiet = max(quiet - 1, 0)
            last = step
            single.append(pos)
            left -= 1
            pos += step
            continue
        fit = min(left, (size - PACKET_HDR_LEN - pos) // step + 1)
        run = pos + step * np.arange(fit, dtype=np.int64)
        checked = run[:fit - 1] if fit == left else run  # the block's last frame has no step to check
        steps = view[checked[:, None] + _FOUR_BYTES].view("=u4")[:, 0]
        differ = np.flatnonzero(steps != step)
        taken = int(differ[0]) if differ.size else fit
        if single:
            runs.append(np.array(single, dtype=np.int64))
            single = []
        runs.append(run[:taken])
        left -= taken
        pos += step * taken
        if taken < _RUN_AFTER:
            quiet, backoff = backoff, backoff * 2
        else:
            backoff = _RUN_AFTER
    runs.append(np.array(single, dtype=np.int64))
    return np.concatenate(runs) if len(runs) > 1 else runs[0]


def _with_tags(u8: np.ndarray, start: np.ndarray, snaplen: np.ndarray, tagged: np.ndarray,
               tags: np.ndarray) -> bytes:
    """The block with each tagged frame's VLAN tag put back after its MAC
    addresses (``start`` and ``snaplen`` are moved to match).  In place, four
    bytes into the room before the frame, when the frames lie apart as the
    kernel writes them; a damaged layout whose frames overlap or touch gets
    them copied out one by one instead."""
    order = np.argsort(start, kind="stable")
    stops = (start + snaplen)[order]
    if np.all(stops[:-1] <= start[order][1:] - 4):
        buffer = u8.copy()
        moved = start[tagged]
        addrs = moved[:, None] + _ADDR_BYTES
        buffer[addrs - 4] = buffer[addrs]
        buffer[moved[:, None] + (_ETH_ADDRS - 4) + _FOUR_BYTES] = tags
        start[tagged] -= 4
        snaplen[tagged] += 4
        return buffer.tobytes()
    block = u8.tobytes()
    parts = []
    at = 0
    with_tag = dict(zip(tagged.tolist(), (bytes(t) for t in tags), strict=True))
    for i, (first, size) in enumerate(zip(start.tolist(), snaplen.tolist(), strict=True)):
        tag = with_tag.get(i)
        frame = block[first:first + size] if tag is None else \
            block[first:first + _ETH_ADDRS] + tag + block[first + _ETH_ADDRS:first + size]
        parts.append(frame)
        start[i], snaplen[i] = at, len(frame)
        at += len(frame)
    return b"".join(parts)


# ---- the kernel filter --------------------------------------------------------

# Classic BPF opcodes (<linux/filter.h>, <linux/bpf_common.h>).
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_IND = 0x50
_LD_H_IND = 0x48
_LDX_IMM = 0x01
_ALU_AND_K = 0x54
_ALU_LSH_K = 0x64
_ALU_ADD_X = 0x0C
_TAX = 0x07
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06

_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF (-0x1000) + SKF_AD_PKTTYPE, as u32
_PACKET_OUTGOING = 4
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_IPPROTO_FRAGMENT = 44
_ACCEPT = 0xFFFFFFFF  # keep the whole packet; the ring block size is the only cap
_REJECT = 0

_Label = str
_Op = tuple[int, _Label | int, _Label | int, int]


def sip_rtp_filter(sip_ports: Sequence[int] = (5060,), *, drop_outgoing: bool = False) -> list[Instruction]:
    """Classic BPF program for an Ethernet packet socket that keeps what a call
    recorder can use.

    Passed: every UDP datagram over IPv4 or IPv6 (RTP ports are negotiated, so
    any port), every IPv4 fragment whose protocol is UDP or TCP and every IPv6
    packet whose first header is a Fragment header for UDP or TCP (a non-first
    fragment has no ports to look at, and the decoder reassembles), and TCP
    from or to one of ``sip_ports`` over IPv4 or IPv6.  Each also behind up to
    two VLAN tags (802.1Q 0x8100, 802.1ad 0x88A8, the old QinQ 0x9100) still in
    the frame data.  On receive the kernel has already moved the outermost tag
    out of the data, so a frame that had three tags on the wire passes too;
    where the tag is stripped does not matter, the offsets into the data are
    the same.

    Not followed: IPv6 extension headers other than Fragment in first position
    (hop-by-hop or destination options before UDP are not seen on SIP trunks).

    ``drop_outgoing`` rejects packets the host itself sends (``PACKET_OUTGOING``):
    on loopback every packet is seen once leaving and once arriving.
    """
    ports = tuple(sip_ports)
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"SIP ports must be 1..65535, got {ports!r}")
    ops: list[_Op | _Label] = []
    if drop_outgoing:
        ops += [(_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE), (_JEQ_K, "reject", 0, _PACKET_OUTGOING)]
    # X holds the number of tag bytes before the EtherType that matters: 0, 4 or 8.
    ops += [(_LDX_IMM, 0, 0, 0), (_LD_H_ABS, 0, 0, 12)]
    ops += _jump_if_vlan("tag1", "l3")
    ops += ["tag1", (_LDX_IMM, 0, 0, 4), (_LD_H_ABS, 0, 0, 16)]
    ops += _jump_if_vlan("tag2", "l3")
    ops += ["tag2", (_LDX_IMM, 0, 0, 8), (_LD_H_ABS, 0, 0, 20)]
    ops += [
        "l3",
        (_JEQ_K, "ipv4", 0, _ETHERTYPE_IPV4),
        (_JEQ_K, "ipv6", "reject", _ETHERTYPE_IPV6),
        "ipv4",
        (_LD_B_IND, 0, 0, 14 + 9),  # protocol
        (_JEQ_K, "accept", 0, _IPPROTO_UDP),
        (_JEQ_K, 0, "reject", _IPPROTO_TCP),
        (_LD_H_IND, 0, 0, 14 + 6),  # flags and fragment offset
        (_JSET_K, "accept", 0, 0x3FFF),  # MF or an offset: a fragment
        (_LD_B_IND, 0, 0, 14),  # version and IHL
        (_ALU_AND_K, 0, 0, 0x0F),
        (_ALU_LSH_K, 0, 0, 2),
        (_ALU_ADD_X, 0, 0, 0),
        (_TAX, 0, 0, 0),  # X = tag bytes + IPv4 header length
        (_LD_H_IND, 0, 0, 14),  # source port
        *_accept_if_port(ports),
        (_LD_H_IND, 0, 0, 16),  # destination port
        *_accept_if_port(ports),
        (_RET_K, 0, 0, _REJECT),
        "ipv6",
        (_LD_B_IND, 0, 0, 14 + 6),  # next header
        (_JEQ_K, "accept", 0, _IPPROTO_UDP),
        (_JEQ_K, "tcp6", 0, _IPPROTO_TCP),
        (_JEQ_K, 0, "reject", _IPPROTO_FRAGMENT),
        (_LD_B_IND, 0, 0, 14 + 40),  # next header inside the fragment header
        (_JEQ_K, "accept", 0, _IPPROTO_UDP),
        (_JEQ_K, "accept", "reject", _IPPROTO_TCP),
        "tcp6",
        (_LD_H_IND, 0, 0, 14 + 40),
        *_accept_if_port(ports),
        (_LD_H_IND, 0, 0, 14 + 42),
        *_accept_if_port(ports),
        "reject",
        (_RET_K, 0, 0, _REJECT),
        "accept",
        (_RET_K, 0, 0, _ACCEPT),
    ]
    return _assemble(ops)


def _prelude(drop_outgoing: bool) -> list[_Op | _Label]:
    """Reject what this host sends (when asked); leave in X the VLAN tag bytes before
    the EtherType that matters and jump to "l3" with that EtherType in A."""
    ops: list[_Op | _Label] = []
    if drop_outgoing:
        ops += [(_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE), (_JEQ_K, "reject", 0, _PACKET_OUTGOING)]
    ops += [(_LDX_IMM, 0, 0, 0), (_LD_H_ABS, 0, 0, 12)]
    ops += _jump_if_vlan("tag1", "l3")
    ops += ["tag1", (_LDX_IMM, 0, 0, 4), (_LD_H_ABS, 0, 0, 16)]
    ops += _jump_if_vlan("tag2", "l3")
    ops += ["tag2", (_LDX_IMM, 0, 0, 8), (_LD_H_ABS, 0, 0, 20)]
    return ops


def _ports(ports: Sequence[int]) -> tuple[int, ...]:
    found = tuple(ports)
    if not found or any(not 0 < p < 65536 for p in found):
        raise ValueError(f"SIP ports must be 1..65535, got {found!r}")
    return found


def media_filter(sip_ports: Sequence[int] = (5060,), *, drop_outgoing: bool = False) -> list[Instruction]:
    """The share of :func:`sip_rtp_filter` a capture worker's fanout socket
    takes (recorder.fanout): whole UDP datagrams over IPv4 or IPv6 with
    neither port a SIP port.  SIP, TCP and every fragment go to the
    signalling socket each worker has (:func:`signalling_filter`), so the two
    together pass what :func:`sip_rtp_filter` passes, and nothing twice."""
    ports = _ports(sip_ports)
    ops = _prelude(drop_outgoing) + [
        "l3",
        (_JEQ_K, "ipv4", 0, _ETHERTYPE_IPV4),
        (_JEQ_K, "ipv6", "reject", _ETHERTYPE_IPV6),
        "ipv4",
        (_LD_B_IND, 0, 0, 14 + 9),
        (_JEQ_K, 0, "reject", _IPPROTO_UDP),
        (_LD_H_IND, 0, 0, 14 + 6),
        (_JSET_K, "reject", 0, 0x3FFF),
        (_LD_B_IND, 0, 0, 14),
        (_ALU_AND_K, 0, 0, 0x0F),
        (_ALU_LSH_K, 0, 0, 2),
        (_ALU_ADD_X, 0, 0, 0),
        (_TAX, 0, 0, 0),
        (_LD_H_IND, 0, 0, 14),
        *_reject_if_port(ports),
        (_LD_H_IND, 0, 0, 16),
        *_reject_if_port(ports),
        (_RET_K, 0, 0, _ACCEPT),
        "ipv6",
        (_LD_B_IND, 0, 0, 14 + 6),
        (_JEQ_K, 0, "reject", _IPPROTO_UDP),
        (_LD_H_IND, 0, 0, 14 + 40),
        *_reject_if_port(ports),
        (_LD_H_IND, 0, 0, 14 + 42),
        *_reject_if_port(ports),
        (_RET_K, 0, 0, _ACCEPT),
        "reject",
        (_RET_K, 0, 0, _REJECT),
    ]
    return _assemble(ops)


def signalling_filter(sip_ports: Sequence[int] = (5060,), *, drop_outgoing: bool = False) -> list[Instruction]:
    """What every capture worker reads in full beside its fanout share: UDP
    and TCP from or to a SIP port over IPv4 or IPv6, and every IPv4 or IPv6
    fragment of UDP or TCP (a fragment has no ports to tell SIP from RTP,
    and a large INVITE is fragmented)."""
    ports = _ports(sip_ports)
    ops = _prelude(drop_outgoing) + [
        "l3",
        (_JEQ_K, "ipv4", 0, _ETHERTYPE_IPV4),
        (_JEQ_K, "ipv6", "reject", _ETHERTYPE_IPV6),
        "ipv4",
        (_LD_B_IND, 0, 0, 14 + 9),
        (_JEQ_K, "l4v4", 0, _IPPROTO_UDP),
        (_JEQ_K, 0, "reject", _IPPROTO_TCP),
        "l4v4",
        (_LD_H_IND, 0, 0, 14 + 6),
        (_JSET_K, "accept", 0, 0x3FFF),
        (_LD_B_IND, 0, 0, 14),
        (_ALU_AND_K, 0, 0, 0x0F),
        (_ALU_LSH_K, 0, 0, 2),
        (_ALU_ADD_X, 0, 0, 0),
        (_TAX, 0, 0, 0),
        (_LD_H_IND, 0, 0, 14),
        *_accept_if_port(ports),
        (_LD_H_IND, 0, 0, 16),
        *_accept_if_port(ports),
        (_RET_K, 0, 0, _REJECT),
        "ipv6",
        (_LD_B_IND, 0, 0, 14 + 6),
        (_JEQ_K, "l4v6", 0, _IPPROTO_UDP),
        (_JEQ_K, "l4v6", 0, _IPPROTO_TCP),
        (_JEQ_K, 0, "reject", _IPPROTO_FRAGMENT),
        (_LD_B_IND, 0, 0, 14 + 40),
        (_JEQ_K, "accept", 0, _IPPROTO_UDP),
        (_JEQ_K, "accept", "reject", _IPPROTO_TCP),
        "l4v6",
        (_LD_H_IND, 0, 0, 14 + 40),
        *_accept_if_port(ports),
        (_LD_H_IND, 0, 0, 14 + 42),
        *_accept_if_port(ports),
        "reject",
        (_RET_K, 0, 0, _REJECT),
        "accept",
        (_RET_K, 0, 0, _ACCEPT),
    ]
    return _assemble(ops)


def _reject_if_port(ports: tuple[int, ...]) -> list[_Op | _Label]:
    return [(_JEQ_K, "reject", 0, port) for port in ports]


def _jump_if_vlan(tagged: _Label, untagged: _Label) -> list[_Op | _Label]:
    *most, last = _VLAN_TPIDS
    return [*((_JEQ_K, tagged, 0, tpid) for tpid in most), (_JEQ_K, tagged, untagged, last)]


def _accept_if_port(ports: tuple[int, ...]) -> list[_Op | _Label]:
    return [(_JEQ_K, "accept", 0, port) for port in ports]


def _assemble(ops: list[_Op | _Label]) -> list[Instruction]:
    """Resolve label jumps to the relative offsets classic BPF wants."""
    labels: dict[str, int] = {}
    body: list[_Op] = []
    for op in ops:
        if isinstance(op, str):
            labels[op] = len(body)
        else:
            body.append(op)
    program: list[Instruction] = []
    for here, (code, jt, jf, k) in enumerate(body):
        program.append((code, _offset(labels, here, jt), _offset(labels, here, jf), k))
    return program


def _offset(labels: dict[str, int], here: int, target: _Label | int) -> int:
    if isinstance(target, int):
        return target
    distance = labels[target] - here - 1
    if not 0 <= distance <= 255:
        raise ValueError(f"BPF jump to {target!r} out of range ({distance})")
    return distance


_SOCK_FILTER = Struct("=HBBI")


def pack_program(program: Sequence[Instruction]) -> bytes:
    """The program as the array of ``struct sock_filter`` that ``SO_ATTACH_FILTER`` points to."""
    if not 0 < len(program) <= 4096:  # BPF_MAXINSNS
        raise ValueError("a classic BPF program has 1..4096 instructions")
    return b"".join(_SOCK_FILTER.pack(*ins) for ins in program)
