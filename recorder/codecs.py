"""Turning the payloads of codecs other than the file's G.711 into 16-bit PCM, sans-I/O.

A recording must be playable whatever the phones agreed on, so G.722, G.729
and Opus are decoded into the call's WAV (their packets are also kept verbatim
in side files, as evidence of what was on the wire). The decoding is done by
well-kept libraries, not by us: G.722 by sippy's libg722 (the `G722` package,
bit-exact against the ITU test vectors), G.729 by Belledonne's libbcg729 (the
Debian package, through a small ctypes wrapper because no maintained Python
binding exists) and Opus by libopus (the Debian package, through the
`opuslib_next` binding). A library that cannot be loaded leaves its codec
undecoded (kept in the side file, named in the row's `undecoded`) rather
than stopping the recorder: G.711 calls never depend on it.

Everything here is pure: payload bytes and positions in, PCM and positions
out, with each stream's decoder state kept per (call, channel, codec) and
reset when the sender (SSRC) changes.

Rates. A call whose first audio is wideband (G.722, Opus) is recorded at
16 kHz, every other call at 8 kHz, so that a G.711 call keeps its bytes as
they were on the wire. Positions arrive on the 8 kHz timeline of
recorder/stream.py (G.722's RTP clock is 8000 although its audio is 16 kHz,
RFC 3551 4.5.2; Opus's is 48000, RFC 7587) and are scaled to the file's rate.
Codecs decode at the file's rate where the library can (libg722 has an 8 kHz
mode, libopus decodes at either); 8 kHz audio in a 16 kHz file (G.711, G.729)
is interpolated by a half-band filter whose delay is taken off its position
(the original samples are kept, at the even places).

Loss. When a packet arrives after a gap, the first MAX_CONCEAL_SECONDS of the
gap are filled by the codec's own concealment (Opus: its PLC, and its in-band
FEC for the last lost frame when the sender put one in and the gap is short
enough for the concealment to reach it; G.729: frame erasure, which also
continues comfort noise after a SID frame); G.711 and G.722 have none in
these libraries, so their gaps stay silent, as does the rest of a longer gap
of any codec: made-up audio is bounded, and counted (`concealed_ms`).
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from wire import g711

from .errors import RecorderError

__all__ = [
    "MAX_CONCEAL_SECONDS",
    "TIMELINE_RATE",
    "CallDecoders",
    "CodecUnavailable",
    "Upsampler",
    "file_rate",
]

TIMELINE_RATE: Final = 8000
"""The rate of the positions recorder/stream.py gives (its streams run at 8 kHz)."""
WIDEBAND_RATE: Final = 16000
WIDEBAND: Final = frozenset(("G722", "OPUS"))
"""Codecs whose audio is 16 kHz: a call that starts with one is recorded at 16 kHz."""
MAX_CONCEAL_SECONDS: Final = 0.1
"""How much of a gap a codec's concealment fills; the rest stays silent."""
_MAX_OPUS_SECONDS: Final = 0.12
"""RFC 6716: an Opus packet holds at most 120 ms."""
_G729_FRAME: Final = 10
_G729_SID: Final = 2
_G729_SAMPLES: Final = 80

_HALF_TAPS: Final = 12
"""Input samples on each side of the interpolated point (the filter's reach)."""
_KAISER_BETA: Final = 8.0
DELAY: Final = 2 * _HALF_TAPS
"""The interpolator's delay in output (16 kHz) samples; its output is placed this much earlier."""


def file_rate(encoding: str) -> int:
    """The rate a recording is made at when its first audio is `encoding`."""
    return WIDEBAND_RATE if encoding in WIDEBAND else TIMELINE_RATE


class CodecUnavailable(RecorderError):
    """The library that decodes a codec could not be loaded."""


def _pcm(samples: npt.ArrayLike) -> bytes:
    """Little-endian 16-bit bytes, whatever the host's order."""
    return np.asarray(samples, dtype=np.int16).astype("<i2", copy=False).tobytes()


