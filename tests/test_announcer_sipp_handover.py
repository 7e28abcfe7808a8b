"""The hand-over as the notice records it, with SIPp as the PBX in front of `callrec announcer`
(issue 17, item 10): a REFER's notice names its target and a Referred-By token the PBX sees on
the wire, and the hand-over's time lies between the announcement's end and the call's departure;
a 302 whose target the PBX routes back to the announcer is refused 482 and `redirect_failed`.

Needs root, iproute2, sip-tester, tcpdump and tshark (CI runs as root and installs them); without
them the tests fail with the reason, they never skip.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from storage.notices import referral_token
from tests.announcer.lab import DID, PBX_IP, Net, build
from tests.sipp.netns import Lab
from tests.test_announcer_sipp import TONE_POLICY, Run, methods

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with Lab() as lab:
        yield build(lab)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    t = np.arange(int(1.2 * 16000)) / 16000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * (300 + 500 * t) * t), 16000)
    return tmp_path


def test_refer_notice_names_what_the_pbx_was_sent(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refer", policy=TONE_POLICY)
    (refer,) = [m for m in run.sip() if m["sip.Method"] == "REFER"]
    (notice,) = run.notices()
    assert refer["sip.Refer-To"] == f"<{notice['refer_target']}>" == f"<sip:{DID}@{PBX_IP}>"
    assert referral_token(notice["referred_by"]) is not None
    assert notice["announced_to"] <= notice["handed_over_at"] <= notice["left_at"]
    assert notice["link_seconds"] == 15.0 and notice["left_epoch"] >= notice["handover_epoch"]


def test_a_302_routed_back_to_the_announcer_is_a_failed_redirect(net: Net, folder: Path) -> None:
    run = Run(net, folder, "early_302_back", hand_over="early_media_302")
    assert methods(run).count("302 INVITE") == 1 and "482 INVITE" in methods(run)
    assert run.log.count("event='announcer.playing'") == 1, "the caller hears the notice once"
    (notice,) = run.notices()
    assert (notice["outcome"], notice["hand_over"]) == ("announced", "redirect_failed")
    assert "event='announcer.redirect_failed'" in run.log
