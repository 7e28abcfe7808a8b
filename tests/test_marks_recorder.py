"""Harassment marks keyed on the staff side's extension: the recorder finds the code while the
call goes on (at a checkpoint, before the BYE) and at its end, hands the mark over with the
call and the time of the code's last digit, ignores the caller's keypad and repeats, asks an
on-demand line's unasked call to be recorded; and `callrec replay` of such a capture lands the
mark on the right row of a real store, ledgered, held, logged as `harassment.marked`."""
from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from callrec import journal
from callrec.logs import configure
from policy.decide import Direction, PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from recorder.record import CallSnapshot
from storage.marks import KeypadMarks
from tests.builders import write_pcap
from tests.call_frames import T0
from tests.interop import calls, run_cli
from tests.marks_helpers import HARASSMENT, marks_policy, open_store, record_calls
from tests.memory_sink import MemoryRecording, MemorySink
from tests.on_demand_frames import AUTOMATIC, START, STOP, call
from tests.test_service import _datagram_socket, _fields

POLICY = AUTOMATIC + HARASSMENT


@dataclass
class Marks:
    """A MarkSink that keeps what it is handed, and the recorder's clock at that moment."""

    recorder: Recorder | None = None
    got: list[tuple[str, str, float, float]] = field(default_factory=list)

    def mark(self, call: CallSnapshot, category: str, at: float) -> None:
        assert self.recorder is not None
        self.got.append((call.sip_call_id, category, at, self.recorder.now))


def _run(policy: str, frames: list[tuple[float, bytes]], until: float) -> tuple[Recorder, Marks, MemorySink]:
    sink, marks = MemorySink(), Marks()
    recorder = Recorder(PolicyDecider(parse_policy(policy)), sink, marks)
    marks.recorder = recorder
    for ts, frame in frames:
        recorder.feed_frame(ts, 1, frame)
    recorder.advance(until)
    return recorder, marks, sink


def test_the_code_is_found_during_the_call_with_the_time_of_its_last_digit() -> None:
    frames = call(12, keyed={3.0: "*91", 7.0: "5*91", 9.0: "*92"}, remote_keyed={2.0: "*92"})
    recorder, marks, _ = _run(POLICY, frames, T0 + 30)
    end = T0 + 1.05 + 12 + 0.2
    assert [(c, cat) for c, cat, _, _ in marks.got] == [("c1@x", "threat"), ("c1@x", "demand")], \
        "the caller's keypad never marks; the same code twice is one mark"
    (_, _, at, seen), (_, _, at2, seen2) = marks.got
    assert abs(at - (T0 + 1.06 + 3.0 + 0.6)) < 0.05, "the capture time of the code's last digit"
    assert at < seen < end and seen - at < 1.5, "handed over at the next checkpoint, while the call goes on"
    assert seen2 < end and recorder.counters()["harassment_marks"] == 2


def test_digits_after_the_last_checkpoint_count_at_the_end() -> None:
    """A capture replayed: the code keyed just before the hang-up is found when the call closes."""
    frames = call(6, keyed={5.0: "*92"})
    _, marks, sink = _run(POLICY, frames, T0 + 30)
    assert [(c, cat) for c, cat, _, _ in marks.got] == [("c1@x", "demand")]
    assert sink.recordings[0].result is not None


def _snapshot(serial: int = 7) -> CallSnapshot:
    return CallSnapshot(serial, "c9@x", T0, T0 + 1, None, Direction.INBOUND, "0263111111", "0355501234",
                        "0355501234", "0263111111", False, ("PCMU",), "", False, extension="201")


def test_without_a_harassment_section_nothing_is_watched() -> None:
    frames = call(6, keyed={2.0: "*91"})
    _, marks, _ = _run(AUTOMATIC, frames, T0 + 30)
    assert marks.got == []
    for policy, wrapped in ((AUTOMATIC, False), (POLICY, True)):
        watch = Recorder(PolicyDecider(parse_policy(policy)), MemorySink(), Marks()).marks
        watch.begin(_snapshot(), T0 + 1)
        handle = watch.open_audio(_snapshot(), T0 + 1, "PCMU")
        assert isinstance(handle, MemoryRecording) != wrapped, "unwatched calls keep the sink's own handle"
        assert handle.checkpoints == 0, "what the wrapper does not define is the inner handle's"


