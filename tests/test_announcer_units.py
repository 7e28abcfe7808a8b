"""The announcer's small sans-I/O parts: transactions and their timers, digest, RTP packets,
SDP negotiation, config."""
from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError

from announcer.config import AnnouncerConfig, load_announcer_config
from announcer.digest import Challenge, DigestError, authorization, parse_challenge, response_value
from announcer.media import NegotiationError, accept_offer, answer_sdp
from wire.rtp import Packetiser, frames
from announcer.sipmsg import safe_number
from announcer.transaction import (
    T1, T2, T4, ClientNonInvite, Response, Send, ServerInvite, ServerNonInvite, TimedOut, server_key,
)
from policy.loader import PolicyError
from wire.sdp import parse_sdp
from wire.sip import parse_sip
from tests.announcer.pbx import SDP_PCMU, invite
from tests.announcer.transactions import TCP, UDP, run_timers, status


# ---- transactions ---------------------------------------------------------------
def test_client_non_invite_timer_e_doubles_to_t2_and_f_times_out() -> None:
    txn = ClientNonInvite("REFER", "z9hG4bKc", b"REFER", UDP, 0.0)
    assert txn.start() == [Send(UDP, b"REFER")]
    fired = run_timers(txn, 0.0, 64 * T1)
    sends = [t for t, e in fired if isinstance(e, Send)]
    assert sends[:5] == [T1, 3 * T1, 7 * T1, 7 * T1 + T2, 7 * T1 + 2 * T2]
    assert isinstance(fired[-1][1], TimedOut) and fired[-1][0] == 64 * T1
    assert txn.terminated


def test_client_non_invite_provisional_then_final_then_k() -> None:
    txn = ClientNonInvite("REFER", "z9hG4bKc", b"REFER", UDP, 0.0)
    (effect,) = txn.receive(parse_sip(status(100)), 0.1)
    assert isinstance(effect, Response) and txn.state == "proceeding"
    assert txn.get_timer() == T1  # E keeps running, next at T2 intervals
    txn.handle_timer(T1)
    assert txn.timers["E"] == T1 + T2
    final = txn.receive(parse_sip(status(202)), 1.0)
    assert isinstance(final[0], Response) and txn.state == "completed"
    assert txn.receive(parse_sip(status(202)), 1.1) == []  # retransmitted final absorbed
    assert txn.get_timer() == 1.0 + T4
    txn.handle_timer(1.0 + T4)
    assert txn.terminated


def test_client_over_tcp_does_not_retransmit_and_k_is_zero() -> None:
    txn = ClientNonInvite("BYE", "z9hG4bKc", b"BYE", TCP, 0.0)
    assert set(txn.timers) == {"F"}
    txn.receive(parse_sip(status(200, "BYE")), 0.2)
    assert txn.timers == {"K": 0.2}


def test_abandoned_client_transaction_stops() -> None:
    txn = ClientNonInvite("REFER", "z9hG4bKc", b"REFER", UDP, 0.0)
    txn.abandon()
    assert txn.terminated and txn.get_timer() is None


