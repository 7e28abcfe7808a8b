"""The archive stage (大阪市水道局, 松本市 別紙2 row 4: 6か月保存経過後に別記憶媒体で6か月) on
recordings of the public captures: when the sweep moves them and erases them from the second
medium, that they travel unchanged and stay readable and verifiable, what a missing, foreign or
full medium does, and a crash (SIGKILL) before every step of a move.  The medium here is a folder
on the test's own filesystem; tests/test_archive_disk.py does it on a mounted ext4 image."""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.package import verify_package, write_package
from policy.loader import PolicyError, parse_policy
from policy.retention import Archive, Period, Retention, describe
from storage import archive
from storage.archive import LABEL_FILE, ArchiveError, MediumUnavailable, init_medium, mounted
from storage.layout import default_key_file
from storage.ledger import default_anchor_dir
from storage.records import RecordUnavailable, hand_out, sealed_files, set_hold
from storage.retention import final_cutoff, final_deadline, move_cutoff
from storage.store import Store
from storage.sweep import sweep
from storage.verify import verify_store
from storage.wipe import wipe_all
from tests.archive_helpers import (
    BEFORE_MOVE,
    CAPTURES,
    ERASE_26,
    ERASE_ALL,
    MOVE_26,
    MOVE_ALL,
    POLICY,
    STEPS,
    TOKYO,
    good_copy,
    jst,
    sweep_killed_before,
    vaults,
)
from tests.interop import capture, run_cli
from wire.wav import read_wav

RULES = parse_policy(POLICY).retention


# ---- the periods ------------------------------------------------------------------------------

def test_osaka_moves_the_day_after_six_months_and_erases_six_months_later() -> None:
    recorded = jst("2016-11-26T23:52:59")
    assert final_deadline(RULES, recorded, TOKYO) == ERASE_26
    assert move_cutoff(RULES, MOVE_26, TOKYO) > recorded >= move_cutoff(RULES, BEFORE_MOVE, TOKYO)  # type: ignore[operator]
    assert final_cutoff(RULES, ERASE_26, TOKYO) > recorded >= final_cutoff(RULES, ERASE_26 - 1, TOKYO)  # type: ignore[operator]
    assert move_cutoff(Retention(keep=Period(months=6)), MOVE_26, TOKYO) is None


PERIODS = st.one_of(st.builds(Period, days=st.integers(1, 400)), st.builds(Period, months=st.integers(1, 24)),
                    st.builds(Period, until_end_of_month_after=st.integers(0, 13)),
                    st.builds(Period, until_end_of_fiscal_year_after=st.integers(0, 2)))
MOMENTS = st.floats(jst("2026-01-01T00:00:00"), jst("2032-01-01T00:00:00")).map(lambda t: round(t, 6))
"""Capture times carry microseconds; a float a tenth of a microsecond before midnight is read as
midnight by the calendar (datetime rounds to the microsecond) but not by `<`."""


@settings(max_examples=300, deadline=None)
@given(PERIODS, PERIODS, MOMENTS, MOMENTS)
def test_the_final_cutoff_agrees_with_each_recordings_deadline(keep: Period, kept: Period, recorded: float,
                                                                now: float) -> None:
    rules = Retention(keep=keep, archive=Archive(keep=kept))
    deadline = final_deadline(rules, recorded, TOKYO)
    cutoff = final_cutoff(rules, now, TOKYO)
    assert deadline is not None and cutoff is not None
    assert (now >= deadline) == (recorded < cutoff)


@pytest.mark.parametrize(("keep", "kept", "recorded_on", "last"), [
    (Period(months=6), Period(months=6), date(2027, 1, 10), date(2028, 1, 10)),
    (Period(until_end_of_month_after=1), Period(until_end_of_fiscal_year_after=0), date(2027, 2, 10),
     date(2027, 3, 31)),  # device until 31 March: the archive's 年度 is the one that ends that day
    (Period(until_end_of_month_after=2), Period(until_end_of_fiscal_year_after=0), date(2027, 2, 10),
     date(2028, 3, 31)),  # device until 30 April: the next 年度
    (Period(days=30), Period(days=30), date(2027, 1, 31), date(2027, 4, 1)),
])
def test_the_archive_period_counts_from_the_day_after_the_device_period(keep: Period, kept: Period,
                                                                        recorded_on: date, last: date) -> None:
    assert Archive(keep=kept).last_day(keep.last_day(recorded_on)) == last
    recorded = jst(f"{recorded_on.isoformat()}T12:00:00")
    assert final_deadline(Retention(keep=keep, archive=Archive(keep=kept)), recorded, TOKYO) == jst(
        f"{(last + timedelta(days=1)).isoformat()}T00:00:00")


