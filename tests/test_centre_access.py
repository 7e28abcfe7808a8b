"""Records in use at the centre of several sites (issue 19, 2 and 4): people, requests, approvals
and copies on the central PostgreSQL, and each recording fetched from the site that keeps it.

A real PostgreSQL (tests/central_pg.py); two appliances replaying different public captures,
syncing to it with `callrec central sync`, enrolled with the centre's CA and serving their
recordings with `callrec site serve` as processes of their own; the centre's people act through
`callrec centre ...` and through the CentreService the console uses.
"""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from access.centre_book import CentreBook
from access.centre_ledger import CentreLedger
from access.centre_service import CentreService, call_ref, split_ref
from access.copies import CopyRecord
from access.errors import AccessError, Forbidden
from access.people import Account, BadCredentials
from access.requests import Request, RequestState, RequestStateError
from access.store import AccessStore
from callrec.centre_access import centre_service
from callrec.pki import CentreCA, enrol_site, init_ca
from policy.access import Wanted
from storage.central_link import connect
from storage.central_schema import migrate
from storage.ledger import LedgerEntry
from storage.store import Store
from tests.central_pg import PostgresServer
from tests.central_sites import site_config
from tests.interop import REPO, calls, capture, run_cli

TOKYO = ZoneInfo("Asia/Tokyo")
POLICY = REPO / "policies" / "matsumoto.yaml"
SITES = {"higashi": "sip-rtp-g711.pcap", "otemachi": "sip-rtp-g722.pcap"}
"""松本市's two exchanges (東庁舎, 大手事務所), each with its own appliance."""
PASSWORDS = {name: f"{name}-passphrase-2026" for name in ("kacho", "dairi", "tanaka", "ito", "kansa")}


def _now() -> datetime:
    return datetime.now(TOKYO)


@dataclass
class Appliance:
    name: str
    config: Path
    data: Path
    calls: list[str]
    process: subprocess.Popen[bytes]
    port: int

    def ledger(self) -> list[LedgerEntry]:
        with Store.open(self.data, TOKYO, read_only=True) as store:
            return list(store.ledger.entries())

    def audio(self, call_id: str, out: Path) -> bytes:
        """The recording as the site itself hands it out (`callrec calls audio`)."""
        run_cli("calls", "audio", call_id, "-o", out, "--config", self.config)
        return out.read_bytes()


