"""rtpdump side files.

Wireshark reads rtpdump natively only from 4.2 on; Debian 12 ships 4.0. So the
file is checked with a reader written here from the format description in
rtptools' rtpdump.h and Wireshark's wiretap/rtpdump.c, and its packets are fed
to tshark through text2pcap (which adds UDP/IP headers) to show that they are
intact RTP. Where tshark can read rtpdump itself, it is asked directly too.
"""

from __future__ import annotations

import ipaddress
import re
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.rtp import RtpPacket, serialize_rtp
from recorder.rtpdump import RtpDumpWriter

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"


def capture(name: str) -> Path:
    path = CAPTURES / name
    if not path.is_file():
        pytest.fail(
            f"capture {path} is missing: shared/captures must be beside the repository"
        )
    return path


def read_rtpdump(
    path: Path,
) -> tuple[str, int, float, int, int, list[tuple[int, bytes]]]:
    """(address, port, start, binary source, binary port, [(offset ms, packet)])."""
    raw = path.read_bytes()
    line_end = raw.index(b"\n")
    text = raw[:line_end].decode("ascii")
    match = re.fullmatch(r"#!rtpplay1\.0 (.+)/(\d+)", text)
    assert match, text
    pos = line_end + 1
    seconds, micros, source, port, padding = struct.unpack_from("!IIIHH", raw, pos)
    assert padding == 0 and micros < 1_000_000
    pos += 16
    records = []
    while pos < len(raw):
        length, plen, offset = struct.unpack_from("!HHI", raw, pos)
        assert length == plen + 8
        records.append((offset, raw[pos + 8 : pos + length]))
        pos += length
    assert pos == len(raw)
    return match[1], int(match[2]), seconds + micros / 1e6, source, port, records


def tshark_via_text2pcap(
    tmp_path: Path, packets: list[bytes], port: int
) -> list[list[str]]:
    dump = tmp_path / "packets.txt"
    lines = []
    for data in packets:
        for off in range(0, len(data), 16):
            lines.append(
                f"{off:06x} " + " ".join(f"{b:02x}" for b in data[off : off + 16])
            )
    dump.write_text("\n".join(lines) + "\n")
    pcap = tmp_path / "packets.pcap"
    subprocess.run(
        [
            "text2pcap",
            "-q",
            "-4",
            "192.0.2.1,192.0.2.2",
            "-u",
            f"{port},{port}",
            str(dump),
            str(pcap),
        ],
        check=True,
        capture_output=True,
    )
    return tshark_fields(pcap, ["-d", f"udp.port=={port},rtp"])


