"""A city's trunk as the mirror port shows it, made by hand: two carriers at different
documentation addresses, one writing numbers in the national form (0XX) and one in E.164
(+81), outbound calls whose From is the city's representative number, and withheld callers
(Privacy: id) whose number the carrier still sends in P-Asserted-Identity.  And the two legs a
B2BUA PBX makes of one call (trunk to PBX, PBX to the extension, each with its own Call-ID),
with the media anchored at the PBX or flowing directly between the carrier and the phone.

Numbers are those of the example policy of 山形市 (policies/yamagata.yaml): representative
023-100-0000, DIDs 023-100-1XXX.  Subscriber parts starting with 0 or 1 are never assigned."""
from __future__ import annotations

import random
from dataclasses import dataclass

from tests.builders import rtp, sdp, udp_frame

T0 = 1_764_000_000.0
PBX = "192.0.2.10"
PBX_LAN = "192.0.2.11"
PHONE = "192.0.2.50"
CARRIER_A = "203.0.113.1"
"""The carrier the example policy lists as the trunk (203.0.113.0/28): national forms."""
CARRIER_B = "198.51.100.7"
"""A second carrier, E.164 forms, whose address a policy may not list."""
REPRESENTATIVE = "0231000000"
DIDS = ("0231001234", "0231001500", "0231001777")

Frames = list[tuple[float, bytes]]


def e164(national: str) -> str:
    return "+81" + national[1:]


def message(first: str, *, call_id: str, cseq: str, from_: str, to: str, from_tag: str = "f1",
            to_tag: str | None = None, extra: tuple[str, ...] = (), body: str = "", via: str = CARRIER_A) -> bytes:
    headers = [first, f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-{call_id}-{cseq.split()[0]}",
               f"From: {from_};tag={from_tag}", f"To: {to}" + (f";tag={to_tag}" if to_tag else ""),
               f"Call-ID: {call_id}", f"CSeq: {cseq}", "Max-Forwards: 70", *extra]
    if body:
        headers.append("Content-Type: application/sdp")
    headers.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


@dataclass(frozen=True)
class Leg:
    """One dialog on the wire: who sends the INVITE to whom, its URIs and media ports."""

    call_id: str
    src: str
    dst: str
    ruri: str
    from_: str
    to: str
    extra: tuple[str, ...] = ()
    offer: tuple[str, int] = ("", 0)
    answer: tuple[str, int] = ("", 0)


def invite(leg: Leg, t: float) -> Frames:
    body = sdp(*leg.offer)
    return [(t, udp_frame(leg.src, 5060, leg.dst, 5060,
                          message(f"INVITE {leg.ruri} SIP/2.0", call_id=leg.call_id, cseq="1 INVITE", from_=leg.from_,
                                  to=leg.to, extra=leg.extra, body=body, via=leg.src)))]


def respond(leg: Leg, t: float, status: str, *, sdp_body: bool = False) -> Frames:
    body = sdp(*leg.answer) if sdp_body else ""
    return [(t, udp_frame(leg.dst, 5060, leg.src, 5060,
                          message(f"SIP/2.0 {status}", call_id=leg.call_id, cseq="1 INVITE", from_=leg.from_,
                                  to=leg.to, to_tag="t1", body=body, via=leg.src)))]


def ack(leg: Leg, t: float) -> Frames:
    return [(t, udp_frame(leg.src, 5060, leg.dst, 5060,
                          message(f"ACK {leg.ruri} SIP/2.0", call_id=leg.call_id, cseq="1 ACK", from_=leg.from_,
                                  to=leg.to, to_tag="t1", via=leg.src)))]


def bye(leg: Leg, t: float) -> Frames:
    return [(t, udp_frame(leg.src, 5060, leg.dst, 5060,
                          message(f"BYE {leg.ruri} SIP/2.0", call_id=leg.call_id, cseq="2 BYE", from_=leg.from_,
                                  to=leg.to, to_tag="t1", via=leg.src)))]


def answered(leg: Leg, t: float, ring: float = 0.5) -> Frames:
    """INVITE, 180, 200 with the answer, ACK."""
    return (invite(leg, t) + respond(leg, t + 0.05, "180 Ringing")
            + respond(leg, t + ring, "200 OK", sdp_body=True) + ack(leg, t + ring + 0.01))


def stream(t: float, seconds: float, src: tuple[str, int], dst: tuple[str, int], ssrc: int,
           seed: int) -> tuple[Frames, list[bytes]]:
    """PCMU packets of 20 ms with random payloads, so each is found again in the WAV."""
    rng = random.Random(seed)
    frames, payloads = [], []
    for n in range(int(seconds * 50)):
        payload = bytes(rng.randrange(256) for _ in range(160))
        payloads.append(payload)
        frames.append((t + n * 0.02, udp_frame(*src, *dst, rtp(n, n * 160, ssrc, payload), ident=n)))
    return frames, payloads


