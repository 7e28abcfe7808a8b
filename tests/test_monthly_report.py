"""The monthly harassment report (issue 18 item 5): counts per line and department for a month in
JST, right across the month's boundary; withdrawn marks not counted; holds and evidence exports
by when they happened; CSV and a Japanese PDF (read back with pdftotext) with no number of a
caller and no name; and `callrec report monthly` as a person runs it."""
from __future__ import annotations

import csv
import io
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from access.errors import AccessError, Forbidden
from access.monthly import CallFact, EventFact, EventKind, count_month, month_bounds, report_csv, report_pdf
from access.reporting import OTHER_LINE, monthly_report
from access.rules import Actor
from access.service import AccessService
from policy.access import Wanted
from policy.loader import parse_policy
from policy.schema import Policy
from storage.marks import MarkBook
from storage.records import set_hold
from tests.interop import run_cli
from tests.marks_helpers import HARASSMENT, TOKYO, open_store, record_calls

ACCESS = """\
organisation: 試験市
numbering:
  own_numbers:
    - {number: "0263111111", label: 市民課}
access:
  forms: kumamoto
  roles:
    manager: {title: 管理責任者, clause: 熊本市 第3条, may: [search, request, approve, fulfil, hold, read_ledger,
              manage_users, mark, manage_marks]}
    staff: {title: 職員, clause: 熊本市 第3条, may: [search, request, mark]}
  approvers: [manager]
  approvers_clause: 熊本市 第5条
  purposes:
    - {key: evidence, label: 証拠提出（警察・弁護士）, clause: 熊本市 様式1 1, wanted: [copy], evidence: true}
    - {key: disclosure, label: 開示請求, clause: 熊本市 第5条(1), wanted: [copy]}
  listening_clause: 熊本市 第4条3
  copies: {keep: until_purpose_met, clause: 品川区 第7条4}
"""
CALLER = "0312345678"


def jst(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO).timestamp()


def report_policy() -> Policy:
    return parse_policy("network: {trunk: [203.0.113.0/28]}\n" + ACCESS + HARASSMENT)


def test_a_call_a_minute_before_midnight_jst_counts_in_its_month() -> None:
    start, end = month_bounds("2026-11", "Asia/Tokyo")
    assert datetime.fromtimestamp(start, TOKYO).isoformat() == "2026-11-01T00:00:00+09:00"
    assert datetime.fromtimestamp(end, TOKYO).isoformat() == "2026-12-01T00:00:00+09:00"
    last = jst("2026-11-30T23:59:00")  # 14:59 UTC: the 30th in either zone
    first = jst("2026-12-01T00:00:30")  # 15:00 UTC on the 30th, but December in Japan
    calls = [CallFact(last, "0263111111", "市民課", ("threat", "demand")), CallFact(first, "0263111111", "市民課",
                                                                                      ("threat",)),
             CallFact(jst("2026-10-31T23:59:59"), "0263111111", "市民課", ("threat",)),
             CallFact(jst("2026-11-01T00:00:00"), OTHER_LINE, "（所属未設定）")]
    events = [EventFact(first, EventKind.HOLD, "0263111111", "市民課"),
              EventFact(last, EventKind.EXPORT, "0263111111", "市民課")]
    categories = [("threat", "脅迫・恐喝"), ("demand", "不当な要求")]
    november = count_month("2026-11", "Asia/Tokyo", calls, events, categories)
    assert (november.total.calls, november.total.marked_calls, november.total.holds, november.total.exports) == (
        2, 1, 0, 1)
    assert dict(november.total.marks) == {"threat": 1, "demand": 1}
    assert [line for line, _, _ in november.lines] == ["0263111111", OTHER_LINE]
    december = count_month("2026-12", "Asia/Tokyo", calls, events, categories)
    assert (december.total.calls, december.total.marked_calls, december.total.holds) == (1, 1, 1)
    rows = list(csv.reader(io.StringIO(report_csv(november).decode("utf-8-sig"))))
    assert rows[1] == ["区分", "名称", "所属", "通話数", "マークされた通話", "脅迫・恐喝", "不当な要求", "保全", "証拠提出"]
    assert rows[-1] == ["合計", "", "", "2", "1", "1", "1", "0", "1"]
    with pytest.raises(AccessError, match="YYYY-MM"):
        month_bounds("2026-13", "Asia/Tokyo")


