"""A real PBX and real phones around the announcer: kamailio (the PBX: trunk calls to a DID go to
the announcer, extensions to the phones registered with it, a 302 is followed through the same
routing), baresip as the caller on the carrier trunk and as the extension's phone, and
`callrec announcer`, each in its own network namespace on one switch whose SPAN port tcpdump
records as the recorder's mirror port would show the calls:

    caller 192.0.2.1 (trunk)  pbx 192.0.2.10 (kamailio)  announcer 192.0.2.20  phone 192.0.2.30 (201)
         \\___________________________ sw: bridge br0 ___________________________/
                          tc mirred: each frame once -> span0 --- span1 (tap: tcpdump)

Addresses are documentation addresses only; everything is removed by tests/sipp/netns.Lab.
Needs root, iproute2 (ip, tc), kamailio, baresip, tcpdump; a missing one fails the test loudly.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.interop import REPO
from tests.sipp.netns import Lab, LabError, command, need, preflight, reap_stale

CALLER_IP, PBX_IP, ANNOUNCER_IP, PHONE_IP = "192.0.2.1", "192.0.2.10", "192.0.2.20", "192.0.2.30"
CALLER, DID, EXTENSION, OPERATOR = "0312345678", "0355550100", "201", "9000"
SPAN_DEVICE = "span1"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:{pbx}:5060
alias="{pbx}:5060"
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{folder}/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("rr", "enable_full_lr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    record_route();
    route(NUMBERS);
    t_reply("404", "Not Found");
}}

# A DID (ten digits) goes to the announcer; an extension to the phone registered for it.
route[NUMBERS] {{
    xlog("L_INFO", "pbx.route $rm $ru\\n");
    if ($rU =~ "^0[0-9]{{9}}$") {{
        $du = "sip:{announcer}:5060";
        t_on_failure("REDIRECT");
        t_relay();
        exit;
    }}
    if (lookup("location")) {{ t_relay(); exit; }}
}}

# A 302 from the announcer is followed through the same routing as a new call.
failure_route[REDIRECT] {{
    if (t_is_canceled()) {{ exit; }}
    if (t_check_status("3[0-9][0-9]")) {{
        $ru = $(T_rpl($ct){{nameaddr.uri}});
        $du = $null;
        xlog("L_INFO", "pbx.redirected $ru\\n");
        route(NUMBERS);
        t_reply("404", "Not Found");
    }}
}}
"""

BARESIP_CONFIG = """poll_method epoll
sip_listen {address}:5060
call_local_timeout 120
call_max_calls 4
audio_player aufile,{folder}/heard.wav
audio_source {source}
audio_alert aufile,{folder}/alert.wav
rtp_ports 40000-40100
jitter_buffer_delay 1-4
module_path {modules}
module g711.so
module aufile.so
module ausine.so
module_app account.so
module_app menu.so
"""


def preflight_tools() -> None:
    """Fail loudly, with the reason, where this lab cannot be built."""
    preflight()
    for tool, package in (("kamailio", "kamailio"), ("baresip", "baresip-core"), ("tc", "iproute2")):
        if need_quiet(tool) is None:
            raise LabError(f"{tool!r} is not installed: the real-PBX announcer tests need it "
                           f"(apt-get install {package}; .ci/run installs it)")
    for path in (KAMAILIO_MODULES / "uac_redirect.so", KAMAILIO_MODULES / "tmx.so", BARESIP_MODULES / "menu.so",
                 BARESIP_MODULES / "aufile.so"):
        if not path.exists():
            raise LabError(f"{path} is missing: kamailio and baresip-core from Debian provide it")


def need_quiet(tool: str) -> str | None:
    try:
        return need(tool)
    except LabError:
        return None


@dataclass
class Site:
    """The namespaces of one PBX site."""

    lab: Lab
    caller: str
    pbx: str
    announcer: str
    phone: str
    tap: str


