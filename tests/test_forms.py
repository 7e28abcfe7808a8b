"""The forms and the 管理簿 as printed: each organisation's titles, labels in the seed's order, and
the filled values, read back from the PDF with `pdftotext -layout` as a person would read them."""
from __future__ import annotations

import csv
import io
import re
import subprocess
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from access import forms
from access.errors import AccessError, FormError
from access.requests import AccessEvent
from access.site_desk import SiteEvent
from access.forms import (
    EVENT_LABELS,
    FORM_SETS,
    LEDGER_COLUMNS,
    AnswerForm,
    FormCall,
    RequestForm,
    answer_pdf,
    circled_purpose,
    japanese_date,
    ledger_book_csv,
    ledger_book_pdf,
    ledger_book_rows,
    minutes_seconds,
    request_pdf,
)
from storage.archive import ArchiveEvent
from storage.keys import MasterKey
from storage.ledger import KEY_LABEL, Event, Ledger, LedgerEntry
from storage.marks import MarkEvent

JST = timezone(timedelta(hours=9))
SHA_KEPT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA_ERASED = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
FINGERPRINT = "3F2A-91BC-0D4E-77A1-5C66-08E2-B9D0-1F47"
PURPOSES = {
    "kumamoto": ("クレーム、カスハラ対応", "熊本市 第5条(2)"),
    "yamagata": ("総務部総務課長が第1条の目的のために利用", "山形市 第9条1(1)"),
    "saitama": ("第1条の目的", "さいたま 第4条2, 第5条1"),
    "matsumoto": ("市長が特に必要と認めた場合", "松本市 第8条1(3), 第7条3"),
    "shinagawa": ("管理責任者が必要と認めた場合", "品川区 第7条1(2)"),
}
KEPT = FormCall("c-20260305-0001", "2026-03-05T14:08:31.250+09:00", 305.4, "inbound", "0963282111", "23456", SHA_KEPT)
ERASED = FormCall("c-20260305-0002", "2026-03-05T14:21:02+09:00", 62.0, "outbound", "0963282112", "23457",
                  SHA_ERASED, erased_at="2026-03-06T03:00:00+09:00", erased_reason="保存期間満了")