def test_the_report_of_a_store_counts_marks_holds_and_evidence_exports(tmp_path: Path) -> None:
    policy = report_policy()
    with open_store(tmp_path / "data") as store, MarkBook(store, policy.harassment) as book, \
            AccessService(store, policy) as access:
        nov_a, nov_b, dec_a = record_calls(store, [CALLER, "09011112222", CALLER],
                                           start=jst("2025-11-30T23:58:00"), policy=policy)
        assert datetime.fromtimestamp(store.index.get(dec_a).recorded_at, TOKYO).day == 1  # type: ignore[union-attr]
        book.add(nov_a, "threat", marked_by="sato", via="console", at=datetime.fromtimestamp(jst("2025-11-30T23:59:50"),
                                                                                          TOKYO))
        late = book.add(nov_b, "demand", marked_by="ext:201", via="dtmf",
                        at=datetime.fromtimestamp(jst("2025-12-02T10:00:00"), TOKYO))
        wrong = book.add(nov_b, "threat", marked_by="sato", via="console",
                         at=datetime.fromtimestamp(jst("2025-12-02T10:05:00"), TOKYO))
        book.withdraw(wrong.id, by="kanri", reason="区分の誤り")
        set_hold(store, dec_a, True, actor="kanri", reason="訴訟の予告", approved_by=None)
        access.add_user(None, "kanri", "manager", "kanri-passphrase-2026")
        manager = Actor("kanri", "manager")
        access.add_user(manager, "sato", "staff", "sato-passphrase-2026")
        staff = Actor("sato", "staff")
        for purpose in ("evidence", "disclosure"):
            request = access.file(staff, department="市民課", purpose=purpose, wanted=Wanted.COPY, call_ids=(nov_a,))
            access.approve(manager, request.number)
            access.fulfil(manager, request.number, holder="県警察本部")

        with pytest.raises(Forbidden):
            monthly_report(access, policy, staff, "2025-11")
        november = monthly_report(access, policy, manager, "2025-11")
        december = monthly_report(access, policy, manager, "2025-12")
        now = monthly_report(access, policy, manager, datetime.now(TOKYO).strftime("%Y-%m"))
    assert late.active
    assert (november.total.calls, november.total.marked_calls, dict(november.total.marks)) == (
        2, 2, {"threat": 1, "demand": 1}), "the withdrawn mark is not counted"
    assert november.total.holds == 1, "the evidence hold placed on 11/30; the one of 12/02 is December's"
    assert (december.total.calls, december.total.marked_calls) == (1, 0)
    assert december.total.holds == 1, "the mark made in December holds a November call"
    assert now.total.holds == 1 and now.total.exports == 1, "today's legal hold and the one evidence export"
    assert [(line, dept) for line, dept, _ in november.lines] == [("0263111111", "市民課")]

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(report_pdf(november))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "カスタマーハラスメント月次集計（令和7年（2025年）11月分）" in text and "試験市" in text
    assert "市民課" in text and "脅迫・恐喝" in text and "不当な要求" in text
    for secret in ("312345678", "09011112222", "sato", "kanri", "ext:201", "201"):
        assert secret not in text, f"{secret} must not be in the report"
    assert "312345678" not in report_csv(november).decode("utf-8-sig")


def test_callrec_report_monthly_writes_csv_and_pdf(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("network: {trunk: [203.0.113.0/28]}\n" + ACCESS + HARASSMENT, encoding="utf-8")
    with open_store(tmp_path / "data") as store, MarkBook(store, report_policy().harassment) as book:
        (call,) = record_calls(store, [CALLER], start=jst("2025-11-10T10:00:00"), policy=report_policy())
        book.add(call, "threat", marked_by="sato", via="cli", at=datetime.fromtimestamp(jst("2025-11-10T10:05:00"),
                                                                                        TOKYO))
    where = ("--data-dir", tmp_path / "data", "--policy", policy_file)
    run_cli("user", "add", "kanri", "--role", "manager", *where, input="kanri-passphrase-2026\n")
    out = run_cli("report", "monthly", "--month", "2025-11", "--user", "kanri", *where,
                  input="kanri-passphrase-2026\n").stdout
    assert "回線,0263111111,市民課,1,1,1,0,1,0" in out
    target = tmp_path / "november.pdf"
    run_cli("report", "monthly", "--month", "2025-11", "--pdf", "--output", target, "--user", "kanri", *where,
            input="kanri-passphrase-2026\n")
    text = subprocess.run(["pdftotext", str(target), "-"], capture_output=True, text=True, check=True).stdout
    assert "月次集計" in text and "312345678" not in text
    again = run_cli("report", "monthly", "--month", "2025-11", "--pdf", "--output", target, "--user", "kanri",
                    *where, input="kanri-passphrase-2026\n", check=False)
    assert again.returncode == 2 and "never overwrites" in again.stderr
