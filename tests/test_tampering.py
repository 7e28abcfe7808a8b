"""`callrec verify` against the tampering it used to miss (issue 17, item 5), each on recordings
made from a public capture and altered as someone with write access to the data folder but
without the master key would: a row deleted with its file, a row set back to `recording` with a
byte of its vault flipped, edited metadata, the ledger and its head put back from an earlier copy.
Also: rows left in `recording` with no recorder running, an erasure the seal ledger names, a row
sealed again by recovery, and an index of an older version whose rows have no seal."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from storage.index import CallIndex
from storage.lock import DataDirLock
from storage.recordings import RecordingStore
from storage.store import default_anchor_dir
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY, T0, media, signalling
from tests.interop import REPO, calls, capture, run_cli, store_key

KUMAMOTO = REPO / "policies" / "kumamoto.yaml"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two calls from sip-rtp-g711.pcap, checked once; each test alters a copy of its own."""
    data = tmp_path_factory.mktemp("recorded") / "data"
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--data-dir", data)
    assert verify(data).returncode == 0
    return data


@pytest.fixture()
def data(recorded: Path, tmp_path: Path) -> Path:
    """A copy of the recorded folder with its key and its anchors beside it, as callrec keeps them."""
    copy = tmp_path / "data"
    shutil.copytree(recorded, copy)
    shutil.copy2(recorded.parent / "data.key", tmp_path / "data.key")
    shutil.copytree(default_anchor_dir(recorded), default_anchor_dir(copy))
    return copy


def verify(data: Path):  # type: ignore[no-untyped-def]
    return run_cli("verify", "--data-dir", data, check=False)


def sql(data: Path, statement: str, *args: object) -> list[tuple]:
    db = sqlite3.connect(data / "index.sqlite3")
    try:
        with db:
            return db.execute(statement, args).fetchall()
    finally:
        db.close()


def first(data: Path) -> dict:
    return calls(data)[0]


def named(data: Path, *words: str) -> str:
    """verify's output, after checking it exits 1 and says every word."""
    result = verify(data)
    assert result.returncode == 1 and "MISMATCH" in result.stdout, result.stdout + result.stderr
    for word in words:
        assert word in result.stdout, f"{word!r} not in:\n{result.stdout}"
    return result.stdout


def test_a_row_deleted_with_its_vault_file_is_named(data: Path) -> None:
    row = first(data)
    sql(data, "DELETE FROM calls WHERE id = ?", row["id"])
    (data / row["audio_path"]).unlink()
    named(data, f"recording {row['id']}", "its row is gone from the index")


