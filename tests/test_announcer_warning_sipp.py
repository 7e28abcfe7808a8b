"""The caller next time (issue 18 item 4) on the wire: `callrec announcer` in one network
namespace, SIPp as the PBX in another, tcpdump on the PBX's side and tshark as the judge.

The data folder holds two recorded calls from one number, both marked as harassment: the
policy's warning rule (two marked calls within 90 days) names that number, so its next call
hears the warning (the RTP is exactly the warning's G.711) and another number's call the
ordinary notice; each notice row says which it was played. Then the manager clears the number
and the same caller hears the notice again.

Needs root, iproute2, sip-tester, tcpdump and tshark (as tests/test_announcer_sipp.py): without
them the test fails with the reason, it never skips.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from announcer.audio import load_audio
from storage.marks import MarkBook
from storage.warnings import WarningList
from tests.announcer.lab import (
    ANNOUNCER_IP,
    CALLER,
    PBX_IP,
    PBX_MEDIA_PORT,
    STRANGER_IP,
    Announcer,
    Capture,
    Net,
    config_text,
    sipp,
)
from tests.interop import notice_rows, tshark_fields
from tests.marks_helpers import HARASSMENT, marks_policy, open_store, record_calls
from tests.sipp.netns import Lab, preflight, reap_stale

pytestmark = pytest.mark.root

OTHER = "0398765432"
POLICY = "announcement:\n  audio: tone.wav\n" + HARASSMENT


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with Lab() as lab:
        preflight()
        reap_stale()
        pbx = lab.namespace("marksout-pbx")
        announcer = lab.namespace("marksout-ua")
        lab.veth(pbx, "pbx0", announcer, "ua0")
        lab.address(pbx, "pbx0", f"{PBX_IP}/24")
        lab.address(pbx, "pbx0", f"{STRANGER_IP}/24")
        lab.address(announcer, "ua0", f"{ANNOUNCER_IP}/24")
        yield Net(lab, pbx, announcer)


def _tone(path: Path, low: float, high: float) -> None:
    t = np.arange(int(1.0 * 8000)) / 8000
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * (low + (high - low) * t) * t), 8000)


def _streams(pcap: Path) -> list[bytes]:
    """The announcer's RTP streams in the order they began, each as its payload."""
    names = ["rtp.ssrc", "rtp.payload"]
    rows = tshark_fields(pcap, names, f"rtp && ip.src == {ANNOUNCER_IP}", ("-d", f"udp.port=={PBX_MEDIA_PORT},rtp"))
    streams: dict[str, list[bytes]] = {}
    for ssrc, payload in rows:
        streams.setdefault(ssrc, []).append(bytes.fromhex(payload.replace(":", "")))
    return [b"".join(parts) for parts in streams.values()]


def test_the_marked_number_hears_the_warning_and_others_the_notice(net: Net, tmp_path: Path) -> None:
    _tone(tmp_path / "tone.wav", 300, 800)
    _tone(tmp_path / "warning.wav", 900, 1400)
    notice, warning = (load_audio(tmp_path / name, 30) for name in ("tone.wav", "warning.wav"))
    policy = marks_policy()
    with open_store(tmp_path / "data") as store, MarkBook(store, policy.harassment) as book:
        for call_id in record_calls(store, [CALLER, "+81" + CALLER[1:]], policy=policy):
            book.add(call_id, "threat", marked_by="sato", via="console")
        recorded = store.index.path

    announcer = Announcer(net, tmp_path, config_text(), POLICY)
    capture = Capture(net, tmp_path / "wire.pcap")
    try:
        assert f"warning_sha256='{warning.sha256}'" in announcer.log
        sipp(net, tmp_path, "refer", caller=CALLER)
        sipp(net, tmp_path, "refer", caller=OTHER)
        assert policy.harassment is not None and policy.harassment.warning is not None
        with open_store(tmp_path / "data") as store, \
                WarningList(recorded, policy.harassment.warning, "81") as warnings:
            assert warnings.clear(store, CALLER, by="kanri", reason="本人から謝罪があった") == 2
        sipp(net, tmp_path, "refer", caller=CALLER)
    finally:
        pcap = capture.stop()
        code = announcer.stop()
    assert code == 0 and "Traceback" not in announcer.log, announcer.log

    first, second, third = _streams(pcap)
    assert first == warning.g711["PCMU"], "the marked number's call played the warning, byte for byte"
    assert second == notice.g711["PCMU"], "another number's call played the ordinary notice"
    assert third == notice.g711["PCMU"], "once cleared, the same number hears the notice again"
    rows = sorted(notice_rows(tmp_path / "data"), key=lambda r: r["received_epoch"])
    assert [(r["calling_number"], r["announcement"], r["announcement_sha256"]) for r in rows] == [
        (CALLER, "warning", warning.sha256), (OTHER, "notice", notice.sha256), (CALLER, "notice", notice.sha256)]
    assert [r["outcome"] for r in rows] == ["announced"] * 3
    assert "announcement='warning'" in announcer.log and CALLER not in announcer.log
