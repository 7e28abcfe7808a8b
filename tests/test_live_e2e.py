"""The live daemon end to end with real peers (issue 5, "How it is checked").

SIPp plays the carrier (caller) and the PBX extension (callee), each in a
network namespace, joined by a Linux bridge in a third one whose SPAN port
(tc mirred into a veth, see tests/live/span.py) goes to a fourth namespace
where `python -m callrec run` captures live, beside tcpdump as the witness.
tshark's reading of the witness capture is the reference: the recordings
are read only through tests.interop.recording()/recording_bytes() and must
hold the G.711 payloads of the wire byte for byte.

Needs root, iproute2 (ip, tc), sip-tester, tcpdump and tshark; without them
the tests fail with the reason, they never skip.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop import recording_bytes, run_cli
from tests.live.daemon import POLICY, Daemon
from tests.live.sipp import Batch, Caller
from tests.live.span import Span, Witness, build
from tests.live.wire import Wire, check_recording, flows_on_wire, playable_frames, problems
from tests.sipp.captures import CALLER, EXCLUDED, EXTENSION, SIP_PORT
from tests.sipp.netns import Lab, preflight, reap_stale

pytestmark = pytest.mark.root

# kill -9 (or a write failure) loses what was not yet written: the audio
# committed since the last checkpoint (every 0.5 s) and the interleaver's
# 0.5 s of lag, which it had not committed: at most the last second, as the
# issue asks, plus 0.1 s for the timer being late.
CRASH_MAX_LOST = 1.1
# SIGTERM drains the capture ring and flushes every call, but a ring block
# not yet handed over by the kernel (its timeout is 100 ms) is not read.
SHUTDOWN_MAX_LOST = 0.2
# How long the calls talk before the daemon is cut: the recordings must
# have audio worth checking, several checkpoints' worth.
TALK_BEFORE_CUT = 2.5


@dataclass(slots=True)
class Rig:
    """One switch, its witness, and what the test runs on it."""

    lab: Lab
    span: Span
    tmp: Path
    witness: Witness
    batches: int = 0

    def daemon(self, data: Path | None = None, policy: str = POLICY, settings: str = "") -> Daemon:
        return Daemon(self.span, self.tmp, data or self.tmp / "data", policy, settings)

    def batch(self, *callers: Caller, seconds: float) -> Batch:
        self.batches += 1
        return Batch(self.span, self.tmp / f"batch{self.batches}", callers, seconds, seed=self.batches)

    def wire(self) -> Wire:
        return Wire.read(self.witness.stop())


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    preflight()
    reap_stale()
    with Lab() as lab:
        span = build(lab, "e2e")
        yield Rig(lab, span, tmp_path, Witness(span, tmp_path / "wire.pcap"))


@pytest.fixture()
def daemon(rig: Rig) -> Iterator[Daemon]:
    live = rig.daemon()
    try:
        yield live
    finally:
        live.close()


def _max_overlap(wire: Wire) -> int:
    edges = sorted([(c.answer, 1) for c in wire.answered().values()] +
                   [(c.bye, -1) for c in wire.answered().values()])
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def _stored_intact(daemon: Daemon, rows: dict[str, dict]) -> list[str]:
    """Rows whose recording's bytes no longer hash to what the index says."""
    return [cid for cid, row in rows.items()
            if hashlib.sha256(recording_bytes(daemon.data, row)).hexdigest() != row["sha256"]]


def _complete_call_problems(daemon: Daemon, wire: Wire, rows: dict[str, dict]) -> list[str]:
    """Everything a normally ended call must be: facts, media report, audio."""
    found = []
    for cid, row in rows.items():
        call, streams = wire.calls[cid], wire.streams.get(cid, [])
        facts = {k: row[k] for k in ("state", "direction", "local_number", "remote_number", "complete",
                                     "end_reason", "audio_format")}
        want = {"state": "sealed", "direction": "inbound", "local_number": EXTENSION, "remote_number": CALLER,
                "complete": True, "end_reason": "bye_remote", "audio_format": "PCMU"}
        if facts != want:
            found.append(f"{cid}: {facts}")
        assert call.bye is not None
        for report in row["streams"]:
            flows, packets = flows_on_wire(streams, row, report["channel"], call.bye)
            if (set(report["flows"]), report["packets"]) != (flows, packets):
                found.append(f"{cid} channel {report['channel']}: reported {report['flows']} "
                             f"{report['packets']} packets, the wire has {sorted(flows)} {packets}")
        if playable_frames(daemon.data, row) != row["audio_frames"]:
            found.append(f"{cid}: libsndfile reads {playable_frames(daemon.data, row)} frames, "
                         f"the index says {row['audio_frames']}")
        found += [f"{cid}: {p}" for p in problems(check_recording(daemon.data, row, call, streams))]
    found += [f"{cid}: the recording does not hash to the index's sha256" for cid in _stored_intact(daemon, rows)]
    return found