@dataclass
class World:
    dsn: str
    folder: Path
    ca: CentreCA
    sites: dict[str, Appliance]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    pg = PostgresServer(prefix="caccess-pg-")
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def _serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "callrec", "site", "serve", "--config", str(config),
                                    "--listen", "127.0.0.1:0"], cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        process.kill()
        raise AssertionError(f"the site server did not start: {line!r}\n{log.read_text()}")
    return process, int(line.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def world(server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The centre (schema, CA, people) and two enrolled, synced, serving sites."""
    tmp = tmp_path_factory.mktemp("caccess-world")
    dsn = server.create_database("caccess_world")
    run_cli("central", "init", "--dsn", dsn)
    folder = tmp / "centre"
    ca = init_ca(folder, _now(), "松本市")
    sites: dict[str, Appliance] = {}
    try:
        for name, pcap in SITES.items():
            config = site_config(tmp, name, dsn)
            data = tmp / name
            run_cli("replay", capture(pcap), "--config", config)
            bundle, code = enrol_site(ca, name, _now())
            (tmp / f"{name}.bundle").write_bytes(bundle)
            (tmp / f"{name}.code").write_text(code)
            run_cli("site", "enrol", tmp / f"{name}.bundle", "--config", config, "--code-file", tmp / f"{name}.code")
            run_cli("central", "sync", "--once", "--config", config)
            process, port = _serve(config, tmp / f"{name}.serve.log")
            sealed = [c["id"] for c in calls(data) if c.get("sha256")]
            sites[name] = Appliance(name, config, data, sealed, process, port)
            assert sealed, f"{pcap} made no sealed recording at {name}"
        with centre_service(dsn, POLICY, folder) as service:
            service.add_user(None, "kacho", "manager", PASSWORDS["kacho"])
            by = service.sign_in("kacho", PASSWORDS["kacho"])
            service.add_user(by, "dairi", "deputy", PASSWORDS["dairi"], deputy_of="kacho")
            service.add_user(by, "tanaka", "requester", PASSWORDS["tanaka"])
            service.add_user(by, "ito", "handler", PASSWORDS["ito"])
            service.add_user(by, "kansa", "auditor", PASSWORDS["kansa"])
            for name, site in sites.items():
                service.set_site_address(by, name, "127.0.0.1", site.port)
        yield World(dsn, folder, ca, sites)
    finally:
        for site in sites.values():
            site.process.terminate()
            site.process.wait(timeout=30)


@pytest.fixture
def centre(world: World) -> Iterator[CentreService]:
    with centre_service(world.dsn, POLICY, world.folder) as service:
        yield service


def centre_cli(world: World, *args: str | Path, user: str | None = None, ok: bool = True) -> str:
    """`callrec centre ARGS` with the centre's DSN, folder and policy, signed in as `user`."""
    extra = ["--user", user] if user is not None else []
    result = subprocess.run([sys.executable, "-m", "callrec", "centre", *map(str, args), "--dsn", world.dsn,
                             "--centre-dir", str(world.folder), "--policy", str(POLICY), *extra], cwd=REPO,
                            capture_output=True, text=True, timeout=600, check=False,
                            input=f"{PASSWORDS[user]}\n" if user is not None else None,
                            env={**os.environ, "CALLREC_CENTRE_DIR": str(world.folder)})
    assert (result.returncode == 0) == ok, f"callrec centre {' '.join(map(str, args))}: {result.stderr}"
    return result.stdout if ok else result.stderr


def centre_entries(world: World) -> list[LedgerEntry]:
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        return list(CentreLedger(conn, b"\0" * 32).entries())


def grants_for(world: World, number: str) -> list[LedgerEntry]:
    return [e for e in centre_entries(world) if e.event == "grant_issued" and e.details["request"] == number]


def site_uses(site: Appliance, number: str) -> list[LedgerEntry]:
    return [e for e in site.ledger() if e.event == "site_grant_used" and e.details["request"] == number]


def approved(centre: CentreService, wanted: Wanted, refs: tuple[str, ...], purpose: str = "mayor") -> Request:
    tanaka = centre.sign_in("tanaka", PASSWORDS["tanaka"])
    request = centre.file(tanaka, department="市民課", purpose=purpose, wanted=wanted, call_ids=refs)
    return centre.approve(centre.sign_in("kacho", PASSWORDS["kacho"]), request.number, "市長が必要と認めた")


def member(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as zf:
        return zf.read(name)


# --- a request for a call on site B, approved at the centre, fulfilled from B ------------------------

def test_a_request_for_a_call_on_site_b_is_approved_at_the_centre_and_fulfilled_from_b(
        world: World, tmp_path: Path) -> None:
    b = world.sites["otemachi"]
    ref = call_ref(b.name, b.calls[0])
    filed = centre_cli(world, "request", "file", "--department", "市民課", "--purpose", "law", "--wanted", "copy",
                       "--call", ref, user="tanaka")
    number = filed.split(":")[0]
    assert centre_cli(world, "request", "approve", number, "--reason", "法令に基づく照会", user="kacho").strip() \
        == f"{number}: approved"
    done = centre_cli(world, "request", "fulfil", number, "--holder", "松本警察署 生活安全課", user="kacho")
    assert f"{number}: fulfilled" in done

    copies = json.loads(centre_cli(world, "copies", "list", "--json", user="kacho"))
    (copy,) = [c for c in copies if c["request"] == number]
    assert copy["call_id"] == ref and copy["holder"] == "松本警察署 生活安全課"
    package = Path(copy["package"])
    assert package.is_relative_to(world.folder / "exports")
    assert run_cli("copies", "verify", package).returncode == 0
    reference = b.audio(b.calls[0], tmp_path / "reference.wav")
    assert member(package, f"{copy['number']}.wav") == reference  # byte for byte what B stores
    manifest = json.loads(member(package, "manifest.json"))
    assert manifest["site"] == b.name and manifest["call"]["id"] == b.calls[0]
    assert manifest["request"] == number and manifest["approved_by"] == "kacho"
    assert manifest["call"]["sha256"] == copy["sha256"] == calls_by_id(b)[b.calls[0]]["sha256"]

    # The centre's book: filed, approved, the grant, the copy, fulfilled, each naming who and as what.
    ours = [e for e in centre_entries(world) if e.details.get("request") == number]
    assert [e.event for e in ours] == ["request_filed", "request_approved", "grant_issued", "copy_made",
                                       "request_fulfilled"]
    assert [e.actor for e in ours] == ["tanaka", "kacho", "kacho", "kacho", "kacho"]
    grant, made = ours[2], ours[3]
    assert grant.details["site"] == b.name and grant.details["call_id"] == b.calls[0]
    assert grant.details["allow"] == "copy" and grant.approved_by == "kacho"
    assert made.details["call_id"] == ref and made.details["copy"] == copy["number"]
    # B's own book: the same fetch, with the same grant's nonce and the copy's number.
    (used,) = site_uses(b, number)
    assert used.details["nonce"] == grant.details["nonce"] and used.details["copy"] == copy["number"]
    assert used.approved_by == "kacho" and used.seq == made.details["site_ledger_seq"]
    assert site_uses(world.sites["higashi"], number) == []  # A was not asked
    assert "ok" in centre_cli(world, "ledger", "verify", user="kansa")
    for form in ("form", "answer"):  # the organisation's forms, from the centre's rows
        centre_cli(world, "request", form, number, "-o", tmp_path / f"{form}.pdf", user="kacho")
        text = subprocess.run(["pdftotext", "-layout", str(tmp_path / f"{form}.pdf"), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert number in text
    assert b.calls[0] in text and copy["number"] in text and copy["sha256"] in text.replace("\n", "")


def calls_by_id(site: Appliance) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in calls(site.data)}


def test_one_request_names_calls_on_both_sites_and_listens_to_each_from_its_own(
        world: World, centre: CentreService, tmp_path: Path) -> None:
    a, b = world.sites["higashi"], world.sites["otemachi"]
    refs = (call_ref(a.name, a.calls[-1]), call_ref(b.name, b.calls[-1]))
    request = approved(centre, Wanted.LISTEN, refs)
    kacho = centre.sign_in("kacho", PASSWORDS["kacho"])
    heard = b"".join(centre.listen(kacho, request.number, refs[1]))
    assert heard == b.audio(b.calls[-1], tmp_path / "b.wav")
    assert list((world.folder / "listening").iterdir()) == []  # fetched, streamed, gone
    assert centre.request(request.number).state is RequestState.FULFILLED  # the first play fulfils it
    heard_a = b"".join(centre.listen(kacho, request.number, refs[0]))
    assert heard_a == a.audio(a.calls[-1], tmp_path / "a.wav")
    assert [e.details["site"] for e in grants_for(world, request.number)] == [b.name, a.name]
    assert len(site_uses(a, request.number)) == len(site_uses(b, request.number)) == 1
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT site, call_id FROM request_calls WHERE request = %s ORDER BY site",
                            (request.number,)).fetchall()
    assert rows == [(a.name, a.calls[-1]), (b.name, b.calls[-1])]


# --- no grant without an approval; nothing kept that is not the sealed call -------------------------

def test_a_refused_or_unapproved_request_gets_no_grant(world: World, centre: CentreService) -> None:
    b = world.sites["otemachi"]
    ref = call_ref(b.name, b.calls[0])
    tanaka, kacho = centre.sign_in("tanaka", PASSWORDS["tanaka"]), centre.sign_in("kacho", PASSWORDS["kacho"])
    waiting = centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.COPY, call_ids=(ref,))
    with pytest.raises(RequestStateError):
        centre.fulfil(kacho, waiting.number, holder="誰か")
    refused = centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.COPY, call_ids=(ref,))
    centre.refuse(kacho, refused.number, "法令上の根拠が示されていない")
    with pytest.raises(RequestStateError):
        centre.fulfil(kacho, refused.number, holder="誰か")
    unheard = centre.file(tanaka, department="市民課", purpose="mayor", wanted=Wanted.LISTEN, call_ids=(ref,))
    with pytest.raises(RequestStateError):
        list(centre.listen(kacho, unheard.number, ref))
    centre.refuse(kacho, unheard.number, "必要性が認められない")
    with pytest.raises(RequestStateError):
        list(centre.listen(kacho, unheard.number, ref))
    for number in (waiting.number, refused.number, unheard.number):
        assert grants_for(world, number) == [] and site_uses(b, number) == []
    assert not [c for c in centre.copies() if c.request in (waiting.number, refused.number)]


def test_a_fetch_whose_bytes_do_not_match_the_seal_is_not_kept(world: World, centre: CentreService) -> None:
    """The centre's seal for a call differs from what its site holds (a tampered row, a site that
    serves other bytes): the copy and the listening file are removed and the rejection ledgered."""
    a = world.sites["higashi"]
    ref = call_ref(a.name, a.calls[0])
    copy_request = approved(centre, Wanted.COPY, (ref,))
    listen_request = approved(centre, Wanted.LISTEN, (ref,))
    kacho = centre.sign_in("kacho", PASSWORDS["kacho"])
    before = set((world.folder / "exports").glob("*")) if (world.folder / "exports").exists() else set()
    centre.conn.execute("UPDATE calls SET sha256 = %s WHERE site = %s AND id = %s", ("0" * 64, a.name, a.calls[0]))
    try:
        with pytest.raises(AccessError, match="not the call as sealed"):
            centre.fulfil(kacho, copy_request.number, holder="市長公室")
        with pytest.raises(AccessError, match="not the call as sealed"):
            centre.fulfil(kacho, listen_request.number, holder="市長公室")
        with pytest.raises(AccessError, match="not the call as sealed"):
            list(centre.listen(kacho, listen_request.number, ref))
    finally:
        centre.conn.execute("UPDATE calls SET sha256 = %s WHERE site = %s AND id = %s",
                            (calls_by_id(a)[a.calls[0]]["sha256"], a.name, a.calls[0]))
    assert set((world.folder / "exports").glob("*")) == before
    assert list((world.folder / "listening").iterdir()) == []
    assert not [c for c in centre.copies() if c.request == copy_request.number]
    for number in (copy_request.number, listen_request.number):
        assert centre.request(number).state is RequestState.APPROVED
        rejected = [e for e in centre_entries(world) if e.event == "site_fetch_rejected"
                    and e.details["request"] == number]
        assert rejected and all(e.details["sealed_sha256"] == "0" * 64 for e in rejected)
    # With the seal back, the same approved request is fulfilled.
    done = centre.fulfil(kacho, copy_request.number, holder="市長公室")
    assert len(done.copies) == 1 and Path(done.copies[0].package).exists()


def test_a_site_the_centre_cannot_reach_fails_the_fetch_and_says_so(world: World, centre: CentreService) -> None:
    b = world.sites["otemachi"]
    request = approved(centre, Wanted.COPY, (call_ref(b.name, b.calls[0]),))
    kacho = centre.sign_in("kacho", PASSWORDS["kacho"])
    centre.set_site_address(kacho, b.name, "127.0.0.1", 9)  # discard: nobody listens
    try:
        with pytest.raises(AccessError, match="the fetch from site otemachi failed"):
            centre.fulfil(kacho, request.number, holder="市長公室")
    finally:
        centre.set_site_address(kacho, b.name, "127.0.0.1", b.port)
    assert [e.event for e in centre_entries(world) if e.details.get("request") == request.number][-2:] == [
        "grant_issued", "site_fetch_failed"]
    assert centre.request(request.number).state is RequestState.APPROVED
    assert not [c for c in centre.copies() if c.request == request.number]


# --- the roles' rules hold at the centre exactly as on one appliance ---------------------------------

def test_the_rules_hold_at_the_centre_as_locally(world: World, centre: CentreService) -> None:
    b = world.sites["otemachi"]
    ref = call_ref(b.name, b.calls[0])
    tanaka, kacho = centre.sign_in("tanaka", PASSWORDS["tanaka"]), centre.sign_in("kacho", PASSWORDS["kacho"])
    ito, kansa = centre.sign_in("ito", PASSWORDS["ito"]), centre.sign_in("kansa", PASSWORDS["kansa"])
    dairi = centre.sign_in("dairi", PASSWORDS["dairi"])
    request = centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.COPY, call_ids=(ref,))
    with pytest.raises(Forbidden):
        centre.approve(tanaka, request.number)  # a requester does not approve
    with pytest.raises(Forbidden):
        centre.approve(dairi, request.number)  # a deputy only while the manager is absent
    with pytest.raises(Forbidden):
        centre.file(kansa, department="監査", purpose="law", wanted=Wanted.COPY, call_ids=(ref,))
    with pytest.raises(Forbidden):
        centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.LISTEN, call_ids=(ref,))
    with pytest.raises(Forbidden):
        centre.file(kacho, department="人事課", purpose="law", wanted=Wanted.COPY, call_ids=(ref,))
    with pytest.raises(AccessError, match="no call"):
        centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.COPY, call_ids=(f"{b.name}/nope",))
    with pytest.raises(AccessError, match="SITE/ID"):
        centre.file(tanaka, department="市民課", purpose="law", wanted=Wanted.COPY, call_ids=(b.calls[0],))
    centre.set_absent(kacho, "kacho", True)  # while the manager is away, the deputy decides for them
    try:
        approval = centre.approve(centre.sign_in("dairi", PASSWORDS["dairi"]), request.number)
    finally:
        centre.set_absent(kacho, "kacho", False)
    assert approval.decided_by == "dairi" and approval.decided_role == "manager"
    with pytest.raises(Forbidden):
        centre.fulfil(ito, request.number, holder="x")  # a handler acts only on the manager's instruction
    assert grants_for(world, request.number) == []
    centre.instruct(kacho, request.number, "ito")
    done = centre.fulfil(ito, request.number, holder="市民課 田中")
    assert done.request.fulfilled_by == "ito" and len(done.copies) == 1
    with pytest.raises(Forbidden):
        centre.dispose(tanaka, done.copies[0].number, how="shredded", witness=None)
    centre.dispose(kacho, done.copies[0].number, how="DVD-R を破砕", witness="kansa")
    with pytest.raises(Forbidden):
        centre.ledger_book(tanaka, pdf=False)
    refusals = [e for e in centre_entries(world) if e.event == "refused_action"]
    assert {e.actor for e in refusals} >= {"tanaka", "dairi", "kansa", "kacho", "ito"}
    assert any(e.actor == "tanaka" and "not listen" in (e.reason or "") for e in refusals)  # refused at filing
    head = centre.ledger.head()
    book = list(csv.reader(io.StringIO(centre.ledger_book(kansa, pdf=False).decode("utf-8-sig"))))
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        synced = conn.execute("SELECT count(*) FROM ledger_entries WHERE ledger = 'ledger'").fetchone()[0]
    assert head is not None and len(book) == 1 + head[0] + synced  # the one book: the centre's chain and the sites'
    assert book[0][0] == "拠点" and {row[0] for row in book[1:]} == {"センター", *world.sites}
    assert centre.verify_ledger(kansa) == []


