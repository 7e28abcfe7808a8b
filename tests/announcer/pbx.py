"""A scripted PBX for the UA core's unit tests: it writes the requests and responses a PBX would
send and reads what the core sends back, all as bytes through the core's public interface."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from announcer.audio import DEFAULT_AUDIO, AnnouncementAudio, load_audio
from announcer.config import AnnouncerConfig
from announcer.effects import CallEnded, StartPlayback
from announcer.sipmsg import Peer
from announcer.transaction import Send
from announcer.ua import UserAgent
from policy.decide import PolicyDecider
from policy.schema import Policy
from wire.sip import SipMessage, parse_sip

PBX = Peer("udp", "192.0.2.10", 5060)
CALLER = "0312345678"
DID = "0355550100"
SDP_PCMU = (b"v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
SDP_PCMA = SDP_PCMU.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 8 0 101")
_AUDIO: list[AnnouncementAudio] = []


def default_audio() -> AnnouncementAudio:
    if not _AUDIO:
        _AUDIO.append(load_audio(DEFAULT_AUDIO, 30))
    return _AUDIO[0]


def config(**changes: object) -> AnnouncerConfig:
    values: dict[str, object] = {"listen_address": "192.0.2.20", "listen_port": 5060, "pbx": ["192.0.2.10/32"],
                                 "operator": "9000", "rtp_ports": (30000, 30100)}
    values.update(changes)
    return AnnouncerConfig.model_validate(values)


@dataclass
class Harness:
    """One UA core and the PBX side of its calls."""

    ua: UserAgent
    now: float = 1000.0
    sent: list[SipMessage] = field(default_factory=list)
    effects: list[object] = field(default_factory=list)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def make(cls, policy: Policy | None = None, **changes: object) -> Harness:
        ports = itertools.count(30000, 2)
        ua = UserAgent(config(**changes), PolicyDecider(policy or Policy()), default_audio(), lambda: next(ports))
        return cls(ua)

    def deliver(self, data: bytes, peer: Peer = PBX) -> list[SipMessage]:
        self.ua.receive_datagram(data, peer, self.now)
        return self._collect()

    def advance(self, seconds: float) -> list[SipMessage]:
        """Move the clock, firing every timer due on the way, in order."""
        end = self.now + seconds
        out: list[SipMessage] = []
        while (deadline := self.ua.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            out += self._collect()
        self.now = end
        return out

    def playback_done(self, key: tuple[str, str]) -> list[SipMessage]:
        self.ua.playback_done(key, self.now)
        return self._collect()

    def _collect(self) -> list[SipMessage]:
        out = []
        for effect in self.ua.pop_effects():
            if isinstance(effect, Send):
                message = parse_sip(effect.data)
                out.append(message)
                self.sent.append(message)
            else:
                self.effects.append(effect)
        return out

    def of(self, kind: type) -> list:
        return [e for e in self.effects if isinstance(e, kind)]

    @property
    def ended(self) -> list[CallEnded]:
        return self.of(CallEnded)

    @property
    def playbacks(self) -> list[StartPlayback]:
        return self.of(StartPlayback)


def invite(call_id: str = "call-1@pbx", *, caller: str = CALLER, called: str = DID, body: bytes = SDP_PCMU,
           branch: str = "z9hG4bKinv1", cseq: int = 1, to_tag: str | None = None, extra: str = "") -> bytes:
    to = f"<sip:{called}@192.0.2.20>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"INVITE sip:{called}@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{caller}@192.0.2.10>;tag=pbx1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} INVITE\r\nContact: <sip:pbx@192.0.2.10:5060>\r\n{extra}")
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def request(method: str, answered: SipMessage, *, branch: str, cseq: int, body: bytes = b"",
            extra: str = "") -> bytes:
    """An in-dialog request from the PBX in the dialog that answered established."""
    to = answered.header("to")
    head = (f"{method} sip:announcer@192.0.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: {answered.header('from')}\r\nTo: {to}\r\nCall-ID: {answered.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n{extra}")
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def cancel(call_id: str = "call-1@pbx", branch: str = "z9hG4bKinv1") -> bytes:
    return (f"CANCEL sip:{DID}@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{CALLER}@192.0.2.10>;tag=pbx1\r\nTo: <sip:{DID}@192.0.2.20>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()


def ack_for(final: SipMessage, *, branch: str, body: bytes = b"") -> bytes:
    """ACK: same branch as the INVITE for a non-2xx final, a new one for a 2xx."""
    head = (f"ACK sip:announcer@192.0.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: {final.header('from')}\r\nTo: {final.header('to')}\r\n"
            f"Call-ID: {final.call_id}\r\nCSeq: {final.cseq[0]} ACK\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def answer(to_request: SipMessage, status: int, reason: str, extra: str = "", tag: bool = False) -> bytes:
    """The PBX's response to a request the announcer sent."""
    vias = "".join(f"Via: {v}\r\n" for v in to_request.header_values("via"))
    to = to_request.header("to") or ""
    return (f"SIP/2.0 {status} {reason}\r\n{vias}From: {to_request.header('from')}\r\nTo: {to}\r\n"
            f"Call-ID: {to_request.call_id}\r\nCSeq: {to_request.header('cseq')}\r\n{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


def notify(answered: SipMessage, frag: str, *, cseq: int, branch: str, terminated: bool) -> bytes:
    body = f"{frag}\r\n".encode()
    state = "terminated;reason=noresource" if terminated else "active;expires=60"
    return request("NOTIFY", answered, branch=branch, cseq=cseq, body=body,
                   extra=f"Event: refer\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\n")


def find(messages: list[SipMessage], *, method: str | None = None, status: int | None = None) -> SipMessage:
    for message in messages:
        if (method is None or message.method == method) and (status is None or message.status == status):
            return message
    raise AssertionError(f"no {method or status} among {[m.method or m.status for m in messages]}")


# ---- the steps of a call the core tests share -------------------------------------
# The key of the call invite() places: its Call-ID and the PBX's From tag.
KEY = ("call-1@pbx", "pbx1")


def answered(h: Harness, body: bytes = SDP_PCMU) -> SipMessage:
    out = h.deliver(invite(body=body))
    assert [m.status for m in out] == [100, 200]
    ok = out[1]
    h.deliver(ack_for(ok, branch="z9hG4bKack1", body=b"" if body else SDP_PCMA))
    return ok


def referred(h: Harness) -> SipMessage:
    out = h.playback_done(KEY)
    return find(out, method="REFER")
