"""The paper side of a request: each organisation's request and answer forms, and the
通話記録管理簿 as a book an auditor can read without callrec.

Why paper: every guideline runs a copy through written forms (熊本市 第6条 様式第1号・第2号,
山形市 第9条2 別記様式, さいたま 第5条 様式第1号・第2号), and 松本市 第10条 wants the handling
recorded in a 管理簿.  The forms are reproduced as the guidelines print them (titles, labels and
their order, addressee lines, 和暦 dates); 品川区 and 松本市 print none, so they get a plain
依頼書 and 決定通知書 with the same fields, and さいたま's 様式第1号 (not printed in its guideline)
follows its 様式第2号.  What differs between organisations is data (`_FORM_SETS`); one renderer
draws every form, so a correction to the drawing reaches all of them.

Text is IPAex Mincho (as official documents are set) with IPAex Gothic for titles, on A4, from
Debian's `fonts-ipaexfont`.
"""
from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from fpdf import FPDF
from fpdf.fonts import FontFace

from storage.archive import ArchiveEvent
from storage.ledger import Event, LedgerEntry
from storage.marks import MarkEvent
from storage.warnings import WarningEvent

from .errors import FormError
from .requests import AccessEvent
from .site_desk import SiteEvent

__all__ = ["EVENT_LABELS", "FORM_SETS", "LEDGER_COLUMNS", "AnswerForm", "FormCall", "RequestForm", "answer_pdf",
           "circled_purpose", "japanese_date", "ledger_book_csv", "ledger_book_pdf", "ledger_book_rows",
           "minutes_seconds", "request_pdf", "table_pdf"]

_FormSetName = Literal["shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama"]
_WantedName = Literal["listen", "copy", "extension_only"]
_DecisionName = Literal["approved", "refused"]

FORM_SETS: tuple[str, ...] = ("shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama")
_WANTED = ("listen", "copy", "extension_only")
_DIRECTIONS = {"inbound": "着信", "outbound": "発信", "internal": "内線", "unknown": "不明"}

_MINCHO = Path("/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf")
_GOTHIC = Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf")
_BODY = 10.5
"""Body text in points: 10.5 pt, the size Japanese official documents are set in."""
_MIN_FIT = 6.0
_MARGIN = 18.0
_PAD = 1.5
_VPAD = 1.0

EVENT_LABELS: dict[str, str] = {
    Event.ERASURE: "消去",
    Event.HOLD_ADDED: "保存延長（法的保全）",
    Event.HOLD_RELEASED: "保存延長の解除",
    Event.POLICY_CHANGED: "運用方針の変更",
    Event.VERIFICATION: "完全性検査",
    Event.MINIMUM_PERIOD_BREACH: "最低保存期間内の消去",
    Event.WIPE: "全消去",
    Event.AUDIO_ACCESS: "再生・出力",
    Event.CAPACITY_WARNING: "容量不足の警告",
    Event.EXPORT: "複製データの作成",
    ArchiveEvent.MEDIUM: "保管用媒体の準備",
    ArchiveEvent.MOVE: "保管用媒体への移動",
    AccessEvent.REQUEST_FILED: "閲覧等の申請",
    AccessEvent.REQUEST_APPROVED: "申請の承認",
    AccessEvent.REQUEST_REFUSED: "申請の不承認",
    AccessEvent.REQUEST_INSTRUCTED: "取扱者への指示",
    AccessEvent.REQUEST_FULFILLED: "申請への対応",
    AccessEvent.REQUEST_CLOSED: "申請の完了",
    AccessEvent.COPY_MADE: "複製の作成",
    AccessEvent.COPY_DISPOSED: "複製の廃棄",
    AccessEvent.COPY_DOWNLOADED: "複製の受領",
    AccessEvent.LISTENED: "再生",
    AccessEvent.EXTENSION_DISCLOSED: "内線番号の開示",
    AccessEvent.WITHHELD_NUMBER_DISCLOSED: "非通知番号の開示",
    AccessEvent.USER_ADDED: "利用者の登録",
    AccessEvent.USER_DISABLED: "利用者の停止",
    AccessEvent.PASSWORD_CHANGED: "パスワードの変更",
    AccessEvent.ABSENCE_CHANGED: "不在・代理の変更",
    AccessEvent.LOGIN: "ログイン",
    AccessEvent.LOGOUT: "ログアウト",
    AccessEvent.LOGIN_FAILED: "ログイン失敗",
    AccessEvent.ACCOUNT_LOCKED: "アカウントの停止（連続失敗）",
    AccessEvent.REFUSED_ACTION: "権限のない操作の拒否",
    AccessEvent.RECORDING_STARTED: "手動録音の開始",
    SiteEvent.ENROLLED: "拠点の登録（証明書の受領）",
    SiteEvent.REVOCATIONS_UPDATED: "失効リストの更新",
    SiteEvent.GRANT_USED: "センターの許可による提供",
    SiteEvent.GRANT_REFUSED: "センターの許可の拒否",
    SiteEvent.CONNECTION_REFUSED: "拠点への接続の拒否",
    SiteEvent.CONNECTIONS_REFUSED_MORE: "拠点への接続の拒否（まとめ）",
    SiteEvent.FETCH_CUT_SHORT: "提供の中断",
    SiteEvent.HOLD_ORDER_REFUSED: "保存延長指示の拒否",
    SiteEvent.HOLD_ORDER_ALREADY: "保存延長指示（適用済み）",
    MarkEvent.MARKED: "カスハラ通話の記録（証拠保全）",
    MarkEvent.WITHDRAWN: "カスハラ記録の取消し",
    MarkEvent.HOLD_RELEASED: "証拠保全の解除",
    MarkEvent.HOLD_EXPIRED: "証拠保全期間の満了",
    WarningEvent.CLEARED: "警告対象番号の解除",
}
"""The ledger's event names as the 管理簿 prints them: every event anyone appends (a test holds it),
so an auditor reading the book never meets an English identifier."""

