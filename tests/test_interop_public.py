"""The recorder against public captures made by other people's equipment,
with tshark as the reference decoder of every RTP packet."""
from __future__ import annotations

import hashlib
import io

from collections import defaultdict
from pathlib import Path

import pytest
import soundfile

from tests.interop import RtpRow, capture, calls, epoch, recording, recording_bytes, run_cli, side_file_bytes, tshark_rtp

G711_PT = {0: 7, 8: 6}  # payload type -> WAV format tag


def replay(tmp_path: Path, name: str) -> tuple[Path, list[dict]]:
    data = tmp_path / "data"
    run_cli("replay", capture(name), "--data-dir", data)
    return data, calls(data)


def streams_of(rows: list[RtpRow], start: float, end: float) -> dict[tuple, list[RtpRow]]:
    """tshark's G.711 packets between answer and end, per stream, one per sequence number."""
    out: dict[tuple, dict[int, RtpRow]] = defaultdict(dict)
    for r in rows:
        if r.pt in G711_PT and start <= r.time <= end:
            out[(r.src, r.sport, r.dst, r.dport, r.ssrc)].setdefault(r.seq, r)
    return {k: sorted(v.values(), key=lambda r: r.time) for k, v in out.items()}


def assert_channels_hold_streams(data: Path, call: dict, rows: list[RtpRow]) -> dict[tuple, int]:
    """Every G.711 payload tshark saw during the call is in one channel of the
    WAV, byte for byte, at the place its RTP timestamp gives; returns the
    channel each stream went to."""
    wav = recording(data, call)
    assert wav.channels == 2 and wav.rate == 8000
    channels = [wav.channel(0), wav.channel(1)]
    placed = {}
    streams = streams_of(rows, epoch(call["answered_at"]), epoch(call["ended_at"]))
    assert streams, "no G.711 stream during the call"
    for key, packets in streams.items():
        ref = next(p for p in packets if len(set(p.payload)) > 8)
        hits = [(ch, channels[ch].find(ref.payload)) for ch in (0, 1) if channels[ch].find(ref.payload) >= 0]
        assert len(hits) == 1, f"stream {key}: reference payload found in {len(hits)} channels"
        ch, offset = hits[0]
        for p in packets:
            pos = offset + ((p.timestamp - ref.timestamp + 2**31) % 2**32 - 2**31)
            assert channels[ch][pos:pos + len(p.payload)] == p.payload, f"stream {key} seq {p.seq} at {pos}"
        placed[key] = ch
    return placed


def test_sip_rtp_g711_two_calls_pcmu_then_pcma_open_at_end(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "sip-rtp-g711.pcap")
    assert len(rows) == 2
    first, second = rows
    assert first["complete"] and first["end_reason"].startswith("bye")
    assert not second["complete"] and second["end_reason"] == "capture_end"
    rtp = tshark_rtp(capture("sip-rtp-g711.pcap"))
    for row, law, tag in ((first, "PCMU", 7), (second, "PCMA", 6)):
        assert row["audio_format"] == law and row["codecs"][0] == law
        assert recording(data, row).format_tag == tag
        assert_channels_hold_streams(data, row, rtp)
        info = soundfile.info(io.BytesIO(recording_bytes(data, row)))
        assert info.channels == 2 and info.samplerate == 8000
        assert abs(info.frames / 8000 - (epoch(row["ended_at"]) - epoch(row["answered_at"]))) < 2.5
        assert len(row["sha256"]) == 64


def test_rtp_protocol_comfort_noise_gaps_are_silence(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "rtp-protocol.pcap")
    assert len(rows) == 1 and rows[0]["complete"]
    row = rows[0]
    rtp = tshark_rtp(capture("rtp-protocol.pcap"))
    placed = assert_channels_hold_streams(data, row, rtp)
    assert sorted(placed.values()) == [0, 1]
    wav = recording(data, row)
    for (src, sport, dst, dport, ssrc), ch in placed.items():
        packets = sorted((r for r in rtp if r.ssrc == ssrc and r.pt == 8), key=lambda r: r.timestamp)
        covered = sum(len(p.payload) for p in packets)
        channel = wav.channel(ch)
        assert channel.count(0xD5) >= wav.frames - covered - 8000 * 3
    assert {s["cn_packets"] > 0 for s in row["streams"]} == {True}


def test_sip_over_tcp(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "sip-over-tcp.pcap")
    assert len(rows) == 1 and rows[0]["complete"]
    assert_channels_hold_streams(data, rows[0], tshark_rtp(capture("sip-over-tcp.pcap")))


def test_sip_dtmf2_delayed_offer_30ms_dtmf_and_loss(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "SIP_DTMF2.pcap")
    assert len(rows) == 1, "the 603 Decline attempt must not be recorded"
    row = rows[0]
    assert row["audio_format"] == "PCMA"
    assert_channels_hold_streams(data, row, tshark_rtp(capture("SIP_DTMF2.pcap")))
    assert row["dtmf"], "RFC 2833 events must be in the metadata"
    assert sum(s["lost"] for s in row["streams"]) == 2


def test_b2bua_asterisk_pcapng(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "b2bua-asterisk.pcapng")
    assert rows and all(r["complete"] for r in rows)
    rtp = tshark_rtp(capture("b2bua-asterisk.pcapng"))
    recorded = [r for r in rows if r["audio_path"] and streams_of(rtp, epoch(r["answered_at"]), epoch(r["ended_at"]))]
    assert recorded
    for row in recorded:
        assert_channels_hold_streams(data, row, rtp)


@pytest.mark.parametrize("name", ["aaa.pcap", "g711a.pcap"])
def test_nothing_answered_nothing_recorded(tmp_path: Path, name: str) -> None:
    data, rows = replay(tmp_path, name)
    assert rows == []
    assert not list((data / "recordings").rglob("*.*"))


def test_g722_kept_in_side_file(tmp_path: Path) -> None:
    """A codec other than G.711: decoded into a 16 kHz WAV (tests/test_codecs.py
    judges the sound), and every payload is in the side file too, byte for byte
    as tshark reads the original."""
    data, rows = replay(tmp_path, "sip-rtp-g722.pcap")
    assert len(rows) == 1
    row = rows[0]
    assert row["undecoded"] == [] and row["audio_format"] == "L16/16000"
    assert len(row["side_files"]) == 1
    side = tmp_path / "side.pcap"
    side.write_bytes(side_file_bytes(data, row))
    assert hashlib.sha256(side.read_bytes()).hexdigest() == row["side_files"][0]["sha256"]
    kept = [(r.src, r.sport, r.dst, r.dport, r.seq, r.payload) for r in tshark_rtp(side)]
    original = [(r.src, r.sport, r.dst, r.dport, r.seq, r.payload) for r in tshark_rtp(capture("sip-rtp-g722.pcap"))
                if r.time >= epoch(row["answered_at"]) - 2]
    assert kept == original and len(kept) > 400


def test_ipv6_fragments_sll_call_without_rtp(tmp_path: Path) -> None:
    data, rows = replay(tmp_path, "ipv6frag.pcap")
    assert len(rows) == 1
    assert rows[0]["complete"] and rows[0]["audio_frames"] == 0
