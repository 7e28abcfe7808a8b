"""A recording sink that keeps everything in memory, so the recorder engine can be tested alone.

It implements `recorder.record.RecordingSink` as storage does, minus files, keys and the
index: what the engine hands over (snapshots, interleaved frames, side packets, checkpoints,
results) is kept as it came, so a test can tell a recorder fault from a storage fault.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from recorder.record import CallResult, CallSnapshot
from wire import g711


@dataclass(eq=False)
class MemoryRecording:
    """One recording's audio as interleaved frames, in the encoding it has now."""

    started: CallSnapshot
    origin: float
    encoding: str
    rate: int = 8000
    audio: bytearray = field(default_factory=bytearray)
    side: list[tuple[int, float, bytes, tuple[str, int, str, int]]] = field(default_factory=list)
    checkpoints: int = 0
    conversions: int = 0
    result: CallResult | None = None

    def append(self, data: bytes) -> None:
        assert self.result is None, "audio after close"
        self.audio += data

    def convert_to_l16(self) -> None:
        """As storage does: what was written in G.711 becomes 16-bit PCM."""
        self.audio = bytearray(g711.decode(self.encoding, bytes(self.audio)))
        self.encoding = "L16"
        self.conversions += 1

    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None:
        self.side.append((channel, arrival, rtp, flow))

    def checkpoint(self) -> None:
        self.checkpoints += 1

    def close(self, result: CallResult) -> None:
        assert self.result is None, "closed twice"
        self.result = result

    def channel(self, index: int) -> bytes:
        """One channel's codes (G.711) or little-endian samples (L16)."""
        width = 2 if self.encoding == "L16" else 1
        frame = 2 * width
        return b"".join(self.audio[i + index * width:i + (index + 1) * width]
                        for i in range(0, len(self.audio) - frame + 1, frame))


@dataclass
class MemorySink:
    begun: list[tuple[CallSnapshot, float]] = field(default_factory=list)
    recordings: list[MemoryRecording] = field(default_factory=list)
    without_audio: list[CallResult] = field(default_factory=list)

    def begin(self, call: CallSnapshot, origin: float) -> None:
        self.begun.append((call, origin))

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> MemoryRecording:
        assert any(started.serial == call.serial for started, _ in self.begun), "audio before begin"
        recording = MemoryRecording(call, origin, encoding, rate)
        self.recordings.append(recording)
        return recording

    def finish_without_audio(self, result: CallResult) -> None:
        self.without_audio.append(result)
