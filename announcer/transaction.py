"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-I/O.

Each transaction keeps its own timers as absolute deadlines on the caller's clock; the owner asks
get_timer() for the earliest and calls handle_timer(now) when it is due, as aioquic does. Nothing
here sleeps or sends: methods return the datagrams to send and what the transaction user must hear.

The UA is only ever a server for INVITE, so there is no client INVITE transaction (timers A, B, D):
it sends REFER, NOTIFY answers, BYE and REGISTER, which are non-INVITE (timers E, F, K). Over TCP
the retransmission timers are not armed and the wait timers are zero (§17.1.2.2, §17.2.1).

Each kind's moves are in one table below, drawn from figures 6-8 of §17 (figure 7 as RFC 6026
redraws it) and limited to the events handled here: no transport error ever reaches a transaction,
so those edges are left out. Every change of state goes through Transaction._move, which refuses a
move its table lacks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from wire.sip import SipMessage

from .errors import IllegalTransition
from .sipmsg import Peer

__all__ = [
    "INVITE_SERVER_TRANSITIONS", "NON_INVITE_CLIENT_TRANSITIONS", "NON_INVITE_SERVER_TRANSITIONS", "T1", "T2", "T4",
    "ClientNonInvite", "InviteServerState", "NonInviteState", "Response", "Send", "ServerInvite", "ServerNonInvite",
    "TimedOut", "Transaction", "TransactionTable", "client_key", "server_key",
]

T1 = 0.5
T2 = 4.0
T4 = 5.0


