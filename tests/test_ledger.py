"""The 通話記録管理簿: a keyed hash chain that catches edits, removals,
reordering, forgeries without the key and a cut-off tail."""
from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage.keys import MasterKey
from storage.ledger import GENESIS, KEY_LABEL, Event, Ledger, LedgerError

KEY = MasterKey(bytes(range(1, 33))).derive(KEY_LABEL)
JST = timezone(timedelta(hours=9))
T0 = datetime(2025, 3, 31, 23, 59, 30, tzinfo=JST)


def ledger_in(folder: Path, key: bytes = KEY) -> Ledger:
    return Ledger.in_data_dir(folder, key)


def fill(ledger: Ledger, count: int) -> None:
    for n in range(count):
        ledger.append(Event.AUDIO_ACCESS, "tanaka", T0 + timedelta(minutes=n), reason=f"苦情対応 {n}", call_id=f"c{n}")


def problems_of(ledger: Ledger) -> list[str]:
    return [str(problem) for problem in ledger.verify()]


def lines_of(ledger: Ledger) -> list[bytes]:
    return ledger.path.read_bytes().splitlines(keepends=True)


def auditor_check(path: Path, key: bytes) -> int:
    """The procedure the README gives an auditor, written independently of
    the module: recompute every MAC and link."""
    prev = "0" * 64
    count = 0
    for count, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = json.loads(line)
        body = {name: value for name, value in entry.items() if name != "mac"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        assert entry["mac"] == hmac.new(key, canonical, hashlib.sha256).hexdigest()
        assert entry["prev"] == prev and entry["seq"] == count
        prev = entry["mac"]
    return count


def test_empty_or_absent_ledger_is_valid(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    assert ledger.verify() == [] and list(ledger.entries()) == []
    ledger.path.touch()
    assert ledger.verify() == []


def test_append_and_verify_round_trip(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    first = ledger.append(
        Event.ERASURE, "callrec", T0, count=12, period_from="2024-12-01", period_to="2024-12-31", rule="3 months"
    )
    second = ledger.append("hold_added", "鈴木", T0 + timedelta(seconds=1), reason="訴訟", approved_by="課長", call_id="c7")
    assert (first.seq, first.prev) == (1, GENESIS)
    assert (second.seq, second.prev) == (2, first.mac)
    assert second.event == "hold_added" and second.details == {"call_id": "c7"}
    assert second.at == T0 + timedelta(seconds=1)
    assert list(ledger.entries()) == [first, second]
    assert ledger.verify() == []
    assert auditor_check(ledger.path, KEY) == 2
    stored = json.loads(lines_of(ledger)[1])
    assert stored == second.as_json()
    assert stored["at"] == "2025-03-31T23:59:31.000+09:00"
    assert "鈴木" in ledger.path.read_text(encoding="utf-8"), "stored as UTF-8, not escaped"
    for path in (ledger.path, ledger.head_path, ledger.lock_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_unknown_event_and_naive_time_are_refused(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    with pytest.raises(ValueError):
        ledger.append("deleted_quietly", "x", T0)
    with pytest.raises(ValueError, match="offset"):
        ledger.append(Event.WIPE, "x", datetime(2025, 1, 1))
    assert not ledger.path.exists() or ledger.path.read_bytes() == b""


def test_event_names_are_stable() -> None:
    assert {event.value for event in Event} == {
        "erasure", "hold_added", "hold_released", "policy_changed", "verification",
        "minimum_period_breach", "wipe", "audio_access", "capacity_warning", "export",
    }


def _append_many(folder: str, who: str, count: int) -> None:
    ledger = ledger_in(Path(folder))
    for n in range(count):
        ledger.append(Event.VERIFICATION, who, T0 + timedelta(seconds=n), result="ok", n=n)


def test_two_processes_appending_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), who, 60)) for who in ("daemon", "cli")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    ledger = ledger_in(tmp_path)
    assert ledger.verify() == []
    entries = list(ledger.entries())
    assert [entry.seq for entry in entries] == list(range(1, 121))
    for who in ("daemon", "cli"):
        assert [entry.details["n"] for entry in entries if entry.actor == who] == list(range(60))
    assert auditor_check(ledger.path, KEY) == 120


def test_edited_details_are_caught_and_named(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 5)
    lines = lines_of(ledger)
    lines[2] = lines[2].replace(b'"call_id":"c2"', b'"call_id":"c9"')
    ledger.path.write_bytes(b"".join(lines))
    assert problems_of(ledger) == ["line 3, seq 3: bad MAC: the entry was edited or forged without the key"]


def test_deleted_middle_line_is_caught(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 5)
    lines = lines_of(ledger)
    del lines[2]
    ledger.path.write_bytes(b"".join(lines))
    problems = problems_of(ledger)
    assert problems[0] == "line 3, seq 4: gap: seq (expected 3)"
    assert problems[1].startswith("line 3, seq 4: broken chain")
    assert len(problems) == 2


def test_cut_off_tail_is_caught_by_the_head_and_append_refuses(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 5)
    lines = lines_of(ledger)
    ledger.path.write_bytes(b"".join(lines[:3]))
    assert problems_of(ledger) == ["seq 5: tail missing: the head says seq 5 but the ledger ends at seq 3"]
    with pytest.raises(LedgerError, match="does not end where"):
        ledger.append(Event.WIPE, "x", T0)
    assert lines_of(ledger) == lines[:3], "a refused append changes nothing"
    ledger.path.write_bytes(b"")
    assert problems_of(ledger) == ["seq 5: tail missing: the head says seq 5 but the ledger is empty"]


def test_swapped_lines_are_caught(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 5)
    lines = lines_of(ledger)
    lines[1], lines[2] = lines[2], lines[1]
    ledger.path.write_bytes(b"".join(lines))
    problems = problems_of(ledger)
    assert any(problem.startswith("line 2, seq 3: gap") for problem in problems)
    assert any(problem.startswith("line 3, seq 2: repeated or out-of-order") for problem in problems)
    assert any(problem.startswith("line 2, seq 3: broken chain") for problem in problems)


def test_forged_chain_with_plain_sha256_is_caught(tmp_path: Path) -> None:
    """An attacker without the key edits an entry and rebuilds every link
    and "MAC" from there with SHA-256, as one could for a plain hash chain."""
    ledger = ledger_in(tmp_path)
    fill(ledger, 4)
    entries = [json.loads(line) for line in lines_of(ledger)]
    entries[1]["reason"] = "定期点検"
    prev = entries[0]["mac"]
    for entry in entries[1:]:
        entry["prev"] = prev
        body = {name: value for name, value in entry.items() if name != "mac"}
        entry["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        prev = entry["mac"]
    ledger.path.write_bytes(b"".join(json.dumps(entry).encode() + b"\n" for entry in entries))
    problems = problems_of(ledger)
    assert [problem.split(":")[0] for problem in problems if "bad MAC" in problem] == [
        "line 2, seq 2", "line 3, seq 3", "line 4, seq 4"
    ]
    assert "line 4, seq 4: last entry is not the one the head recorded" in problems


def test_wrong_key_verifies_nothing(tmp_path: Path) -> None:
    fill(ledger_in(tmp_path), 3)
    other = ledger_in(tmp_path, MasterKey(bytes(range(2, 34))).derive(KEY_LABEL))
    problems = problems_of(other)
    assert sum("bad MAC" in problem for problem in problems) == 3
    assert "ledger: head fails its MAC (edited or written without the key)" in problems


def test_head_edited_or_deleted(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 3)
    head = json.loads(ledger.head_path.read_bytes())
    ledger.head_path.write_text(json.dumps({**head, "seq": 2}))
    assert problems_of(ledger) == ["ledger: head fails its MAC (edited or written without the key)"]
    with pytest.raises(LedgerError, match="head fails its MAC"):
        ledger.append(Event.WIPE, "x", T0)
    ledger.head_path.write_text("not json")
    assert problems_of(ledger) == ["ledger: head is not readable"]
    ledger.head_path.unlink()
    assert problems_of(ledger) == ["ledger: head is missing but the ledger has entries"]
    with pytest.raises(LedgerError, match="missing"):
        ledger.append(Event.WIPE, "x", T0)


def test_unparseable_line_is_named(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 3)
    lines = lines_of(ledger)
    lines[1] = b'{"seq": 2, "garbage\n'
    ledger.path.write_bytes(b"".join(lines))
    problems = problems_of(ledger)
    assert problems[0].startswith("line 2: unparseable line")
    with pytest.raises(LedgerError, match="line 2"):
        list(ledger.entries())


def test_torn_last_line_is_reported_then_removed_by_the_next_append(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 3)
    complete = ledger.path.read_bytes()
    with ledger.path.open("ab") as file:
        file.write(b'{"actor":"tanaka","approved_by":null,"at":"2025-04')
    assert problems_of(ledger) == [
        "line 4: torn last entry (no newline): a crash during an append; "
        "that entry was never recorded and the next append removes it"
    ]
    assert [entry.seq for entry in ledger.entries()] == [1, 2, 3]
    entry = ledger.append(Event.CAPACITY_WARNING, "callrec", T0, free_bytes=1000)
    assert entry.seq == 4
    assert ledger.path.read_bytes().startswith(complete) and ledger.verify() == []


def test_power_loss_zeros_at_the_end_are_a_torn_line(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 2)
    with ledger.path.open("ab") as file:
        file.write(bytes(4096))
    assert "torn last entry" in problems_of(ledger)[0]
    ledger.append(Event.WIPE, "x", T0)
    assert ledger.verify() == [] and auditor_check(ledger.path, KEY) == 3


def test_crash_before_the_head_moved_is_not_a_problem(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    fill(ledger, 3)
    old_head = ledger.head_path.read_bytes()
    ledger.append(Event.POLICY_CHANGED, "admin", T0, sha256="ab" * 32)
    ledger.head_path.write_bytes(old_head)
    assert ledger.verify() == []
    assert ledger.append(Event.WIPE, "x", T0).seq == 5
    assert ledger.verify() == []
    ledger.head_path.write_bytes(old_head)
    assert problems_of(ledger) == ["line 5, seq 5: entries after seq 3 that the head never recorded"]


def test_long_ledger_append_reads_only_its_end(tmp_path: Path) -> None:
    ledger = ledger_in(tmp_path)
    big = "x" * 100_000
    ledger.append(Event.VERIFICATION, "callrec", T0, result=big)
    ledger.append(Event.VERIFICATION, "callrec", T0, result=big)
    ledger.append(Event.VERIFICATION, "callrec", T0, result="ok")
    assert ledger.verify() == [] and auditor_check(ledger.path, KEY) == 3


def anchored_in(folder: Path) -> Ledger:
    return Ledger.in_data_dir(folder / "data", KEY, folder / "anchor")


def test_a_ledger_put_back_from_an_earlier_copy_is_caught_by_its_anchor_and_not_continued(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    ledger = anchored_in(tmp_path)
    fill(ledger, 3)
    earlier = (ledger.path.read_bytes(), ledger.head_path.read_bytes())
    fill(ledger, 2)
    assert ledger.verify() == [] and (tmp_path / "anchor" / "ledger.head").is_file()
    ledger.path.write_bytes(earlier[0])
    ledger.head_path.write_bytes(earlier[1])
    assert [p for p in problems_of(ledger) if "rolled back" in p], problems_of(ledger)
    with pytest.raises(LedgerError, match="earlier copy"):
        ledger.append(Event.WIPE, "x", T0)
    assert ledger.path.read_bytes() == earlier[0], "a refused append changes nothing"


def test_an_anchor_that_cannot_be_written_never_stops_the_ledger(tmp_path: Path) -> None:
    """A second medium that is away: entries go on, logged once, and verify says the anchor cannot
    be read; the anchor catches up with the next entry once it is back."""
    (tmp_path / "data").mkdir()
    (tmp_path / "anchor").write_text("not a folder")
    ledger = anchored_in(tmp_path)
    fill(ledger, 2)
    assert [p.problem.split(": ")[-1] for p in ledger.verify()] == ["cannot be read (Not a directory)"]
    (tmp_path / "anchor").unlink()
    fill(ledger, 1)
    assert ledger.verify() == [] and ledger.head() == ledger._read_anchor()
