"""Proof of notice on the call the caller actually had (issue 17, item 10).

The link from a recording to its notice (storage.notices.find, storage.recordings), driven
directly: a REFER'd call that begins seconds after the notice was taken, the operator fallback,
a caller who hangs up during the announcement and calls again, Replaces and Referred-By, the
policy's window; the announcer's own dialog is recorded as its leg of the call it served. And the
announcer's side: the notice is on disk before the SIP it explains leaves, it records the REFER's
target and a Referred-By token, and a 302 the PBX does not carry out is `redirect_failed`.
"""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

from announcer.effects import CallEnded, NoticeChanged, RedirectFailed
from announcer.transaction import T1
from policy.decide import Direction
from policy.schema import Policy
from recorder.record import CallResult, CallSnapshot
from storage.index import CallIndex
from storage.notices import Dialog, Notice, NoticeLog, Tie, referral_token
from storage.recordings import RecordingStore
from storage.search import CallQuery, select
from tests.announcer.loopback import hand_over, hand_over_to_the_end, setup
from tests.announcer.pbx import CALLER, DID, KEY, Harness, ack_for, answered, find, invite, referred
from tests.interop import store_key

T0 = 1_790_000_000.0
EXT, OPERATOR = "201", "9000"
REFERRED_BY = f"<sip:{DID}@192.0.2.20>;callrec-ref=a1b2c3d4"


def announced(**changes: object) -> Notice:
    """A notice as the announcer leaves it after a REFER: received at T0, a 5.2 s announcement,
    REFER at T0 + 5.5 to the extension, the caller gone from the announcer at T0 + 7.4."""
    values: dict[str, object] = dict(
        sip_call_id="ann-1@pbx", received_at=T0, outcome="announced", hand_over="refer", announced_from=T0 + 0.3,
        announced_to=T0 + 5.5, calling_number=CALLER, called_number=DID, destination=EXT,
        refer_target=f"sip:{EXT}@192.0.2.10", referred_by=REFERRED_BY, handed_over_at=T0 + 5.5, link_seconds=15.0,
        left_at=T0 + 7.4)
    values.update(changes)
    return Notice(**values)  # type: ignore[arg-type]


def dialog(call_id: str = "conv@caller", start: float = T0 + 6.9, **changes: object) -> Dialog:
    """The call the REFER led to: the caller's new INVITE to the extension, 6.9 s after the notice."""
    values: dict[str, object] = dict(sip_call_id=call_id, invite_ts=start, end_ts=start + 60, caller=CALLER,
                                     callee=EXT)
    values.update(changes)
    return Dialog(**values)  # type: ignore[arg-type]


def log_with(tmp_path: Path, *notices: Notice) -> tuple[NoticeLog, list[str]]:
    log = NoticeLog(tmp_path / "index.sqlite3")
    return log, [log.record(n) for n in notices]


# ---- the link ------------------------------------------------------------------------------
def test_the_transferred_call_finds_its_notice_seven_seconds_on(tmp_path: Path) -> None:
    log, (notice_id,) = log_with(tmp_path, announced())
    (match,) = log.find(dialog())
    assert match.row.id == notice_id and match.tie is Tie.TRANSFER and round(match.distance, 1) == 1.4


def test_the_operator_fallback_links_by_its_destination(tmp_path: Path) -> None:
    log, (notice_id,) = log_with(tmp_path, announced(hand_over="fallback_operator", destination=OPERATOR,
                                                     refer_target=f"sip:{OPERATOR}@192.0.2.10",
                                                     handed_over_at=T0 + 9.6, left_at=T0 + 11.0))
    assert [m.row.id for m in log.find(dialog(start=T0 + 10.1, callee=OPERATOR))] == [notice_id]
    assert log.find(dialog(start=T0 + 10.1, callee=EXT)) == [], "the extension never got the call"


def test_a_caller_who_redials_gets_the_notice_of_the_second_call(tmp_path: Path) -> None:
    """Hung up 3 s into the announcement, called again 1 s later: the conversation (and the trunk
    leg a B2BUA PBX keeps for it) belong to the second notice, the nearest, not the first."""
    first = announced(sip_call_id="ann-1@pbx", outcome="caller_hung_up", hand_over="none", announced_to=T0 + 3.3,
                      refer_target=None, referred_by=None, handed_over_at=None, left_at=T0 + 3.3)
    second = announced(sip_call_id="ann-2@pbx", received_at=T0 + 4.3, announced_from=T0 + 4.6,
                       announced_to=T0 + 9.8, handed_over_at=T0 + 9.8, left_at=T0 + 11.2)
    log, (_, second_id) = log_with(tmp_path, first, second)
    assert [m.row.id for m in log.find(dialog(start=T0 + 10.0))] == [second_id]
    trunk = log.find(dialog("trunk-2@carrier", start=T0 + 4.2, callee=DID))
    assert [m.row.id for m in trunk][:1] == [second_id] and trunk[0].tie is Tie.CALLED


