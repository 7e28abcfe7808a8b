"""recorder.live_capture against the real kernel.

Every test builds its own network namespaces joined by a veth pair (names
crt-<pid>-..., removed again even on failure, see tests/sipp/netns.py) and
sends real packets: crafted frames from a packet socket on the far end, and
traffic the kernel makes itself (UDP, TCP handshakes, ICMP replies).  What the
capture yields is compared with what was sent, byte for byte.

Needs root (CI runs as root); without it these tests fail, they never skip.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.afpacket import Frame
from recorder.live_capture import LiveCapture, LiveCaptureError
from tests.raw_frames import (
    ARP, DOT1AD, DOT1Q, ICMP_ECHO, QINQ, eth, frag6, ipv4, ipv6, tcp, udp,
)
from tests.sipp.netns import Lab, command, reap_stale

pytestmark = pytest.mark.root

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the body in network namespace ``ns``: sockets made here stay in it."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


@dataclass(slots=True)
class Pair:
    """Two namespaces joined by a veth: ``tx`` sends, ``rx`` captures."""

    lab: Lab
    tx: str
    rx: str
    tx_dev: str
    rx_dev: str

    def rx_mac(self) -> bytes:
        out = command(["ip", "-n", self.rx, "-br", "link", "show", "dev", self.rx_dev])
        return bytes.fromhex(out.split()[2].replace(":", ""))


@pytest.fixture
def pair() -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.fail("live capture tests need root (packet sockets, network namespaces): "
                    "run `sudo python -m pytest tests/test_live_capture.py`", pytrace=False)
    reap_stale()
    n = next(_serial)
    with Lab() as lab:
        tx, rx = lab.namespace(f"lc{n}tx"), lab.namespace(f"lc{n}rx")
        lab.veth(tx, "lctx", rx, "lcrx")
        lab.address(tx, "lctx", "192.0.2.1/24")
        lab.address(rx, "lcrx", "192.0.2.2/24")
        lab.address(tx, "lctx", "2001:db8::1/64")
        lab.address(rx, "lcrx", "2001:db8::2/64")
        yield Pair(lab, tx, rx, "lctx", "lcrx")


@contextmanager
def raw_sender(ns: str, dev: str) -> Iterator[socket.socket]:
    """A packet socket that puts frames on the wire exactly as given."""
    with inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind((dev, 0))
        yield sock


def capture(pair: Pair, dev: str | None = None, **options: object) -> LiveCapture:
    """A capture in the receiving namespace; blocks retire after 10 ms unless told."""
    options.setdefault("block_timeout_ms", 10)
    with inside(pair.rx):
        return LiveCapture(dev or pair.rx_dev, **options)  # type: ignore[arg-type]


def collect(cap: LiveCapture, *, want: int | None = None, quiet: float = 0.3, timeout: float = 5.0) -> list[Frame]:
    """Frames until ``want`` have come, or until nothing came for ``quiet`` s."""
    frames: list[Frame] = []
    poller = select.poll()
    poller.register(cap.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline and (want is None or len(frames) < want):
        if poller.poll(50):
            got = cap.read_blocks(64)
            if got:
                frames += got
                last = time.monotonic()
        elif want is None and time.monotonic() - last > quiet:
            break
    return frames


# ---- the filter, run by the kernel --------------------------------------------------

_OTHER_MAC = bytes.fromhex("020000000002020000000001")


def marked(n: int, frame: bytes) -> bytes:
    """``frame`` padded with a marker so every case is a distinct frame."""
    return frame + struct.pack("!I", n)


def _kernel_cases() -> list[tuple[str, bytes, bool]]:
    cases = [
        ("udp4", eth(0x0800, ipv4(17, udp(40000, 20000))), True),
        ("udp6", eth(0x86DD, ipv6(17, udp(40000, 20000))), True),
        ("tcp4 5060", eth(0x0800, ipv4(6, tcp(33000, 5060))), True),
        ("tcp4 from 5060", eth(0x0800, ipv4(6, tcp(5060, 33000))), True),
        ("tcp6 5060", eth(0x86DD, ipv6(6, tcp(33000, 5060))), True),
        ("tcp4 80", eth(0x0800, ipv4(6, tcp(33000, 80))), False),
        ("tcp6 80", eth(0x86DD, ipv6(6, tcp(33000, 80))), False),
        ("icmp4", eth(0x0800, ipv4(1, ICMP_ECHO)), False),
        ("icmp6", eth(0x86DD, ipv6(58, ICMP_ECHO)), False),
        ("arp", eth(0x0806, ARP), False),
        ("udp4 non-first fragment", eth(0x0800, ipv4(17, b"fragment", frag=0x0020)), True),
        ("udp6 fragment", eth(0x86DD, ipv6(44, frag6(17, b"fragment", 64, more=False))), True),
    ]
    tagged = []
    for name, frame, passes in cases:
        for tags in ([(DOT1Q, 0x2064)], [(DOT1AD, 100)], [(QINQ, 100)], [(DOT1AD, 100), (DOT1Q, 0x6014)],
                     [(QINQ, 100), (DOT1Q, 20)], [(DOT1Q, 5), (DOT1Q, 6), (DOT1Q, 7)]):
            label = "+".join(f"{tpid:04x}/{tci}" for tpid, tci in tags)
            tagged.append((f"{name} behind {label}", eth(0, b"", tags)[:-2] + frame[12:], passes))
    return cases + tagged


def test_kernel_runs_the_filter_and_frames_come_back_as_sent(pair: Pair) -> None:
    """Crafted frames sent over the veth: exactly those that should pass arrive,
    each once and byte for byte as sent, with the tag the kernel strips
    (802.1Q, 802.1ad; not 0x9100) put back.  Three tags: the outer one is
    stripped, two remain in the data, and the frame passes."""
    cases = [(name, marked(n, frame), passes) for n, (name, frame, passes) in enumerate(_kernel_cases())]
    with capture(pair) as cap, raw_sender(pair.tx, pair.tx_dev) as tx:
        for _name, frame, _passes in cases:
            tx.send(frame)
        frames = collect(cap, want=sum(p for _, _, p in cases))
        frames += collect(cap, quiet=0.3)
        stats = cap.stats()
    got = Counter(frame for _ts, _lt, frame in frames)
    wanted = {frame: name for name, frame, passes in cases if passes}
    missing = [name for frame, name in wanted.items() if frame not in got]
    unwanted = [name for name, frame, passes in cases if not passes and frame in got]
    assert not missing, f"not received as sent: {missing}"
    assert not unwanted, f"passed but should be filtered out: {unwanted}"
    assert not [f for f in got if f not in wanted], "frames nobody sent"
    assert max(got.values()) == 1
    assert {lt for _ts, lt, _f in frames} == {1}
    assert stats["kernel_packets"] == len(wanted) and stats["kernel_drops"] == 0
    assert stats["vlan_restored"] == sum(1 for name, _f, passes in cases
                                         if passes and (" behind 8100" in name or " behind 88a8" in name))
    now = time.time()
    assert all(now - 10 < ts <= now for ts, _lt, _f in frames)


def _icmp_echo(ident: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"ping"
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    return body[:2] + struct.pack("!H", checksum) + body[4:]


def _flows(frames: list[Frame]) -> set[tuple[int, int, int]]:
    """(ethertype, IP protocol, port pair) seen, for frames without tags."""
    seen = set()
    for _ts, _lt, f in frames:
        etype = struct.unpack_from("!H", f, 12)[0]
        if etype == 0x0800:
            proto, l4 = f[23], 14 + (f[14] & 0x0F) * 4
        elif etype == 0x86DD:
            proto, l4 = f[20], 54
        else:
            seen.add((etype, -1, -1))
            continue
        ports = struct.unpack_from("!HH", f, l4) if proto in (6, 17) else (-1, -1)
        seen.add((etype, proto, ports[1] if ports[0] > 30000 else ports[0]))
    return seen


def test_traffic_the_kernel_makes(pair: Pair) -> None:
    """Real sockets on both ends: UDP over IPv4 and IPv6, TCP to the SIP port
    (handshake, data and replies in both directions, so outgoing packets of
    the capturing host are kept on a non-loopback interface), TCP to port 80
    and ICMP echo, ARP and neighbour discovery, which are not."""
    with inside(pair.rx):
        sip_listener = socket.create_server(("0.0.0.0", 5060))
        web_listener = socket.create_server(("0.0.0.0", 80))
    with inside(pair.tx):
        u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sip_client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        web_client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with capture(pair) as cap, sip_listener, web_listener, u4, u6, icmp, sip_client, web_client:
        u4.sendto(b"rtp-ish v4", ("192.0.2.2", 40000))
        u6.sendto(b"rtp-ish v6", ("2001:db8::2", 40002))
        icmp.sendto(_icmp_echo(7), ("192.0.2.2", 0))
        sip_client.connect(("192.0.2.2", 5060))
        sip_client.sendall(b"OPTIONS sip:x@192.0.2.2 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        peer, _ = sip_listener.accept()
        with peer:
            assert peer.recv(100).startswith(b"OPTIONS")
            peer.sendall(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            assert sip_client.recv(100).startswith(b"SIP/2.0 200")
        web_client.connect(("192.0.2.2", 80))
        web_client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        frames = collect(cap, quiet=0.5)
    flows = _flows(frames)
    assert (0x0800, 17, 40000) in flows and (0x86DD, 17, 40002) in flows
    assert flows - {(0x0800, 17, 40000), (0x86DD, 17, 40002)} == {(0x0800, 6, 5060)}
    sip_frames = [f for _ts, _lt, f in frames if f[23:24] == b"\x06"]
    directions = Counter(struct.unpack_from("!H", f, 34)[0] == 5060 for f in sip_frames)
    assert directions[True] >= 2 and directions[False] >= 3  # SYN-ACK + reply; SYN, ACK, request
    assert any(b"OPTIONS sip:" in f for f in sip_frames) and any(b"SIP/2.0 200 OK" in f for f in sip_frames)


def test_loopback_frames_once_with_an_ethernet_header(pair: Pair) -> None:
    """On loopback every packet passes the device twice (out and in); libpcap
    keeps one copy, so do we.  The link header is Ethernet with zero addresses."""
    with inside(pair.rx):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        listener = socket.create_server(("127.0.0.1", 5060))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with capture(pair, "lo") as cap, sender, sender6, listener, client:
        for i in range(20):
            sender.sendto(b"lo-%02d" % i, ("127.0.0.1", 40000))
            sender6.sendto(b"lo6-%02d" % i, ("::1", 40000))
        client.connect(("127.0.0.1", 5060))
        client.sendall(b"INVITE")
        peer, _ = listener.accept()
        with peer:
            assert peer.recv(10) == b"INVITE"
        frames = collect(cap, quiet=0.5)
    udp4 = [f[42:] for _ts, _lt, f in frames if f[12:14] == b"\x08\x00" and f[23] == 17]
    udp6 = [f[62:] for _ts, _lt, f in frames if f[12:14] == b"\x86\xdd" and f[20] == 17]
    payloads = Counter(udp4 + udp6)
    assert len(payloads) == 40 and set(payloads.values()) == {1}
    assert all(f[:12] == bytes(12) and f[12:14] in (b"\x08\x00", b"\x86\xdd") for _ts, _lt, f in frames)
    tcp_frames = [f for _ts, _lt, f in frames if f[23:24] == b"\x06"]
    assert len(tcp_frames) == len(set(tcp_frames)) >= 4  # SYN, SYN-ACK, ACK, data, each once


async def test_usable_from_asyncio(pair: Pair) -> None:
    """The descriptor wakes the event loop when a block is retired."""
    loop = asyncio.get_running_loop()
    frames: list[Frame] = []
    done = asyncio.Event()
    with capture(pair) as cap, raw_sender(pair.tx, pair.tx_dev) as tx:

        def readable() -> None:
            frames.extend(cap.read_blocks(16))
            if len(frames) >= 50:
                done.set()

        loop.add_reader(cap.fileno(), readable)
        try:
            for i in range(50):
                tx.send(marked(i, eth(0x0800, ipv4(17, udp(40000, 20000)))))
            await asyncio.wait_for(done.wait(), 5)
        finally:
            loop.remove_reader(cap.fileno())
    assert len(frames) == 50


def test_read_blocks_never_blocks(pair: Pair) -> None:
    with capture(pair) as cap:
        start = time.monotonic()
        assert cap.read_blocks(8) == []
        assert time.monotonic() - start < 0.05
        assert cap.read_blocks(0) == []


def test_ring_overflow_counted_as_drops(pair: Pair) -> None:
    """A reader that does not keep up: the kernel drops, and says how many.
    Counters accumulate across reads, although the kernel clears its own."""
    frame = eth(0x0800, ipv4(17, udp(40000, 20000, b"x" * 172)))
    with capture(pair, ring_bytes=4 * 4096, block_bytes=4096, block_timeout_ms=1000) as cap, \
            raw_sender(pair.tx, pair.tx_dev) as tx:
        for i in range(400):
            tx.send(marked(i, frame))
        time.sleep(0.2)
        first = cap.stats()
        assert first["kernel_packets"] == 400
        assert 0 < first["kernel_drops"] < 400 and first["kernel_freezes"] >= 1
        kept = collect(cap, quiet=1.5)
        assert len(kept) == 400 - first["kernel_drops"]
        for i in range(10):
            tx.send(marked(1000 + i, frame))
        later = collect(cap, want=10)
        assert len(later) == 10
        second = cap.stats()
    assert second["kernel_packets"] == 410 and second["kernel_drops"] == first["kernel_drops"]
    assert second["frames"] == 400 - first["kernel_drops"] + 10
    assert cap.stats() == second  # after close: the last figures


def test_frame_larger_than_a_block_is_cut_and_counted(pair: Pair) -> None:
    for ns, dev in ((pair.tx, pair.tx_dev), (pair.rx, pair.rx_dev)):
        command(["ip", "-n", ns, "link", "set", dev, "mtu", "9000"])
    big = eth(0x0800, ipv4(17, udp(40000, 20000, b"j" * 8000)))
    with capture(pair, ring_bytes=4 * 4096, block_bytes=4096) as cap, raw_sender(pair.tx, pair.tx_dev) as tx:
        tx.send(big)
        tx.send(marked(1, eth(0x0800, ipv4(17, udp(40000, 20000)))))
        frames = collect(cap, want=2)
        stats = cap.stats()
    assert len(frames) == 2 and stats["truncated"] == 1
    assert len(frames[0][2]) < 4096 and big.startswith(frames[0][2])


def test_interface_down_reported_and_capture_resumes(pair: Pair) -> None:
    frame = eth(0x0800, ipv4(17, udp(40000, 20000)))
    with capture(pair) as cap, raw_sender(pair.tx, pair.tx_dev) as tx:
        command(["ip", "-n", pair.rx, "link", "set", pair.rx_dev, "down"])
        poller = select.poll()
        poller.register(cap.fileno(), select.POLLIN)
        assert poller.poll(1000), "an error must wake the reader"
        with pytest.raises(OSError) as raised:
            cap.read_blocks(8)
        assert raised.value.errno == errno.ENETDOWN
        assert cap.read_blocks(8) == []  # reported once
        command(["ip", "-n", pair.rx, "link", "set", pair.rx_dev, "up"])
        deadline = time.monotonic() + 5
        frames: list[Frame] = []
        while not frames and time.monotonic() < deadline:
            try:
                tx.send(marked(len(frames), frame))
            except OSError:  # the sending side's carrier is still coming back
                pass
            frames = collect(cap, want=1, timeout=0.2)
    assert frames


def _promiscuity(ns: str, dev: str) -> int:
    out = command(["ip", "-n", ns, "-d", "link", "show", "dev", dev]).split()
    return int(out[out.index("promiscuity") + 1])


def test_promiscuous_mode_while_open(pair: Pair) -> None:
    assert _promiscuity(pair.rx, pair.rx_dev) == 0
    with capture(pair):
        assert _promiscuity(pair.rx, pair.rx_dev) == 1
    assert _promiscuity(pair.rx, pair.rx_dev) == 0
    with capture(pair, promiscuous=False):
        assert _promiscuity(pair.rx, pair.rx_dev) == 0


def test_frames_for_other_hosts_are_captured(pair: Pair) -> None:
    """A mirror port carries traffic between other machines."""
    frame = eth(0x0800, ipv4(17, udp(40000, 20000)))
    assert frame[:6] != pair.rx_mac()
    with capture(pair) as cap, raw_sender(pair.tx, pair.tx_dev) as tx:
        tx.send(frame)
        assert [f for _ts, _lt, f in collect(cap, want=1)] == [frame]


_CAPS_PROBE = """
import subprocess, sys
from recorder.live_capture import LiveCapture, LiveCaptureError
caps = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff:"))
try:
    with LiveCapture(sys.argv[1]):
        link = subprocess.run(["ip", "-d", "link", "show", "dev", sys.argv[1]], capture_output=True, text=True).stdout
        print(caps, "promiscuity", link.split("promiscuity")[1].split()[0])
