"""Helpers shared by the tests: the public captures (read in place, loud
when missing), tshark as the reference decoder, the callrec CLI, and raw
access to the recorded WAV files."""
from __future__ import annotations

import json
import sqlite3
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from storage.audiofile import side_bytes, wav_bytes
from storage.keys import MasterKey, create_key_file, load_master_key
from storage.store import default_key_file

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO.parent / "shared" / "captures"
# Every public capture: the container and link-layer tests run over all of them.
CAPTURE_NAMES = (
    "SIP_DTMF2.pcap",
    "aaa.pcap",
    "b2bua-asterisk.pcapng",
    "g711a.pcap",
    "ipv6frag.pcap",
    "rtp-protocol.pcap",
    "sip-over-tcp.pcap",
    "sip-rtp-g711.pcap",
    "sip-rtp-g722.pcap",
)
TSHARK_SECONDS = 120
# Heuristic RTP on, as a person would in Wireshark for a capture whose SDP it missed.
HEURISTIC_RTP = ("-o", "rtp.heuristic_rtp:TRUE")
# RTP that tshark dissected down to the SSRC: a complete version-2 header.
DISSECTED_RTP = "rtp.version == 2 && rtp.ssrc"


def capture(name: str) -> Path:
    """A public capture, read in place; its absence is a failure, not a skip."""
    path = CAPTURES / name
    if not path.is_file():
        raise AssertionError(f"public capture {path} is missing: the tests need ../shared/captures/")
    return path


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise AssertionError(f"{tool} is not installed; .ci/run installs it (apt-get)")
    return found


def tshark_fields(path: Path, fields: Sequence[str], display_filter: str | None = None,
                  options: Sequence[str] = ()) -> list[list[str]]:
    """One row of tab-separated field values per (matching) frame.  -n: name
    resolution would only slow the suite down and never changes a field."""
    argv = [need("tshark"), "-n", "-r", str(path)]
    if display_filter is not None:
        argv += ["-Y", display_filter]
    argv += ["-T", "fields", *options]
    for name in fields:
        argv += ["-e", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TSHARK_SECONDS)
    if done.returncode != 0:
        raise AssertionError(f"tshark failed on {path}: {done.stderr.strip()}")
    return [line.split("\t") for line in done.stdout.splitlines()]


def rtp_datagrams(path: Path) -> list[tuple[float, int, bytes]]:
    """(arrival, UDP source port, UDP payload) of every RTP packet tshark dissects."""
    rows = tshark_fields(path, ("frame.time_epoch", "udp.srcport", "udp.payload"), DISSECTED_RTP, HEURISTIC_RTP)
    return [(float(when), int(port), bytes.fromhex(data)) for when, port, data in rows]


@dataclass(frozen=True, slots=True)
class RtpRow:
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    seq: int
    timestamp: int
    pt: int
    payload: bytes


def tshark_rtp(path: Path) -> list[RtpRow]:
    """Every RTP packet as tshark dissects it (not RTCP, not the copies quoted in ICMP errors)."""
    rows = tshark_fields(
        path, ("frame.time_epoch", "ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst", "udp.dstport",
               "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.p_type", "rtp.payload"),
        "rtp && !rtcp && !icmp && !icmpv6", HEURISTIC_RTP)
    out = []
    for t, s4, s6, sp, d4, d6, dp, ssrc, seq, ts, pt, payload in rows:
        if not ssrc or not payload:
            continue
        out.append(RtpRow(float(t), s4 or s6, int(sp), d4 or d6, int(dp), int(ssrc, 16), int(seq), int(ts),
                          int(pt), bytes.fromhex(payload.replace(":", ""))))
    return out


def run_cli(*args: str | Path, check: bool = True, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`callrec ARGS`; `input` is its standard input (passwords, one per line, for scripts)."""
    command = f"callrec {' '.join(map(str, args))}"
    try:
        result = subprocess.run([sys.executable, "-m", "callrec", *map(str, args)], cwd=REPO,
                                capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{command} ran over {timeout} s") from None
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stderr}")
    return result


def calls(data_dir: Path) -> list[dict]:
    return json.loads(run_cli("calls", "list", "--json", "--data-dir", data_dir).stdout)


def notice_rows(data_dir: Path) -> list[dict]:
    """The announcer's notice rows as the index file holds them, every column."""
    db = sqlite3.connect(data_dir / "index.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM notices")]
    finally:
        db.close()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


WAVE_FORMATS = {1: "L16", 6: "PCMA", 7: "PCMU"}


@dataclass(frozen=True, slots=True)
class Wav:
    format_tag: int
    channels: int
    rate: int
    bits: int
    data: bytes

    @property
    def encoding(self) -> str:
        return WAVE_FORMATS.get(self.format_tag, f"format {self.format_tag}")

    @property
    def frames(self) -> int:
        return len(self.data) // (self.bits // 8 * self.channels)

    def channel(self, index: int) -> bytes:
        """The raw codes (or 16-bit samples) of one channel, as written."""
        width = self.bits // 8
        frame = width * self.channels
        return b"".join(self.data[i + index * width:i + (index + 1) * width]
                        for i in range(0, len(self.data) - frame + 1, frame)) if width > 1 \
            else self.data[index::self.channels]


def store_key(data_dir: Path) -> MasterKey:
    """The master key of a test's data folder, where the CLI keeps it by
    default (beside the folder); made on first use like `callrec replay`."""
    path = default_key_file(data_dir)
    if not path.exists():
        return create_key_file(path)
    return load_master_key(path, data_dir, {})


def recording_bytes(data_dir: Path, row: dict) -> bytes:
    """The recording of an index row exactly as the store hands it out
    (`callrec calls audio`): decrypted, authenticated, header made."""
    _, stream = wav_bytes(data_dir / row["audio_path"], store_key(data_dir), row["id"])
    return b"".join(stream)


def side_file_bytes(data_dir: Path, row: dict, index: int = 0) -> bytes:
    """A side capture of undecoded payloads, as handed out."""
    return b"".join(side_bytes(data_dir / row["side_files"][index]["path"], store_key(data_dir), row["id"]))


def recording(data_dir: Path, row: dict) -> Wav:
    """The recording of an index row, parsed (see read_wav)."""
    return parse_wav(recording_bytes(data_dir, row), row["id"])


def read_wav(path: Path) -> Wav:
    return parse_wav(path.read_bytes(), str(path))


def parse_wav(raw: bytes, path: str) -> Wav:
    """The RIFF chunks read by hand: the wave module refuses G.711 and
    soundfile would decode it, and the tests must see the bytes as stored.
    A WAVE_FORMAT_EXTENSIBLE file reports its subformat's tag."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise AssertionError(f"{path} is not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        body = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise AssertionError(f"{path} lacks a fmt or data chunk")
    tag, channels, rate = struct.unpack_from("<HHI", fmt)
    bits = struct.unpack_from("<H", fmt, 14)[0]
    if tag == 0xFFFE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]
    return Wav(tag, channels, rate, bits, data)
