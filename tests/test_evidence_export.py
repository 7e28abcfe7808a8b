"""An evidence export (証拠提出, issue 18 item 2) through the request path: filed by staff for the
evidence purpose, approved by the manager, fulfilled as a numbered copy package whose signed
manifest carries the call's marks (a withdrawn one with who withdrew it and why) and its proof of
notice (which announcement the caller heard); a package for another purpose carries neither."""
from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path

from access.package import MANIFEST, verify_package
from access.rules import Actor
from access.service import AccessService
from policy.access import Wanted
from storage.marks import MarkBook
from tests.marks_helpers import TOKYO, noticed_and_marked, open_store
from tests.test_monthly_report import CALLER, report_policy


def test_the_evidence_package_carries_the_marks_and_the_notice(tmp_path: Path) -> None:
    policy = report_policy()
    with open_store(tmp_path / "data") as store, MarkBook(store, policy.harassment) as book, \
            AccessService(store, policy) as access:
        call, notice_id, kept, wrong = noticed_and_marked(store, book, policy, CALLER)
        access.add_user(None, "kanri", "manager", "kanri-passphrase-2026")
        manager = Actor("kanri", "manager")
        access.add_user(manager, "sato", "staff", "sato-passphrase-2026")
        staff = Actor("sato", "staff")
        packages = {}
        for purpose in ("evidence", "disclosure"):
            request = access.file(staff, department="市民課", purpose=purpose, wanted=Wanted.COPY, call_ids=(call,),
                                  details="警察署への提出")
            access.approve(manager, request.number)
            (copy,) = access.fulfil(manager, request.number, holder="県警察本部 生活安全課").copies
            packages[purpose] = Path(copy.package)

    report = verify_package(packages["evidence"])
    assert report.ok, report.problems
    with zipfile.ZipFile(packages["evidence"]) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    assert manifest["purpose"]["key"] == "evidence"
    evidence = manifest["evidence"]
    assert evidence["notice"]["id"] == notice_id and evidence["notice"]["announcement"] == "warning"
    assert evidence["notice"]["outcome"] == "announced" and evidence["notice"]["announced_from"].endswith("+09:00")
    marks = {m["id"]: m for m in evidence["marks"]}
    assert marks[kept.id]["category"] == "threat" and marks[kept.id]["note"] == "「殺すぞ」"
    assert marks[kept.id]["withdrawn_at"] is None and marks[kept.id]["marked_by"] == "ext:201"
    assert (marks[wrong.id]["withdrawn_by"], marks[wrong.id]["withdrawn_reason"]) == ("kanri", "区分の誤り")
    assert datetime.fromisoformat(marks[kept.id]["marked_at"]).utcoffset() == TOKYO.utcoffset(datetime.now())

    with zipfile.ZipFile(packages["disclosure"]) as zf:
        assert "evidence" not in json.loads(zf.read(MANIFEST)), "an ordinary copy carries no marks"