SEED: dict[str, dict[str, tuple[str, ...]]] = {
    "kumamoto": {
        "request": ("様式第1号（第6条関係）", "電話録音データ取出し申請書", "管財課長様", "（申請課（室）の長）",
                    "下記のとおり申請しますので、対応をお願いします。", "電話録音データの", "内容",
                    "（最も近いもの", "1つに〇付け）", "1クレーム、カスハラ対応", "2対応内容確認", "3外部機関対応",
                    "4その他", "※データ受領後は、総合文書管理システム上に保存し、公文書として適正に取り扱います。",
                    "申請担当者"),
        "request_order": ("日付", "時間", "通話時間", "相手方電話番号", "市側電話番号", "利用目的"),
        "answer": ("様式第2号（第6条関係）", "電話録音データ取出し回答書", "（申請課（室）の長）",
                   "令和8年（2026年）3月9日付総務発第12号で申請のあったことについて、下記のとおり回答します。",
                   "以上", "問合せ先", "総務局管財課"),
        "answer_calls": ("電話録音データの", "概要"),
        "answer_order": ("1.音声データの有無", "2.音声データ概要", "日付", "時間", "通話時間", "相手方電話番号",
                         "市側電話番号", "3.複製データの交付"),
    },
    "yamagata": {
        "request": ("別記様式（第９条関係）", "通話録音データ提供依頼書", "（宛先）管理責任者", "資産マネジメント課長",
                    "下記の通話記録の内容を確認したいので、通話録音データの複製物の提供を依頼します。",
                    "・第９条第１項第１号に基づくもの", "・第９条第１項第２号に基づくもの",
                    "・第９条第１項第５号に基づくもの", "※該当するものに〇を付けること。"),
        "request_order": ("通話録音データ提供依頼書", "（宛先）管理責任者", "通話日時", "通話時間", "相手先電話番号",
                          "通話内線番号", "利用目的", "備考"),
        "answer": ("通話録音データ提供決定通知書", "要綱第９条第３項の規定により"),
        "answer_order": ("1該当する通話記録の有無", "2通話記録の概要", "通話日時", "通話時間", "相手先電話番号",
                         "通話内線番号", "3複製物の提供"),
    },
    "saitama": {
        "request": ("様式第1号（第5条関係）", "通話出力データ作成指示書", "運営受託者様", "運用責任者",
                    "取扱要領第5条第1項の規定に基づき、次のとおり出力データの作成を指示します。"),
        "request_order": ("1通話日時", "2市役所側電話番号", "3通話相手方電話番号", "4通話時間", "5利用目的", "6備考"),
        "answer": ("様式第2号（第5条関係）", "出力データ提出書", "運営受託者",
                   ("令和8年3月9日付けで指示のあった件について、さいたまコールセンター通話録音装置等の運用に関する"
                    "取扱要領第5条第2項の規定に基づき、次のとおり提出します。")),
        "answer_order": ("1通話日時", "2市役所側電話番号", "3通話相手方電話番号", "4通話時間", "5出力データの有無",
                         "6出力データの概要", "通話日時", "市役所側電話番号", "通話相手方電話番号", "通話時間",
                         "7出力データの作成"),
    },
    "matsumoto": {
        "request": ("通話記録提供依頼書", "通話録音装置管理責任者（人事課長）様", "要綱第8条第1項の規定により",
                    "再生（聴取）", "内線番号の特定のみ"),
        "request_order": ("通話日時", "通話時間", "相手方電話番号", "市側電話番号", "利用目的", "希望する取扱い", "備考"),
        "answer": ("通話記録提供決定通知書", "要綱第8条の規定により"),
        "answer_order": ("1該当する通話記録の有無", "2通話記録の概要", "通話日時", "通話時間", "相手方電話番号",
                         "市側電話番号", "3決定"),
    },
    "shinagawa": {
        "request": ("通話録音データ複製依頼書", "通話録音装置管理責任者様", "要綱第7条第1項の規定により"),
        "request_order": ("通話日時", "通話時間", "相手方電話番号", "区側電話番号", "利用目的", "希望する取扱い", "備考"),
        "answer": ("通話録音データ複製決定通知書", "要綱第7条の規定により"),
        "answer_order": ("1該当する通話記録の有無", "2通話記録の概要", "通話日時", "通話時間", "相手方電話番号",
                         "区側電話番号", "3決定"),
    },
}
"""What each guideline prints (shared/seeds/000-004), written out here rather than taken from the
module, so a change to the module's table has to agree with the seeds to pass."""

CALL_DATE = {"kumamoto": "令和8年（2026年）3月5日", "saitama": "令和8年3月5日（木）"}
DECISION_WORDS = {"kumamoto": ("交付する", "交付しない"), "yamagata": ("提供する", "提供しない"),
                  "saitama": ("作成した", "作成しなかった")}


def request(form_set: str, **changes: Any) -> RequestForm:
    label, clause = PURPOSES[form_set]
    form = RequestForm(
        form_set=form_set, request_number="総務発第12号", requested_on=date(2026, 3, 9),
        requester_name="熊本 花子", requester_department="総務局総務課", requester_contact="山田（内線 2345）",
        purpose_label=label, purpose_clause=clause, wanted="copy",
        call_from=datetime(2026, 3, 5, 14, 0, tzinfo=JST), call_to=datetime(2026, 3, 5, 14, 30, tzinfo=JST),
        call_at_approx=datetime(2026, 3, 5, 14, 10, tzinfo=JST), duration_approx_seconds=300,
        other_party_number="096-328-2111", city_side_number="23456", details="苦情電話の内容確認")
    return replace(form, **changes)


def answer(form_set: str, decision: str = "approved", **changes: Any) -> AnswerForm:
    approved = decision == "approved"
    form = AnswerForm(
        request=request(form_set), decision=decision, decided_on=date(2026, 3, 10), decided_by="管財課長　熊本 一郎",
        decision_reason="" if approved else "申請の目的が第5条各号に該当しないため",
        calls=(KEPT, ERASED) if approved else (KEPT,), copy_numbers=("K2026-0007",) if approved else (),
        disposal_deadline=date(2027, 3, 31) if approved else None, recipient_conditions="目的外に利用しないこと。",
        signing_key_fingerprint=FINGERPRINT if approved else None)
    return replace(form, **changes)