def test_server_invite_non_2xx_g_h_and_ack_i() -> None:
    request = parse_sip(invite())
    txn = ServerInvite(request, UDP)
    txn.respond(100, b"100", 0.0)
    assert txn.receive(request, 0.1) == [Send(UDP, b"100")]
    txn.respond(486, b"486", 0.2)
    fired = run_timers(txn, 0.2, 0.2 + 7)
    assert [round(t - 0.2, 3) for t, e in fired if isinstance(e, Send)] == [T1, 3 * T1, 7 * T1]
    assert txn.receive(request, 8.5) == [Send(UDP, b"486")]
    ack = parse_sip(invite().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"))
    txn.receive(ack, 9.0)
    assert txn.state == "confirmed" and txn.timers == {"I": 9.0 + T4}
    txn.handle_timer(9.0 + T4)
    assert txn.terminated


def test_server_invite_without_ack_times_out_with_h() -> None:
    txn = ServerInvite(parse_sip(invite()), UDP)
    txn.respond(487, b"487", 0.0)
    fired = run_timers(txn, 0.0, 100)
    assert isinstance(fired[-1][1], TimedOut) and fired[-1][0] == 64 * T1


def test_server_invite_2xx_is_accepted_until_l() -> None:
    request = parse_sip(invite())
    txn = ServerInvite(request, UDP)
    txn.respond(200, b"200", 0.0)
    assert txn.state == "accepted" and txn.receive(request, 1.0) == []
    assert txn.respond(486, b"486", 1.0) == []  # one final response only
    txn.handle_timer(64 * T1)
    assert txn.terminated


def test_server_non_invite_j() -> None:
    request = parse_sip(invite().replace(b"INVITE", b"OPTIONS"))
    udp, tcp = ServerNonInvite(request, UDP), ServerNonInvite(request, TCP)
    udp.respond(200, b"200", 0.0)
    tcp.respond(200, b"200", 0.0)
    assert udp.receive(request, 1.0) == [Send(UDP, b"200")]
    assert udp.timers == {"J": 64 * T1} and tcp.timers == {"J": 0.0}


def test_server_key_maps_ack_to_invite() -> None:
    request = parse_sip(invite())
    ack = parse_sip(invite().replace(b"1 INVITE", b"1 ACK").replace(b"INVITE sip", b"ACK sip"))
    assert server_key(request) == server_key(ack) == ("z9hG4bKinv1", "192.0.2.10:5060", "INVITE")


# ---- digest -------------------------------------------------------------------------
RFC7616 = dict(realm="http-auth@example.org", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_digest_rfc7616_examples(algorithm: str, expected: str) -> None:
    challenge = Challenge(RFC7616["realm"], RFC7616["nonce"], algorithm, ("auth",), RFC7616["opaque"])
    assert response_value(challenge, username="Mufasa", password="Circle of Life", method="GET",
                          uri="/dir/index.html", cnonce=CNONCE, nc=1) == expected


def test_digest_rfc2617_example_and_header() -> None:
    header = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
              'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    challenge = parse_challenge(header)
    assert challenge.qop == ("auth", "auth-int")
    value = authorization(challenge, username="Mufasa", password="Circle Of Life", method="GET",
                          uri="/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth" in value and "nc=00000001" in value and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_digest_without_qop_and_sess() -> None:
    plain = parse_challenge('Digest realm="r", nonce="n"')
    assert "qop" not in authorization(plain, username="u", password="p", method="REGISTER", uri="sip:r")
    sess = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop=auth')
    assert len(response_value(sess, username="u", password="p", method="REGISTER", uri="sip:r", cnonce="c",
                              nc=1)) == 64


@pytest.mark.parametrize("header", ['Basic realm="x"', 'Digest nonce="n"', 'Digest realm="r", nonce="n", algorithm=SHA-512',
                                    'Digest realm="r", nonce="n", qop="auth-int"'])
def test_digest_refuses_what_it_cannot_answer(header: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(header)


# ---- RTP ------------------------------------------------------------------------------
def test_packetiser_headers() -> None:
    p = Packetiser(8, 0x12345678, 65535, 0xFFFFFF00)
    first, second = p.packet(b"\xd5" * 160), p.packet(b"\xd5" * 160)
    assert struct.unpack("!BBHII", first[:12]) == (0x80, 0x80 | 8, 65535, 0xFFFFFF00, 0x12345678)
    assert struct.unpack("!BBHII", second[:12]) == (0x80, 8, 0, (0xFFFFFF00 + 160) % 2**32, 0x12345678)
    assert len(first) == 172


def test_frames_are_20_ms() -> None:
    assert [len(f) for f in frames(bytes(480))] == [160, 160, 160]


# ---- SDP --------------------------------------------------------------------------------
def test_answer_keeps_m_lines_and_rejects_the_others() -> None:
    offer = SDP_PCMU + b"m=video 40002 RTP/AVP 96\r\n"
    stream, sd, index = accept_offer(offer)
    answer = parse_sdp(answer_sdp(sd, index, stream, local_ip="192.0.2.20", port=30000, session_id=1, version=1))
    assert [(m.media, m.port) for m in answer.media] == [("audio", 30000), ("video", 0)]


def test_direction_mirrors_the_offer() -> None:
    stream, _, _ = accept_offer(SDP_PCMU.replace(b"a=sendrecv", b"a=recvonly"))
    assert stream.direction == "sendonly" and stream.sends
    stream, _, _ = accept_offer(SDP_PCMU.replace(b"a=sendrecv", b"a=inactive"))
    assert not stream.sends


def test_no_g711_or_no_sdp() -> None:
    with pytest.raises(NegotiationError):
        accept_offer(SDP_PCMU.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 18"))
    with pytest.raises(NegotiationError):
        accept_offer(b"not sdp")


# ---- config and small helpers ----------------------------------------------------------
def test_safe_number_keeps_untrusted_text_out_of_uris() -> None:
    assert safe_number("+81312345678") == "+81312345678"
    for hostile in ("123@evil", "1>;x", "", None, "1" * 40, "12 34"):
        assert safe_number(hostile) is None


def test_config_is_strict_and_knows_the_pbx() -> None:
    config = AnnouncerConfig.model_validate({"pbx": ["192.0.2.0/28"], "operator": "9000"})
    assert config.allows("192.0.2.5") and not config.allows("192.0.2.17") and not config.allows("pbx.example")
    with pytest.raises(ValidationError):
        AnnouncerConfig.model_validate({"pbx": ["192.0.2.1"], "operator": "9000", "passwd": "x"})
    with pytest.raises(ValidationError):
        AnnouncerConfig.model_validate({"pbx": ["192.0.2.1"], "operator": "9000;x"})


def test_config_file_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data_dir: d\nannouncer:\n  pbx: [192.0.2.1]\n  operator: '9000'\n  hand_over: fax\n")
    with pytest.raises(PolicyError) as info:
        load_announcer_config(path)
    assert info.value.line == 5 and info.value.field == "announcer.hand_over"
    path.write_text("data_dir: d\npolicy: p.yaml\nannouncer:\n  pbx: [192.0.2.1]\n  operator: '9000'\n")
    config, policy, data = load_announcer_config(path)
    assert (policy, data) == (tmp_path / "p.yaml", tmp_path / "d")
