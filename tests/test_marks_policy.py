"""The policy's `harassment:` section: parsed with its categories, codes, alert and warning, and
every broken value refused with the file, the line and the reason."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from policy.harassment import MarkRule, describe_harassment, evidence_last_day
from policy.loader import PolicyError, load_policy, parse_policy
from policy.notice import render_notice
from tests.marks_helpers import HARASSMENT, POLICY, marks_policy

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def test_the_section_reads_categories_codes_and_warning() -> None:
    section = marks_policy().harassment
    assert section is not None
    threat = section.category("threat")
    assert threat is not None and threat.label == "脅迫・恐喝" and threat.clause == "品川区 第5条(2)"
    assert threat.keep.months == 60, "{years: 5} is five years of calendar months"
    assert evidence_last_day(threat, date(2026, 2, 10)) == date(2031, 2, 10)
    assert section.codes() == {"*91": "threat", "*92": "demand"}
    rule = MarkRule.of(section)
    assert rule.match("5*92") == "demand" and rule.match("*9") is None and rule.match("91") is None
    assert section.warning is not None and section.warning.after_marks == 2 and section.warning.within_days == 90
    assert section.alert.roles == [] and not section.alert.listen
    words = "\n".join(describe_harassment(marks_policy()))
    assert "*91: 脅迫・恐喝" in words and "5年" in words and "6か月" in words and "品川区 第1条" in words
    assert "*92" in "\n".join(describe_harassment(marks_policy(), "en"))


def _refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "site.yaml")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "field", "reason"), [
    ('digit: "2"', 'digit: "1"', "harassment", "share a digit"),
    ("id: demand", "id: threat", "harassment", "share an id"),
    ('digit: "2"', 'digit: "22"', "harassment.categories.1.digit", "pattern"),
    ("keep: {years: 5}", "keep: {years: 0}", "harassment.categories.0.keep", "years must be"),
    ("keep: {months: 6}", "keep: {weeks: 6}", "harassment.categories.1.keep.weeks", "Extra inputs"),
    ('mark_prefix: "*9"', 'mark_prefix: "9x"', "harassment.mark_prefix", "pattern"),
    ("after_marks: 2", "after_marks: 0", "harassment.warning.after_marks", "greater than or equal"),
    ("within_days: 90", "within_days: 90\n    repeat: 3", "harassment.warning.repeat", "Extra inputs"),
    ("label: 脅迫・恐喝", "label: ''", "harassment.categories.0.label", "at least 1"),
])
def test_broken_values_name_file_line_and_reason(old: str, new: str, field: str, reason: str) -> None:
    text = POLICY.replace(old, new)
    error = _refused(text)
    assert error.field == field and reason in error.reason
    expected = _line_of(text, "harassment:" if field == "harassment" else new.splitlines()[-1])
    assert error.line == expected and str(error).startswith(f"site.yaml:{expected}: {field}: ")


def test_mark_codes_may_not_overlap_the_on_demand_codes() -> None:
    on_demand = ("on_demand:\n  clause: 品川区 第2条(2)\n  lines: [{number: '0263111111'}]\n"
                 "  start_code: '91'\n  stop_code: '*0'\n")
    error = _refused(POLICY + on_demand)
    assert error.field == "harassment" and "*91" in error.reason and "start code" in error.reason
    assert error.line == _line_of(POLICY, "harassment:")


def test_the_alert_names_roles_of_the_access_rules_and_listens_only_where_allowed() -> None:
    base = (POLICIES / "shinagawa.yaml").read_text().split("\nharassment:")[0] + "\n"
    alert_roles = HARASSMENT + "  alert:\n    roles: [manager, nobody]\n"
    error = _refused(base + alert_roles)
    assert error.field == "harassment" and "nobody" in error.reason
    error = _refused(base + HARASSMENT + "  alert:\n    roles: [manager]\n    listen: true\n")
    assert "on_device_listening" in error.reason and "品川区 第7条" in error.reason
    assert parse_policy(base + HARASSMENT + "  alert:\n    roles: [manager]\n").harassment is not None
    error = _refused(POLICY + "  alert:\n    roles: [manager]\n")
    assert "access.roles does not have" in error.reason


GUIDELINE_NAMES_HARASSMENT = {
    # stem: where its guideline (shared/seeds) speaks of improper pressure, demands or harassment
    "shinagawa": "品川区 第1条", "kumamoto": "熊本市 第1条", "yamagata": "山形市 第1条",
    "matsumoto": "松本市 報告事項 4", "hyogo": "row 1", "akitakata": "row 2", "hashima": "row 3", "kami": "row 5",
    "tsu": "row 6", "hachioji": "row 7", "koshigaya": "row 8",
}


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_whose_guideline_names_harassment_has_categories_with_clauses(path: Path) -> None:
    section = load_policy(path).harassment
    if path.stem not in GUIDELINE_NAMES_HARASSMENT:
        assert section is None, f"{path.name}: its guideline does not speak of harassment"
        return
    assert section is not None and section.categories
    where = GUIDELINE_NAMES_HARASSMENT[path.stem]
    assert where in section.clause
    assert all(c.clause and c.keep for c in section.categories)
    policy = load_policy(path)
    keeping = render_notice(policy, "md").split("## 保存期間")[1].split("##")[0]
    assert "証拠として、記録した日から" in keeping and "5年保存" in keeping, "the public is told they stay longer"
    if policy.access is not None:
        manager = policy.access.roles["manager"]
        assert {"mark", "manage_marks"} <= set(manager.may) and section.alert.roles == ["manager"]