def text_of(pdf: bytes, tmp_path: Path) -> str:
    """The PDF as pdftotext -layout reads it, white space removed: a label and its value stand
    side by side in the layout, so what is checked is that the characters are there, in order."""
    path = tmp_path / "form.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return re.sub(r"\s+", "", out.stdout)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_has(text: str, *pieces: str) -> None:
    missing = [piece for piece in pieces if squeeze(piece) not in text]
    assert missing == [], f"not on the page: {missing}"


def assert_in_order(text: str, *pieces: str) -> None:
    at = 0
    for piece in pieces:
        found = text.find(squeeze(piece), at)
        assert found >= 0, f"{piece!r} not found after position {at}"
        at = found + len(squeeze(piece))


# --- dates and durations ------------------------------------------------------------------------

@pytest.mark.parametrize(("day", "kwargs", "expected"), [
    (date(2026, 3, 5), {}, "令和8年3月5日"),
    (date(2019, 5, 1), {}, "令和元年5月1日"),
    (date(2019, 4, 30), {}, "平成31年4月30日"),
    (date(2020, 1, 1), {}, "令和2年1月1日"),
    (date(2026, 3, 5), {"western": True}, "令和8年（2026年）3月5日"),
    (date(2026, 3, 5), {"weekday": True}, "令和8年3月5日（木）"),
    (datetime(2026, 3, 5, 23, 59, tzinfo=JST), {}, "令和8年3月5日"),
])
def test_japanese_dates_count_the_era_from_its_first_day(day: date, kwargs: dict[str, bool], expected: str) -> None:
    assert japanese_date(day, **kwargs) == expected


def test_a_date_before_heisei_is_refused() -> None:
    with pytest.raises(FormError, match="平成"):
        japanese_date(date(1989, 1, 7))


@pytest.mark.parametrize(("seconds", "expected"), [(305.4, "5分5秒"), (62.0, "1分2秒"), (0.4, "0分0秒"),
                                                   (3725, "62分5秒"), (59.6, "1分0秒")])
def test_durations_are_minutes_and_seconds(seconds: float, expected: str) -> None:
    assert minutes_seconds(seconds) == expected


# --- the request forms --------------------------------------------------------------------------

@pytest.mark.parametrize("form_set", FORM_SETS)
def test_the_request_form_has_the_seeds_title_labels_and_the_values(form_set: str, tmp_path: Path) -> None:
    text = text_of(request_pdf(request(form_set)), tmp_path)
    seed = SEED[form_set]
    assert_has(text, *seed["request"], "総務局総務課", "熊本 花子", "山田（内線 2345）", "令和8年3月9日",
               "総務発第12号", "096-328-2111", "23456", "苦情電話の内容確認", PURPOSES[form_set][1])
    assert_in_order(text, *seed["request_order"])
    call_day = CALL_DATE.get(form_set, "令和8年3月5日")
    if form_set == "saitama":
        assert_has(text, f"{call_day}14時00分頃から", f"{call_day}14時30分頃まで", "約5分")
    elif form_set == "kumamoto":
        assert_has(text, f"日付{call_day}", "時間14時10分", "通話時間約5分")
    else:
        assert_has(text, f"{call_day}14時10分頃", "約5分")


def test_a_duration_with_seconds_is_printed_with_them(tmp_path: Path) -> None:
    text = text_of(request_pdf(request("yamagata", duration_approx_seconds=200)), tmp_path)
    assert_has(text, "約3分20秒")


def test_the_purpose_box_circled_follows_the_purpose_however_its_clause_is_written() -> None:
    assert circled_purpose(request("kumamoto")) == "1 クレーム、カスハラ対応"
    assert circled_purpose(request("kumamoto", purpose_label="警察からの照会への対応")) == "3 外部機関対応"
    disclosure = request("kumamoto", purpose_label="個人情報保護法に基づく開示請求", details="")
    assert circled_purpose(disclosure) == "4 その他（個人情報保護法に基づく開示請求）"
    for clause in ("山形市 第9条1(5)", "第９条第１項第５号", "第9条第1項第5号"):
        assert circled_purpose(request("yamagata", purpose_clause=clause)) == "・第９条第１項第５号に基づくもの"
    assert circled_purpose(request("matsumoto")) is None


def test_a_purpose_the_form_has_no_box_for_is_refused() -> None:
    """山形市 第9条2: the 別記様式 is for 第9条1(1)(2)(5); identifying an extension (1(4)) needs none."""
    with pytest.raises(FormError, match="第9条1\\(4\\)"):
        request_pdf(request("yamagata", purpose_clause="山形市 第9条1(4)", wanted="copy"))


