"""The SIP transactions (announcer/transaction.py) driven on their own: the
PBX as their peer over UDP and TCP, a response to a client transaction, and
a transaction's timers fired in order up to a deadline."""
from __future__ import annotations

from announcer.sipmsg import Peer

UDP = Peer("udp", "192.0.2.10", 5060)
TCP = Peer("tcp", "192.0.2.10", 40000)


def run_timers(txn, start: float, end: float) -> list[tuple[float, object]]:
    out = []
    while (deadline := txn.get_timer()) is not None and deadline <= end:
        out += [(deadline, e) for e in txn.handle_timer(deadline)]
    return out


def status(code: int, method: str = "REFER") -> bytes:
    return (f"SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKc\r\nFrom: <sip:a@h>;tag=1\r\n"
            f"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 5 {method}\r\nContent-Length: 0\r\n\r\n").encode()
