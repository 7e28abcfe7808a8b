"""The caller next time (issue 18 item 4), in the UA core: a number the adapter says was marked
often enough hears the warning instead of the notice; everyone else, withheld callers included,
hears the notice; the notice row says which was played."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile

from announcer.audio import AnnouncementAudio, load_audio
from announcer.outcomes import AnnouncementKind, NoticeOutcome
from policy.schema import Policy
from tests.announcer.pbx import CALLER, KEY, Harness, ack_for, find, invite

WARNED = "0312345678"


@pytest.fixture(scope="module")
def warning(tmp_path_factory: pytest.TempPathFactory) -> AnnouncementAudio:
    path = tmp_path_factory.mktemp("warning") / "warning.wav"
    t = np.arange(8000) / 8000
    soundfile.write(path, 0.4 * np.sin(2 * np.pi * 880 * t), 8000)
    return load_audio(path, 30)


def harness(warning: AnnouncementAudio | None, asked: list[str], policy: Policy | None = None,
            **changes: object) -> Harness:
    h = Harness.make(policy, **changes)
    h.ua.warning = warning

    def warned(number: str) -> bool:
        asked.append(number)
        return number == WARNED

    h.ua.warned = warned
    return h


def call(h: Harness, *, caller: str = CALLER, extra: str = "") -> None:
    out = h.deliver(invite(caller=caller, extra=extra))
    ok = find(out, status=200)
    h.deliver(ack_for(ok, branch="z9hG4bKack1"))
    h.playback_done(KEY)


def test_a_marked_number_hears_the_warning_and_its_notice_says_so(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    h = harness(warning, asked)
    call(h, caller="+81312345678")  # the same number as the policy writes it, in international form
    (play,) = h.playbacks
    assert play.audio == warning.g711["PCMU"]
    assert asked == [WARNED]
    changed = h.effects[-1]
    assert changed.announcement is AnnouncementKind.WARNING and changed.announcement_sha256 == warning.sha256


def test_other_numbers_hear_the_ordinary_notice(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    h = harness(warning, asked)
    call(h, caller="0398765432")
    (play,) = h.playbacks
    assert play.audio == h.ua.audio.g711["PCMU"]
    assert asked == ["0398765432"]
    assert h.effects[-1].announcement is AnnouncementKind.NOTICE
    assert h.effects[-1].announcement_sha256 == h.ua.audio.sha256


@pytest.mark.parametrize("extra, caller", [("Privacy: id\r\n", WARNED), ("Privacy: user;id\r\n", WARNED),
                                           ("", "anonymous")])
def test_a_withheld_caller_is_never_warned(warning: AnnouncementAudio, extra: str, caller: str) -> None:
    asked: list[str] = []
    h = harness(warning, asked)
    call(h, caller=caller, extra=extra)
    assert h.playbacks[0].audio == h.ua.audio.g711["PCMU"]
    assert asked == []


def test_no_warning_in_the_policy_means_nobody_is_looked_up(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    h = harness(None, asked)
    call(h)
    assert h.playbacks[0].audio == h.ua.audio.g711["PCMU"] and asked == []


def test_a_call_that_hears_no_notice_hears_no_warning_either(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    policy = Policy.model_validate({"announcement": {"callers": [{"number": WARNED, "reason": "threat"}]}})
    h = harness(warning, asked, policy)
    call(h)
    assert h.playbacks == [] and asked == []
    last = h.effects[-1]
    assert last.outcome is NoticeOutcome.NO_NOTICE_LINE and last.announcement is None


def test_the_warning_as_early_media_before_the_302(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    h = harness(warning, asked, hand_over="early_media_302")
    out = h.deliver(invite())
    assert [m.status for m in out] == [100, 183]
    assert h.playbacks[0].audio == warning.g711["PCMU"]
    find(h.playback_done(KEY), status=302)
    (ended,) = h.ended
    assert ended.announcement is AnnouncementKind.WARNING and ended.outcome is NoticeOutcome.ANNOUNCED


def test_a_reload_mid_call_leaves_the_call_its_warning(warning: AnnouncementAudio) -> None:
    asked: list[str] = []
    h = harness(warning, asked)
    out = h.deliver(invite())
    h.ua.warning = None  # SIGHUP: the policy no longer names a warning
    h.deliver(ack_for(find(out, status=200), branch="z9hG4bKack1"))
    assert h.playbacks[0].audio == warning.g711["PCMU"]
