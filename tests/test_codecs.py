"""Every call playable: G.722, G.729 and Opus decoded into the WAV (16 kHz where the codec is
wideband), judged against ffmpeg's decoders and against the speech the real encoders were fed;
the original payloads still kept in the side files."""
from __future__ import annotations

import hashlib
import io
import re
import subprocess
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder import codecs
from recorder.codecs import DELAY, CallDecoders, CodecUnavailable, Upsampler
from recorder.engine import Recorder
from recorder.interleave import StereoInterleaver, UnsupportedEncoding
from tests.builders import PBX, TRUNK, rtp, udp_frame, write_pcap
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.codec_streams import aligned, codec_call, g722_payloads, g729_frames, opus_packets, snr_db, speech
from tests.console_site import PASSWORD, ConsoleSite
from tests.interop import calls, capture, need, recording, run_cli, side_file_bytes, tshark_fields, tshark_rtp
from tests.memory_sink import MemorySink
from wire import g711


def replay(tmp_path: Path, frames: list[tuple[float, bytes]]) -> tuple[Path, dict]:
    data = tmp_path / "data"
    run_cli("replay", write_pcap(tmp_path / "call.pcap", frames), "--data-dir", data)
    [row] = calls(data)
    return data, row


def record(frames: list[tuple[float, bytes]]) -> MemorySink:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in sorted(frames, key=lambda f: f[0]))
    recorder.finish()
    return sink


def samples(channel: bytes) -> np.ndarray:
    return np.frombuffer(channel, "<i2")


def ffmpeg_decode(tmp_path: Path, demuxer: str, bitstream: bytes, rate: int) -> np.ndarray:
    """ffmpeg's own decoder (libavcodec's, not the library callrec uses) on a raw bitstream."""
    raw, out = tmp_path / f"in.{demuxer}", tmp_path / f"ffmpeg-{demuxer}.raw"
    raw.write_bytes(bitstream)
    subprocess.run([need("ffmpeg"), "-v", "error", "-y", "-f", demuxer, "-i", str(raw), "-f", "s16le", "-ac", "1",
                    "-ar", str(rate), str(out)], check=True, timeout=120)
    return np.fromfile(out, "<i2")


def offset_of(row: dict, first_packet: float, rate: int) -> int:
    """Where a packet sent at `first_packet` lies in a recording made from the answer on (no
    packet came before the answer in these calls, so the answer is the origin)."""
    return round((first_packet - datetime.fromisoformat(row["answered_at"]).timestamp()) * rate)


# ---- the shared G.722 capture against ffmpeg --------------------------------------------------

def test_g722_capture_decodes_as_ffmpeg_does_at_16k(tmp_path: Path) -> None:
    """sip-rtp-g722.pcap (SDP G722/8000, audio 16 kHz): `callrec replay` makes a 16 kHz WAV whose
    channel is ffmpeg's decoding of the payloads tshark reads, sample for sample, in one piece at
    the place of the first packet; the payloads stay in the side file; `calls audio` hands the
    sealed 16 kHz file out and `verify` finds it whole."""
    name = "sip-rtp-g722.pcap"
    data = tmp_path / "data"
    run_cli("replay", capture(name), "--data-dir", data)
    [row] = calls(data)
    assert (row["audio_format"], row["undecoded"], row["codecs"]) == ("L16/16000", [], ["G722"])
    rows = tshark_fields(capture(name), ("rtp.payload",), "rtp.p_type == 9")
    payloads = b"".join(bytes.fromhex(r[0].replace(":", "")) for r in rows)
    reference = ffmpeg_decode(tmp_path, "g722", payloads, 16000)
    assert len(reference) == 2 * len(payloads) == 2 * 160 * 425

    wav = recording(data, row)
    assert (wav.rate, wav.channels, wav.bits) == (16000, 2, 16) and wav.frames == row["audio_frames"]
    assert abs(wav.frames / 16000 - row["duration"]) < 0.05
    local = samples(wav.channel(0))
    start = int(np.flatnonzero(local)[0]) - 1  # G.722 decodes the first packet's first sample to 0
    offset, correlation = aligned(local, reference, start, 40)
    decoded = local[offset:offset + len(reference)]
    assert len(decoded) == len(reference) and correlation > 0.9999
    assert snr_db(decoded, reference) > 60
    assert not local[:offset].any() and not local[offset + len(reference):].any()
    assert not samples(wav.channel(1)).any(), "nothing came from the other party"

    side = tmp_path / "side.pcap"
    side.write_bytes(side_file_bytes(data, row))
    assert [r.payload for r in tshark_rtp(side)] == [r.payload for r in tshark_rtp(capture(name))]

    out = tmp_path / "handed-out.wav"
    run_cli("calls", "audio", row["id"], "-o", out, "--reason", "test", "--data-dir", data)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == row["sha256"]
    assert soundfile.info(out).samplerate == 16000
    run_cli("verify", "--data-dir", data)


