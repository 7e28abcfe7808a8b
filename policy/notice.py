"""The public notice of the recording (設置の公表), written from the policy alone.

Every guideline asks the organisation to publish that calls are recorded and why (品川区 第4条,
松本市 第5条・第6条(1), 山形市 第4条, 熊本市 第3条, さいたま 第3条7).  Writing it from the
policy the appliance runs keeps the two from drifting apart: the period, the lines not recorded
and whether callers hear an announcement are what the device really does.  The notice is in
Japanese, as published, in Markdown or as a small HTML page.

Excluded lines are consultation lines whose callers must not be traceable (松本市 報告事項
3(2)), and exempted callers are people the organisation shields or fears (品川区 第5条): the
notice says such calls exist but never prints a number of theirs, and refuses to be written if
any text of the policy would print one.

Pure: a policy in, text out.
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from .announcement import NoticeReason
from .decide import normalise_number
from .harassment import evidence_keeping
from .loader import PolicyError
from .retention import describe_keeping
from .schema import Policy

__all__ = ["FORMATS", "Format", "Section", "notice_sections", "render_notice"]

Format = Literal["md", "html"]
FORMATS: tuple[Format, ...] = ("md", "html")

KEPT = ("通話の音声", "通話日時", "通話時間", "通話当事者双方の電話番号")
"""What a recording holds (松本市 第2条(2), 山形市 第2条(2), 熊本市 第2条(2)): the audio and the
index row of the call."""

_REASONS = {
    NoticeReason.SAFETY: "個人の生命、身体又は財産の安全を守るため、やむを得ないと認められるとき",
    NoticeReason.THREAT: "脅迫、恐喝、不当な要求行為等に該当するおそれがあるとき",
    NoticeReason.LITIGATION: "訴訟に発展するおそれがあると認められるとき",
    NoticeReason.OTHER: "そのほか、お知らせしないことについてやむを得ない事由があるとき",
}
"""品川区 第5条 (1)-(4), in the words a caller reads."""

_NUMBER_RUN = re.compile(r"\+?[0-9][0-9()\-‐－ー− .]*[0-9]")


@dataclass(frozen=True, slots=True)
class Section:
    """One part of the notice: a heading (none for the opening), paragraphs, then a list."""

    heading: str
    paragraphs: tuple[str, ...] = ()
    items: tuple[str, ...] = ()


def render_notice(policy: Policy, fmt: Format = "md", source: str = "<policy>") -> str:
    """The notice as Markdown or as a complete HTML page; `source` names the policy file in the
    error raised when the notice would print a number it must not."""
    if fmt not in FORMATS:
        raise ValueError(f"no notice format {fmt!r}; use {' or '.join(FORMATS)}")
    title = _title(policy)
    sections = notice_sections(policy)
    text = _markdown(title, sections) if fmt == "md" else _html(title, sections)
    _refuse_secret_numbers(policy, text, source)
    return text


def notice_sections(policy: Policy) -> list[Section]:
    """The notice's parts in the order a reader asks: what, why, what is kept, how long, what is
    not recorded, whether they are told on the line, who manages it, whom to ask."""
    keeping = describe_keeping(policy.retention, "ja")
    if policy.harassment is not None:  # marked calls are kept longer: the public is told how much
        keeping.append(evidence_keeping(policy.harassment))
    sections = [_opening(policy), _purpose(policy), Section("記録する内容", items=KEPT),
                Section("保存期間", paragraphs=tuple(keeping))]
    if policy.excluded_lines:
        sections.append(_not_recorded(policy))
    sections += [_announcement(policy), _management(policy), _contact(policy)]
    return sections


def _subject(policy: Policy) -> str:
    return policy.organisation or "当機関"


def _title(policy: Policy) -> str:
    return f"{policy.organisation}における通話の録音について" if policy.organisation else "通話の録音について"


def _opening(policy: Policy) -> Section:
    where = f"{policy.notice.location}の" if policy.notice is not None and policy.notice.location else ""
    return Section("", paragraphs=(
        f"{_subject(policy)}では、{where}外線電話での通話（着信・発信）を、通話録音装置により自動で録音しています。",))


def _purpose(policy: Policy) -> Section:
    """The guideline's purpose (the notice section's words) and the uses the access rules allow;
    with neither, only that the use is bounded, never an invented purpose."""
    stated = policy.notice.purpose if policy.notice is not None else ""
    uses = tuple(p.label for p in policy.access.purposes) if policy.access is not None else ()
    paragraphs = [f"録音は、{stated}を目的としています。"] if stated else []
    if uses:
        paragraphs.append("録音は、次の場合に限り利用し、又は提供します。")
    elif not stated:
        paragraphs.append(f"録音は、{_subject(policy)}が定める目的の範囲内でのみ利用します。")
    return Section("録音の目的", paragraphs=tuple(paragraphs), items=uses)


def _printable_label(label: str) -> bool:
    """A label is printed only when it holds no digit at all: an administrator may have written
    a number into it, and no excluded number may reach the notice."""
    return bool(label) and not any(ch.isdigit() for ch in unicodedata.normalize("NFKC", label))


def _not_recorded(policy: Policy) -> Section:
    labels = tuple(dict.fromkeys(line.label for line in policy.excluded_lines if _printable_label(line.label)))
    return Section("録音しない通話", paragraphs=(
        "相談専用の電話など、配慮を必要とする通話は録音しません。その通話の音声と電話番号は、どこにも記録しません。",
        *(("次の相談窓口の通話が対象です。",) if labels else ())), items=labels)


def _announcement(policy: Policy) -> Section:
    rules = policy.announcement
    if not rules.enabled:
        return Section("録音のお知らせ", paragraphs=(
            "通話の始めに録音をお知らせする自動音声は流れません。録音していることは、この公表によりお知らせします。",))
    reasons = {caller.reason for caller in rules.callers} | {
        line.reason for line in rules.lines if not line.announce and line.reason is not None}
    paragraphs = [
        "外線電話の着信時には、通話を録音する旨を自動音声でお知らせしてから、担当におつなぎします。",
        f"{_subject(policy)}から発信する通話では、自動音声によるお知らせはありませんが、録音しています。",
    ]
    if reasons:
        paragraphs.append("ただし、次のときは、お知らせしないことがあります。")
    return Section("録音のお知らせ", paragraphs=tuple(paragraphs),
                   items=tuple(_REASONS[r] for r in NoticeReason if r in reasons))


def _manager(policy: Policy) -> str:
    """The post that manages the device: as the notice names it, else the title of the access
    rules' first approver (the 管理責任者 in every guideline), else nobody in particular."""
    if policy.notice is not None and policy.notice.manager:
        return policy.notice.manager
    if policy.access is not None and policy.access.approvers:
        return policy.access.roles[policy.access.approvers[0]].title
    return ""


