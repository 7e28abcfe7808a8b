"""Helpers shared by the interop tests: tshark as the reference decoder,
and raw access to the recorded WAV files."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO.parent / "shared" / "captures"


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


@dataclass(frozen=True)
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
    """Every RTP packet as tshark dissects it (heuristic RTP on, like a
    person would in Wireshark for a capture whose SDP it missed)."""
    out = subprocess.run(
        [need("tshark"), "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp && !rtcp && !icmp && !icmpv6",
         "-T", "fields", "-E", "separator=,", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src",
         "-e", "udp.srcport", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.dstport", "-e", "rtp.ssrc",
         "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.p_type", "-e", "rtp.payload"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    rows = []
    for line in out.splitlines():
        t, s4, s6, sp, d4, d6, dp, ssrc, seq, ts, pt, payload = line.split(",")
        if not ssrc or not payload:
            continue
        rows.append(RtpRow(float(t), s4 or s6, int(sp), d4 or d6, int(dp), int(ssrc, 16), int(seq), int(ts),
                           int(pt), bytes.fromhex(payload.replace(":", ""))))
    return rows


def run_cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "callrec", *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"callrec {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def calls(data_dir: Path) -> list[dict]:
    return json.loads(run_cli("calls", "list", "--json", "--data-dir", data_dir).stdout)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class Wav:
    format_tag: int
    channels: int
    rate: int
    bits: int
    data: bytes

    def channel(self, index: int) -> bytes:
        width = self.bits // 8
        frame = width * self.channels
        return b"".join(self.data[i + index * width:i + (index + 1) * width]
                        for i in range(0, len(self.data) - frame + 1, frame)) if width > 1 \
            else self.data[index::self.channels]

    @property
    def frames(self) -> int:
        return len(self.data) // (self.bits // 8 * self.channels)


def read_wav(path: Path) -> Wav:
    """The RIFF chunks read by hand: soundfile would decode G.711, and the
    tests must see the bytes as stored."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", path
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        body = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", body)
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    assert fmt is not None and data is not None, path
    return Wav(fmt[0], fmt[1], fmt[2], fmt[5], data)