# ---- G.729 and Opus made by real encoders -----------------------------------------------------

def test_g729_call_decodes_close_to_the_source_and_to_ffmpeg(tmp_path: Path) -> None:
    """Speech encoded by libbcg729 (two 10-byte frames a packet, PT 18): the 8 kHz PCM WAV
    matches ffmpeg's G.729 decoder at the packets' place and follows the speech (G.729 is a
    vocoder: its waveform resembles the source, 5 ms later, rather than equals it)."""
    source = speech(tmp_path, 8000)
    frames = g729_frames(source)
    payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames) - 1, 2)]
    call, first = codec_call(payloads, pt=18, rtpmap="G729", clock=8000)
    data, row = replay(tmp_path, call)
    assert (row["audio_format"], row["undecoded"]) == ("L16", [])
    assert [s["decode_errors"] for s in row["streams"]] == [0, 0] and len(row["side_files"]) == 1
    remote = samples(recording(data, row).channel(1))
    at = offset_of(row, first, 8000)

    reference = ffmpeg_decode(tmp_path, "g729", b"".join(frames[:2 * len(payloads)]), 8000)
    offset, correlation = aligned(remote, reference, at, 80)
    assert offset == at and correlation > 0.98
    assert snr_db(remote[offset:offset + len(reference)], reference) > 15

    offset, correlation = aligned(remote, source, at, 80)
    assert offset == at + 40 and correlation > 0.75


def test_g729_annex_b_silence_frames_become_comfort_noise(tmp_path: Path) -> None:
    """With silence suppression (G.729 Annex B, one frame a packet): 2-byte SID frames decode,
    the pauses between them are comfort noise rather than errors, and the speech still follows
    the source."""
    source = speech(tmp_path, 8000)
    frames = g729_frames(source, vad=True)
    sizes = {len(f) for f in frames}
    assert sizes == {0, 2, 10}, sizes
    call, first = codec_call(frames, pt=18, rtpmap="G729", clock=8000, ptime=0.01)
    [rec] = record(call).recordings
    assert rec.result is not None
    stats = rec.result.streams[1].stats
    assert (stats["decode_errors"], stats["lost"]) == (0, 0) and stats["concealed_ms"] > 0
    remote = samples(rec.channel(1))
    at = round((first - rec.origin) * 8000)
    offset, correlation = aligned(remote, source, at + 40, 8)
    assert offset == at + 40 and correlation > 0.7


def loud_packets(source: np.ndarray, step: int, count: int) -> frozenset[int]:
    """`count` single packets in the middle of speech, far apart: where a loss is heard most."""
    energy = np.array([np.mean(source[i:i + step].astype(float) ** 2) for i in range(0, len(source) - step, step)])
    chosen: list[int] = []
    for n in np.argsort(energy)[::-1]:
        if 10 < n < len(energy) - 10 and all(abs(int(n) - c) > 10 for c in chosen):
            chosen.append(int(n))
        if len(chosen) == count:
            break
    return frozenset(chosen)