def _odd_phase() -> npt.NDArray[np.float64]:
    """Taps of the half-band interpolator's odd phase: a Kaiser-windowed sinc
    sampled half-way between the input samples (its even phase is the input
    itself, so the original samples come out unchanged)."""
    taps = np.sinc(np.arange(-_HALF_TAPS, _HALF_TAPS) + 0.5) * np.kaiser(2 * _HALF_TAPS, _KAISER_BETA)
    return taps / taps.sum()


_ODD: Final = _odd_phase()[::-1].copy()


class Upsampler:
    """8 kHz to 16 kHz by half-band interpolation, keeping its history between
    the chunks of one contiguous run.

    The output for a chunk that starts at input index n begins at output index
    2n - DELAY (the filter's delay taken off) and runs 2 * DELAY samples past
    the chunk's end: the chunk interpolated as if silence followed. The next
    chunk of the run starts DELAY samples before that end and overwrites the
    guess with what did follow. So a run's end is in the file as soon as its
    last chunk is, however long the silence after it, and nothing is held back
    that the end of a call or a commit could leave out."""

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history = np.zeros(2 * _HALF_TAPS, dtype=np.float64)

    def process(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if not len(x):
            return b""
        known = np.concatenate((self._history, x))
        self._history = known[-2 * _HALF_TAPS:]
        ext = np.concatenate((known, np.zeros(2 * _HALF_TAPS)))
        pairs = len(x) + 2 * _HALF_TAPS
        out = np.empty(2 * pairs, dtype=np.float64)
        # Output pair j stands for input time n - HALF_TAPS + j (+ 1/2 for the odd one).
        out[0::2] = ext[_HALF_TAPS:_HALF_TAPS + pairs]
        out[1::2] = np.convolve(ext[1:], _ODD, mode="valid")[:pairs]
        return _pcm(np.clip(np.rint(out), -32768, 32767))

    def reset(self) -> None:
        """A new run: silence before it."""
        self._history[:] = 0


class _Codec(Protocol):
    rate: int

    def decode(self, payload: bytes) -> bytes: ...
    def conceal(self, samples: int, following: bytes) -> bytes: ...


class _G711:
    """G.711 in a 16 kHz file: decoded here and interpolated; no concealment."""

    def __init__(self, law: str, rate: int) -> None:
        self.rate = TIMELINE_RATE
        self._table = g711.table(law)

    def decode(self, payload: bytes) -> bytes:
        return _pcm(self._table[np.frombuffer(payload, dtype=np.uint8)])

    def conceal(self, samples: int, following: bytes) -> bytes:
        return b""


class _G722:
    """libg722 (bit-exact G.722 at 64 kbit/s, the rate RTP carries, RFC 3551);
    16 kHz, or the low band alone at 8 kHz for an 8 kHz file."""

    def __init__(self, encoding: str, rate: int) -> None:
        try:
            from G722 import G722
        except ImportError as exc:
            raise CodecUnavailable(f"G.722 decoder not installed: {exc}") from exc
        self.rate = rate
        self._codec = G722(rate, 64000, use_numpy=False)

    def decode(self, payload: bytes) -> bytes:
        return _pcm(self._codec.decode(payload))

    def conceal(self, samples: int, following: bytes) -> bytes:
        return b""


@cache
def _bcg729() -> ctypes.CDLL:
    """Debian's libbcg729, with the 1.1 API's prototypes (bcg729/decoder.h)."""
    try:
        lib = ctypes.CDLL("libbcg729.so.0")
    except OSError as exc:
        raise CodecUnavailable(f"libbcg729 not installed: {exc}") from exc
    lib.initBcg729DecoderChannel.restype = ctypes.c_void_p
    lib.initBcg729DecoderChannel.argtypes = ()
    lib.closeBcg729DecoderChannel.restype = None
    lib.closeBcg729DecoderChannel.argtypes = (ctypes.c_void_p,)
    lib.bcg729Decoder.restype = None
    lib.bcg729Decoder.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint8, ctypes.c_uint8,
                                  ctypes.c_uint8, ctypes.c_uint8, ctypes.POINTER(ctypes.c_int16))
    return lib


