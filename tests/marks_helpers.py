"""Shared by the harassment-mark tests: a policy with a `harassment:` section, and a real store
with a few recorded calls (through the engine and the recording store, as the ring test does)."""
from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from policy.schema import Policy
from recorder.engine import Recorder
from storage.marks import Mark, MarkBook
from storage.notices import Notice, NoticeLog
from storage.recordings import RecordingStore
from storage.store import Store
from tests.builders import PBX, TRUNK
from tests.call_frames import T0, bye, media, signalling

TOKYO = ZoneInfo("Asia/Tokyo")
HARASSMENT = """\
harassment:
  clause: 品川区 第1条 (職員への不正な圧力や要求等の排除)
  mark_prefix: "*9"
  categories:
    - id: threat
      label: 脅迫・恐喝
      clause: 品川区 第5条(2)
      digit: "1"
      keep: {years: 5}
    - id: demand
      label: 不当な要求
      clause: 品川区 第5条(2)
      digit: "2"
      keep: {months: 6}
  warning:
    after_marks: 2
    within_days: 90
    announcement: warning.wav
    clause: 品川区 第5条(2)
"""
POLICY = "network: {trunk: [203.0.113.0/28]}\nexcluded_lines: ['0263000000']\n" + HARASSMENT


def marks_policy(extra: str = "") -> Policy:
    return parse_policy(POLICY + extra)


def record_calls(store: Store, callers: list[str], start: float = T0, *, policy: Policy | None = None) -> list[str]:
    """One short inbound call from each caller, a minute apart; their row ids in order."""
    sink = RecordingStore(store.data_dir, store.index, TOKYO, store.master)
    recorder = Recorder(PolicyDecider(policy or marks_policy()), sink)
    ids = []
    for n, caller in enumerate(callers):
        t = start + n * 60
        port = 20000 + 2 * n
        up, _ = media(t + 1.05, 2, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=n + 1, seed=n)
        frames = (signalling(f"m{n}@x", t=t, caller=caller, tport=port, pport=port + 20000) + up
                  + bye(t + 4, f"m{n}@x", caller=caller))
        for ts, frame in sorted(frames, key=lambda f: f[0]):
            recorder.feed_frame(ts, 1, frame)
        recorder.advance(t + 30)
        ids.append(next(r.id for r in store.index.rows() if r.sip_call_id == f"m{n}@x"))
    return ids


def open_store(path: Path) -> Store:
    return Store.open(path, TOKYO, create_key=True)


def noticed_and_marked(store: Store, book: MarkBook, policy: Policy, caller: str) -> tuple[str, str, Mark, Mark]:
    """A recorded call from `caller` whose caller heard the warning announcement, marked as a threat
    from the keypad and as a demand on the console, the demand withdrawn by the manager: what an
    evidence export must carry.  (call id, notice id, the kept mark, the withdrawn one)."""
    (call,) = record_calls(store, [caller], policy=policy)
    row = store.index.get(call)
    assert row is not None and row.recorded_at is not None
    log = NoticeLog(store.index.path, policy.timezone)
    notice_id = log.record(Notice(sip_call_id="ann-1@pbx", received_at=row.recorded_at - 8, outcome="announced",
                                  hand_over="refer", announced_from=row.recorded_at - 7,
                                  announced_to=row.recorded_at - 2, calling_number=caller,
                                  called_number="0263111111", announcement_sha256="ab" * 32,
                                  announcement="warning"))
    log.close()
    store.index.update(call, notice_id=notice_id)
    kept = book.add(call, "threat", marked_by="ext:201", via="dtmf", note="「殺すぞ」")
    wrong = book.add(call, "demand", marked_by="sato", via="console")
    book.withdraw(wrong.id, by="kanri", reason="区分の誤り")
    return call, notice_id, kept, wrong
