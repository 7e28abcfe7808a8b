"""An evidence export (証拠提出) made for the centre carries what the same export made on the box
carries (issue 19 leftovers): the call's proof of notice (録音告知) and its harassment marks, which
only the site holds, inside the manifest the site signs.

A real PostgreSQL (tests/central_pg.py); the site is a data folder with a recorded call, a notice
and two marks (one withdrawn), enrolled with the centre's CA, synced, and serving with
`callrec site serve` as a process of its own; the centre fetches the copy over mutual TLS.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from access.centre_service import call_ref
from access.package import MANIFEST, verify_package
from access.rules import Actor
from access.service import AccessService
from callrec.centre_access import centre_service
from callrec.pki import init_ca
from policy.access import Wanted
from storage.central_link import Sender
from storage.index import connect as connect_index
from storage.marks import MarkBook
from storage.outbox import enable
from tests.central_pg import PostgresServer
from tests.interop import run_cli
from tests.marks_helpers import noticed_and_marked, open_store
from tests.test_monthly_report import CALLER, report_policy
from tests.test_site_fetch import _now, enrol, port_of, start_site, stop

SITE = "higashi"
PASSWORDS = {"kanri": "kanri-passphrase-2026", "sato": "sato-passphrase-2026"}


@pytest.fixture
def dsn() -> Iterator[str]:
    server = PostgresServer(prefix="cbook-evidence-pg-")
    try:
        server.start()
        dsn = server.create_database("centre")
        run_cli("central", "init", "--dsn", dsn)
        yield dsn
    finally:
        server.remove()


def _site_call(data: Path) -> tuple[str, str, list[str]]:
    """A call at the site with a notice and two marks (one withdrawn): (call id, notice id, mark ids)."""
    policy = report_policy()
    with open_store(data) as store, MarkBook(store, policy.harassment) as book:
        db = connect_index(store.index.path)  # the outbox on, as at a site joined to a centre
        enable(db, 0.0)
        db.close()
        call, notice_id, kept, wrong = noticed_and_marked(store, book, policy, CALLER)
    return call, notice_id, [kept.id, wrong.id]


def _box_copy(data: Path, call: str, purpose: str) -> Path:
    with open_store(data) as store, AccessService(store, report_policy()) as access:
        if access.tables.account_count() == 0:
            access.add_user(None, "kanri", "manager", PASSWORDS["kanri"])
            access.add_user(Actor("kanri", "manager"), "sato", "staff", PASSWORDS["sato"])
        request = access.file(Actor("sato", "staff"), department="市民課", purpose=purpose, wanted=Wanted.COPY,
                              call_ids=(call,), details="警察署への提出")
        access.approve(Actor("kanri", "manager"), request.number)
        (copy,) = access.fulfil(Actor("kanri", "manager"), request.number, holder="県警察本部 生活安全課").copies
        return Path(copy.package)


def _sync(data: Path, dsn: str) -> None:
    with open_store(data) as store:
        sender = Sender(store.index.path, {"ledger": store.ledger, "seals": store.seals}, dsn, SITE)
        try:
            while not sender.step().empty:
                pass
        finally:
            sender.close()


def _read(package: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    assert verify_package(package).ok, verify_package(package).problems
    with zipfile.ZipFile(package) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        number = manifest["copy_number"]
        return manifest, {name.replace(number, "NUMBER"): zf.read(name) for name in zf.namelist()
                          if name.endswith(".wav")}


def test_an_evidence_copy_made_for_the_centre_carries_the_notice_and_marks_a_box_copy_carries(
        dsn: str, tmp_path: Path) -> None:
    data = tmp_path / "sites" / SITE
    call, notice_id, marks = _site_call(data)
    box = {purpose: _box_copy(data, call, purpose) for purpose in ("evidence", "disclosure")}
    ca = init_ca(tmp_path / "centre", _now(), "松本市")
    enrol(ca, SITE, data, tmp_path)
    _sync(data, dsn)
    process = start_site(data, tmp_path / "serve.log")
    try:
        port = port_of(process, tmp_path / "serve.log")
        centred = {}
        with centre_service(dsn, report_policy(), ca.folder) as centre:
            centre.add_user(None, "kanri", "manager", PASSWORDS["kanri"])
            manager = centre.sign_in("kanri", PASSWORDS["kanri"])
            centre.add_user(manager, "sato", "staff", PASSWORDS["sato"])
            centre.set_site_address(manager, SITE, "127.0.0.1", port)
            staff = centre.sign_in("sato", PASSWORDS["sato"])
            for purpose in ("evidence", "disclosure"):
                request = centre.file(staff, department="市民課", purpose=purpose, wanted=Wanted.COPY,
                                      call_ids=(call_ref(SITE, call),), details="警察署への提出")
                centre.approve(manager, request.number)
                (copy,) = centre.fulfil(manager, request.number, holder="県警察本部 生活安全課").copies
                centred[purpose] = Path(copy.package)
    finally:
        stop(process)

    box_manifest, box_audio = _read(box["evidence"])
    centre_manifest, centre_audio = _read(centred["evidence"])
    assert centre_audio == box_audio  # the same sealed recording
    evidence = centre_manifest["evidence"]
    assert evidence == box_manifest["evidence"]  # the same proof of notice and the same marks, field for field
    assert evidence["notice"]["id"] == notice_id and evidence["notice"]["announcement"] == "warning"
    assert [m["id"] for m in evidence["marks"]] == marks
    assert evidence["marks"][1]["withdrawn_reason"] == "区分の誤り" and evidence["marks"][0]["note"] == "「殺すぞ」"
    assert centre_manifest["call"] == box_manifest["call"]
    same = ("organisation", "purpose", "holder", "conditions", "keep_rule", "approved_by")
    assert {k: centre_manifest[k] for k in same} == {k: box_manifest[k] for k in same}
    assert centre_manifest["site"] == SITE and set(box_manifest) - {"site"} <= set(centre_manifest)
    for made in (box["disclosure"], centred["disclosure"]):  # an ordinary copy carries neither, either way
        assert "evidence" not in _read(made)[0]
