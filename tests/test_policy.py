"""Policy loading and the decisions it drives."""
from __future__ import annotations

from pathlib import Path

import pytest

from policy.decide import Direction, PolicyDecider, normalise_number
from policy.loader import PolicyError, load_policy, parse_policy
from policy.retention import Period

POLICIES = Path(__file__).resolve().parents[1] / "policies"

SITE = """\
version: 1
organisation: test city
numbering:
  extension_pattern: '^[1-9][0-9]{2,3}$'
network:
  trunk: [203.0.113.0/28]
  pbx: [192.0.2.10]
recording:
  internal_calls: false
excluded_lines:
  - number: "0263-00-0000"
    label: kokoro
  - "2999"
"""


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_policies_load(path: Path) -> None:
    assert load_policy(path).timezone == "Asia/Tokyo"


def test_examples_cover_every_organisation() -> None:
    assert {p.stem for p in POLICIES.glob("*.yaml")} >= {
        "shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama"}


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("version: 1\nnetwork:\n  trunk: [not-an-ip]\n", 3, "network.trunk"),
        ("version: 1\nrecordng:\n  internal_calls: true\n", 2, "recordng"),
        ("version: 1\ntimezone: Mars/Olympus\n", 2, "timezone"),
        ("numbering:\n  extension_pattern: '(['\n", 2, "numbering.extension_pattern"),
        ("excluded_lines:\n  - number: '03-1234-5678'\n  - number: 'abc'\n", 3, "excluded_lines.1.number"),
        ("version: 2\n", 1, "version"),
    ],
)
def test_errors_name_line_and_field(text: str, line: int, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "site.yaml")
    assert info.value.line == line
    assert info.value.field == field
    assert str(info.value).startswith(f"site.yaml:{line}: {field}: ")


def test_broken_yaml_names_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 1\nnetwork: [unclosed\n", "bad.yaml")
    assert info.value.line is not None and "not valid YAML" in str(info.value)


def test_empty_policy_is_the_default() -> None:
    assert parse_policy("").numbering.country_code == "81"


def test_unreadable_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"organisation: \xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(tmp_path / "latin1.yaml")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+81 263-00-0000", "0263000000"), ("0263000000", "0263000000"), ("(0263) 00.0000", "0263000000"),
     ("201", "201"), ("+1 555 0100", "+15550100"), (None, None), ("alice", "alice")],
)
def test_normalise_number(raw: str | None, expected: str | None) -> None:
    assert normalise_number(raw, "81") == expected


def _decider() -> PolicyDecider:
    return PolicyDecider(parse_policy(SITE))


def test_direction_from_trunk_address() -> None:
    d = _decider()
    inbound = d.classify(src_addresses=["203.0.113.5"], dst_addresses=["192.0.2.10"],
                         caller="+81312345678", callee="0263111111")
    assert inbound.direction is Direction.INBOUND
    assert (inbound.local_number, inbound.remote_number) == ("0263111111", "0312345678")
    assert not inbound.local_is_caller and inbound.record
    outbound = d.classify(src_addresses=["192.0.2.10"], dst_addresses=["203.0.113.5"],
                          caller="201", callee="0312345678")
    assert outbound.direction is Direction.OUTBOUND and outbound.local_is_caller
    assert (outbound.local_number, outbound.remote_number) == ("201", "0312345678")


def test_direction_from_numbering_plan() -> None:
    d = _decider()
    other = dict(src_addresses=["198.51.100.1"], dst_addresses=["198.51.100.2"])
    assert d.classify(caller="201", callee="202", **other).direction is Direction.INTERNAL
    assert not d.classify(caller="201", callee="202", **other).record
    assert d.classify(caller="0312345678", callee="202", **other).direction is Direction.INBOUND
    assert d.classify(caller="201", callee="0312345678", **other).direction is Direction.OUTBOUND
    unknown = d.classify(caller="alice", callee="bob", **other)
    assert unknown.direction is Direction.UNKNOWN and unknown.record


