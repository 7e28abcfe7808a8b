"""Tests for wire.pcap (sans-I/O capture decoder) and recorder.capture_file."""

from __future__ import annotations

import functools
import hashlib
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.capture_file import CaptureFile, read_capture
from wire.pcap import MAX_CAPLEN, CaptureDecoder, CaptureFormatError
from tests.interop import CAPTURE_NAMES, capture, need, tshark_fields


Frame = tuple[float, int, bytes]


# -- builders ----------------------------------------------------------------------


def pcap_header(endian: str = "<", nsec: bool = False, linktype: int = 1, snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, endian: str = "<", wirelen: int | None = None) -> bytes:
    wire = len(data) if wirelen is None else wirelen
    return struct.pack(endian + "IIII", sec, frac, len(data), wire) + data


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body = pad4(body)
    length = 12 + len(body)
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def ng_option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + pad4(value)


def ng_shb(endian: str = "<", major: int = 1) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, major, 0, -1)
    return ng_block(0x0A0D0D0A, body, endian)


def ng_idb(
    linktype: int = 1,
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    endian: str = "<",
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += ng_option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += ng_option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += ng_option(0, b"", endian)
    return ng_block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def ng_epb(ifid: int, units: int, data: bytes, endian: str = "<", wirelen: int | None = None) -> bytes:
    wire = len(data) if wirelen is None else wirelen
    head = struct.pack(endian + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data), wire)
    return ng_block(6, head + data, endian)


def ng_spb(data: bytes, wirelen: int | None = None, endian: str = "<") -> bytes:
    wire = len(data) if wirelen is None else wirelen
    return ng_block(3, struct.pack(endian + "I", wire) + data, endian)


def ng_pb(ifid: int, units: int, data: bytes, endian: str = "<") -> bytes:
    head = struct.pack(endian + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return ng_block(2, head + data, endian)


def decode_all(data: bytes, chunk: int | None = None) -> list[Frame]:
    dec = CaptureDecoder()
    out: list[Frame] = []
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        out += dec.feed(data[i : i + step])
    dec.close()
    return out


def run(tool: str, *args: str | Path) -> str:
    return subprocess.run([need(tool), *map(str, args)], check=True, capture_output=True, text=True).stdout


def tshark_frames(path: Path) -> list[tuple[float, int, str]]:
    rows = tshark_fields(path, ("frame.time_epoch", "frame.cap_len", "frame.md5_hash"),
                         options=("-o", "frame.generate_md5_hash:TRUE"))
    return [(float(ts), int(caplen), md5) for ts, caplen, md5 in rows]


def to_big_endian_pcap(data: bytes) -> bytes:
    """Rewrite a little-endian microsecond pcap with every header field byte-swapped."""
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data, 0)))
    off = 24
    while off < len(data):
        sec, frac, caplen, wirelen = struct.unpack_from("<IIII", data, off)
        out += struct.pack(">IIII", sec, frac, caplen, wirelen)
        out += data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
    return bytes(out)


def same_frames(a: list[Frame], b: list[Frame], tol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for (ta, la, fa), (tb, lb, fb) in zip(a, b):
        assert abs(ta - tb) <= tol
        assert la == lb
        assert fa == fb


# -- classic pcap ---------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
def test_classic_pcap_variants(endian: str, nsec: bool) -> None:
    frac = 123456789 if nsec else 123456
    data = (
        pcap_header(endian, nsec, linktype=113)
        + pcap_record(1700000000, frac, b"\x01\x02\x03", endian)
        + pcap_record(1700000001, 0, b"", endian)
        + pcap_record(1700000002, 5, bytes(range(200)), endian)
    )
    frames = decode_all(data)
    scale = 1e-9 if nsec else 1e-6
    assert frames == [
        (1700000000 + frac * scale, 113, b"\x01\x02\x03"),
        (1700000001.0, 113, b""),
        (1700000002 + 5 * scale, 113, bytes(range(200))),
    ]


def test_linktype_field_fcs_bits_are_masked() -> None:
    data = pcap_header(linktype=0x14000001) + pcap_record(1, 0, b"x")
    assert decode_all(data) == [(1.0, 1, b"x")]


def test_header_only_capture_is_valid_and_empty() -> None:
    assert decode_all(pcap_header()) == []


def test_short_records_counted() -> None:
    dec = CaptureDecoder()
    dec.feed(pcap_header() + pcap_record(1, 0, b"abcd", wirelen=1500) + pcap_record(2, 0, b"ab"))
    dec.close()
    assert dec.stats["records"] == 2
    assert dec.stats["short_records"] == 1


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_chunking_does_not_change_result(cuts: list[int]) -> None:
    data = pcap_header() + b"".join(pcap_record(i, i * 7, bytes([i]) * (i * 13 % 90)) for i in range(30))
    expected = decode_all(data)
    dec = CaptureDecoder()
    got: list[Frame] = []
    pos = 0
    for cut in cuts:
        got += dec.feed(data[pos : pos + cut])
        pos += cut
    got += dec.feed(data[pos:])
    dec.close()
    assert got == expected


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = pcap_header() + pcap_record(1, 0, b"abc")
    dec = CaptureDecoder()
    frames = dec.feed(bytearray(data[:30])) + dec.feed(memoryview(data)[30:])
    assert frames == [(1.0, 1, b"abc")]
    assert type(frames[0][2]) is bytes


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "needle"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip"),
        (b"GET / HTTP/1.1\r\n", "text 'GET / HT'"),
        (b"\x34\xcd\xb2\xa1" + bytes(20), "modified (Kuznetzov) pcap"),
        (b"\xde\xad\xbe\xef" + bytes(20), "magic deadbeef"),
    ],
)
def test_bad_magic_names_what_was_found(head: bytes, needle: str) -> None:
    with pytest.raises(CaptureFormatError, match="not a pcap or pcapng capture") as info:
        CaptureDecoder().feed(head)
    assert needle in str(info.value)
    assert info.value.offset == 0


