"""The captures the SIPp interop tests replay, and how each one is made.

Every capture is a real SIPp caller (UAC) and callee (UAS) in their own
network namespaces, joined by a veth (or, for the VLAN captures, by the
user-space switch in vlanswitch.py over a tagged trunk), recorded by tcpdump
exactly as a mirror port would show the call.  All captures are made at the
same time, each in its own namespaces, so a session pays for the longest one
only.  Addresses are documentation ranges only.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from .netns import Lab, LabError, preflight, reap_stale
from .rtpfiles import PAYLOAD_TYPES, RATE, sweep, talk, write_rtp_pcap

HERE = Path(__file__).resolve().parent
SIPP_SHARE = Path("/usr/share/sip-tester")
SIP_PORT = 5060
MEDIA_PORT = 6000
CALL_SECONDS = 8.0
SIPP_TIMEOUT = 60
RUN_TIMEOUT = 90.0

CALLER = "0312345678"
EXTENSION = "201"
EXCLUDED = "0263000000"

# Offsets (s after the answer) of what uac_hold.xml does; its pauses say the same.
HOLD_PLAN = {"hold": 3.5, "resume": 6.5, "bye": 9.0, "talk": 3.0, "moh": 2.0, "talk2": 2.0}
# Offsets of what uac_dtmf.xml does; its pauses say the same.
DTMF_PLAN = {"digits": ("1", "2", "3", "*", "#"), "first": 7.3, "gap": 0.4, "bye": 9.9}


@dataclass(frozen=True, slots=True)
class Caller:
    """One SIPp UAC process."""

    callee: str
    sip_port: int = SIP_PORT + 1
    media_port: int = MEDIA_PORT
    calls: int = 1
    limit: int = 1
    scenario: str = "uac_call.xml"
    caller: str = CALLER


@dataclass(frozen=True, slots=True)
class Plan:
    """How to make one capture."""

    name: str
    topology: str  # "direct", "vlan" or "qinq"
    uac: str  # address/prefix
    uas: str
    codec: str
    media: Callable[[Path, str], None]
    callers: tuple[Caller, ...]
    uas_scenario: str = "uas_answer.xml"
    call_seconds: float = CALL_SECONDS
    tags: str = ""

    @property
    def uac_address(self) -> str:
        return self.uac.split("/")[0]

    @property
    def uas_address(self) -> str:
        return self.uas.split("/")[0]

    @property
    def answered_calls(self) -> int:
        return sum(c.calls for c in self.callers)


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture made for this session, and what went into it."""

    plan: Plan
    path: Path
    run_dir: Path
    seconds: float

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass(slots=True)
class Captures:
    by_name: dict[str, Capture] = field(default_factory=dict)
    seconds: float = 0.0

    def __getitem__(self, name: str) -> Capture:
        return self.by_name[name]


# ---- media for the scenarios ------------------------------------------------
def _shipped(name: str) -> Path:
    path = SIPP_SHARE / name
    if not path.is_file():
        raise LabError(f"{path} is missing: the sip-tester package ships it")
    return path


def _link(run_dir: Path, name: str, target: Path) -> None:
    (run_dir / name).symlink_to(target)


def _tone(path: Path, codec: str, seconds: float, low: float, high: float, seed: int, *,
          ssrc: int, seq: int, timestamp: int = 0, ptime: float = 0.02) -> None:
    audio = sweep(seconds, low, high, seed)
    write_rtp_pcap(path, talk(codec, audio, ssrc=ssrc, seq=seq, timestamp=timestamp, ptime=ptime))


def shipped_talk(run_dir: Path, codec: str) -> None:
    """The caller plays SIPp's own PCMA recording (30 ms packets, 7.05 s);
    the callee answers with 6 s of our 20 ms PCMA."""
    assert codec == "PCMA", "g711a.pcap is A-law"
    _link(run_dir, "uac_audio.pcap", _shipped("g711a.pcap"))
    _tone(run_dir / "uas_audio.pcap", codec, 6.0, 2400, 500, 2, ssrc=0x5EED0002, seq=20000)


def own_talk(run_dir: Path, codec: str) -> None:
    """Both parties play 6 s of audio written here (for PCMU, which SIPp does not ship)."""
    _tone(run_dir / "uac_audio.pcap", codec, 6.0, 300, 2600, 1, ssrc=0x5EED0001, seq=1000, timestamp=160000)
    _tone(run_dir / "uas_audio.pcap", codec, 6.0, 2400, 500, 2, ssrc=0x5EED0002, seq=64000, timestamp=4294960000)