def test_replaces_and_referred_by_tie_whatever_the_numbers(tmp_path: Path) -> None:
    """A PBX that copies the REFER's Referred-By, or replaces the announcer's dialog, ties the new
    call even when it shows another caller ID and begins late."""
    log, (notice_id, _) = log_with(tmp_path, announced(), announced(sip_call_id="other@pbx", referred_by=None))
    by_referral = log.find(dialog(start=T0 + 40, caller="0399990000", referred_by='<sip:x@y>;callrec-ref="a1b2c3d4"'))
    assert [(m.row.id, m.tie) for m in by_referral] == [(notice_id, Tie.REFERRED_BY)]
    by_replaces = log.find(dialog(start=T0 + 40, caller=None, replaces="ann-1@pbx"))
    assert [(m.row.id, m.tie) for m in by_replaces] == [(notice_id, Tie.REPLACES)]
    assert referral_token("<sip:x@y>;callrec-ref=%25") is None, "a token is a plain word"


def test_the_window_follows_the_hand_over_and_the_policy(tmp_path: Path) -> None:
    """A long announcement moves the window with it; the policy's handover_seconds closes it."""
    log, (long_id, short_id) = log_with(
        tmp_path, announced(announced_to=T0 + 29.5, handed_over_at=T0 + 29.5, left_at=T0 + 31.0),
        announced(sip_call_id="ann-2@pbx", calling_number="0311112222", link_seconds=3.0))
    assert [m.row.id for m in log.find(dialog(start=T0 + 31.0))] == [long_id]
    late = dialog(start=T0 + 9.5, caller="0311112222")
    assert log.find(late) == [], "4 s after the hand-over is outside a 3 s window"
    assert [m.row.id for m in log.find(dialog(start=T0 + 7.0, caller="0311112222"))] == [short_id]


def test_a_call_back_from_the_extension_is_not_the_caller_s_call(tmp_path: Path) -> None:
    log, _ = log_with(tmp_path, announced())
    assert log.find(dialog(start=T0 + 8, caller=EXT, callee=CALLER)) == []


def test_notices_of_an_older_index_get_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notices (id TEXT PRIMARY KEY, sip_call_id TEXT NOT NULL, received_at TEXT NOT NULL,"
                     " received_epoch REAL NOT NULL, announced_from TEXT, announced_to TEXT, calling_number TEXT,"
                     " called_number TEXT, announcement_sha256 TEXT, outcome TEXT NOT NULL,"
                     " reason TEXT NOT NULL DEFAULT '', hand_over TEXT NOT NULL, destination TEXT);"
                     "INSERT INTO notices VALUES ('old', 'c@x', '', 1.0, NULL, NULL, NULL, NULL, NULL, 'announced',"
                     " '', 'refer', NULL);")
    db.close()
    log = NoticeLog(path)
    row = log.get("old")
    assert row is not None and row.refer_target is None and row.handover_epoch is None
    assert log.get(log.record(announced())).referred_by == REFERRED_BY  # type: ignore[union-attr]


# ---- the recording's row ---------------------------------------------------------------------
def snapshot(serial: int, call_id: str, start: float, end: float, caller: str, callee: str,
             **changes: object) -> CallSnapshot:
    values: dict[str, object] = dict(
        serial=serial, sip_call_id=call_id, invite_ts=start, answer_ts=start + 0.05, end_ts=end,
        direction=Direction.INBOUND, local_number=callee, remote_number=caller, caller=caller, callee=callee,
        caller_withheld=False, codecs=("PCMU",), end_reason="bye_remote", complete=True)
    values.update(changes)
    return CallSnapshot(**values)  # type: ignore[arg-type]


def record(store: RecordingStore, call: CallSnapshot) -> None:
    store.begin(call, call.invite_ts)
    store.finish_without_audio(CallResult(call, call.invite_ts, 0, None, (), (), (), 0))


