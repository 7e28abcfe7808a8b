"""The encrypted recording container: round trips, crashes, tampering, a full disk."""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.keys import MasterKey, create_key_file
from storage.vault import (
    RECORD_SIZE,
    VaultError,
    VaultWriter,
    open_vault,
    read_header,
    repair_vault,
)
from tests.vault_framing import framing

MASTER = MasterKey(bytes(range(1, 33)))
META = {"kind": "wav-data", "encoding": "PCMU", "channels": 2, "rate": 8000, "call": "通話"}


def write_vault(path: Path, pieces: list[bytes], flush_each: bool = True, master: MasterKey = MASTER) -> int:
    writer = VaultWriter(path, master, META)
    for piece in pieces:
        writer.append(piece)
        if flush_each:
            writer.flush(durable=False)
    return writer.close()


def read_all(path: Path, master: MasterKey = MASTER, allow_torn: bool = False) -> bytes:
    with open_vault(path, master, allow_torn=allow_torn) as reader:
        return b"".join(reader.chunks())


def pattern(n: int, seed: int = 0) -> bytes:
    """Recognisable, non-repeating bytes (so a misplaced record shows)."""
    return bytes((i * 7 + seed + i // 251) & 0xFF for i in range(n))


@pytest.mark.parametrize("size", [0, 1, RECORD_SIZE - 1, RECORD_SIZE, RECORD_SIZE + 1, 5 * RECORD_SIZE + 17])
def test_round_trip(tmp_path: Path, size: int) -> None:
    path = tmp_path / "v"
    data = pattern(size)
    assert write_vault(path, [data], flush_each=False) == size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with open_vault(path, MASTER) as reader:
        assert reader.sealed and reader.meta == META
        assert reader.plaintext_length() == size
        chunks = list(reader.chunks())
    assert all(0 < len(chunk) <= RECORD_SIZE for chunk in chunks)
    assert b"".join(chunks) == data
    if size >= 16:
        assert data[:16] not in path.read_bytes()


def test_many_small_records_each_flushed(tmp_path: Path) -> None:
    path = tmp_path / "v"
    pieces = [pattern(160, seed=i) for i in range(500)]
    write_vault(path, pieces)
    assert len(framing(path)) == 501
    assert read_all(path) == b"".join(pieces)


def test_ten_megabytes_in_one_second_pieces(tmp_path: Path) -> None:
    path = tmp_path / "v"
    second = 16000  # stereo G.711 at 8 kHz
    data = os.urandom(10 * 1024 * 1024)
    writer = VaultWriter(path, MASTER, META)
    for start in range(0, len(data), second):
        writer.append(memoryview(data)[start : start + second])
        writer.flush(durable=start % (60 * second) == 0)
    assert writer.plaintext_length == len(data)
    assert writer.close() == len(data)
    assert read_all(path) == data
    assert path.stat().st_size < len(data) * 1.01 + 4096


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3 * RECORD_SIZE // 2), st.sampled_from(["none", "flush", "durable"])),
        max_size=12,
    )
)
def test_round_trip_over_random_chunkings(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, str]]
) -> None:
    path = tmp_path_factory.mktemp("h") / "v"
    writer = VaultWriter(path, MASTER, META)
    expected = bytearray()
    for number, (size, action) in enumerate(steps):
        piece = pattern(size, seed=number)
        writer.append(piece)
        expected += piece
        if action != "none":
            writer.flush(durable=action == "durable")
    assert writer.close() == len(expected)
    assert read_all(path) == bytes(expected)