LEDGER_COLUMNS = ("番号", "日時", "事項", "担当者", "役割", "理由", "承認者", "内容")


# --- what the caller fills in -------------------------------------------------------------------

def _moment(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FormError(f"{what} {text!r} is not an ISO 8601 time") from None
    if moment.utcoffset() is None:
        raise FormError(f"{what} {text!r} has no UTC offset; the index stores times with the site's offset")
    return moment


@dataclass(frozen=True)
class FormCall:
    """One call as an answer form reports it, from the index row (times as stored, with offset)."""

    record_id: str
    started_at: str
    duration_seconds: float | None
    direction: str
    remote_number: str | None
    local_number: str | None
    sha256: str
    erased_at: str | None = None
    erased_reason: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise FormError(f"direction {self.direction!r} is not one of {', '.join(_DIRECTIONS)}")
        _moment(self.started_at, "started_at")
        if self.erased_at is not None:
            _moment(self.erased_at, "erased_at")


@dataclass(frozen=True)
class RequestForm:
    """A request as its organisation's form asks it.  The search fields are approximate, as the
    requester remembers the call: さいたま asks for a period (call_from–call_to), the others for a
    time and a duration "about" (頃, 約)."""

    form_set: _FormSetName
    request_number: str
    requested_on: date
    requester_name: str
    requester_department: str
    requester_contact: str
    purpose_label: str
    purpose_clause: str
    wanted: _WantedName
    call_from: datetime | None = None
    call_to: datetime | None = None
    call_at_approx: datetime | None = None
    duration_approx_seconds: int | None = None
    other_party_number: str = ""
    city_side_number: str = ""
    details: str = ""
    addressee: str = ""
    """Whom the form is addressed to; empty: the manager the guideline names (e.g. 管財課長)."""

    def __post_init__(self) -> None:
        if self.form_set not in FORM_SETS:
            raise FormError(f"form set {self.form_set!r} is not one of {', '.join(FORM_SETS)}")
        if self.wanted not in _WANTED:
            raise FormError(f"wanted {self.wanted!r} is not one of {', '.join(_WANTED)}")
        if self.call_from and self.call_to and self.call_from > self.call_to:
            raise FormError("call_from is after call_to")
        if self.duration_approx_seconds is not None and self.duration_approx_seconds < 0:
            raise FormError("duration_approx_seconds is negative")


@dataclass(frozen=True)
class AnswerForm:
    """The decision on a request, with the calls provided (erased ones included, so the answer
    says when and why they went) and what the recipient needs to keep and check the copy."""

    request: RequestForm
    decision: _DecisionName
    decided_on: date
    decided_by: str
    decision_reason: str = ""
    calls: tuple[FormCall, ...] = ()
    copy_numbers: tuple[str, ...] = ()
    disposal_deadline: date | None = None
    recipient_conditions: str = ""
    signing_key_fingerprint: str | None = None
    answer_number: str = ""
    """The answer's own document number (熊本市 様式第2号 管財発第 号); empty: none printed."""

    def __post_init__(self) -> None:
        if self.decision not in ("approved", "refused"):
            raise FormError(f"decision {self.decision!r} is neither approved nor refused")
        if self.decision == "refused" and not self.decision_reason.strip():
            raise FormError("a refusal states its reason (熊本市 第6条2: 交付しない旨を通知)")
        if self.decision == "refused" and self.copy_numbers:
            raise FormError("a refused request has no copies")


# --- dates, times, durations --------------------------------------------------------------------

_ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"))
_WEEKDAYS = "月火水木金土日"


def japanese_date(day: date, *, western: bool = False, weekday: bool = False) -> str:
    """令和8年3月5日 (令和元年 for its first year); `western` adds （2026年） as 熊本市 prints it,
    `weekday` adds （木） as さいたま does."""
    if isinstance(day, datetime):
        day = day.date()
    for start, era in _ERAS:
        if day >= start:
            year = day.year - start.year + 1
            text = f"{era}{'元' if year == 1 else year}年"
            text += f"（{day.year}年）" if western else ""
            text += f"{day.month}月{day.day}日"
            return text + (f"（{_WEEKDAYS[day.weekday()]}）" if weekday else "")
    raise FormError(f"{day.isoformat()} is before 平成; the forms print 令和 and 平成 dates only")


def minutes_seconds(seconds: float) -> str:
    """3分5秒: how the forms give a duration (minutes keep counting past an hour)."""
    total = round(seconds)
    return f"{total // 60}分{total % 60}秒"


def _clock(moment: datetime) -> str:
    return f"{moment.hour}時{moment.minute:02d}分"


# --- the forms of each organisation -------------------------------------------------------------

_CALL_KEYS = frozenset({"date", "time", "when", "period", "duration", "other", "city"})
_ANSWER_TAIL = ("direction", "record", "sha256", "erased?")
"""What every answer adds to the seed's call fields: the direction, callrec's id, the sealed
SHA-256 the copy must match, and when and why a call was erased."""

_LABELS: dict[str, str] = {
    "date": "日付", "time": "時間", "when": "通話日時", "period": "通話日時", "duration": "通話時間",
    "other": "相手方電話番号", "city": "市側電話番号\n（内線番号）", "purpose": "利用目的",
    "wanted": "希望する取扱い", "remarks": "備考", "direction": "発着信の別", "record": "記録番号",
    "sha256": "SHA-256", "erased": "消去", "existence": "該当する通話記録の有無", "summary": "通話記録の概要",
    "decision": "決定", "reason": "理由", "handling": "提供する通話記録の取扱い", "copies": "複製番号",
    "deadline": "廃棄期限", "conditions": "遵守事項", "fingerprint": "署名鍵の\nフィンガープリント",
}
"""Row labels of the plain forms; a form set overrides those its guideline words otherwise."""


@dataclass(frozen=True)
class _Option:
    """A box to circle (〇を付ける) and what selects it: clause references such as (9, 1, 1) for
    第9条第1項第1号, or words in the purpose; neither: the catch-all その他, whose text holds
    the purpose in its {}."""

    text: str
    clauses: tuple[tuple[int, int | None, int | None], ...] = ()
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class _FormSet:
    """One organisation's forms: wording, field order and labels.  Keys ending in "?" are rows
    printed only when they have a value; the answer's call rows follow the request's."""

    organisation: str
    request_title: str
    request_lead: str
    answer_title: str
    answer_lead: str
    addressee: str
    request_style: str = ""
    answer_style: str = ""
    addressee_format: str = "{}　様"
    requester_caption: str = ""
    """Printed under the requester (熊本市: （申請課（室）の長）)."""
    number_format: str = "依頼番号　{}"
    title_first: bool = False
    """山形市 prints the title above the addressee, the others below the sender."""
    request_fields: tuple[str, ...] = ("when", "duration", "other", "city", "purpose", "wanted", "remarks?")
    boxed: bool = True
    """False: the request's fields are a numbered list without rules (さいたま 様式第2号)."""
    item_format: str = "{} "
    request_group: str = ""
    """The left column spanning the call's fields (熊本市: 電話録音データの内容)."""
    answer_group: str = "通話記録"
    western_year: bool = False
    weekday: bool = False
    purpose_options: tuple[_Option, ...] = ()
    purpose_notes: tuple[str, ...] = ()
    request_notes: tuple[str, ...] = ()
    contact_caption: str = ""
    """Where set, the requester's contact stands at the foot under it (熊本市: 申請担当者);
    otherwise it is a line of the sender's block."""
    answer_sender_caption: str = ""
    answer_echo: bool = False
    """The answer repeats the request's call fields first (さいたま 様式第2号 1–3)."""
    decision_words: tuple[str, str] = ("承認", "不承認")
    inquiry: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, key: str) -> str:
        return self.labels.get(key, _LABELS[key])