def test_sign_in_failures_lock_the_account_and_are_in_the_centres_book(world: World, centre: CentreService) -> None:
    centre.add_user(centre.sign_in("kacho", PASSWORDS["kacho"]), "locked", "requester", "locked-passphrase-1")
    for _ in range(centre.access.max_failed_logins):
        with pytest.raises(BadCredentials):
            centre.sign_in("locked", "wrong-password-xx")
    with pytest.raises(BadCredentials, match="locked until"):
        centre.sign_in("locked", "locked-passphrase-1")
    events = [e.event for e in centre_entries(world) if e.actor == "locked"]
    assert events.count("login_failed") == centre.access.max_failed_logins and "account_locked" in events


# --- the centre's own chain -----------------------------------------------------------------------

def test_the_centres_ledger_finds_an_edit_a_removal_and_another_key(server: PostgresServer) -> None:
    dsn = server.create_database("caccess_ledger")
    conn = connect(dsn)
    try:
        migrate(conn)
        ledger = CentreLedger(conn, b"k" * 32)
        for n in range(4):
            ledger.append(_Event.TRIED, "kacho", _now(), reason=f"entry {n}", n=n)
        assert ledger.verify() == []
        assert CentreLedger(conn, b"x" * 32).verify() != []
        conn.execute("UPDATE centre_ledger SET details = '{\"n\": 9}' WHERE seq = 2")
        assert any("seq 2" in p for p in ledger.verify())
        conn.execute("UPDATE centre_ledger SET details = '{\"n\": 1}' WHERE seq = 2")
        assert ledger.verify() == []
        conn.execute("DELETE FROM centre_ledger WHERE seq = 4")
        assert any("head" in p for p in ledger.verify())
        with pytest.raises(AccessError, match="does not end where its head says"):
            ledger.append(_Event.TRIED, "kacho", _now())
    finally:
        conn.close()