def test_writer_refuses_an_existing_file_or_symlink(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        VaultWriter(existing, MASTER, META)
    assert existing.read_bytes() == b"keep me"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        VaultWriter(link, MASTER, META)
    assert not (tmp_path / "elsewhere").exists()


def test_closed_writer_refuses_more(tmp_path: Path) -> None:
    writer = VaultWriter(tmp_path / "v", MASTER, META)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.append(b"x")


# --- crashes ------------------------------------------------------------------


def test_cut_at_every_byte_of_the_last_records_then_repair(tmp_path: Path) -> None:
    full = tmp_path / "full"
    pieces = [pattern(300, seed=i) for i in range(5)]
    write_vault(full, pieces)
    raw = full.read_bytes()
    records = framing(full)
    complete_ends = [offset + size for offset, size in records]
    first_cut = records[-3][0]
    for cut in range(first_cut, len(raw)):
        path = tmp_path / f"cut{cut}"
        path.write_bytes(raw[:cut])
        path.chmod(0o600)
        kept_records = sum(1 for end in complete_ends[:-1] if end <= cut)
        expected = b"".join(pieces[:kept_records])
        with pytest.raises(VaultError, match=r"record \d+ at byte \d+"):
            open_vault(path, MASTER)
        with open_vault(path, MASTER, allow_torn=True) as reader:
            assert not reader.sealed
            assert b"".join(reader.chunks()) == expected
        assert repair_vault(path, MASTER) == len(expected)
        repaired = path.read_bytes()
        assert read_all(path) == expected
        assert repair_vault(path, MASTER) == len(expected)
        assert path.read_bytes() == repaired, "repair is idempotent"
        if cut >= complete_ends[-2]:
            assert repaired == raw, "the final record is rewritten byte for byte"
        path.unlink()


def test_zero_filled_tail_after_power_loss_is_torn_not_data(tmp_path: Path) -> None:
    path = tmp_path / "v"
    pieces = [pattern(1000, seed=i) for i in range(3)]
    write_vault(path, pieces)
    offset, _ = framing(path)[-1]
    raw = path.read_bytes()[:offset] + bytes(5000)
    path.write_bytes(raw)
    with pytest.raises(VaultError, match="torn record"):
        open_vault(path, MASTER)
    assert repair_vault(path, MASTER) == 3000
    assert read_all(path) == b"".join(pieces)


def test_header_cut_short_is_an_error_even_for_repair(tmp_path: Path) -> None:
    path = tmp_path / "v"
    write_vault(path, [b"abc"])
    header = read_header(path).size
    for cut in (0, 3, 8, header - 1):
        path.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(VaultError, match="header"):
            repair_vault(path, MASTER)


_CHILD = r"""
import sys
from pathlib import Path
from storage.keys import load_master_key
from storage.vault import VaultWriter
key = load_master_key(Path(sys.argv[1]), Path(sys.argv[2]), {})
writer = VaultWriter(Path(sys.argv[3]), key, {"kind": "wav-data"})
i = 0
while True:
    writer.append(bytes([i & 0xFF]) * 1600)
    writer.flush(durable=False)
    print("flushed", i, flush=True)
    i += 1
"""


def test_kill_9_mid_write_keeps_every_flushed_record(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    master = create_key_file(key_file)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    path = data_dir / "v"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(key_file), str(data_dir), str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None
    line = b""
    while line != b"flushed 199\n":  # other lines are the child's own log
        line = child.stdout.readline()
        assert line, "the writer process died"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    with pytest.raises(VaultError, match="without the final record|torn"):
        open_vault(path, master)
    kept = repair_vault(path, master)
    data = read_all(path, master)
    assert kept == len(data) and len(data) >= 200 * 1600 and len(data) % 1600 == 0
    assert data == b"".join(bytes([i & 0xFF]) * 1600 for i in range(len(data) // 1600))


# --- tampering ----------------------------------------------------------------


def test_every_single_bit_flip_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "v"
    write_vault(path, [b"first record", b"second", b"third"])
    raw = path.read_bytes()
    header = read_header(path).size
    for position in range(len(raw)):
        for bit in (0, 7):
            altered = bytearray(raw)
            altered[position] ^= 1 << bit
            path.write_bytes(altered)
            with pytest.raises(VaultError) as caught:
                read_all(path)
            if position >= header:
                assert caught.value.record is not None, str(caught.value)
                assert f"record {caught.value.record} at byte" in str(caught.value)
            else:
                assert caught.value.record is None and ": header: " in str(caught.value)


def test_tampering_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "v"
    pieces = [pattern(100, seed=i) for i in range(4)]
    write_vault(path, pieces)
    raw = path.read_bytes()
    (h0, s0), (o1, s1), (o2, s2), (o3, s3), (o4, s4) = framing(path)
    rec = [raw[o : o + s] for o, s in framing(path)]
    head = raw[:h0]

    def check(name: str, content: bytes, record: int, message: str = "fails authentication") -> None:
        path.write_bytes(content)
        with pytest.raises(VaultError, match=message) as caught:
            read_all(path)
        assert caught.value.record == record, f"{name}: {caught.value}"

    check("ciphertext", head + rec[0] + rec[1][:10] + bytes([rec[1][10] ^ 4]) + rec[1][11:] + b"".join(rec[2:]), 1)
    check("tag", head + rec[0] + rec[1][:-1] + bytes([rec[1][-1] ^ 1]) + b"".join(rec[2:]), 1)
    check("swap", head + rec[1] + rec[0] + b"".join(rec[2:]), 0)
    check("drop", head + rec[0] + b"".join(rec[2:]), 1)
    check("duplicate", head + rec[0] + rec[0] + b"".join(rec[1:]), 1)
    check("drop final", head + b"".join(rec[:4]), 4, "without the final record")
    check("final moved", head + rec[0] + rec[4], 1)
    check("data after final", raw + rec[3], 5, "after the final record")

    other = tmp_path / "other"
    write_vault(other, pieces)
    orec = [other.read_bytes()[o : o + s] for o, s in framing(other)]
    assert orec[2] != rec[2]
    check("splice", head + rec[0] + rec[1] + orec[2] + rec[3] + rec[4], 2)
    path.write_bytes(read_header(other).context + read_header(other).wrapped + b"".join(rec))
    with pytest.raises(VaultError, match="fails authentication"):
        read_all(path)


def test_moving_a_wrapped_key_to_another_header_fails(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_vault(a, [b"one"])
    VaultWriter(b, MASTER, {**META, "channels": 1}).close()
    header_a, header_b = read_header(a), read_header(b)
    raw_a = a.read_bytes()
    b.write_bytes(header_b.context + header_a.wrapped + raw_a[header_a.size :])
    with pytest.raises(VaultError, match="header fails authentication"):
        open_vault(b, MASTER)


def test_wrong_master_key_says_so(tmp_path: Path) -> None:
    path = tmp_path / "v"
    write_vault(path, [b"secret"])
    other = MasterKey(bytes(range(2, 34)))
    with pytest.raises(VaultError, match=f"another master key.*{MASTER.key_id}.*{other.key_id}"):
        open_vault(path, other)
    with pytest.raises(VaultError, match="another master key"):
        repair_vault(path, other)


def test_not_a_vault(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(VaultError, match="not a callrec vault"):
        open_vault(path, MASTER)


# --- a full disk --------------------------------------------------------------


@pytest.mark.root
def test_disk_full_keeps_the_file_readable_and_resumes(small_disk: Callable[[str], Path]) -> None:
    mount = small_disk("1m")
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler.write_bytes(b"\0" * (free - 200 * 1024))
    path = mount / "v"
    writer = VaultWriter(path, MASTER, META)
    taken = bytearray()
    failures = 0
    number = 0
    while failures < 3:
        piece = pattern(16000, seed=number)
        number += 1
        before = writer.plaintext_length
        try:
            writer.append(piece)
            writer.flush(durable=True)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failures += 1
        if writer.plaintext_length > before:
            taken += piece
        with open_vault(path, MASTER, allow_torn=True) as reader:
            on_disk = b"".join(reader.chunks())
        assert taken.startswith(on_disk), "what is on disk is always a clean prefix"
    assert len(on_disk) > 100 * 1024
    with pytest.raises(OSError):
        writer.close()
    assert read_all(path, allow_torn=True) == on_disk
    filler.unlink()
    assert repair_vault(path, MASTER) == len(on_disk)
    assert read_all(path) == on_disk


@pytest.mark.root
def test_disk_full_then_space_returns_writes_everything_taken(small_disk: Callable[[str], Path]) -> None:
    mount = small_disk("1m")
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler.write_bytes(b"\0" * (free - 100 * 1024))
    writer = VaultWriter(mount / "v", MASTER, META)
    taken = bytearray()
    failed = False
    number = 0
    while not failed:
        piece = pattern(20000, seed=number)
        number += 1
        try:
            writer.append(piece)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failed = True
        taken += piece  # the first failure still takes the data
    with pytest.raises(OSError):
        writer.append(b"refused while the earlier record is not written")
    filler.unlink()
    assert writer.close() == len(taken)
    assert read_all(mount / "v") == bytes(taken)