def test_opus_call_is_16k_close_to_the_source_and_its_losses_are_recovered(tmp_path: Path) -> None:
    """Speech at 16 kHz encoded by libopus (24 kbit/s, 20 ms, in-band FEC, RTP clock 48000):
    the WAV is 16 kHz and follows the source (Opus's 6.5 ms look-ahead later); each lost packet
    is filled from the next packet's FEC and sounds like what was lost, never silence."""
    source = speech(tmp_path, 16000)
    payloads = opus_packets(source, 16000)
    lost = loud_packets(source, 320, 4)
    call, first = codec_call(payloads, pt=111, rtpmap="opus/48000/2", clock=48000, lose=lost)
    data, row = replay(tmp_path, call)
    assert (row["audio_format"], row["undecoded"]) == ("L16/16000", [])
    stream = row["streams"][1]
    assert (stream["lost"], stream["concealed_ms"], stream["decode_errors"]) == (4, 80, 0)
    wav = recording(data, row)
    assert wav.rate == 16000
    remote = samples(wav.channel(1))
    at = offset_of(row, first, 16000)
    offset, correlation = aligned(remote, source, at, 320)
    assert offset == at + 104 and correlation > 0.9
    assert snr_db(remote[offset:offset + len(source)], source[:len(remote) - offset]) > 6
    for n in lost:
        got, want = remote[offset + 320 * n:offset + 320 * (n + 1)], source[320 * n:320 * (n + 1)]
        _, similar = aligned(got, want, 0, 0)
        assert similar > 0.6, f"lost packet {n} was filled with something else ({similar:.2f})"


def test_g729_losses_are_concealed_and_bounded(tmp_path: Path) -> None:
    """G.729 frame erasure fills a short loss with speech-like sound; a loss longer than
    MAX_CONCEAL_SECONDS stays silent beyond that bound; the row counts what was made up."""
    source = speech(tmp_path, 8000)
    frames = g729_frames(source)
    payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames) - 1, 2)]
    single = sorted(loud_packets(source, 160, 2))
    long_gap = set(range(200, 215))  # 300 ms
    call, first = codec_call(payloads, pt=18, rtpmap="G729", clock=8000, lose=frozenset(single) | long_gap)
    sink = record(call)
    [rec] = sink.recordings
    assert rec.result is not None
    stats = rec.result.streams[1].stats
    assert stats["concealed_ms"] == 20 * len(single) + 1000 * codecs.MAX_CONCEAL_SECONDS
    remote = samples(rec.channel(1))
    at = round((first - rec.origin) * 8000)
    for n in single:
        assert np.abs(remote[at + 160 * n:at + 160 * (n + 1)]).max() > 100, f"packet {n} left silent"
    gap = at + 160 * 200
    assert np.abs(remote[gap:gap + 800]).max() > 0
    assert not remote[gap + 800:gap + 160 * 15].any(), "concealment past its bound"


# ---- mixed calls, rates, refusals -------------------------------------------------------------

def g722_call_with_pcmu(source: np.ndarray, g722_at: float, pcmu_at: float
                        ) -> tuple[list[tuple[float, bytes]], list[bytes], list[bytes]]:
    """The trunk speaks G.722 (PT 9), the PBX answers in PCMU: asymmetric but legal."""
    payloads = g722_payloads(source)[:150]
    frames = signalling(answer_codec=(9, "G722"))
    for n, payload in enumerate(payloads):
        frames.append((g722_at + n * 0.02, udp_frame(TRUNK, 20000, PBX, 40000, rtp(n, n * 160, 7, payload, 9),
                                                     ident=n)))
    down, pcmu = media(pcmu_at, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=8)
    return frames + down + bye(T0 + 5), payloads, pcmu


