"""Issue 17 item 3: RTP sent into a call's media port is not the call.

The recorded stream of a channel is the one the SDP and the dialog set up:
its source address and port, and its SSRC once locked.  Packets from other
sources, or with other SSRCs while the locked one is talking, are counted,
shown on the call (the `foreign` figures of its stream) and kept out of the
WAV.  The legitimate changes still go through: a re-INVITE that moves the
media, an SSRC that changes after a hold, a PBX latching onto the address
the media really comes from (symmetric RTP behind NAT)."""
from __future__ import annotations

import random
from pathlib import Path

from tests.builders import PBX, TRUNK, rtp, sdp, sip, udp_frame
from tests.call_frames import T0, bye, media, signalling
from tests.interop import recording
from tests.test_clock_jumps import _run
from tests.test_engine import replay

INJECTED = b"\x2a" * 160
"""The attacker's audio: one code that the legitimate (random) payloads use
in a byte or two but never for a whole packet."""
NAT = "198.51.100.7"


def _flood(t: float, seconds: float, count: int, *, seed: int = 3) -> list[tuple[float, bytes]]:
    """`count` packets to the PBX's media port: random SSRCs, sequence
    numbers and timestamps, half from the trunk's real media port, half from
    other ports and another address."""
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        if i % 2:
            src = (TRUNK, 20000)
        else:
            src = (rng.choice((TRUNK, "203.0.113.9")), rng.randrange(1024, 65535))
        packet = rtp(rng.randrange(65536), rng.randrange(2**32), rng.randrange(2**32), INJECTED)
        frames.append((t + seconds * i / count, udp_frame(*src, PBX, 40000, packet, ident=i + 7)))
    return frames


def test_flood_into_the_media_port_leaves_the_audio_alone(tmp_path: Path) -> None:
    up, up_payloads = media(T0 + 1.05, 10, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    down, down_payloads = media(T0 + 1.06, 10, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    flood = _flood(T0 + 1.5, 9, 20000)
    data, [row], rec = replay(tmp_path, signalling() + up + down + flood + bye(T0 + 11.2))
    wav = recording(data, row)
    remote, local = wav.channel(1), wav.channel(0)
    assert b"".join(up_payloads) in remote, "the remote party's audio is whole and in place"
    assert b"".join(down_payloads) in local
    assert INJECTED not in remote and INJECTED not in local
    streams = {s["channel"]: s for s in row["streams"]}
    assert streams[1]["foreign"] == 20000, "every injected packet is counted on the call"
    assert streams[0]["foreign"] == 0
    assert streams[1]["foreign_flows"], "the foreign sources are named"
    assert streams[1]["ssrcs"] == [1]
    assert rec.stats["rtp_foreign"] == 20000


def test_flood_before_the_media_starts_does_not_take_the_channel() -> None:
    flood = _flood(T0 + 1.01, 1.5, 3000, seed=5)
    up, up_payloads = media(T0 + 1.3, 4, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, _ = _run(signalling() + up + flood + bye(T0 + 5.5), sort=True)
    [recording] = sink.recordings
    remote = recording.channel(1)
    assert b"".join(up_payloads) in remote and INJECTED not in remote


def test_ssrc_change_after_hold_is_followed() -> None:
    before, before_payloads = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    after, after_payloads = media(T0 + 6.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=77, seq0=9000,
                                  ts0=123456, seed=9)
    keepalive, _ = media(T0 + 1.06, 8, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    sink, _ = _run(signalling() + before + after + keepalive + bye(T0 + 9.5), sort=True)
    [recording] = sink.recordings
    remote = recording.channel(1)
    assert b"".join(before_payloads) in remote and b"".join(after_payloads) in remote
    assert recording.result is not None
    stats = recording.result.streams[1].stats
    assert stats["foreign"] == 0 and stats["ssrcs"] == [1, 77]


def test_ssrc_handover_without_a_pause_loses_no_packet() -> None:
    """A PBX that switches what it bridges (announcement, then the person)
    changes SSRC from one packet to the next: the new one is followed, and
    nothing of it is lost while the recorder makes sure the old one stopped."""
    first, first_payloads = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    second, second_payloads = media(T0 + 3.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=5, seq0=40000,
                                    ts0=999, seed=4)
    sink, _ = _run(signalling() + first + second + bye(T0 + 6.5), sort=True)
    [recording] = sink.recordings
    remote = recording.channel(1)
    assert b"".join(first_payloads) in remote and b"".join(second_payloads) in remote


def test_reinvite_moving_the_media_is_followed() -> None:
    before, before_payloads = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    reinvite = [(T0 + 3.1, udp_frame(TRUNK, 5060, PBX, 5060, sip(
        f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="2 INVITE", to_tag="t1", body=sdp("203.0.113.5", 30000))))]
    moved, moved_payloads = media(T0 + 3.2, 2, src=("203.0.113.5", 30000), dst=(PBX, 40000), ssrc=3, seed=3)
    sink, _ = _run(signalling() + before + reinvite + moved + bye(T0 + 5.5), sort=True)
    [recording] = sink.recordings
    remote = recording.channel(1)
    assert b"".join(before_payloads) in remote and b"".join(moved_payloads) in remote


def test_symmetric_rtp_latching_follows_the_pbx() -> None:
    """The trunk's media comes from a NAT address its SDP does not name; the
    PBX answers to that address, and the recorder follows it.  A second
    source sending to the same port later is foreign."""
    up, up_payloads = media(T0 + 1.05, 4, src=(NAT, 31000), dst=(PBX, 40000), ssrc=1)
    down, down_payloads = media(T0 + 1.08, 4, src=(PBX, 40000), dst=(NAT, 31000), ssrc=2, seed=2)
    intruder, _ = media(T0 + 2.01, 2, src=("198.51.100.99", 31000), dst=(PBX, 40000), ssrc=1, seed=8)
    intruder = [(ts, udp_frame("198.51.100.99", 31000, PBX, 40000, rtp(500 + n, 9 + n * 160, 1, INJECTED), ident=n))
                for n, (ts, _) in enumerate(intruder)]
    sink, rec = _run(signalling() + up + down + intruder + bye(T0 + 5.5), sort=True)
    [recording] = sink.recordings
    assert b"".join(up_payloads) in recording.channel(1) and b"".join(down_payloads) in recording.channel(0)
    assert INJECTED not in recording.channel(1)
    assert recording.result is not None and recording.result.streams[1].stats["foreign"] == len(intruder)
    assert rec.stats["rtp_foreign"] == len(intruder)