def _decision_lead(subject: str, rule: str) -> str:
    """The opening of a plain 決定通知書: which request, under which clause, decided as below."""
    return (f"{{date}}付け（依頼番号{{number}}）で依頼のあった{subject}について、{rule}の規定により、"
            "下記のとおり決定しましたので通知します。")


def _plain(organisation: str, guideline: str, article: int, subject: str, title: str, addressee: str,
           **more: Any) -> _FormSet:
    """A plain 依頼書 and 決定通知書 for an organisation whose guideline prints no form: the
    request under the article's first paragraph (its listed uses), the decision under the article."""
    return _FormSet(organisation=organisation, addressee=addressee, request_title=f"{title}依頼書",
                    request_lead=f"{guideline}第{article}条第1項の規定により、下記の{subject}について依頼します。",
                    answer_title=f"{title}決定通知書", answer_lead=_decision_lead(subject, f"{guideline}第{article}条"),
                    **more)


_FORM_SETS: dict[str, _FormSet] = {
    "kumamoto": _FormSet(
        organisation="熊本市",
        request_style="様式第1号（第6条関係）",
        request_title="電話録音データ取出し申請書",
        request_lead="下記のとおり申請しますので、対応をお願いします。",
        answer_style="様式第2号（第6条関係）",
        answer_title="電話録音データ取出し回答書",
        answer_lead="{date}付{number}で申請のあったことについて、下記のとおり回答します。",
        addressee="管財課長",
        requester_caption="（申請課（室）の長）",
        number_format="{}",
        request_fields=("date", "time", "duration", "other", "city", "purpose", "remarks?"),
        item_format="{}. ",
        request_group="電話録音データの\n内容",
        answer_group="電話録音データの\n概要",
        western_year=True,
        purpose_options=(
            _Option("1 クレーム、カスハラ対応", words=("クレーム", "カスハラ", "ハラスメント", "苦情")),
            _Option("2 対応内容確認", words=("対応内容", "内容確認")),
            _Option("3 外部機関対応", words=("外部機関", "警察", "捜査", "弁護士", "裁判")),
            _Option("4 その他（{}）"),
        ),
        request_notes=("※データ受領後は、総合文書管理システム上に保存し、公文書として適正に取り扱います。",),
        contact_caption="申請担当者",
        decision_words=("交付する", "交付しない"),
        inquiry=("問合せ先", "総務局管財課"),
        labels={"purpose": "利用目的\n（最も近いもの\n1つに〇付け）", "city": "市側電話番号",
                "existence": "音声データの有無", "summary": "音声データ概要", "decision": "複製データの交付",
                "handling": "交付する複製データ"},
    ),
    "yamagata": _FormSet(
        organisation="山形市",
        request_style="別記様式（第９条関係）",
        request_title="通話録音データ提供依頼書",
        request_lead="下記の通話記録の内容を確認したいので、通話録音データの複製物の提供を依頼します。",
        answer_title="通話録音データ提供決定通知書",
        answer_lead=_decision_lead("通話録音データの複製物の提供",
                                   "山形市本庁舎内における通話録音装置等の設置及び管理運用に関する要綱第９条第３項"),
        addressee="資産マネジメント課長",
        addressee_format="（宛先）管理責任者\n{}",
        title_first=True,
        request_fields=("when", "duration", "other", "city", "purpose", "remarks"),
        purpose_options=(
            _Option("・第９条第１項第１号に基づくもの", clauses=((9, 1, 1),)),
            _Option("・第９条第１項第２号に基づくもの", clauses=((9, 1, 2),)),
            _Option("・第９条第１項第５号に基づくもの", clauses=((9, 1, 5),)),
        ),
        purpose_notes=("※該当するものに〇を付けること。",),
        decision_words=("提供する", "提供しない"),
        labels={"other": "相手先電話番号", "city": "通話内線番号", "handling": "提供する複製物",
                "decision": "複製物の提供", "copies": "複製物の番号"},
    ),
    "saitama": _FormSet(
        organisation="さいたまコールセンター",
        request_style="様式第1号（第5条関係）",
        request_title="通話出力データ作成指示書",
        request_lead=("さいたまコールセンター通話録音装置等の運用に関する取扱要領第5条第1項の規定に基づき、"
                      "次のとおり出力データの作成を指示します。"),
        answer_style="様式第2号（第5条関係）",
        answer_title="出力データ提出書",
        answer_lead=("{date}付けで指示のあった件について、さいたまコールセンター通話録音装置等の運用に関する"
                     "取扱要領第5条第2項の規定に基づき、次のとおり提出します。"),
        addressee="運営受託者",
        requester_caption="運用責任者",
        number_format="指示番号　{}",
        request_fields=("period", "city", "other", "duration?", "purpose", "remarks?"),
        boxed=False,
        answer_group="出力データ",
        weekday=True,
        answer_sender_caption="運営受託者",
        answer_echo=True,
        decision_words=("作成した", "作成しなかった"),
        labels={"city": "市役所側電話番号", "other": "通話相手方電話番号", "existence": "出力データの有無",
                "summary": "出力データの概要", "decision": "出力データの作成", "handling": "出力データの取扱い",
                "copies": "出力データの番号", "deadline": "保存期限"},
    ),
    "matsumoto": _plain("松本市", "松本市庁舎における通話録音装置の管理及び運用に関する要綱", 8, "通話記録",
                        "通話記録提供", "通話録音装置管理責任者（人事課長）"),
    "shinagawa": _plain("品川区", "品川区通話録音装置の設置および運用に関する要綱", 7, "通話録音データ",
                        "通話録音データ複製", "通話録音装置管理責任者",
                        labels={"city": "区側電話番号\n（内線番号）", "handling": "複製データの取扱い",
                                "copies": "複製データの番号"}),
}


