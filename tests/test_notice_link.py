"""Proof of notice reaches the recording: the announcer (the real service
on loopback, the test playing the PBX) writes its notice of an inbound call,
and the recorder, seeing the trunk leg of the same call on the mirror (its
own Call-ID), links its recording to that notice, so `callrec calls show`
says whether and when the caller heard that the call is recorded."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.announcer.loopback import hand_over_to_the_end, setup
from tests.builders import PBX, TRUNK, write_pcap
from tests.call_frames import bye, media, signalling
from tests.interop import run_cli

CALLER, DID = "0312345678", "0355550100"


def trunk_call(call_id: str, start: float, caller: str, port: int) -> list[tuple[float, bytes]]:
    """The carrier's leg, as the mirror shows it: INVITE, 200, ACK, RTP, BYE."""
    up, _ = media(start + 1.05, 2, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=port)
    return (signalling(call_id, callee=DID, caller=caller, t=start, tport=port, pport=port + 20000) + up
            + bye(start + 4, call_id, DID, caller))


async def test_recording_says_when_the_caller_heard_the_notice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    heard_from = time.time()
    service, pbx, transport, _, media_transport, ok, port = await setup(data, 1.0)
    await hand_over_to_the_end(service, pbx, transport, media_transport, ok, port)

    frames = (trunk_call("announced@trunk", heard_from - 0.5, "+81312345678", 20000)
              + trunk_call("other@trunk", heard_from - 0.4, "0399998888", 20002)
              + trunk_call("later@trunk", heard_from + 600, "+81312345678", 20004))
    policy = tmp_path / "policy.yaml"
    policy.write_text("network: {trunk: [203.0.113.0/28], pbx: [192.0.2.10]}\n")
    run_cli("replay", write_pcap(tmp_path / "mirror.pcap", frames), "--data-dir", data, "--policy", policy)
    rows = {r["sip_call_id"]: r for r in json.loads(run_cli("calls", "list", "--json", "--data-dir", data).stdout)}
    announced = rows["announced@trunk"]
    assert announced["remote_number"] == CALLER and announced["local_number"] == DID
    assert announced["direction"] == "inbound"
    assert announced["notice_id"] and announced["announced_at"]
    assert abs(_epoch(announced["announced_at"]) - heard_from) < 2
    assert rows["other@trunk"]["notice_id"] is None, "another caller's call is not the announced one"
    assert rows["later@trunk"]["notice_id"] is None, "the same caller ten minutes later was not announced"
    shown = run_cli("calls", "show", announced["id"], "--data-dir", data).stdout
    assert "notice" in shown and "announced" in shown and "sha256" in shown


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()
