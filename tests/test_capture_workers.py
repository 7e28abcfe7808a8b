"""Several capture workers (issue 13, item 2): recorder.fanout, callrec.capture_worker, callrec.workers.

The pure parts first (the flow function, the owner, the hold-back merge, the
channel).  Then against the kernel (root): a fanout group of media sockets
hands each flow, both directions, to the worker flow_worker names, and the
signalling sockets see all SIP and nothing else.  Then the daemon end to
end on the SPAN switch of tests/live (root, SIPp): two workers record what
one worker records, beside it on the same traffic; an excluded line leaves
nothing in any worker; a worker killed with SIGKILL mid-call is restarted
and its calls repaired as after a crash; `status` shows each worker.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from callrec.capture_worker import Holdback, WorkerSink
from callrec.worker_channel import Reader, encode
from policy.decide import PolicyDecider
from policy.loader import load_policy
from recorder.batch import FrameBatch
from recorder.engine import Recorder
from recorder.fanout import call_owner, flow_worker, frame_endpoints
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY as CALL_POLICY
from tests.call_frames import T0, bye, media, signalling
from tests.interop import recording_bytes, run_cli
from tests.live.daemon import Daemon
from tests.live.sipp import Caller
from tests.live.span import Witness, build
from tests.raw_frames import DOT1AD, DOT1Q, eth, frag6, ipv4, ipv6, tcp, udp
from tests.sipp.captures import EXCLUDED
from tests.sipp.netns import Lab, preflight, reap_stale
from tests.test_live_capture import Pair, collect, inside, pair, raw_sender  # noqa: F401 - the fixture
from tests.test_live_e2e import CRASH_MAX_LOST, TALK_BEFORE_CUT, Rig, _complete_call_problems, _cut_call_problems

TWO = "capture_workers: 2\n"
A4, B4 = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
TRUNK4, PBX4 = bytes([203, 0, 113, 1]), bytes([192, 0, 2, 10])


# ---- pure ---------------------------------------------------------------------------
def test_flow_function_is_symmetric_and_spreads_even_ports() -> None:
    seen = [0, 0]
    for port in range(20000, 22000, 2):
        there = flow_worker(A4, port, B4, 30000 + port % 1000 * 2, 2)
        assert there == flow_worker(B4, 30000 + port % 1000 * 2, A4, port, 2)
        seen[there] += 1
    assert min(seen) > 400, seen  # RTP ports are even: the low bit alone would put them all on one side


def test_owner_from_sdp_pair_else_call_id() -> None:
    a, b = [(A4, 20000)], [(B4, 30002)]
    assert call_owner((a, b), "x", 2) == call_owner((b, a), "y", 2) == flow_worker(A4, 20000, B4, 30002, 2)
    assert call_owner(([], b), "abc", 3) == call_owner(([], []), "abc", 3)
    assert call_owner((a, b), "x", 1) == 0


def test_frame_endpoints_behind_tags_and_over_ipv6() -> None:
    frame = eth(0x0800, ipv4(17, udp(4000, 5002)))
    assert frame_endpoints(frame) == ((A4, 4000), (B4, 5002))
    tagged = eth(0, b"", [(DOT1AD, 1), (DOT1Q, 2)])[:-2] + frame[12:]
    assert frame_endpoints(tagged) == ((A4, 4000), (B4, 5002))
    six = frame_endpoints(eth(0x86DD, ipv6(17, udp(4000, 5002))))
    assert six is not None and six[0][1] == 4000 and len(six[1][0]) == 16
    assert frame_endpoints(eth(0x0800, ipv4(6, tcp(1, 2)))) is None
    assert frame_endpoints(eth(0x86DD, ipv6(44, frag6(17, b"x")))) is None
    assert frame_endpoints(b"\x00" * 10) is None


def test_holdback_releases_in_capture_order_across_sources() -> None:
    hold = Holdback(3)
    media = [(t / 100, 1, b"m%d" % t) for t in range(100)]
    hold.add(0, FrameBatch.from_frames(media[:60]))
    hold.add(0, FrameBatch.from_frames(media[60:]))
    hold.add(1, FrameBatch.from_frames([(0.055, 1, b"s1"), (0.505, 1, b"s2")]))
    hold.add(2, FrameBatch.from_frames([(0.3, 1, b"f1"), (0.2, 1, b"f2")]))
    out = hold.release(0.5)
    assert out is not None
    frames = list(out.frames())
    assert [f[0] for f in frames] == sorted(f[0] for f in frames) and len(frames) == 51 + 1 + 2
    assert sorted(f[2] for f in frames) == sorted([m[2] for m in media[:51]] + [b"s1", b"f1", b"f2"])
    assert hold.held == 49 + 1
    assert hold.release(0.0) is None
    rest = hold.release(float("inf"))
    assert rest is not None and [f[2] for f in rest.frames()][:2] == [b"s2", b"m51"] and hold.held == 0


def test_channel_frames_split_anywhere() -> None:
    data = encode(("append", 3, b"x" * 1000)) + encode(("stats", {"a": 1}))
    reader = Reader()
    got = [m for i in range(0, len(data), 7) for m in reader.feed(data[i:i + 7])]
    assert got == [("append", 3, b"x" * 1000), ("stats", {"a": 1})]
    with pytest.raises(ValueError, match="bytes"):
        list(Reader().feed(struct.pack("!I", 1 << 30) + b"x"))


# ---- the kernel ----------------------------------------------------------------------
@pytest.mark.root
def test_kernel_fanout_puts_each_flow_where_flow_worker_says(pair: Pair) -> None:  # noqa: F811
    from recorder.live_capture import LiveCapture

    with inside(pair.rx):
        media = [LiveCapture(pair.rx_dev, part="media", fanout_group=4242, block_timeout_ms=10) for _ in range(2)]
        sip = [LiveCapture(pair.rx_dev, part="signalling", block_timeout_ms=10) for _ in range(2)]
    try:
        sent: dict[tuple[int, int], int] = {}
        with raw_sender(pair.tx, pair.tx_dev) as tx:
            for n in range(200):
                sport, dport = 20000 + 2 * n, 40000 + 6 * n
                frame = eth(0x0800, ipv4(17, udp(sport, dport, struct.pack("!I", n) * 3)))
                back = frame[:26] + frame[30:34] + frame[26:30] + udp(dport, sport, struct.pack("!I", n) * 3)
                for f in (frame, back):
                    tx.send(f)
                    sent[struct.unpack_from("!HH", f, 34)] = flow_worker(A4, sport, B4, dport, 2)
            tx.send(eth(0x0800, ipv4(17, udp(5060, 5060, b"INVITE sip:x SIP/2.0\r\n"))))
            tx.send(eth(0x0800, ipv4(17, b"fragment", frag=0x0020)))
        for k, cap in enumerate(media):
            frames = collect(cap)
            wrong = [f for f in frames if sent.get(struct.unpack_from("!HH", f[2], 34)) != k]
            assert frames and not wrong, (k, len(frames), len(wrong))
        assert sum(len(collect(c, quiet=0.1)) for c in media) == 0
        for cap in sip:
            frames = collect(cap)
            assert len(frames) == 2, [f[2][14:40] for f in frames]
    finally:
        for cap in media + sip:
            cap.close()


# ---- the daemon end to end -------------------------------------------------------------
@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    preflight()
    reap_stale()
    with Lab() as lab:
        span = build(lab, "fanout")
        yield Rig(lab, span, tmp_path, Witness(span, tmp_path / "wire.pcap"))


def _daemon(rig: Rig, name: str, settings: str = TWO) -> Daemon:
    folder = rig.tmp / name
    folder.mkdir()
    return Daemon(rig.span, folder, folder / "data", settings=settings)


def _status(daemon: Daemon) -> dict:
    out = run_cli("status", "--config", daemon.config, "--json", check=False)
    return json.loads(out.stdout)


_SAME = ("sip_call_id", "state", "direction", "local_number", "remote_number", "complete", "end_reason",
         "audio_format", "audio_frames", "started_at", "answered_at", "ended_at", "duration", "codecs", "streams",
         "sha256")


_TIMES = frozenset({"started_at", "answered_at", "ended_at", "duration"})


def _seconds(value: object) -> float | None:
    """A row's time as seconds (the two captures' kernel timestamps differ by microseconds)."""
    if isinstance(value, float | int):
        return float(value)
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None


def _channels(wav: bytes) -> list[bytes]:
    """Each channel's samples, from the header's channel count and block size."""
    channels, align = struct.unpack_from("<H", wav, 22)[0], struct.unpack_from("<H", wav, 32)[0]
    width = align // channels
    data = wav[wav.index(b"data") + 8:]
    return [b"".join(data[i + c * width:i + (c + 1) * width] for i in range(0, len(data), align)) for c in range(channels)]


def _same_audio(one: bytes, two: bytes, most: int = 2) -> bool:
    """The same samples in each channel, each channel moved by at most ``most`` samples on its own:
    every socket takes its own timestamps, so a few microseconds can put the answer, or a channel's
    first packet, on the other side of a sample boundary."""
    width = struct.unpack_from("<H", one, 32)[0] // struct.unpack_from("<H", one, 22)[0]
    return all(_same_channel(a, b, width, most) for a, b in zip(_channels(one), _channels(two), strict=True))


def _same_channel(a: bytes, b: bytes, width: int, most: int) -> bool:
    if abs(len(a) - len(b)) > most * width:
        return False
    for k in range(most + 1):
        for x, y in ((a, b), (b, a)):
            moved = x[k * width:]
            n = min(len(moved), len(y)) - most * width
            if moved[:n] == y[:n]:
                return True
    return False


@pytest.mark.root
def test_two_workers_record_what_one_worker_records(rig: Rig) -> None:
    one, two = _daemon(rig, "one", ""), _daemon(rig, "two")
    try:
        one.start()
        two.start()
        assert rig.batch(Caller(calls=20, limit=6, rate=4), seconds=3.0).wait() == 20
        wire = rig.wire()
        answered = set(wire.answered())
        rows_one, rows_two = one.sealed_rows(answered), two.sealed_rows(answered)
        assert len(one.rows()) == len(two.rows()) == 20
        found = [f"two workers: {p}" for p in _complete_call_problems(two, wire, rows_two)]
        found += [f"one worker: {p}" for p in _complete_call_problems(one, wire, rows_one)]
        assert not found, "\n".join(found)
        for cid in answered:
            a, b = rows_one[cid], rows_two[cid]
            differ = {k: (a[k], b[k]) for k in _SAME if k not in ("sha256", "streams") and a[k] != b[k]
                      and not (k in _TIMES and _seconds(a[k]) is not None and abs(_seconds(a[k]) - _seconds(b[k])) < 2e-3)
                      and not (k == "audio_frames" and abs(a[k] - b[k]) <= 2)}
            # Each socket takes its own kernel timestamp: the two captures' arrivals differ by microseconds.
            differ.update({f"{k} ch{x['channel']}": (x[k], y[k]) for x, y in zip(a["streams"], b["streams"], strict=True)
                           for k in x if x[k] != y[k] and not (k.endswith("_arrival") and abs(x[k] - y[k]) < 1e-3)})
            assert not differ, (cid, differ)
            assert _same_audio(recording_bytes(one.data, a), recording_bytes(two.data, b)), cid
        status = _status(two)
        workers = status["capture_workers"]
        assert [w["worker"] for w in workers] == [0, 1]
        assert all(w["kernel_drops"] == 0 and w["media_packets"] > 0 and w["pid"] for w in workers), workers
        assert status["kernel_drops"] == 0 and status["healthy"], status
        assert "capture worker 1:" in run_cli("status", "--config", two.config, check=False).stdout
        assert two.terminate() == 0 and one.terminate() == 0
    finally:
        one.close()
        two.close()


@pytest.mark.root
def test_excluded_line_leaves_nothing_in_any_worker(rig: Rig) -> None:
    two = _daemon(rig, "two")
    try:
        two.start()
        kept = rig.batch(Caller(calls=6, limit=6, rate=6), Caller(calls=6, limit=6, rate=6, callee=EXCLUDED,
                                                                  sip_port=5072), seconds=2.0)
        assert kept.wait() == 12
        wire = rig.wire()
        recorded = {cid for cid, call in wire.answered().items() if call.callee != EXCLUDED}
        excluded = set(wire.answered()) - recorded
        assert len(recorded) == len(excluded) == 6
        two.sealed_rows(recorded)
        assert {r["sip_call_id"] for r in two.rows()} == recorded
        files = [p for p in (two.data / "recordings").rglob("*") if p.is_file()]
        assert len(files) == len(recorded), files
        assert two.terminate() == 0
    finally:
        two.close()


@pytest.mark.root
def test_worker_killed_mid_call_is_restarted_and_its_calls_repaired(rig: Rig) -> None:
    two = _daemon(rig, "two")
    try:
        two.start()
        cut_calls = rig.batch(Caller(calls=6, limit=6, rate=10), seconds=12.0)
        two.active_calls(6)
        time.sleep(TALK_BEFORE_CUT)
        workers = _status(two)["capture_workers"]
        victim = next((w for w in workers if w["active_calls"]), None)
        assert victim is not None, (workers, two.log())
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        two.wait_status(lambda code, s: s["capture_workers"][victim["worker"]]["restarts"] == 1
                        and s["capture_workers"][victim["worker"]]["pid"] not in (None, victim["pid"]),
                        "the worker restarted")
        assert cut_calls.wait() == 6
        later_started = time.time()
        assert rig.batch(Caller(calls=4, limit=4, rate=10), seconds=2.0).wait() == 4
        wire = rig.wire()
        first = {cid for cid, c in wire.answered().items() if c.invite < killed_at}
        later = wire.started_between(later_started, time.time())
        rows = two.sealed_rows(first | later)
        cut = {cid for cid in first if rows[cid]["end_reason"] == "recovered_after_crash"}
        assert len(cut) == victim["active_calls"], {c: rows[c]["end_reason"] for c in first}
        assert two.log().count("recording.recovered") == len(cut)
        found = _cut_call_problems(two, wire, {c: rows[c] for c in cut}, "recovered_after_crash", killed_at,
                                   CRASH_MAX_LOST)
        found += _complete_call_problems(two, wire, {c: rows[c] for c in (first - cut) | later})
        assert not found, "\n".join(found)
        assert two.terminate() == 0
    finally:
        two.close()


def test_namespaces_are_gone_afterwards() -> None:
    leftovers = [n for n in os.listdir("/run/netns") if "fanout" in n] if os.path.isdir("/run/netns") else []
    assert not leftovers


# ---- two workers' sinks, driven directly --------------------------------------------
class _Wire:
    """A worker channel that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, message: tuple) -> None:
        self.sent.append(message)

    def kinds(self) -> list[str]:
        return [m[0] for m in self.sent]


