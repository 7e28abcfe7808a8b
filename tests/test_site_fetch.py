"""Audio stays at the site (issue 19, 4): a site enrolled by the centre's CA serves a recording
only over mutual TLS, only to the centre's certificate, only against the centre's grant for that
call and that request, once; and it ledgers every use and every refusal itself.

A real site: recordings replayed from the public captures, enrolled with `callrec site enrol`,
serving with `callrec site serve` as its own process on loopback; the centre's fetch, our own
client and `openssl s_client` as a third-party client call it over real sockets.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from access.errors import AccessError
from access.package import verify_package
from access.site_desk import SiteEvent
from access.site_grants import Allowed, issue_grant
from callrec.pki import CentreCA, centre_context, enrol_site, init_ca, load_ca, open_bundle, revoke_site
from callrec.site_client import FetchFailed, fetch, fetch_async
from storage.ledger import LedgerEntry
from storage.store import Store
from tests.interop import REPO, calls, capture, need, run_cli

TOKYO = ZoneInfo("Asia/Tokyo")
SITE = "higashi"
REQUEST = "R2026-0007"
WAIT_SECONDS = 30.0


def _now() -> datetime:
    return datetime.now(TOKYO)


def entries(data: Path) -> list[LedgerEntry]:
    with Store.open(data, TOKYO, read_only=True) as store:
        return list(store.ledger.entries())


def last_seq(data: Path) -> int:
    found = entries(data)
    return found[-1].seq if found else 0


def entry_after(data: Path, seq: int, event: str) -> LedgerEntry:
    """The site's first entry of `event` after `seq`.  A refusal in the TLS handshake reaches the
    client (as an alert) before the site has written it down, so this waits for it to appear."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = [e for e in entries(data) if e.seq > seq and e.event == event]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event} entry after seq {seq}: {[e.event for e in entries(data)][-5:]}")
        time.sleep(0.05)


@dataclass
class Site:
    data: Path
    port: int
    process: subprocess.Popen[bytes]
    calls: list[str]


def enrol(centre: CentreCA, site: str, data: Path, tmp: Path) -> None:
    bundle, code = enrol_site(centre, site, _now())
    (tmp / f"{site}.bundle").write_bytes(bundle)
    (tmp / f"{site}.code").write_text(code)
    run_cli("site", "enrol", tmp / f"{site}.bundle", "--data-dir", data, "--code-file", tmp / f"{site}.code")


def start_site(data: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "callrec", "site", "serve", "--data-dir", str(data),
                                    "--listen", "127.0.0.1:0"], cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    return process


def port_of(process: subprocess.Popen[bytes], log: Path) -> int:
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        process.kill()
        raise AssertionError(f"the site server did not start: {line!r}\n{log.read_text()}")
    return int(line.rsplit(":", 1)[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with recordings from two public captures (its key and anchor beside it)."""
    data = tmp_path_factory.mktemp("mtls-template") / "data"
    for name in ("sip-rtp-g711.pcap", "sip-rtp-g722.pcap"):
        run_cli("replay", capture(name), "--data-dir", data)
    return data


def copy_of(template: Path, where: Path) -> Path:
    shutil.copytree(template.parent, where)
    return where / template.name


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> CentreCA:
    return init_ca(tmp_path_factory.mktemp("mtls-centre") / "centre", _now(), "松本市")


@pytest.fixture(scope="module")
def site(template: Path, centre: CentreCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("mtls-site")
    data = copy_of(template, tmp / "higashi")
    enrol(centre, SITE, data, tmp)
    log = tmp / "serve.log"
    process = start_site(data, log)
    try:
        port = port_of(process, log)
        sealed = [c["id"] for c in calls(data) if c.get("sha256")]
        assert len(sealed) >= 2
        yield Site(data, port, process, sealed)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def reference(site: Site, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The first call's recording as `callrec calls audio` hands it out at the site itself."""
    out = tmp_path_factory.mktemp("mtls-ref") / "ref.wav"
    run_cli("calls", "audio", site.calls[0], "-o", out, "--data-dir", site.data)
    return out.read_bytes()


def grant(centre: CentreCA, call_id: str, *, site: str = SITE, request: str = REQUEST,
          allow: Allowed = Allowed.LISTEN, now: datetime | None = None, key: Ed25519PrivateKey | None = None,
          copy: dict | None = None) -> str:
    return issue_grant(key or centre.grant_key, site=site, call_id=call_id, request=request, allow=allow,
                       now=now or _now(), approved_by="人事課長", copy=copy)


# --- a grant honoured ------------------------------------------------------------------------------

def test_a_valid_grant_fetches_exactly_the_stored_recording_and_the_site_ledgers_it(
        site: Site, centre: CentreCA, reference: bytes, tmp_path: Path) -> None:
    token = grant(centre, site.calls[0])
    before = last_seq(site.data)
    fetched = fetch(centre, "127.0.0.1", site.port, token, tmp_path / "fetched.wav")
    assert (tmp_path / "fetched.wav").read_bytes() == reference
    sealed = {c["id"]: c["sha256"] for c in calls(site.data)}
    assert fetched.sha256 == hashlib.sha256(reference).hexdigest() == sealed[site.calls[0]]
    used = entry_after(site.data, before, SiteEvent.GRANT_USED)
    assert used.seq == fetched.site_ledger_seq
    assert used.actor == "callrec centre" and used.approved_by == "人事課長"
    assert used.details["call_id"] == site.calls[0] and used.details["request"] == REQUEST
    assert used.details["sha256"] == fetched.sha256 and used.details["allow"] == "listen"
    assert used.details["nonce"] == json.loads(_payload(token))["nonce"]
    assert used.details["client_serial"] == f"{centre.client_certificate.serial_number:x}"


def _payload(token: str) -> bytes:
    head = token.split(".")[0]
    return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))


