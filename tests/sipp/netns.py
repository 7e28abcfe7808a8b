"""Network namespaces, veth links and the processes run inside them.

A Lab owns everything it makes: namespaces are named crt-<pid>-<name> so
that parallel sessions never collide, every process is started through it,
and close() removes all of it, also after a failure.  Every command has a
timeout.  Problems are raised as LabError, an AssertionError, because a
machine that cannot run these tests must fail them, not skip them.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Sequence

PREFIX = "crt"
COMMAND_SECONDS = 15.0


class LabError(AssertionError):
    """The lab could not be built or a tool in it failed."""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LabError(f"{tool!r} is not installed: the SIPp interop tests need iproute2, sip-tester "
                       "(sipp with PCAP play), tcpdump and tshark (apt-get install iproute2 sip-tester "
                       "tcpdump tshark)")
    return path


def command(argv: Sequence[str], *, timeout: float = COMMAND_SECONDS) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def preflight() -> None:
    """Fail loudly, with the reason, where the lab cannot be built."""
    if os.geteuid() != 0:
        raise LabError("the SIPp interop tests must run as root (network namespaces, raw sockets, "
                       "tcpdump); CI runs them as root: run `sudo python -m pytest tests/test_interop_sipp.py`")
    for tool in ("ip", "sipp", "tcpdump", "tshark"):
        need(tool)
    version = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=COMMAND_SECONDS)
    if "PCAP" not in version.stdout + version.stderr:
        raise LabError(f"this sipp has no PCAP play support: {version.stdout.strip()!r}")
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        command(["ip", "netns", "add", probe])
    except LabError as exc:
        raise LabError(f"`ip netns add` does not work here (needs root and CONFIG_NET_NS): {exc}") from None
    command(["ip", "netns", "del", probe])


def reap_stale() -> list[str]:
    """Remove namespaces left by lab sessions whose process is gone (one
    killed with SIGKILL cannot clean up); returns their names."""
    removed = []
    for line in command(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)-[\w-]+", name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        command(["ip", "netns", "del", name])
        removed.append(name)
    return removed


class Lab:
    """Namespaces, links and processes of one test session."""

    def __init__(self) -> None:
        self.prefix = f"{PREFIX}-{os.getpid()}"
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- network ---------------------------------------------------------
    def namespace(self, name: str, *, ipv6: bool = True) -> str:
        full = f"{self.prefix}-{name}"
        command(["ip", "netns", "add", full])
        with self._lock:
            self._namespaces.append(full)
        command(["ip", "-n", full, "link", "set", "lo", "up"])
        if not ipv6:
            for scope in ("all", "default"):
                command(["ip", "netns", "exec", full, "sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
        return full

    def veth(self, ns1: str, dev1: str, ns2: str, dev2: str, *, mtu: int | None = None) -> None:
        command(["ip", "-n", ns1, "link", "add", dev1, "type", "veth", "peer", "name", dev2, "netns", ns2])
        for ns, dev in ((ns1, dev1), (ns2, dev2)):
            if mtu is not None:
                command(["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu)])
            command(["ip", "-n", ns, "link", "set", dev, "up"])

    def address(self, ns: str, dev: str, cidr: str) -> None:
        extra = ["nodad"] if ":" in cidr else []
        command(["ip", "-n", ns, "addr", "add", cidr, "dev", dev, *extra])

    # ---- processes -------------------------------------------------------
    def start(self, ns: str, argv: Sequence[str], *, cwd: Path, stdout: IO[bytes] | int | None,
              stderr: IO[bytes] | int | None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr)
        with self._lock:
            self._processes.append(proc)
        return proc

    @staticmethod
    def wait_for_line(proc: subprocess.Popen[bytes], stream: IO[bytes], needle: bytes, timeout: float) -> bytes:
        """Read stream until a line contains needle; what was read."""
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"{proc.args!r} did not say {needle!r} within {timeout:.0f} s; it said {seen!r}")
            ready, _, _ = select.select([stream], [], [], left)
            if ready:
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    code = proc.wait(timeout=5)
                    raise LabError(f"{proc.args!r} exited ({code}) before saying {needle!r}: {seen!r}")
                seen += chunk
        return seen

    @staticmethod
    def wait_for_udp_port(ns: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if command(["ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}"]).strip():
                return
            time.sleep(0.05)
        raise LabError(f"nothing listens on UDP port {port} in {ns} after {timeout:.0f} s")

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], timeout: float) -> int:
        """Wait for a process that ends by itself; kill it at the deadline."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise LabError(f"{proc.args!r} did not finish within {timeout:.0f} s and was killed") from None

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Ask a process to end, kill it if it does not."""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=5)

    # ---- cleanup -----------------------------------------------------------
    def close(self) -> None:
        """Stop every process and delete every namespace made here."""
        problems = []
        with self._lock:
            processes, self._processes = self._processes, []
            namespaces, self._namespaces = self._namespaces, []
        for proc in processes:
            if proc.poll() is None:
                self.stop(proc, signal.SIGTERM, timeout=5)
        for ns in reversed(namespaces):
            try:
                command(["ip", "netns", "del", ns])
            except LabError as exc:
                problems.append(str(exc))
        if problems:
            raise LabError("cleanup failed: " + "; ".join(problems))

    def namespaces(self) -> list[str]:
        with self._lock:
            return list(self._namespaces)
