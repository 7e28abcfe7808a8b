"""Finding a call from what a request form says (熊本市 様式1, 山形市 別記様式, さいたま 様式1):
ranking with reasons, every written form of a number, the window's edges, erased recordings
told by time only, the honest "no such recording", calls still being recorded, the time zone
of a form's time; then the same through `callrec calls find` and `calls list` on replayed
captures."""
from __future__ import annotations

import argparse
import json
import re
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callrec.cmd_search import span
from storage.index import CallIndex, connect, iso
from storage.search import RANKED, CallQuery, QueryError, find, parse_span, parse_time, select, statement
from tests.builders import PBX, TRUNK, write_pcap
from tests.call_frames import bye, media, signalling
from tests.interop import REPO, capture, run_cli

TOKYO = ZoneInfo("Asia/Tokyo")
AROUND = datetime(2026, 11, 20, 10, 30, tzinfo=TOKYO).timestamp()
CALLER, OTHER, DID = "0312345678", "0398765432", "0963281234"
KUMAMOTO = REPO / "policies" / "kumamoto.yaml"


@pytest.fixture
def index(tmp_path: Path) -> CallIndex:
    return CallIndex(tmp_path / "index.sqlite3")


def add(index: CallIndex, call_id: str, at: float, *, duration: float | None = 175.0, remote: str | None = CALLER,
        local: str | None = DID, direction: str = "inbound", state: str = "sealed", withheld: bool = False) -> None:
    """A row as the recorder leaves it: `at` is when the call was answered (recorded_at)."""
    ended = at + duration if duration is not None else None
    index.insert(id=call_id, sip_call_id=f"{call_id}@pbx", started_at=iso(at - 5, TOKYO), answered_at=iso(at, TOKYO),
                 ended_at=iso(ended, TOKYO), duration=duration, direction=direction, local_number=local,
                 remote_number=remote, caller=remote, callee=local, caller_withheld=withheld, state=state,
                 complete=state == "sealed", recorded_at=at)


def search(index: CallIndex, now: float = AROUND + 86400, **query: Any) -> Any:
    return find(index, CallQuery(**query), tz=TOKYO, now=now)


def test_closest_first_each_with_why(index: CallIndex) -> None:
    add(index, "near", AROUND + 180)
    add(index, "long", AROUND + 20 * 60, duration=720)
    add(index, "withheld", AROUND - 120, duration=180, remote=None, withheld=True)
    add(index, "other", AROUND + 60, remote=OTHER)
    result = search(index, around=AROUND, duration_seconds=180, remote_number="03-1234-5678")
    assert [c.row.id for c in result.candidates] == ["near", "long", "withheld"]
    near, long, withheld = result.candidates
    assert near.reasons == ("time 10:33, 3 min after 10:30", "duration 2:55 for about 3:00", "outside number matches")
    assert "duration 12:00, not about 3:00" in long.reasons
    assert "outside number withheld (非通知): cannot be checked" in withheld.reasons
    assert near.score > long.score > withheld.score and near.score >= 90
    assert result.others == 1 and result.erased == () and result.found
    assert result.answer == "3 recordings may be this call, the closest first."
    assert result.description == "around 2026-11-20 10:30 (±30 min), about 3:00 long (±1 min), outside number 0312345678"


@pytest.mark.parametrize("written", ["03-1234-5678", "0312345678", "+81 3 1234 5678", "+81-3-1234-5678",
                                     "(03)1234-5678", "03 (1234) 5678", "+81 (0)3 1234 5678",
                                     "０３－１２３４－５６７８", "+81312345678"])
def test_every_written_form_of_the_number(index: CallIndex, written: str) -> None:
    add(index, "it", AROUND)
    add(index, "not", AROUND, remote=OTHER)
    [found] = search(index, around=AROUND, remote_number=written).candidates
    assert found.row.id == "it" and "outside number matches" in found.reasons


def test_a_dialling_prefix_or_a_missing_area_code_is_a_partial_match(index: CallIndex) -> None:
    add(index, "dialled", AROUND, remote="0" + CALLER, local="1234", direction="outbound")
    [hit] = search(index, around=AROUND, remote_number="03-1234-5678").candidates
    assert "outside number 00312345678 matches 0312345678 in its last 10 digits" in hit.reasons
    [hit] = search(index, around=AROUND, remote_number="1234-5678").candidates
    assert "outside number 00312345678 matches 12345678 in its last 8 digits" in hit.reasons
    too_short = search(index, around=AROUND, remote_number="5678")
    assert too_short.candidates == () and too_short.others == 1


