"""A recording's files at rest: its audio and side captures, each in a vault.

The vault (storage/vault.py) holds the bare audio data, encrypted under a
key of the recording's own; the WAV header is made when the recording is
read (wire/wav.py), so nothing is ever rewritten in place while a
call is recorded, a crash leaves every complete record readable, and
erasing the file's key is enough to make the audio unrecoverable.

Each file's authenticated metadata names the recording it belongs to, so a
file moved under another recording's row is refused rather than handed out.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wire import g711
from wire.rtppcap import pcap_file_header
from wire.wav import WavLimitError, frame_bytes, room_for_data, wav_stream

from .errors import StorageError
from .keys import MasterKey
from .vault import VaultError, VaultReader, VaultWriter, open_vault

WAV_KIND = "wav-data"
SIDE_KIND = "rtp-pcap"
_CONVERT_BLOCK = 1 << 16


class AudioFileError(StorageError):
    """A stored file is not what its row says it is."""


class AudioWriter:
    """The audio of one recording being written, as whole stereo frames."""

    def __init__(self, path: Path, master: MasterKey, record_id: str, encoding: str,
                 channels: int = 2, rate: int = 8000) -> None:
        self.path = path
        self.encoding = encoding
        self.channels = channels
        self._block = frame_bytes(encoding, channels)
        self._room = room_for_data(encoding, channels)
        self._length = 0
        self._vault = VaultWriter(path, master, {"kind": WAV_KIND, "record": record_id, "encoding": encoding,
                                                 "channels": channels, "rate": rate})

    @property
    def frames(self) -> int:
        return self._length // self._block

    def append(self, data: bytes) -> None:
        """Whole frames only (ValueError); WavLimitError past 4 GiB."""
        if len(data) % self._block:
            raise ValueError("data is not a whole number of frames")
        if self._length + len(data) > self._room:
            raise WavLimitError("the recording would exceed the 4 GiB RIFF size limit")
        self._vault.append(data)
        self._length += len(data)

    def sync(self, durable: bool) -> None:
        """Write what is buffered as one record; after this a crash keeps it."""
        self._vault.flush(durable)

    def append_synced(self, data: bytes) -> None:
        """`append(data)` then `sync(durable=False)`, raising where they
        would: the record sealed straight from `data` when the vault holds
        nothing else (`VaultWriter.write_through`)."""
        if not self._vault.writes_through(len(data)):
            self.append(data)
            self.sync(durable=False)
            return
        if len(data) % self._block:
            raise ValueError("data is not a whole number of frames")
        if self._length + len(data) > self._room:
            raise WavLimitError("the recording would exceed the 4 GiB RIFF size limit")
        self._length += len(data)
        self._vault.write_through(data)

    def close(self) -> int:
        self._vault.close()
        return self.frames


class SideWriter:
    """A capture of packets callrec cannot decode, kept verbatim."""

    def __init__(self, path: Path, master: MasterKey, record_id: str, channel: int) -> None:
        self.path = path
        self._vault = VaultWriter(path, master, {"kind": SIDE_KIND, "record": record_id, "channel": channel})
        self._vault.append(pcap_file_header())

    def write(self, record: bytes) -> None:
        self._vault.append(record)

    def sync(self, durable: bool) -> None:
        self._vault.flush(durable)

    def close(self) -> None:
        self._vault.close()


@dataclass(frozen=True, slots=True)
class StoredAudio:
    """What a stored audio file holds, read back and authenticated."""

    encoding: str
    channels: int
    rate: int
    data_bytes: int
    sealed: bool

    @property
    def frames(self) -> int:
        return self.data_bytes // frame_bytes(self.encoding, self.channels)

    @property
    def format(self) -> str:
        """What the row's audio_format says: see `audio_format`."""
        return audio_format(self.encoding, self.rate)


def audio_format(encoding: str, rate: int) -> str:
    """The encoding alone at 8 kHz ('PCMU', 'PCMA', 'L16', as rows always
    said), with the rate as in an SDP rtpmap otherwise ('L16/16000')."""
    return encoding if rate == 8000 else f"{encoding}/{rate}"


def _open(path: Path, master: MasterKey, record_id: str, kind: str, allow_torn: bool = False) -> VaultReader:
    reader = open_vault(path, master, allow_torn=allow_torn)
    meta = reader.meta
    if meta.get("kind") != kind or meta.get("record") != record_id:
        reader.close()
        raise AudioFileError(f"{path.name} belongs to {meta.get('record')!r} ({meta.get('kind')}), "
                             f"not to recording {record_id}")
    return reader


