"""A console to test against: calls recorded under an organisation's policy, its people, and
`callrec web` serving them on a loopback port, started and stopped by the test."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.builders import PBX, TRUNK, write_pcap
from tests.call_frames import T0, bye, media, signalling
from tests.interop import REPO, calls, run_cli

PASSWORD = "{}-passphrase-2026"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ConsoleSite:
    """Data folder + policy + people (name → role) + a running console."""

    def __init__(self, tmp_path: Path, organisation: str, people: dict[str, str], *, tls: bool = False,
                 frames: list[tuple[float, bytes]] | None = None, policy: Path | None = None) -> None:
        """`frames`: the call to record (a G.711 call both ways unless given); `policy`: a policy
        file of the test's own instead of the organisation's example."""
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.policy = policy or REPO / "policies" / f"{organisation}.yaml"
        self.where = ("--data-dir", self.data, "--policy", self.policy)
        if frames is None:
            up, _ = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
            down, _ = media(T0 + 1.06, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
            frames = signalling() + up + down + bye(T0 + 5)
        run_cli("replay", write_pcap(tmp_path / "calls.pcap", sorted(frames, key=lambda f: f[0])), *self.where)
        self.call = calls(self.data)[0]
        manager = next(name for name, role in people.items() if role == "manager")
        for name, role in people.items():
            by = [] if name == manager else ["--user", manager]
            first = "" if name == manager else PASSWORD.format(manager) + "\n"
            run_cli("user", "add", name, "--role", role, *self.where, *by, input=first + PASSWORD.format(name) + "\n")
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"
        self.log = (tmp_path / "web.log").open("wb")
        argv = [sys.executable, "-m", "callrec", "web", *map(str, self.where), "--port", str(self.port)]
        self.proc = subprocess.Popen(argv + ([] if tls else ["--plain-http"]), cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"callrec web exited: {self.logtext()}")
            if "web.ready" in self.logtext():
                return
            time.sleep(0.1)
        raise AssertionError(f"callrec web never became ready: {self.logtext()}")

    def logtext(self) -> str:
        return (self.tmp / "web.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()

    def ledger(self) -> list[dict]:
        return json.loads(run_cli("ledger", "list", "--json", "--data-dir", self.data).stdout)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)