def test_an_extension_on_the_form_finds_its_did(index: CallIndex) -> None:
    add(index, "did", AROUND)
    add(index, "elsewhere", AROUND, local="0963289999")
    [hit] = search(index, around=AROUND, local_number="81234").candidates
    assert hit.row.id == "did" and "city-side number 0963281234 matches 81234 in its last 5 digits" in hit.reasons
    [hit] = search(index, around=AROUND, local_number="096-328-1234").candidates
    assert "city-side number matches" in hit.reasons


def test_window_edges_are_inside(index: CallIndex) -> None:
    for name, at in (("first", AROUND - 1800), ("last", AROUND + 1800), ("before", AROUND - 1800.5),
                     ("after", AROUND + 1800.5)):
        add(index, name, at)
    assert {c.row.id for c in search(index, around=AROUND).candidates} == {"first", "last"}
    assert {c.row.id for c in search(index, around=AROUND, window_seconds=1800.5).candidates} == {
        "first", "last", "before", "after"}
    period = search(index, start=AROUND - 1800, end=AROUND + 1800)
    assert {c.row.id for c in period.candidates} == {"first", "last"}
    assert "within 2026-11-20 10:00 – 2026-11-20 11:00" in period.candidates[0].reasons[0]


def test_erased_in_the_window_are_told_by_time_only(index: CallIndex) -> None:
    add(index, "kept", AROUND + 60, remote=OTHER)
    add(index, "gone", AROUND - 240, duration=182)
    add(index, "long-gone", AROUND - 7200)
    index.mark_erased("gone", "2027-02-25T00:00:05.000+09:00", "retention")
    index.mark_erased("long-gone", "2027-02-25T00:00:05.000+09:00", "capacity")
    result = search(index, around=AROUND, remote_number=CALLER, duration_seconds=180)
    assert result.candidates == () and not result.found and result.others == 1
    [tomb] = result.erased
    assert tomb.id == "gone" and tomb.erased_reason == "retention"
    assert tomb.sentence == ("a recording in that window (time 2026-11-20 10:26, 3:02) was erased on 2027-02-25 "
                             "(retention rule: past its retention period)")
    assert result.answer.startswith("No kept recording matches. 1 recording made in that window was erased")
    assert "cannot be told" in result.answer
    assert any("matched by time only" in note for note in result.notes)


def test_no_such_recording_is_said_only_when_nothing_is_there(index: CallIndex) -> None:
    empty = search(index, around=AROUND, remote_number=CALLER)
    assert not empty.found and empty.erased == () and empty.others == 0
    assert empty.answer.startswith("No such recording: nothing recorded in that window matches, and nothing in it "
                                   "was erased.")
    add(index, "other", AROUND, remote=OTHER)
    other = search(index, around=AROUND, remote_number=CALLER)
    assert "1 other recording in it is of other numbers or directions" in other.answer
    assert search(index, remote_number=CALLER).answer.startswith("No such recording: no kept recording has that number")


def test_a_call_still_being_recorded_is_a_candidate_in_progress(index: CallIndex) -> None:
    add(index, "live", AROUND, duration=None, state="recording")
    [live] = search(index, now=AROUND + 130, around=AROUND, duration_seconds=180).candidates
    assert live.in_progress and live.as_dict()["in_progress"] is True
    assert "in progress: still being recorded" in live.reasons
    assert "duration 2:10 so far, about 3:00 asked" in live.reasons


def test_direction_rules_out_the_other_way_but_not_the_unknown(index: CallIndex) -> None:
    add(index, "in", AROUND)
    add(index, "out", AROUND, direction="outbound")
    add(index, "unknown", AROUND + 30, direction="unknown")
    result = search(index, around=AROUND, direction="inbound")
    assert [c.row.id for c in result.candidates] == ["in", "unknown"]
    assert "direction not known: cannot be checked" in result.candidates[1].reasons and result.others == 1


def test_a_number_alone_searches_all_time(index: CallIndex) -> None:
    add(index, "2026", AROUND)
    add(index, "2024", AROUND - 2 * 365 * 86400, remote="0" + CALLER, direction="outbound")
    add(index, "other", AROUND - 86400, remote=OTHER)
    add(index, "gone", AROUND - 3 * 86400)
    index.mark_erased("gone", "2027-01-01T00:00:00.000+09:00", "retention")
    result = search(index, remote_number="+81 3-1234-5678")
    assert [c.row.id for c in result.candidates] == ["2026", "2024"]
    assert result.erased == () and "without a time" in result.notes[0]