def _form_set(name: str) -> _FormSet:
    if name not in _FORM_SETS:
        raise FormError(f"form set {name!r} is not one of {', '.join(FORM_SETS)}")
    return _FORM_SETS[name]


# --- what a page holds: paragraphs, tables of label and value, boxes to circle -----------------

@dataclass(frozen=True)
class _Choice:
    """Options printed side by side (inline) or one a line, the chosen one circled."""

    options: tuple[str, ...]
    chosen: int | None
    inline: bool = False


_Item = str | _Choice


@dataclass(frozen=True)
class _Row:
    label: str
    items: tuple[_Item, ...]
    group: str = ""
    """A first column spanning consecutive rows of the same group; a row with a group and no
    label has its value start under the label column (熊本市's 利用目的)."""


@dataclass(frozen=True)
class _Table:
    rows: tuple[_Row, ...]
    boxed: bool = True


@dataclass(frozen=True)
class _Para:
    text: str
    align: str = "L"
    heading: bool = False
    size: float = _BODY
    gap: float = 1.5
    keep: float = 0.0
    """Room to leave below it on the page (a heading stays with its table)."""


_Block = _Para | _Table


# --- the request --------------------------------------------------------------------------------

def _approx_moment(form: RequestForm) -> datetime | None:
    return form.call_at_approx or form.call_from


def _approx_when(form: RequestForm, fs: _FormSet) -> tuple[str, ...]:
    moment = _approx_moment(form)
    if moment is None:
        return ()
    return (f"{_date(moment, fs)}　{_clock(moment)}頃",)


def _period(form: RequestForm, fs: _FormSet) -> tuple[str, ...]:
    if form.call_from is None or form.call_to is None:
        return _approx_when(form, fs)
    return (f"{_date(form.call_from, fs)}　{_clock(form.call_from)}頃から",
            f"{_date(form.call_to, fs)}　{_clock(form.call_to)}頃まで")


def _date(moment: date, fs: _FormSet) -> str:
    return japanese_date(moment, western=fs.western_year, weekday=fs.weekday)


def _approx_duration(form: RequestForm) -> tuple[str, ...]:
    seconds = form.duration_approx_seconds
    if seconds is None:
        return ()
    minutes, rest = divmod(seconds, 60)
    return (f"約{minutes}分" + (f"{rest}秒" if rest else ""),)


def _clause_refs(text: str) -> set[tuple[int, int | None, int | None]]:
    """(article, paragraph, item) for each reference in a clause however it is written:
    第9条第1項第1号, 第９条第１項第１号, 第9条1(1); 第5条(1) is paragraph 1."""
    refs = set()
    pattern = r"第(\d+)条(?:第(\d+)項|(\d+)(?!号))?(?:\((\d+)\)|第(\d+)号)?"
    for art, para1, para2, item1, item2 in re.findall(pattern, unicodedata.normalize("NFKC", text)):
        para, item = para1 or para2, item1 or item2
        refs.add((int(art), int(para) if para else (1 if item else None), int(item) if item else None))
    return refs


def _chosen_option(form: RequestForm, fs: _FormSet) -> int:
    refs = _clause_refs(form.purpose_clause)
    for text in (form.purpose_label, form.details):
        for index, option in enumerate(fs.purpose_options):
            if set(option.clauses) & refs or any(word in text for word in option.words):
                return index
    catch_all = [i for i, o in enumerate(fs.purpose_options) if not o.clauses and not o.words]
    if not catch_all:
        allowed = "、".join(o.text.lstrip("・") for o in fs.purpose_options)
        raise FormError(f"{fs.organisation}の「{fs.request_title}」は {allowed} の依頼の様式です。"
                        f"利用目的 {form.purpose_clause}（{form.purpose_label}）はこの様式では依頼できません")
    return catch_all[0]


