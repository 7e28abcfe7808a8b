"""The announcement audio: any file libsndfile reads, made into 8 kHz G.711 once at load time.

Encoding is wire/g711.py's (the ITU-T reference, exact). Resampling is an FFT
brick-wall at 4 kHz over the whole file: announcements are seconds long, and this needs nothing
beyond numpy. Files already at 8 kHz are not resampled at all, so the shipped default is bit-exact.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from policy.announcement import Announcement
from policy.schema import Policy
from wire.g711 import SILENCE_BYTE, encode
from wire.rtp import SAMPLES_PER_FRAME

from .errors import AnnouncerError

__all__ = ["DEFAULT_AUDIO", "AnnouncementAudio", "AudioError", "load_announcement", "load_audio", "load_warning"]

DEFAULT_AUDIO = Path(__file__).resolve().parent / "data" / "default_announcement.wav"
"""What callers hear when the policy names no file (python -m announcer.make_default_announcement)."""

RATE = 8000
MIN_SECONDS = 0.5
SILENT_DBFS = -50.0
MAX_FILE_BYTES = 64 << 20


class AudioError(AnnouncerError):
    """An announcement file the administrator gave that cannot be used; names the file and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def resample(samples: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    if rate == RATE:
        return samples
    n_out = max(1, round(len(samples) * RATE / rate))
    spectrum = np.fft.rfft(samples)
    bins = n_out // 2 + 1
    if len(spectrum) >= bins:
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), dtype=spectrum.dtype)])
    return np.fft.irfft(spectrum, n_out) * (n_out / len(samples))


@dataclass(frozen=True, slots=True)
class AnnouncementAudio:
    """The announcement in both laws, whole 20 ms frames, and the source file's hash."""

    path: Path
    sha256: str
    seconds: float
    g711: dict[str, bytes]


def load_audio(path: Path, max_seconds: float) -> AnnouncementAudio:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AudioError(path, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise AudioError(path, "file is larger than 64 MiB")
    try:
        with soundfile.SoundFile(path) as sf:
            rate = sf.samplerate
            samples = sf.read(dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(path, f"not a sound file that can be read (WAV, FLAC...): {exc}") from None
    if samples.size == 0:
        raise AudioError(path, "the file holds no audio")
    seconds = len(samples) / rate
    if seconds > max_seconds:
        raise AudioError(path, f"the announcement is {seconds:.1f} s long; at most {max_seconds:g} s is allowed")
    if seconds < MIN_SECONDS:
        raise AudioError(path, f"the announcement is {seconds:.2f} s long; at least {MIN_SECONDS} s is needed")
    mono = resample(samples.mean(axis=1), rate)
    peak = float(np.max(np.abs(mono)))
    if peak <= 10 ** (SILENT_DBFS / 20):
        raise AudioError(path, f"the announcement is silent (peak below {SILENT_DBFS:g} dBFS)")
    pcm = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
    g711 = {}
    for law in ("PCMU", "PCMA"):
        data = encode(law, pcm)
        short = -len(data) % SAMPLES_PER_FRAME
        g711[law] = data + bytes([SILENCE_BYTE[law]]) * short
    return AnnouncementAudio(path, hashlib.sha256(raw).hexdigest(), seconds, g711)


def load_announcement(rules: Announcement, base: Path | None = None) -> AnnouncementAudio:
    """The policy's announcement as G.711.  A relative path is relative to the policy file's
    folder (base); no path means the shipped default.  Raises AudioError naming the file and
    the reason, so a reload can refuse the policy and keep the old one."""
    path = rules.audio or DEFAULT_AUDIO
    if not path.is_absolute() and base is not None:
        path = base / path
    return load_audio(path, rules.max_seconds)


def load_warning(policy: Policy, base: Path | None = None) -> AnnouncementAudio | None:
    """The warning the policy names for numbers marked as harassment (harassment.warning), as
    G.711, held to the notice's length limit; None when the policy names none. Read and checked
    with the notice, so a reload with a broken warning file is refused like one with a broken
    notice."""
    rule = policy.harassment.warning if policy.harassment is not None else None
    if rule is None:
        return None
    path = rule.announcement if rule.announcement.is_absolute() or base is None else base / rule.announcement
    return load_audio(path, policy.announcement.max_seconds)
