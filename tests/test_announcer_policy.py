"""policy/announcement.py: who hears the notice, and where the call goes afterwards."""
from __future__ import annotations

import pytest

from policy.announcement import Outcome, decide_notice
from policy.decide import PolicyDecider
from policy.loader import PolicyError, parse_policy

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
