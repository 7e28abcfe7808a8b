"""The daemon serves its recordings to the centre when configured (`site_fetch:`), across a real
link: the site's appliance in one network namespace, the centre in another, a veth between them
on documentation addresses.  The centre's `callrec centre fetch` gets the sealed bytes; a grant
that does not hold is refused and the site's ledger names the centre's address."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from access.site_desk import SiteEvent
from access.site_grants import Allowed, issue_grant
from callrec.pki import enrol_site, init_ca
from storage.store import Store
from tests.interop import REPO, calls, capture, run_cli
from tests.sipp.netns import Lab, preflight

pytestmark = pytest.mark.root

TOKYO = ZoneInfo("Asia/Tokyo")
SITE_ADDRESS = "198.51.100.2"
CENTRE_ADDRESS = "198.51.100.1"
PORT = 7443


def _wait_for(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the daemon never said {needle!r}:\n{path.read_text(errors='replace')}")
        time.sleep(0.1)


def test_the_daemon_serves_the_centre_over_a_real_link(tmp_path: Path) -> None:
    preflight()
    data = tmp_path / "data"
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--data-dir", data)
    centre = init_ca(tmp_path / "centre", datetime.now(TOKYO))
    bundle, code = enrol_site(centre, "higashi", datetime.now(TOKYO))
    (tmp_path / "bundle").write_bytes(bundle)
    run_cli("site", "enrol", tmp_path / "bundle", "--data-dir", data, input=code + "\n")
    call_id = calls(data)[0]["id"]
    run_cli("calls", "audio", call_id, "-o", tmp_path / "reference.wav", "--data-dir", data)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {data}\ninterfaces: [lo]\nstatus_socket: {tmp_path / 'status.sock'}\n"
                      f"site_fetch: {{listen: {SITE_ADDRESS}, port: {PORT}}}\n")
    good = tmp_path / "good.grant"
    good.write_text(issue_grant(centre.grant_key, site="higashi", call_id=call_id, request="R2027-0001",
                                allow=Allowed.LISTEN, now=datetime.now(TOKYO), approved_by="人事課長"))
    expired = tmp_path / "expired.grant"
    expired.write_text(issue_grant(centre.grant_key, site="higashi", call_id=call_id, request="R2027-0001",
                                   allow=Allowed.LISTEN, now=datetime.now(TOKYO) - timedelta(hours=1)))
    with Lab() as lab:
        site_ns, centre_ns = lab.namespace("mtls-site"), lab.namespace("mtls-centre")
        lab.veth(site_ns, "mtls-s", centre_ns, "mtls-c")
        lab.address(site_ns, "mtls-s", f"{SITE_ADDRESS}/24")
        lab.address(centre_ns, "mtls-c", f"{CENTRE_ADDRESS}/24")
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            daemon = lab.start(site_ns, [sys.executable, "-m", "callrec", "run", "--config", str(config)],
                               cwd=REPO, stdout=out, stderr=out)
        _wait_for(log, "site_fetch.listening", daemon)

        def centre_fetch(grant: Path, output: Path) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["ip", "netns", "exec", centre_ns, sys.executable, "-m", "callrec", "centre",
                                   "fetch", "--centre-dir", str(centre.folder), "--grant", str(grant),
                                   "--address", f"{SITE_ADDRESS}:{PORT}", "-o", str(output)],
                                  cwd=REPO, capture_output=True, timeout=120, check=False)

        fetched = centre_fetch(good, tmp_path / "fetched.wav")
        assert fetched.returncode == 0, fetched.stderr.decode()
        assert (tmp_path / "fetched.wav").read_bytes() == (tmp_path / "reference.wav").read_bytes()
        refused = centre_fetch(expired, tmp_path / "refused.wav")
        assert refused.returncode == 2 and b"expired" in refused.stderr
        assert not (tmp_path / "refused.wav").exists()
        assert lab.stop(daemon, timeout=30) == 0, log.read_text(errors="replace")
    with Store.open(data, TOKYO, read_only=True) as store:
        site_entries = [e for e in store.ledger.entries() if e.event.startswith("site_grant")]
    assert [e.event for e in site_entries] == [SiteEvent.GRANT_USED, SiteEvent.GRANT_REFUSED]
    assert all(e.details["peer"].startswith(f"{CENTRE_ADDRESS}:") for e in site_entries)
    assert site_entries[1].details["refusal"] == "expired"
