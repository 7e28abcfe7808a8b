"""A recording's audio at rest: encrypted, read back as the WAV that was
sealed, and still readable up to the last record after a crash."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wire import g711
from storage.audiofile import (AudioFileError, AudioWriter, SideWriter, convert_to_l16, describe, side_bytes,
                               wav_bytes, wav_digest)
from storage.keys import MasterKey
from storage.vault import VaultError, repair_vault

MASTER = MasterKey(bytes(range(32)))


def frames(count: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=2 * count, dtype=np.uint8).tobytes()


def wav(path: Path, record_id: str = "r1") -> bytes:
    _, stream = wav_bytes(path, MASTER, record_id)
    return b"".join(stream)


def test_written_audio_reads_back_as_the_sealed_wav(tmp_path: Path) -> None:
    path = tmp_path / "r1.wav.vault"
    writer = AudioWriter(path, MASTER, "r1", "PCMU")
    data = frames(24000)
    for i in range(0, len(data), 3200):
        writer.append(data[i:i + 3200])
        writer.sync(durable=False)
    assert writer.close() == 24000
    blob = wav(path)
    audio, digest = wav_digest(path, MASTER, "r1")
    assert digest == hashlib.sha256(blob).hexdigest() and audio.sealed and audio.frames == 24000
    read, rate = sf.read(io.BytesIO(blob), dtype="int16")
    assert rate == 8000 and np.array_equal(read.ravel(), g711.table("PCMU")[np.frombuffer(data, np.uint8)])
    assert data not in path.read_bytes() and data[:64] not in path.read_bytes()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_file_moved_under_another_recording_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r1.wav.vault"
    writer = AudioWriter(path, MASTER, "r1", "PCMA")
    writer.append(frames(10))
    writer.close()
    with pytest.raises(AudioFileError, match="belongs to 'r1'"):
        wav(path, "r2")
    with pytest.raises(VaultError):
        wav_bytes(path, MasterKey(bytes(range(1, 33))), "r1")


def test_crash_keeps_every_synced_second(tmp_path: Path) -> None:
    """kill -9 after the fifth checkpoint, with half a record torn."""
    path = tmp_path / "r1.wav.vault"
    writer = AudioWriter(path, MASTER, "r1", "PCMU")
    data = frames(8000 * 6)
    second = 16000
    for i in range(5):
        writer.append(data[i * second:(i + 1) * second])
        writer.sync(durable=False)
    size = path.stat().st_size
    writer.append(data[5 * second:])
    writer.sync(durable=False)
    crashed = tmp_path / "crashed.vault"
    shutil.copyfile(path, crashed)
    os.truncate(crashed, size + (path.stat().st_size - size) // 2)
    with pytest.raises(VaultError):
        wav(crashed)
    repair_vault(crashed, MASTER)
    audio = describe(crashed, MASTER, "r1")
    assert audio.sealed and audio.frames == 5 * 8000
    read = wav(crashed)
    assert read.endswith(data[:5 * second])


def test_law_change_converts_what_was_recorded(tmp_path: Path) -> None:
    old = tmp_path / "r1.wav.vault"
    writer = AudioWriter(old, MASTER, "r1", "PCMU")
    first = frames(5000)
    writer.append(first)
    writer.close()
    new = convert_to_l16(old, tmp_path / "r1.l16.wav.vault", MASTER, "r1")
    more = np.arange(200, dtype="<i2").tobytes()
    new.append(more)
    assert new.close() == 5000 + 100
    read, _ = sf.read(io.BytesIO(wav(tmp_path / "r1.l16.wav.vault")), dtype="int16")
    expected = np.concatenate([g711.table("PCMU")[np.frombuffer(first, np.uint8)], np.frombuffer(more, "<i2")])
    assert np.array_equal(read.ravel(), expected)


def test_side_file_is_a_readable_pcap(tmp_path: Path) -> None:
    path = tmp_path / "r1.ch1.rtp.pcap.vault"
    side = SideWriter(path, MASTER, "r1", 1)
    side.write(b"record")
    side.close()
    blob = b"".join(side_bytes(path, MASTER, "r1"))
    assert blob[:4] == bytes.fromhex("d4c3b2a1") and blob.endswith(b"record")


def test_partial_frames_are_refused(tmp_path: Path) -> None:
    writer = AudioWriter(tmp_path / "x.vault", MASTER, "r1", "L16")
    with pytest.raises(ValueError):
        writer.append(b"abc")
    writer.close()


def test_past_the_riff_limit_is_an_os_error_the_store_stops_on(tmp_path: Path) -> None:
    from wire.wav import WavLimitError, room_for_data
    writer = AudioWriter(tmp_path / "x.vault", MASTER, "r1", "PCMU")
    writer._length = room_for_data("PCMU", 2)
    with pytest.raises(OSError) as raised:
        writer.append(b"\x00\x00")
    assert isinstance(raised.value, WavLimitError) and raised.value.errno == errno.EFBIG
    writer.close()


def _records(path: Path) -> list[bytes]:
    """Each record's plaintext, in order (the final, empty one included)."""
    from storage.vault import open_vault
    with open_vault(path, MASTER) as reader:
        return [reader._open_record(i) for i in range(reader.records)]


