"""Live capture from one network interface: the I/O half of :mod:`recorder.afpacket`.

A Linux packet socket with a ``TPACKET_V3`` ring shared with the kernel: the
kernel runs the BPF filter and copies matching frames into fixed-size blocks
without waking us per packet; a block is handed over when it is full, or when
its timer (``block_timeout_ms``) expires with packets in it, so no frame waits
longer than that.  One Python call then reads a whole block.  The ring is what
absorbs a busy event loop or a slow disk: an RTP frame of 20 ms G.711 takes
296 bytes of ring, so 64 MiB holds 2.2 seconds of 100,000 packets per second
before the kernel drops.

The socket is created unbound to any protocol, so it receives nothing until the
filter, the ring and promiscuous mode are in place; only then is it bound to
``ETH_P_ALL``.  No unfiltered frame ever reaches the ring.

With ``part="media"`` and a ``fanout_group`` the socket is one member of a
``PACKET_FANOUT`` group that spreads UDP media over capture workers by
:func:`recorder.fanout.demux_program`; ``part="signalling"`` takes the SIP and
the fragments every worker reads in full (recorder.fanout explains why).  The
member sockets are made by the parent process and inherited by the workers
(``LiveCapture.adopt``), so a worker that dies and is started again takes
the same place in the group and the same ring.

Needs CAP_NET_RAW, and nothing else: promiscuous mode through a packet
socket membership does not need CAP_NET_ADMIN (tests/test_live_capture.py
checks this with every other capability dropped).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
from collections.abc import Callable
from struct import Struct
from types import TracebackType

from .afpacket import (
    LINKTYPE_ETHERNET,
    TP_STATUS_USER,
    BlockReader,
    Frame,
    block_status,
    media_filter,
    pack_program,
    release_block,
    signalling_filter,
    sip_rtp_filter,
)
from .batch import FrameBatch
from .errors import RecorderError
from .fanout import demux_program

__all__ = ["LiveCapture", "LiveCaptureError"]

# <linux/if_ether.h>, <linux/if_packet.h>, <linux/if_arp.h>, <asm-generic/socket.h>
_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_RX_RING = 5
_PACKET_STATISTICS = 6
_PACKET_VERSION = 10
_TPACKET_V3 = 2
_PACKET_MR_PROMISC = 1
_PACKET_FANOUT = 18
_PACKET_FANOUT_DATA = 22
_PACKET_FANOUT_CBPF = 6
_SO_ATTACH_FILTER = 26
_ARPHRD_ETHER = 1
_ARPHRD_LOOPBACK = 772
_NOMINAL_FRAME = 2048  # TPACKET_V3 frames are variable; the kernel only checks the arithmetic

_REQ3 = Struct("=7I")  # struct tpacket_req3
_MREQ = Struct("=iHH8s")  # struct packet_mreq
_STATS3 = Struct("=III")  # struct tpacket_stats_v3
_FPROG = Struct("@HP")  # struct sock_fprog: length, then a pointer to the instructions
_SEQ = Struct("=Q")  # tpacket_hdr_v1.seq_num, after block_status, num_pkts, offset_to_first_pkt, blk_len
_SEQ_OFFSET = 24
_FILTERS = {"all": sip_rtp_filter, "media": media_filter, "signalling": signalling_filter}


class LiveCaptureError(RecorderError, OSError):
    """Capture cannot start as asked: no CAP_NET_RAW, not an Ethernet-like
    interface, or a ring geometry the kernel would refuse."""


class LiveCapture:
    """Frames from one interface, read a block at a time without blocking.

    Use ``fileno()`` with ``loop.add_reader`` (or poll): it is readable while a
    block waits for us.  ``read_blocks`` returns ``(ts, 1, frame)`` tuples in
    capture order, Ethernet framing on Ethernet and loopback interfaces alike
    (loopback carries a 14-byte header with zero addresses), with the VLAN tag
    the kernel stripped put back.

    On loopback the packets this host sends are dropped in the filter, as
    libpcap does: otherwise each would be captured twice, leaving and arriving.

    If the interface is taken down, ``read_blocks`` raises ``OSError(ENETDOWN)``
    once; capture resumes by itself when it comes back up.
    """

    linktype = LINKTYPE_ETHERNET

    def __init__(
        self,
        interface: str,
        *,
        promiscuous: bool = True,
        ring_bytes: int = 64 << 20,
        block_bytes: int = 1 << 20,
        block_timeout_ms: int = 100,
        sip_ports: tuple[int, ...] = (5060,),
        part: str = "all",
        fanout_group: int | None = None,
        _adopt: int | None = None,
    ) -> None:
        page = mmap.PAGESIZE
        # The kernel allocates each block as a power-of-two run of pages: any other size wastes the rest.
        if block_bytes < page or block_bytes & (block_bytes - 1):
            raise LiveCaptureError(errno.EINVAL, f"block_bytes must be a power of two >= {page}, got {block_bytes}")
        if ring_bytes < block_bytes or ring_bytes % block_bytes:
            raise LiveCaptureError(errno.EINVAL, f"ring_bytes must be a multiple of block_bytes, got {ring_bytes}")
        if not 0 < block_timeout_ms <= 60_000:
            raise LiveCaptureError(errno.EINVAL, f"block_timeout_ms must be 1..60000, got {block_timeout_ms}")
        self.interface = interface
        self.ifindex = socket.if_nametoindex(interface)
        self._block_bytes = block_bytes
        self._block_count = ring_bytes // block_bytes
        self._next_block = 0
        self._reader = BlockReader(block_bytes)
        self._kernel = {"packets": 0, "drops": 0, "freezes": 0}
        self._ring: mmap.mmap | None = None
        self._counts_kernel = _adopt is None
        """The kernel clears its counters when read: only the process that made the socket reads them."""
        if part not in _FILTERS:
            raise LiveCaptureError(errno.EINVAL, f"part must be one of {sorted(_FILTERS)}, got {part!r}")
        if _adopt is not None:
            self._sock = socket.socket(fileno=_adopt)
            self._ring = mmap.mmap(_adopt, ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._resync()
            return
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise LiveCaptureError(errno.EPERM, "capturing needs CAP_NET_RAW (packet sockets)") from exc
        try:
            self._setup(interface, promiscuous, ring_bytes, block_timeout_ms, sip_ports, part)
            if fanout_group is not None:
                self._join(fanout_group)
        except BaseException:
            self.close()
            raise

    @classmethod
    def adopt(cls, fd: int, interface: str, *, ring_bytes: int, block_bytes: int) -> LiveCapture:
        """The capture a parent process set up on ``fd`` (inherited), with its
        filter, ring and fanout membership; reading resumes at the oldest
        block the kernel has handed over."""
        return cls(interface, ring_bytes=ring_bytes, block_bytes=block_bytes, _adopt=fd)

    def _setup(
        self, interface: str, promiscuous: bool, ring_bytes: int, timeout_ms: int, sip_ports: tuple[int, ...],
        part: str,
    ) -> None:
        sock = self._sock
        sock.bind((interface, 0))  # protocol 0: tied to the interface, receiving nothing yet
        hatype = sock.getsockname()[3]
        if hatype not in (_ARPHRD_ETHER, _ARPHRD_LOOPBACK):
            raise LiveCaptureError(errno.EPROTONOSUPPORT, f"{interface} is not an Ethernet interface (ARPHRD {hatype})")
        program = pack_program(_FILTERS[part](sip_ports, drop_outgoing=hatype == _ARPHRD_LOOPBACK))
        code = ctypes.create_string_buffer(program, len(program))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, _FPROG.pack(len(program) // 8, ctypes.addressof(code)))
        sock.setsockopt(_SOL_PACKET, _PACKET_VERSION, _TPACKET_V3)
        frames = ring_bytes // _NOMINAL_FRAME
        req = _REQ3.pack(self._block_bytes, self._block_count, _NOMINAL_FRAME, frames, timeout_ms, 0, 0)
        sock.setsockopt(_SOL_PACKET, _PACKET_RX_RING, req)
        self._ring = mmap.mmap(sock.fileno(), ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if promiscuous:
            sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, _MREQ.pack(self.ifindex, _PACKET_MR_PROMISC, 0, b""))
        sock.bind((interface, _ETH_P_ALL))

    def _join(self, group: int) -> None:
        """Join fanout group ``group`` (16 bits, per network namespace and
        interface) with our demux program.  Until the program is in place the
        kernel hands everything to the first member: only at start, before
        the daemon records anything."""
        if not 0 <= group <= 0xFFFF:
            raise LiveCaptureError(errno.EINVAL, f"fanout group must be 0..65535, got {group}")
        self._sock.setsockopt(_SOL_PACKET, _PACKET_FANOUT, group | _PACKET_FANOUT_CBPF << 16)
        program = pack_program(demux_program())
        code = ctypes.create_string_buffer(program, len(program))
        self._sock.setsockopt(_SOL_PACKET, _PACKET_FANOUT_DATA, _FPROG.pack(len(program) // 8, ctypes.addressof(code)))

    def _resync(self) -> None:
        """Start at the oldest block handed to us (by sequence number): a
        worker started again finds the ring where its predecessor left it."""
        ring = self._ring
        assert ring is not None
        size = self._block_bytes
        ready = [(_SEQ.unpack_from(ring, i * size + _SEQ_OFFSET)[0], i) for i in range(self._block_count)
                 if block_status(ring, i * size) & TP_STATUS_USER]
        if ready:
            self._next_block = min(ready)[1]

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_blocks(self, max_blocks: int) -> list[Frame]:
        """Frames of up to ``max_blocks`` retired blocks, each handed back to
        the kernel as soon as it is read; ``[]`` when none is ready."""
        out: list[Frame] = []
        read = self._reader.read
        self._read(max_blocks, lambda ring, base: read(ring, base, out) > 0)
        return out

    def read_batches(self, max_blocks: int) -> list[FrameBatch]:
        """As :meth:`read_blocks`, a FrameBatch per block (BlockReader.read_batch:
        the block copied once, no object per frame), for Recorder.feed_batch."""
        out: list[FrameBatch] = []
        read = self._reader.read_batch

        def take(ring: mmap.mmap, base: int) -> bool:
            batch = read(ring, base)
            if batch is not None:
                out.append(batch)
            return batch is not None

        self._read(max_blocks, take)
        return out

    def _read(self, max_blocks: int, take: Callable[[mmap.mmap, int], bool]) -> None:
        """Up to ``max_blocks`` retired blocks through ``take`` (True if the block
        held frames), each handed back to the kernel as soon as it is read."""
        ring = self._ring
        if ring is None:
            raise ValueError("read from a closed LiveCapture")
        size = self._block_bytes
        count = self._block_count
        index = self._next_block
        found = False
        for _ in range(max_blocks):
            base = index * size
            if not block_status(ring, base) & TP_STATUS_USER:
                break
            found = take(ring, base) or found
            release_block(ring, base)
            index = index + 1 if index + 1 < count else 0
        self._next_block = index
        if not found and self._adopted_elsewhere():
            self._read(max_blocks, take)
            return
        if not found:
            # Woken with nothing to read: the socket may carry an error (the
            # interface went down); left pending it would wake us forever.
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"{self.interface}: {os.strerror(err)}")

    def ready(self) -> bool:
        """Whether a block waits to be read (after ``read_blocks`` stopped at its limit)."""
        ring = self._ring
        return ring is not None and bool(block_status(ring, self._next_block * self._block_bytes) & TP_STATUS_USER)

    def _adopted_elsewhere(self) -> bool:
        """Woken with our block still the kernel's while another is ours: the
        ring was read by a worker that died between blocks.  Move to the
        oldest ready block (True) so that reading never stalls."""
        ring = self._ring
        assert ring is not None
        before = self._next_block
        self._resync()
        return self._next_block != before

    def stats(self) -> dict[str, int]:
        """Cumulative counters.  ``kernel_packets`` counts every packet that passed
        the filter, including ``kernel_drops`` (ring full); ``kernel_freezes``
        counts the times the ring filled up.  The kernel clears its counters on
        each read and keeps them in 32 bits: call this at least hourly.  After
        ``close`` the final figures remain readable."""
        kernel = self._kernel
        if self._counts_kernel and self._sock.fileno() != -1:
            raw = self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, _STATS3.size)
            packets, drops, freezes = _STATS3.unpack(raw)
            kernel["packets"] += packets
            kernel["drops"] += drops
            kernel["freezes"] += freezes
        return {
            "kernel_packets": kernel["packets"],
            "kernel_drops": kernel["drops"],
            "kernel_freezes": kernel["freezes"],
            **self._reader.stats,
        }

    def close(self) -> None:
        """Release the ring and the socket (which also leaves promiscuous mode),
        keeping the last kernel counters for ``stats``."""
        if self._ring is not None:
            self.stats()
            self._ring.close()
            self._ring = None
        self._sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