def tshark_fields(path: Path, extra: list[str]) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-r", str(path), *extra, "-T", "fields", "-E", "separator=,"]
        + [
            "-e",
            "rtp.seq",
            "-e",
            "rtp.timestamp",
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.ssrc",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split(",") for line in out.splitlines()]


def tshark_reads_rtpdump() -> bool:
    version = subprocess.run(
        ["tshark", "-v"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"TShark \(Wireshark\) (\d+)\.(\d+)", version)
    assert match, version
    return (int(match[1]), int(match[2])) >= (4, 2)


def sample_packets(count: int) -> list[bytes]:
    return [
        serialize_rtp(
            RtpPacket(
                9, i == 0, (65530 + i) & 0xFFFF, 160 * i, 0xCAFE, bytes([i]) * 160
            )
        )
        for i in range(count)
    ]


def test_written_file_parses_and_tshark_decodes_the_packets(tmp_path: Path) -> None:
    path = tmp_path / "side.rtpdump"
    packets = sample_packets(20)
    start = 1_700_000_000.25
    with RtpDumpWriter(path, "192.0.2.7", 40000, start) as w:
        for i, data in enumerate(packets):
            w.write(start + 0.02 * i + 0.0004, data)
    assert w.packets == 20
    address, port, when, source, bin_port, records = read_rtpdump(path)
    assert (address, port, bin_port) == ("192.0.2.7", 40000, 40000)
    assert source == int(
        ipaddress.IPv4Address("192.0.2.7")
    )  # rtptools: same source twice
    assert when == pytest.approx(start, abs=1e-6)
    assert [data for _, data in records] == packets
    assert [offset for offset, _ in records] == [20 * i for i in range(20)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = tshark_via_text2pcap(tmp_path, [data for _, data in records], 40000)
    assert [int(r[0]) for r in rows] == [(65530 + i) & 0xFFFF for i in range(20)]
    assert {r[2] for r in rows} == {"9"}
    if tshark_reads_rtpdump():
        direct = tshark_fields(path, [])
        assert [int(r[0]) for r in direct] == [(65530 + i) & 0xFFFF for i in range(20)]


def test_real_g722_call_survives_the_round_trip(tmp_path: Path) -> None:
    source = capture("sip-rtp-g722.pcap")
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(source),
            "-Y",
            "rtp.ssrc",
            "-T",
            "fields",
            "-E",
            "separator=,",
        ]
        + ["-e", "frame.time_epoch", "-e", "udp.dstport", "-e", "udp.payload"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines()]
    assert len(rows) == 425
    start = float(rows[0][0])
    path = tmp_path / "g722.rtpdump"
    with RtpDumpWriter(path, "10.0.2.15", int(rows[0][1]), start) as w:
        for when, _, payload in rows:
            w.write(float(when), bytes.fromhex(payload))
    _, _, _, _, _, records = read_rtpdump(path)
    assert [data.hex() for _, data in records] == [payload for _, _, payload in rows]
    start_us = round(start * 1e6)
    assert [offset for offset, _ in records] == [
        (round(float(when) * 1e6) - start_us) // 1000 for when, _, _ in rows
    ]
    original = tshark_fields(source, ["-Y", "rtp.ssrc"])
    assert (
        tshark_via_text2pcap(tmp_path, [data for _, data in records], 6000) == original
    )


def test_ipv6_source_and_arrivals_before_start(tmp_path: Path) -> None:
    path = tmp_path / "v6.rtpdump"
    with RtpDumpWriter(path, "2001:db8::1", 5004, 100.0) as w:
        w.write(99.0, b"\x80\x00\x00\x01" + bytes(8))
        w.write(100.0 + 2**33 / 1000, b"\x80\x00\x00\x02" + bytes(8))
    address, port, _, source, _, records = read_rtpdump(path)
    assert (address, port, source) == ("2001:db8::1", 5004, 0)
    assert [offset for offset, _ in records] == [0, 0xFFFFFFFF]


def test_refuses_bad_input(tmp_path: Path) -> None:
    existing = tmp_path / "exists.rtpdump"
    existing.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        RtpDumpWriter(existing, "192.0.2.1", 1, 0.0)
    link = tmp_path / "link.rtpdump"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        RtpDumpWriter(link, "192.0.2.1", 1, 0.0)
    assert not (tmp_path / "target").exists()
    with pytest.raises(ValueError):
        RtpDumpWriter(tmp_path / "a", "not-an-ip", 1, 0.0)
    with pytest.raises(ValueError):
        RtpDumpWriter(tmp_path / "b", "192.0.2.1", 0, 0.0)
    with RtpDumpWriter(tmp_path / "c", "192.0.2.1", 1, 0.0) as w:
        with pytest.raises(ValueError):
            w.write(1.0, bytes(65528))
        with pytest.raises(ValueError):
            w.write(1.0, bytes(11))
        w.write(1.0, bytes(65527))
        w.write(1.0, bytes(12))
    w.close()
    with pytest.raises(ValueError):
        w.write(1.0, b"late")


@given(
    st.lists(
        st.tuples(st.floats(0, 1e5), st.binary(min_size=12, max_size=300)), max_size=30
    )
)
@settings(max_examples=50, deadline=None)
def test_any_packets_read_back(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[float, bytes]]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.rtpdump"
    with RtpDumpWriter(path, "198.51.100.9", 9, 1000.0) as w:
        for delta, data in items:
            w.write(1000.0 + delta, data)
    _, _, _, _, _, records = read_rtpdump(path)
    start_us = 1000 * 1_000_000
    assert records == [
        ((round((1000.0 + delta) * 1e6) - start_us) // 1000, data)
        for delta, data in items
    ]
