"""policy/announcement.py: who hears the notice, and where the call goes afterwards; an exempted
caller also through the UA core."""
from __future__ import annotations

import json

import pytest

from announcer.outcomes import HandOverResult, NoticeOutcome
from policy.announcement import CALLER_REASON_PREFIX, Outcome, decide_notice, exemption_summary
from policy.decide import PolicyDecider
from policy.loader import PolicyError, parse_policy
from policy.schema import Policy
from tests.announcer.pbx import CALLER, DID, Harness, answer, answered, find, invite, notify

POLICY = """\
version: 1
numbering:
  extension_pattern: '^[1-9][0-9]{2}$'
excluded_lines:
  - number: "0263000000"
    label: こころの鈴
announcement:
  lines:
    - number: "03-5555-0199"
      announce: false
      reason: threat
      note: 脅迫電話の相談窓口
    - number: "0355550100"
      destination: "201"
"""


def decider(text: str = POLICY) -> PolicyDecider:
    return PolicyDecider(parse_policy(text, "test.yaml"))


def test_inbound_external_call_is_announced_and_goes_to_the_called_line() -> None:
    decision = decide_notice(decider(), "09011112222", "0355550111")
    assert decision.announce and decision.destination == "0355550111"


def test_line_destination_override() -> None:
    assert decide_notice(decider(), "09011112222", "+81355550100").destination == "201"


def test_line_without_notice_records_its_reason() -> None:
    decision = decide_notice(decider(), "09011112222", "0355550199")
    assert decision.outcome is Outcome.NO_NOTICE_LINE and decision.reason == "threat" and not decision.announce


def test_excluded_line_wins_over_everything() -> None:
    for numbers in (("0263000000", "0355550111"), ("09011112222", "+81263000000")):
        decision = decide_notice(decider(), *numbers)
        assert decision.excluded and not decision.announce
    assert decide_notice(decider(), "090", "0355550111", ("0263000000",)).excluded


def test_outbound_and_internal_calls_get_no_notice() -> None:
    assert decide_notice(decider(), "201", "0355550111").outcome is Outcome.NOT_INBOUND


def test_switched_off() -> None:
    policy = POLICY + "  enabled: false\n"
    assert decide_notice(decider(policy), "09011112222", "0355550111").outcome is Outcome.DISABLED


def test_a_line_without_notice_needs_a_reason() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("announcement:\n  lines:\n    - number: '0355550199'\n      announce: false\n", "p.yaml")
    assert info.value.line == 3 and "reason" in str(info.value)


def test_unknown_keys_are_refused_with_their_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("announcement:\n  enabled: true\n  audoi: x.wav\n", "p.yaml")
    assert info.value.line == 3 and info.value.field == "announcement.audoi"


# ---- callers who are not announced (品川区 第5条) ------------------------------------------------

CALLERS = POLICY + """\
  callers:
    - number: "+81 90-1111-2222"
      reason: safety
      note: DV 被害者の支援者
    - prefix: "0120-99"
      reason: other
    - number: "03-5555-7777"
      reason: litigation
"""


def test_an_exempted_caller_in_any_form_is_not_announced_and_says_why() -> None:
    for calling in ("09011112222", "090-1111-2222", "+819011112222", "+81 (90) 1111 2222"):
        decision = decide_notice(decider(CALLERS), calling, "0355550111")
        assert decision.outcome is Outcome.NO_NOTICE_LINE and not decision.announce
        assert decision.reason == f"{CALLER_REASON_PREFIX}safety" and decision.destination == "0355550111"


def test_a_prefix_exempts_every_number_that_starts_with_it_and_no_other() -> None:
    assert decide_notice(decider(CALLERS), "0120991234", "0355550111").reason == "caller:other"
    assert decide_notice(decider(CALLERS), "+81120990000", "0355550111").reason == "caller:other"
    for calling in ("0120981234", "01209", "0312099000"):
        assert decide_notice(decider(CALLERS), calling, "0355550111").announce, calling


def test_other_and_withheld_callers_are_announced() -> None:
    for calling in ("09011112223", "9011112222", None, ""):
        assert decide_notice(decider(CALLERS), calling, "0355550111").announce


