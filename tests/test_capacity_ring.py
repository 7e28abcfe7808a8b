"""The capacity ring on the real store: calls recorded until the ring wraps
several times; the store never passes its capacity, the oldest unheld
recordings go first, and held ones stay."""
from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from policy.retention import Retention
from recorder.engine import Recorder
from storage.index import CallRow
from storage.recordings import RecordingStore
from storage.store import Store
from storage.sweep import sweep
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY, T0, bye, media, signalling

CAPACITY = 1024 * 1024
CALLS = 40
TOKYO = ZoneInfo("Asia/Tokyo")


def test_ring_wraps_within_capacity_oldest_first_holds_kept(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data", TOKYO, create_key=True)
    rules = Retention(capacity=CAPACITY, free_space_floor=1024 * 1024)
    sink = RecordingStore(store.data_dir, store.index, TOKYO, store.master)
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    order: list[str] = []
    held: set[str] = set()
    erased_in_order: list[str] = []
    call_size = 0
    try:
        for n in range(CALLS):
            start = T0 + n * 60
            result = sweep(store, rules, start, "test", incoming_bytes=call_size)
            erased_in_order += result.erased
            newest = record_call(recorder, store, n, start)
            order.append(newest.id)
            call_size = max(call_size, newest.size_bytes)
            assert store.index.used_bytes() <= CAPACITY, f"after call {n}: {store.index.used_bytes()} bytes"
            if n in (3, 4):
                store.index.update(newest.id, held=True, hold_reason="訴訟", held_since="2025-01-01")
                held.add(newest.id)
        kept = {r.id for r in store.index.kept()}
    finally:
        store.close()
    unheld = [i for i in order if i not in held]
    assert erased_in_order == unheld[:len(erased_in_order)], "the oldest unheld recordings go first"
    assert len(erased_in_order) > 4 * CAPACITY // call_size, "the ring wrapped several times"
    assert held <= kept, "held recordings survive the ring"
    assert kept == held | set(unheld[len(erased_in_order):])


def record_call(recorder: Recorder, store: Store, n: int, start: float) -> CallRow:
    """Call number `n`: 8 s of inbound audio from `start` (its own ports and SSRC), then its row."""
    port = 20000 + 2 * n
    up, _ = media(start + 1.05, 8, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=n + 1, seed=n)
    frames = signalling(f"c{n}@x", t=start, tport=port, pport=port + 20000) + up + bye(start + 10, f"c{n}@x")
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    recorder.advance(start + 30)
    return next(r for r in store.index.rows() if r.sip_call_id == f"c{n}@x")