def hold_talk(run_dir: Path, codec: str) -> None:
    """Talk, music on hold from the holder, talk again: one SSRC per party,
    sequence numbers and timestamps continuing across the pieces, the
    timestamps jumping over the time nothing was sent."""
    plan = HOLD_PLAN
    n_talk, n_moh = int(plan["talk"] * 50), int(plan["moh"] * 50)
    _tone(run_dir / "uac_audio.pcap", codec, plan["talk"], 300, 1200, 11, ssrc=0x5EED0011, seq=3000)
    _tone(run_dir / "uac_moh.pcap", codec, plan["moh"], 600, 700, 12, ssrc=0x5EED0011, seq=3000 + n_talk,
          timestamp=int(plan["hold"] * RATE))
    _tone(run_dir / "uac_audio2.pcap", codec, plan["talk2"], 1200, 300, 13, ssrc=0x5EED0011,
          seq=3000 + n_talk + n_moh, timestamp=int(plan["resume"] * RATE))
    _tone(run_dir / "uas_audio.pcap", codec, plan["talk"], 2500, 1500, 14, ssrc=0x5EED0012, seq=7000)
    _tone(run_dir / "uas_audio2.pcap", codec, plan["talk2"], 1500, 2500, 15, ssrc=0x5EED0012,
          seq=7000 + n_talk, timestamp=int(plan["resume"] * RATE))


def dtmf_talk(run_dir: Path, codec: str) -> None:
    shipped_talk(run_dir, codec)
    for digit in ("1", "2", "3", "star", "pound"):
        name = f"dtmf_2833_{digit}.pcap"
        _link(run_dir, name, _shipped(name))


PLANS = (
    Plan("concurrent", "direct", "192.0.2.1/28", "192.0.2.2/28", "PCMA", shipped_talk,
         (Caller(EXTENSION, calls=6, limit=3),)),
    Plan("vlan", "vlan", "198.51.100.1/24", "198.51.100.2/24", "PCMA", shipped_talk,
         (Caller(EXTENSION),), tags="8100:100"),
    Plan("qinq", "qinq", "203.0.113.1/24", "203.0.113.2/24", "PCMA", shipped_talk,
         (Caller(EXTENSION),), tags="88a8:200,8100:100"),
    Plan("ipv6", "direct", "2001:db8:0:1::1/64", "2001:db8:0:1::2/64", "PCMU", own_talk,
         (Caller(EXTENSION),)),
    Plan("hold", "direct", "192.0.2.17/28", "192.0.2.18/28", "PCMU", hold_talk,
         (Caller(EXTENSION, scenario="uac_hold.xml"),), uas_scenario="uas_hold.xml",
         call_seconds=HOLD_PLAN["bye"]),
    Plan("dtmf", "direct", "192.0.2.33/28", "192.0.2.34/28", "PCMA", dtmf_talk,
         (Caller(EXTENSION, scenario="uac_dtmf.xml"),), call_seconds=DTMF_PLAN["bye"]),
    Plan("excluded", "direct", "192.0.2.49/28", "192.0.2.50/28", "PCMA", shipped_talk,
         (Caller(EXCLUDED), Caller(EXTENSION, sip_port=SIP_PORT + 2, media_port=MEDIA_PORT + 1000))),
)