def test_a_search_needs_a_time_or_a_number(index: CallIndex) -> None:
    with pytest.raises(QueryError, match="needs a time or a number"):
        search(index, duration_seconds=180, direction="inbound")
    for bad, message in (({"around": AROUND, "start": AROUND}, "not both"), ({"start": 2.0, "end": 1.0}, "ends before"),
                         ({"window_seconds": 0}, "longer than zero"), ({"duration_seconds": -3}, "longer than zero"),
                         ({"direction": "sideways"}, "no such direction")):
        with pytest.raises(QueryError, match=message):
            CallQuery(**bad)


def test_listing_filters_take_only_what_is_sure(index: CallIndex) -> None:
    add(index, "in", AROUND)
    add(index, "withheld", AROUND + 10, remote=None, withheld=True)
    add(index, "out", AROUND + 20, remote="0" + CALLER, direction="outbound")
    add(index, "gone", AROUND + 30)
    index.mark_erased("gone", "2027-01-01T00:00:00.000+09:00", "retention")
    assert [r.id for r in select(index, CallQuery(remote_number="03-1234-5678"))] == ["in", "out"]
    assert [r.id for r in select(index, CallQuery(remote_number=CALLER, direction="inbound"))] == ["in"]
    assert [r.id for r in select(index, CallQuery(start=AROUND + 5))] == ["withheld", "out"]
    assert [r.id for r in select(index, CallQuery(start=AROUND + 5), erased=True)] == ["withheld", "out", "gone"]


def test_the_window_is_an_index_range_in_plain_sql(index: CallIndex) -> None:
    query = statement(CallQuery(around=AROUND, remote_number=CALLER, duration_seconds=180))
    assert query.sql.startswith(f"SELECT {', '.join(RANKED)} FROM calls WHERE recorded_at >= ? AND recorded_at <= ? "
                                "AND leg IS NULL AND (erased_at IS NOT NULL OR ((remote_number IS NULL OR ")
    assert query.params == (AROUND - 1800, AROUND + 1800, CALLER, *(CALLER[-n:] for n in range(6, 10)), f"%{CALLER}")
    assert statement(CallQuery(around=AROUND, duration_seconds=180), ("*",)).sql == (
        "SELECT * FROM calls WHERE recorded_at >= ? AND recorded_at <= ? AND leg IS NULL ORDER BY recorded_at, id")
    with closing(connect(index.path)) as db:
        plan = " ".join(str(r[3]) for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.params))
    assert "USING INDEX calls_recorded" in plan
    alone = statement(CallQuery(remote_number="03-1234-5678"))
    assert alone.params == ("%0312345678", "0312345678")
    assert not re.search(r"strftime|julianday|datetime\(|glob|iif\(|printf", alone.sql + query.sql, re.IGNORECASE)


def test_a_form_time_is_read_in_the_policy_time_zone() -> None:
    assert parse_time("2026-11-20 10:30", TOKYO, "--at") == AROUND
    assert parse_time("2026/11/20 10:30", TOKYO, "--at") == AROUND
    assert parse_time("2026-11-20T01:30+00:00", TOKYO, "--at") == AROUND
    assert parse_time("2026-11-20 10:30", ZoneInfo("UTC"), "--at") == AROUND + 9 * 3600
    assert AROUND == datetime(2026, 11, 20, 1, 30, tzinfo=UTC).timestamp()
    with pytest.raises(QueryError, match="--at 'Nov 20' is not a date and time"):
        parse_time("Nov 20", TOKYO, "--at")


@pytest.mark.parametrize(("text", "seconds"), [("3", 180), ("3m", 180), ("2:55", 175), ("90s", 90),
                                               ("1h30m", 5400), ("1:02:03", 3723), ("0.5m", 30)])
def test_lengths_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds


@pytest.mark.parametrize("text", ["3x", "", "m", "0", "-3m"])
def test_a_length_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(QueryError):
        parse_span(text)
    with pytest.raises(argparse.ArgumentTypeError):
        span(text)


def _trunk_call(call_id: str, start: float, caller: str, port: int) -> list[tuple[float, bytes]]:
    """The carrier's leg as the mirror shows it: answered a second after the INVITE, three
    seconds of RTP, then the BYE."""
    up, _ = media(start + 1.05, 2, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=port)
    return (signalling(call_id, callee=DID, caller=caller, t=start, tport=port, pport=port + 20000) + up
            + bye(start + 4, call_id, DID, caller))


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[Path, Path]:
    """Two inbound calls through `callrec replay`: ours at 10:33 JST, another caller's at 10:40."""
    frames = (_trunk_call("ours@trunk", AROUND + 180, "+81312345678", 20000)
              + _trunk_call("theirs@trunk", AROUND + 600, OTHER, 20002))
    policy = tmp_path / "policy.yaml"
    policy.write_text("network: {trunk: [203.0.113.0/28], pbx: [192.0.2.10]}\n")
    data = tmp_path / "data"
    run_cli("replay", write_pcap(tmp_path / "mirror.pcap", sorted(frames)), "--data-dir", data, "--policy", policy)
    return data, policy


