"""The announcer end to end: `callrec announcer` in one network namespace, SIPp as the PBX in
another, tcpdump on the PBX's side and tshark as the judge of what was on the wire.

Needs root, iproute2, sip-tester, tcpdump and tshark (CI runs as root and installs them); without
them the tests fail with the reason, they never skip.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from announcer.audio import DEFAULT_AUDIO, load_audio
from storage.notices import referral_token
from tests.announcer import scenarios
from tests.announcer.lab import (
    ANNOUNCER_IP, CALLER, DID, OPERATOR, PBX_IP, PBX_MEDIA_PORT, PBX_SIP_PORT, SIPP_TIMEOUT, STRANGER_IP, Announcer,
    Capture, Net, build, config_text, sipp,
)
from tests.interop import notice_rows, tshark_fields
from tests.sipp.netns import Lab

pytestmark = pytest.mark.root

TONE_POLICY = "announcement:\n  audio: tone.wav\n"


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with Lab() as lab:
        yield build(lab)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A 1.2 s sweep at 16 kHz: short calls, and the loader's resampling on the way."""
    t = np.arange(int(1.2 * 16000)) / 16000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * (300 + 500 * t) * t), 16000)
    return tmp_path


class Run:
    """One announcer, one SIPp call, one capture."""

    def __init__(self, net: Net, folder: Path, scenario: str, *, policy: str = TONE_POLICY, codec: str = "PCMU",
                 address: str = PBX_IP, transport: str = "u1", **settings: object) -> None:
        self.folder = folder
        announcer = Announcer(net, folder, config_text(**settings), policy)
        capture = Capture(net, folder / "wire.pcap")
        try:
            sipp(net, folder, scenario, codec=codec, address=address, transport=transport)
        finally:
            self.pcap = capture.stop()
            code = announcer.stop()
        self.log = announcer.log
        assert code == 0, self.log
        assert "Traceback" not in self.log, self.log

    def sip(self) -> list[dict[str, str]]:
        names = ["ip.src", "sip.Method", "sip.Status-Code", "sip.CSeq.method", "sip.Refer-To", "sip.Contact",
                 "sdp.media"]
        rows = tshark_fields(self.pcap, names, "sip", ("-o", "sip.tcp.port:5060", "-d", "tcp.port==5060,sip"))
        return [dict(zip(names, row)) for row in rows]

    def rtp(self) -> list[dict[str, str]]:
        names = ["ip.src", "udp.dstport", "rtp.seq", "rtp.timestamp", "rtp.marker", "rtp.p_type", "rtp.ssrc",
                 "rtp.payload"]
        rows = tshark_fields(self.pcap, names, f"rtp && ip.src == {ANNOUNCER_IP}",
                             ("-d", f"udp.port=={PBX_MEDIA_PORT},rtp"))
        return [dict(zip(names, row)) for row in rows]

    def notices(self) -> list[dict]:
        return notice_rows(self.folder / "data")


def assert_announcement(run: Run, audio: bytes, pt: int) -> None:
    """The RTP from the announcer is exactly the announcement's G.711, in order, well formed."""
    packets = run.rtp()
    assert packets, "no RTP from the announcer in the capture"
    assert {p["udp.dstport"] for p in packets} == {str(PBX_MEDIA_PORT)}
    assert len({p["rtp.ssrc"] for p in packets}) == 1
    assert [int(p["rtp.p_type"]) for p in packets] == [pt] * len(packets)
    assert [p["rtp.marker"] in ("1", "True") for p in packets] == [True] + [False] * (len(packets) - 1)
    seqs = [int(p["rtp.seq"]) for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:])), "sequence numbers not consecutive"
    stamps = [int(p["rtp.timestamp"]) for p in packets]
    assert all((b - a) % 2**32 == 160 for a, b in zip(stamps, stamps[1:])), "timestamps not 160 apart"
    payload = b"".join(bytes.fromhex(p["rtp.payload"].replace(":", "")) for p in packets)
    assert payload == audio


def methods(run: Run) -> list[str]:
    return [m["sip.Method"] or f'{m["sip.Status-Code"]} {m["sip.CSeq.method"]}' for m in run.sip()]


