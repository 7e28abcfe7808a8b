from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recorder import g711, wavfile
from recorder.wavfile import (
    WavFormatError,
    WavLimitError,
    WavWriter,
    repair_wav,
    sha256_file,
)

SUBTYPES = {"PCMU": "ULAW", "PCMA": "ALAW", "L16": "PCM_16"}
SOX_ENCODINGS = {"PCMU": "u-law", "PCMA": "A-law", "L16": "Signed Integer PCM"}


def stereo_frames(encoding: str, count: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    if encoding == "L16":
        return (
            rng.integers(-32768, 32767, size=2 * count, dtype=np.int16)
            .astype("<i2")
            .tobytes()
        )
    return rng.integers(0, 256, size=2 * count, dtype=np.uint8).tobytes()


def expected_samples(encoding: str, data: bytes, channels: int = 2) -> np.ndarray:
    if encoding == "L16":
        samples = np.frombuffer(data, dtype="<i2")
    else:
        samples = g711.table(encoding)[np.frombuffer(data, dtype=np.uint8)]
    return samples.reshape(-1, channels)


def soxi(path: Path, flag: str) -> str:
    return subprocess.run(
        ["soxi", flag, str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def sox_samples_read(path: Path) -> int:
    err = subprocess.run(
        ["sox", str(path), "-n", "stat"], check=True, capture_output=True, text=True
    ).stderr
    match = re.search(r"Samples read:\s+(\d+)", err)
    assert match, err
    return int(match.group(1))


def check_readable(path: Path, encoding: str, data: bytes, channels: int = 2) -> None:
    frames = len(data) // (channels * (2 if encoding == "L16" else 1))
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
        "WAV",
        SUBTYPES[encoding],
        channels,
        8000,
        frames,
    )
    read, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == 8000
    assert np.array_equal(read, expected_samples(encoding, data, channels))
    assert soxi(path, "-c") == str(channels)
    assert soxi(path, "-r") == "8000"
    assert soxi(path, "-s") == str(frames)
    assert soxi(path, "-e") == SOX_ENCODINGS[encoding]
    assert sox_samples_read(path) == frames * channels


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA", "L16"])
def test_formats_read_back(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "call.wav"
    data = stereo_frames(encoding, 8000)
    third = len(data) // 3 // 4 * 4
    with WavWriter(path, encoding) as w:
        w.append(data[:third])
        w.sync()
        w.append(data[third:])
    assert w.close() == 8000
    check_readable(path, encoding, data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA", "L16"])
def test_header_layout(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "h.wav"
    w = WavWriter(path, encoding)
    w.append(stereo_frames(encoding, 10))
    w.close()
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    tag, channels, rate, byte_rate, block, bits = struct.unpack_from("<HHIIHH", raw, 20)
    assert (channels, rate, byte_rate) == (2, 8000, 8000 * block)
    if encoding == "L16":
        assert (tag, block, bits, len(raw)) == (1, 4, 16, 44 + 40)
    else:
        assert (tag, block, bits) == ({"PCMU": 7, "PCMA": 6}[encoding], 2, 8)
        assert raw[36:38] == b"\x00\x00"  # cbSize
        assert raw[38:50] == b"fact" + (4).to_bytes(4, "little") + (10).to_bytes(
            4, "little"
        )
        assert len(raw) == 58 + 20
    assert int.from_bytes(raw[4:8], "little") == len(raw) - 8


def test_synced_file_is_playable_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    data = stereo_frames("PCMU", 4000)
    w = WavWriter(path, "PCMU")
    w.append(data)
    w.sync()
    check_readable(path, "PCMU", data)
    w.append(stereo_frames("PCMU", 10, seed=2))
    w.close()


@pytest.mark.parametrize("encoding", ["PCMU", "L16"])
def test_truncated_at_any_point_then_repaired(tmp_path: Path, encoding: str) -> None:
    source = tmp_path / "full.wav"
    data = stereo_frames(encoding, 300)
    w = WavWriter(source, encoding)
    w.append(data[: len(data) // 2])
    w.sync()  # the header is stale for the second half, as after a crash
    w.append(data[len(data) // 2 :])
    full = source.read_bytes()
    w.close()
    header = 44 if encoding == "L16" else 58
    block = 4 if encoding == "L16" else 2
    for cut in (
        list(range(header, header + 9))
        + list(range(header + 9, len(full) + 1, 37))
        + [len(full)]
    ):
        path = tmp_path / f"cut{cut}.wav"
        path.write_bytes(full[:cut])
        frames = repair_wav(path)
        assert frames == (cut - header) // block
        kept = data[: frames * block]
        assert path.stat().st_size == header + len(kept)
        if frames:
            check_readable(path, encoding, kept)
        else:
            assert sf.info(str(path)).frames == 0
        before = path.read_bytes()
        assert repair_wav(path) == frames  # idempotent
        assert path.read_bytes() == before
        path.unlink()


def test_repair_of_a_file_never_synced(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    data = stereo_frames("PCMA", 500)
    w = WavWriter(path, "PCMA")
    w.append(data)
    crashed = path.read_bytes()
    w.close()
    path.unlink()
    path.write_bytes(crashed + b"\x01")  # a partial frame at the end
    assert repair_wav(path) == 500
    check_readable(path, "PCMA", data)


def test_repair_leaves_a_good_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    with WavWriter(path, "L16") as w:
        w.append(stereo_frames("L16", 100))
    before = path.read_bytes()
    assert repair_wav(path) == 100
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEjunk", b"RIFX" + bytes(60)]
)
def test_repair_rejects_non_wav(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(WavFormatError):
        repair_wav(path)


def test_header_cut_short_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with WavWriter(path, "PCMU") as w:
        w.append(b"\x00\x00")
    raw = path.read_bytes()
    for cut in (20, 40, 52):
        short = tmp_path / f"s{cut}.wav"
        short.write_bytes(raw[:cut])
        with pytest.raises(WavFormatError):
            repair_wav(short)


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_convert_to_l16_keeps_the_decoded_audio(tmp_path: Path, law: str) -> None:
    path = tmp_path / "conv.wav"
    before = stereo_frames(law, 50_000)  # larger than one conversion block
    after = stereo_frames("L16", 1000, seed=3)
    w = WavWriter(path, law)
    w.append(before)
    w.convert_to_l16()
    w.convert_to_l16()  # already L16: no-op
    assert w.encoding == "L16" and w.frames == 50_000
    w.append(after)
    assert w.close() == 51_000
    decoded = expected_samples(law, before).astype("<i2").tobytes()
    check_readable(path, "L16", decoded + after)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["conv.wav"]


def test_convert_failure_keeps_the_original(tmp_path: Path) -> None:
    path = tmp_path / "keep.wav"
    data = stereo_frames("PCMU", 100)
    w = WavWriter(path, "PCMU")
    w.append(data)
    w.sync()
    (tmp_path / ".keep.wav.l16tmp").write_bytes(b"stale")  # O_EXCL refuses it
    with pytest.raises(FileExistsError):
        w.convert_to_l16()
    assert w.encoding == "PCMU"
    w.close()
    check_readable(path, "PCMU", data)


def test_refuses_existing_files_and_symlinks(tmp_path: Path) -> None:
    existing = tmp_path / "exists.wav"
    existing.write_bytes(b"evidence")
    with pytest.raises(FileExistsError):
        WavWriter(existing, "PCMU")
    assert existing.read_bytes() == b"evidence"
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "target.wav")
    with pytest.raises(OSError):
        WavWriter(link, "PCMU")
    assert not (tmp_path / "target.wav").exists()
    with pytest.raises(OSError):
        repair_wav(link)


def test_mono_odd_length_gets_a_pad_byte(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    data = bytes(range(101))
    w = WavWriter(path, "PCMU", channels=1)
    w.append(data)
    w.sync()
    assert int.from_bytes(path.read_bytes()[4:8], "little") == path.stat().st_size - 8
    w.close()
    raw = path.read_bytes()
    assert len(raw) == 58 + 102 and raw[-1] == 0
    check_readable(path, "PCMU", data, channels=1)
    assert repair_wav(path) == 101
    assert path.read_bytes() == raw


def test_append_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = WavWriter(tmp_path / "r.wav", "L16")
    with pytest.raises(ValueError):
        w.append(b"\x00\x00")  # half a stereo L16 frame
    w.append(b"")
    monkeypatch.setattr(wavfile, "_MAX_RIFF", 44 - 8 + 8)
    w.append(bytes(8))
    with pytest.raises(WavLimitError):
        w.append(bytes(4))
    assert w.close() == 2
    assert w.close() == 2
    with pytest.raises(ValueError):
        w.append(bytes(4))


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WavWriter(tmp_path / "x.wav", "G722")
    with pytest.raises(ValueError):
        WavWriter(tmp_path / "y.wav", "PCMU", channels=0)
    assert not (tmp_path / "x.wav").exists()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    blob = os.urandom(3 << 20)
    path.write_bytes(blob)
    assert sha256_file(path) == hashlib.sha256(blob).hexdigest()