def test_unsupported_pcap_version() -> None:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 1, 0, 0, 0, 65535, 1)
    with pytest.raises(CaptureFormatError, match="unsupported pcap version 1.0"):
        CaptureDecoder().feed(data)


def test_empty_input_is_an_error() -> None:
    dec = CaptureDecoder()
    assert dec.feed(b"") == []
    with pytest.raises(CaptureFormatError, match="empty capture"):
        dec.close()


@pytest.mark.parametrize("cut", [1, 10, 23])
def test_truncated_file_header(cut: int) -> None:
    dec = CaptureDecoder()
    assert dec.feed(pcap_header()[:cut]) == []
    message = f"truncated capture: {cut} bytes after last complete file header"
    with pytest.raises(CaptureFormatError, match=message):
        dec.close()


def test_truncated_record_keeps_complete_frames() -> None:
    data = pcap_header() + pcap_record(1, 0, b"good") + pcap_record(2, 0, b"partial-record")
    dec = CaptureDecoder()
    frames = dec.feed(data[:-5])
    assert frames == [(1.0, 1, b"good")]
    with pytest.raises(CaptureFormatError, match="truncated capture: 25 bytes after last complete record"):
        dec.close()
    assert dec.stats["truncated_bytes"] == 25


def test_absurd_caplen_raises_with_frames_decoded_so_far() -> None:
    bad = struct.pack("<IIII", 3, 0, MAX_CAPLEN + 1, MAX_CAPLEN + 1)
    data = pcap_header() + pcap_record(1, 0, b"a") + pcap_record(2, 0, b"b") + bad + bytes(100)
    dec = CaptureDecoder()
    message = f"absurd pcap record length {MAX_CAPLEN + 1} at offset 58"
    with pytest.raises(CaptureFormatError, match=message) as info:
        dec.feed(data)
    assert info.value.frames == [(1.0, 1, b"a"), (2.0, 1, b"b")]
    assert info.value.offset == 58
    with pytest.raises(CaptureFormatError, match="absurd"):
        dec.feed(b"more")
    with pytest.raises(CaptureFormatError, match="absurd"):
        dec.close()


def test_caplen_at_limit_is_accepted() -> None:
    payload = bytes(MAX_CAPLEN)
    assert decode_all(pcap_header() + pcap_record(1, 0, payload), chunk=65536) == [(1.0, 1, payload)]


def test_buffering_is_bounded_by_the_current_record() -> None:
    dec = CaptureDecoder()
    dec.feed(pcap_header())
    record = pcap_record(1, 0, bytes(1000))
    for _ in range(500):
        dec.feed(record[:600])
        assert len(dec._pending) <= 600
        assert dec.feed(record[600:]) != []
        assert not dec._pending


# -- pcapng -------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_epb_default_resolution(endian: str) -> None:
    data = ng_shb(endian) + ng_idb(1, endian=endian) + ng_epb(0, 1700000000_250000, b"frame", endian)
    assert decode_all(data) == [(1700000000.25, 1, b"frame")]