def test_g711_beside_g722_is_interpolated_into_the_16k_file_keeping_its_samples(tmp_path: Path) -> None:
    """The first audio is G.722, so the file is 16 kHz; the other side's PCMU is decoded and
    interpolated: every even sample is the G.711 sample of that instant, exactly."""
    source = speech(tmp_path, 16000)
    frames, _, pcmu = g722_call_with_pcmu(source, T0 + 1.05, T0 + 1.10)
    [rec] = record(frames).recordings
    assert (rec.encoding, rec.rate) == ("L16", 16000)
    assert rec.result is not None and rec.result.undecoded == ()
    local = samples(rec.channel(0))
    decoded = samples(g711.decode("PCMU", b"".join(pcmu)))
    start = round((T0 + 1.10 - rec.origin) * 8000)
    assert np.array_equal(local[2 * start:2 * (start + len(decoded)):2], decoded)
    between = local[2 * start + 1:2 * (start + len(decoded)) - DELAY:2].astype(float)
    halfway = (decoded[:-1].astype(float) + decoded[1:]) / 2
    assert np.corrcoef(between[:len(halfway)], halfway[:len(between)])[0, 1] > 0.5
    remote = samples(rec.channel(1))
    _, correlation = aligned(remote, source[:150 * 320], round((T0 + 1.05 - rec.origin) * 16000), 40)
    assert correlation > 0.99


def test_g722_after_g711_turns_the_8k_file_to_pcm_with_g722s_low_band(tmp_path: Path) -> None:
    """PCMU came first, so the file is 8 kHz G.711; G.722 then arrives: the file becomes 16-bit
    PCM at 8 kHz (PCMU decoded exactly) and G.722 is decoded in libg722's 8 kHz mode."""
    source = speech(tmp_path, 16000)
    frames, _, pcmu = g722_call_with_pcmu(source, T0 + 1.10, T0 + 1.05)
    [rec] = record(frames).recordings
    assert (rec.encoding, rec.rate, rec.conversions) == ("L16", 8000, 1)
    assert g711.decode("PCMU", b"".join(pcmu)) in rec.channel(0)
    low = np.convolve(source[:150 * 320].astype(float), np.hanning(9) / np.hanning(9).sum(), mode="same")[::2]
    _, correlation = aligned(samples(rec.channel(1)), low.astype(np.int16), round((T0 + 1.10 - rec.origin) * 8000),
                             16)
    assert correlation > 0.9


