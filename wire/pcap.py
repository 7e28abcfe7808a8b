"""Sans-I/O decoder for classic pcap and pcapng capture streams.

The decoder is fed arbitrary chunks of a capture file (or of a pipe) and returns
every complete frame as ``(timestamp, linktype, frame_bytes)``.  Only the record
that straddles the end of the previous chunk is buffered, so memory stays bounded
by the largest record the decoder accepts, whatever the size of the file.

A capture is legal evidence: a record that cannot be right (absurd lengths,
mismatched pcapng block trailers) stops decoding with :class:`CaptureFormatError`
instead of guessing, and the frames decoded before the fault are handed back on
the exception so the caller can keep them.
"""

from __future__ import annotations

from struct import Struct
from typing import Literal

from .errors import WireFormatError

__all__ = ["CaptureDecoder", "CaptureFormatError", "Frame", "MAX_CAPLEN"]

Frame = tuple[float, int, bytes]

MAX_CAPLEN = 256 * 1024
"""Largest captured packet accepted; anything larger means the length field is garbage."""

MAX_BUFFERED_BLOCK = 1 << 20
"""Largest pcapng block that is buffered for parsing (SHB, IDB, packet blocks).

Blocks the decoder does not interpret are streamed past without buffering, so they
may be of any size.
"""

_PCAP_MAGICS: dict[bytes, tuple[str, float]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e6),
    b"\xa1\xb2\xc3\xd4": (">", 1e6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e9),
    b"\xa1\xb2\x3c\x4d": (">", 1e9),
}
_PCAPNG_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM_BIG = b"\x1a\x2b\x3c\x4d"
_PCAPNG_BOM_LITTLE = b"\x4d\x3c\x2b\x1a"