def test_refer_hand_over_with_the_default_announcement(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refer", policy="version: 1\n")
    audio = load_audio(DEFAULT_AUDIO, 30)
    assert_announcement(run, audio.g711["PCMU"], 0)
    sip = run.sip()
    refer = next(m for m in sip if m["sip.Method"] == "REFER")
    assert refer["sip.Refer-To"] == f"<sip:{DID}@{PBX_IP}>"
    assert methods(run)[-2:] == ["BYE", "200 BYE"]
    assert [m for m in methods(run) if "NOTIFY" in m] == ["NOTIFY", "200 NOTIFY", "NOTIFY", "200 NOTIFY"]
    (notice,) = run.notices()
    assert notice["outcome"] == "announced" and notice["hand_over"] == "refer"
    assert (notice["calling_number"], notice["called_number"], notice["destination"]) == (CALLER, DID, DID)
    assert notice["announcement_sha256"] == audio.sha256
    assert notice["announced_from"].endswith("+09:00") and notice["announced_from"] < notice["announced_to"]


def test_pcma_over_tcp(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refer", codec="PCMA", transport="t1")
    assert_announcement(run, load_audio(folder / "tone.wav", 30).g711["PCMA"], 8)
    assert run.notices()[0]["hand_over"] == "refer"


def test_offerless_invite(net: Net, folder: Path) -> None:
    run = Run(net, folder, "offerless")
    assert_announcement(run, load_audio(folder / "tone.wav", 30).g711["PCMU"], 0)
    ok = next(m for m in run.sip() if m["sip.Status-Code"] == "200" and m["sip.CSeq.method"] == "INVITE")
    assert ok["sdp.media"].endswith("RTP/AVP 0 8")  # our offer: both laws


def test_early_media_then_302(net: Net, folder: Path) -> None:
    run = Run(net, folder, "early_302", hand_over="early_media_302")
    assert_announcement(run, load_audio(folder / "tone.wav", 30).g711["PCMU"], 0)
    moved = next(m for m in run.sip() if m["sip.Status-Code"] == "302")
    assert moved["sip.Contact"] == f"<sip:{DID}@{PBX_IP}>"
    assert methods(run)[-1] == "ACK"
    assert run.notices()[0]["hand_over"] == "redirect_302"


def test_refer_answered_403_falls_back_to_the_operator(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refer_403")
    refers = [m["sip.Refer-To"] for m in run.sip() if m["sip.Method"] == "REFER"]
    assert refers == [f"<sip:{DID}@{PBX_IP}>", f"<sip:{OPERATOR}@{PBX_IP}>"]
    assert "level='error' event='announcer.fallback_operator'" in run.log
    (notice,) = run.notices()
    assert notice["hand_over"] == "fallback_operator" and notice["destination"] == OPERATOR


def test_unanswered_refer_falls_back_after_the_timeout(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refer_silent")
    refers = [m["sip.Refer-To"] for m in run.sip() if m["sip.Method"] == "REFER"]
    assert refers == [f"<sip:{DID}@{PBX_IP}>", f"<sip:{OPERATOR}@{PBX_IP}>"]
    assert "reason='no answer to REFER'" in run.log
    assert run.notices()[0]["hand_over"] == "fallback_operator"


def test_cancel_while_ringing(net: Net, folder: Path) -> None:
    run = Run(net, folder, "cancel", ring_seconds=3)
    assert not run.rtp()
    assert "487 INVITE" in methods(run)
    (notice,) = run.notices()
    assert notice["outcome"] == "caller_hung_up" and notice["announced_from"] is None


def test_bye_during_the_announcement(net: Net, folder: Path) -> None:
    run = Run(net, folder, "bye", policy="version: 1\n")
    packets = run.rtp()
    assert 10 < len(packets) < 100  # cut short: the default announcement is 344 packets
    assert "REFER" not in methods(run)
    (notice,) = run.notices()
    assert notice["outcome"] == "caller_hung_up" and notice["announced_to"] is not None


def test_invite_from_an_unknown_address_is_refused(net: Net, folder: Path) -> None:
    run = Run(net, folder, "refused", address=STRANGER_IP)
    assert "403 INVITE" in methods(run)
    assert f"event='announcer.refused' peer='{STRANGER_IP}'" in run.log
    assert not run.rtp() and not run.notices()


def test_options_is_answered(net: Net, folder: Path) -> None:
    run = Run(net, folder, "options", address=STRANGER_IP)
    assert methods(run) == ["OPTIONS", "200 OPTIONS"]


def test_register_with_digest_against_sipp_registrar(net: Net, folder: Path) -> None:
    (folder / "password").write_text("s3cret-test\n", encoding="utf-8")
    path = scenarios.write("registrar", folder)
    log = folder / "registrar.log"
    with log.open("wb") as out:
        registrar = net.lab.start(net.pbx, ["sipp", "-sf", str(path), "-i", PBX_IP, "-p", str(PBX_SIP_PORT), "-m", "1",
                                            "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error", "-trace_err",
                                            "-error_file", str(folder / "registrar_errors.log")],
                                  cwd=folder, stdout=out, stderr=subprocess.STDOUT)
        Lab.wait_for_udp_port(net.pbx, PBX_SIP_PORT, 10)
        registration = ("{registrar: '" + f"{PBX_IP}:{PBX_SIP_PORT}" + "', user: announcer, "
                        "password_file: password, expires: 120}")
        announcer = Announcer(net, folder, config_text(registration=registration), TONE_POLICY)
        try:
            announcer.wait_for("announcer.registered", 20)
            code = Lab.finish(registrar, 20)
        finally:
            announcer.stop()
    assert code == 0, log.read_text(errors="replace")[-2000:]
    assert "announcer.register_failed" not in announcer.log
    assert "expires=120" in announcer.log


# ---- the hand-over as the notice records it (issue 17, item 10) ---------------------------------
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