@pytest.mark.parametrize("form_set", ["kumamoto", "yamagata", "saitama"])
def test_a_form_for_copies_does_not_take_a_request_to_listen(form_set: str) -> None:
    with pytest.raises(FormError, match="wanted=listen"):
        request_pdf(request(form_set, wanted="listen"))


def test_fields_not_given_are_left_blank_for_the_hand(tmp_path: Path) -> None:
    bare = request("shinagawa", call_from=None, call_to=None, call_at_approx=None, duration_approx_seconds=None,
                   other_party_number="", city_side_number="", details="")
    text = text_of(request_pdf(bare), tmp_path)
    assert_in_order(text, "通話日時", "通話時間", "相手方電話番号", "区側電話番号", "利用目的")
    assert "頃" not in text and "約" not in text


# --- the answer forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("form_set", FORM_SETS)
def test_an_approval_lists_each_call_with_its_seal_and_the_erased_one_with_its_date(form_set: str,
                                                                                   tmp_path: Path) -> None:
    text = text_of(answer_pdf(answer(form_set, answer_number="管財発第34号")), tmp_path)
    seed = SEED[form_set]
    yes, _ = DECISION_WORDS.get(form_set, ("承認", "不承認"))
    assert_has(text, *seed["answer"], "令和8年3月10日", "管財発第34号", "管財課長　熊本 一郎", "総務局総務課",
               yes, "有", "無", CALL_DATE.get(form_set, "令和8年3月5日"), "5分5秒", "1分2秒", "0963282111",
               "0963282112", "23456", "23457", "着信", "発信", KEPT.record_id, ERASED.record_id, SHA_KEPT, SHA_ERASED,
               "2026年3月6日に消去済み（保存期間満了）", "K2026-0007", "令和9年3月31日", "目的外に利用しないこと。",
               FINGERPRINT, *seed.get("answer_calls", ()))
    *calls, decision = seed["answer_order"]
    assert_in_order(text, *calls, "SHA-256", "SHA-256", "消去", decision, "フィンガープリント")
    assert "該当データなし" not in text


@pytest.mark.parametrize("form_set", FORM_SETS)
def test_a_refusal_says_so_with_its_reason_and_no_copy(form_set: str, tmp_path: Path) -> None:
    text = text_of(answer_pdf(answer(form_set, "refused")), tmp_path)
    _, no = DECISION_WORDS.get(form_set, ("承認", "不承認"))
    assert_has(text, *SEED[form_set]["answer"], no, "理由", "申請の目的が第5条各号に該当しないため", SHA_KEPT)
    assert FINGERPRINT not in text and "K2026-0007" not in text and "フィンガープリント" not in text


@pytest.mark.parametrize("form_set", FORM_SETS)
def test_no_data_is_printed_as_such(form_set: str, tmp_path: Path) -> None:
    form = answer(form_set, "refused", calls=(), decision_reason="申請された通話録音データが保存されていないため")
    text = text_of(answer_pdf(form), tmp_path)
    assert_has(text, *SEED[form_set]["answer"], "該当データなし", "申請された通話録音データが保存されていないため")
    assert "SHA-256" not in text


def test_a_long_answer_numbers_its_pages_and_a_short_form_does_not(tmp_path: Path) -> None:
    long = text_of(answer_pdf(answer("kumamoto")), tmp_path)
    short = text_of(request_pdf(request("kumamoto")), tmp_path)
    assert "1/2" in long and "2/2" in long
    assert "1/1" not in short


def test_forms_are_a4(tmp_path: Path) -> None:
    path = tmp_path / "form.pdf"
    path.write_bytes(answer_pdf(answer("kumamoto")))
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+595\.\d+ x 841\.\d+ pts \(A4\)", info)


# --- what the forms refuse ----------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: replace(request("kumamoto"), form_set="osaka"),
    lambda: request("kumamoto", wanted="delete"),
    lambda: request("kumamoto", call_from=datetime(2026, 3, 6, tzinfo=JST)),
    lambda: answer("kumamoto", "refused", decision_reason=""),
    lambda: answer("kumamoto", "maybe"),
    lambda: answer("kumamoto", "refused", copy_numbers=("K1",)),
    lambda: FormCall("c1", "2026-03-05T14:08:31", 1.0, "inbound", "1", "2", SHA_KEPT),
    lambda: FormCall("c1", "2026-03-05T14:08:31+09:00", 1.0, "sideways", "1", "2", SHA_KEPT),
    lambda: FormCall("c1", "yesterday", 1.0, "inbound", "1", "2", SHA_KEPT),
])
def test_inputs_a_form_cannot_print_are_refused(make: object) -> None:
    with pytest.raises(FormError):
        make()  # type: ignore[operator]


