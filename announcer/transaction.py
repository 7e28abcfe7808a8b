"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-I/O.

Each transaction keeps its own timers as absolute deadlines on the caller's clock; the owner asks
get_timer() for the earliest and calls handle_timer(now) when it is due, as aioquic does. Nothing
here sleeps or sends: methods return the datagrams to send and what the transaction user must hear.

The UA is only ever a server for INVITE, so there is no client INVITE transaction (timers A, B, D):
it sends REFER, NOTIFY answers, BYE and REGISTER, which are non-INVITE (timers E, F, K). Over TCP
the retransmission timers are not armed and the wait timers are zero (§17.1.2.2, §17.2.1).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from wire.sip import SipMessage

from .sipmsg import Peer

T1 = 0.5
T2 = 4.0
T4 = 5.0


@dataclass(frozen=True, slots=True)
class Send:
    peer: Peer
    data: bytes


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer F (no final response) or timer H (no ACK for a final non-2xx response)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class Response:
    """A response the client transaction passes up (each distinct one once)."""

    transaction: ClientNonInvite
    message: SipMessage


Effect = Send | TimedOut | Response


class Transaction(ABC):
    """Timers and state shared by all kinds."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.owner: object = None  # the call or registrar that hears about responses and timeouts
        self.state = "trying"
        self.timers: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def get_timer(self) -> float | None:
        return min(self.timers.values()) if self.timers else None

    def handle_timer(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for name, deadline in sorted(self.timers.items(), key=lambda item: item[1]):
            if deadline <= now and self.timers.get(name) == deadline:
                del self.timers[name]
                out += self._fire(name, now)
        return out

    @abstractmethod
    def _fire(self, name: str, now: float) -> list[Effect]:
        """Timer `name` is due."""

    def _terminate(self) -> None:
        self.state = "terminated"
        self.timers.clear()


class ServerInvite(Transaction):
    """§17.2.1: Proceeding → Completed (non-2xx; G retransmits, H gives up) → Confirmed (I),
    or Proceeding → Accepted (2xx; the UA core retransmits the 2xx, timer L absorbs)."""

    def __init__(self, request: SipMessage, peer: Peer) -> None:
        super().__init__(peer)
        self.request = request
        self.state = "proceeding"
        self.last: bytes | None = None
        self.status = 0
        self._interval = T1

    def respond(self, status: int, data: bytes, now: float) -> list[Effect]:
        if self.state != "proceeding":
            return []
        self.last, self.status = data, status
        if 200 <= status < 300:
            self.state = "accepted"
            self.timers = {"L": now + 64 * T1}
        elif status >= 300:
            self.state = "completed"
            self.timers = {"H": now + 64 * T1}
            if not self.peer.reliable:
                self.timers["G"] = now + T1
        return [Send(self.peer, data)]

    def receive(self, request: SipMessage, now: float) -> list[Effect]:
        """A retransmitted INVITE, or the ACK of a non-2xx final response."""
        if request.method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                self.timers = {"I": now + (0.0 if self.peer.reliable else T4)}
            return []
        if self.state in ("proceeding", "completed") and self.last is not None:
            return [Send(self.peer, self.last)]
        return []

    def _fire(self, name: str, now: float) -> list[Effect]:
        if name == "G" and self.state == "completed" and self.last is not None:
            self._interval = min(2 * self._interval, T2)
            self.timers["G"] = now + self._interval
            return [Send(self.peer, self.last)]
        if name == "H":
            self._terminate()
            return [TimedOut(self)]
        if name in ("I", "L"):
            self._terminate()
        return []


class ServerNonInvite(Transaction):
    """§17.2.2: Trying → Proceeding → Completed (J absorbs retransmissions) → Terminated."""

    def __init__(self, request: SipMessage, peer: Peer) -> None:
        super().__init__(peer)
        self.request = request
        self.last: bytes | None = None

    def respond(self, status: int, data: bytes, now: float) -> list[Effect]:
        if self.state in ("completed", "terminated"):
            return []
        self.last = data
        if status < 200:
            self.state = "proceeding"
        else:
            self.state = "completed"
            self.timers = {"J": now + (0.0 if self.peer.reliable else 64 * T1)}
        return [Send(self.peer, data)]

    def receive(self, request: SipMessage, now: float) -> list[Effect]:
        if self.last is not None and self.state in ("proceeding", "completed"):
            return [Send(self.peer, self.last)]
        return []

    def _fire(self, name: str, now: float) -> list[Effect]:
        self._terminate()
        return []


class ClientNonInvite(Transaction):
    """§17.1.2: Trying (E doubles to T2) → Proceeding (E at T2) → Completed (K) → Terminated;
    timer F ends the wait for a final response."""

    def __init__(self, method: str, branch: str, data: bytes, peer: Peer, now: float) -> None:
        super().__init__(peer)
        self.method = method
        self.branch = branch
        self.data = data
        self._interval = T1
        self.timers = {"F": now + 64 * T1}
        if not peer.reliable:
            self.timers["E"] = now + T1

    def start(self) -> list[Effect]:
        return [Send(self.peer, self.data)]

    def receive(self, message: SipMessage, now: float) -> list[Effect]:
        status = message.status or 0
        if self.state not in ("trying", "proceeding"):
            return []
        if status < 200:
            self.state = "proceeding"
            return [Response(self, message)]
        self.state = "completed"
        self.timers = {"K": now + (0.0 if self.peer.reliable else T4)}
        return [Response(self, message)]

    def abandon(self) -> None:
        """The transaction user gave up waiting (its own, shorter deadline): stop retransmitting."""
        self._terminate()

    def _fire(self, name: str, now: float) -> list[Effect]:
        if name == "E" and self.state in ("trying", "proceeding"):
            self._interval = T2 if self.state == "proceeding" else min(2 * self._interval, T2)
            self.timers["E"] = now + self._interval
            return [Send(self.peer, self.data)]
        if name == "F":
            self._terminate()
            return [TimedOut(self)]
        if name == "K":
            self._terminate()
        return []


def server_key(request: SipMessage) -> tuple[str, str, str] | None:
    """§17.2.3: branch, sent-by and method (ACK matches its INVITE); None without a branch."""
    branch = request.branch
    if branch is None:
        return None
    top = (request.header_values("via") or [""])[0]
    sent_by = top.split(";", 1)[0].split(None, 1)[-1].strip().lower()
    method = "INVITE" if request.method == "ACK" else (request.method or "")
    return branch, sent_by, method


def client_key(message: SipMessage) -> tuple[str, str] | None:
    """§17.1.3: the branch of the top Via and the CSeq method."""
    branch = message.branch
    if branch is None:
        return None
    return branch, message.cseq[1]


class TransactionTable:
    """All live transactions; the UA core looks them up here and drives their timers."""

    def __init__(self) -> None:
        self.server: dict[tuple[str, str, str], ServerInvite | ServerNonInvite] = {}
        self.client: dict[tuple[str, str], ClientNonInvite] = {}

    def add_server(self, key: tuple[str, str, str], txn: ServerInvite | ServerNonInvite) -> None:
        self.server[key] = txn

    def add_client(self, txn: ClientNonInvite) -> None:
        self.client[(txn.branch, txn.method)] = txn

    def get_timer(self) -> float | None:
        deadlines = [t for txn in (*self.server.values(), *self.client.values()) if (t := txn.get_timer()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for table in (self.server, self.client):
            for key, txn in list(table.items()):
                deadline = txn.get_timer()
                if deadline is not None and deadline <= now:
                    out += txn.handle_timer(now)
                if txn.terminated:
                    del table[key]  # type: ignore[arg-type]
        return out