def _sync_all(world: World) -> None:
    """Every site's ledger sent on (the grants they honoured, the refusals): more than the enrolment."""
    for site in world.sites.values():
        run_cli("central", "sync", "--once", "--config", site.config)


def test_one_book_of_the_centre_and_every_site_in_time_order_by_site_and_by_page(
        world: World, centre: CentreService) -> None:
    for site in world.sites.values():  # so that each site has several entries
        request = approved(centre, Wanted.LISTEN, (call_ref(site.name, site.calls[0]),))
        for _ in range(2):
            list(centre.listen(centre.sign_in("kacho", PASSWORDS["kacho"]), request.number, request.call_ids[0]))
    _sync_all(world)
    kansa = centre.sign_in("kansa", PASSWORDS["kansa"])
    book = centre.book(kansa)
    everything = list(book.entries())
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        synced = dict(conn.execute("SELECT site, count(*) FROM ledger_entries WHERE ledger = 'ledger' GROUP BY site")
                      .fetchall())
    head = centre.ledger.head()
    assert head is not None and len(everything) == head[0] + sum(synced.values())
    assert [e.at for e in everything] == sorted(e.at for e in everything)  # one book in time order
    assert {e.site for e in everything} == {None, *world.sites}
    for name, site in world.sites.items():  # each site's entries are its own book, as the site keeps it
        theirs = [(e.seq, e.event, e.actor) for e in everything if e.site == name]
        assert theirs == [(e.seq, e.event, e.actor) for e in site.ledger()][:synced[name]]
    pages, number = [], 1
    while True:
        page = book.page(book.filters(), number, size=7)
        pages += page.entries
        if number == page.pages:
            break
        number += 1
    assert page.total == len(everything) and pages == everything[::-1]  # newest first, each entry once
    b = book.page(book.filters(site="otemachi", event="site_enrolled"), 1, 50)
    assert b.total == 1 and b.entries[0].site == "otemachi"
    assert {e.site for e in book.page(book.filters(site="@centre"), 1, 500).entries} == {None}

    listed = json.loads(centre_cli(world, "ledger", "list", "--site", "otemachi", "--json", "--page-size", "3"))
    assert synced["otemachi"] >= 3 and synced["higashi"] >= 3
    assert listed["total"] == synced["otemachi"] and [e["site"] for e in listed["entries"]] == ["otemachi"] * 3
    assert listed["entries"][0]["seq"] == synced["otemachi"]
    out = centre_cli(world, "ledger", "verify", user="kansa")
    assert "centre ledger: ok" in out and all(f"site {name}: ok, {synced[name]} entries" in out
                                              for name in world.sites)
    assert "consecutive seq from 1 without a gap" in out and "`callrec ledger verify` there" in out


