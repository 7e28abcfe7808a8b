"""A cap on refused connections in the site's ledger (issue 19, 4): a port scan against the fetch
server must not fill the 管理簿.  Per source address the first few refusals of a window are
ledgered one by one, the rest summed up in one entry when the window ends (or the server stops);
the journal has every one.

The core is driven with explicit times; then a real `callrec site serve` on loopback takes many
bad handshakes (plain bytes where TLS is expected, TLS clients without a certificate)."""
from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from access.site_desk import OTHER_SOURCES, Peer, RefusalCap, SiteEvent
from callrec.pki import CentreCA
from tests.interop import REPO, run_cli
from tests.test_site_fetch import WAIT_SECONDS, centre, copy_of, enrol, entries, port_of, stop, template

__all__ = ["centre", "template"]

T0 = datetime.fromisoformat("2026-12-07T10:00:00+09:00")


def test_the_first_refusals_of_a_window_are_ledgered_the_rest_summed_up_per_address() -> None:
    cap = RefusalCap(limit=3, window=timedelta(minutes=10), sources=2)
    scan = [cap.admit("192.0.2.7", "tls", T0 + timedelta(seconds=n)) for n in range(8)]
    assert scan == [True] * 3 + [False] * 5
    assert cap.admit("198.51.100.9", "tls", T0 + timedelta(seconds=9))  # another address: its own count
    assert cap.due(T0 + timedelta(minutes=9)) == []
    [summary] = cap.due(T0 + timedelta(minutes=10))
    assert (summary.source, summary.count, summary.refusals) == ("192.0.2.7", 5, {"tls": 5})
    assert (summary.first, summary.last) == (T0 + timedelta(seconds=3), T0 + timedelta(seconds=7))
    assert summary.text == ("5 more refused from 192.0.2.7 between 2026-12-07T10:00:03+09:00 and "
                            "2026-12-07T10:00:07+09:00")
    assert cap.admit("192.0.2.7", "tls", T0 + timedelta(minutes=11))  # a new window
    assert cap.admit("198.51.100.9", "not_centre", T0 + timedelta(minutes=11))  # its second of three
    assert cap.admit("203.0.113.5", "tls", T0 + timedelta(minutes=11))  # a third address: counted together
    assert OTHER_SOURCES in set(cap._windows)
    assert cap.flush() == [] and cap.due(T0 + timedelta(days=1)) == []


def test_a_peer_is_counted_by_its_address_without_the_port() -> None:
    assert Peer("192.0.2.7:50123").source == "192.0.2.7"
    assert Peer("[2001:db8::7]:50123").source == "2001:db8::7"


def _bad_bytes(port: int) -> None:
    """Plain bytes where the server expects a TLS ClientHello; read until it hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while sock.recv(4096):
            pass


def _tls_without_certificate(port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"GET /v1/listen/x?request=1 HTTP/1.1\r\n\r\n")
                while tls.recv(4096):
                    pass
        except (ssl.SSLError, OSError):
            pass


def _journal_count(log: Path) -> int:
    return log.read_text(errors="replace").count("site_fetch.connection_refused")


def test_a_scan_of_bad_handshakes_fills_the_journal_not_the_ledger(template: Path, centre: CentreCA,
                                                                    tmp_path: Path) -> None:
    data = copy_of(template, tmp_path / "higashi")
    enrol(centre, "higashi", data, tmp_path)
    before = len(entries(data))
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "callrec", "site", "serve", "--data-dir", str(data),
                                    "--listen", "127.0.0.1:0", "--refusals-ledgered", "4",
                                    "--refusal-window-minutes", "600"], cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    attempts = 40
    try:
        port = port_of(process, log)
        for n in range(attempts):
            (_tls_without_certificate if n % 4 == 0 else _bad_bytes)(port)
        deadline = time.monotonic() + WAIT_SECONDS
        while _journal_count(log) < attempts and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(process)
    assert process.returncode == 0
    assert _journal_count(log) == attempts, "every refusal is in the journal"
    new = entries(data)[before:]
    single = [e for e in new if e.event == SiteEvent.CONNECTION_REFUSED]
    [summary] = [e for e in new if e.event == SiteEvent.CONNECTIONS_REFUSED_MORE]
    assert len(single) == 4 and all(e.details["refusal"] == "tls" for e in single)
    assert summary.details["count"] == attempts - 4 and summary.details["peer"] == "127.0.0.1"
    assert summary.details["refusals"] == {"tls": attempts - 4}
    assert summary.reason.startswith(f"{attempts - 4} more refused from 127.0.0.1 between ")
    assert len(single) + summary.details["count"] == attempts
    assert run_cli("ledger", "verify", "--data-dir", data).returncode == 0
