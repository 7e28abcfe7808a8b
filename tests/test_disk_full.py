"""A full disk stops recordings cleanly and nothing stored is damaged;
recording resumes when space returns (a small tmpfs of the test's own)."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import soundfile

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from storage.index import CallIndex
from storage.recordings import RecordingStore
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.interop import recording_bytes, store_key

pytestmark = pytest.mark.root


def test_disk_full_stops_cleanly_and_recording_resumes(small_disk: Callable[[str], Path]) -> None:
    data = small_disk("3m")
    index = CallIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data), min_free_bytes=512 * 1024)
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), store)
    filler = data / "filler"
    free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
    filler.write_bytes(b"\0" * (free - 1200 * 1024))
    long_call, _ = media(T0 + 1.05, 90, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    frames = signalling() + long_call + bye(T0 + 92)
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    filler.unlink()
    later, payloads = media(T0 + 101.05, 5, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=2)
    frames = signalling("c2@x", t=T0 + 100, tport=20002, pport=40002) + later + bye(T0 + 107, "c2@x")
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    first, second = [r.as_dict() for r in index.rows()]
    index.close()
    assert first["end_reason"] == "write_failed" and not first["complete"]
    kept = recording_bytes(data, first)
    info = soundfile.info(io.BytesIO(kept))
    assert info.frames == first["audio_frames"] and 8000 * 10 < info.frames < 8000 * 90
    assert hashlib.sha256(kept).hexdigest() == first["sha256"]
    assert second["complete"] and second["end_reason"] == "bye_remote"
    assert soundfile.info(io.BytesIO(recording_bytes(data, second))).frames > 8000 * 5