def _management(policy: Policy) -> Section:
    manager = _manager(policy)
    who = f"{manager}が" if manager else ""
    return Section("録音の管理", paragraphs=(
        f"録音は、{who}管理し、暗号化して保存します。録音を利用し、提供し、又は消去したときは、その記録を残します。",))


def _contact(policy: Policy) -> Section:
    contact = policy.notice.contact if policy.notice is not None else None
    if contact is None:
        who = _manager(policy) or _subject(policy)
        return Section("お問い合わせ", paragraphs=(f"録音についてのお問い合わせは、{who}までお願いします。",))
    lines = [contact.office] + ([f"電話 {contact.phone}"] if contact.phone else [])
    return Section("お問い合わせ", paragraphs=("録音についてのお問い合わせは、次の窓口までお願いします。",), items=tuple(lines))


def _markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        if section.heading:
            out += [f"## {section.heading}", ""]
        for paragraph in section.paragraphs:
            out += [paragraph, ""]
        if section.items:
            out += [f"- {item}" for item in section.items] + [""]
    return "\n".join(out)


def _html(title: str, sections: list[Section]) -> str:
    """A complete page in which every text of the policy is escaped: the notice is published on
    the organisation's website, and nothing in a policy file may become markup there."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="ja">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
           "</head>", "<body>", "<main>", f"<h1>{e(title)}</h1>"]
    for section in sections:
        out.append("<section>")
        if section.heading:
            out.append(f"<h2>{e(section.heading)}</h2>")
        out += [f"<p>{e(paragraph)}</p>" for paragraph in section.paragraphs]
        if section.items:
            out += ["<ul>", *(f"<li>{e(item)}</li>" for item in section.items), "</ul>"]
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _digits(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isdigit())


def _refuse_secret_numbers(policy: Policy, text: str, source: str) -> None:
    """The last guard: no run of digits in the notice may hold the number of an excluded line
    or of an exempted caller, in whatever form (+81, hyphens, full-width) a text wrote it."""
    cc = policy.numbering.country_code
    secrets = {_digits(normalise_number(n, cc)) for n in (
        *(line.number for line in policy.excluded_lines),
        *(caller.number for caller in policy.announcement.callers if caller.number is not None))}
    secrets.discard("")
    if not secrets:
        return
    for run in _NUMBER_RUN.findall(unicodedata.normalize("NFKC", text)):
        found = _digits(normalise_number(run, cc))
        if any(secret in found for secret in secrets):
            raise PolicyError(source, None, "notice", "the public notice would print the number of an excluded "
                              "line or of a caller exempted from the announcement; take it out of the texts "
                              "the notice prints (organisation, notice, access purposes and titles)")
