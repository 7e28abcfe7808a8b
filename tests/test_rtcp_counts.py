"""RTCP multiplexed on a call's RTP ports (RFC 5761) is counted as that call's RTCP, channel by
channel, from the first packet on a flow on; a stream's packet count is its RTP alone."""
from __future__ import annotations

import struct

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from tests.builders import PBX, TRUNK, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.memory_sink import MemorySink


def sender_report(ssrc: int, n: int) -> bytes:
    """An RTCP SR (packet type 200) with its 20 bytes of sender information."""
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0x83AA7E80 + n, 0, 160 * 50 * n, 50 * n, 8000 * n)


def receiver_report(ssrc: int) -> bytes:
    """An RTCP RR (packet type 201) with one report block."""
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!IIIIII", 1, 0, 0, 0, 0, 0)


def rtcp(t: float, src: tuple[str, int], dst: tuple[str, int], packets: list[bytes]) -> list[tuple[float, bytes]]:
    return [(t + n, udp_frame(*src, *dst, data, ident=9000 + n)) for n, data in enumerate(packets)]


def record(frames: list[tuple[float, bytes]]) -> tuple[MemorySink, Recorder]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in sorted(frames, key=lambda f: f[0]))
    recorder.finish()
    return sink, recorder


def test_muxed_rtcp_is_the_calls_rtcp_and_not_in_its_streams_packets() -> None:
    trunk, pbx = (TRUNK, 20000), (PBX, 40000)
    up, up_payloads = media(T0 + 1.05, 3, src=trunk, dst=pbx, ssrc=1)
    down, down_payloads = media(T0 + 1.06, 3, src=pbx, dst=trunk, ssrc=2, seed=2)
    # The trunk's first packet on its flow is an SR, before any of its RTP.
    trunk_rtcp = rtcp(T0 + 1.04, trunk, pbx, [sender_report(1, n) for n in range(4)])
    pbx_rtcp = rtcp(T0 + 1.5, pbx, trunk, [receiver_report(2), sender_report(2, 1), receiver_report(2)])
    sink, recorder = record(signalling() + up + down + trunk_rtcp + pbx_rtcp + bye(T0 + 5))
    [rec] = sink.recordings
    assert rec.result is not None
    local, remote = (report.stats for report in rec.result.streams)
    assert (remote["packets"], remote["rtcp_packets"]) == (150, 4)
    assert (local["packets"], local["rtcp_packets"]) == (150, 3)
    assert remote["malformed"] == local["malformed"] == 0
    counters = recorder.counters()
    assert counters["rtp_packets"] == 300 and counters["rtcp_packets"] == 7
    assert counters["rtp_unmatched"] == 0
    # The audio is the RTP's, whole.
    assert b"".join(up_payloads) in rec.channel(1) and b"".join(down_payloads) in rec.channel(0)


def test_rtcp_of_no_call_is_counted_once_and_goes_nowhere() -> None:
    stray = rtcp(T0 + 1.2, ("198.51.100.5", 7001), ("198.51.100.6", 7001), [receiver_report(9)] * 3)
    up, _ = media(T0 + 1.05, 1, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, recorder = record(signalling() + up + stray + bye(T0 + 3))
    [rec] = sink.recordings
    assert rec.result is not None and all(report.stats["rtcp_packets"] == 0 for report in rec.result.streams)
    assert recorder.counters()["rtcp_packets"] == 3 and recorder.counters()["rtp_packets"] == 50


def test_a_one_byte_datagram_on_a_call_flow_is_not_rtcp_and_breaks_nothing() -> None:
    up, _ = media(T0 + 1.05, 1, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    runt = [(T0 + 1.5, udp_frame(TRUNK, 20000, PBX, 40000, b"\x80"))]
    sink, recorder = record(signalling() + up + runt + bye(T0 + 3))
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.streams[1].stats["malformed"] == 1
    assert recorder.counters()["rtcp_packets"] == 0