def _purpose(form: RequestForm, fs: _FormSet) -> tuple[_Item, ...]:
    """The purpose as the form asks it: a box circled among the guideline's (with the purpose and
    clause beneath, for the manager's review), or written out where the form has no boxes."""
    if not fs.purpose_options:
        return (form.purpose_label, f"（{form.purpose_clause}）", *fs.purpose_notes)
    boxes = _purpose_boxes(form, fs)
    said = form.purpose_label in boxes.options[boxes.chosen or 0]
    note = f"（{form.purpose_clause}）" if said else f"{form.purpose_label}（{form.purpose_clause}）"
    return (boxes, note, *fs.purpose_notes)


def _purpose_boxes(form: RequestForm, fs: _FormSet) -> _Choice:
    """The form's purpose boxes, the chosen one circled; その他's parentheses hold the purpose
    when it is the one chosen and are left open for the hand otherwise."""
    chosen = _chosen_option(form, fs)
    return _Choice(tuple(o.text.format(form.purpose_label if i == chosen else "　" * 6)
                         for i, o in enumerate(fs.purpose_options)), chosen)


def circled_purpose(form: RequestForm) -> str | None:
    """The purpose box the request form circles (熊本市 様式第1号's category, 山形市 別記様式's
    clause), so a screen can show it before printing; None where the form has no boxes.  Raises
    FormError for a purpose the form cannot take."""
    fs = _form_set(form.form_set)
    if not fs.purpose_options:
        return None
    boxes = _purpose_boxes(form, fs)
    return boxes.options[boxes.chosen or 0]


_WANTED_TEXT = ("再生（聴取）", "複製", "内線番号の特定のみ")

_REQUEST_VALUES: dict[str, Callable[[RequestForm, _FormSet], tuple[_Item, ...]]] = {
    "date": lambda f, fs: (_date(m, fs),) if (m := _approx_moment(f)) else (),
    "time": lambda f, fs: (_clock(m),) if (m := _approx_moment(f)) else (),
    "when": _approx_when,
    "period": _period,
    "duration": lambda f, fs: _approx_duration(f),
    "other": lambda f, fs: (f.other_party_number,) if f.other_party_number else (),
    "city": lambda f, fs: (f.city_side_number,) if f.city_side_number else (),
    "purpose": _purpose,
    "wanted": lambda f, fs: (_Choice(_WANTED_TEXT, _WANTED.index(f.wanted), inline=True),),
    "remarks": lambda f, fs: (f.details,) if f.details else (),
}


_OWN_GROUP = frozenset({"purpose", "wanted", "remarks"})
"""Rows that, in a table with a group column, put their label in that column (熊本市 様式第1号)."""


def _rows(keys: Iterable[str], values: Callable[[str], tuple[_Item, ...]], fs: _FormSet, group: str = "",
          numbered: int = 0) -> tuple[_Row, ...]:
    """Rows for `keys` in order; a key ending in "?" only when it has a value, any other left
    blank to be filled in by hand.  With a group, the call's rows sit under it; `numbered` starts
    a numbered list (1 通話日時, 2 …) at that number."""
    rows = []
    for key in keys:
        name = key.rstrip("?")
        items = values(name)
        if key.endswith("?") and not items:
            continue
        label = fs.label(name)
        if numbered:
            label = fs.item_format.format(numbered + len(rows)) + label
        if group and name in _OWN_GROUP:
            rows.append(_Row("", items, group=label))
        else:
            rows.append(_Row(label, items or ("",), group=group))
    return tuple(rows)


def _check_wanted(form: RequestForm, fs: _FormSet) -> None:
    if "wanted" not in fs.request_fields and form.wanted != "copy":
        raise FormError(f"{fs.organisation}の「{fs.request_title}」は複製（出力）の依頼の様式です。"
                        f"wanted={form.wanted} の依頼はこの様式では出せません")


def _requester(form: RequestForm) -> str:
    return "　".join(part for part in (form.requester_department, form.requester_name) if part)


def _request_blocks(form: RequestForm, fs: _FormSet) -> list[_Block]:
    _check_wanted(form, fs)
    sender = [_requester(form), fs.requester_caption]
    if not fs.contact_caption:
        sender.append(f"連絡先　{form.requester_contact}")
    heading = [_Para(fs.request_title, "C", heading=True, size=16, gap=5)]
    address = [_Para(fs.addressee_format.format(form.addressee or fs.addressee), gap=2),
               _Para("\n".join(s for s in sender if s), "R", gap=4)]
    numbered = 0 if fs.boxed else 1
    rows = _rows(fs.request_fields, lambda key: _REQUEST_VALUES[key](form, fs), fs, fs.request_group, numbered)
    blocks: list[_Block] = [
        _Para(fs.request_style, size=9, gap=1),
        _Para(f"{fs.number_format.format(form.request_number)}\n{japanese_date(form.requested_on)}", "R", gap=4),
        *(heading + address if fs.title_first else address + heading),
        _Para(fs.request_lead, gap=3),
        _Para("記", "C", gap=3),
        _Table(rows, boxed=fs.boxed),
        *(_Para(note, size=9, gap=1) for note in fs.request_notes),
    ]
    if fs.contact_caption:
        blocks.append(_Para(f"{fs.contact_caption}\n{form.requester_contact}", "R", gap=2))
    return blocks


# --- the answer ---------------------------------------------------------------------------------

def _call_keys(fs: _FormSet) -> tuple[str, ...]:
    """The answer's call rows: the request's call fields (a period becomes the call's time),
    then what every answer adds."""
    keys = []
    for key in fs.request_fields:
        name = key.rstrip("?")
        if name in _CALL_KEYS:
            keys.append("when" if name == "period" else name)
    return (*keys, *_ANSWER_TAIL)


def _erased(call: FormCall) -> tuple[str, ...]:
    if call.erased_at is None:
        return ()
    day = _moment(call.erased_at, "erased_at")
    reason = f"（{call.erased_reason}）" if call.erased_reason else ""
    return (f"{day.year}年{day.month}月{day.day}日に消去済み{reason}",)


