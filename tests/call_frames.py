"""Whole calls as the mirror port shows them, as timestamped Ethernet frames
(builders.py makes the single messages and packets): the trunk's INVITE,
the PBX's 200 and the ACK, RTP one way, the BYE; with the start time and
the policy (the trunk is 203.0.113.0/28, one line excluded) that the tests
feeding them to the recorder share."""
from __future__ import annotations

import random

from tests.builders import PBX, TRUNK, rtp, sdp, sip, udp_frame

T0 = 1_764_000_000.0
POLICY = "network: {trunk: [203.0.113.0/28]}\nexcluded_lines: ['0263000000']\n"


def signalling(call_id: str = "c1@x", callee: str = "0263111111", t: float = T0,
               answer_after: float = 1.0, tport: int = 20000, pport: int = 40000,
               answer_codec: tuple[int, str] = (0, "PCMU"),
               caller: str = "0312345678") -> list[tuple[float, bytes]]:
    kw = dict(call_id=call_id, callee=callee, caller=caller)
    return [
        (t, udp_frame(TRUNK, 5060, PBX, 5060, sip(f"INVITE sip:{callee}@{PBX} SIP/2.0", cseq="1 INVITE",
                                                  body=sdp(TRUNK, tport), **kw))),
        (t + answer_after, udp_frame(PBX, 5060, TRUNK, 5060, sip("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1",
                                                                 body=sdp(PBX, pport, codec=answer_codec), **kw))),
        (t + answer_after + 0.01, udp_frame(TRUNK, 5060, PBX, 5060,
                                            sip(f"ACK sip:{callee}@{PBX} SIP/2.0", cseq="1 ACK", to_tag="t1", **kw))),
    ]


def bye(t: float, call_id: str = "c1@x", callee: str = "0263111111",
        caller: str = "0312345678") -> list[tuple[float, bytes]]:
    return [(t, udp_frame(TRUNK, 5060, PBX, 5060, sip(f"BYE sip:{callee}@{PBX} SIP/2.0", cseq="2 BYE", to_tag="t1",
                                                      call_id=call_id, callee=callee, caller=caller)))]


def media(t: float, seconds: float, *, src: tuple[str, int], dst: tuple[str, int], ssrc: int, pt: int = 0,
          seq0: int = 0, ts0: int = 0, seed: int = 1) -> tuple[list[tuple[float, bytes]], list[bytes]]:
    rng = random.Random(seed)
    frames, payloads = [], []
    for n in range(int(seconds * 50)):
        payload = bytes(rng.randrange(256) for _ in range(160))
        payloads.append(payload)
        frames.append((t + n * 0.02, udp_frame(*src, *dst, rtp(seq0 + n, ts0 + n * 160, ssrc, payload, pt), ident=n)))
    return frames, payloads