def test_a_site_entry_edited_or_removed_in_the_centres_database_is_a_problem(
        world: World, centre: CentreService) -> None:
    for site in world.sites.values():  # a few entries at each site: two grants used, synced
        request = approved(centre, Wanted.LISTEN, (call_ref(site.name, site.calls[0]),))
        for _ in range(2):
            list(centre.listen(centre.sign_in("kacho", PASSWORDS["kacho"]), request.number, request.call_ids[0]))
    _sync_all(world)
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute("BEGIN")  # every change here is rolled back: the world stays as it was
        try:
            conn.execute("UPDATE ledger_entries SET reason = 'なかったこと' WHERE site = 'higashi' "
                         "AND ledger = 'ledger' AND seq = 2")
            conn.execute("DELETE FROM ledger_entries WHERE site = 'otemachi' AND ledger = 'ledger' AND seq = 3")
            checks = {c.site: c for c in CentreBook(conn, TOKYO).check_sites()}
            conn.execute("DELETE FROM ledger_entries WHERE site = 'higashi' AND ledger = 'ledger' AND seq = "
                         "(SELECT max(seq) FROM ledger_entries WHERE site = 'higashi' AND ledger = 'ledger')")
            cut = CentreBook(conn, TOKYO).check_site("higashi")
        finally:
            conn.execute("ROLLBACK")
        intact = CentreBook(conn, TOKYO).check_sites()
    assert checks["higashi"].problems == ["seq 2: the row's columns differ from its stored line (edited at the centre)"]
    assert [p.split(":")[0] for p in checks["otemachi"].problems] == ["seq 4", "seq 4"]
    assert "gap" in checks["otemachi"].problems[0] and "prev" in checks["otemachi"].problems[1]
    assert "does not end at the head the site anchored" in cut.problems[-1]  # the last entry cut off
    assert all(c.ok for c in intact)


