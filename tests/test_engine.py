"""The recorder core end to end on synthetic traffic: the cases public
captures lack, each aimed at one rule of the issue."""
from __future__ import annotations

import io
import ipaddress
import random
import struct
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import soundfile

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder import engine as engine_module
from recorder.engine import Recorder
from wire.g711 import decode
from storage.index import CallIndex
from storage.recordings import RecordingStore
from tests.builders import PBX, TRUNK, rtp, sdp, sip, udp_frame, write_pcap
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.interop import recording, recording_bytes, run_cli, store_key


def replay(tmp_path: Path, frames: list[tuple[float, bytes]], policy: str = POLICY) -> tuple[Path, list[dict], Recorder]:
    data = tmp_path / "data"
    index = CallIndex(_mkdir(data) / "index.sqlite3")
    recorder = Recorder(PolicyDecider(parse_policy(policy)), RecordingStore(data, index, ZoneInfo("Asia/Tokyo"),
                                                                          store_key(data)))
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    rows = [r.as_dict() for r in index.rows()]
    index.close()
    return data, rows, recorder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_inbound_call_channels_and_bytes(tmp_path: Path) -> None:
    up, up_payloads = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    down, down_payloads = media(T0 + 1.06, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    data, rows, _ = replay(tmp_path, signalling() + up + down + bye(T0 + 5))
    [row] = rows
    assert row["direction"] == "inbound" and row["complete"] and row["audio_format"] == "PCMU"
    assert (row["local_number"], row["remote_number"]) == ("0263111111", "0312345678")
    wav = recording(data, row)
    local, remote = wav.channel(0), wav.channel(1)
    assert b"".join(down_payloads) in local, "channel 0 is the local party (what the PBX side sends)"
    assert b"".join(up_payloads) in remote
    assert abs(wav.frames - 4.0 * 8000) < 400


def test_law_change_mid_call_becomes_pcm_with_the_same_audio(tmp_path: Path) -> None:
    first, first_payloads = media(T0 + 1.05, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2)
    reinvite = [(T0 + 3.1, udp_frame(PBX, 5060, TRUNK, 5060, sip(
        f"INVITE sip:x@{TRUNK} SIP/2.0", cseq="7 INVITE", from_tag="t1", to_tag="f1",
        body=sdp(PBX, 40000, codec=(8, "PCMA")))))]
    second, second_payloads = media(T0 + 3.2, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=3, pt=8, seed=3)
    data, rows, _ = replay(tmp_path, signalling() + first + reinvite + second + bye(T0 + 5.5))
    [row] = rows
    assert row["audio_format"] == "L16"
    pcm, rate = soundfile.read(io.BytesIO(recording_bytes(data, row)), dtype="int16")
    local = pcm[:, 0].tobytes()
    assert decode("PCMU", b"".join(first_payloads)) in local
    assert decode("PCMA", b"".join(second_payloads)) in local


def test_excluded_line_leaves_no_trace(tmp_path: Path) -> None:
    excluded = signalling("ex@x", callee="0263000000")
    ex_media, _ = media(T0 + 1.05, 2, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=9)
    normal = signalling("ok@x", t=T0 + 0.5, tport=20004, pport=40004)
    ok_media, _ = media(T0 + 1.6, 2, src=(TRUNK, 20004), dst=(PBX, 40004), ssrc=10)
    pcap = write_pcap(tmp_path / "in.pcap", excluded + ex_media + normal + ok_media
                      + bye(T0 + 4, "ex@x", "0263000000") + bye(T0 + 4, "ok@x"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    data = tmp_path / "data"
    result = run_cli("replay", pcap, "--data-dir", data, "--policy", policy)
    listing = run_cli("calls", "list", "--json", "--data-dir", data)
    assert "0263000000" not in result.stdout + result.stderr + listing.stdout
    assert listing.stdout.count('"sip_call_id"') == 1 and '"ok@x"' in listing.stdout
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"0263000000" not in content and b"263000000" not in content, path
    assert len(list(data.rglob("*.vault"))) == 1


def test_rtp_before_the_answer_is_seen(tmp_path: Path) -> None:
    early, payloads = media(T0 + 0.7, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    data, rows, _ = replay(tmp_path, signalling() + early + bye(T0 + 3))
    [row] = rows
    assert b"".join(payloads) in recording(data, row).channel(1)


def test_mirror_duplicates_and_vlan_copies_change_nothing(tmp_path: Path) -> None:
    up, _ = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    frames = signalling() + up + bye(T0 + 4)
    data1, [row1], _ = replay(tmp_path / "once", frames)
    copies = [(ts + 0.0001, udp_frame(*_ends(f), _payload(f), ident=_ident(f), vlans=[100])) for ts, f in frames]
    data2, [row2], rec = replay(tmp_path / "twice", frames + copies)
    assert recording(data1, row1).data == recording(data2, row2).data
    assert rec.decoder.stats["duplicates"] == len(frames)


def _ends(frame: bytes) -> tuple[str, int, str, int]:
    sport, dport = struct.unpack_from("!HH", frame, 34)
    return str(ipaddress.ip_address(frame[26:30])), sport, str(ipaddress.ip_address(frame[30:34])), dport


def _payload(frame: bytes) -> bytes:
    return frame[42:]


def _ident(frame: bytes) -> int:
    return int.from_bytes(frame[18:20], "big")


def test_hostile_values_never_steer_paths(tmp_path: Path) -> None:
    call_id = "../../../../etc/passwd\\..\\x"
    up, _ = media(T0 + 1.05, 1, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    data, rows, _ = replay(tmp_path, signalling(call_id, callee="../../0263111111") + up + bye(T0 + 3, call_id))
    [row] = rows
    assert row["sip_call_id"] == call_id
    path = (data / row["audio_path"]).resolve()
    assert path.is_relative_to((data / "recordings").resolve())
    assert ".." not in row["audio_path"] and "passwd" not in row["audio_path"]


def test_unknown_rtp_flood_is_bounded_and_not_recorded(tmp_path: Path) -> None:
    rng = random.Random(7)
    flood = [(T0 + i * 0.0001, udp_frame(f"198.51.100.{rng.randrange(1, 250)}", rng.randrange(1024, 65535),
                                          PBX, rng.randrange(1024, 65535), rtp(i, i * 160, i, b"\x55" * 160)))
             for i in range(30000)]
    data, rows, rec = replay(tmp_path, flood)
    assert rows == []
    assert len(rec._orphans) <= engine_module.MAX_ORPHANS
    assert len(rec._unmatched) <= engine_module.MAX_NEGATIVE_FLOWS
    assert rec.stats["rtp_unmatched"] == 30000


def test_hold_gap_and_garbage_timestamps_stay_wall_clock_bounded(tmp_path: Path) -> None:
    before, _ = media(T0 + 1.05, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2)
    # After 60 s of hold the sender resumes with timestamps that ignore the gap,
    # then jumps its timestamp by 2^31 (a broken device).
    after, after_payloads = media(T0 + 63.05, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seq0=100,
                                  ts0=100 * 160, seed=5)
    garbage, _ = media(T0 + 65.05, 1, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seq0=200,
                       ts0=2**31, seed=6)
    # The held party's line is not silent meanwhile: with nothing at all on
    # the mirror for 60 s, media that goes on 20 ms later is a clock step.
    held, _ = media(T0 + 1.07, 65, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=9, seed=7)
    data, [row], _ = replay(tmp_path, signalling() + before + after + garbage + held + bye(T0 + 66.5))
    wav = recording(data, row)
    duration = 66.5 - (T0 + 1.0 - T0)
    assert abs(wav.frames / 8000 - duration) < 1.5
    local = wav.channel(0)
    at = local.find(b"".join(after_payloads))
    assert at >= 0 and abs(at / 8000 - 62.05) < 1.1, "resumed audio sits at its wall-clock time"


def test_answered_call_without_rtp_has_an_empty_recording_row(tmp_path: Path) -> None:
    data, [row], _ = replay(tmp_path, signalling() + bye(T0 + 3))
    assert row["complete"] and row["audio_frames"] == 0 and row["audio_path"] is None


def test_interleaved_pcm_reads_with_soundfile(tmp_path: Path) -> None:
    up, _ = media(T0 + 1.05, 1, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    data, [row], _ = replay(tmp_path, signalling() + up + bye(T0 + 2.5))
    pcm, rate = soundfile.read(io.BytesIO(recording_bytes(data, row)), dtype="int16")
    assert rate == 8000 and pcm.shape[1] == 2 and np.abs(pcm[:, 1]).max() > 0


def test_batches_record_exactly_what_single_frames_record(tmp_path: Path) -> None:
    """feed_frames is feed_frame in a loop: same rows, same audio, same
    counters, whatever the batch boundaries (a tick, an answer or a
    duplicate may fall anywhere in a batch)."""
    up, _ = media(T0 + 0.7, 4, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    down, _ = media(T0 + 1.06, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    second = signalling("c2@x", callee="0263222222", t=T0 + 0.3, tport=20002, pport=40002)
    other, _ = media(T0 + 1.4, 2, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=3, seed=3)
    frames = sorted(signalling() + second + up + down + other + bye(T0 + 5) + bye(T0 + 4, "c2@x", "0263222222")
                    + [(ts + 0.0001, f) for ts, f in up[::7]], key=lambda f: f[0])
    data1, rows1, single = replay(tmp_path / "single", frames)

    data2 = _mkdir(tmp_path / "batched" / "data")
    index = CallIndex(data2 / "index.sqlite3")
    batched = Recorder(PolicyDecider(parse_policy(POLICY)),
                       RecordingStore(data2, index, ZoneInfo("Asia/Tokyo"), store_key(data2)))
    rng = random.Random(5)
    pos = 0
    while pos < len(frames):
        size = rng.choice((1, 2, 3, 50, 400))
        batched.feed_frames([(ts, 1, frame) for ts, frame in frames[pos:pos + size]])
        pos += size
    batched.finish()
    rows2 = [r.as_dict() for r in index.rows()]
    index.close()

    assert single.counters() == batched.counters()
    assert single.stats["rtp_packets"] == len(up) + len(down) + len(other)
    assert len(rows1) == len(rows2) == 2
    ignore = {"id", "audio_path", "sha256", "side_files"}
    by_call = sorted(rows1, key=lambda r: r["sip_call_id"]), sorted(rows2, key=lambda r: r["sip_call_id"])
    for row1, row2 in zip(*by_call, strict=True):
        assert {k: v for k, v in row1.items() if k not in ignore} == {k: v for k, v in row2.items() if k not in ignore}
        assert recording(data1, row1).data == recording(data2, row2).data