def test_an_archive_after_a_ring_is_refused_with_its_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("retention:\n  capacity: 1 GiB\n  archive:\n    keep: {months: 6}\n", "site.yaml")
    assert (info.value.line, info.value.field) == (1, "retention") and "archive stage" in info.value.reason
    with pytest.raises(PolicyError) as info:
        parse_policy("retention:\n  keep: {months: 6}\n  archive:\n    keep: {months: 6}\n    floor: 1 GiB\n",
                     "site.yaml")
    assert (info.value.line, info.value.field) == (5, "retention.archive.floor")
    with pytest.raises(PolicyError) as info:
        parse_policy("retention:\n  keep: {months: 6}\n  archive:\n    kept: {months: 6}\n", "site.yaml")
    assert info.value.field == "retention.archive.keep" and "required" in info.value.reason.lower()


def test_the_rule_in_words_says_where_and_how_long() -> None:
    ja, en = "".join(describe(RULES, "ja")), " ".join(describe(RULES, "en"))
    assert "起算して6か月を経過した後、最初の処理で、暗号化したまま別の記憶媒体(保存用媒体)へ移します" in ja
    assert "装置での保存期間が満了した日の翌日から起算して6か月を経過した後、最初の消去処理で消去します" in ja
    assert "保全(ホールド)中の録音は移しません" in ja and "装置に残っていても消去します" in ja
    assert "moved, still encrypted, to a second storage medium" in en and "the period on the device ends" in en


# ---- a store and its medium ------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive") / "data"
    for name in CAPTURES:
        run_cli("replay", capture(name), "--data-dir", folder)
    return folder


@pytest.fixture
def data(recorded: Path, tmp_path: Path) -> Path:
    """A fresh copy of the recorded data folder, with an empty folder as the medium."""
    folder = tmp_path / "data"
    shutil.copytree(recorded, folder)
    shutil.copy2(default_key_file(recorded), default_key_file(folder))
    shutil.copytree(default_anchor_dir(recorded), default_anchor_dir(folder))
    (tmp_path / "medium").mkdir(mode=0o700)
    (tmp_path / "policy.yaml").write_text(POLICY)
    return folder


@pytest.fixture
def store(data: Path) -> Iterator[Store]:
    with Store.open(data, TOKYO, archive_dir=data.parent / "medium") as opened:
        init_medium(opened, "test", require_own_filesystem=False)
        yield opened


def rows(store: Store) -> dict[str, object]:
    return {row.id: row for row in store.index.rows()}


def ledger(store: Store, event: str) -> list[dict]:
    return [e.details for e in store.ledger.entries() if e.event == event]


def test_moves_sealed_files_unchanged_and_reading_them_stays_the_same(store: Store, tmp_path: Path) -> None:
    before = {row.id: row for row in store.index.rows()}
    bytes_before = {p.name: p.read_bytes() for p in vaults(store.data_dir)}
    assert sweep(store, RULES, BEFORE_MOVE, "test").archive.moved == []
    result = sweep(store, RULES, MOVE_26, "test")
    day26 = sorted(i for i in before if i.startswith("20161126"))
    assert sorted(result.archive.moved) == day26 and len(day26) == 2
    sweep(store, RULES, MOVE_ALL, "test")
    medium = mounted(store)
    assert vaults(store.data_dir) == [] and {p.name: p.read_bytes() for p in vaults(medium.root)} == bytes_before
    for row in store.index.rows():
        assert row.stored_on == medium.id and row.archived_at and row.sha256 == before[row.id].sha256
        assert good_copy(store, row)
    moves = ledger(store, "archive_move")
    assert [sorted(m["ids"]) for m in moves] == [day26, sorted(set(before) - set(day26))]
    assert moves[0]["medium"] == medium.id and moves[0]["count"] == 2
    report = verify_store(store)
    assert report.ok and not report.unchecked and (report.recordings, report.archived) == (3, 3), report.findings
    g722 = next(row for row in store.index.rows() if row.side_files)
    copy = hand_out(store, g722.id, tmp_path / "out.wav", actor="test", reason=None, reason_required=False)
    assert copy.sha256 == g722.sha256 and len(copy.files) == 2
    assert store.index.used_bytes() == 0, "the device's capacity no longer counts what moved"