def test_a_copy_grant_fetches_the_signed_copy_package_made_at_the_site(
        site: Site, centre: CentreCA, reference: bytes, tmp_path: Path) -> None:
    manifest = {"copy_number": "C2026-0031", "purpose": "苦情対応の事実確認", "approved_by": "人事課長",
                "holder": "市民相談課 佐藤", "dispose_by": "2027-03-31"}
    token = grant(centre, site.calls[0], allow=Allowed.COPY, copy=manifest)
    before = last_seq(site.data)
    fetched = fetch(centre, "127.0.0.1", site.port, token, tmp_path / "copy.zip")
    report = verify_package(fetched.path)
    assert report.ok, report.problems
    assert report.manifest is not None and report.manifest["site"] == SITE
    assert report.manifest["request"] == REQUEST and report.manifest["call"]["id"] == site.calls[0]
    with zipfile.ZipFile(fetched.path) as package:
        assert package.read("C2026-0031.wav") == reference
    used = entry_after(site.data, before, SiteEvent.GRANT_USED)
    assert used.details["copy"] == "C2026-0031" and used.details["sha256"] == fetched.sha256
    assert list((site.data / "site" / "outgoing").iterdir()) == []


def test_a_grant_is_used_once(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    token = grant(centre, site.calls[1])
    fetch(centre, "127.0.0.1", site.port, token, tmp_path / "first.wav")
    before = last_seq(site.data)
    with pytest.raises(FetchFailed) as refused:
        fetch(centre, "127.0.0.1", site.port, token, tmp_path / "again.wav")
    assert refused.value.status == 403 and "replayed" in str(refused.value)
    assert entry_after(site.data, before, SiteEvent.GRANT_REFUSED).details["refusal"] == "replayed"
    assert not (tmp_path / "again.wav").exists()


# --- grants refused --------------------------------------------------------------------------------

def _forged(centre: CentreCA, site: Site) -> tuple[str, dict]:
    return grant(centre, site.calls[0], key=Ed25519PrivateKey.generate()), {}


def _tampered(centre: CentreCA, site: Site) -> tuple[str, dict]:
    """A real grant for call 0 whose payload was edited to name call 1: the signature no longer holds."""
    token = grant(centre, site.calls[0])
    body = _payload(token).replace(site.calls[0].encode(), site.calls[1].encode())
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode() + "." + token.split(".")[1], {}


REFUSALS = {
    "forged": (_forged, "signature"),
    "tampered": (_tampered, "signature"),
    "another_call": (lambda c, s: (grant(c, s.calls[0]), {"call_id": s.calls[1]}), "other_call"),
    "another_request": (lambda c, s: (grant(c, s.calls[0]), {"request": "R2026-0999"}), "other_request"),
    "another_use": (lambda c, s: (grant(c, s.calls[0]), {"allow": Allowed.COPY}), "other_use"),
    "expired": (lambda c, s: (grant(c, s.calls[0], now=_now() - timedelta(minutes=11)), {}), "expired"),
    "from_the_future": (lambda c, s: (grant(c, s.calls[0], now=_now() + timedelta(hours=1)), {}), "not_yet_valid"),
    "another_site": (lambda c, s: (grant(c, s.calls[0], site="oote"), {"site": SITE}), "other_site"),
    "unknown_call": (lambda c, s: (grant(c, "20990101T000000-00000000"), {}), "unavailable"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_grant_that_does_not_hold_is_refused_and_ledgered(site: Site, centre: CentreCA, tmp_path: Path,
                                                            case: str) -> None:
    make, refusal = REFUSALS[case]
    token, asked = make(centre, site)
    before = last_seq(site.data)
    with pytest.raises(FetchFailed) as refused:
        fetch(centre, "127.0.0.1", site.port, token, tmp_path / "out", **asked)
    assert refused.value.status in (403, 404) and refusal in str(refused.value)
    entry = entry_after(site.data, before, SiteEvent.GRANT_REFUSED)
    assert entry.details["refusal"] == refusal and entry.actor == "callrec centre"
    assert entry.details["client_serial"] == f"{centre.client_certificate.serial_number:x}"
    assert not any(e.event == SiteEvent.GRANT_USED for e in entries(site.data) if e.seq > before)
    assert not (tmp_path / "out").exists()


# --- clients refused -------------------------------------------------------------------------------

def _client(centre: CentreCA, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=centre.folder / "ca.crt")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _site_credentials(centre: CentreCA, name: str, tmp: Path) -> tuple[Path, Path]:
    """Enrol a site at the centre and keep its certificate and key as files (as its appliance would)."""
    bundle, code = enrol_site(centre, name, _now())
    parts = open_bundle(bundle, code)
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.write_bytes(parts.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(parts.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return cert, key


def _refused_at_the_door(site: Site, centre: CentreCA, context: ssl.SSLContext, tmp: Path) -> FetchFailed:
    with pytest.raises(FetchFailed) as refused:
        asyncio.run(fetch_async(centre, "127.0.0.1", site.port, grant(centre, site.calls[0]), tmp / "out",
                                context=context))
    assert not (tmp / "out").exists()
    return refused.value


def test_no_client_certificate_is_refused_and_ledgered(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    before = last_seq(site.data)
    _refused_at_the_door(site, centre, _client(centre), tmp_path)
    entry = entry_after(site.data, before, SiteEvent.CONNECTION_REFUSED)
    assert entry.details["refusal"] == "tls" and "CERTIFICATE" in entry.reason.upper()
    assert entry.actor.startswith("unidentified client 127.0.0.1:")


def test_a_certificate_of_another_ca_is_refused_and_ledgered(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    """Another CA's "centre" certificate, even with the centre's name in it, is not enrolled here."""
    other = init_ca(tmp_path / "other-centre", _now(), "よその市")
    before = last_seq(site.data)
    _refused_at_the_door(site, centre, _client(centre, other.folder / "client.crt", other.folder / "client.key"),
                         tmp_path)
    entry = entry_after(site.data, before, SiteEvent.CONNECTION_REFUSED)
    assert entry.details["refusal"] == "tls" and "certificate" in entry.reason.lower()


def test_a_revoked_site_certificate_is_refused_and_ledgered(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    cert, key = _site_credentials(centre, "oote", tmp_path)
    revoke_site(centre, "oote", _now())
    run_cli("site", "revocations", centre.crl_path, "--data-dir", site.data)
    assert entries(site.data)[-1].event == SiteEvent.REVOCATIONS_UPDATED
    before = last_seq(site.data)
    _refused_at_the_door(site, centre, _client(centre, cert, key), tmp_path)
    entry = entry_after(site.data, before, SiteEvent.CONNECTION_REFUSED)
    assert entry.details["refusal"] == "revoked" and "revoked" in entry.reason


def test_another_sites_certificate_is_not_the_centre(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    """Enrolled, not revoked, from the same CA: still only the centre fetches."""
    cert, key = _site_credentials(centre, "minami", tmp_path)
    before = last_seq(site.data)
    refused = _refused_at_the_door(site, centre, _client(centre, cert, key), tmp_path)
    assert refused.status == 403 and "not_centre" in str(refused)
    entry = entry_after(site.data, before, SiteEvent.CONNECTION_REFUSED)
    assert entry.details["refusal"] == "not_centre" and entry.actor == "minami"


def test_the_centre_calls_only_the_site_it_means(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    """Asked for site oote at higashi's address, the centre's client refuses higashi's certificate."""
    with pytest.raises(FetchFailed, match="TLS refused"):
        fetch(centre, "127.0.0.1", site.port, grant(centre, site.calls[0]), tmp_path / "out", site="kita")


def test_the_centre_refuses_a_site_it_revoked(template: Path, centre: CentreCA, tmp_path: Path) -> None:
    data = copy_of(template, tmp_path / "kita")
    enrol(centre, "kita", data, tmp_path)
    process = start_site(data, tmp_path / "serve.log")
    try:
        port = port_of(process, tmp_path / "serve.log")
        call_id = calls(data)[0]["id"]
        fetch(centre, "127.0.0.1", port, grant(centre, call_id, site="kita"), tmp_path / "before.wav")
        revoke_site(centre, "kita", _now())
        with pytest.raises(FetchFailed, match="revoked"):
            fetch(centre, "127.0.0.1", port, grant(centre, call_id, site="kita"), tmp_path / "after.wav")
    finally:
        stop(process)


# --- a third-party client ----------------------------------------------------------------------------

def test_openssl_s_client_fetches_with_the_centre_certificate_and_is_refused_without(
        site: Site, centre: CentreCA, reference: bytes) -> None:
    openssl = need("openssl")
    token = grant(centre, site.calls[0])
    request = (f"GET /v1/listen/{site.calls[0]}?request={REQUEST} HTTP/1.1\r\nHost: {SITE}\r\n"
               f"Callrec-Grant: {token}\r\n\r\n").encode()
    base = [openssl, "s_client", "-connect", f"127.0.0.1:{site.port}", "-tls1_3", "-quiet", "-verify_return_error",
            "-CAfile", str(centre.folder / "ca.crt"), "-verify_hostname", SITE]
    answer = subprocess.run([*base, "-cert", str(centre.folder / "client.crt"), "-key",
                             str(centre.folder / "client.key")], input=request, capture_output=True, timeout=60,
                            check=False)
    head, _, body = answer.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), answer.stderr.decode()
    assert body == reference
    assert f"Callrec-Sha256: {hashlib.sha256(reference).hexdigest()}".encode() in head
    before = last_seq(site.data)
    refused = subprocess.run(base, input=request, capture_output=True, timeout=60, check=False)
    assert b"HTTP/1.1 200" not in refused.stdout
    entry = entry_after(site.data, before, SiteEvent.CONNECTION_REFUSED)
    assert entry.details["refusal"] == "tls"


# --- enrolment -----------------------------------------------------------------------------------------

def test_keys_are_private_and_named_by_nothing_a_peer_typed(site: Site, centre: CentreCA) -> None:
    for path in [*centre.folder.iterdir(), *(site.data / "site").iterdir()]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(centre.folder.stat().st_mode) == 0o700
    assert {p.name for p in centre.issued.iterdir()} <= {f"{int(s['serial'], 16):x}.crt" for s in
                                                         centre.registry()["sites"].values()} | {
        f"{int(s['serial'], 16):x}.crt" for s in centre.registry()["revoked"]}


def test_a_bundle_opens_only_with_its_code_and_enrols_once(template: Path, centre: CentreCA, tmp_path: Path) -> None:
    bundle, code = enrol_site(centre, "nishi", _now())
    with pytest.raises(AccessError, match="cannot be opened"):
        open_bundle(bundle, "AAAAA-AAAAA-AAAAA-AAAAA")
    with pytest.raises(AccessError, match="enrolled already"):
        enrol_site(centre, "nishi", _now())
    with pytest.raises(AccessError, match="site name"):
        enrol_site(centre, "../etc", _now())
    data = copy_of(template, tmp_path / "nishi")
    (tmp_path / "b").write_bytes(bundle)
    (tmp_path / "c").write_text(code.lower())
    run_cli("site", "enrol", tmp_path / "b", "--data-dir", data, "--code-file", tmp_path / "c")
    again = run_cli("site", "enrol", tmp_path / "b", "--data-dir", data, "--code-file", tmp_path / "c", check=False)
    assert again.returncode == 2 and "enrolled already" in again.stderr
    shown = run_cli("site", "show", "--data-dir", data).stdout
    assert "site nishi" in shown and "revocation list number" in shown
    assert entries(data)[-1].event == SiteEvent.ENROLLED


def test_an_older_revocation_list_is_refused(site: Site, centre: CentreCA, tmp_path: Path) -> None:
    old = tmp_path / "old.crl"
    old.write_bytes(centre.crl_path.read_bytes())
    _site_credentials(centre, "higashi-2", tmp_path)
    revoke_site(centre, "higashi-2", _now())
    run_cli("site", "revocations", centre.crl_path, "--data-dir", site.data)
    refused = run_cli("site", "revocations", old, "--data-dir", site.data, check=False)
    assert refused.returncode == 2 and "older" in refused.stderr


def test_the_centre_ca_is_never_replaced(centre: CentreCA) -> None:
    with pytest.raises(AccessError, match="never replaces"):
        init_ca(centre.folder, _now())
    assert load_ca(centre.folder).certificate == centre.certificate
    assert centre_context(centre).minimum_version is ssl.TLSVersion.TLSv1_3
    assert os.path.isfile(centre.crl_path)