def build(lab: Lab, tag: str) -> Site:
    preflight_tools()
    reap_stale()
    names = ("caller", "pbx", "announcer", "phone")
    hosts = {name: lab.namespace(f"{tag}-{name}", ipv6=False) for name in names}
    sw = lab.namespace(f"{tag}-sw", ipv6=False)
    tap = lab.namespace(f"{tag}-tap", ipv6=False)
    command(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
    lab.veth(sw, "span0", tap, SPAN_DEVICE)
    addresses = {"caller": CALLER_IP, "pbx": PBX_IP, "announcer": ANNOUNCER_IP, "phone": PHONE_IP}
    for n, name in enumerate(names):
        port = f"p{n}"
        lab.veth(hosts[name], "eth0", sw, port)
        command(["ip", "-n", sw, "link", "set", port, "master", "br0"])
        command(["tc", "-n", sw, "qdisc", "add", "dev", port, "clsact"])
        command(["tc", "-n", sw, "filter", "add", "dev", port, "ingress", "protocol", "all", "u32",
                 "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "span0"])
        lab.address(hosts[name], "eth0", f"{addresses[name]}/24")
    command(["ip", "-n", sw, "link", "set", "br0", "up"])
    return Site(lab, hosts["caller"], hosts["pbx"], hosts["announcer"], hosts["phone"], tap)


class Process:
    """One program of the site, logging to a file."""

    def __init__(self, site: Site, ns: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = site.lab.start(ns, argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.proc.poll() is not None:
                raise LabError(f"{self.proc.args!r} exited ({self.proc.returncode}) before {text!r}:\n"
                               f"{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.proc.args!r} did not log {text!r} within {timeout:.0f} s:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the program and whatever it forked: kamailio's workers outlive a main process
        killed at the deadline, and would hold the next test's port 5060."""
        children = _children(self.proc.pid)
        code = Lab.stop(self.proc, sig=sig)
        for pid, _ in _children_alive(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        return code


def _stat(pid: int) -> tuple[int, str] | None:
    """A process's parent and start time (which tells a reused pid from the process it was);
    a zombie has ended and counts as neither."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (0, "") if fields[0] == "Z" else (int(fields[1]), fields[19])


def _children(pid: int) -> list[tuple[int, str]]:
    """Every process forked by pid (children of children too), with its start time."""
    parents = {pid}
    found: list[tuple[int, str]] = []
    grew = True
    while grew:
        grew = False
        for entry in Path("/proc").glob("[0-9]*"):
            child = int(entry.name)
            stat = _stat(child)
            if stat is not None and stat[0] in parents and child not in parents:
                parents.add(child)
                found.append((child, stat[1]))
                grew = True
    return found


def _children_alive(children: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Those still running as the same process (same start time), after their parent ended."""
    return [(pid, started) for pid, started in children if (_stat(pid) or (0, ""))[1] == started]


def kamailio(site: Site, folder: Path) -> Process:
    cfg = folder / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(pbx=PBX_IP, announcer=ANNOUNCER_IP, modules=KAMAILIO_MODULES, folder=folder),
                   encoding="utf-8")
    pbx = Process(site, site.pbx, ["kamailio", "-DD", "-E", "-f", str(cfg), "-P", str(folder / "kamailio.pid"),
                                   "-Y", str(folder)], folder / "kamailio.log", folder)
    Lab.wait_for_udp_port(site.pbx, 5060, 20)
    return pbx


def baresip(site: Site, ns: str, folder: Path, account: str, source: str, commands: tuple[str, ...] = ()) -> Process:
    """baresip with its own config folder: g711 only, audio from `source`, what it hears to heard.wav."""
    folder.mkdir(parents=True, exist_ok=True)
    address = {site.caller: CALLER_IP, site.phone: PHONE_IP}[ns]
    (folder / "config").write_text(BARESIP_CONFIG.format(address=address, folder=folder, source=source,
                                                         modules=BARESIP_MODULES), encoding="utf-8")
    (folder / "accounts").write_text(account + "\n", encoding="utf-8")
    (folder / "contacts").write_text("", encoding="utf-8")
    argv = ["baresip", "-f", str(folder), "-s"]
    for line in commands:
        argv += ["-e", line]
    return Process(site, ns, argv, folder / "baresip.log", folder)


class Announcer:
    """`callrec announcer` (REFER or early media and 302) on the site's data folder."""

    def __init__(self, site: Site, folder: Path, policy: str, hand_over: str) -> None:
        (folder / "policy.yaml").write_text(policy, encoding="utf-8")
        (folder / "announcer.yaml").write_text(
            "announcer:\n"
            f"  listen_address: {ANNOUNCER_IP}\n  listen_port: 5060\n  transports: [udp]\n"
            f"  pbx: [{PBX_IP}/32]\n  rtp_ports: [20000, 20100]\n  operator: \"{OPERATOR}\"\n"
            f"  hand_over: {hand_over}\n  refer_timeout: 2\n  notify_timeout: 20\n"
            "policy: policy.yaml\ndata_dir: data\n", encoding="utf-8")
        self.process = Process(site, site.announcer, [sys.executable, "-m", "callrec", "announcer", "--config",
                                                      str(folder / "announcer.yaml")], folder / "announcer.log", REPO)
        self.process.wait_for("announcer.ready", 30)

    def stop(self) -> str:
        code = self.process.stop()
        log = self.process.log
        if code != 0 or "Traceback" in log:
            raise LabError(f"the announcer exited {code}:\n{log[-3000:]}")
        return log


class Span:
    """tcpdump on the SPAN port: the recorder's view of the site."""

    def __init__(self, site: Site, path: Path) -> None:
        self.site, self.path = site, path
        self.proc = site.lab.start(site.tap, ["tcpdump", "-i", SPAN_DEVICE, "--immediate-mode", "-w", str(path), "-U",
                                              "-n", "-s", "0", "-Z", "root", "udp"],
                                   cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        site.lab.wait_for_line(self.proc, self.proc.stderr, b"listening on", 10)

    def stop(self) -> Path:
        time.sleep(0.3)
        Lab.stop(self.proc, sig=signal.SIGINT)
        return self.path