def _call_values(call: FormCall, fs: _FormSet) -> Callable[[str], tuple[str, ...]]:
    start = _moment(call.started_at, "started_at")
    values = {
        "date": (_date(start, fs),),
        "time": (_clock(start),),
        "when": (f"{_date(start, fs)}　{_clock(start)}",),
        "duration": (minutes_seconds(call.duration_seconds) if call.duration_seconds is not None else "不明",),
        "other": (call.remote_number or "不明",),
        "city": (call.local_number or "不明",),
        "direction": (_DIRECTIONS[call.direction],),
        "record": (call.record_id,),
        "sha256": (call.sha256,),
        "erased": _erased(call),
    }
    return values.__getitem__


def _handling_values(form: AnswerForm) -> Callable[[str], tuple[str, ...]]:
    fingerprint = form.signing_key_fingerprint
    values = {
        "copies": ("、".join(form.copy_numbers),) if form.copy_numbers else (),
        "deadline": (japanese_date(form.disposal_deadline),) if form.disposal_deadline else (),
        "conditions": tuple(form.recipient_conditions.splitlines()),
        "fingerprint": (fingerprint, "（複製パッケージの署名をこの値で確かめてください）") if fingerprint else (),
    }
    return values.__getitem__


def _answer_body(form: AnswerForm, fs: _FormSet) -> list[_Block]:
    """The numbered items after 記: (さいたま: the instruction's fields,) whether data exists and
    each call, then the decision with its reason and what an approved copy comes with."""
    blocks: list[_Block] = []
    number = 1
    if fs.answer_echo:
        echo = [k for k in fs.request_fields if k.rstrip("?") in _CALL_KEYS]
        rows = _rows(echo, lambda key: _REQUEST_VALUES[key](form.request, fs), fs, numbered=number)
        blocks.append(_Table(rows, boxed=False))
        number += len(rows)
    return blocks + _answer_calls(form, fs, number) + _answer_decision(form, fs, number + 2)


def _answer_calls(form: AnswerForm, fs: _FormSet, number: int) -> list[_Block]:
    """Whether data exists (erased calls do not count) and one table per call, or 該当データなし."""
    exists = any(call.erased_at is None for call in form.calls)
    blocks: list[_Block] = [
        _Table((_Row(fs.item_format.format(number) + fs.label("existence"),
                     (_Choice(("有", "無"), 0 if exists else 1, inline=True),)),), boxed=False),
        _Para(fs.item_format.format(number + 1) + fs.label("summary"), gap=2, keep=40),
    ]
    keys = _call_keys(fs)
    for index, call in enumerate(form.calls, 1):
        group = fs.answer_group + (f"\n（{index}）" if len(form.calls) > 1 else "")
        blocks.append(_Table(_rows(keys, _call_values(call, fs), fs, group)))
    if not form.calls:
        blocks.append(_Para("　該当データなし", gap=3))
    return blocks


def _answer_decision(form: AnswerForm, fs: _FormSet, number: int) -> list[_Block]:
    """The decision circled, its reason, and for an approval the copy's numbers, deadline, the
    recipient's conditions and the key that signed the package."""
    decision = _Choice(fs.decision_words, 0 if form.decision == "approved" else 1, inline=True)
    rows = [_Row(fs.item_format.format(number) + fs.label("decision"), (decision,))]
    if form.decision_reason:
        rows.append(_Row(fs.label("reason"), (form.decision_reason,)))
    blocks: list[_Block] = [_Table(tuple(rows), boxed=False)]
    handling = _rows(("copies?", "deadline?", "conditions?", "fingerprint?"), _handling_values(form), fs)
    if form.decision == "approved" and handling:
        blocks.append(_Para(fs.item_format.format(number + 1) + fs.label("handling"), gap=2, keep=30))
        blocks.append(_Table(handling))
    return blocks


def _answer_blocks(form: AnswerForm, fs: _FormSet) -> list[_Block]:
    request = form.request
    numbers = form.answer_number + "\n" if form.answer_number else ""
    requested = japanese_date(request.requested_on, western=fs.western_year)
    return [
        _Para(fs.answer_style, size=9, gap=1),
        _Para(f"{numbers}{japanese_date(form.decided_on)}", "R", gap=4),
        _Para("\n".join(s for s in (f"{_requester(request)}　様", fs.requester_caption) if s), gap=2),
        _Para("\n".join(s for s in (fs.answer_sender_caption, form.decided_by) if s), "R", gap=4),
        _Para(fs.answer_title, "C", heading=True, size=16, gap=5),
        _Para(fs.answer_lead.format(date=requested, number=request.request_number), gap=3),
        _Para("記", "C", gap=3),
        *_answer_body(form, fs),
        _Para("以上", "R", gap=3),
        *([_Para("\n".join(fs.inquiry), "R")] if fs.inquiry else []),
    ]


# --- drawing ------------------------------------------------------------------------------------

_KINSOKU = "、。，．）」』・"
"""Characters a line may not start with (禁則): they hang on the line before."""


def _new_pdf(orientation: str = "P") -> FPDF:
    missing = [str(path) for path in (_MINCHO, _GOTHIC) if not path.is_file()]
    if missing:
        raise FormError(f"the IPAex fonts are missing ({', '.join(missing)}); install the Debian package "
                        "fonts-ipaexfont (apt-get install fonts-ipaexfont)")
    pdf = FPDF(orientation=orientation, unit="mm", format="A4")
    pdf.add_font("mincho", "", str(_MINCHO))
    pdf.add_font("gothic", "", str(_GOTHIC))
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(False)
    pdf.set_creator("callrec")
    pdf.set_line_width(0.3)
    pdf.add_page()
    return pdf


def _line_height(size: float) -> float:
    return size * 0.3528 * 1.4


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """Lines of at most `width`, broken between any two characters as Japanese is, except
    before the punctuation that may not start a line."""
    lines: list[str] = []
    for part in text.split("\n"):
        line = ""
        for char in part:
            if line and char not in _KINSOKU and pdf.get_string_width(line + char) > width:
                lines.append(line)
                line = ""
            line += char
        lines.append(line)
    return lines