@pytest.mark.parametrize(
    ("tsresol", "units", "expected"),
    [
        (9, 1700000000_123456789, 1700000000.123456789),
        (3, 1700000000_123, 1700000000.123),
        (0x80 | 20, (1700000000 << 20) + (1 << 19), 1700000000.5),
        (0x80 | 0, 1700000000, 1700000000.0),
    ],
)
def test_pcapng_if_tsresol(tsresol: int, units: int, expected: float) -> None:
    data = ng_shb() + ng_idb(tsresol=tsresol) + ng_epb(0, units, b"x")
    [(ts, _, _)] = decode_all(data)
    assert ts == pytest.approx(expected, abs=1e-6)


def test_pcapng_if_tsoffset() -> None:
    data = ng_shb() + ng_idb(tsresol=6, tsoffset=1600000000) + ng_epb(0, 100_500000, b"x")
    assert decode_all(data) == [(1600000100.5, 1, b"x")]


def test_pcapng_several_interfaces_with_different_linktypes() -> None:
    data = (
        ng_shb()
        + ng_idb(1)
        + ng_idb(113, tsresol=9)
        + ng_epb(1, 2_000000000, b"sll")
        + ng_epb(0, 3_000000, b"eth")
        + ng_epb(7, 4_000000, b"nobody")
    )
    dec = CaptureDecoder()
    frames = dec.feed(data)
    dec.close()
    assert frames == [(2.0, 113, b"sll"), (3.0, 1, b"eth")]
    assert dec.stats["interfaces"] == 2
    assert dec.stats["unknown_interface"] == 1


def test_pcapng_sections_with_different_byte_orders_reset_interfaces() -> None:
    data = (
        ng_shb("<")
        + ng_idb(1, endian="<")
        + ng_epb(0, 1_000000, b"le", "<")
        + ng_shb(">")
        + ng_idb(101, endian=">")
        + ng_epb(0, 2_000000, b"be", ">")
        + ng_shb("<")
        + ng_epb(0, 3_000000, b"no interface yet", "<")
        + ng_idb(276, endian="<")
        + ng_epb(0, 4_000000, b"le again", "<")
    )
    dec = CaptureDecoder()
    frames = dec.feed(data)
    dec.close()
    assert frames == [(1.0, 1, b"le"), (2.0, 101, b"be"), (4.0, 276, b"le again")]
    assert dec.stats["sections"] == 3
    assert dec.stats["unknown_interface"] == 1


def test_pcapng_simple_packet_block_uses_interface_zero_and_last_timestamp() -> None:
    data = (
        ng_shb()
        + ng_spb(b"before any timestamp")
        + ng_idb(1, snaplen=4)
        + ng_idb(113)
        + ng_spb(b"ab")
        + ng_epb(1, 5_000000, b"epb")
        + ng_spb(b"abcdefgh", wirelen=100)
    )
    dec = CaptureDecoder()
    frames = dec.feed(data)
    dec.close()
    assert frames == [(0.0, 1, b"ab"), (5.0, 113, b"epb"), (5.0, 1, b"abcd")]
    assert dec.stats["unknown_interface"] == 1
    assert dec.stats["short_records"] == 1


def test_pcapng_simple_packet_block_without_snaplen_uses_original_length() -> None:
    data = ng_shb() + ng_idb(1) + ng_spb(b"abcdefg")
    assert decode_all(data) == [(0.0, 1, b"abcdefg")]


def test_pcapng_obsolete_packet_block() -> None:
    data = ng_shb(">") + ng_idb(1, endian=">") + ng_pb(0, 7_000001, b"old", ">")
    assert decode_all(data) == [(7.000001, 1, b"old")]


def test_pcapng_unknown_blocks_are_skipped_even_when_huge() -> None:
    huge = ng_block(0x40000BAD, bytes(5 << 20))
    data = ng_shb() + ng_idb(1) + ng_block(4, b"nrb") + huge + ng_epb(0, 1_000000, b"after")
    dec = CaptureDecoder()
    frames: list[Frame] = []
    for i in range(0, len(data), 4096):
        frames += dec.feed(data[i : i + 4096])
        assert len(dec._pending) < 4096
    dec.close()
    assert frames == [(1.0, 1, b"after")]
    assert dec.stats["skipped_blocks"] == 2


def test_pcapng_truncated_inside_skipped_block() -> None:
    data = ng_shb() + ng_idb(1) + ng_block(5, bytes(100))
    dec = CaptureDecoder()
    dec.feed(data[:-10])
    with pytest.raises(CaptureFormatError, match="pcapng block ends 10 bytes past the end"):
        dec.close()