def test_a_row_set_back_to_recording_with_a_flipped_vault_byte_is_named(data: Path) -> None:
    row = first(data)
    sql(data, "UPDATE calls SET state = 'recording' WHERE id = ?", row["id"])
    vault = data / row["audio_path"]
    raw = bytearray(vault.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    vault.write_bytes(bytes(raw))
    out = named(data, f"recording {row['id']}: metadata differs from its seal")
    assert "no recorder holds the data folder" in out


@pytest.mark.parametrize(("column", "value"), [("remote_number", "0120444444"),
                                               ("ended_at", "2016-11-26T23:59:59.000+09:00")])
def test_edited_metadata_is_named(data: Path, column: str, value: str) -> None:
    row = first(data)
    sql(data, f"UPDATE calls SET {column} = ? WHERE id = ?", value, row["id"])
    named(data, f"recording {row['id']}: metadata differs from its seal")


def test_the_ledger_and_its_head_put_back_from_an_earlier_copy_are_named(data: Path, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for name in ("ledger.jsonl", "ledger.head", "seals.jsonl", "seals.head"):
        shutil.copy2(data / name, earlier / name)
    row = first(data)
    run_cli("hold", "add", row["id"], "--reason", "訴訟", "--data-dir", data)
    run_cli("retention", "run", "--now", "2018-01-01T00:00:00+09:00", "--data-dir", data, "--policy", KUMAMOTO)
    assert verify(data).returncode == 0
    for name in ("ledger.jsonl", "ledger.head"):
        shutil.copy2(earlier / name, data / name)
    named(data, "ledger", "rolled back", "replaced by an earlier copy")
    assert run_cli("ledger", "verify", "--data-dir", data, check=False).returncode == 1
    for name in ("seals.jsonl", "seals.head"):
        shutil.copy2(earlier / name, data / name)
    named(data, "seal ledger", "rolled back")
    refused = run_cli("hold", "release", row["id"], "--reason", "x", "--data-dir", data, check=False)
    assert refused.returncode == 2 and "earlier copy" in refused.stderr, "appending would hide the rollback"


def test_rows_left_recording_without_a_recorder_fail_verify(tmp_path: Path) -> None:
    """A recorder that died (kill -9) leaves its row in `recording`: verify fails until the next start
    recovers it, and does not while a recorder holds the folder."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    index = CallIndex(data / "index.sqlite3")
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), RecordingStore(data, index, ZoneInfo("Asia/Tokyo"),
                                                                            store_key(data)))
    up, _ = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    for ts, frame in sorted(signalling() + up, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    index.close()
    [row] = calls(data)
    assert row["state"] == "recording"
    named(data, f"recording {row['id']}: left in state `recording`")
    with DataDirLock(data):
        result = verify(data)
        assert result.returncode == 0 and "1 being recorded" in result.stdout, result.stdout
    run_cli("replay", capture("SIP_DTMF2.pcap"), "--data-dir", data)
    assert [r["end_reason"] for r in calls(data) if r["id"] == row["id"]] == ["recovered_after_crash"]
    assert verify(data).returncode == 0


def test_erasures_are_named_in_the_seal_ledger(data: Path) -> None:
    ids = [row["id"] for row in calls(data)]
    run_cli("retention", "run", "--now", "2018-01-01T00:00:00+09:00", "--data-dir", data, "--policy", KUMAMOTO)
    assert calls(data) == [] and verify(data).returncode == 0
    entries = [json.loads(line) for line in (data / "seals.jsonl").read_text().splitlines()]
    erased = {call_id for e in entries if e["event"] == "erased" for call_id in e["details"]["rows"]}
    assert erased == set(ids)
    sql(data, "DELETE FROM calls WHERE id = ?", ids[0])
    named(data, f"recording {ids[0]}: erased", "its tombstone row is gone")


def test_recovery_never_reseals_a_row_set_back_quietly(data: Path) -> None:
    """Set back to `recording` with its seal removed, the next start's recovery seals it again;
    the seal ledger then holds two seals of one row, and verify names it."""
    row = first(data)
    sql(data, "UPDATE calls SET state = 'recording', seal_mac = NULL WHERE id = ?", row["id"])
    named(data, f"recording {row['id']}: the seal ledger names it", "its seal was removed")
    run_cli("replay", capture("SIP_DTMF2.pcap"), "--data-dir", data)
    named(data, f"recording {row['id']}: sealed again")


def test_rows_of_an_older_version_verify_and_are_sealed_at_the_upgrade(data: Path) -> None:
    """An index made before rows had seals: its rows verify, said to be sealed before the metadata
    MAC, until the first start of a newer recorder seals them as they then read."""
    sql(data, "UPDATE calls SET seal_mac = NULL, seal_seq = NULL")
    for name in ("seals.jsonl", "seals.head"):
        (data / name).unlink()
    shutil.rmtree(default_anchor_dir(data))
    result = verify(data)
    assert result.returncode == 0, result.stdout
    assert "2 recording(s) sealed before metadata MAC" in result.stdout
    run_cli("replay", capture("SIP_DTMF2.pcap"), "--data-dir", data)
    result = verify(data)
    assert result.returncode == 0 and "covered since the upgrade" in result.stdout, result.stdout
    row = first(data)
    sql(data, "UPDATE calls SET remote_number = '0000' WHERE id = ?", row["id"])
    named(data, f"recording {row['id']}: metadata differs from its seal")




def test_an_export_kept_off_the_machine_names_a_rollback_of_everything_local(data: Path, tmp_path: Path) -> None:
    """A root who also puts back the anchor folder leaves nothing on the machine to tell; the signed
    export the 管理責任者 filed (`callrec ledger anchor`) still does."""
    earlier = tmp_path / "earlier"
    shutil.copytree(data, earlier / "data")
    shutil.copytree(default_anchor_dir(data), earlier / "anchor")
    run_cli("hold", "add", first(data)["id"], "--reason", "訴訟", "--data-dir", data)
    export = tmp_path / "anchor.json"
    assert "signed by" in run_cli("ledger", "anchor", "-o", export, "--data-dir", data).stdout
    assert run_cli("verify", "--anchor", export, "--data-dir", data).returncode == 0
    for name in ("ledger.jsonl", "ledger.head"):
        shutil.copy2(earlier / "data" / name, data / name)
    shutil.rmtree(default_anchor_dir(data))
    shutil.copytree(earlier / "anchor", default_anchor_dir(data))
    assert run_cli("ledger", "verify", "--data-dir", data, check=False).returncode == 0, "nothing local can tell"
    result = run_cli("verify", "--anchor", export, "--data-dir", data, check=False)
    assert result.returncode == 1 and "rolled back" in result.stdout and str(export) in result.stdout, result.stdout
    forged = json.loads(export.read_text())
    forged["ledger"]["seq"] = 1
    export.write_text(json.dumps(forged))
    result = run_cli("verify", "--anchor", export, "--data-dir", data, check=False)
    assert result.returncode == 1 and "signature does not verify" in result.stdout, result.stdout
