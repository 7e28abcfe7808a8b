"""Shared by the harassment-mark tests: a policy with a `harassment:` section, and a real store
with a few recorded calls (through the engine and the recording store, as the ring test does)."""
from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from policy.schema import Policy
from recorder.engine import Recorder
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
