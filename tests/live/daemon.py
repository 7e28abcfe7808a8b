"""`python -m callrec run` in the SPAN port's namespace, capturing live,
with systemd's side played by a notify socket of the test."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.interop import REPO, calls, run_cli
from tests.sipp.captures import EXCLUDED

from .span import SPAN_DEVICE, UAC_ADDRESS, UAS_ADDRESS, Span

# Calls from the SIPp caller come from the carrier trunk: inbound to the
# PBX's extension.  The excluded line must never be recorded.
POLICY = f"""\
version: 1
organisation: live e2e tests
timezone: Asia/Tokyo
numbering:
  country_code: "81"
  extension_pattern: '^[1-9][0-9]{{2}}$'
network:
  trunk: [{UAC_ADDRESS}/32]
  pbx: [{UAS_ADDRESS}/32]
recording:
  preroll_seconds: 2
excluded_lines:
  - number: "{EXCLUDED}"
    label: consultation line
"""

START_SECONDS = 30.0


class Daemon:
    """One data folder and the daemon processes that run on it in turn."""

    def __init__(self, span: Span, tmp: Path, data: Path, policy: str = POLICY, settings: str = "") -> None:
        self.span, self.tmp, self.data = span, tmp, data
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(policy, encoding="utf-8")
        self.config = tmp / "config.yaml"
        self.config.write_text(f"data_dir: {data}\npolicy: {self.policy}\ninterfaces: [{SPAN_DEVICE}]\n"
                               f"status_socket: {tmp / 'status.sock'}\n{settings}", encoding="utf-8")
        self.notify_path = tmp / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.notified: list[str] = []
        self._read = 0
        self._news = threading.Condition()
        self._closed = False
        # Read all the time, as systemd does: a full queue would block the daemon.
        self._listener = threading.Thread(target=self._listen, name="notify-listener", daemon=True)
        self._listener.start()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.tmp / f"daemon{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with self.log_path.open("wb") as log:
            self.proc = self.span.lab.start(
                self.span.tap, ["env", f"NOTIFY_SOCKET={self.notify_path}", "WATCHDOG_USEC=4000000",
                                sys.executable, "-m", "callrec", "run", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=log)
        self.expect(lambda m: "READY=1" in m, START_SECONDS, "READY=1")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.span.lab.stop(self.proc)
        self._closed = True
        self._listener.join(timeout=5)
        self.notify.close()

    def _listen(self) -> None:
        while not self._closed:
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            with self._news:
                self.notified.append(message)
                self._news.notify_all()

    # ---- what it says ----------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def expect(self, matches: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first sd_notify message not looked at yet that matches."""
        deadline = time.monotonic() + timeout
        with self._news:
            while True:
                while self._read < len(self.notified):
                    message = self.notified[self._read]
                    self._read += 1
                    if matches(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._news.wait(left)
        raise AssertionError(f"the daemon never notified {what} within {timeout:.0f} s; last messages "
                             f"{self.notified[-3:]}; log:\n{self.log()}")

    def active_calls(self, at_least: int, timeout: float = 20.0) -> None:
        """Wait until the daemon's STATUS counts this many open recordings
        (in a message sent from now on, not one about earlier calls)."""
        with self._news:
            self._read = len(self.notified)
        def enough(message: str) -> bool:
            found = re.search(r"STATUS=(\d+) active calls", message)
            return found is not None and int(found.group(1)) >= at_least
        self.expect(enough, timeout, f"{at_least} active calls")

    def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        """The first log line holding needle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if needle in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"the daemon never logged {needle!r}; log:\n{self.log()}")

    def status(self) -> tuple[int, dict]:
        """`callrec status --json`: its exit status and what it printed."""
        done = run_cli("status", "--config", self.config, "--json", check=False)
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"callrec status printed no JSON ({done.returncode}): "
                                 f"{done.stdout}{done.stderr}") from None

    def wait_status(self, matches: Callable[[int, dict], bool], what: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        code, state = self.status()
        while not matches(code, state):
            if time.monotonic() > deadline:
                raise AssertionError(f"callrec status never showed {what}: {code} {state}; log:\n{self.log()}")
            time.sleep(0.3)
            code, state = self.status()
        return state

    # ---- what it stored --------------------------------------------------
    def rows(self) -> list[dict]:
        return calls(self.data) if (self.data / "index.sqlite3").exists() else []

    def sealed_rows(self, call_ids: set[str], timeout: float = 15.0) -> dict[str, dict]:
        """The sealed index rows of these SIP calls, waited for."""
        deadline = time.monotonic() + timeout
        rows: dict[str, dict] = {}
        while time.monotonic() < deadline:
            rows = {r["sip_call_id"]: r for r in self.rows() if r["sip_call_id"] in call_ids}
            if len(rows) == len(call_ids) and all(r["state"] == "sealed" for r in rows.values()):
                return rows
            time.sleep(0.3)
        missing = sorted(call_ids - {c for c, r in rows.items() if r["state"] == "sealed"})
        raise AssertionError(f"{len(missing)} calls have no sealed row: {missing[:5]}; log:\n{self.log()}")

    def settled(self, count: int, timeout: float = 30.0) -> list[dict]:
        """All rows, once there are `count` and every one is sealed."""
        deadline = time.monotonic() + timeout
        rows = self.rows()
        while not (len(rows) == count and all(r["state"] == "sealed" for r in rows)):
            if time.monotonic() > deadline:
                have = [(r["sip_call_id"], r["state"]) for r in rows]
                raise AssertionError(f"expected {count} sealed rows, have {have}; log:\n{self.log()}")
            time.sleep(0.3)
            rows = self.rows()
        return rows

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.span.lab.finish(self.proc, timeout)