def _chunks(reader: VaultReader) -> Iterator[bytes]:
    """The reader's plaintext, its file closed when the stream ends or is dropped: a verify or a
    sweep reads thousands of files and must not keep one descriptor each (nor a medium busy)."""
    try:
        yield from reader.chunks()
    finally:
        reader.close()


def describe(path: Path, master: MasterKey, record_id: str, allow_torn: bool = False) -> StoredAudio:
    """`allow_torn` reads a file a full disk kept from sealing, up to its
    last complete record."""
    with _open(path, master, record_id, WAV_KIND, allow_torn) as reader:
        return _stored(reader)


def _stored(reader: VaultReader) -> StoredAudio:
    """What an opened audio vault holds, from its authenticated header and its framing."""
    meta = reader.meta
    encoding, channels = str(meta["encoding"]), int(meta["channels"])
    length = reader.plaintext_length()
    whole = length - length % frame_bytes(encoding, channels)
    return StoredAudio(encoding, channels, int(meta["rate"]), whole, reader.sealed)


def _bounded(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """The first `limit` bytes: a crash may have cut the last frame."""
    left = limit
    for chunk in chunks:
        if left <= 0:
            return
        piece = chunk[:left]
        left -= len(piece)
        yield piece


def wav_bytes(path: Path, master: MasterKey, record_id: str,
              allow_torn: bool = False) -> tuple[StoredAudio, Iterator[bytes]]:
    """The recording as a WAV file, streamed, each record authenticated."""
    audio = describe(path, master, record_id, allow_torn)
    reader = _open(path, master, record_id, WAV_KIND, allow_torn)
    stream = wav_stream(audio.encoding, audio.channels, audio.rate, audio.data_bytes,
                        _bounded(_chunks(reader), audio.data_bytes))
    return audio, stream


def wav_digest(path: Path, master: MasterKey, record_id: str, allow_torn: bool = False) -> tuple[StoredAudio, str]:
    """The SHA-256 of the WAV the recording hands out: what is sealed.  The
    final record is empty, so sealing the file later does not change it.

    The very bytes `wav_bytes` streams, read back from disk and every
    record authenticated, but from one opening of the vault (its header,
    key and framing read once, not once to describe it and again to read
    it): sealing does this for every recording at its end."""
    with _open(path, master, record_id, WAV_KIND, allow_torn) as reader:
        audio = _stored(reader)
        digest = hashlib.sha256()
        for chunk in wav_stream(audio.encoding, audio.channels, audio.rate, audio.data_bytes,
                                _bounded(reader.chunks(), audio.data_bytes)):
            digest.update(chunk)
    return audio, digest.hexdigest()


def side_bytes(path: Path, master: MasterKey, record_id: str, allow_torn: bool = False) -> Iterator[bytes]:
    return _chunks(_open(path, master, record_id, SIDE_KIND, allow_torn))


def side_digest(path: Path, master: MasterKey, record_id: str, allow_torn: bool = False) -> str:
    digest = hashlib.sha256()
    for chunk in side_bytes(path, master, record_id, allow_torn):
        digest.update(chunk)
    return digest.hexdigest()


def convert_to_l16(old: Path, new: Path, master: MasterKey, record_id: str) -> AudioWriter:
    """A new vault holding the sealed old one's audio as 16-bit PCM, open
    for more: used when a call switches G.711 law mid-call.  The caller
    points the row at the new file before it erases the old one, so a crash
    leaves one complete copy that the row names."""
    audio = describe(old, master, record_id)
    writer = AudioWriter(new, master, record_id, "L16", audio.channels, audio.rate)
    try:
        chunks = _bounded(_chunks(_open(old, master, record_id, WAV_KIND)), audio.data_bytes)
        pending = b""
        for chunk in chunks:
            pending += chunk
            while len(pending) >= _CONVERT_BLOCK:
                writer.append(g711.decode(audio.encoding, pending[:_CONVERT_BLOCK]))
                pending = pending[_CONVERT_BLOCK:]
        if pending:
            writer.append(g711.decode(audio.encoding, pending))
        writer.sync(durable=True)
    except BaseException:
        writer.close()
        new.unlink(missing_ok=True)
        raise
    return writer


__all__ = ["AudioFileError", "AudioWriter", "SideWriter", "StoredAudio", "VaultError", "audio_format", "convert_to_l16",
           "describe", "side_bytes", "side_digest", "wav_bytes", "wav_digest"]