def test_a_codec_without_its_library_stays_in_the_side_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library that cannot be loaded costs that codec's decoding only: its payloads are kept
    and named undecoded, the G.711 side is recorded as ever."""
    def missing(encoding: str, rate: int) -> None:
        raise CodecUnavailable("not installed")

    monkeypatch.setitem(codecs._CODECS, "G722", missing)
    frames, payloads, pcmu = g722_call_with_pcmu(np.zeros(150 * 320, np.int16), T0 + 1.10, T0 + 1.05)
    [rec] = record(frames).recordings
    assert rec.result is not None and rec.result.undecoded == ("G722",)
    assert rec.encoding == "PCMU" and b"".join(pcmu) in rec.channel(0)
    assert [side[2][12:] for side in rec.side] == payloads


def test_the_interleaver_takes_pcm_at_its_rate_and_g711_only_at_8k() -> None:
    with pytest.raises(ValueError, match="8 kHz"):
        StereoInterleaver("PCMU", window_samples=16000, rate=16000)
    wide = StereoInterleaver("L16", window_samples=16000, rate=16000)
    assert wide.rate == 16000
    with pytest.raises(UnsupportedEncoding):
        wide.place_samples(0, 0, "PCMU", bytes(160))
    with pytest.raises(UnsupportedEncoding):
        StereoInterleaver("PCMU").place_pcm(0, 0, bytes(320))
    ramp = np.arange(1, 321, dtype="<i2")
    out = wide.place_pcm(1, 0, ramp.tobytes()) + wide.place_pcm(1, 400, ramp.tobytes()) + wide.flush()
    frames = np.frombuffer(out, "<i2").reshape(-1, 2)
    assert not frames[:, 0].any() and len(frames) == 720
    assert np.array_equal(frames[:320, 1], ramp) and not frames[320:400, 1].any()
    assert np.array_equal(frames[400:, 1], ramp)


def test_malformed_payloads_are_counted_and_skipped() -> None:
    decoders = CallDecoders(8000)
    header = rtp(1, 160, 5, b"", 18)
    assert decoders.decode(1, 0, "G729", header + bytes(7), bytes(7)) == []
    assert decoders.decode(1, 160, "G729", header + bytes(20), bytes(20))[0][0] == 160
    assert decoders.decode(1, 320, "AMR", header + bytes(20), bytes(20)) is None
    assert decoders.stats(1) == {"concealed_ms": 0, "decode_errors": 1}
    assert decoders.stats(0) == {"concealed_ms": 0, "decode_errors": 0}


@pytest.mark.parametrize("frequency", [300, 1000, 3000])
def test_the_interpolator_keeps_the_band_and_the_samples(frequency: int) -> None:
    """8 to 16 kHz in 20 ms chunks, each written where it belongs over the previous one's
    guessed end: in-band tones come out at better than 60 dB, the input samples unchanged at
    the even places, and the run's end rings out into silence within DELAY samples."""
    t = np.arange(8000)
    tone = np.round(10000 * np.sin(2 * np.pi * frequency * t / 8000)).astype("<i2")
    up = Upsampler()
    out = np.zeros(16000 + 2 * DELAY, dtype=np.int16)
    for i in range(0, 8000, 160):
        chunk = samples(up.process(tone[i:i + 160].tobytes()))
        assert len(chunk) == 320 + 2 * DELAY
        out[2 * i:2 * i + len(chunk)] = chunk  # index 0 is DELAY samples before the first input
    placed = out[DELAY:DELAY + 16000]
    assert np.array_equal(placed[::2], tone)
    ideal = 10000 * np.sin(2 * np.pi * frequency * np.arange(16000) / 16000)
    assert snr_db(placed[2000:14000], ideal[2000:14000]) > 60
    assert np.abs(out[DELAY + 16000:].astype(int)).max() < 10000


async def test_the_console_draws_and_plays_a_16k_recording(tmp_path: Path) -> None:
    """熊本市's console on a wideband call: the waveform is drawn from the 16 kHz file, and the
    player of an approved request streams the sealed 16 kHz WAV byte for byte."""
    source = speech(tmp_path, 16000)
    call, _ = codec_call(g722_payloads(source)[:150], pt=9, rtpmap="G722", clock=8000)
    site = ConsoleSite(tmp_path, "kumamoto", {"kanri": "manager", "sato": "requester"}, frames=call)
    try:
        row = site.call
        assert row["audio_format"] == "L16/16000"
        filed = run_cli("request", "file", "--department", "総務課", "--purpose", "crime", "--wanted", "listen",
                        "--call", row["id"], "--user", "sato", *site.where, input=PASSWORD.format("sato") + "\n")
        number = filed.stdout.split(":")[0]
        run_cli("request", "approve", number, "--reason", "窃盗事件の捜査", "--user", "kanri", *site.where,
                input=PASSWORD.format("kanri") + "\n")
        async with aiohttp.ClientSession(site.base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            page = await (await http.get("/login")).text()
            token = re.search(r'name="login_token" value="([^"]+)"', page)
            assert token
            signed = await http.post("/login", data={"login_token": token.group(1), "name": "kanri",
                                                     "password": PASSWORD.format("kanri")})
            assert signed.status == 200
            svg = await http.get(f"/calls/{row['id']}/waveform.svg")
            assert svg.status == 200 and "polyline" in await svg.text()
            played = await http.get(f"/requests/{number}/listen/{row['id']}")
            assert (played.status, played.headers["Content-Type"]) == (200, "audio/wav")
            body = await played.read()
        assert hashlib.sha256(body).hexdigest() == row["sha256"]
        pcm, rate = soundfile.read(io.BytesIO(body), dtype="int16")
        assert rate == 16000 and abs(len(pcm) / rate - row["duration"]) < 0.05
    finally:
        site.stop()