def _fit_size(pdf: FPDF, text: str, width: float) -> float:
    """A font size at which a token that must not break (a hash, a fingerprint) fits on one line;
    the body size for anything else."""
    if not text.isascii() or " " in text or pdf.get_string_width(text) <= width:
        return _BODY
    return max(_MIN_FIT, _BODY * width / pdf.get_string_width(text) * 0.98)


@dataclass(frozen=True)
class _Line:
    text: str
    size: float = _BODY
    height: float = _line_height(_BODY)
    indent: float = 0.0


_CHOICE_LINE = _line_height(_BODY) * 1.25
"""Options stand a little apart, so a circle drawn around one clears its neighbours."""
_CHOICE_INDENT = 2.0
_SEPARATOR = "　・　"


@dataclass
class _Laid:
    """A cell's content laid out: its lines, and the circles to draw as (first line, line
    count, x offset, width)."""

    lines: list[_Line] = field(default_factory=list)
    marks: list[tuple[int, int, float, float]] = field(default_factory=list)

    def height(self) -> float:
        return sum(line.height for line in self.lines)


def _lay_out(pdf: FPDF, items: Sequence[_Item], width: float) -> _Laid:
    laid = _Laid()
    for item in items:
        if isinstance(item, str):
            size = _fit_size(pdf, item, width)
            pdf.set_font_size(size)
            laid.lines.extend(_Line(line, size, _line_height(size)) for line in _wrap(pdf, item, width))
            pdf.set_font_size(_BODY)
        elif item.inline and pdf.get_string_width(_SEPARATOR.join(item.options)) + 2 * _CHOICE_INDENT <= width:
            if item.chosen is not None:
                before = "".join(option + _SEPARATOR for option in item.options[:item.chosen])
                laid.marks.append((len(laid.lines), 1, _CHOICE_INDENT + pdf.get_string_width(before),
                                   pdf.get_string_width(item.options[item.chosen])))
            laid.lines.append(_Line(_SEPARATOR.join(item.options), height=_CHOICE_LINE, indent=_CHOICE_INDENT))
        else:
            for index, option in enumerate(item.options):
                lines = _wrap(pdf, option, width - 2 * _CHOICE_INDENT)
                if index == item.chosen:
                    laid.marks.append((len(laid.lines), len(lines), _CHOICE_INDENT,
                                       max(pdf.get_string_width(line) for line in lines)))
                laid.lines.extend(_Line(line, height=_CHOICE_LINE, indent=_CHOICE_INDENT) for line in lines)
    return laid


def _draw_laid(pdf: FPDF, laid: _Laid, x: float, y: float) -> None:
    tops = []
    for line in laid.lines:
        tops.append(y)
        pdf.set_font_size(line.size)
        pdf.set_xy(x + line.indent, y)
        pdf.cell(0, line.height, line.text)
        y += line.height
    pdf.set_font_size(_BODY)
    glyph = _BODY * 0.3528 * 1.5
    for first, count, offset, width in laid.marks:
        block = sum(line.height for line in laid.lines[first:first + count])
        height = block - laid.lines[first].height + glyph
        pdf.rect(x + offset - 1.6, tops[first] + (block - height) / 2, width + 3.2, height, round_corners=True,
                 corner_radius=min(height, width + 3.2) / 2)


def _ensure_room(pdf: FPDF, height: float) -> None:
    if pdf.get_y() + height > pdf.h - _MARGIN and pdf.get_y() > pdf.t_margin:
        pdf.add_page()


