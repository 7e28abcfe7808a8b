"""The announcement audio: the shipped default is what its script makes, any WAV/FLAC becomes
G.711, and what cannot be used is refused with the file and the reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from announcer.audio import DEFAULT_AUDIO, AudioError, load_announcement, load_audio
from policy.announcement import Announcement
from wire.g711 import ALAW_TO_PCM16, ULAW_TO_PCM16, decode, encode
from tests.interop import REPO, need


def test_the_script_reproduces_the_shipped_default_byte_for_byte(tmp_path: Path) -> None:
    need("espeak-ng")
    need("sox")
    out = tmp_path / "again.wav"
    subprocess.run([sys.executable, "-m", "announcer.make_default_announcement", str(out)], cwd=REPO, check=True,
                   timeout=120)
    assert out.read_bytes() == DEFAULT_AUDIO.read_bytes()


def test_default_is_8k_mono_and_loads() -> None:
    info = soundfile.info(DEFAULT_AUDIO)
    assert (info.samplerate, info.channels) == (8000, 1)
    audio = load_announcement(Announcement())
    assert audio.path == DEFAULT_AUDIO and 5 < audio.seconds < 10
    assert len(audio.g711["PCMU"]) % 160 == 0 and len(audio.g711["PCMU"]) == len(audio.g711["PCMA"])
    pcm = np.frombuffer(decode("PCMU", audio.g711["PCMU"]), "<i2")
    original = soundfile.read(DEFAULT_AUDIO, dtype="int16")[0]
    assert np.max(np.abs(pcm[:len(original)].astype(int) - original)) <= 1024  # G.711 quantisation only


@pytest.mark.parametrize(("law", "table"), [("PCMU", ULAW_TO_PCM16), ("PCMA", ALAW_TO_PCM16)])
def test_encoder_inverts_the_reference_decoder(law: str, table: np.ndarray) -> None:
    codes = np.arange(256)
    back = np.frombuffer(encode(law, table[codes]), np.uint8)
    expected = codes.copy()
    if law == "PCMU":
        expected[0x7F] = 0xFF  # mu-law has two zeros; the encoder writes the positive one
    assert np.array_equal(back, expected)


def test_any_rate_and_channels_become_8k(tmp_path: Path) -> None:
    t = np.arange(44100 * 2) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([tone, tone], axis=1), 44100)
    audio = load_audio(path, 30)
    pcm = np.frombuffer(decode("PCMA", audio.g711["PCMA"]), "<i2").astype(float)[:16000]
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 8000 / len(pcm) - 1000) < 2
    assert len(audio.g711["PCMA"]) == 16000


def _write(path: Path, seconds: float, amplitude: float = 0.5) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(path, amplitude * np.sin(2 * np.pi * 440 * t), 8000)
    return path


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: _write(p / "long.wav", 31), "31.0 s long; at most 30 s"),
    (lambda p: _write(p / "short.wav", 0.2), "at least 0.5 s"),
    (lambda p: _write(p / "quiet.wav", 2, 0.0001), "silent"),
    (lambda p: (p / "text.wav").write_text("hello") and p / "text.wav", "not a sound file"),
    (lambda p: p / "missing.wav", "cannot read the file"),
])
def test_unusable_files_are_refused_with_file_and_reason(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path, 30)
    assert info.value.path == path and reason in str(info.value) and str(path) in str(info.value)


def test_relative_audio_is_relative_to_the_policy(tmp_path: Path) -> None:
    _write(tmp_path / "mine.wav", 1)
    audio = load_announcement(Announcement(audio=Path("mine.wav")), tmp_path)
    assert audio.path == tmp_path / "mine.wav"