# ---- making a capture -------------------------------------------------------
def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"({path.name} not written)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class _Run:
    """One plan being recorded."""

    def __init__(self, lab: Lab, plan: Plan, root: Path) -> None:
        self.lab = lab
        self.plan = plan
        self.run_dir = root / plan.name
        self.path = root / f"{plan.name}.pcap"
        self._logs: list[IO[bytes]] = []

    def log(self, name: str) -> IO[bytes]:
        handle = (self.run_dir / name).open("wb")
        self._logs.append(handle)
        return handle

    def topology(self) -> tuple[str, str, str, str]:
        """(UAC namespace, UAS namespace, capture namespace, capture device)."""
        lab, plan = self.lab, self.plan
        uac_ns = lab.namespace(f"{plan.name}-uac")
        uas_ns = lab.namespace(f"{plan.name}-uas")
        if plan.topology == "direct":
            lab.veth(uac_ns, "uac0", uas_ns, "uas0")
            where = (uas_ns, "uas0")
        else:
            sw_ns = lab.namespace(f"{plan.name}-sw", ipv6=False)
            lab.veth(uac_ns, "uac0", sw_ns, "a1")
            lab.veth(uas_ns, "uas0", sw_ns, "b1")
            lab.veth(sw_ns, "t0", sw_ns, "t1", mtu=1600)
            log = self.log("vlanswitch.log")
            switch = lab.start(sw_ns, [sys.executable, str(HERE / "vlanswitch.py"), "--pair", "a1,t0",
                                       "--pair", "b1,t1", "--tags", plan.tags, "--lifetime", str(RUN_TIMEOUT * 2)],
                               cwd=self.run_dir, stdout=subprocess.PIPE, stderr=log)
            assert switch.stdout is not None
            lab.wait_for_line(switch, switch.stdout, b"ready", 10)
            where = (sw_ns, "t0")
        lab.address(uac_ns, "uac0", plan.uac)
        lab.address(uas_ns, "uas0", plan.uas)
        return uac_ns, uas_ns, *where

    def sipp(self, role: str, scenario: str, address: str, *extra: str) -> list[str]:
        return [
            "sipp", "-sf", str(HERE / scenario), "-i", address, "-mi", address,
            "-key", "pt", str(PAYLOAD_TYPES[self.plan.codec]), "-key", "codec", self.plan.codec,
            "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error",
            "-trace_err", "-error_file", str(self.run_dir / f"{role}_errors.log"), *extra,
        ]

    def record(self) -> Capture:
        try:
            return self._record()
        finally:
            for handle in self._logs:
                handle.close()

    def _record(self) -> Capture:
        began = time.monotonic()
        plan, lab = self.plan, self.lab
        self.run_dir.mkdir(parents=True)
        plan.media(self.run_dir, plan.codec)
        uac_ns, uas_ns, cap_ns, cap_dev = self.topology()
        tcpdump = lab.start(cap_ns, ["tcpdump", "-i", cap_dev, "-w", str(self.path), "-U", "-n", "-s", "0",
                                     "-Z", "root"],
                            cwd=self.run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert tcpdump.stderr is not None
        lab.wait_for_line(tcpdump, tcpdump.stderr, b"listening on", 10)
        uas_log = self.run_dir / "uas.log"
        uas = lab.start(uas_ns, self.sipp("uas", plan.uas_scenario, plan.uas_address, "-p", str(SIP_PORT),
                                          "-mp", str(MEDIA_PORT), "-m", str(plan.answered_calls)),
                        cwd=self.run_dir, stdout=self.log(uas_log.name), stderr=subprocess.STDOUT)
        lab.wait_for_udp_port(uas_ns, SIP_PORT, 10)
        callers = []
        for i, c in enumerate(plan.callers):
            log = self.run_dir / f"uac{i}.log"
            argv = self.sipp(f"uac{i}", c.scenario, plan.uac_address, "-p", str(c.sip_port),
                             "-mp", str(c.media_port), "-key", "caller", c.caller, "-s", c.callee,
                             "-m", str(c.calls), "-l", str(c.limit), "-r", "10",
                             "-d", str(int(plan.call_seconds * 1000)),
                             f"{_uri_host(plan.uas_address)}:{SIP_PORT}")
            callers.append((lab.start(uac_ns, argv, cwd=self.run_dir, stdout=self.log(log.name),
                                      stderr=subprocess.STDOUT), log))
        failures = []
        for proc, log in callers:
            code = lab.finish(proc, RUN_TIMEOUT)
            if code != 0:
                failures.append(f"UAC exited {code}:\n{_tail(log)}\n{_tail(log.with_name(log.stem + '_errors.log'))}")
        # A callee whose caller failed would wait for its calls until its own timeout.
        code = lab.stop(uas) if failures else lab.finish(uas, RUN_TIMEOUT)
        if code != 0 and not failures:
            failures.append(f"UAS exited {code}:\n{_tail(uas_log)}\n{_tail(self.run_dir / 'uas_errors.log')}")
        time.sleep(0.3)
        lab.stop(tcpdump, sig=signal.SIGINT)
        if failures:
            raise LabError(f"capture {plan.name!r}: " + "\n".join(failures))
        if not self.path.is_file() or self.path.stat().st_size < 1000:
            raise LabError(f"capture {plan.name!r}: tcpdump wrote nothing to {self.path}")
        return Capture(plan, self.path, self.run_dir, time.monotonic() - began)


def make_captures(root: Path, plans: tuple[Plan, ...] = PLANS) -> Captures:
    """Record every plan at once under root; every namespace and process
    made for it is gone when this returns or raises."""
    began = time.monotonic()
    preflight()
    reap_stale()
    result = Captures()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(plan: Plan) -> None:
        try:
            capture = _Run(lab, plan, root).record()
        except BaseException as exc:  # noqa: BLE001 - reported below, with the others
            with lock:
                errors.append(exc)
            return
        with lock:
            result.by_name[plan.name] = capture

    with Lab() as lab:
        threads = [threading.Thread(target=work, args=(plan,), name=f"capture-{plan.name}") for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RUN_TIMEOUT + 60)
        if any(t.is_alive() for t in threads):
            errors.append(LabError("a capture thread did not finish in time"))
    if errors:
        raise LabError("making the SIPp captures failed:\n" + "\n\n".join(map(str, errors)))
    result.seconds = time.monotonic() - began
    return result


def main() -> int:
    """Make the captures into a folder, for looking at them by hand."""
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("sipp-captures")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    captures = make_captures(root)
    for capture in captures.by_name.values():
        sys.stdout.write(f"{capture.path}  ({capture.seconds:.1f} s)\n")
    sys.stdout.write(f"all made in {captures.seconds:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
