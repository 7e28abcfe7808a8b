from __future__ import annotations

import hashlib
import re
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wire import g711
from wire.wav import room_for_data, wav_header, wav_stream, write_new_file

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


def write_wav(path: Path, encoding: str, data: bytes) -> str:
    pieces = [data[i:i + 999] for i in range(0, len(data), 999)]
    return write_new_file(path, wav_stream(encoding, 2, 8000, len(data), pieces))


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA", "L16"])
def test_formats_read_back_with_soundfile_and_sox(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "call.wav"
    data = stereo_frames(encoding, 8000)
    digest = write_wav(path, encoding, data)
    check_readable(path, encoding, data)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA", "L16"])
def test_header_layout(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "h.wav"
    write_wav(path, encoding, stereo_frames(encoding, 10))
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    tag, channels, rate, byte_rate, block, bits = struct.unpack_from("<HHIIHH", raw, 20)
    assert (channels, rate, byte_rate) == (2, 8000, 8000 * block)
    if encoding == "L16":
        assert (tag, block, bits, len(raw)) == (1, 4, 16, 44 + 40)
    else:
        assert (tag, block, bits) == ({"PCMU": 7, "PCMA": 6}[encoding], 2, 8)
        assert raw[36:38] == b"\x00\x00"  # cbSize
        assert raw[38:50] == b"fact" + (4).to_bytes(4, "little") + (10).to_bytes(4, "little")
        assert len(raw) == 58 + 20
    assert int.from_bytes(raw[4:8], "little") == len(raw) - 8


def test_odd_data_is_padded_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    data = stereo_frames("PCMU", 101)[:101]
    write_new_file(path, wav_stream("PCMU", 1, 8000, len(data), [data]))
    raw = path.read_bytes()
    assert len(raw) == len(wav_header("PCMU", 1, 8000, 101)) + 102 and raw[-1] == 0
    assert int.from_bytes(raw[4:8], "little") == len(raw) - 8
    check_readable(path, "PCMU", data, channels=1)


def test_stream_refuses_a_length_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="whole number of frames"):
        list(wav_stream("PCMU", 2, 8000, 3, [b"abc"]))
    with pytest.raises(ValueError, match="expected 4"):
        list(wav_stream("PCMU", 2, 8000, 4, [b"ab"]))


def test_riff_limit() -> None:
    for encoding, frame in (("PCMU", 2), ("L16", 4)):
        room = room_for_data(encoding, 2)
        riff_overhead = len(wav_header(encoding, 2, 8000, 0)) - 8
        assert room % frame == 0
        assert riff_overhead + room + 1 <= 0xFFFFFFFF < riff_overhead + room + frame + 1


def test_new_files_never_overwrite_or_follow_links(tmp_path: Path) -> None:
    existing = tmp_path / "a.wav"
    existing.write_bytes(b"evidence")
    with pytest.raises(FileExistsError):
        write_new_file(existing, [b"x"])
    assert existing.read_bytes() == b"evidence"
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        write_new_file(link, [b"x"])
    assert not (tmp_path / "elsewhere").exists()


def test_unsupported_encoding() -> None:
    with pytest.raises(ValueError):
        list(wav_stream("G722", 2, 8000, 0, []))
