"""policy/notice.py and `callrec policy notice`: the notice a city publishes, from its policy alone."""
from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest

from policy.loader import PolicyError, load_policy, parse_policy
from policy.notice import KEPT, render_notice
from policy.retention import describe_keeping
from policy.schema import Policy
from tests.interop import run_cli

POLICIES = Path(__file__).resolve().parents[1] / "policies"
EVERY_POLICY = sorted(POLICIES.glob("*.yaml"))


def _digits(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isdigit())


def _secret_numbers(policy: Policy) -> list[str]:
    """Excluded lines and exempted callers, national and international digits both."""
    numbers = [line.number for line in policy.excluded_lines]
    numbers += [c.number for c in policy.announcement.callers if c.number is not None]
    out = []
    for number in numbers:
        national = _digits(number)
        out += [national, "81" + national[1:]] if national.startswith("0") else [national]
    return out


class _Page(HTMLParser):
    """The page's tags in order and its text, to check it is whole and what it says."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        if tag not in ("meta",):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(text: str) -> _Page:
    parser = _Page()
    parser.feed(text)
    parser.close()
    return parser


@pytest.mark.parametrize("path", EVERY_POLICY, ids=lambda p: p.stem)
def test_the_notice_states_the_required_facts(path: Path) -> None:
    policy = load_policy(path)
    text = render_notice(policy, "md")
    assert text.startswith(f"# {policy.organisation}における通話の録音について\n")
    assert "録音しています" in text and "外線電話" in text
    assert all(item in text for item in KEPT)                              # what is kept
    assert all(sentence in text for sentence in describe_keeping(policy.retention, "ja"))   # how long
    if policy.access is not None:                                           # the purposes
        assert all(p.label in text for p in policy.access.purposes)
    if policy.notice is not None and policy.notice.purpose:
        assert policy.notice.purpose in text
    assert ("録音しない通話" in text) == bool(policy.excluded_lines)       # consultation lines
    if policy.announcement.enabled:                                         # the announcement
        assert "自動音声でお知らせ" in text
    else:
        assert "自動音声は流れません" in text
    contact = policy.notice.contact if policy.notice is not None else None  # the contact
    if contact is not None:
        assert contact.office in text and (contact.phone is None or f"電話 {contact.phone}" in text)
    else:
        assert policy.access is not None and policy.access.roles[policy.access.approvers[0]].title in text


@pytest.mark.parametrize("path", EVERY_POLICY, ids=lambda p: p.stem)
def test_no_excluded_or_exempted_number_appears_in_any_form(path: Path) -> None:
    policy = load_policy(path)
    for fmt in ("md", "html"):
        digits = _digits(render_notice(policy, fmt))
        assert not any(secret in digits for secret in _secret_numbers(policy)), fmt


@pytest.mark.parametrize("path", EVERY_POLICY, ids=lambda p: p.stem)
def test_the_html_notice_is_a_whole_page_saying_what_the_markdown_says(path: Path) -> None:
    policy = load_policy(path)
    html_text = render_notice(policy, "html")
    assert html_text.startswith("<!DOCTYPE html>\n<html lang=\"ja\">") and html_text.rstrip().endswith("</html>")
    parsed = page(html_text)
    assert parsed.open == [] and parsed.seen[:4] == ["html", "head", "meta", "meta"]
    assert {"title", "body", "h1", "h2", "p", "ul", "li"} <= set(parsed.seen)
    markdown = render_notice(policy, "md")
    words = "".join(parsed.text)
    for line in markdown.splitlines():
        assert re.sub(r"^(#+|-) ", "", line) in words


def test_the_html_escapes_a_hostile_organisation_and_every_other_text() -> None:
    hostile = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
    policy = Policy.model_validate({
        "organisation": hostile,
        "notice": {"purpose": "<b>目的</b>", "location": "'\"><iframe>", "manager": "</title><h1>x",
                   "contact": {"office": "<a href='javascript:x'>窓口</a>"}},
        "excluded_lines": [{"number": "0263000000", "label": "<svg onload=x>"}],
    })
    text = render_notice(policy, "html")
    assert "<script" not in text and "<img" not in text and "<b>" not in text and "<iframe" not in text
    assert "<svg" not in text and "<a " not in text and text.count("</title>") == 1 and text.count("<h1>") == 1
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img" in text
    parsed = page(text)
    assert parsed.open == [] and hostile in "".join(parsed.text)


def test_labels_with_digits_are_not_printed_and_a_number_in_any_text_is_refused() -> None:
    base = {"excluded_lines": [{"number": "0263-00-0000", "label": "こころの鈴"},
                               {"number": "0263111111", "label": "相談 0263111111"}],
            "announcement": {"callers": [{"number": "09011112222", "reason": "threat"}]}}
    text = render_notice(Policy.model_validate(base), "md")
    assert "- こころの鈴" in text and "相談 0" not in text and "1111" not in text
    for leak in ({"organisation": "相談窓口（＋８１ ２６３ ００ ００００）"},
                 {"notice": {"purpose": "090-1111-2222 からの脅迫への対応"}},
                 {"notice": {"contact": {"office": "総務課", "phone": "+81 263 11 1111"}}}):
        with pytest.raises(PolicyError) as info:
            render_notice(Policy.model_validate({**base, **leak}), "html", "site.yaml")
        assert info.value.path == "site.yaml" and info.value.field == "notice"
        assert "0263" not in str(info.value) and "090" not in str(info.value)


def test_a_policy_without_notice_or_access_still_says_only_what_it_knows() -> None:
    text = render_notice(parse_policy(""), "md")
    assert text.startswith("# 通話の録音について") and "当機関が定める目的の範囲内でのみ利用します" in text
    assert "お問い合わせは、当機関までお願いします" in text and "録音しない通話" not in text


def test_reasons_for_withholding_the_announcement_are_said_without_whom() -> None:
    policy = Policy.model_validate({"announcement": {
        "callers": [{"prefix": "0120-99", "reason": "litigation"}],
        "lines": [{"number": "0355550199", "announce": False, "reason": "safety"},
                  {"number": "0355550100", "destination": "201"}]}})
    text = render_notice(policy, "md")
    assert "お知らせしないことがあります" in text and "訴訟に発展するおそれ" in text and "生命、身体又は財産" in text
    assert "脅迫" not in text and "0120" not in text and "5555" not in text
    assert "お知らせしないことがあります" not in render_notice(Policy(), "md")


def test_the_command_writes_markdown_or_html(tmp_path: Path) -> None:
    path = POLICIES / "matsumoto.yaml"
    assert run_cli("policy", "notice", path).stdout == render_notice(load_policy(path), "md")
    out = tmp_path / "notice.html"
    assert run_cli("policy", "notice", path, "--format", "html", "-o", out).stdout == ""
    assert out.read_text(encoding="utf-8") == render_notice(load_policy(path), "html")


def test_the_command_names_file_line_and_field_of_a_broken_policy(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("notice:\n  contact:\n    office: 総務課\n    phon: '03'\n", encoding="utf-8")
    result = run_cli("policy", "notice", path, check=False)
    assert result.returncode == 2 and f"{path}:4: notice.contact.phon: " in result.stderr


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'pdf'"):
        render_notice(Policy(), "pdf")  # type: ignore[arg-type]
