"""Proof of notice with a real PBX and real phones (issue 17, item 10): kamailio routes a trunk
call for the DID to `callrec announcer`; baresip is the caller on the trunk and the extension's
phone (auto-answer). The announcement (6 s, so the transferred call begins more than 5 s after
the notice was taken) is followed by a REFER (kamailio passes it to the caller, whose baresip
places a new call to the extension) or by a 302 (kamailio follows it through its own routing).
tcpdump on the switch's SPAN port records the site; `callrec replay` of that capture, on the data
folder where the announcer wrote its notices, must give one call that carries the proof of notice.

Needs root, iproute2, kamailio, baresip-core and tcpdump (CI runs as root and installs them);
without them the tests fail with the reason, they never skip.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.announcer import realpbx as rp
from tests.interop import calls, epoch, notice_rows, run_cli
from tests.sipp.netns import Lab

pytestmark = pytest.mark.root

ANNOUNCEMENT_SECONDS = 6.0
TALK_SECONDS = 3.0
RECORDER_POLICY = f"""version: 1
numbering: {{country_code: "81", extension_pattern: '^[1-9][0-9]{{2}}$'}}
network: {{trunk: [{rp.CALLER_IP}/32], pbx: [{rp.PBX_IP}/32]}}
"""


def announcer_policy(destination: str | None) -> str:
    line = f'{{number: "{rp.DID}"' + (f', destination: "{destination}"' if destination else "") + "}"
    return RECORDER_POLICY + f"announcement:\n  audio: tone.wav\n  lines: [{line}]\n"


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[tuple[rp.Site, Path]]:
    t = np.arange(int(ANNOUNCEMENT_SECONDS * 8000)) / 8000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 600 * t), 8000)
    talk = np.arange(30 * 8000) / 8000
    soundfile.write(tmp_path / "caller.wav", 0.3 * np.sin(2 * np.pi * 300 * talk), 8000, subtype="PCM_16")
    soundfile.write(tmp_path / "phone.wav", 0.3 * np.sin(2 * np.pi * 440 * talk), 8000, subtype="PCM_16")
    with Lab() as lab:
        yield rp.build(lab, "rp"), tmp_path


class Call:
    """One phone call through the site: the caller dials the DID and, once the conversation is
    established (or the PBX gave up), hangs up; then the capture is replayed."""

    def __init__(self, site: rp.Site, folder: Path, hand_over: str, destination: str | None, until: str) -> None:
        self.folder = folder
        span = rp.Span(site, folder / "site.pcap")
        pbx = rp.kamailio(site, folder)
        phone = rp.baresip(site, site.phone, folder / "phone", f"<sip:{rp.EXTENSION}@{rp.PBX_IP}>;regint=60;"
                           "answermode=auto", f"aufile,{folder}/phone.wav")
        announcer = None
        try:
            phone.wait_for("200 OK", 20)
            announcer = rp.Announcer(site, folder, announcer_policy(destination), hand_over)
            caller = rp.baresip(site, site.caller, folder / "caller", f"<sip:{rp.CALLER}@{rp.PBX_IP}>;regint=0",
                                f"aufile,{folder}/caller.wav", (f"/dial sip:{rp.DID}@{rp.PBX_IP}",))
            (phone if until == "established" else announcer.process).wait_for(
                "Call established" if until == "established" else until, 40)
            time.sleep(TALK_SECONDS)
            caller.stop()
            time.sleep(0.5)
        finally:
            self.phone_log = phone.log
            phone.stop()
            self.announcer_log = announcer.stop() if announcer is not None else ""
            pbx.stop()
            span.stop()
        (folder / "recorder.yaml").write_text(RECORDER_POLICY, encoding="utf-8")
        run_cli("replay", folder / "site.pcap", "--data-dir", folder / "data", "--policy", folder / "recorder.yaml")
        self.rows = calls(folder / "data")

    def notices(self) -> list[dict]:
        return notice_rows(self.folder / "data")


def test_refer_the_conversation_carries_the_notice_and_the_announcer_leg_is_part_of_it(
        site: tuple[rp.Site, Path]) -> None:
    call = Call(*site, "refer", rp.EXTENSION, "established")
    (notice,) = call.notices()
    assert (notice["outcome"], notice["hand_over"]) == ("announced", "refer"), call.announcer_log
    assert notice["refer_target"] == f"sip:{rp.EXTENSION}@{rp.PBX_IP}" and "callrec-ref=" in notice["referred_by"]
    conversation = [r for r in call.rows if r["leg"] is None]
    legs = [r for r in call.rows if r["leg"] == "announcer"]
    assert len(conversation) == 1 and len(legs) == 1, json.dumps(call.rows, indent=1)
    (row,), (leg,) = conversation, legs
    assert (row["remote_number"], row["callee"]) == (rp.CALLER, rp.EXTENSION)
    assert epoch(row["started_at"]) - notice["received_epoch"] > 5, "the transferred call began after 5 s"
    assert row["notice_id"] == notice["id"] and row["announced_at"] == notice["announced_from"]
    assert leg["sip_call_id"] == notice["sip_call_id"] and leg["notice_id"] == notice["id"]
    assert row["duration"] > TALK_SECONDS - 1
    shown = run_cli("calls", "show", row["id"], "--data-dir", call.folder / "data").stdout
    assert "notice" in shown and "announced" in shown and notice["id"] in shown


def test_early_media_and_302_the_call_the_pbx_continued_carries_the_notice(site: tuple[rp.Site, Path]) -> None:
    call = Call(*site, "early_media_302", rp.EXTENSION, "established")
    (notice,) = call.notices()
    assert (notice["outcome"], notice["hand_over"]) == ("announced", "redirect_302"), call.announcer_log
    (row,) = call.rows
    assert row["sip_call_id"] == notice["sip_call_id"] and row["leg"] is None
    assert row["notice_id"] == notice["id"] and row["announced_at"] == notice["announced_from"]


def test_a_302_the_pbx_routes_back_to_the_announcer_is_a_failed_redirect(site: tuple[rp.Site, Path]) -> None:
    """No destination for the DID: the 302 names the DID itself, which the PBX routes to the
    announcer again. The caller does not hear the notice a second time, and the notice says the
    hand-over failed rather than leaving `redirect_302` standing."""
    call = Call(*site, "early_media_302", None, "announcer.redirect_failed")
    (notice,) = call.notices()
    assert (notice["outcome"], notice["hand_over"]) == ("announced", "redirect_failed")
    assert call.announcer_log.count("announcer.playing") == 1
    assert not call.rows, "nobody answered: nothing recorded"
    assert "Call established" not in call.phone_log