def _workers(tmp_path: Path) -> list[tuple[_Wire, WorkerSink, Recorder]]:
    path = tmp_path / "policy.yaml"
    path.write_text(CALL_POLICY, encoding="utf-8")
    out = []
    for me in range(2):
        wire = _Wire()
        sink = WorkerSink(wire, me, 2)  # type: ignore[arg-type]
        recorder = Recorder(PolicyDecider(load_policy(path)), sink)
        sink.tracker = recorder.tracker
        out.append((wire, sink, recorder))
    return out


def _frames(items: list[tuple[float, bytes]]) -> list[tuple[float, int, bytes]]:
    return [(t, 1, f) for t, f in items]


@pytest.mark.parametrize("callee", ["0263111111", "0263000000"], ids=["recorded", "excluded"])
def test_one_owner_writes_the_call_and_the_other_forwards_its_flows(tmp_path: Path, callee: str) -> None:
    workers = _workers(tmp_path)
    owner = flow_worker(TRUNK4, 20000, PBX4, 40000, 2)
    wire, _, recorder = workers[owner]
    other_wire, other, other_recorder = workers[1 - owner]
    setup = _frames(signalling(callee=callee))
    to_pbx, _ = media(T0 + 1.1, 2.0, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    to_trunk, _ = media(T0 + 1.1, 2.0, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    rtp_frames = sorted(_frames(to_pbx + to_trunk))
    end = _frames(bye(T0 + 3.5, callee=callee))
    for r in (recorder, other_recorder):
        r.feed_frames(setup)
    other.refresh(force=True)
    moved = other.split(FrameBatch.from_frames(rtp_frames))  # as if the kernel had put the flows on the other worker
    recorder.feed_frames(rtp_frames)
    for r in (recorder, other_recorder):
        r.feed_frames(end)
        r.advance(T0 + 10)
    if callee == "0263000000":
        assert wire.sent == [] and [m for m in other_wire.sent if m[0] != "forward"] == []
        return
    assert len(moved) == 0 and other_wire.kinds() == ["forward"] and other_wire.sent[0][1] == owner
    assert other_wire.sent[0][2] == rtp_frames
    kinds = wire.kinds()
    assert kinds[0] == "begin" and kinds[1] == "open" and kinds[-1] == "close" and "append" in kinds
    result = wire.sent[-1][2]
    assert result.call.complete and [s.stats["packets"] for s in result.streams] == [100, 100]
    other.refresh()
    assert other.forward  # the call ended in the other worker's view: still forwarded until its owner ends it
    other.owner_ended((result.call.sip_call_id, wire.sent[0][2].invite_ts))
    other.refresh()
    assert other.forward == {}


# ---- harassment marks through the workers ----------------------------------------------
def test_a_keyed_mark_goes_from_the_owning_worker_to_the_daemons_one_store(tmp_path: Path) -> None:
    """Both workers follow the call's SIP; only the owner sees its media and so its digits, and
    only the owner hands the mark on; the daemon gives it to the store under its own serial."""
    from callrec.config import Config
    from callrec.workers import WorkerPool, _Open, _Worker
    from recorder.record import CallSnapshot
    from tests.marks_helpers import HARASSMENT
    from tests.on_demand_frames import AUTOMATIC, call

    path = tmp_path / "policy.yaml"
    path.write_text(AUTOMATIC + HARASSMENT, encoding="utf-8")
    frames = _frames(call(6, keyed={2.0: "*91"}))
    wires = []
    for me in range(2):
        wire = _Wire()
        sink = WorkerSink(wire, me, 2)  # type: ignore[arg-type]
        recorder = Recorder(PolicyDecider(load_policy(path)), sink, sink)
        sink.tracker = recorder.tracker
        recorder.feed_frames(frames)
        recorder.advance(T0 + 30)
        wires.append(wire)
    marks = [m for wire in wires for m in wire.sent if m[0] == "mark"]
    owners = [wire for wire in wires if "begin" in wire.kinds()]
    assert len(marks) == 1 and len(owners) == 1 and marks[0] in owners[0].sent
    _, serial, snapshot, category, at = marks[0]
    assert category == "threat" and snapshot.serial == serial

    got: list[tuple[CallSnapshot, str, float]] = []

    class Keep:
        def mark(self, call: CallSnapshot, category: str, at: float) -> None:
            got.append((call, category, at))

    config = Config(data_dir=tmp_path / "data", policy=path, capture_workers=2)
    pool = WorkerPool(config, None, Keep())  # type: ignore[arg-type]
    worker = _Worker(0, [])
    worker.calls[serial] = _Open(41, (snapshot.sip_call_id, snapshot.invite_ts))
    pool._dispatch(worker, marks[0])
    pool._dispatch(worker, ("mark", serial + 1, snapshot, category, at))  # a call the daemon does not hold
    assert [(c.serial, c.sip_call_id, cat, t) for c, cat, t in got] == [(41, snapshot.sip_call_id, "threat", at)]


# ---- the console's on-demand start through the workers ------------------------------------
class _Writer:
    """The daemon's end of a worker channel: keeps what the daemon wrote."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def messages(self) -> list[tuple]:
        out = list(Reader().feed(self.data))
        self.data = b""
        return out


async def test_the_consoles_start_reaches_the_worker_that_owns_the_call(tmp_path: Path) -> None:
    """Both workers follow the on-demand call's SIP; only its owner lists it, the daemon gives it
    a serial the console names it by, passes the console's start to that worker alone, and the
    recording that worker then hands over (from the call's start, as with one worker) is stored
    under that serial, started by the console's account."""
    from callrec.capture_worker import on_demand_report, on_demand_start
    from callrec.config import Config
    from callrec.control import Control
    from callrec.workers import WorkerPool, _Worker
    from recorder.on_demand import StartOutcome
    from tests.memory_sink import MemorySink
    from tests.on_demand_frames import call, on_demand_policy

    path = tmp_path / "policy.yaml"
    path.write_text(on_demand_policy(), encoding="utf-8")
    frames = _frames(call(6))
    half = [f for f in frames if f[0] < T0 + 4]
    rest = frames[len(half):]
    sides = []
    for me in range(2):
        wire = _Wire()
        sink = WorkerSink(wire, me, 2)  # type: ignore[arg-type]
        recorder = Recorder(PolicyDecider(load_policy(path)), sink, sink)
        sink.tracker = recorder.tracker
        recorder.feed_frames(half)
        sides.append((wire, sink, recorder))
    reports = [on_demand_report(recorder, sink) for _, sink, recorder in sides]
    owner = next(k for k, report in enumerate(reports) if report["on_demand"])
    assert [len(r["on_demand"]) for r in reports] == sorted([0, 1], reverse=owner == 0)
    assert reports[owner]["held"] == ["c1@x"] and reports[1 - owner]["held"] == []
    assert all(wire.sent == [] for wire, _, _ in sides)  # held: nothing reaches the daemon

    store = MemorySink()

    class Store(MemorySink):
        def record_id(self, serial: int) -> str | None:
            return next((f"rec-{c.serial}" for c, _ in store.begun if c.serial == serial), None)

    config = Config(data_dir=tmp_path / "data", policy=path, capture_workers=2)
    pool = WorkerPool(config, store)  # type: ignore[arg-type]
    pool.workers = [_Worker(k, []) for k in range(2)]
    writers = [_Writer() for _ in range(2)]
    for worker, writer, report in zip(pool.workers, writers, reports, strict=True):
        worker.writer = writer  # type: ignore[assignment]
        pool._dispatch(worker, ("stats", report))
    control = Control(pool, Store())  # type: ignore[arg-type]
    [listed] = control.live()
    assert listed["line"] == "相談窓口" and not listed["recording"] and listed["record_id"] is None
    assert pool.on_demand.held_call_ids() == {"c1@x"}

    asking = asyncio.create_task(control.answer({"action": "start", "by": "alice", "call": listed["call"]}))
    await asyncio.sleep(0)
    [request] = writers[owner].messages()
    assert writers[1 - owner].messages() == []
    kind, number, local, by = request
    assert (kind, by) == ("start", "console:alice")
    wire, sink, recorder = sides[owner]
    outcome = on_demand_start(recorder, sink, local, by)
    assert on_demand_start(sides[1 - owner][2], sides[1 - owner][1], local, by) is StartOutcome.UNKNOWN
    for message in [*wire.sent, ("started", number, str(outcome))]:
        pool._dispatch(pool.workers[owner], message)
    answer = await asyncio.wait_for(asking, 5)
    serial = int(listed["call"].rpartition("-")[2])
    assert answer == {"ok": True, "outcome": "started", "record_id": f"rec-{serial}", "line": "相談窓口"}
    [(started, _)] = store.begun
    assert started.serial == serial and started.started_by == "console:alice"
    sent = len(wire.sent)
    for _, _, r in sides:
        r.feed_frames(rest)
        r.advance(T0 + 30)
    for message in wire.sent[sent:]:
        pool._dispatch(pool.workers[owner], message)
    [recording] = store.recordings
    assert recording.result is not None and recording.result.call.started_by == "console:alice"
    assert len(recording.audio) // 2 > 5.5 * 8000  # from the call's start, as one worker keeps it
    assert all(m[0] != "begin" for m in sides[1 - owner][0].sent)
    pool._dispatch(pool.workers[owner], ("stats", on_demand_report(recorder, sink)))
    assert control.live() == [] and pool.workers[owner].on_demand == {}
    unknown = await control.answer({"action": "start", "by": "alice", "call": listed["call"]})
    assert unknown["outcome"] == "unknown_call"