class _Event(StrEnum):
    TRIED = "tried"


# --- one AccessStore, two databases -------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AccessStore]:
    if request.param == "sqlite":
        store = AccessStore(tmp_path / "index.sqlite3")
        yield store
        store.close()
        return
    server: PostgresServer = request.getfixturevalue("server")
    conn = connect(server.create_database(f"caccess_store_{secrets.token_hex(4)}"))
    try:
        migrate(conn)
        yield AccessStore(conn)
    finally:
        conn.close()


def test_the_access_store_keeps_accounts_requests_copies_alike_on_both_databases(tables: AccessStore) -> None:
    account = Account("kacho", "manager", None, False, False, 0, None, "2026-12-07T10:00:00+09:00")
    tables.add_account(account, "hash-1")
    assert tables.account("kacho") == (account, "hash-1") and tables.account_count() == 1
    tables.update_account("kacho", absent=True, failed_logins=2, locked_until="2026-12-07T10:15:00+09:00")
    changed, _ = tables.account("kacho")  # type: ignore[misc]
    assert changed.absent is True and changed.disabled is False and changed.failed_logins == 2
    assert [a.name for a in tables.accounts()] == ["kacho"] and tables.account("nobody") is None

    with tables.transaction():
        numbers = [tables.next_serial("request-2026") for _ in range(3)]
    assert numbers == [1, 2, 3]
    with pytest.raises(RuntimeError), tables.transaction():
        tables.next_serial("request-2026")
        raise RuntimeError("rolled back")
    assert tables.next_serial("request-2026") == 4

    request = Request("R2026-0001", "tanaka", "requester", "市民課", "law", Wanted.COPY,
                      ("otemachi/c-1", "higashi/c-2"), "詳細", "2026-12-07T10:00:00+09:00")
    tables.save_request(request)
    decided = replace(request, state=RequestState.APPROVED, decided_by="kacho", decided_role="manager")
    tables.save_request(decided)
    assert tables.request("R2026-0001") == decided and tables.requests() == [decided]

    copy = CopyRecord("C2026-0001", "R2026-0001", "otemachi/c-1", "ab" * 32, "/x.zip", "holder", "kacho",
                      "2026-12-07T10:05:00+09:00", None)
    tables.add_copy(copy)
    tables.mark_disposed("C2026-0001", at="2026-12-08T09:00:00+09:00", how="shredded", by="kacho", witness=None)
    disposed = tables.copy("C2026-0001")
    assert disposed is not None and disposed.disposed and tables.copies() == [disposed]


def test_call_references_name_a_site_and_an_id() -> None:
    assert split_ref(call_ref("otemachi", "20261207-0001")) == ("otemachi", "20261207-0001")
    for bad in ("20261207-0001", "/x", "Otemachi/x", "otemachi/"):
        with pytest.raises(AccessError):
            split_ref(bad)