def test_the_medium_erases_after_its_own_period_and_the_ledger_says_so(store: Store) -> None:
    sweep(store, RULES, MOVE_ALL, "test")
    medium = mounted(store)
    assert sweep(store, RULES, ERASE_26 - 1, "test").archive.erased == []
    erased = sweep(store, RULES, ERASE_26, "test").archive.erased
    assert len(erased) == 2 and all(i.startswith("20161126") for i in erased)
    assert len(sweep(store, RULES, ERASE_ALL, "test").archive.erased) == 1
    assert vaults(medium.root) == [] and all(row.erased_reason == "retention" for row in store.index.rows())
    entries = [e for e in ledger(store, "erasure") if e.get("medium") == medium.id]
    assert [e["count"] for e in entries] == [2, 1] and entries[0]["by_reason"] == {"retention": 2}
    assert entries[0]["recorded_from"].startswith("2016-11-26") and "archive" in entries[0]["rule"]
    report = verify_store(store)
    assert report.ok and report.erased == 3


def test_a_missing_medium_keeps_recordings_on_the_device_and_says_so(store: Store, tmp_path: Path) -> None:
    medium = mounted(store)
    away = tmp_path / "away"
    medium.root.rename(away)
    result = sweep(store, RULES, MOVE_ALL, "test")
    (warning,) = result.plan.warnings
    assert warning.code == "archive_unavailable" and "not mounted" in warning.message
    assert warning.message.startswith("3 recording(s) past the period on this device stay on it")
    assert result.archive.moved == [] and len(vaults(store.data_dir)) == 4
    assert all(row.stored_on is None for row in store.index.rows())
    away.rename(medium.root)
    sweep(store, RULES, MOVE_ALL, "test")
    medium.root.rename(away)
    report = verify_store(store)
    assert report.ok and len(report.unchecked) == 3 and report.archived == 3
    assert all("not checked" in f.problem and "not mounted" in f.problem for f in report.unchecked)
    assert not any("is missing" in f.problem for f in report.unchecked)
    with pytest.raises(RecordUnavailable, match="not mounted"):
        sealed_files(store, next(store.index.rows()))
    overdue = sweep(store, RULES, ERASE_ALL, "test")
    assert [w.code for w in overdue.plan.warnings] == ["archive_erasure_overdue"] and overdue.archive.erased == []
    away.rename(medium.root)
    assert len(sweep(store, RULES, ERASE_ALL, "test").archive.erased) == 3


def test_past_both_periods_a_recording_the_medium_never_took_is_erased_on_the_device(store: Store) -> None:
    mounted(store).root.rename(store.data_dir.parent / "away")
    result = sweep(store, RULES, ERASE_ALL, "test")
    assert len(result.erased) == 3 and vaults(store.data_dir) == []
    assert [w.code for w in result.plan.warnings] == []


def test_a_policy_that_drops_the_archive_stage_erases_what_the_medium_holds_past_the_device_period(
        store: Store) -> None:
    """A city that stops archiving must not keep the archived recordings for ever: past the
    device period they go from the medium, and while it is away the sweep says they are overdue."""
    sweep(store, RULES, MOVE_ALL, "test")
    device_only = RULES.model_copy(update={"archive": None})
    medium = mounted(store)
    medium.root.rename(store.data_dir.parent / "away")
    away = sweep(store, device_only, MOVE_ALL + 86400, "test")
    assert [w.code for w in away.plan.warnings] == ["archive_erasure_overdue"] and away.archive.erased == []
    (store.data_dir.parent / "away").rename(medium.root)
    result = sweep(store, device_only, MOVE_ALL + 86400, "test")
    assert len(result.archive.erased) == 3 and vaults(medium.root) == [] and result.plan.warnings == ()
    assert all(row.erased_reason == "retention" for row in store.index.rows())


def test_a_full_medium_keeps_recordings_on_the_device(store: Store) -> None:
    full = RULES.model_copy(update={"archive": Archive(keep=Period(months=6), free_space_floor=2**59)})
    result = sweep(store, full, MOVE_ALL, "test")
    assert [w.code for w in result.plan.warnings] == ["archive_full"] and "no room" in result.plan.warnings[0].message
    assert result.archive.moved == [] and vaults(mounted(store).root) == [] and len(vaults(store.data_dir)) == 4