def test_a_caller_exception_keeps_the_line_destination_and_is_the_reason_on_a_silent_line() -> None:
    assert decide_notice(decider(CALLERS), "0355557777", "0355550100").destination == "201"
    decision = decide_notice(decider(CALLERS), "0355557777", "0355550199")
    assert decision.outcome is Outcome.NO_NOTICE_LINE and decision.reason == "caller:litigation"


def test_exclusion_direction_and_the_switch_come_before_a_caller_exception() -> None:
    assert decide_notice(decider(CALLERS), "09011112222", "0263000000").excluded
    off = CALLERS.replace("announcement:\n", "announcement:\n  enabled: false\n")
    assert decide_notice(decider(off), "09011112222", "0355550111").outcome is Outcome.DISABLED
    extension = CALLERS + "    - number: '201'\n      reason: other\n"
    assert decide_notice(decider(extension), "201", "0355550111").outcome is Outcome.NOT_INBOUND


@pytest.mark.parametrize(
    ("entry", "line", "field", "reason"),
    [
        ("    - number: '0311112222'\n", 6, "announcement.callers.0.reason", "Field required"),
        ("    - number: '0311112222'\n      reason: anger\n", 7, "announcement.callers.0.reason", "safety"),
        ("    - number: '0311112222'\n      prefix: '031'\n      reason: other\n", 6, "announcement.callers.0",
         "either number"),
        ("    - reason: other\n", 6, "announcement.callers.0", "either number"),
        ("    - prefix: '+81'\n      reason: other\n", 6, "announcement.callers.0", "nearly every caller"),
        ("    - number: 'anonymous'\n      reason: other\n", 6, "announcement.callers.0.number", "pattern"),
        ("    - number: '0311112222'\n      reason: other\n      nots: x\n", 8, "announcement.callers.0.nots",
         "Extra inputs"),
    ],
)
def test_a_misspelt_caller_exception_is_refused_with_its_line(entry: str, line: int, field: str, reason: str) -> None:
    text = "version: 1\nnumbering:\n  extension_pattern: '^[1-9][0-9]{2}$'\nannouncement:\n  callers:\n" + entry
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    assert (info.value.line, info.value.field) == (line, field) and reason in info.value.reason


def test_the_exemption_summary_counts_callers_lines_and_reasons_and_never_names_a_number() -> None:
    policy = parse_policy(CALLERS, "test.yaml")
    summary = exemption_summary(policy)
    assert summary == {"caller_numbers": 2, "caller_prefixes": 1, "lines": 1,
                       "reasons": {"litigation": 1, "other": 1, "safety": 1, "threat": 1}}
    text = json.dumps(summary)
    assert not any(digits in text for digits in ("1111", "2222", "0120", "7777", "5555"))
    assert exemption_summary(parse_policy("", "empty.yaml")) == {
        "caller_numbers": 0, "caller_prefixes": 0, "lines": 0, "reasons": {}}


def test_an_exempted_caller_is_handed_over_at_once_through_the_core_and_the_end_says_why() -> None:
    """Through the sans-I/O UA core as the PBX sees it: answered, no announcement, referred to the
    called line at once; the notice the service writes carries the reason."""
    policy = Policy.model_validate({"announcement": {"callers": [
        {"number": "+81 3-1234-5678", "reason": "threat", "note": "脅迫電話"}]}})
    h = Harness.make(policy)
    ok = answered(h)
    assert not h.playbacks
    refer = find(h.sent, method="REFER")
    assert refer.header("refer-to") == f"<sip:{DID}@192.0.2.10>"
    h.deliver(answer(refer, 202, "Accepted"))
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn1", terminated=True))
    h.deliver(answer(find(out, method="BYE"), 200, "OK"))
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.NO_NOTICE_LINE and ended.reason == "caller:threat"
    assert ended.hand_over is HandOverResult.REFER and ended.announced_from is None
    assert (ended.calling_number, ended.called_number, ended.destination) == (CALLER, DID, DID)


def test_an_exempted_caller_gets_the_302_at_once_in_early_media_mode() -> None:
    policy = Policy.model_validate({"announcement": {"callers": [{"prefix": "031234", "reason": "safety"}]}})
    h = Harness.make(policy, hand_over="early_media_302")
    out = h.deliver(invite())
    assert find(out, status=302).header("contact") == f"<sip:{DID}@192.0.2.10>"
    assert not h.playbacks
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.NO_NOTICE_LINE and ended.reason == "caller:safety"
    assert ended.hand_over is HandOverResult.REDIRECT_302