class _G729:
    """libbcg729 (G.729 Annex A with Annex B silence frames). An RTP payload is
    whole 10-byte frames, the last possibly a 2-byte SID frame (RFC 3551 4.5.6)."""

    def __init__(self, encoding: str, rate: int) -> None:
        self.rate = TIMELINE_RATE
        self._lib = _bcg729()
        self._state = self._lib.initBcg729DecoderChannel()
        if not self._state:
            raise CodecUnavailable("libbcg729 could not make a decoder")
        self._out = (ctypes.c_int16 * _G729_SAMPLES)()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state:
            self._lib.closeBcg729DecoderChannel(state)

    def _frame(self, frame: bytes, erased: int, sid: int) -> bytes:
        self._lib.bcg729Decoder(self._state, frame, len(frame), erased, sid, 0, self._out)
        return _pcm(np.ctypeslib.as_array(self._out))

    def decode(self, payload: bytes) -> bytes:
        whole, rest = divmod(len(payload), _G729_FRAME)
        if rest not in (0, _G729_SID) or not payload:
            raise ValueError(f"a G.729 payload of {len(payload)} bytes")
        frames = [self._frame(payload[i:i + _G729_FRAME], 0, 0)
                  for i in range(0, whole * _G729_FRAME, _G729_FRAME)]
        if rest:
            frames.append(self._frame(payload[-_G729_SID:], 0, 1))
        return b"".join(frames)

    def conceal(self, samples: int, following: bytes) -> bytes:
        """Frame erasure: the decoder extrapolates speech, or continues the
        comfort noise after a SID frame."""
        return b"".join(self._frame(bytes(_G729_FRAME), 1, 0) for _ in range(samples // _G729_SAMPLES))


class _Opus:
    """libopus, decoding to mono at the file's rate (a stereo stream is mixed)."""

    def __init__(self, encoding: str, rate: int) -> None:
        try:
            import opuslib_next
            from opuslib_next.api import decoder as api
        except Exception as exc:  # the binding raises a bare Exception when libopus is missing
            raise CodecUnavailable(f"libopus or its binding not installed: {exc}") from exc
        self.rate = rate
        self._api = api
        self._error = opuslib_next.OpusError
        self._codec = opuslib_next.Decoder(rate, 1)
        self._most = round(rate * _MAX_OPUS_SECONDS)
        self._quantum = rate // 400

    def decode(self, payload: bytes) -> bytes:
        if not payload:
            raise ValueError("an empty Opus payload")  # libopus would take it for a lost packet
        try:
            return bytes(self._codec.decode(payload, self._most))
        except self._error as exc:
            raise ValueError(f"an Opus packet libopus refuses: {exc}") from exc

    def conceal(self, samples: int, following: bytes) -> bytes:
        """PLC for the gap; its last frame from the next packet's in-band FEC
        (libopus falls back to PLC when the packet carries none). libopus
        conceals in steps of 2.5 ms; a remainder stays silent."""
        samples -= samples % self._quantum
        try:
            frame = self._api.get_nb_samples(self._codec.decoder_state, following, len(following))
        except self._error:
            frame = 0
        fec = frame if 0 < frame <= samples else 0
        out = b""
        if samples - fec:
            out = bytes(self._codec.decode(b"", samples - fec))
        if fec:
            out += bytes(self._codec.decode(following, fec, decode_fec=True))
        return out


_CODECS: Final[dict[str, Callable[[str, int], _Codec]]] = {
    "PCMU": _G711,
    "PCMA": _G711,
    "G722": _G722,
    "G729": _G729,
    "OPUS": _Opus,
}


class _Channel:
    """One codec on one channel: a decoder, its interpolator, and where its
    audio ended (file position) for loss concealment."""

    __slots__ = ("_codec", "_encoding", "_factor", "_rate", "_up", "concealed", "errors", "expected", "ssrc")

    def __init__(self, encoding: str, rate: int) -> None:
        self._encoding = encoding
        self._rate = rate
        self._codec = _CODECS[encoding](encoding, rate)
        self._factor = rate // self._codec.rate
        self._up = Upsampler() if self._factor > 1 else None
        self.ssrc = -1
        self.expected: int | None = None
        self.concealed = 0
        self.errors = 0

    def feed(self, position: int, ssrc: int, payload: bytes) -> list[tuple[int, bytes]]:
        """The PCM chunks (file position, samples) one packet gives."""
        out: list[tuple[int, bytes]] = []
        expected = self.expected
        if ssrc != self.ssrc:
            # A new sender (or a restarted one): a decoder as new.
            if self.ssrc != -1:
                self._end_run()
                self._codec = _CODECS[self._encoding](self._encoding, self._rate)
            self.ssrc = ssrc
            expected = None
        elif expected is not None and position > expected:
            gap = position - expected
            bound = round(MAX_CONCEAL_SECONDS * self._rate)
            # The next packet helps (Opus FEC) only where the concealment reaches it.
            filler = self._codec.conceal(min(gap, bound) // self._factor, payload if gap <= bound else b"")
            if filler:
                self._emit(out, expected, filler, self._up)
                self.concealed += len(filler) // 2 * self._factor
                self.expected = expected = expected + len(filler) // 2 * self._factor
            if position > expected:
                # Silence remains between the runs: the interpolator starts the next one anew.
                self._end_run()
                expected = None
        try:
            pcm = self._codec.decode(payload)
        except ValueError:
            self.errors += 1
            return out
        if expected is not None and position < expected:
            # A late packet: placed where it belongs, with an interpolator of
            # its own so that the run it arrived in stays continuous.
            self._emit(out, position, pcm, Upsampler() if self._up is not None else None)
            return out
        self._emit(out, position, pcm, self._up)
        self.expected = position + len(pcm) // 2 * self._factor
        return out

    def _emit(self, out: list[tuple[int, bytes]], position: int, pcm: bytes, up: Upsampler | None) -> None:
        if up is None:
            out.append((position, pcm))
        else:
            out.append((position - DELAY, up.process(pcm)))

    def _end_run(self) -> None:
        if self._up is not None:
            self._up.reset()
        self.expected = None


class CallDecoders:
    """The decoders of one call's two channels, made on a codec's first packet."""

    __slots__ = ("_channels", "rate", "unavailable")

    def __init__(self, rate: int) -> None:
        if rate not in (TIMELINE_RATE, WIDEBAND_RATE):
            raise ValueError(f"unsupported file rate {rate}")
        self.rate = rate
        self._channels: tuple[dict[str, _Channel], dict[str, _Channel]] = ({}, {})
        self.unavailable: set[str] = set()

    def decode(self, channel: int, position: int, encoding: str, rtp: bytes, payload: bytes
               ) -> list[tuple[int, bytes]] | None:
        """PCM chunks (file position, little-endian 16-bit samples) for one
        packet at `position` (8 kHz timeline); None when `encoding` has no
        decoder here (the caller keeps it as undecoded)."""
        decoders = self._channels[channel]
        state = decoders.get(encoding)
        if state is None:
            if encoding not in _CODECS or encoding in self.unavailable:
                return None
            try:
                state = decoders[encoding] = _Channel(encoding, self.rate)
            except CodecUnavailable:
                self.unavailable.add(encoding)
                return None
        ssrc = int.from_bytes(rtp[8:12], "big")
        try:
            return state.feed(position * self.rate // TIMELINE_RATE, ssrc, payload)
        except CodecUnavailable:  # a new sender's decoder could not be made
            del decoders[encoding]
            self.unavailable.add(encoding)
            return None

    def stats(self, channel: int) -> dict[str, int]:
        """What decoding added to a channel's report: concealed audio and
        payloads the decoder refused (counted and skipped)."""
        decoders = self._channels[channel].values()
        return {
            "concealed_ms": sum(d.concealed for d in decoders) * 1000 // self.rate,
            "decode_errors": sum(d.errors for d in decoders),
        }
