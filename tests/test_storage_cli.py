"""The store as an auditor and an operator meet it, through the CLI, on
recordings made from the public captures: retention on given dates, legal
hold, audio hand-out, verification of every kind of tampering, and wipe."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import soundfile

from storage.store import default_key_file
from tests.interop import REPO, calls, capture, recording_bytes, run_cli

KUMAMOTO = REPO / "policies" / "kumamoto.yaml"


def recorded(tmp_path: Path, *names: str) -> Path:
    data = tmp_path / "data"
    for name in names:
        run_cli("replay", capture(name), "--data-dir", data)
    return data


def ledger(data: Path) -> list[dict]:
    return json.loads(run_cli("ledger", "list", "--json", "--data-dir", data).stdout)


def sweep(data: Path, now: str, *extra: str) -> dict:
    out = run_cli("retention", "run", "--now", now, "--json", "--data-dir", data, "--policy", KUMAMOTO, *extra)
    return json.loads(out.stdout)


def test_ninety_days_counted_from_the_day_after_in_tokyo(tmp_path: Path) -> None:
    """sip-rtp-g711.pcap's calls were answered on 2016-11-26 at 23:52 JST
    (14:52 UTC): day 1 is 27 November, day 90 is 24 February 2017, so the
    first sweep from 25 February 00:00 JST erases them, and none before."""
    data = recorded(tmp_path, "sip-rtp-g711.pcap")
    assert len(calls(data)) == 2
    assert sweep(data, "2017-02-24T23:59:59+09:00", "--dry-run")["erase"] == []
    assert sweep(data, "2017-02-24T23:59:59+09:00")["erase"] == []
    assert len(calls(data)) == 2
    plan = sweep(data, "2017-02-25T00:00:00+09:00", "--dry-run")
    assert [e["reason"] for e in plan["erase"]] == ["retention", "retention"]
    assert len(calls(data)) == 2, "a dry run erases nothing"
    sweep(data, "2017-02-25T00:00:00+09:00")
    assert calls(data) == []
    gone = json.loads(run_cli("calls", "list", "--all", "--json", "--data-dir", data).stdout)
    assert [r["erased_reason"] for r in gone] == ["retention", "retention"]
    assert all(r["remote_number"] is None and r["sip_call_id"] == "" for r in gone), "tombstones keep no numbers"
    assert not [p for p in (data / "recordings").rglob("*") if p.is_file()]
    [entry] = [e for e in ledger(data) if e["event"] == "erasure"]
    assert entry["details"]["count"] == 2 and entry["details"]["by_reason"] == {"retention": 2}
    assert entry["details"]["recorded_from"].startswith("2016-11-26T23:52")
    assert "90 days" in entry["details"]["rule"]
    assert run_cli("verify", "--data-dir", data).returncode == 0


def test_hold_outlives_the_rule_until_released(tmp_path: Path) -> None:
    data = recorded(tmp_path, "sip-rtp-g711.pcap")
    first, second = calls(data)
    run_cli("hold", "add", first["id"], "--reason", "情報公開請求 第12号", "--approved-by", "管理責任者",
            "--data-dir", data)
    assert run_cli("hold", "add", first["id"], "--reason", "again", "--data-dir", data, check=False).returncode == 1
    sweep(data, "2018-01-01T00:00:00+09:00")
    assert [r["id"] for r in calls(data)] == [first["id"]]
    assert calls(data)[0]["held"] is True
    run_cli("hold", "release", first["id"], "--reason", "開示完了", "--data-dir", data)
    sweep(data, "2018-01-01T00:00:00+09:00")
    assert calls(data) == []
    events = [(e["event"], e["reason"]) for e in ledger(data)]
    assert ("hold_added", "情報公開請求 第12号") in events and ("hold_released", "開示完了") in events
    assert [e for e in ledger(data) if e["event"] == "hold_added"][0]["approved_by"] == "管理責任者"


def test_audio_hand_out_is_the_sealed_wav_and_leaves_a_ledger_entry(tmp_path: Path) -> None:
    """Without access rules (a site not yet using requests), with a reason required."""
    data = recorded(tmp_path, "sip-rtp-g711.pcap")
    row = calls(data)[0]
    out = tmp_path / "copy.wav"
    reasons = tmp_path / "reasons.yaml"
    reasons.write_text("listening: {reason_required: true}\n", encoding="utf-8")
    refused = run_cli("calls", "audio", row["id"], "-o", out, "--data-dir", data, "--policy", reasons,
                      check=False)
    assert refused.returncode == 2 and "reason" in refused.stderr and not out.exists()
    run_cli("calls", "audio", row["id"], "-o", out, "--reason", "クレーム対応の確認", "--data-dir", data,
            "--policy", reasons)
    blob = out.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == row["sha256"] and blob == recording_bytes(data, row)
    info = soundfile.info(io.BytesIO(blob))
    assert (info.channels, info.samplerate, info.frames) == (2, 8000, row["audio_frames"])
    again = run_cli("calls", "audio", row["id"], "-o", out, "--data-dir", data, check=False)
    assert again.returncode == 2 and "never overwrites" in again.stderr
    [entry] = [e for e in ledger(data) if e["event"] == "audio_access"]
    assert entry["details"]["call_id"] == row["id"] and entry["reason"] == "クレーム対応の確認"
    assert entry["details"]["sha256"] == row["sha256"]


def test_audio_hand_out_is_refused_where_the_policy_wants_a_request(tmp_path: Path) -> None:
    """熊本市 第4条3, 第6条: a copy only through an approved 申請書."""
    data = recorded(tmp_path, "sip-rtp-g711.pcap")
    row = calls(data)[0]
    out = tmp_path / "copy.wav"
    refused = run_cli("calls", "audio", row["id"], "-o", out, "--reason", "x", "--data-dir", data,
                      "--policy", KUMAMOTO, check=False)
    assert refused.returncode == 2 and "approved request" in refused.stderr and not out.exists()
    assert [e for e in ledger(data) if e["event"] == "audio_access"] == []


def _tamper_audio(data: Path, row: dict) -> str:
    path = data / row["audio_path"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return row["id"]


def _delete_audio(data: Path, row: dict) -> str:
    (data / row["audio_path"]).unlink()
    return row["id"]


def _edit_ledger(data: Path, row: dict) -> str:
    path = data / "ledger.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"result":"ok"', '"result":"mismatch"')
    path.write_text("\n".join(lines) + "\n")
    return "ledger: line 1, seq 1"


def _truncate_ledger(data: Path, row: dict) -> str:
    path = data / "ledger.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return "ledger"


def _stray_file(data: Path, row: dict) -> str:
    stray = (data / row["audio_path"]).with_name("20990101T000000-deadbeef.wav.vault")
    stray.write_bytes(b"not ours")
    return "no index row names this file"


@pytest.mark.parametrize("tamper", [_tamper_audio, _delete_audio, _edit_ledger, _truncate_ledger, _stray_file])
def test_verify_names_what_was_altered(tmp_path: Path, tamper) -> None:  # type: ignore[no-untyped-def]
    data = recorded(tmp_path, "sip-rtp-g711.pcap")
    assert run_cli("verify", "--data-dir", data).returncode == 0
    run_cli("verify", "--data-dir", data)
    row = calls(data)[0]
    named = tamper(data, row)
    result = run_cli("verify", "--data-dir", data, check=False)
    assert result.returncode == 1, result.stdout
    assert named in result.stdout and "MISMATCH" in result.stdout, result.stdout
    if tamper in (_edit_ledger, _truncate_ledger):
        assert run_cli("ledger", "verify", "--data-dir", data, check=False).returncode == 1


def test_wipe_leaves_nothing_but_its_ledger_entry(tmp_path: Path) -> None:
    data = recorded(tmp_path, "sip-rtp-g711.pcap", "SIP_DTMF2.pcap")
    assert len(calls(data)) == 3
    key = default_key_file(data)
    assert key.exists()
    refused = run_cli("wipe", "--all", "--data-dir", data, check=False)
    assert refused.returncode == 1 and len(calls(data)) == 3, "no confirmation, nothing erased"
    result = run_cli("wipe", "--all", "--yes", "--reason", "リース返却", "--data-dir", data)
    assert "3 recordings erased" in result.stdout
    assert calls(data) == [] and not key.exists()
    assert not [p for p in (data / "recordings").rglob("*") if p.is_file()]
    lines = (data / "ledger.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["event"] == "wipe" and last["details"]["recordings"] == 3 and last["reason"] == "リース返却"


def test_policy_check_says_each_rule_in_plain_words() -> None:
    expected = {
        "kumamoto": ("90日", "90 days"), "matsumoto": ("3か月", "3 calendar months"),
        "saitama": ("翌月の末日", "end of the month after"), "shinagawa": ("上書き", "overwritten"),
        "yamagata": ("上書き", "overwritten"),
    }
    for name, (ja, en) in expected.items():
        out = run_cli("policy", "check", REPO / "policies" / f"{name}.yaml").stdout
        assert ja in out and en in out, f"{name}:\n{out}"


def test_a_replaced_master_key_is_refused(tmp_path: Path) -> None:
    data = recorded(tmp_path, "SIP_DTMF2.pcap")
    key = default_key_file(data)
    key.write_text(os.urandom(32).hex() + "\n")
    result = run_cli("verify", "--data-dir", data, check=False)
    assert result.returncode == 2 and "was written under master key" in result.stderr