def _cut_call_problems(daemon: Daemon, wire: Wire, rows: dict[str, dict], reason: str, cut: float,
                       max_lost: float) -> list[str]:
    """A recording cut at `cut` (crash, shutdown, full disk): indexed as
    incomplete with the reason, playable, its audio up to the cut."""
    found = []
    for cid, row in rows.items():
        if (row["state"], row["complete"], row["end_reason"]) != ("sealed", False, reason):
            found.append(f"{cid}: {row['state']}, complete={row['complete']}, end_reason={row['end_reason']}")
        frames = playable_frames(daemon.data, row)
        if frames != row["audio_frames"]:
            found.append(f"{cid}: libsndfile reads {frames} frames, the index says {row['audio_frames']}")
        if frames < 8000:
            found.append(f"{cid}: {frames} frames: the call talked {TALK_BEFORE_CUT} s before the cut")
        checks = check_recording(daemon.data, row, wire.calls[cid], wire.streams.get(cid, []), cut, max_lost)
        found += [f"{cid}: {p}" for p in problems(checks)]
    found += [f"{cid}: the recording does not hash to the index's sha256" for cid in _stored_intact(daemon, rows)]
    return found


# ---- 1: every call, several at once --------------------------------------------
def test_concurrent_calls_are_all_recorded_with_the_audio_of_the_wire(rig: Rig, daemon: Daemon) -> None:
    daemon.start()
    successful = rig.batch(Caller(calls=20, limit=5, rate=3), seconds=3.0).wait()
    wire = rig.wire()
    answered = wire.answered()
    assert successful == 20 and len(answered) == 20, (successful, sorted(answered))
    assert _max_overlap(wire) >= 4, "the calls did not overlap: the test would not prove concurrency"
    rows = daemon.sealed_rows(set(answered))
    assert len(daemon.rows()) == successful
    status = run_cli("status", "--config", daemon.config, "--json", check=False)
    assert status.returncode == 0 and json.loads(status.stdout)["kernel_drops"] == 0, status.stdout
    found = _complete_call_problems(daemon, wire, rows)
    assert not found, "\n".join(found)
    assert daemon.terminate() == 0


# ---- 2: kill -9 in the middle of calls, then a restart --------------------------
def test_kill_9_mid_calls_then_restart_recovers_them_and_records_later_calls(rig: Rig, daemon: Daemon) -> None:
    daemon.start()
    cut_calls = rig.batch(Caller(calls=4, limit=4, rate=10), seconds=6.0)
    daemon.active_calls(4)
    time.sleep(TALK_BEFORE_CUT)
    killed_at = time.time()
    assert daemon.terminate(signal.SIGKILL) == -signal.SIGKILL
    assert cut_calls.wait() == 4
    daemon.start()
    later_started = time.time()
    assert rig.batch(Caller(calls=3, limit=3, rate=10), seconds=3.0).wait() == 3
    wire = rig.wire()
    cut = {cid for cid, c in wire.answered().items() if c.invite < killed_at}
    later = wire.started_between(later_started, time.time())
    assert len(cut) == 4 and len(later) == 3
    assert daemon.log().count("recording.recovered") == 4, daemon.log()
    rows = daemon.sealed_rows(cut | later)
    assert len(daemon.rows()) == 7
    found = _cut_call_problems(daemon, wire, {c: rows[c] for c in cut}, "recovered_after_crash", killed_at,
                               CRASH_MAX_LOST)
    found += _complete_call_problems(daemon, wire, {c: rows[c] for c in later})
    assert not found, "\n".join(found)
    assert daemon.terminate() == 0


# ---- 3: the disk fills up during calls ------------------------------------------
def _fill(path: Path, leave: int) -> None:
    """Write zeros until only `leave` bytes are free, or with 0 until the
    filesystem refuses: in large blocks, then in pages."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        for size in (1 << 20, 4096):
            block = b"\0" * size
            while True:
                st = os.statvfs(path.parent)
                if leave and st.f_bavail * st.f_frsize - leave < size:
                    break
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


# Recordings are kept (their minimum period is not over), so a full disk
# can only stop recording, never erase what is stored; the retention sweep
# runs every 5 s so that recording resumes soon after space returns.
KEEPING_POLICY = POLICY + """\
retention:
  keep: {days: 90}
  minimum: {days: 90}
  if_minimum_at_risk: stop_recording
  free_space_floor: 4 MiB
