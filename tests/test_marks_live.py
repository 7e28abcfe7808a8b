"""Harassment marks end to end on real traffic: SIPp in network namespaces behind a switch whose
SPAN port the live daemon (`python -m callrec run`) captures, as tests/test_live_e2e.py runs it.

Two calls at once from the carrier trunk: one to extension 201, whose SIPp presses * 9 1 (RFC
2833) in the middle of the call, and one to extension 202, which only talks.  The mark must land
on 201's call with `marked_by` ext:201, be in the journal entry `harassment.marked` and in the
console's live alerts (the marks table) before the caller hangs up, hold the call as evidence,
and nothing of it may touch 202's call.  Then the witness capture of the same traffic is
replayed (`callrec replay`) into a new data folder: the mark lands the same way.

Needs root, iproute2 (ip, tc), sip-tester, tcpdump and tshark; without them it fails with the
reason, it never skips."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from storage.marks import MarkBook
from storage.store import Store
from tests.interop import calls, run_cli
from tests.live.daemon import POLICY, Daemon
from tests.live.span import UAC_ADDRESS, UAS_ADDRESS, Span, Witness, build
from tests.live.wire import Wire
from tests.marks_helpers import HARASSMENT, TOKYO
from tests.sipp.captures import HERE as SCENARIOS
from tests.sipp.captures import MEDIA_PORT, SIP_PORT, SIPP_SHARE
from tests.sipp.netns import Lab, LabError, preflight, reap_stale
from tests.sipp.rtpfiles import PAYLOAD_TYPES, sweep, talk, write_rtp_pcap

pytestmark = pytest.mark.root

MARK_PLAN = {"digits": ("*", "9", "1"), "first": 3.3, "gap": 0.4}
"""What tests/sipp/uas_mark.xml keys, seconds after the ACK; its pauses say the same."""
CALL_SECONDS = 9.0
CODEC = "PCMU"
MARKED, PLAIN = ("201", "0355502222", SIP_PORT + 2), ("202", "0355501111", SIP_PORT)
"""(extension, caller, the UAS's SIP port) of the call marked and of the one that only talks."""


@dataclass(slots=True)
class Rig:
    lab: Lab
    span: Span
    tmp: Path
    witness: Witness
    logs: ExitStack


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    preflight()
    reap_stale()
    for tool in ("sipp",):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise LabError(f"{tool} is missing: apt-get install sip-tester")
    with Lab() as lab, ExitStack() as logs:
        span = build(lab, "cr-marks")
        yield Rig(lab, span, tmp_path, Witness(span, tmp_path / "wire.pcap"), logs)


def _folder(rig: Rig, name: str, seed: int, dtmf: bool) -> Path:
    """A SIPp run folder: both parties' audio, and the shipped DTMF files for the one that marks."""
    run = rig.tmp / name
    run.mkdir()
    for party, (file, low, high, ssrc) in enumerate((("uac_audio.pcap", 300, 2600, 0x5EED0101),
                                                     ("uas_audio.pcap", 2400, 500, 0x5EED0102))):
        seconds = 3.0 if party == 1 and dtmf else CALL_SECONDS - 1
        audio = sweep(seconds, low + 30 * seed, high + 30 * seed, seed * 2 + party)
        write_rtp_pcap(run / file, talk(CODEC, audio, ssrc=ssrc + 16 * seed, seq=1000 * seed, timestamp=0))
    if dtmf:
        for digit in ("star", "9", "1"):
            shipped = SIPP_SHARE / f"dtmf_2833_{digit}.pcap"
            if not shipped.is_file():
                raise LabError(f"{shipped} is missing: the sip-tester package ships it")
            (run / shipped.name).symlink_to(shipped)
    return run


def _sipp(run: Path, role: str, scenario: str, address: str, *extra: str) -> list[str]:
    return ["sipp", "-sf", str(SCENARIOS / scenario), "-i", address, "-mi", address,
            "-key", "pt", str(PAYLOAD_TYPES[CODEC]), "-key", "codec", CODEC, "-nostdin", "-timeout", "60s",
            "-timeout_error", "-trace_err", "-error_file", str(run / f"{role}_errors.log"), *extra]


def _calls(rig: Rig) -> list[subprocess.Popen[bytes]]:
    """The two callees, then the two callers, at once; their processes (callees first)."""
    lab, span = rig.lab, rig.span
    procs = []
    for n, ((extension, _, port), scenario) in enumerate(((MARKED, "uas_mark.xml"), (PLAIN, "uas_answer.xml"))):
        run = _folder(rig, f"call{extension}", n + 1, scenario == "uas_mark.xml")
        log = rig.logs.enter_context((run / "uas.log").open("wb"))
        procs.append(lab.start(span.uas, _sipp(run, "uas", scenario, UAS_ADDRESS, "-p", str(port),
                                               "-mp", str(MEDIA_PORT + 2000 * n), "-m", "1"),
                               cwd=run, stdout=log, stderr=subprocess.STDOUT))
        lab.wait_for_udp_port(span.uas, port, 10)
    for n, (extension, caller, port) in enumerate((MARKED, PLAIN)):
        run = rig.tmp / f"call{extension}"
        log = rig.logs.enter_context((run / "uac.log").open("wb"))
        procs.append(lab.start(span.uac, _sipp(run, "uac", "uac_call.xml", UAC_ADDRESS, "-p", str(port + 1),
                                               "-mp", str(MEDIA_PORT + 1000 + 2000 * n), "-key", "caller", caller,
                                               "-s", extension, "-m", "1", "-d", str(int(CALL_SECONDS * 1000)),
                                               f"{UAS_ADDRESS}:{port}"),
                               cwd=run, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _alerts(data: Path) -> list[dict]:
    """What the console's live alert page reads (storage.marks.MarkBook.alerts), as it runs."""
    with Store.open(data, TOKYO, read_only=True) as store, MarkBook(store) as book:
        return [{"call_id": a.call_id, "category": a.category, "extension": a.extension, "ongoing": a.ongoing}
                for a in book.alerts(0.0)]


def _marks(data: Path) -> list[dict]:
    db = sqlite3.connect(data / "index.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM marks")]
    finally:
        db.close()


def _when(line: str) -> float:
    found = re.search(r"timestamp='([^']+)'", line)
    assert found, line
    return datetime.fromisoformat(found.group(1)).timestamp()


def test_the_code_pressed_mid_call_marks_the_right_call_at_once_and_again_on_replay(rig: Rig) -> None:
    policy = POLICY + HARASSMENT
    daemon = Daemon(rig.span, rig.tmp, rig.tmp / "data", policy)
    try:
        daemon.start()
        procs = _calls(rig)
        alerts: list[dict] = []
        deadline = time.monotonic() + 30
        while not alerts and time.monotonic() < deadline:
            alerts = _alerts(daemon.data)
            time.sleep(0.2)
        callers_done = [p.poll() is not None for p in procs[2:]]
        for proc in procs:
            assert rig.lab.finish(proc, 60) == 0, proc.args
        marked_line = daemon.wait_log("harassment.marked")
        time.sleep(1.5)
    finally:
        daemon.close()
    wire = Wire.read(rig.witness.stop())

    rows = {row["callee"]: row for row in calls(daemon.data)}
    assert set(rows) >= {MARKED[0], PLAIN[0]}, rows.keys()
    marked, plain = rows[MARKED[0]], rows[PLAIN[0]]
    assert alerts and alerts[0]["call_id"] == marked["id"] and alerts[0]["ongoing"], alerts
    assert not any(callers_done), "the alert was there while the calls were still going on"
    [mark] = _marks(daemon.data)
    assert (mark["call_id"], mark["category"], mark["via"], mark["marked_by"]) == (
        marked["id"], "threat", "dtmf", f"ext:{MARKED[0]}")
    assert marked["extension"] == MARKED[0] and alerts[0]["extension"] == MARKED[0]

    bye = wire.calls[marked["sip_call_id"]].bye
    answer = wire.calls[marked["sip_call_id"]].answer
    assert bye is not None and answer is not None
    logged = _when(marked_line)
    assert answer + MARK_PLAN["first"] < logged < bye - 2, "logged during the call, within a second of the code"
    assert f"call_id='{marked['id']}'" in marked_line and "category='threat'" in marked_line
    assert f"extension='{MARKED[0]}'" in marked_line and MARKED[1] not in marked_line, "no caller number"
    assert abs(datetime.fromisoformat(mark["marked_at"]).timestamp() - (answer + 4.1)) < 0.6, \
        "marked at the code's last digit, on the capture clock"

    db = sqlite3.connect(daemon.data / "index.sqlite3")
    held = dict(db.execute("SELECT id, evidence_until FROM calls").fetchall())
    db.close()
    assert held[marked["id"]] == mark["hold_until"] and held[plain["id"]] is None
    ledger = json.loads(run_cli("ledger", "list", "--json", "--data-dir", daemon.data).stdout)
    assert [e["actor"] for e in ledger if e["event"] == "harassment_marked"] == [f"ext:{MARKED[0]}"]

    replayed = rig.tmp / "replayed"
    policy_file = rig.tmp / "replay-policy.yaml"
    policy_file.write_text(policy, encoding="utf-8")
    run_cli("replay", rig.witness.path, "--data-dir", replayed, "--policy", policy_file)
    again = {row["sip_call_id"]: row for row in calls(replayed)}
    [mark2] = _marks(replayed)
    assert again[marked["sip_call_id"]]["id"] == mark2["call_id"] and mark2["marked_by"] == f"ext:{MARKED[0]}"
    replayed_at = datetime.fromisoformat(mark2["marked_at"]).timestamp()
    assert abs(replayed_at - datetime.fromisoformat(mark["marked_at"]).timestamp()) < 0.01, \
        "the same capture time, live or replayed"