@pytest.mark.parametrize("length", [8, 13, 30])
def test_pcapng_bad_block_length(length: int) -> None:
    data = ng_shb() + struct.pack("<II", 6, length) + bytes(40)
    with pytest.raises(CaptureFormatError, match=f"bad pcapng block length {length}"):
        CaptureDecoder().feed(data)


def test_pcapng_block_trailer_mismatch() -> None:
    block = bytearray(ng_epb(0, 1, b"abcd"))
    block[-4:] = struct.pack("<I", 999)
    with pytest.raises(CaptureFormatError, match="trailer length does not match its header"):
        CaptureDecoder().feed(ng_shb() + ng_idb() + bytes(block))


def test_pcapng_absurd_packet_length() -> None:
    block = bytearray(ng_epb(0, 1, b"abcd"))
    struct.pack_into("<I", block, 20, MAX_CAPLEN + 4)
    with pytest.raises(CaptureFormatError, match="bad pcapng packet block") as info:
        CaptureDecoder().feed(ng_shb() + ng_idb() + ng_epb(0, 1_000000, b"ok") + bytes(block))
    assert info.value.frames == [(1.0, 1, b"ok")]


def test_pcapng_bad_byte_order_magic() -> None:
    shb = bytearray(ng_shb())
    shb[8:12] = b"\x00\x11\x22\x33"
    with pytest.raises(CaptureFormatError, match="bad pcapng byte-order magic 00112233"):
        CaptureDecoder().feed(bytes(shb))


def test_pcapng_unsupported_major_version() -> None:
    with pytest.raises(CaptureFormatError, match="unsupported pcapng version 2.0"):
        CaptureDecoder().feed(ng_shb(major=2))


def test_pcapng_option_overrunning_block() -> None:
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200)
    with pytest.raises(CaptureFormatError, match="option overruns"):
        CaptureDecoder().feed(ng_shb() + ng_block(1, body))


# -- real captures and their conversions ------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every capture in several container formats, all holding the same frames."""
    root = tmp_path_factory.mktemp("formats")
    result: dict[str, dict[str, Path]] = {}
    for name in CAPTURE_NAMES:
        original = capture(name)
        variants = {"original": original}
        for fmt in ("pcap", "nsecpcap", "pcapng"):
            out = root / f"{name}.{fmt}"
            run("editcap", "-F", fmt, original, out)
            variants[fmt] = out
        nsec_ng = root / f"{name}.nsec.pcapng"
        run("editcap", "-F", "pcapng", variants["nsecpcap"], nsec_ng)
        variants["nsec-pcapng"] = nsec_ng
        big = root / f"{name}.be.pcap"
        big.write_bytes(to_big_endian_pcap(variants["pcap"].read_bytes()))
        variants["big-endian-pcap"] = big
        result[name] = variants
    return result


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_real_capture_matches_tshark(name: str) -> None:
    path = capture(name)
    frames = list(read_capture(path))
    expected = tshark_frames(path)
    assert len(frames) == len(expected)
    for (ts, _, frame), (ets, caplen, md5) in zip(frames, expected):
        assert abs(ts - ets) < 1e-6
        assert len(frame) == caplen
        assert hashlib.md5(frame).hexdigest() == md5


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_container_format_yields_the_same_frames(
    name: str, converted: dict[str, dict[str, Path]]
) -> None:
    variants = converted[name]
    reference = list(read_capture(variants["original"]))
    assert reference
    for path in variants.values():
        frames = list(read_capture(path, chunk_size=4093))
        same_frames(frames, reference)
    assert variants["big-endian-pcap"].read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"


def test_nanosecond_pcapng_declares_its_resolution(converted: dict[str, dict[str, Path]]) -> None:
    dec = CaptureDecoder()
    dec.feed(converted["ipv6frag.pcap"]["nsec-pcapng"].read_bytes())
    assert dec._interfaces[0].divisor == 1e9


def test_merged_pcapng_with_two_linktypes(tmp_path: Path) -> None:
    merged = tmp_path / "merged.pcapng"
    run("mergecap", "-w", merged, capture("ipv6frag.pcap"), capture("sip-over-tcp.pcap"))
    frames = list(read_capture(merged))
    sll = [f for f in frames if f[1] == 113]
    eth = [f for f in frames if f[1] == 1]
    same_frames(sll, list(read_capture(capture("ipv6frag.pcap"))))
    same_frames(eth, list(read_capture(capture("sip-over-tcp.pcap"))))
    assert [f[0] for f in frames] == sorted(f[0] for f in frames)


# -- capture_file adapter -----------------------------------------------------------------