class InviteServerState(StrEnum):
    """Figure 7 with RFC 6026's Accepted. A str, so logs and tests read the RFC's own word."""

    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # a 2xx was sent; its retransmissions and the ACK belong to the UA core
    COMPLETED = "completed"  # a 300-699 was sent; waiting for its ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class NonInviteState(StrEnum):
    """Figures 6 and 8: client and server non-INVITE transactions share these states, not their moves."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


_I = InviteServerState
_N = NonInviteState

INVITE_SERVER_TRANSITIONS: Mapping[InviteServerState, frozenset[InviteServerState]] = {
    _I.PROCEEDING: frozenset({_I.ACCEPTED, _I.COMPLETED}),  # 2xx / 300-699 from the TU
    _I.ACCEPTED: frozenset({_I.TERMINATED}),  # timer L
    _I.COMPLETED: frozenset({_I.CONFIRMED, _I.TERMINATED}),  # ACK / timer H
    _I.CONFIRMED: frozenset({_I.TERMINATED}),  # timer I
    _I.TERMINATED: frozenset(),
}

NON_INVITE_SERVER_TRANSITIONS: Mapping[NonInviteState, frozenset[NonInviteState]] = {
    _N.TRYING: frozenset({_N.PROCEEDING, _N.COMPLETED}),  # 1xx / 200-699 from the TU
    _N.PROCEEDING: frozenset({_N.PROCEEDING, _N.COMPLETED}),
    _N.COMPLETED: frozenset({_N.TERMINATED}),  # timer J
    _N.TERMINATED: frozenset(),
}

NON_INVITE_CLIENT_TRANSITIONS: Mapping[NonInviteState, frozenset[NonInviteState]] = {
    # 1xx / 200-699 received / timer F, or the TU abandons the request
    _N.TRYING: frozenset({_N.PROCEEDING, _N.COMPLETED, _N.TERMINATED}),
    _N.PROCEEDING: frozenset({_N.PROCEEDING, _N.COMPLETED, _N.TERMINATED}),
    _N.COMPLETED: frozenset({_N.TERMINATED}),  # timer K, or abandoned
    # Not drawn by the RFC: a call abandons its REFER when its own refer_timeout passes, and that
    # (up to 60 s) may come after timer F (64*T1 = 32 s) has already terminated the transaction.
    _N.TERMINATED: frozenset({_N.TERMINATED}),
}

State = TypeVar("State", InviteServerState, NonInviteState)


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


class Transaction(ABC, Generic[State]):
    """Timers and state shared by all kinds; each kind brings its initial state and its table."""

    def __init__(self, peer: Peer, state: State, transitions: Mapping[State, frozenset[State]]) -> None:
        self.peer = peer
        self.owner: object = None  # the call or registrar that hears about responses and timeouts
        self.state: State = state
        self._transitions: Mapping[State, frozenset[State]] = transitions
        self.timers: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is type(self.state).TERMINATED

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

    def _move(self, new: State) -> None:
        """The only way state changes, so a move the table does not draw fails where it is made
        instead of leaving a transaction in a state its timers no longer fit."""
        if new not in self._transitions[self.state]:
            raise IllegalTransition(f"{type(self).__name__} cannot move from {self.state} to {new}")
        self.state = new

    def _terminate(self) -> None:
        self._move(type(self.state).TERMINATED)
        self.timers.clear()


class ServerInvite(Transaction[InviteServerState]):
    """§17.2.1: Proceeding → Completed (non-2xx; G retransmits, H gives up) → Confirmed (I),
    or Proceeding → Accepted (2xx; the UA core retransmits the 2xx, timer L absorbs)."""

    def __init__(self, request: SipMessage, peer: Peer) -> None:
        super().__init__(peer, InviteServerState.PROCEEDING, INVITE_SERVER_TRANSITIONS)
        self.request = request
        self.last: bytes | None = None
        self.status = 0
        self._interval = T1

    def respond(self, status: int, data: bytes, now: float) -> list[Effect]:
        if self.state is not InviteServerState.PROCEEDING:
            return []
        self.last, self.status = data, status
        if 200 <= status < 300:
            self._move(InviteServerState.ACCEPTED)
            self.timers = {"L": now + 64 * T1}
        elif status >= 300:
            self._move(InviteServerState.COMPLETED)
            self.timers = {"H": now + 64 * T1}
            if not self.peer.reliable:
                self.timers["G"] = now + T1
        return [Send(self.peer, data)]

    def receive(self, request: SipMessage, now: float) -> list[Effect]:
        """A retransmitted INVITE, or the ACK of a non-2xx final response."""
        if request.method == "ACK":
            if self.state is InviteServerState.COMPLETED:
                self._move(InviteServerState.CONFIRMED)
                self.timers = {"I": now + (0.0 if self.peer.reliable else T4)}
            return []
        if self.state in (InviteServerState.PROCEEDING, InviteServerState.COMPLETED) and self.last is not None:
            return [Send(self.peer, self.last)]
        return []

    def _fire(self, name: str, now: float) -> list[Effect]:
        if name == "G" and self.state is InviteServerState.COMPLETED and self.last is not None:
            self._interval = min(2 * self._interval, T2)
            self.timers["G"] = now + self._interval
            return [Send(self.peer, self.last)]
        if name == "H":
            self._terminate()
            return [TimedOut(self)]
        if name in ("I", "L"):
            self._terminate()
        return []


class ServerNonInvite(Transaction[NonInviteState]):
    """§17.2.2: Trying → Proceeding → Completed (J absorbs retransmissions) → Terminated."""

    def __init__(self, request: SipMessage, peer: Peer) -> None:
        super().__init__(peer, NonInviteState.TRYING, NON_INVITE_SERVER_TRANSITIONS)
        self.request = request
        self.last: bytes | None = None

    def respond(self, status: int, data: bytes, now: float) -> list[Effect]:
        if self.state in (NonInviteState.COMPLETED, NonInviteState.TERMINATED):
            return []
        self.last = data
        if status < 200:
            self._move(NonInviteState.PROCEEDING)
        else:
            self._move(NonInviteState.COMPLETED)
            self.timers = {"J": now + (0.0 if self.peer.reliable else 64 * T1)}
        return [Send(self.peer, data)]

    def receive(self, request: SipMessage, now: float) -> list[Effect]:
        if self.last is not None and self.state in (NonInviteState.PROCEEDING, NonInviteState.COMPLETED):
            return [Send(self.peer, self.last)]
        return []

    def _fire(self, name: str, now: float) -> list[Effect]:
        self._terminate()
        return []


class ClientNonInvite(Transaction[NonInviteState]):
    """§17.1.2: Trying (E doubles to T2) → Proceeding (E at T2) → Completed (K) → Terminated;
    timer F ends the wait for a final response."""

    def __init__(self, method: str, branch: str, data: bytes, peer: Peer, now: float) -> None:
        super().__init__(peer, NonInviteState.TRYING, NON_INVITE_CLIENT_TRANSITIONS)
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
        if self.state not in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            return []
        if status < 200:
            self._move(NonInviteState.PROCEEDING)
            return [Response(self, message)]
        self._move(NonInviteState.COMPLETED)
        self.timers = {"K": now + (0.0 if self.peer.reliable else T4)}
        return [Response(self, message)]

    def abandon(self) -> None:
        """The transaction user gave up waiting (its own, shorter deadline): stop retransmitting."""
        self._terminate()

    def _fire(self, name: str, now: float) -> list[Effect]:
        if name == "E" and self.state in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            self._interval = T2 if self.state is NonInviteState.PROCEEDING else min(2 * self._interval, T2)
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
    protocol_and_host = top.split(";", 1)[0].split(None, 1)
    sent_by = protocol_and_host[-1].strip().lower() if protocol_and_host else ""
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