except LiveCaptureError as exc:
    print(caps, "refused", exc)
"""


@pytest.mark.parametrize(("bounding", "expected"), [("-all,+net_raw", "0000000000002000 promiscuity 1"),
                                                    ("-all", "0000000000000000 refused")])
def test_cap_net_raw_is_all_it_needs(pair: Pair, bounding: str, expected: str) -> None:
    """Root with every capability but CAP_NET_RAW dropped still captures, in
    promiscuous mode; without CAP_NET_RAW the refusal names it."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["ip", "netns", "exec", pair.rx, "setpriv", f"--bounding-set={bounding}",
                           "--inh-caps=-all", sys.executable, "-c", _CAPS_PROBE, pair.rx_dev],
                          capture_output=True, text=True, timeout=30, cwd=root)
    assert done.stdout.startswith(expected), done.stdout + done.stderr
    if "refused" in expected:
        assert "CAP_NET_RAW" in done.stdout


def test_non_ethernet_interface_refused(pair: Pair) -> None:
    command(["ip", "-n", pair.rx, "tuntap", "add", "mode", "tun", "name", "lctun"])
    with pytest.raises(LiveCaptureError, match="not an Ethernet interface"):
        capture(pair, "lctun")


def test_bad_arguments_refused(pair: Pair) -> None:
    with pytest.raises(LiveCaptureError, match="power of two"):
        capture(pair, block_bytes=3 * 4096)
    with pytest.raises(LiveCaptureError, match="multiple of block_bytes"):
        capture(pair, ring_bytes=(1 << 20) + 4096)
    with pytest.raises(LiveCaptureError, match="block_timeout_ms"):
        capture(pair, block_timeout_ms=0)
    with pytest.raises(ValueError):
        capture(pair, sip_ports=(70000,))
    with pytest.raises(OSError):
        capture(pair, "no-such-if0")
    cap = capture(pair)
    cap.close()
    with pytest.raises(ValueError):
        cap.read_blocks(1)


def test_namespaces_are_gone_afterwards() -> None:
    """Every Lab above removed what it made (a failure there fails that test)."""
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"crt-{os.getpid()}-lc" not in leftover