def test_missing_fonts_name_the_package_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(forms, "_MINCHO", tmp_path / "ipaexm.ttf")
    with pytest.raises(FormError, match="fonts-ipaexfont") as caught:
        request_pdf(request("kumamoto"))
    assert isinstance(caught.value, AccessError)


# --- the 通話記録管理簿 -------------------------------------------------------------------------

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=JST)


def ledger_entries(tmp_path: Path, count: int) -> list[LedgerEntry]:
    ledger = Ledger.in_data_dir(tmp_path, MasterKey(bytes(range(1, 33))).derive(KEY_LABEL))
    events = [Event.ERASURE, Event.HOLD_ADDED, Event.AUDIO_ACCESS, Event.VERIFICATION, Event.POLICY_CHANGED]
    for n in range(count):
        ledger.append(events[n % len(events)], "人事課 山田" if n % 2 else "tanaka", T0 + timedelta(hours=n),
                      reason=f"苦情対応 {n}" if n % 3 else None, approved_by="人事課長" if n % 4 == 0 else None,
                      role="管理取扱者", call_id=f"c-{n:04d}", count=n)
    return list(ledger.entries())


def test_every_ledger_event_has_a_japanese_name() -> None:
    assert set(Event) | set(AccessEvent) | set(ArchiveEvent) | set(MarkEvent) <= set(EVENT_LABELS)
    assert set(SiteEvent) <= set(EVENT_LABELS)
    assert EVENT_LABELS[Event.ERASURE] == "消去" and EVENT_LABELS[Event.HOLD_ADDED] == "保存延長（法的保全）"


def test_ledger_rows_are_in_japanese_with_the_role_in_its_column(tmp_path: Path) -> None:
    entries = ledger_entries(tmp_path, 3)
    odd = LedgerEntry(seq=4, at=T0, event="copy_provided", actor="callrec", reason=None, approved_by=None,
                      details={"copy": "K1"}, prev="0" * 64, mac="0" * 64)
    rows = ledger_book_rows([*entries, odd])
    assert rows[0] == ("1", "令和8年3月5日 09:00:00", "消去", "tanaka", "管理取扱者", "", "人事課長",
                       "call_id: c-0000、count: 0")
    assert rows[1][2:6] == ("保存延長（法的保全）", "人事課 山田", "管理取扱者", "苦情対応 1")
    assert rows[3] == ("4", "令和8年3月5日 09:00:00", "copy_provided", "callrec", "", "", "", "copy: K1")


def test_the_ledger_csv_opens_in_excel_and_round_trips(tmp_path: Path) -> None:
    entries = ledger_entries(tmp_path, 5)
    data = ledger_book_csv(entries)
    assert data.startswith(b"\xef\xbb\xbf")
    read = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert tuple(read[0]) == LEDGER_COLUMNS == ("番号", "日時", "事項", "担当者", "役割", "理由", "承認者", "内容")
    assert [tuple(row) for row in read[1:]] == ledger_book_rows(entries)


def test_the_ledger_book_pdf_has_every_entry_on_numbered_landscape_pages(tmp_path: Path) -> None:
    entries = ledger_entries(tmp_path, 45)
    path = tmp_path / "book.pdf"
    path.write_bytes(ledger_book_pdf(entries, organisation="松本市"))
    layout = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                            check=True).stdout
    seqs = {int(m) for m in re.findall(r"^\s*(\d+)\s+令和", layout, flags=re.MULTILINE)}
    assert seqs == set(range(1, 46))
    pages = layout.count("\f")
    assert pages >= 2
    assert all(f"{n}/{pages}" in squeeze(layout) for n in range(1, pages + 1))
    assert layout.count("承認者") == pages
    assert_has(squeeze(layout), "通話記録管理簿", "松本市", "完全性検査", "運用方針の変更")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+841\.\d+ x 595\.\d+ pts \(A4\)", info)
