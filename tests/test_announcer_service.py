"""AnnouncerService as the daemon will run it (start()/stop() inside its event loop), on loopback
with real UDP sockets: the test is the PBX."""
from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

from storage.notices import Dialog, NoticeLog
from tests.announcer.loopback import hand_over, setup


def own_dialog() -> Dialog:
    """The dialog the test (as the PBX) had with the announcer, as the recorder would see it."""
    return Dialog(sip_call_id="call-1@pbx", invite_ts=time.time(), end_ts=None, caller="0312345678",
                  callee="0355550100")


async def test_one_call_through_the_service(tmp_path: Path) -> None:
    service, pbx, transport, media, media_transport, ok, port = await setup(tmp_path, 1.0)
    try:
        await hand_over(pbx, transport, ok, port)
        for _ in range(100):
            if service.active_calls == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
        transport.close()
        media_transport.close()
    audio = service.audio.g711["PCMU"]
    assert len(media.packets) == len(audio) // 160
    assert b"".join(p[12:] for p in media.packets) == audio
    seqs = [struct.unpack("!H", p[2:4])[0] for p in media.packets]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:]))
    log = NoticeLog(tmp_path / "index.sqlite3")
    rows = [m.row for m in log.find(own_dialog())]
    log.close()
    assert [r.outcome for r in rows] == ["announced"]


async def test_stop_hands_calls_over_at_once(tmp_path: Path) -> None:
    service, pbx, transport, media, media_transport, ok, port = await setup(tmp_path, 20.0)
    try:
        while len(media.packets) < 10:
            await asyncio.sleep(0.02)
        stopping = asyncio.ensure_future(service.stop())
        await hand_over(pbx, transport, ok, port)
        await asyncio.wait_for(stopping, 10)
    finally:
        transport.close()
        media_transport.close()
    assert len(media.packets) < 200  # far less than the 1000 packets of 20 s
    db = NoticeLog(tmp_path / "index.sqlite3")
    (row,) = [m.row for m in db.find(own_dialog())]
    db.close()
    assert row.outcome == "interrupted" and row.hand_over == "refer"