@pytest.mark.parametrize("buffered", [0, 2, 70000])
def test_append_synced_writes_the_records_append_then_sync_writes(tmp_path: Path, buffered: int) -> None:
    """A checkpoint's one call (`append_synced`) against `append` then
    `sync`: the same records, the same lengths and frames, whether the vault
    held nothing (the record sealed straight from the bytes), a few bytes
    appended before, or more than a record at once (both take the general way)."""
    sizes = [3200, 0, 8000, 65534, 65536, 131072, 2]
    paths = []
    for combined in (False, True):
        path = tmp_path / f"{combined}.vault"
        writer = AudioWriter(path, MASTER, "r1", "PCMU")
        if buffered:
            writer.append(frames(buffered // 2, seed=9))
        for n, size in enumerate(sizes):
            data = frames(size // 2, seed=n)
            if combined:
                writer.append_synced(data)
            else:
                writer.append(data)
                writer.sync(durable=False)
        assert writer.frames == (buffered + sum(sizes)) // 2
        writer.close()
        paths.append(path)
    assert _records(paths[0]) == _records(paths[1])
    assert wav(paths[0]) == wav(paths[1])


def test_append_synced_refuses_what_append_refuses(tmp_path: Path) -> None:
    from wire.wav import WavLimitError, room_for_data
    writer = AudioWriter(tmp_path / "x.vault", MASTER, "r1", "PCMU")
    with pytest.raises(ValueError):
        writer.append_synced(b"abc")
    writer._length = room_for_data("PCMU", 2)
    with pytest.raises(WavLimitError):
        writer.append_synced(b"\x00\x00")
    writer._length = 0
    assert writer.close() == 0


def test_append_synced_on_a_failing_disk_keeps_a_clean_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record sealed straight from the bytes fails to write as a
    buffered one does: the bytes are taken, the file stays a clean prefix,
    and the same record is written (same nonce, same bytes) once the disk
    takes it."""
    from storage import vault
    path = tmp_path / "x.vault"
    writer = AudioWriter(path, MASTER, "r1", "PCMU")
    writer.append_synced(frames(4000, seed=1))
    real = vault.pwrite_all

    def full(fd: int, data: bytes, offset: int) -> None:
        os.pwrite(fd, data[:len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vault, "pwrite_all", full)
    with pytest.raises(OSError):
        writer.append_synced(frames(4000, seed=2))
    assert writer.frames == 8000
    monkeypatch.setattr(vault, "pwrite_all", real)
    writer.append_synced(frames(4000, seed=3))
    writer.close()
    assert wav(path)[-24000:] == frames(4000, seed=1) + frames(4000, seed=2) + frames(4000, seed=3)
