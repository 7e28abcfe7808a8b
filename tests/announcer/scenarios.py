"""SIPp scenarios in which SIPp plays the PBX in front of the announcer (and, for REGISTER, the
registrar). They are put together from the pieces below and written into each test's folder, so a
step shared by several (accepting a REFER and reporting its progress) is written once.

Keys: -s DID (the called number), -key caller NUMBER, -key pt 0|8, -key codec PCMU|PCMA.
"""
from __future__ import annotations

from pathlib import Path

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
FROM = "From: <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]PBX[call_number]"
TO_DIALOG = "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]"
SDP = """v=0
o=pbx 1 1 IN IP[media_ip_type] [media_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP [pt] 101
a=rtpmap:[pt] [codec]/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""


def _msg(text: str, retrans: bool = False) -> str:
    attrs = ' retrans="500"' if retrans else ""
    return f"  <send{attrs}>\n    <![CDATA[\n\n{text}\n\n    ]]>\n  </send>\n"


def _request(method: str, uri: str, cseq: str, headers: str = "", body: str | None = None,
             to: str = TO_DIALOG, branch: str = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]") -> str:
    lines = [f"{method} {uri} SIP/2.0", branch, FROM, to, "Call-ID: [call_id]", f"CSeq: {cseq}",
             "Contact: <sip:pbx@[local_ip]:[local_port];transport=[transport]>", "Max-Forwards: 70"]
    if headers:
        lines.append(headers)
    if body is None:
        lines.append("Content-Length: 0")
        return "\n".join(lines)
    lines += ["Content-Length: [len]", "", body]
    return "\n".join(lines)


def invite(offer: bool = True) -> str:
    body = SDP if offer else None
    headers = "Content-Type: application/sdp" if offer else ""
    return _msg(_request("INVITE", "sip:[service]@[remote_ip]:[remote_port]", "1 INVITE", headers, body,
                         to="To: <sip:[service]@[remote_ip]:[remote_port]>"), retrans=True)


def ack_2xx(answer: bool = False) -> str:
    body = SDP if answer else None
    headers = "Content-Type: application/sdp" if answer else ""
    return _msg(_request("ACK", "[next_url]", "1 ACK", headers, body))


def ack_final() -> str:
    """ACK of a non-2xx final response: the INVITE's branch, the response's To tag."""
    return _msg("\n".join(["ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0", "[last_Via:]", FROM, "[last_To:]",
                           "Call-ID: [call_id]", "CSeq: 1 ACK", "Max-Forwards: 70", "Content-Length: 0"]))


def recv(what: str, optional: bool = False, extra: str = "") -> str:
    kind = "response" if what.isdigit() else "request"
    opt = ' optional="true"' if optional else ""
    return f'  <recv {kind}="{what}"{opt} crlf="true"{extra}/>\n'


def reply(status: str) -> str:
    return _msg("\n".join([f"SIP/2.0 {status}", "[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]",
                           "[last_CSeq:]", "Content-Length: 0"]))


def notify(cseq: int, frag: str, terminated: bool) -> str:
    state = "terminated;reason=noresource" if terminated else "active;expires=60"
    headers = f"Event: refer\nSubscription-State: {state}\nContent-Type: message/sipfrag;version=2.0"
    return _msg(_request("NOTIFY", "[next_url]", f"{cseq} NOTIFY", headers, frag), retrans=True)


def transfer_done() -> str:
    """Accept the REFER, report 100 then 200 in NOTIFY sipfrag, answer the announcer's BYE."""
    return (reply("202 Accepted") + notify(2, "SIP/2.0 100 Trying", False) + recv("200")
            + notify(3, "SIP/2.0 200 OK", True) + recv("200") + recv("BYE") + reply("200 OK"))


def answered(offer: bool = True) -> str:
    return (invite(offer) + recv("100", optional=True) + recv("180", optional=True) + recv("200", extra=' rtd="true" rrs="true"')
            + ack_2xx(answer=not offer))


SCENARIOS: dict[str, str] = {
    "refer": answered() + recv("REFER") + transfer_done(),
    "offerless": answered(offer=False) + recv("REFER") + transfer_done(),
    "refer_403": answered() + recv("REFER") + reply("403 Forbidden") + recv("REFER") + transfer_done(),
    "refer_silent": answered() + recv("REFER") + recv("REFER") + transfer_done(),
    "early_302": (invite() + recv("100", optional=True) + recv("183") + recv("302") + ack_final()),
    # a PBX that routes the 302's target back to the announcer: the same call again, on a new branch
    "early_302_back": (invite() + recv("100", optional=True) + recv("183") + recv("302") + ack_final()
                       + invite() + recv("100", optional=True) + recv("482") + ack_final()),
    "cancel": (invite() + recv("100", optional=True) + recv("180")
               + _msg("\n".join(["CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0", "[last_Via:]", FROM,
                                 "To: <sip:[service]@[remote_ip]:[remote_port]>", "Call-ID: [call_id]",
                                 "CSeq: 1 CANCEL", "Max-Forwards: 70", "Content-Length: 0"]))
               + recv("200") + recv("487") + ack_final()),
    "bye": answered() + '  <pause milliseconds="600"/>\n'
           + _msg(_request("BYE", "[next_url]", "2 BYE"), retrans=True) + recv("200"),
    "refused": invite() + recv("100", optional=True) + recv("403") + ack_final(),
    "options": _msg(_request("OPTIONS", "sip:announcer@[remote_ip]:[remote_port]", "1 OPTIONS",
                             to="To: <sip:announcer@[remote_ip]:[remote_port]>"), retrans=True)
               + recv("200", extra=""),
}

REGISTRAR = """  <recv request="REGISTER" crlf="true"/>
  <send>
    <![CDATA[

SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]REG[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="callrec.test", nonce="[pid]a7b3c[call_number]", qop="auth", algorithm=MD5
Content-Length: 0

    ]]>
  </send>
  <recv request="REGISTER" crlf="true">
    <action>
      <verifyauth assign_to="authvalid" username="announcer" password="s3cret-test"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send next="end">
    <![CDATA[

SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]REG[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <label id="good"/>
  <send>
    <![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]REG[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Contact:];expires=120
Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
"""


def write(name: str, folder: Path) -> Path:
    body = REGISTRAR if name == "registrar" else SCENARIOS[name]
    path = folder / f"pbx_{name}.xml"
    path.write_text(f'{_HEAD}<scenario name="callrec announcer {name}">\n{body}</scenario>\n', encoding="ascii")
    return path
