"""Calls in codecs other than G.711, made with real encoders: speech from espeak-ng (resampled by
sox), encoded by libbcg729 (G.729), libopus (Opus) and libg722 (G.722), cut into RTP packets
inside a whole SIP call; and the measures the decoding tests judge them by."""
from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from tests.builders import PBX, TRUNK, rtp, udp_frame
from tests.call_frames import T0, bye, signalling
from tests.interop import need

SENTENCE = ("The recording of this call is kept as evidence. Every call must be playable, "
            "whatever codec the two telephones agreed on.")
PACKET_SECONDS = 0.02


def speech(tmp_path: Path, rate: int) -> npt.NDArray[np.int16]:
    """About eight seconds of speech at `rate`, mono 16-bit."""
    raw, out = tmp_path / "espeak.wav", tmp_path / f"speech{rate}.wav"
    subprocess.run([need("espeak-ng"), "-v", "en", "-s", "150", "-w", str(raw), SENTENCE], check=True, timeout=60)
    subprocess.run([need("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True, timeout=60)
    samples, got = soundfile.read(out, dtype="int16")
    assert got == rate
    return samples


def g729_frames(pcm: npt.NDArray[np.int16], vad: bool = False) -> list[bytes]:
    """G.729 frames of 8 kHz audio, one per 10 ms, from libbcg729's encoder: 10 bytes each, or
    with `vad` (Annex B) 2 bytes for a SID frame and none where nothing is sent."""
    lib = ctypes.CDLL("libbcg729.so.0")
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = (ctypes.c_uint8,)
    lib.closeBcg729EncoderChannel.argtypes = (ctypes.c_void_p,)
    lib.bcg729Encoder.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_uint8))
    state = lib.initBcg729EncoderChannel(int(vad))
    frames = []
    size = ctypes.c_uint8()
    out = ctypes.create_string_buffer(10)
    for start in range(0, len(pcm) - 79, 80):
        block = np.ascontiguousarray(pcm[start:start + 80], dtype=np.int16)
        lib.bcg729Encoder(state, block.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), out, ctypes.byref(size))
        frames.append(out.raw[:size.value])
    lib.closeBcg729EncoderChannel(state)
    return frames


def opus_packets(pcm: npt.NDArray[np.int16], rate: int, bitrate: int = 24000) -> list[bytes]:
    """20 ms Opus packets (libopus, VoIP mode, in-band FEC on) of mono audio at `rate`."""
    import opuslib_next

    encoder = opuslib_next.Encoder(rate, 1, opuslib_next.APPLICATION_VOIP)
    encoder.bitrate = bitrate
    encoder.inband_fec = 1
    encoder.packet_loss_perc = 10
    step = int(rate * PACKET_SECONDS)
    return [encoder.encode(pcm[i:i + step].astype("<i2").tobytes(), step) for i in range(0, len(pcm) - step + 1, step)]


def g722_payloads(pcm: npt.NDArray[np.int16]) -> list[bytes]:
    """20 ms G.722 payloads (libg722, 64 kbit/s) of 16 kHz audio."""
    from G722 import G722

    encoder = G722(16000, 64000)
    step = int(16000 * PACKET_SECONDS)
    return [encoder.encode(np.ascontiguousarray(pcm[i:i + step], dtype=np.int16))
            for i in range(0, len(pcm) - step + 1, step)]


def codec_call(payloads: Sequence[bytes], *, pt: int, rtpmap: str, clock: int,
               lose: frozenset[int] = frozenset(), ptime: float = PACKET_SECONDS
               ) -> tuple[list[tuple[float, bytes]], float]:
    """An inbound call answered in one codec, the trunk sending `payloads` (one per `ptime`; an
    empty one, or one numbered in `lose`, is not sent), then a BYE; and the time the first
    packet left."""
    first = T0 + 1.05
    step = round(clock * ptime)
    frames = signalling(answer_codec=(pt, rtpmap))
    seq = 0
    for n, payload in enumerate(payloads):
        if payload and n not in lose:
            frames.append((first + n * ptime,
                           udp_frame(TRUNK, 20000, PBX, 40000, rtp(seq, n * step, 0x5EED, payload, pt), ident=n)))
        seq += bool(payload)  # silence suppression sends nothing and skips no sequence number
    return frames + bye(first + len(payloads) * ptime + 0.5), first


def aligned(recorded: npt.NDArray[np.int16], source: npt.NDArray[np.int16], around: int,
            reach: int) -> tuple[int, float]:
    """Where `source` lies in `recorded` (searched within `reach` samples of `around`) and the
    normalised correlation there."""
    a = recorded.astype(np.float64)
    s = source.astype(np.float64)
    best, score = around, -1.0
    for offset in range(max(0, around - reach), around + reach + 1):
        part = a[offset:offset + len(s)]
        ref = s[:len(part)]
        norm = np.sqrt(np.dot(part, part) * np.dot(ref, ref))
        value = float(np.dot(part, ref) / norm) if norm else 0.0
        if value > score:
            best, score = offset, value
    return best, score


def snr_db(recorded: npt.NDArray[np.int16], reference: npt.NDArray[np.int16]) -> float:
    """Signal to error ratio of `recorded` against `reference` (same length), in dB."""
    ref = reference.astype(np.float64)
    error = recorded.astype(np.float64) - ref
    noise = float(np.dot(error, error))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.dot(ref, ref)) / noise)