def test_excluded_line_in_any_form_is_never_recorded_and_has_no_numbers() -> None:
    d = _decider()
    for callee in ("0263000000", "+81-263-00-0000", "0263-00-0000"):
        c = d.classify(src_addresses=["203.0.113.5"], dst_addresses=["192.0.2.10"],
                       caller="0312345678", callee=callee)
        assert c.excluded and not c.record
        assert c.local_number is None and c.remote_number is None
        assert c.excluded_label == "kokoro"
    diverted = d.classify(src_addresses=["203.0.113.5"], dst_addresses=["192.0.2.10"],
                          caller="0312345678", callee="201", other_numbers=["2999"])
    assert diverted.excluded


# ---- the annex municipalities (松本市 報告事項 別紙2) -----------------------------------------

ANNEX = {
    # file: (organisation, 別紙2 row, keep, minimum, announced, manager)
    "hyogo": ("兵庫県", 1, Period(until_end_of_month_after=1), None, True, "管財課長"),
    "akitakata": ("安芸高田市", 2, Period(months=1), None, False, "管財管理課長"),
    "hashima": ("羽島市", 3, None, Period(months=3), False, "管財課長"),
    "osaka_water": ("大阪市水道局", 4, Period(months=6), None, False, "お客様サービス課長"),
    "kami": ("香美市", 5, None, None, False, "総務課長"),
    "tsu": ("津市", 6, Period(months=3), None, False, "各課等の所属長"),
    "hachioji": ("八王子市", 7, Period(days=30), None, False, "庁舎管理課長"),
    "koshigaya": ("越谷市", 8, Period(days=90), None, False, "庁舎管理課長"),
}


def test_examples_cover_the_annex_municipalities() -> None:
    assert {p.stem for p in POLICIES.glob("*.yaml")} >= set(ANNEX)


@pytest.mark.parametrize("name", sorted(ANNEX))
def test_each_annex_policy_states_its_row_with_the_row_in_comments(name: str) -> None:
    organisation, row, keep, minimum, announced, manager = ANNEX[name]
    path = POLICIES / f"{name}.yaml"
    policy = load_policy(path)
    assert policy.organisation == organisation
    assert (policy.retention.keep, policy.retention.minimum) == (keep, minimum)
    assert policy.announcement.enabled is announced
    assert policy.notice is not None and policy.notice.manager == manager and policy.notice.purpose
    assert policy.notice.contact is not None and policy.notice.contact.office.startswith(organisation)
    text = path.read_text(encoding="utf-8")
    assert "別紙2" in text and f"row {row}" in text and "保存期間" in text and "公表/事前告知" in text


def test_capacity_rings_of_the_annex_keep_what_the_row_says() -> None:
    hashima = load_policy(POLICIES / "hashima.yaml").retention
    assert hashima.capacity is not None and hashima.if_minimum_at_risk == "stop_recording"  # 少なくとも3か月
    assert load_policy(POLICIES / "kami.yaml").retention.capacity is not None  # 自動更新


def test_osaka_keeps_six_months_here_then_six_on_a_second_medium() -> None:
    text = (POLICIES / "osaka_water.yaml").read_text(encoding="utf-8")
    assert "6か月保存経過後に別記憶媒体で6か月" in text
    retention = load_policy(POLICIES / "osaka_water.yaml").retention
    assert retention.keep == Period(months=6)
    assert retention.archive is not None and retention.archive.keep == Period(months=6)


def test_hyogo_names_its_exempted_caller_with_a_reason() -> None:
    (caller,) = load_policy(POLICIES / "hyogo.yaml").announcement.callers
    assert caller.number is not None and caller.reason == "threat"


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("notice:\n  purpos: x\n", 2, "notice.purpos"),
        ("notice:\n  contact:\n    phone: '03-1234-5678'\n", 2, "notice.contact.office"),
        ("notice:\n  contact:\n    office: 総務課\n    phone: 内線123\n", 4, "notice.contact.phone"),
        ("notice:\n  manager: " + "長" * 65 + "\n", 2, "notice.manager"),
    ],
)
def test_a_misspelt_notice_section_names_line_and_field(text: str, line: int, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "site.yaml")
    assert (info.value.line, info.value.field) == (line, field)
