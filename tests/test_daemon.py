"""`callrec run` live: the daemon captures on the loopback of a network
namespace of its own while real UDP sockets there play a PBX and a trunk.
systemd's side is played by a notify socket of the test."""
from __future__ import annotations

import io
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import soundfile

from tests.builders import PBX, TRUNK, write_pcap
from tests.call_frames import bye, media, signalling
from tests.console_site import free_port
from tests.disk_image import Ext4Image
from tests.interop import REPO, calls, recording, recording_bytes, run_cli
from tests.sipp.netns import Lab, preflight

pytestmark = pytest.mark.root


class LiveDaemon:
    """The daemon, its namespace and what it told systemd."""

    def __init__(self, lab: Lab, ns: str, tmp: Path) -> None:
        self.lab, self.ns, self.tmp = lab, ns, tmp
        self.data = tmp / "data"
        self.policy = tmp / "policy.yaml"
        self.policy.write_text("network: {trunk: [203.0.113.0/28]}\n")
        self.config = tmp / "config.yaml"
        self.config.write_text(f"data_dir: {self.data}\npolicy: {self.policy}\ninterfaces: [lo]\n"
                               f"status_socket: {tmp / 'status.sock'}\n")
        self.notify_path = tmp / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.log = open(self.tmp / f"daemon{self.runs}.log", "wb")
        self.proc = self.lab.start(
            self.ns, ["env", f"NOTIFY_SOCKET={self.notify_path}", "WATCHDOG_USEC=4000000",
                      sys.executable, "-m", "callrec", "run", "--config", str(self.config)],
            cwd=REPO, stdout=self.log, stderr=self.log)
        self.expect("READY=1", 30)

    def expect(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            seen.append(message)
            if needle in message:
                return message
        raise AssertionError(f"daemon never notified {needle!r}; got {seen}; log:\n{self.logtext()}")

    def drain(self) -> None:
        """Read what the daemon has notified so far.  Its notify socket is a datagram socket whose
        queue holds only net.unix.max_dgram_qlen (10) messages: systemd reads it at once, but a
        test busy elsewhere for ten seconds of STATUS lines would lose the next message."""
        self.notify.setblocking(False)
        try:
            while True:
                self.notify.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.notify.setblocking(True)

    def logtext(self) -> str:
        return (self.tmp / f"daemon{self.runs}.log").read_text(errors="replace")

    def call(self, call_id: str, seconds: float, tport: int, *, bye: bool = True, wait: bool = True
             ) -> tuple[subprocess.Popen[bytes], Path]:
        record = self.tmp / f"{call_id}.json"
        argv = [sys.executable, str(REPO / "tests" / "live_sender.py"), "--call-id", call_id,
                "--seconds", str(seconds), "--tport", str(tport), "--pport", str(tport + 20000),
                "--record", str(record)] + ([] if bye else ["--no-bye"])
        proc = self.lab.start(self.ns, argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            assert self.lab.finish(proc, seconds + 30) == 0
        return proc, record

    def row(self, call_id: str, timeout: float = 15, sealed: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.data / "index.sqlite3").exists():
                rows = [r for r in calls(self.data) if r["sip_call_id"] == call_id]
                if rows and (rows[0]["state"] == "sealed" or not sealed):
                    return rows[0]
            time.sleep(0.3)
        raise AssertionError(f"no {'sealed ' if sealed else ''}row for {call_id}; log:\n{self.logtext()}")


@pytest.fixture()
def daemon(tmp_path: Path):
    preflight()
    with Lab() as lab:
        ns = lab.namespace(f"live{tmp_path.name[-6:]}")
        for cidr in (f"{TRUNK}/32", f"{PBX}/32"):
            lab.address(ns, "lo", cidr)
        live = LiveDaemon(lab, ns, tmp_path)
        try:
            yield live
        finally:
            if live.proc is not None and live.proc.poll() is None:
                lab.stop(live.proc)
            live.notify.close()


def _assert_audio(live: LiveDaemon, row: dict, record: Path, complete: bool) -> None:
    sent = json.loads(record.read_text())
    wav = recording(live.data, row)
    local, remote = wav.channel(0), wav.channel(1)
    local_sent = b"".join(bytes.fromhex(h) for h in sent["local"])
    remote_sent = b"".join(bytes.fromhex(h) for h in sent["remote"])
    if complete:
        assert local_sent in local and remote_sent in remote
    else:
        assert local_sent[:8000] in local and remote_sent[:8000] in remote
    info = soundfile.info(io.BytesIO(recording_bytes(live.data, row)))
    assert info.channels == 2 and info.frames == row["audio_frames"]


def test_live_call_status_reload_and_graceful_stop(daemon: LiveDaemon) -> None:
    daemon.start()
    _, record = daemon.call("live-a@test", 3.0, 20000)
    row = daemon.row("live-a@test")
    assert row["complete"] and row["direction"] == "inbound" and row["end_reason"] == "bye_remote"
    _assert_audio(daemon, row, record, complete=True)
    daemon.expect("WATCHDOG=1", 10)

    status = run_cli("status", "--config", daemon.config, "--json", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    state = json.loads(status.stdout)
    assert state["healthy"] and state["kernel_drops"] == 0 and state["interfaces"] == ["lo"]
    assert state["storage_faults"] == {"active": {}, "calls_per_hour": {}}
    assert "ledger.anchor_exported" in daemon.logtext(), "the signed heads go into the journal at start"

    daemon.policy.write_text("network:\n  trunk: [203.0.113.0/28]\n  pbx: [nonsense]\n")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert daemon.proc.poll() is None
    assert "policy.refused" in daemon.logtext() and "network.pbx" in daemon.logtext()

    sender, record_b = daemon.call("live-b@test", 20.0, 20002, bye=False, wait=False)
    daemon.row("live-b@test", sealed=False)
    time.sleep(2.0)
    daemon.drain()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.expect("STOPPING=1", 10)
    assert daemon.lab.finish(daemon.proc, 30) == 0
    daemon.lab.stop(sender)
    row_b = daemon.row("live-b@test")
    assert not row_b["complete"] and row_b["end_reason"] == "shutdown"
    _assert_audio(daemon, row_b, record_b, complete=False)


def test_kill_9_then_restart_recovers_the_open_recording(daemon: LiveDaemon) -> None:
    daemon.start()
    sender, record = daemon.call("live-c@test", 20.0, 20004, bye=False, wait=False)
    daemon.row("live-c@test", sealed=False)
    time.sleep(2.5)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    daemon.lab.stop(sender)
    daemon.start()
    row = daemon.row("live-c@test")
    assert row["end_reason"] == "recovered_after_crash" and not row["complete"]
    assert run_cli("verify", "--data-dir", daemon.data, check=False).returncode == 0, "recovered, sealed, ledgered"
    _assert_audio(daemon, row, record, complete=False)
    _, record_d = daemon.call("live-d@test", 2.0, 20006)
    row_d = daemon.row("live-d@test")
    assert row_d["complete"]
    _assert_audio(daemon, row_d, record_d, complete=True)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.lab.finish(daemon.proc, 30) == 0


def _status(daemon: LiveDaemon) -> dict:
    return json.loads(run_cli("status", "--config", daemon.config, "--json", check=False).stdout)


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout} s")


def test_minimum_period_at_risk_stops_recording_until_capacity_grows(daemon: LiveDaemon, tmp_path: Path) -> None:
    """羽島市-like policy: capacity must never cut the minimum period short,
    and the policy chooses stop_recording.  A store already over capacity
    with only recordings inside their minimum makes the daemon stop
    recording new calls, say so in `callrec status` (unhealthy) and the log;
    raising the capacity (SIGHUP) resumes recording at the next sweep."""
    start = time.time() - 300
    up, _ = media(start + 1.05, 70, src=(TRUNK, 21000), dst=(PBX, 41000), ssrc=7)
    frames = signalling("old@test", t=start, tport=21000, pport=41000) + up + bye(start + 72, "old@test")
    run_cli("replay", write_pcap(tmp_path / "old.pcap", frames), "--data-dir", daemon.data)
    [old] = calls(daemon.data)
    assert old["size_bytes"] > 1024 * 1024
    small = ("network: {trunk: [203.0.113.0/28]}\n"
             "retention: {keep: until_overwritten, minimum: {days: 1}, if_minimum_at_risk: stop_recording,"
             " capacity: 1 MiB, free_space_floor: 1 MiB}\n")
    daemon.policy.write_text(small)
    daemon.config.write_text(daemon.config.read_text() + "sweep_interval_seconds: 5\n")
    daemon.start()
    state = _wait_for(lambda: (s := _status(daemon)) and s["recording_stopped"] and s, 20, "recording never stopped")
    assert not state["healthy"] and "minimum_period_at_risk" in [p["code"] for p in state["problems"]]
    assert "recording.stopped_by_retention" in daemon.logtext()
    said = run_cli("status", "--config", daemon.config, check=False)
    assert said.returncode == 1 and "NEW CALLS ARE NOT RECORDED" in said.stdout and "minimum_period_at_risk" in said.stdout
    daemon.call("refused@test", 2.0, 20010)
    refused = daemon.row("refused@test")
    assert refused["end_reason"] == "not_recorded_retention" and refused["audio_path"] is None
    assert [r["id"] for r in calls(daemon.data) if r["id"] == old["id"]], "the protected recording is kept"

    daemon.policy.write_text(small.replace("capacity: 1 MiB", "capacity: 64 MiB"))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: _status(daemon)["recording_stopped"] is None, 20, "recording never resumed")
    _, record = daemon.call("resumed@test", 2.0, 20012)
    row = daemon.row("resumed@test")
    assert row["complete"] and row["audio_path"]
    _assert_audio(daemon, row, record, complete=True)
    events = [json.loads(line)["event"] for line in (daemon.data / "ledger.jsonl").read_text().splitlines()]
    assert events.count("policy_changed") == 2, events


OPTIONS_PROBE = """
import socket, sys
probe = (b"OPTIONS sip:announcer@127.0.0.1:5070 SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKprobe\\r\\n"
         b"From: <sip:probe@127.0.0.1>;tag=p\\r\\nTo: <sip:announcer@127.0.0.1>\\r\\nCall-ID: probe@test\\r\\n"
         b"CSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 5999))
sock.settimeout(10)
sock.sendto(probe, ("127.0.0.1", 5070))
sys.stdout.write(sock.recv(4096).split(b"\\r\\n")[0].decode())
"""


def test_daemon_runs_the_announcer_beside_the_recorder(daemon: LiveDaemon) -> None:
    daemon.config.write_text(daemon.config.read_text() + "announcer:\n  listen_address: 127.0.0.1\n"
                             "  listen_port: 5070\n  pbx: [127.0.0.1/32]\n  operator: '9000'\n")
    daemon.start()
    assert "announcer.ready" in daemon.logtext()
    probe = daemon.lab.start(daemon.ns, [sys.executable, "-c", OPTIONS_PROBE], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    out, err = probe.communicate(timeout=20)
    assert out.decode() == "SIP/2.0 200 OK", err.decode()
    assert _status(daemon)["announcer_calls"] == 0
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.lab.finish(daemon.proc, 30) == 0
    assert "announcer.stopped" in daemon.logtext()


def test_a_new_call_makes_room_before_the_store_passes_its_capacity(daemon: LiveDaemon, tmp_path: Path) -> None:
    """With an hour between periodic sweeps, a call that starts on a store
    just under its capacity makes the ring erase the oldest recording at
    once, not an hour later."""
    start = time.time() - 300
    up, _ = media(start + 1.05, 50, src=(TRUNK, 21000), dst=(PBX, 41000), ssrc=7)
    frames = signalling("old@test", t=start, tport=21000, pport=41000) + up + bye(start + 52, "old@test")
    run_cli("replay", write_pcap(tmp_path / "old.pcap", frames), "--data-dir", daemon.data)
    [old] = calls(daemon.data)
    assert 512 * 1024 < old["size_bytes"] < 1024 * 1024
    daemon.policy.write_text("network: {trunk: [203.0.113.0/28]}\n"
                             "retention: {keep: until_overwritten, capacity: 1 MiB, free_space_floor: 1 MiB}\n")
    daemon.config.write_text(daemon.config.read_text() + "sweep_interval_seconds: 3600\n")
    daemon.start()
    time.sleep(2)
    assert [r["id"] for r in calls(daemon.data)] == [old["id"]], "under capacity, nothing goes"
    sender, _ = daemon.call("new@test", 8.0, 20014, wait=False)
    _wait_for(lambda: old["id"] not in [r["id"] for r in calls(daemon.data)], 6, "the oldest was never erased")
    assert daemon.lab.finish(sender, 30) == 0
    row = daemon.row("new@test")
    assert row["complete"] and row["audio_path"]
    erasures = [json.loads(line) for line in (daemon.data / "ledger.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "erasure"]
    assert [e["details"]["by_reason"] for e in erasures] == [{"capacity": 1}]


def test_an_overdue_copy_is_a_warning_in_status_and_the_journal(daemon: LiveDaemon, tmp_path: Path) -> None:
    """さいたま 第4条6(2): a copy kept past the end of the next fiscal year is reported until its
    disposal is recorded."""
    policy = REPO / "policies" / "saitama.yaml"
    daemon.policy.write_text(policy.read_text(encoding="utf-8"), encoding="utf-8")
    up, _ = media(1_764_000_001.05, 3, src=(TRUNK, 21000), dst=(PBX, 41000), ssrc=7)
    frames = signalling("copied@test", t=1_764_000_000, tport=21000, pport=41000) + up + bye(1_764_000_005,
                                                                                             "copied@test")
    where = ("--data-dir", daemon.data, "--policy", daemon.policy)
    run_cli("replay", write_pcap(tmp_path / "c.pcap", frames), *where)
    [row] = calls(daemon.data)
    people = {"kimura": "manager", "staff1": "staff", "vendor": "contractor"}
    for name, role in people.items():
        by = [] if name == "kimura" else ["--user", "kimura"]
        run_cli("user", "add", name, "--role", role, *where, *by,
                input=("" if name == "kimura" else "kimura-pass-2026\n") + f"{name}-pass-2026\n")
    filed = run_cli("request", "file", "--department", "広聴課", "--purpose", "article1", "--wanted", "copy",
                    "--call", row["id"], *where, "--user", "staff1", input="staff1-pass-2026\n").stdout
    number = filed.split(":")[0]
    for step, user in ((("approve", number), "kimura"), (("instruct", number, "--to", "vendor"), "kimura"),
                       (("fulfil", number, "--holder", "広聴課長"), "vendor")):
        run_cli("request", *step, *where, "--user", user, input=f"{user}-pass-2026\n")
    copy = json.loads(run_cli("copies", "list", "--json", *where, "--user", "kimura",
                              input="kimura-pass-2026\n").stdout)[0]["number"]
    with sqlite3.connect(daemon.data / "index.sqlite3") as db:  # two fiscal years go by
        db.execute("UPDATE copies SET deadline = '2000-03-31' WHERE number = ?", (copy,))
    daemon.config.write_text(daemon.config.read_text() + "sweep_interval_seconds: 5\n")
    daemon.start()
    state = _wait_for(lambda: (s := _status(daemon)) and any(w["code"] == "copy_overdue" for w in s["warnings"])
                      and s, 20, "the overdue copy was never reported")
    [warning] = [w for w in state["warnings"] if w["code"] == "copy_overdue"]
    assert copy in warning["message"] and "callrec copies dispose" in warning["message"]
    assert "copies.overdue" in daemon.logtext() and copy in daemon.logtext()
    run_cli("copies", "dispose", copy, "--how", "DVD-R を破砕", *where, "--user", "kimura",
            input="kimura-pass-2026\n")
    _wait_for(lambda: not any(w["code"] == "copy_overdue" for w in _status(daemon)["warnings"]), 20,
              "the warning never cleared after disposal")


def test_the_console_shows_the_live_daemons_health(daemon: LiveDaemon, tmp_path: Path) -> None:
    """The status screen reads the running daemon's own report over its status socket."""
    daemon.policy.write_text((REPO / "policies" / "kumamoto.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    daemon.start()
    daemon.call("seen@test", 2.0, 20020)
    daemon.row("seen@test")
    where = ("--config", daemon.config)
    run_cli("user", "add", "kanri", "--role", "manager", *where, input="kanri-pass-2026\n")
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "callrec", "web", *map(str, where), "--port", str(port),
                            "--plain-http"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "web.ready" in (tmp_path / "web.log").read_text(), 30, "the console never started")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        page = opener.open(f"http://127.0.0.1:{port}/login", timeout=10).read().decode()
        token = re.search(r'name="login_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"login_token": token, "name": "kanri", "password": "kanri-pass-2026"})
        status = opener.open(f"http://127.0.0.1:{port}/login", data=form.encode(), timeout=10).read().decode()
        assert "正常に録音しています" in status, status
        assert re.search(r'<td id="today">1</td>', status) and re.search(r'<td id="disk">[0-9.]+%', status)
    finally:
        web.terminate()
        web.wait(timeout=20)
        log.close()


def test_an_unmounted_archive_medium_is_a_warning_and_recordings_stay(daemon: LiveDaemon, tmp_path: Path) -> None:
    """大阪市水道局's archive stage under the daemon: while the second medium is away the recording
    stays on the device and `callrec status` and the journal say so; with the medium back, the
    daemon's sweep moves it there."""
    daemon.policy.write_text("network: {trunk: [203.0.113.0/28]}\nretention:\n  keep: {days: 1}\n"
                             "  free_space_floor: 1 MiB\n  archive: {keep: {days: 36500}, free_space_floor: 1 MiB}\n")
    medium = Ext4Image(tmp_path / "medium.img", tmp_path / "mnt", 16)
    try:
        daemon.config.write_text(daemon.config.read_text()
                                 + f"sweep_interval_seconds: 5\narchive_dir: {medium.mount_point}\n")
        up, _ = media(1_764_000_001.05, 3, src=(TRUNK, 21000), dst=(PBX, 41000), ssrc=7)
        frames = signalling("old@test", t=1_764_000_000, tport=21000, pport=41000) + up + bye(1_764_000_005,
                                                                                             "old@test")
        run_cli("replay", write_pcap(tmp_path / "old.pcap", frames), "--config", daemon.config)
        medium.mount()
        run_cli("archive", "init", "--config", daemon.config)
        medium.unmount()
        daemon.start()
        state = _wait_for(lambda: (s := _status(daemon)) and any(w["code"] == "archive_unavailable"
                                                                  for w in s["warnings"]) and s,
                          20, "the missing medium was never reported")
        [warning] = [w for w in state["warnings"] if w["code"] == "archive_unavailable"]
        assert "not mounted" in warning["message"] and "1 recording(s)" in warning["message"]
        assert "archive_unavailable" in daemon.logtext()
        [row] = calls(daemon.data)
        assert row["stored_on"] is None and (daemon.data / row["audio_path"]).exists()
        daemon.lab.stop(daemon.proc)
        medium.mount()
        daemon.start()
        moved = _wait_for(lambda: (rows := calls(daemon.data)) and rows[0]["archived_at"] and rows[0], 30,
                          "the recording was never moved to the medium")
        assert (medium.mount_point / moved["audio_path"]).exists()
        assert not (daemon.data / moved["audio_path"]).exists()
        assert not any(w["code"].startswith("archive") for w in _status(daemon)["warnings"])
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.lab.stop(daemon.proc)
        medium.close()