def trunk_call(n: int, t: float, *, carrier: str, outbound: bool, withheld: bool = False,
               talk: float = 0.0) -> tuple[Frames, dict[str, str | None]]:
    """One call over a carrier's trunk, and the parties a row of it must show."""
    national = carrier == CARRIER_A
    form = (lambda number: number) if national else e164
    did = DIDS[n % len(DIDS)]
    outside = f"03{n % 10}{(5550000 + n):07d}"[:10] if n % 2 else f"090{(10000000 + n):08d}"
    tport, pport = 20000 + 2 * n, 40000 + 2 * n
    user = "" if national else ";user=phone"
    if outbound:
        leg = Leg(f"out{n}@pbx", PBX, carrier, f"sip:{form(outside)}@{carrier}{user}",
                  f"<sip:{form(REPRESENTATIVE)}@{PBX}{user}>", f"<sip:{form(outside)}@{carrier}{user}>",
                  offer=(PBX, pport), answer=(carrier, tport))
        expected = {"direction": "outbound", "local_number": REPRESENTATIVE, "remote_number": outside}
    elif withheld:
        leg = Leg(f"in{n}@{carrier}", carrier, PBX, f"sip:{form(did)}@{PBX}{user}",
                  '"Anonymous" <sip:anonymous@anonymous.invalid>', f"<sip:{form(did)}@{PBX}{user}>",
                  extra=("Privacy: id", f"P-Asserted-Identity: <sip:{form(outside)}@{carrier}{user}>"),
                  offer=(carrier, tport), answer=(PBX, pport))
        expected = {"direction": "inbound", "local_number": did, "remote_number": None, "withheld": outside}
    else:
        leg = Leg(f"in{n}@{carrier}", carrier, PBX, f"sip:{form(did)}@{PBX}{user}",
                  f"<sip:{form(outside)}@{carrier}{user}>", f"<sip:{form(did)}@{PBX}{user}>",
                  offer=(carrier, tport), answer=(PBX, pport))
        expected = {"direction": "inbound", "local_number": did, "remote_number": outside}
    frames = answered(leg, t)
    if talk:
        frames += stream(t + 0.6, talk, leg.offer, leg.answer, 0x1000 + n, n)[0]
        frames += stream(t + 0.61, talk, leg.answer, leg.offer, 0x2000 + n, n + 7)[0]
    frames += bye(leg, t + 0.7 + talk)
    return frames, {**expected, "call_id": leg.call_id}


def trunk_day(count: int) -> tuple[Frames, list[dict[str, str | None]]]:
    """`count` calls, a few seconds apart: carriers alternate, every third call is outbound,
    about every seventh inbound one withheld (and only those carry audio, to keep it small)."""
    frames: Frames = []
    expected = []
    for n in range(count):
        carrier = CARRIER_A if n % 2 == 0 else CARRIER_B
        withheld = n % 3 != 0 and n % 7 == 1
        made, row = trunk_call(n, T0 + 3 * n, carrier=carrier, outbound=n % 3 == 0, withheld=withheld,
                               talk=1.0 if withheld else 0.0)
        frames += made
        expected.append(row)
    return sorted(frames, key=lambda f: f[0]), expected