def _draw_para(pdf: FPDF, para: _Para) -> None:
    width = pdf.w - 2 * _MARGIN
    pdf.set_font("gothic" if para.heading else "mincho", size=para.size)
    lines = _wrap(pdf, para.text, width) if para.text else []
    height = _line_height(para.size)
    _ensure_room(pdf, height * len(lines) + para.keep)
    for line in lines:
        pdf.set_x(_MARGIN)
        pdf.cell(width, height, line, align=para.align, new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(pdf.get_y() + para.gap)
    pdf.set_font("mincho", size=_BODY)


def _draw_table(pdf: FPDF, table: _Table) -> None:
    """Rows of label and value, boxed or as a plain list; rows sharing a group get one cell on the
    left spanning them, kept on one page."""
    width = pdf.w - 2 * _MARGIN
    pdf.set_font("mincho", size=_BODY)
    groups = [row.group for row in table.rows if row.group]
    group_w = _column_width(pdf, groups, 0.0) if groups else 0.0
    label_w = _column_width(pdf, [row.label for row in table.rows], 28.0 if table.boxed else 58.0)
    start = 0
    while start < len(table.rows):
        end = start
        while end + 1 < len(table.rows) and table.rows[end + 1].group == table.rows[start].group != "":
            end += 1
        _draw_group(pdf, table.rows[start:end + 1], table.boxed, group_w, label_w, width)
        start = end + 1
    pdf.set_y(pdf.get_y() + 3)


def _column_width(pdf: FPDF, texts: Iterable[str], minimum: float) -> float:
    """As wide as the widest line of its labels (so they do not wrap and the value gets the rest),
    at least `minimum`, at most 60 mm."""
    widest = max((pdf.get_string_width(line) for text in texts for line in text.split("\n")), default=0.0)
    return min(60.0, max(minimum, widest + 2 * _PAD + 1.5))


def _draw_group(pdf: FPDF, rows: Sequence[_Row], boxed: bool, group_w: float, label_w: float,
                width: float) -> None:
    laid = []
    for row in rows:
        value_x = group_w + (label_w if row.label else 0.0)
        label = _lay_out(pdf, (row.label,), label_w - 2 * _PAD) if row.label else _Laid()
        value = _lay_out(pdf, row.items, width - value_x - 2 * _PAD)
        laid.append((value_x, label, value, max(label.height(), value.height()) + 2 * _VPAD))
    group = _lay_out(pdf, (rows[0].group,), group_w - 2 * _PAD) if group_w and rows[0].group else _Laid()
    total = max(sum(h for *_, h in laid), group.height() + 2 * _VPAD)
    _ensure_room(pdf, total)
    left = _MARGIN if boxed else _MARGIN - _PAD
    top = y = pdf.get_y()
    for (value_x, label, value, height), row in zip(laid, rows):
        height += (total - sum(h for *_, h in laid)) if row is rows[-1] else 0.0
        if boxed and row.label:
            pdf.rect(left + group_w, y, label_w, height)
        if boxed:
            pdf.rect(left + value_x, y, width - value_x, height)
        _draw_laid(pdf, label, left + group_w + _PAD, y + (height - label.height()) / 2)
        _draw_laid(pdf, value, left + value_x + _PAD, y + (height - value.height()) / 2)
        y += height
    if group_w and rows[0].group:
        if boxed:
            pdf.rect(_MARGIN, top, group_w, total)
        _draw_laid(pdf, group, left + _PAD, top + (total - group.height()) / 2)
    pdf.set_y(y)


def _number_pages(pdf: FPDF, *, always: bool) -> None:
    """"n / N" at the foot of each page; a one-page form stays as its guideline prints it."""
    count = pdf.pages_count
    if count == 1 and not always:
        return
    pdf.set_auto_page_break(False)
    for page in range(1, count + 1):
        pdf.page = page
        pdf.set_font("mincho", size=9)
        pdf.set_xy(0, pdf.h - _MARGIN / 2 - 3)
        pdf.cell(pdf.w, 5, f"{page} / {count}", align="C")


def _render(blocks: Iterable[_Block], title: str) -> bytes:
    pdf = _new_pdf()
    pdf.set_title(title)
    for block in blocks:
        if isinstance(block, _Table):
            _draw_table(pdf, block)
        elif block.text:
            _draw_para(pdf, block)
    _number_pages(pdf, always=False)
    return bytes(pdf.output())


def request_pdf(form: RequestForm) -> bytes:
    """The request on its organisation's form (熊本市 様式第1号, 山形市 別記様式, さいたま 様式第1号;
    a plain 依頼書 for 品川区 and 松本市), as PDF."""
    fs = _form_set(form.form_set)
    return _render(_request_blocks(form, fs), fs.request_title)


def answer_pdf(form: AnswerForm) -> bytes:
    """The answer on its organisation's form (熊本市 様式第2号, さいたま 様式第2号; a plain
    決定通知書 elsewhere), as PDF."""
    fs = _form_set(form.request.form_set)
    return _render(_answer_blocks(form, fs), fs.answer_title)


# --- the 通話記録管理簿 -------------------------------------------------------------------------

def _details_text(details: dict[str, Any]) -> str:
    parts = []
    for key, value in details.items():
        if key != "role":
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
            parts.append(f"{key}: {shown}")
    return "、".join(parts)


def ledger_book_rows(entries: Iterable[LedgerEntry]) -> list[tuple[str, ...]]:
    """One row per ledger entry under `LEDGER_COLUMNS`: what 松本市 第10条 asks the 管理簿 to show
    (who, when, what, why, approved by whom), in Japanese, the rest of the entry as 内容."""
    return [(str(entry.seq), f"{japanese_date(entry.at)} {entry.at:%H:%M:%S}",
             EVENT_LABELS.get(entry.event, entry.event), entry.actor, str(entry.details.get("role", "")),
             entry.reason or "", entry.approved_by or "", _details_text(entry.details))
            for entry in entries]


def ledger_book_csv(entries: Iterable[LedgerEntry]) -> bytes:
    """The 管理簿 as CSV: UTF-8 with a BOM, so Excel opens the Japanese as Japanese."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEDGER_COLUMNS)
    writer.writerows(ledger_book_rows(entries))
    return out.getvalue().encode("utf-8-sig")


_LEDGER_WIDTHS = (12, 42, 34, 26, 22, 44, 24, 57)


def ledger_book_pdf(entries: Iterable[LedgerEntry], title: str = "通話記録管理簿", organisation: str = "") -> bytes:
    """The 管理簿 as a landscape A4 table, its column heads on every page, pages numbered."""
    return table_pdf(title, organisation, "", [LEDGER_COLUMNS, *ledger_book_rows(entries)], _LEDGER_WIDTHS)


def table_pdf(title: str, organisation: str, note: str, rows: Sequence[Sequence[str]],
              widths: Sequence[float] | None = None) -> bytes:
    """A landscape A4 table under a title, its first row the column heads repeated on every page,
    pages numbered: the 管理簿, and counts such as the monthly report.  Without `widths`, the
    first columns (names) get room and the rest (counts) share what is left."""
    pdf = _new_pdf("L")
    pdf.set_title(title)
    pdf.set_auto_page_break(True, margin=_MARGIN)
    _draw_para(pdf, _Para(title, "C", heading=True, size=16, gap=2))
    if organisation:
        _draw_para(pdf, _Para(organisation, "R", gap=2))
    if note:
        _draw_para(pdf, _Para(note, "L", size=9, gap=3))
    pdf.set_font("mincho", size=9)
    heads = FontFace(family="gothic", emphasis="", fill_color=(230, 230, 230))
    if widths is None:
        width = pdf.w - 2 * _MARGIN
        count = max((len(row) for row in rows), default=1)
        names = (22.0, 44.0, 34.0)[:count]
        rest = (width - sum(names)) / max(count - len(names), 1)
        widths = (*names, *([rest] * (count - len(names))))
    with pdf.table(col_widths=tuple(widths), width=sum(widths), headings_style=heads, line_height=_line_height(9),
                   text_align="LEFT", wrapmode="CHAR", padding=1) as table:
        for row in rows:
            table.row(tuple(row))
    _number_pages(pdf, always=True)
    return bytes(pdf.output())
