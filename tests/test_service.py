"""The pieces that make callrec a service: sd_notify, journald entries,
health judgement and the systemd unit."""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from callrec import journal
from callrec.config import Health
from callrec.health import Observations, assess
from callrec.logs import configure
from callrec.sdnotify import Notifier, watchdog_interval
from tests.interop import REPO

TOKYO = ZoneInfo("Asia/Tokyo")


def _datagram_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_notify_messages_reach_a_socket_of_our_own(tmp_path: Path) -> None:
    sock = _datagram_socket(tmp_path / "notify")
    notifier = Notifier(str(tmp_path / "notify"))
    notifier.notify(READY=1, STATUS="0 active calls")
    notifier.notify(WATCHDOG=1)
    assert sock.recv(4096) == b"READY=1\nSTATUS=0 active calls"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_abstract_socket_and_disabled() -> None:
    name = f"callrec-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    Notifier("@" + name).notify(STOPPING=1)
    assert sock.recv(100) == b"STOPPING=1"
    quiet = Notifier("")
    assert not quiet.enabled
    quiet.notify(READY=1)


def test_watchdog_interval_is_half_of_watchdogsec(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


def _fields(datagram: bytes) -> dict[str, str]:
    fields, pos = {}, 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            value = datagram[end + 9:end + 9 + size]
            pos = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


def test_journal_entries_have_priority_event_and_fields(tmp_path: Path) -> None:
    sock = _datagram_socket(tmp_path / "journal")
    configure("info", journal=True)
    structlog.configure(logger_factory=journal.JournalLoggerFactory(str(tmp_path / "journal")))
    try:
        structlog.get_logger().warning("health.problem", code="no_sip", detail="line one\nline two")
        structlog.get_logger().info("recording.sealed", call_id="20261125T100000-abcd", direction="inbound")
        structlog.get_logger().debug("not.sent")
        warning, info = _fields(sock.recv(65536)), _fields(sock.recv(65536))
    finally:
        configure("info", journal=False)
    assert warning["PRIORITY"] == "4" and warning["EVENT"] == "health.problem"
    assert warning["DETAIL"] == "line one\nline two" and warning["SYSLOG_IDENTIFIER"] == "callrec"
    assert info["PRIORITY"] == "6" and info["CALL_ID"] == "20261125T100000-abcd" and info["DIRECTION"] == "inbound"


def test_journal_field_names() -> None:
    assert journal.journal_field("call_id") == "CALL_ID"
    assert journal.journal_field("_secret") == "SECRET"
    assert journal.journal_field("a-b.c") == "A_B_C"


def _obs(now: float, **kw: object) -> Observations:
    values = dict(now=now, started=now - 7200, last_sip=now - 60, last_rtp=now - 60, kernel_drops=0,
                  disk_used_percent=40.0, active_calls=0)
    values.update(kw)
    return Observations(**values)  # type: ignore[arg-type]


def test_health_silence_counts_only_in_business_hours() -> None:
    tuesday_10 = datetime(2026, 11, 24, 10, 0, tzinfo=TOKYO)
    now = tuesday_10.timestamp()
    quiet = _obs(now, last_sip=now - 3600, last_rtp=None)
    codes = {p.code for p in assess(quiet, Health(), tuesday_10, 0)}
    assert codes == {"no_sip", "no_rtp"}
    sunday = datetime(2026, 11, 22, 10, 0, tzinfo=TOKYO)
    assert assess(_obs(sunday.timestamp(), last_sip=None, last_rtp=None), Health(), sunday, 0) == []
    night = datetime(2026, 11, 24, 22, 0, tzinfo=TOKYO)
    assert assess(_obs(night.timestamp(), last_sip=None, last_rtp=None), Health(), night, 0) == []


def test_health_drops_disk_and_one_sided_calls() -> None:
    night = datetime(2026, 11, 24, 22, 0, tzinfo=TOKYO)
    obs = _obs(night.timestamp(), kernel_drops=12, disk_used_percent=95.0, one_sided_calls=["x1"])
    codes = [p.code for p in assess(obs, Health(), night, previous_drops=2)]
    assert codes == ["kernel_drops", "disk", "one_sided"]
    assert assess(_obs(night.timestamp(), kernel_drops=12), Health(), night, previous_drops=12) == []


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing; .ci/run installs systemd"
    unit = (REPO / "systemd" / "callrec.service").read_text()
    assert "ExecStart=/opt/callrec/venv/bin/callrec run" in unit
    local = tmp_path / "callrec.service"
    local.write_text(unit.replace("/opt/callrec/venv/bin/callrec", f"{sys.executable} -m callrec"))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "callrec.service" not in result.stderr, result.stderr
    for line in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "CapabilityBoundingSet=CAP_NET_RAW\n", "SystemCallFilter=@system-service",
                 "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies="):
        assert line in unit


def test_example_config_loads_and_names_restart_settings(tmp_path: Path) -> None:
    from callrec.config import Config, load_config
    from policy.loader import PolicyError

    config = load_config(REPO / "config.example.yaml")
    assert config.interfaces == ["eth1"] and config.status_path == Path("/run/callrec/status.sock")
    assert Config().restart_needed(config) == ["data_dir", "interfaces", "status_socket", "key_file",
                                                "anchor_dir"]
    bad = tmp_path / "config.yaml"
    bad.write_text("data_dir: /x\nhealth:\n  business_hours: '9-5'\n")
    try:
        load_config(bad)
    except PolicyError as exc:
        assert exc.line == 3 and exc.field == "health.business_hours"
    else:
        raise AssertionError("a bad business_hours must be refused")


def test_console_unit_verifies_and_holds_no_capability(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing; .ci/run installs systemd"
    unit = (REPO / "systemd" / "callrec-web.service").read_text()
    local = tmp_path / "callrec-web.service"
    local.write_text(unit.replace("/opt/callrec/venv/bin/callrec", f"{sys.executable} -m callrec"))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "callrec-web.service" not in result.stderr, result.stderr
    for line in ("ExecStart=/opt/callrec/venv/bin/callrec web", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "LoadCredentialEncrypted=callrec-master-key", "User=callrec"):
        assert line in unit
    assert "AF_PACKET" not in unit