# Recognisable non-capture inputs, named in the error so the operator knows what they fed us.
_KNOWN_NON_CAPTURES: tuple[tuple[bytes, str], ...] = (
    (b"\x34\xcd\xb2\xa1", "a modified (Kuznetzov) pcap, which is not supported"),
    (b"\xa1\xb2\xcd\x34", "a modified (Kuznetzov) pcap, which is not supported"),
    (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\xfd7zXZ", "xz-compressed data (decompress it first)"),
    (b"BZh", "bzip2-compressed data (decompress it first)"),
    (b"PK\x03\x04", "a zip archive"),
)

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6

_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_LINKTYPE_MASK = 0x03FFFFFF  # upper bits of the pcap linktype field carry FCS information

_ST_MAGIC = 0
_ST_PCAP = 1
_ST_PCAPNG = 2

_STAT_KEYS = (
    "records",
    "short_records",
    "truncated_bytes",
    "skipped_blocks",
    "sections",
    "interfaces",
    "unknown_interface",
)


class CaptureFormatError(WireFormatError):
    """The byte stream is not a capture, or a record in it is corrupt.

    ``offset`` is the byte offset in the stream where the fault was found.
    ``frames`` holds the frames decoded from the same ``feed()`` call before the
    fault, so that nothing already decodable is lost.
    """

    def __init__(self, message: str, *, offset: int, frames: list[Frame] | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.frames: list[Frame] = frames if frames is not None else []


class _Interface:
    """Per-interface facts from a pcapng IDB needed to turn EPB fields into frames."""

    __slots__ = ("linktype", "snaplen", "divisor", "ts_offset")

    def __init__(self, linktype: int, snaplen: int, divisor: float, ts_offset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.divisor = divisor
        self.ts_offset = ts_offset


class CaptureDecoder:
    """Incremental pcap/pcapng decoder; see the module docstring for its guarantees.

    Buffering bound: at most one incomplete record, i.e. ``16 + MAX_CAPLEN`` bytes
    for pcap and ``MAX_BUFFERED_BLOCK`` bytes for pcapng.
    """

    def __init__(self) -> None:
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._state = _ST_MAGIC
        self._pending = bytearray()
        self._need = 4
        self._skip = 0
        self._consumed = 0
        self._seen_any = False
        self._failure: str | None = None
        self._failure_offset = 0
        # classic pcap
        self._rec = Struct("<IIII")
        self._divisor = 1e6
        self._linktype = 0
        # pcapng
        self._head2 = Struct("<II")
        self._head7 = Struct("<7I")
        self._u32 = Struct("<I")
        self._endian = "<"
        self._byteorder: Literal["little", "big"] = "little"
        self._interfaces: list[_Interface] = []
        self._last_ts = 0.0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Decode ``chunk`` and return the frames it completes, in file order."""
        if self._failure is not None:
            raise CaptureFormatError(self._failure, offset=self._failure_offset)
        if not chunk:
            return []
        self._seen_any = True
        data = bytes(chunk)
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                self._consumed += len(data)
                return []
            self._consumed += self._skip
            data = data[self._skip :]
            self._skip = 0
        if self._pending:
            if len(self._pending) + len(data) < self._need:
                self._pending += data
                return []
            # One copy of the chunk, behind the record it completes.
            data = b"".join((self._pending, data))
            self._pending = bytearray()
        out: list[Frame] = []
        try:
            used = self._parse(data, out)
        except CaptureFormatError as exc:
            exc.frames = out
            self.stats["records"] += len(out)
            self._failure = str(exc)
            self._failure_offset = exc.offset
            self._pending = bytearray()
            raise
        self.stats["records"] += len(out)
        if used < len(data):
            self._pending = bytearray(data[used:])
        self._consumed += used
        return out

    def close(self) -> None:
        """Declare end of input; raise if the stream ended inside a header or record."""
        if self._failure is not None:
            raise CaptureFormatError(self._failure, offset=self._failure_offset)
        if not self._seen_any:
            raise CaptureFormatError("empty capture: no file header", offset=0)
        if self._skip:
            raise CaptureFormatError(
                f"truncated capture: pcapng block ends {self._skip} bytes past the end of the data",
                offset=self._consumed,
            )
        if self._pending:
            left = len(self._pending)
            self.stats["truncated_bytes"] = left
            what = "file header" if self._state == _ST_MAGIC else "record"
            raise CaptureFormatError(
                f"truncated capture: {left} bytes after last complete {what}",
                offset=self._consumed,
            )

    # -- parsing ---------------------------------------------------------------

    def _parse(self, data: bytes, out: list[Frame]) -> int:
        off = 0
        if self._state == _ST_MAGIC:
            off = self._parse_magic(data)
            if self._state == _ST_MAGIC:
                return off
        if self._state == _ST_PCAP:
            return self._parse_pcap(data, off, out)
        return self._parse_pcapng(data, off, out)

    def _fail(self, message: str, off: int) -> CaptureFormatError:
        return CaptureFormatError(f"{message} at offset {self._consumed + off}", offset=self._consumed + off)

    def _parse_magic(self, data: bytes) -> int:
        if len(data) < 4:
            self._need = 4
            return 0
        magic = data[:4]
        if magic == _PCAPNG_SHB_MAGIC:
            self._state = _ST_PCAPNG
            self._need = 12
            return 0
        fmt = _PCAP_MAGICS.get(magic)
        if fmt is None:
            raise self._fail(f"not a pcap or pcapng capture: {_describe(data)}", 0)
        if len(data) < 24:
            self._need = 24
            return 0
        endian, divisor = fmt
        major, minor, _zone, _sigfigs, _snaplen, network = Struct(endian + "HHiIII").unpack_from(data, 4)
        if major != 2:
            raise self._fail(f"unsupported pcap version {major}.{minor}", 0)
        self._rec = Struct(endian + "IIII")
        self._divisor = divisor
        self._linktype = network & _LINKTYPE_MASK
        self._state = _ST_PCAP
        self.stats["sections"] += 1
        self.stats["interfaces"] += 1
        return 24

    def _parse_pcap(self, data: bytes, off: int, out: list[Frame]) -> int:
        n = len(data)
        unpack = self._rec.unpack_from
        divisor = self._divisor
        linktype = self._linktype
        append = out.append
        short = 0
        last = n - 16  # the last offset where a record header fits
        while off <= last:
            sec, frac, caplen, wirelen = unpack(data, off)
            if caplen > MAX_CAPLEN:
                self.stats["short_records"] += short
                raise self._fail(f"absurd pcap record length {caplen}", off)
            start = off + 16
            off = start + caplen
            if off > n:
                off = start - 16
                self._need = 16 + caplen
                break
            if caplen < wirelen:
                short += 1
            append((sec + frac / divisor, linktype, data[start:off]))
        else:
            self._need = 16
        self.stats["short_records"] += short
        return off

    def _parse_pcapng(self, data: bytes, off: int, out: list[Frame]) -> int:
        n = len(data)
        append = out.append
        while True:
            # Fast path: a complete, well-formed EPB on a known interface.  Anything
            # else, including every error, goes through _block().
            interfaces = self._interfaces
            head7 = self._head7.unpack_from
            u32 = self._u32.unpack_from
            short = 0
            while n - off >= 28:
                btype, blen, ifid, ts_hi, ts_lo, caplen, wirelen = head7(data, off)
                if (
                    btype != _BT_EPB
                    or blen > n - off
                    or blen & 3
                    or caplen > MAX_CAPLEN
                    or 32 + caplen > blen
                    or ifid >= len(interfaces)
                    or u32(data, off + blen - 4)[0] != blen
                ):
                    break
                iface = interfaces[ifid]
                ts = ((ts_hi << 32) | ts_lo) / iface.divisor + iface.ts_offset
                if caplen < wirelen:
                    short += 1
                append((ts, iface.linktype, data[off + 28 : off + 28 + caplen]))
                off += blen
                self._last_ts = ts
            self.stats["short_records"] += short
            if n - off < 12:
                self._need = 12
                return off
            nxt = self._block(data, off, out)
            if nxt < 0:
                return off
            off = nxt

    def _block(self, data: bytes, off: int, out: list[Frame]) -> int:
        """Handle one block at ``off``; return the offset after it, or -1 if incomplete."""
        avail = len(data) - off
        btype, blen = self._head2.unpack_from(data, off)
        if btype == _BT_SHB:
            blen = self._section_length(data, off)
        if blen < 12 or blen & 3:
            raise self._fail(f"bad pcapng block length {blen} (block type {btype:#x})", off)
        if btype not in (_BT_EPB, _BT_SPB, _BT_PB, _BT_IDB, _BT_SHB):
            self.stats["skipped_blocks"] += 1
            if blen > avail:
                self._skip = blen - avail
                return len(data)
            return off + blen
        if blen > MAX_BUFFERED_BLOCK:
            raise self._fail(f"absurd pcapng block length {blen} (block type {btype:#x})", off)
        if blen > avail:
            self._need = blen
            return -1
        end = off + blen
        if self._u32.unpack_from(data, end - 4)[0] != blen:
            raise self._fail(f"pcapng block trailer length does not match its header (type {btype:#x})", off)
        if btype == _BT_EPB:
            self._enhanced_packet(data, off, blen)
        elif btype == _BT_SPB:
            self._simple_packet(data, off, blen, out)
        elif btype == _BT_PB:
            self._obsolete_packet(data, off, blen, out)
        elif btype == _BT_IDB:
            self._interface_description(data, off, blen)
        else:
            self._section_header(data, off, blen)
        return end

    def _section_length(self, data: bytes, off: int) -> int:
        """Read an SHB's length, which can only be interpreted after its byte-order magic."""
        bom = data[off + 8 : off + 12]
        if bom == _PCAPNG_BOM_LITTLE:
            endian = "<"
        elif bom == _PCAPNG_BOM_BIG:
            endian = ">"
        else:
            raise self._fail(f"bad pcapng byte-order magic {bom.hex()}", off)
        if endian != self._endian:
            self._endian = endian
            self._byteorder = "little" if endian == "<" else "big"
            self._head2 = Struct(endian + "II")
            self._head7 = Struct(endian + "7I")
            self._u32 = Struct(endian + "I")
        blen: int = self._head2.unpack_from(data, off)[1]
        return blen

    def _section_header(self, data: bytes, off: int, blen: int) -> None:
        if blen < 28:
            raise self._fail(f"pcapng section header block too short ({blen} bytes)", off)
        major, minor = Struct(self._endian + "HH").unpack_from(data, off + 12)
        if major != 1:
            raise self._fail(f"unsupported pcapng version {major}.{minor}", off)
        self._interfaces = []
        self.stats["sections"] += 1

    def _interface_description(self, data: bytes, off: int, blen: int) -> None:
        if blen < 20:
            raise self._fail(f"pcapng interface description block too short ({blen} bytes)", off)
        e = self._endian
        linktype, snaplen = Struct(e + "H2xI").unpack_from(data, off + 8)
        divisor = 1e6
        ts_offset = 0
        pos = off + 16
        end = off + blen - 4
        opt_head = Struct(e + "HH")
        while end - pos >= 4:
            code, length = opt_head.unpack_from(data, pos)
            pos += 4
            if code == _OPT_ENDOFOPT:
                break
            if pos + length > end:
                raise self._fail("pcapng interface option overruns its block", off)
            if code == _OPT_IF_TSRESOL and length >= 1:
                resol = data[pos]
                divisor = float(2 ** (resol & 0x7F)) if resol & 0x80 else float(10**resol)
            elif code == _OPT_IF_TSOFFSET and length == 8:
                ts_offset = Struct(e + "q").unpack_from(data, pos)[0]
            pos += (length + 3) & ~3
        self._interfaces.append(_Interface(linktype, snaplen, divisor, ts_offset))
        self.stats["interfaces"] += 1

    def _enhanced_packet(self, data: bytes, off: int, blen: int) -> None:
        """An EPB the fast path in _parse_pcapng declined: report the fault or count
        the unknown interface."""
        if blen < 32:
            raise self._fail(f"bad pcapng packet block: block length {blen}", off)
        caplen = self._u32.unpack_from(data, off + 20)[0]
        if caplen > MAX_CAPLEN or 32 + caplen > blen:
            raise self._fail(f"bad pcapng packet block: captured length {caplen}, block length {blen}", off)
        self.stats["unknown_interface"] += 1

    def _simple_packet(self, data: bytes, off: int, blen: int, out: list[Frame]) -> None:
        """SPBs carry no interface id or timestamp: they belong to interface 0 and
        are stamped with the last timestamp seen, the best ordering hint available."""
        if blen < 16:
            raise self._fail(f"pcapng simple packet block too short ({blen} bytes)", off)
        if not self._interfaces:
            self.stats["unknown_interface"] += 1
            return
        iface = self._interfaces[0]
        wirelen = int.from_bytes(data[off + 8 : off + 12], self._byteorder)
        caplen = min(wirelen, blen - 16)
        if iface.snaplen:
            caplen = min(caplen, iface.snaplen)
        if caplen > MAX_CAPLEN:
            raise self._fail(f"absurd pcapng packet length {caplen}", off)
        if caplen < wirelen:
            self.stats["short_records"] += 1
        out.append((self._last_ts, iface.linktype, data[off + 12 : off + 12 + caplen]))

    def _obsolete_packet(self, data: bytes, off: int, blen: int, out: list[Frame]) -> None:
        if blen < 32:
            raise self._fail(f"pcapng packet block too short ({blen} bytes)", off)
        ifid, ts_hi, ts_lo, caplen, wirelen = Struct(self._endian + "H2xIIII").unpack_from(data, off + 8)
        if caplen > MAX_CAPLEN or 32 + caplen > blen:
            raise self._fail(f"bad pcapng packet block: captured length {caplen}, block length {blen}", off)
        if ifid >= len(self._interfaces):
            self.stats["unknown_interface"] += 1
            return
        iface = self._interfaces[ifid]
        ts = ((ts_hi << 32) | ts_lo) / iface.divisor + iface.ts_offset
        self._last_ts = ts
        if caplen < wirelen:
            self.stats["short_records"] += 1
        out.append((ts, iface.linktype, data[off + 28 : off + 28 + caplen]))


def _describe(data: bytes) -> str:
    head = data[:8]
    for prefix, name in _KNOWN_NON_CAPTURES:
        if head.startswith(prefix):
            return f"found {name} (first bytes {head.hex()})"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"found text {head.decode('ascii')!r}"
    return f"found magic {data[:4].hex()}"