def test_a_mark_on_an_unasked_on_demand_call_records_it_from_its_start() -> None:
    on_demand = (AUTOMATIC + "on_demand:\n  clause: 品川区 第2条(2)\n"
                 f"  start_code: '{START}'\n  stop_code: '{STOP}'\n  lines: [{{number: '0263111111'}}]\n")
    frames = call(8, keyed={4.0: "*91"})
    _, marks, sink = _run(on_demand + HARASSMENT, frames, T0 + 30)
    assert [cat for _, cat, _, _ in marks.got] == ["threat"]
    [(started, _)] = sink.begun
    assert started.started_by == "dtmf"
    assert sink.recordings[0].result is not None and sink.recordings[0].result.frames >= 8 * 8000


def test_replay_lands_the_mark_on_its_row_held_ledgered_and_logged(tmp_path: Path) -> None:
    marked = call(10, keyed={4.0: "*91"}, call_id="marked@x", caller="0355501234", seed=1)
    other = call(6, call_id="other@x", caller="0355509999", start=T0 + 2, tport=20002, pport=40002, seed=7)
    capture = write_pcap(tmp_path / "calls.pcap", sorted(marked + other, key=lambda f: f[0]))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    data = tmp_path / "data"
    done = run_cli("replay", capture, "--data-dir", data, "--policy", policy)
    rows = {r["sip_call_id"]: r for r in calls(data)}
    db = sqlite3.connect(data / "index.sqlite3")
    db.row_factory = sqlite3.Row
    [mark] = [dict(r) for r in db.execute("SELECT * FROM marks")]
    held = {r["id"]: r["evidence_until"] for r in db.execute("SELECT id, evidence_until FROM calls")}
    db.close()
    assert mark["call_id"] == rows["marked@x"]["id"] and mark["category"] == "threat" and mark["via"] == "dtmf"
    assert mark["marked_by"] == "staff side", "call_frames' calls name no extension"
    assert held[rows["marked@x"]["id"]] == mark["hold_until"] and held[rows["other@x"]["id"]] is None
    [line] = [ln for ln in done.stderr.splitlines() if "harassment.marked" in ln]
    assert f"call_id='{rows['marked@x']['id']}'" in line and "category='threat'" in line
    assert "0355501234" not in line, "no caller number in the alert"
    ledger = run_cli("ledger", "list", "--json", "--data-dir", data).stdout
    assert '"harassment_marked"' in ledger and mark["id"] in ledger


@dataclass
class OneRecording:
    """The recording store's side of KeypadMarks: every call is this row."""

    row_id: str

    def record_id(self, serial: int) -> str | None:
        return self.row_id


def test_a_keypad_mark_is_a_journal_entry_of_its_own_without_the_callers_number(tmp_path: Path) -> None:
    with open_store(tmp_path / "data") as store:
        [row_id] = record_calls(store, ["0355501234"])
        row = store.index.get(row_id)
        assert row is not None
        snapshot = dataclasses.replace(_snapshot(), sip_call_id=row.sip_call_id)
        keypad = KeypadMarks(store, marks_policy().harassment, OneRecording(row_id))
        sock = _datagram_socket(tmp_path / "journal")
        configure("warning", journal=True)  # the ledger's and the store's info lines are not looked at
        structlog.configure(logger_factory=journal.JournalLoggerFactory(str(tmp_path / "journal")))
        try:
            keypad.mark(snapshot, "threat", T0 + 3)
            keypad.mark(dataclasses.replace(snapshot, serial=8), "nonsense", T0 + 4)
            entry, failed = _fields(sock.recv(65536)), _fields(sock.recv(65536))
        finally:
            configure("info", journal=False)
            keypad.close()
            sock.close()
    assert entry["EVENT"] == "harassment.marked" and entry["PRIORITY"] == "4"
    assert (entry["CALL_ID"], entry["CATEGORY"], entry["EXTENSION"], entry["LINE"]) == (
        row_id, "threat", "201", "0263111111")
    assert entry["MARK_ID"].startswith("M") and "0355501234" not in str(entry)
    assert failed["EVENT"] == "harassment.mark_failed" and "unknown category" in failed["REASON"]
