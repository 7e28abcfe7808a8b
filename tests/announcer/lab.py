"""The announcer and SIPp (as the PBX) in two network namespaces joined by a veth, with tcpdump
on the PBX's side: the wire as the PBX sees it. Addresses are documentation addresses only;
everything is removed again by tests/sipp/netns.Lab."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.announcer import scenarios
from tests.interop import REPO
from tests.sipp.netns import Lab, LabError, preflight, reap_stale

PBX_IP = "192.0.2.10"
STRANGER_IP = "192.0.2.66"
ANNOUNCER_IP = "192.0.2.20"
SIP_PORT = 5060
PBX_SIP_PORT = 5070
PBX_MEDIA_PORT = 6000
CALLER = "0312345678"
DID = "0355550100"
OPERATOR = "9000"
SIPP_TIMEOUT = 40


@dataclass
class Net:
    lab: Lab
    pbx: str
    announcer: str


def build(lab: Lab) -> Net:
    preflight()
    reap_stale()
    pbx = lab.namespace("ann-pbx")
    announcer = lab.namespace("ann-ua")
    lab.veth(pbx, "pbx0", announcer, "ua0")
    lab.address(pbx, "pbx0", f"{PBX_IP}/24")
    lab.address(pbx, "pbx0", f"{STRANGER_IP}/24")
    lab.address(announcer, "ua0", f"{ANNOUNCER_IP}/24")
    return Net(lab, pbx, announcer)


def config_text(**settings: object) -> str:
    values: dict[str, object] = {
        "listen_address": ANNOUNCER_IP, "listen_port": SIP_PORT, "transports": "[udp, tcp]",
        "pbx": f"[{PBX_IP}/32]", "rtp_ports": "[20000, 20100]", "operator": f'"{OPERATOR}"',
        "refer_timeout": 0.3, "notify_timeout": 10}
    values.update(settings)
    lines = ["announcer:", *(f"  {k}: {v}" for k, v in values.items()), "policy: policy.yaml", "data_dir: data"]
    return "\n".join(lines) + "\n"


class Announcer:
    """`callrec announcer` in its namespace, logging to a file."""

    def __init__(self, net: Net, folder: Path, config: str, policy: str) -> None:
        self.folder = folder
        (folder / "announcer.yaml").write_text(config, encoding="utf-8")
        (folder / "policy.yaml").write_text(policy, encoding="utf-8")
        self.log_path = folder / "announcer.log"
        self._log = self.log_path.open("wb")
        self.proc = net.lab.start(net.announcer, [sys.executable, "-m", "callrec", "announcer", "--config",
                                                  str(folder / "announcer.yaml")],
                                  cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_for("announcer.ready", 30)

    def wait_for(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while event not in self.log:
            if self.proc.poll() is not None:
                raise LabError(f"the announcer exited ({self.proc.returncode}) before {event}:\n{self.log}")
            if time.monotonic() > deadline:
                raise LabError(f"the announcer did not log {event} within {timeout:.0f} s:\n{self.log}")
            time.sleep(0.05)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        code = Lab.stop(self.proc)
        self._log.close()
        return code


def sipp(net: Net, folder: Path, scenario: str, *, address: str = PBX_IP, transport: str = "u1",
         codec: str = "PCMU", extra: tuple[str, ...] = (), caller: str = CALLER) -> None:
    """Run one SIPp PBX call to the announcer; a failed call fails with SIPp's own words."""
    path = scenarios.write(scenario, folder)
    pt = {"PCMU": "0", "PCMA": "8"}[codec]
    argv = ["sipp", "-sf", str(path), "-i", address, "-mi", address, "-p", str(PBX_SIP_PORT), "-mp",
            str(PBX_MEDIA_PORT), "-t", transport, "-key", "caller", caller, "-key", "pt", pt, "-key", "codec", codec,
            "-s", DID, "-m", "1", "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error", "-trace_err",
            "-error_file", str(folder / f"{scenario}_errors.log"), *extra, f"{ANNOUNCER_IP}:{SIP_PORT}"]
    log = folder / f"{scenario}.log"
    with log.open("wb") as out:
        proc = net.lab.start(net.pbx, argv, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
        code = Lab.finish(proc, SIPP_TIMEOUT + 20)
    if code != 0:
        errors = folder / f"{scenario}_errors.log"
        raise LabError(f"SIPp {scenario} exited {code}:\n{log.read_text(errors='replace')[-3000:]}\n"
                       f"{errors.read_text(errors='replace')[-3000:] if errors.exists() else ''}")


class Capture:
    """tcpdump on the PBX's end of the link."""

    def __init__(self, net: Net, path: Path, *, immediate: bool = True) -> None:
        """immediate: every packet reaches the file at once (a test stops right after its call);
        without it tcpdump wakes once per ring block and costs the machine less (the benchmark)."""
        self.path = path
        self.lab = net.lab
        self.settle = 0.3 if immediate else 2.5
        mode = ["--immediate-mode"] if immediate else []
        self.proc = net.lab.start(net.pbx, ["tcpdump", "-i", "pbx0", *mode, "-B", "32768", "-w", str(path), "-U",
                                            "-n", "-s", "0", "-Z", "root"], cwd=path.parent,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.summary = ""
        assert self.proc.stderr is not None
        Lab.wait_for_line(self.proc, self.proc.stderr, b"listening on", 10)

    def stop(self) -> Path:
        """Stop, keeping tcpdump's closing words (its count of packets the kernel dropped)."""
        time.sleep(self.settle)
        Lab.stop(self.proc, sig=2)
        assert self.proc.stderr is not None
        self.summary = self.proc.stderr.read().decode(errors="replace")
        return self.path
