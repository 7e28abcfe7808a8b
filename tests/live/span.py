"""A switch with a SPAN port, built from network namespaces.

    uac ns (trunk 192.0.2.1) -- pa [sw ns: bridge br0] pb -- uas ns (PBX 192.0.2.2)
                                 \\ tc mirred: a copy of what enters pa or pb //
                                        span0 ------ span1 (tap ns: callrec, tcpdump)

A PBX's SPAN port is a separate switch port that receives a copy of the
frames of the monitored ports; the recorder on it has no address, is off the
forwarding path, and sees frames addressed to other MACs.  tc's mirred action
on the ingress of both bridge ports, into a veth whose other end is in a
namespace of its own, is that: each frame once (ingress of the port it came
in on), with its original MACs, on an interface nobody else uses.  Capturing
on br0 instead would put the recorder inside the switch (it would see what
the bridge delivers to its own host, not what it forwards), and a veth from
the bridge as a third bridge port would only see flooded frames once the
bridge has learnt the MACs.
"""
from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.sipp.netns import Lab, command, need

UAC_ADDRESS = "192.0.2.1"
UAS_ADDRESS = "192.0.2.2"
SPAN_DEVICE = "span1"
_PORTS = ("pa", "pb")


@dataclass(slots=True)
class Span:
    """The namespaces of one switch: caller, callee and the recorder's tap."""

    lab: Lab
    uac: str
    uas: str
    tap: str


def build(lab: Lab, tag: str) -> Span:
    """The switch, its two hosts and the SPAN port; IPv6 off everywhere so
    that only the calls cross the mirror."""
    need("tc")
    uac = lab.namespace(f"{tag}-uac", ipv6=False)
    uas = lab.namespace(f"{tag}-uas", ipv6=False)
    sw = lab.namespace(f"{tag}-sw", ipv6=False)
    tap = lab.namespace(f"{tag}-tap", ipv6=False)
    command(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
    lab.veth(uac, "uac0", sw, "pa")
    lab.veth(uas, "uas0", sw, "pb")
    lab.veth(sw, "span0", tap, SPAN_DEVICE)
    for port in _PORTS:
        command(["ip", "-n", sw, "link", "set", port, "master", "br0"])
        command(["tc", "-n", sw, "qdisc", "add", "dev", port, "clsact"])
        command(["tc", "-n", sw, "filter", "add", "dev", port, "ingress", "protocol", "all", "u32",
                 "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "span0"])
    command(["ip", "-n", sw, "link", "set", "br0", "up"])
    lab.address(uac, "uac0", f"{UAC_ADDRESS}/24")
    lab.address(uas, "uas0", f"{UAS_ADDRESS}/24")
    return Span(lab, uac, uas, tap)


class Witness:
    """tcpdump on the SPAN port beside the daemon: the wire as tshark will
    read it, the reference every recording is compared with."""

    def __init__(self, span: Span, path: Path) -> None:
        self.span, self.path = span, path
        self.proc = span.lab.start(span.tap, ["tcpdump", "-i", SPAN_DEVICE, "-w", str(path), "-U", "-n", "-s", "0",
                                              "-Z", "root", "udp"],
                                   cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        span.lab.wait_for_line(self.proc, self.proc.stderr, b"listening on", 10)

    def stop(self) -> Path:
        """End the capture; what tcpdump says about drops must be nothing."""
        self.span.lab.stop(self.proc, sig=signal.SIGINT)
        assert self.proc.stderr is not None
        said = self.proc.stderr.read().decode(errors="replace")
        dropped = [line for line in said.splitlines() if "dropped by kernel" in line]
        assert dropped and dropped[0].split()[0] == "0", f"tcpdump on the SPAN port lost packets: {said}"
        return self.path