def b2bua_call(*, outbound: bool, direct: bool, t: float = T0, extension: str = "301",
               outside: str = "0312345678", talk: float = 2.0, ring_also: str | None = None,
               withheld: bool = False) -> tuple[Frames, dict[str, object]]:
    """One call through a B2BUA PBX: the trunk leg (carrier to PBX, or PBX to carrier) and the
    PBX's own leg to or from the extension, each its own Call-ID.  The PBX answers the first leg
    when the second is answered.  Media anchored at the PBX runs on both legs (the PBX relays
    the same payloads under its own SSRC); direct media runs once, carrier to phone.  With
    `ring_also`, the PBX rings that extension too (a ring group) and cancels it."""
    carrier_media, pbx_trunk, pbx_lan, phone_media = (CARRIER_A, 20000), (PBX, 40000), (PBX_LAN, 30000), (PHONE, 50000)
    did = DIDS[0]
    if outbound:
        first = Leg("b2b-phone@192.0.2.50", PHONE, PBX_LAN, f"sip:0{outside}@{PBX_LAN}", f"<sip:{extension}@{PBX_LAN}>",
                    f"<sip:0{outside}@{PBX_LAN}>", offer=phone_media,
                    answer=carrier_media if direct else pbx_lan)
        second = Leg("b2b-trunk@192.0.2.10", PBX, CARRIER_A, f"sip:{outside}@{CARRIER_A}",
                     f"<sip:{REPRESENTATIVE}@{PBX}>", f"<sip:{outside}@{CARRIER_A}>",
                     offer=phone_media if direct else pbx_trunk, answer=carrier_media)
        trunk, lan = second, first
    else:
        first = Leg("b2b-trunk@203.0.113.1", CARRIER_A, PBX, f"sip:{did}@{PBX}", f"<sip:{outside}@{CARRIER_A}>",
                    f"<sip:{did}@{PBX}>", offer=carrier_media, answer=phone_media if direct else pbx_trunk)
        second = Leg("b2b-phone@192.0.2.11", PBX_LAN, PHONE, f"sip:{extension}@{PHONE}", f"<sip:{outside}@{PBX_LAN}>",
                     f"<sip:{extension}@{PBX_LAN}>", offer=carrier_media if direct else pbx_lan, answer=phone_media)
        if withheld:
            first = Leg(first.call_id, first.src, first.dst, first.ruri, '"Anonymous" <sip:anonymous@anonymous.invalid>',
                        first.to, ("Privacy: id", f"P-Asserted-Identity: <sip:{outside}@{CARRIER_A}>"),
                        first.offer, first.answer)
            second = Leg(second.call_id, second.src, second.dst, second.ruri, "<sip:anonymous@anonymous.invalid>",
                         second.to, (), second.offer, second.answer)
        trunk, lan = first, second
    frames = invite(first, t) + respond(first, t + 0.01, "100 Trying") + invite(second, t + 0.02)
    others = []
    if ring_also:
        other = Leg("b2b-group@192.0.2.11", PBX_LAN, "192.0.2.51", f"sip:{ring_also}@192.0.2.51", second.from_,
                    f"<sip:{ring_also}@{PBX_LAN}>", offer=second.offer, answer=("192.0.2.51", 50002))
        frames += invite(other, t + 0.021) + respond(other, t + 0.06, "180 Ringing")
        frames += [(t + 0.9, udp_frame(other.src, 5060, other.dst, 5060, message(
            f"CANCEL {other.ruri} SIP/2.0", call_id=other.call_id, cseq="1 CANCEL", from_=other.from_, to=other.to,
            via=other.src)))]
        frames += [(t + 0.91, udp_frame(other.dst, 5060, other.src, 5060, message(
            "SIP/2.0 487 Request Terminated", call_id=other.call_id, cseq="1 INVITE", from_=other.from_,
            to=other.to, to_tag="t1", via=other.src)))]
        others.append(other.call_id)
    frames += respond(second, t + 0.05, "180 Ringing") + respond(first, t + 0.06, "180 Ringing")
    frames += respond(second, t + 0.8, "200 OK", sdp_body=True) + ack(second, t + 0.81)
    frames += respond(first, t + 0.82, "200 OK", sdp_body=True) + ack(first, t + 0.83)
    start = t + 1.0
    # What the outside party says (to the city) and what the staff says, 20 ms packets.
    remote_words, remote = stream(start, talk, carrier_media, phone_media if direct else pbx_trunk, 0xAAA1, 1)
    staff_words, staff = stream(start + 0.005, talk, phone_media, carrier_media if direct else pbx_lan, 0xBBB1, 2)
    frames += remote_words + staff_words
    if not direct:
        # The PBX relays each packet on its other leg, under its own SSRC and numbering.
        frames += [(ts + 0.002, udp_frame(*pbx_lan, *phone_media, rtp(n + 500, n * 160 + 8000, 0xCCC1, p), ident=n))
                   for n, ((ts, _), p) in enumerate(zip(remote_words, remote))]
        frames += [(ts + 0.002, udp_frame(*pbx_trunk, *carrier_media, rtp(n + 900, n * 160 + 4000, 0xDDD1, p),
                                          ident=n)) for n, ((ts, _), p) in enumerate(zip(staff_words, staff))]
    end = start + talk + 0.2
    frames += bye(first, end) + bye(second, end + 0.01)
    expected = {"trunk": trunk.call_id, "lan": lan.call_id, "others": others, "remote": remote, "staff": staff,
                "local_number": REPRESENTATIVE if outbound else did, "remote_number": outside,
                "extension": extension, "direction": "outbound" if outbound else "inbound",
                "root": first.call_id, "legs": [second.call_id, *others]}
    return sorted(frames, key=lambda f: f[0]), expected