def test_one_phone_call_through_a_refer_is_one_call_with_its_announcer_leg(tmp_path: Path) -> None:
    """The dialog the announcer answered (through a proxy PBX, the caller's own) is its leg of the
    call; the conversation after the REFER carries the proof of notice."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    index = CallIndex(data / "index.sqlite3")
    notices = NoticeLog(index.path)
    notice_id = notices.record(announced())
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data))
    record(store, snapshot(1, "ann-1@pbx", T0 - 0.02, T0 + 7.4, CALLER, DID))
    record(store, snapshot(2, "conv@caller", T0 + 6.9, T0 + 70, CALLER, EXT))
    record(store, snapshot(3, "other@caller", T0 + 7.0, T0 + 50, "0399990000", EXT))
    rows = {r.sip_call_id: r for r in index.rows()}
    leg, call, other = rows["ann-1@pbx"], rows["conv@caller"], rows["other@caller"]
    assert (leg.leg, leg.notice_id) == ("announcer", notice_id)
    assert (call.leg, call.notice_id) == (None, notice_id)
    assert call.announced_at == notices.get(notice_id).announced_from  # type: ignore[union-attr]
    assert other.notice_id is None
    assert [r.id for r in index.rows() if r.leg is None and r.notice_id == notice_id] == [call.id]
    listed = select(index, CallQuery(remote_number=CALLER))
    assert [r.id for r in listed] == [call.id], "the announcer's leg is listed and found only as a part"
    assert [p.id for p in index.parts(call)] == [leg.id] and [p.id for p in index.parts(leg)] == [call.id]


def test_a_caller_who_hung_up_during_the_announcement_keeps_a_call_of_its_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    index = CallIndex(data / "index.sqlite3")
    NoticeLog(index.path).record(announced(outcome="caller_hung_up", hand_over="none", refer_target=None,
                                           handed_over_at=None, left_at=T0 + 3.0))
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data))
    record(store, snapshot(1, "ann-1@pbx", T0 - 0.02, T0 + 3.0, CALLER, DID))
    (row,) = index.rows()
    assert row.notice_id is not None and row.leg is None and row.announced_at is None


# ---- the announcer ------------------------------------------------------------------------------
def test_the_notice_is_noted_before_the_refer_and_names_its_target() -> None:
    h = Harness.make(Policy.model_validate({"announcement": {"handover_seconds": 20}}))
    answered(h)
    before = len(h.effects)
    refer = referred(h)
    noted = [e for e in h.effects[before:] if isinstance(e, NoticeChanged)]
    assert noted and noted[-1].refer_target == f"sip:{DID}@192.0.2.10" and noted[-1].link_seconds == 20
    assert noted[-1].handed_over_at == h.now and noted[-1].outcome == "announced"
    token = referral_token(refer.header("referred-by"))
    assert token and noted[-1].referred_by == refer.header("referred-by")


def test_an_unacknowledged_302_is_a_failed_redirect() -> None:
    h = Harness.make(hand_over="early_media_302")
    h.deliver(invite())
    h.playback_done(KEY)
    (ended,) = h.ended
    assert ended.hand_over == "redirect_302" and ended.refer_target == f"sip:{DID}@192.0.2.10"
    h.advance(64 * T1 + 1)
    assert [(e.key, e.reason) for e in h.of(RedirectFailed)] == [(KEY, "the PBX never acknowledged the 302")]


def test_a_302_the_pbx_sends_back_is_refused_and_a_failed_redirect() -> None:
    h = Harness.make(hand_over="early_media_302")
    h.deliver(invite())
    moved = find(h.playback_done(KEY), status=302)
    h.deliver(ack_for(moved, branch="z9hG4bKinv1"))
    again = h.deliver(invite(branch="z9hG4bKinv2"))
    assert [m.status for m in again] == [482]
    assert [e.reason for e in h.of(RedirectFailed)] == ["the PBX sent the redirected call back to the announcer"]
    assert len(h.of(CallEnded)) == 1 and len(h.playbacks) == 1, "the caller does not hear the notice twice"
    h.advance(64 * T1 + 1)
    assert len(h.of(RedirectFailed)) == 1


async def test_the_pbx_never_sees_a_refer_whose_notice_is_not_on_disk(tmp_path: Path) -> None:
    """The service writes a step's notice before it sends that step's SIP: when the REFER reaches
    the PBX (and the recorder's mirror), the row already names its target and hand-over time."""
    service, pbx, transport, _, media_transport, ok, port = await setup(tmp_path, 0.6)
    try:
        refer = await pbx.expect("REFER")
        db = sqlite3.connect(tmp_path / "index.sqlite3")
        (row,) = db.execute("SELECT outcome, hand_over, refer_target, referred_by, handover_epoch, left_epoch"
                            " FROM notices").fetchall()
        db.close()
        assert row[:4] == ("announced", "refer", "sip:0355550100@127.0.0.1", refer.header("referred-by"))
        assert row[4] is not None and row[5] is None
        pbx.queue.put_nowait(refer)
        await hand_over(pbx, transport, ok, port)
        while service.active_calls:
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
        transport.close()
        media_transport.close()
    log = NoticeLog(tmp_path / "index.sqlite3")
    (match,) = log.find(Dialog(sip_call_id=ok.call_id or "", invite_ts=row[4], end_ts=None, caller=CALLER,
                               callee=DID))
    log.close()
    assert match.row.left_epoch is not None and match.row.left_epoch >= row[4]


async def test_a_notice_the_disk_refuses_does_not_keep_the_caller_from_the_extension(tmp_path: Path) -> None:
    """Writing the notice first must not make a full disk strand the call: the REFER still goes."""
    service, pbx, transport, _, media_transport, ok, port = await setup(tmp_path, 0.6)

    def refuse(*_: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    assert service._notices is not None
    service._notices.update = refuse  # type: ignore[method-assign]
    service._notices.record = refuse  # type: ignore[method-assign]
    await hand_over_to_the_end(service, pbx, transport, media_transport, ok, port)