def test_cli_finds_the_replayed_call_from_the_form(replayed: tuple[Path, Path], tmp_path: Path) -> None:
    data, policy = replayed
    where = ("--data-dir", data, "--policy", policy)
    found = json.loads(run_cli("calls", "find", "--at", "2026-11-20 10:30", "--duration", "0:03",
                               "--number", "(03)1234-5678", "--json", *where).stdout)
    [hit] = found["candidates"]
    assert (hit["remote_number"], hit["local_number"], hit["direction"]) == (CALLER, DID, "inbound")
    assert "outside number matches" in hit["reasons"] and found["others_in_window"] == 1 and found["found"]
    text = run_cli("calls", "find", "--at", "2026/11/20 10:30", "--number", "+81 3 1234 5678", "--local", "81234",
                   *where).stdout
    assert hit["id"] in text and "time 10:33, 3 min after 10:30" in text
    assert "city-side number 0963281234 matches 81234 in its last 5 digits" in text

    utc = tmp_path / "utc.yaml"
    utc.write_text(policy.read_text() + "timezone: UTC\n")
    elsewhere = run_cli("calls", "find", "--at", "2026-11-20 10:30", "--data-dir", data, "--policy", utc).stdout
    assert "No such recording" in elsewhere, "10:30 UTC is 19:30 in Tokyo: nothing was recorded then"

    listed = json.loads(run_cli("calls", "list", "--number", "03-1234-5678", "--direction", "inbound", "--json",
                                *where).stdout)
    assert [r["id"] for r in listed] == [hit["id"]]
    later = json.loads(run_cli("calls", "list", "--from", "2026-11-20 10:35", "--json", *where).stdout)
    assert [r["remote_number"] for r in later] == [OTHER]


def test_cli_refuses_what_it_cannot_read(replayed: tuple[Path, Path]) -> None:
    data, _ = replayed
    bad_time = run_cli("calls", "find", "--at", "20 Nov 10:30", "--data-dir", data, check=False)
    assert bad_time.returncode == 2 and "is not a date and time" in bad_time.stderr
    bad_length = run_cli("calls", "find", "--at", "2026-11-20 10:30", "--duration", "3x", "--data-dir", data,
                         check=False)
    assert bad_length.returncode == 2 and "'3x' is not a length" in bad_length.stderr
    nothing = run_cli("calls", "find", "--duration", "3m", "--data-dir", data, check=False)
    assert nothing.returncode == 2 and "needs a time or a number" in nothing.stderr
    lone_window = run_cli("calls", "find", "--window", "1h", "--number", CALLER, "--data-dir", data, check=False)
    assert lone_window.returncode == 2 and "--window is the span either side of --at" in lone_window.stderr
    bad_list = run_cli("calls", "list", "--to", "soon", "--data-dir", data, check=False)
    assert bad_list.returncode == 2 and "--to 'soon'" in bad_list.stderr


def test_cli_on_a_public_capture_says_what_was_erased(tmp_path: Path) -> None:
    """sip-rtp-g711.pcap's two calls were answered on 2016-11-26 at 23:52 JST; 熊本市's 90 days
    erase them from 25 February 2017, and the search then says so instead of "no such recording"."""
    data = tmp_path / "data"
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--data-dir", data)
    ask = ("calls", "find", "--at", "2016-11-26 23:50", "--duration", "0:09", "--data-dir", data)
    before = json.loads(run_cli(*ask, "--json").stdout)
    assert len(before["candidates"]) == 2 and before["erased"] == []
    run_cli("retention", "run", "--now", "2017-02-25T00:00:00+09:00", "--data-dir", data, "--policy", KUMAMOTO)
    after = run_cli(*ask).stdout
    assert "No kept recording matches. 2 recordings made in that window were erased" in after
    assert len(re.findall(r"was erased on \d{4}-\d{2}-\d{2} \(retention rule: past its", after)) == 2
    assert "matched by time only" in after
    tombstones = json.loads(run_cli("calls", "list", "--all", "--from", "2016-11-26 23:00", "--json",
                                    "--data-dir", data).stdout)
    assert [r["erased_reason"] for r in tombstones] == ["retention", "retention"]