def test_capture_file_progress_and_repeatable_iteration() -> None:
    path = capture("sip-rtp-g711.pcap")
    cap = CaptureFile(path, chunk_size=10000)
    assert cap.bytes_read == 0
    first = list(cap)
    assert cap.bytes_read == cap.size == path.stat().st_size
    assert cap.decoder.stats["records"] == len(first) == 852
    assert list(cap) == first


def test_capture_file_truncated_yields_then_raises(tmp_path: Path) -> None:
    data = (capture("rtp-protocol.pcap")).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-7])
    got: list[Frame] = []
    with pytest.raises(CaptureFormatError, match="truncated capture"):
        for frame in read_capture(cut, chunk_size=5000):
            got.append(frame)
    assert len(got) == 258
    assert got == list(read_capture(capture("rtp-protocol.pcap")))[:258]


def test_capture_file_corrupt_mid_file_yields_everything_before(tmp_path: Path) -> None:
    data = bytearray(pcap_header())
    for i in range(100):
        data += pcap_record(i, 0, bytes([i]) * 50)
    good_len = len(data)
    data += struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 0) + bytes(64)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    got: list[Frame] = []
    with pytest.raises(CaptureFormatError, match=f"at offset {good_len}"):
        for frame in read_capture(path, chunk_size=1 << 20):
            got.append(frame)
    assert len(got) == 100


def test_capture_file_batches_are_the_frames_chunk_by_chunk() -> None:
    path = capture("sip-rtp-g711.pcap")
    cap = CaptureFile(path, chunk_size=10000)
    batches = list(cap.batches())
    assert len(batches) > 1 and all(batches)
    assert [frame for batch in batches for frame in batch] == list(read_capture(path))
    assert cap.bytes_read == cap.size


def test_capture_file_batches_of_a_truncated_file_yield_then_raise(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(capture("rtp-protocol.pcap").read_bytes()[:-7])
    got: list[Frame] = []
    with pytest.raises(CaptureFormatError, match="truncated capture"):
        for batch in CaptureFile(cut, chunk_size=5000).batches():
            got += batch
    assert got == list(read_capture(capture("rtp-protocol.pcap")))[:258]


def test_capture_file_rejects_bad_chunk_size(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_header())
    with pytest.raises(ValueError):
        CaptureFile(path, chunk_size=0)


# -- fuzzing ----------------------------------------------------------------------------------


def _exercise(data: bytes, chunk: int) -> None:
    dec = CaptureDecoder()
    try:
        for i in range(0, len(data), chunk):
            for ts, linktype, frame in dec.feed(data[i : i + chunk]):
                assert isinstance(ts, float)
                assert isinstance(linktype, int)
                assert len(frame) <= MAX_CAPLEN
        dec.close()
    except CaptureFormatError:
        pass
    assert len(dec._pending) <= (1 << 20)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", pcap_header(), pcap_header(">", True), ng_shb() + ng_idb(), ng_shb(">")]),
    body=st.binary(max_size=2000),
    chunk=st.integers(min_value=1, max_value=700),
)
def test_fuzz_random_bytes(prefix: bytes, body: bytes, chunk: int) -> None:
    _exercise(prefix + body, chunk)


_SAMPLE = (
    pcap_header()
    + pcap_record(1, 2, b"abc")
    + pcap_record(3, 4, bytes(70))
    + pcap_record(5, 6, b"z" * 9)
)
_SAMPLE_NG = (
    ng_shb()
    + ng_idb(1, tsresol=9, tsoffset=5)
    + ng_epb(0, 1, b"abc")
    + ng_spb(b"def")
    + ng_block(0xBAD, b"skip me")
    + ng_pb(0, 2, b"ghi")
    + ng_shb(">")
    + ng_idb(113, endian=">")
    + ng_epb(0, 3, b"jkl", ">")
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from([_SAMPLE, _SAMPLE_NG]),
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_fuzz_mutated_captures(sample: bytes, mutations: list[tuple[int, int]], chunk: int) -> None:
    data = bytearray(sample)
    for pos, value in mutations:
        data[pos % len(data)] = value
    _exercise(bytes(data), chunk)


@functools.cache
def _real_heads() -> tuple[bytes, ...]:
    names = ("b2bua-asterisk.pcapng", "ipv6frag.pcap", "sip-over-tcp.pcap")
    return tuple(capture(name).read_bytes()[:6000] for name in names)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0, max_value=2),
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=10),
    chunk=st.integers(min_value=1, max_value=3000),
)
def test_fuzz_mutated_real_captures(which: int, mutations: list[tuple[int, int]], chunk: int) -> None:
    data = bytearray(_real_heads()[which])
    for pos, value in mutations:
        data[pos % len(data)] = value
    _exercise(bytes(data), chunk)