def test_a_held_recording_stays_on_the_device_until_released(store: Store) -> None:
    held = next(row.id for row in store.index.rows())
    set_hold(store, held, True, actor="test", reason="訴訟", approved_by=None)
    assert held not in sweep(store, RULES, MOVE_ALL, "test").archive.moved
    assert store.index.get(held).stored_on is None  # type: ignore[union-attr]
    assert sweep(store, RULES, ERASE_ALL, "test").erased == []
    set_hold(store, held, False, actor="test", reason="終結", approved_by=None)
    assert sweep(store, RULES, MOVE_ALL, "test").archive.moved == [held]


def test_a_tampered_archived_file_is_named_by_verify_and_never_handed_out(store: Store, tmp_path: Path) -> None:
    sweep(store, RULES, MOVE_ALL, "test")
    row = next(store.index.rows())
    assert row.audio_path is not None
    path = mounted(store).root / row.audio_path
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 0x01
    path.write_bytes(bytes(raw))
    report = verify_store(store)
    (finding,) = report.findings
    assert finding.subject == f"recording {row.id} on archive medium {row.stored_on}"
    assert "does not authenticate" in finding.problem and str(path) in finding.problem
    with pytest.raises(RecordUnavailable):
        hand_out(store, row.id, tmp_path / "out.wav", actor="test", reason=None, reason_required=False)
    assert not (tmp_path / "out.wav").exists()


def test_a_file_gone_from_a_mounted_medium_is_missing_not_unmounted(store: Store) -> None:
    sweep(store, RULES, MOVE_ALL, "test")
    row = next(store.index.rows())
    assert row.audio_path is not None
    (mounted(store).root / row.audio_path).unlink()
    (finding,) = verify_store(store).findings
    assert "is missing" in finding.problem and "archive medium" in finding.subject


def test_a_tampered_device_file_is_not_moved(store: Store) -> None:
    row = next(store.index.rows())
    assert row.audio_path is not None
    path = store.data_dir / row.audio_path
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 0x01
    path.write_bytes(bytes(raw))
    result = sweep(store, RULES, MOVE_ALL, "test")
    assert row.id not in result.archive.moved and len(result.archive.moved) == 2
    (warning,) = result.plan.warnings
    assert warning.code == "archive_move_refused" and row.id in warning.message
    assert store.index.get(row.id).stored_on is None and path.exists()  # type: ignore[union-attr]
    assert [p.name for p in vaults(mounted(store).root)].count(path.name) == 0


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_before_any_step_leaves_one_good_copy_and_the_next_sweep_finishes(data: Path, step: str) -> None:
    medium_dir = data.parent / "medium"
    with Store.open(data, TOKYO, archive_dir=medium_dir) as store:
        medium = init_medium(store, "test", require_own_filesystem=False)
        ids = sorted(row.id for row in store.index.rows())
    sweep_killed_before(step, data, medium_dir, data.parent / "policy.yaml", MOVE_ALL)
    with Store.open(data, TOKYO, archive_dir=medium_dir) as store:
        for row in store.index.rows():
            assert good_copy(store, row), f"{row.id} after a crash before {step}"
            assert b"".join(sealed_files(store, row)[0].chunks)
        findings = verify_store(store).findings
        assert not [f for f in findings if "is missing" in f.problem or "authenticate" in f.problem], findings
        sweep(store, RULES, MOVE_ALL, "test")
        assert all(row.stored_on == medium.id and row.archived_at for row in store.index.rows())
        assert all(good_copy(store, row) for row in store.index.rows())
        assert vaults(store.data_dir) == [] and len(vaults(medium_dir)) == 4, "one copy of each file, on the medium"
        report = verify_store(store)
        assert report.ok and report.archived == 3, report.findings
        assert sorted({i for entry in ledger(store, "archive_move") for i in entry["ids"]}) == ids