"""


# Nearly full (below the store's own 64 MiB floor, as when the recordings
# themselves fill the disk) and full to the last byte (as when something
# else on the machine fills it).
@pytest.mark.parametrize("leave", [2 << 20, 0], ids=["below-floor", "to-last-byte"])
def test_full_disk_stops_recording_cleanly_and_recording_resumes(rig: Rig, tmp_path: Path, leave: int) -> None:
    assert os.geteuid() == 0, "this test mounts a tmpfs and must run as root (CI does)"
    data = tmp_path / "small-disk"
    data.mkdir(mode=0o700)
    # The store keeps 64 MiB free for its index; the disk is a little larger.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m,mode=0700", "tmpfs", str(data)], check=True, timeout=30)
    daemon = rig.daemon(data, KEEPING_POLICY, "sweep_interval_seconds: 5\n")
    try:
        daemon.start()
        assert rig.batch(Caller(calls=3, limit=3, rate=10), seconds=2.0).wait() == 3
        before = {r["sip_call_id"]: r for r in daemon.settled(3)}
        assert all(r["complete"] for r in before.values()), before

        filling_started = time.time()
        filling = rig.batch(Caller(calls=3, limit=3, rate=10), seconds=6.0)
        daemon.active_calls(3)
        time.sleep(TALK_BEFORE_CUT)
        filled_at = time.time()
        _fill(data / "filler", leave)
        failed = daemon.wait_log("recording.write_failed")
        assert "level='error'" in failed, failed
        assert filling.wait() == 3
        after_fill = time.time()
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died on the full disk"
        daemon.wait_status(lambda code, state: code != 0 and "disk" in {p["code"] for p in state["problems"]},
                           "the full disk as a problem")

        (data / "filler").unlink()
        daemon.wait_status(lambda code, state: state["recording_stopped"] is None, "recording resumed")
        resumed_at = time.time()
        assert rig.batch(Caller(calls=3, limit=3, rate=10), seconds=2.0).wait() == 3
        wire = rig.wire()
        cut = wire.started_between(filling_started, after_fill)
        resumed = wire.started_between(resumed_at, time.time())
        assert len(cut) == 3 and len(resumed) == 3
        rows = daemon.sealed_rows(set(before) | cut | resumed)
        assert not _stored_intact(daemon, before), "recordings stored before the disk filled were damaged"
        found = _cut_call_problems(daemon, wire, {c: rows[c] for c in cut}, "write_failed", filled_at,
                                   CRASH_MAX_LOST)
        found += _complete_call_problems(daemon, wire, {c: rows[c] for c in set(before) | resumed})
        assert not found, "\n".join(found)
        assert daemon.terminate() == 0
    finally:
        daemon.close()
        subprocess.run(["umount", "-l", str(data)], check=False, timeout=30)


# ---- 4: SIGTERM in the middle of calls --------------------------------------------
def test_sigterm_mid_call_closes_open_recordings_and_exits_0(rig: Rig, daemon: Daemon) -> None:
    daemon.start()
    batch = rig.batch(Caller(calls=3, limit=3, rate=10), seconds=6.0)
    daemon.active_calls(3)
    time.sleep(TALK_BEFORE_CUT)
    stopped_at = time.time()
    assert daemon.terminate() == 0, daemon.log()
    daemon.expect(lambda m: "STOPPING=1" in m, 5, "STOPPING=1")
    assert batch.wait() == 3
    wire = rig.wire()
    answered = set(wire.answered())
    rows = daemon.sealed_rows(answered)
    assert len(daemon.rows()) == 3
    found = _cut_call_problems(daemon, wire, rows, "shutdown", stopped_at, SHUTDOWN_MAX_LOST)
    assert not found, "\n".join(found)


# ---- 5: SIGHUP with a broken policy ------------------------------------------------
def test_sighup_with_a_broken_policy_keeps_the_running_one(rig: Rig, daemon: Daemon) -> None:
    daemon.start()
    # The new file drops the excluded line and breaks a setting: if any of it
    # were applied, the call to the excluded line would be recorded.
    broken = POLICY.split("excluded_lines:")[0].replace("preroll_seconds: 2", "preroll_seconds: 60")
    bad_line = broken.splitlines().index("  preroll_seconds: 60") + 1
    daemon.policy.write_text(broken, encoding="utf-8")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    refused = daemon.wait_log("policy.refused")
    for part in (f"file='{daemon.policy}'", f"line={bad_line}", "field='recording.preroll_seconds'", "reason="):
        assert part in refused, f"{part} is not in {refused!r}"
    assert daemon.proc.poll() is None
    batch = rig.batch(Caller(calls=1, limit=1, callee=EXCLUDED),
                      Caller(calls=1, limit=1, sip_port=SIP_PORT + 2), seconds=2.0)
    assert batch.wait() == 2
    wire = rig.wire()
    assert len(wire.answered()) == 2 and len(wire.answered(EXCLUDED)) == 1
    normal = set(wire.answered(EXTENSION))
    rows = daemon.sealed_rows(normal)
    listed = run_cli("calls", "list", "--json", "--data-dir", daemon.data).stdout
    assert [r["sip_call_id"] for r in json.loads(listed)] == sorted(normal)
    assert EXCLUDED not in listed and EXCLUDED not in daemon.log()
    found = _complete_call_problems(daemon, wire, rows)
    assert not found, "\n".join(found)
    assert daemon.terminate() == 0