def test_init_refuses_the_data_folders_filesystem_a_full_folder_and_a_foreign_label(data: Path, tmp_path: Path) -> None:
    medium_dir = data.parent / "medium"
    with Store.open(data, TOKYO, archive_dir=medium_dir) as store:
        with pytest.raises(ArchiveError, match="same filesystem"):
            init_medium(store, "test")
        (medium_dir / "notes.txt").write_text("x")
        with pytest.raises(ArchiveError, match="not empty"):
            init_medium(store, "test", require_own_filesystem=False)
        (medium_dir / "notes.txt").unlink()
        first = init_medium(store, "test", require_own_filesystem=False)
        assert init_medium(store, "test", require_own_filesystem=False) == first
        assert ledger(store, "archive_medium") == [{"medium": first.id, "folder": str(medium_dir)}]
    other = tmp_path / "other"
    run_cli("replay", capture(CAPTURES[0]), "--data-dir", other)
    with Store.open(other, TOKYO, archive_dir=medium_dir) as stranger, pytest.raises(MediumUnavailable,
                                                                                     match="another master key"):
        mounted(stranger)
    label = medium_dir / LABEL_FILE
    label.write_text(label.read_text().replace(first.id, "0" * 16))
    with Store.open(data, TOKYO, archive_dir=medium_dir) as store, pytest.raises(MediumUnavailable, match="MAC"):
        mounted(store)


def test_the_commands_say_where_recordings_are(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {store.data_dir}\narchive_dir: {store.archive_dir}\n"
                      f"policy: {tmp_path / 'policy.yaml'}\n")
    run = json.loads(run_cli("retention", "run", "--now", "2017-05-28T00:00:00", "--json", "--config", config).stdout)
    assert len(run["archive"]["move"]) == 3 and run["warnings"] == []
    status = run_cli("archive", "status", "--config", config)
    assert f"archive medium {mounted(store).id} mounted" in status.stdout and "3 recording(s)" in status.stdout
    assert run_cli("verify", "--config", config).stdout.splitlines()[-1].startswith(
        "ok: 3 recordings checked (3 on the archive medium, 0 of them not checked)")
    out = tmp_path / "call.wav"
    run_cli("calls", "audio", next(store.index.rows()).id, "-o", out, "--config", config)
    assert out.stat().st_size > 44
    store.archive_dir.rename(tmp_path / "away")  # type: ignore[union-attr]
    verify = run_cli("verify", "--config", config, check=False)
    assert verify.returncode == 3 and verify.stdout.splitlines()[-1].startswith("INCOMPLETE")
    assert "not checked: it is on archive medium" in verify.stdout and "not mounted" in verify.stdout
    assert run_cli("archive", "status", "--config", config, check=False).returncode == 1
    audio = run_cli("calls", "audio", next(store.index.rows()).id, "-o", tmp_path / "b.wav", "--config", config,
                    check=False)
    assert audio.returncode == 1 and "not mounted" in audio.stderr
    init = run_cli("archive", "init", "--config", config, check=False)
    assert init.returncode == 1 and "does not exist" in init.stderr


def test_a_medium_that_fills_during_a_copy_keeps_the_recording_and_nothing_half_copied(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_full(fd: int, data: bytes | memoryview) -> None:
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(archive, "write_all", half_then_full)
    result = sweep(store, RULES, MOVE_ALL, "test")
    (warning,) = result.plan.warnings
    assert warning.code == "archive_full" and "No space left" in warning.message
    assert result.archive.moved == [] and vaults(mounted(store).root) == [] and len(vaults(store.data_dir)) == 4
    monkeypatch.undo()
    assert len(sweep(store, RULES, MOVE_ALL, "test").archive.moved) == 3


def test_a_copy_package_and_the_consoles_player_read_a_moved_recording(store: Store, tmp_path: Path) -> None:
    """The access layer's copy (fulfil) and the console's listening take the files from
    storage.records.sealed_files, which reads a moved recording from the medium."""
    sweep(store, RULES, MOVE_ALL, "test")
    row = next(row for row in store.index.rows() if row.side_files)
    manifest = {"copy_number": "C2017-0001", "call": {"id": row.id, "sha256": row.sha256}}
    info = write_package(tmp_path / "C2017-0001.zip", sealed_files(store, row), manifest, store.master)
    assert verify_package(tmp_path / "C2017-0001.zip", info.fingerprint).ok
    encoding, channels, _, audio = read_wav(b"".join(sealed_files(store, row)[0].chunks))
    assert channels == 2 and len(audio) > 0 and encoding


def test_decommissioning_shreds_the_mounted_medium_too(store: Store) -> None:
    sweep(store, RULES, MOVE_26, "test")
    result = wipe_all(store, "test", "lease return")
    assert (result.files, result.archive_files) == (2, 2)
    assert vaults(store.data_dir) == [] and vaults(mounted(store).root) == []
    assert ledger(store, "wipe")[0]["archive_files"] == 2
