"""The centre's signed word to a site: a grant to fetch one call's audio for one request, an
order to hold or release a call, and the site's signed confirmation of that order.

Audio stays at the site that recorded it (issue 19, 4).  The centre approves requests, but the
site hands a recording out only against a grant the centre signed for that call and that
request, with what is allowed (listen or copy), an expiry and a nonce; a grant leaked, replayed
after its use, stretched to another call or carried to another site buys nothing.  A hold placed
centrally travels the same way as a signed order, and the site answers with a confirmation signed
by its own enrolment key, so the centre shows the hold as pending until the site's answer proves
it was applied.

Pure: tokens and keys in, verdicts out; the caller passes `now` and keeps track of used nonces.

A token is ``base64url(payload) "." base64url(signature)``, the payload canonical JSON (sorted
keys, UTF-8), the signature over a domain line naming the kind of token followed by the payload,
so a signature made for one kind never verifies as another.  Grants and hold orders are signed
with the centre's Ed25519 grant key; confirmations with the site's ECDSA P-256 certificate key.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import AccessError

__all__ = ["CLOCK_SKEW", "MAX_GRANT_LIFETIME", "SITE_NAME", "Allowed", "GrantRefused", "HoldConfirmation",
           "HoldOrder", "Refusal", "SiteGrant", "check_confirmation", "check_grant", "check_site_name",
           "confirm_hold", "issue_grant", "issue_hold_order", "read_hold_order", "unverified_fields"]

SITE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""A site's name: one DNS label, so it can stand in a certificate's subject alternative name and
be checked by every TLS library as a host name."""

MAX_TOKEN = 16 * 1024
MAX_GRANT_LIFETIME = timedelta(hours=24)
"""A grant is for fetching now, not a standing permission: the centre asks again for a new fetch."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far a site's clock may lag the centre's and still accept a grant issued just now."""

_NONCE = re.compile(r"[0-9a-f]{32}")
_FIELD = re.compile(r"[\x21-\x7e]{1,128}")
"""Call ids and request numbers as the centre names them: printable ASCII, no spaces; they are
compared and looked up, never used in a path."""
_DOMAINS = {"grant": b"callrec site grant v1\n", "hold_order": b"callrec hold order v1\n",
            "hold_confirmation": b"callrec hold confirmation v1\n"}


class Allowed(StrEnum):
    """What a grant lets the centre fetch: the sealed WAV to listen to, or a numbered copy package."""

    LISTEN = "listen"
    COPY = "copy"


class Refusal(StrEnum):
    """Why a site refused; stable, auditors grep them in the site's ledger."""

    MALFORMED = "malformed"
    SIGNATURE = "signature"
    OTHER_SITE = "other_site"
    OTHER_CALL = "other_call"
    OTHER_REQUEST = "other_request"
    OTHER_USE = "other_use"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    TOO_LONG = "too_long"
    REPLAYED = "replayed"
    UNAVAILABLE = "unavailable"
    TLS = "tls"
    NOT_CENTRE = "not_centre"
    REVOKED = "revoked"


class GrantRefused(AccessError):
    """A grant, order or confirmation that does not hold; `reason` says which check failed."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SiteGrant:
    """The centre's permission, once checked: fetch `call_id` for `request` at `site`, as `allow`
    says, before `not_after`, once (the site remembers `nonce`).  For a copy, `copy` holds the
    copy package's manifest fields the centre fills in (copy number, purpose, approver, holder,
    disposal deadline); the site adds the call's own fields from its index."""

    site: str
    call_id: str
    request: str
    allow: Allowed
    issued_at: datetime
    not_after: datetime
    nonce: str
    approved_by: str | None = None
    copy: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class HoldOrder:
    """A hold (or its release) placed at the centre for a call kept at `site`.  Orders carry no
    expiry: they wait in the outbox through an outage and still apply when they arrive; applying
    one twice changes nothing (the site answers with the confirmation it gave the first time)."""

    site: str
    call_id: str
    hold: bool
    reason: str
    ordered_by: str
    approved_by: str | None
    issued_at: datetime
    order_id: str


@dataclass(frozen=True)
class HoldConfirmation:
    """The site's answer to a hold order: `state` is held, released or refused (with `detail`:
    unknown call, erased on DATE, ...), and `ledger_seq` the site's ledger entry recording it."""

    site: str
    order_id: str
    call_id: str
    state: str
    detail: str
    at: datetime
    ledger_seq: int | None


def check_site_name(name: str) -> str:
    if not SITE_NAME.fullmatch(name):
        raise AccessError(f"site name {name!r}: use lower-case letters, digits and inner hyphens (a DNS label, "
                          "at most 63 characters), e.g. higashi-chosha")
    return name


# --- encoding ----------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _seal(kind: str, payload: dict[str, Any], sign: Any) -> str:
    body = _canonical({**payload, "kind": kind})
    return f"{_b64(body)}.{_b64(sign(_DOMAINS[kind] + body))}"


def _open(kind: str, token: str, verify: Any) -> dict[str, Any]:
    """The payload of a token of this kind whose signature `verify` accepts, or GrantRefused."""
    token = token.strip()
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        raise GrantRefused(Refusal.MALFORMED, f"not a {kind} token")
    head, _, tail = token.partition(".")
    try:
        body, signature = _unb64(head), _unb64(tail)
    except (ValueError, binascii.Error):
        raise GrantRefused(Refusal.MALFORMED, f"not a {kind} token (bad base64)") from None
    try:
        verify(signature, _DOMAINS[kind] + body)
    except InvalidSignature:
        raise GrantRefused(Refusal.SIGNATURE, f"the {kind} is not signed by the key this site trusts") from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise GrantRefused(Refusal.MALFORMED, f"the {kind} is not JSON") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise GrantRefused(Refusal.MALFORMED, f"the token is not a {kind}")
    return payload


def _text(payload: Mapping[str, Any], name: str, pattern: re.Pattern[str] = _FIELD) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise GrantRefused(Refusal.MALFORMED, f"field {name!r} is missing or malformed")
    return value


def _moment(payload: Mapping[str, Any], name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_text(payload, name))
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise GrantRefused(Refusal.MALFORMED, f"field {name!r} is not an ISO 8601 time with offset")
    return moment


def _aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("pass `now` with its UTC offset")
    return now


# --- grants ------------------------------------------------------------------------------------

def issue_grant(key: Ed25519PrivateKey, *, site: str, call_id: str, request: str, allow: Allowed, now: datetime,
                approved_by: str | None = None, lifetime: timedelta = timedelta(minutes=10),
                copy: Mapping[str, Any] | None = None, nonce: str | None = None) -> str:
    """The centre's grant as a token to hand to the fetch (and to nobody else: it is a bearer
    permission within its minutes, though only over the centre's own certificate)."""
    check_site_name(site)
    if not timedelta(0) < lifetime <= MAX_GRANT_LIFETIME:
        raise AccessError(f"a grant lives more than 0 and at most {MAX_GRANT_LIFETIME}")
    if (allow is Allowed.COPY) != (copy is not None):
        raise AccessError("a copy grant carries the copy's manifest fields, and only a copy grant does")
    payload = {"site": site, "call_id": call_id, "request": request, "allow": str(allow),
               "issued_at": _aware(now).isoformat(timespec="seconds"),
               "not_after": (now + lifetime).isoformat(timespec="seconds"),
               "nonce": nonce or secrets.token_hex(16), "approved_by": approved_by,
               "copy": dict(copy) if copy is not None else None}
    for name in ("call_id", "request"):
        _text(payload, name)
    return _seal("grant", payload, key.sign)


def unverified_fields(token: str) -> dict[str, Any]:
    """A token's payload read WITHOUT checking its signature: for the centre's fetch to know which
    call and request to ask for.  Never a basis for a decision; check_grant is."""
    try:
        payload = json.loads(_unb64(token.strip().partition(".")[0]))
    except (ValueError, binascii.Error):
        raise GrantRefused(Refusal.MALFORMED, "not a token") from None
    if not isinstance(payload, dict):
        raise GrantRefused(Refusal.MALFORMED, "not a token")
    return payload


def check_grant(token: str, key: Ed25519PublicKey, *, site: str, call_id: str, request: str, allow: Allowed,
                now: datetime) -> SiteGrant:
    """The grant, if the centre signed it for this site, this call, this request and this use, and
    it is within its time; else GrantRefused naming the first check that failed.  Whether its nonce
    was used before is the caller's to check (it keeps the used ones)."""
    payload = _open("grant", token, key.verify)
    try:
        wanted = Allowed(payload.get("allow"))
    except ValueError:
        raise GrantRefused(Refusal.MALFORMED, "field 'allow' is neither listen nor copy") from None
    copy, approved_by = payload.get("copy"), payload.get("approved_by")
    if approved_by is not None and not isinstance(approved_by, str):
        raise GrantRefused(Refusal.MALFORMED, "field 'approved_by' is not a name")
    if (wanted is Allowed.COPY) != isinstance(copy, dict):
        raise GrantRefused(Refusal.MALFORMED, "a copy grant carries the copy's fields, and only a copy grant does")
    grant = SiteGrant(site=_text(payload, "site", SITE_NAME), call_id=_text(payload, "call_id"),
                      request=_text(payload, "request"), allow=wanted, issued_at=_moment(payload, "issued_at"),
                      not_after=_moment(payload, "not_after"), nonce=_text(payload, "nonce", _NONCE),
                      approved_by=approved_by, copy=copy)
    now = _aware(now)
    checks = (
        (grant.site == site, Refusal.OTHER_SITE, f"the grant is for site {grant.site}, this is {site}"),
        (grant.call_id == call_id, Refusal.OTHER_CALL, f"the grant is for call {grant.call_id}, not {call_id}"),
        (grant.request == request, Refusal.OTHER_REQUEST,
         f"the grant is for request {grant.request}, not {request}"),
        (grant.allow is allow, Refusal.OTHER_USE, f"the grant allows {grant.allow}, not {allow}"),
        (grant.not_after - grant.issued_at <= MAX_GRANT_LIFETIME, Refusal.TOO_LONG,
         f"the grant lives longer than {MAX_GRANT_LIFETIME}"),
        (now < grant.not_after, Refusal.EXPIRED, f"the grant expired at {grant.not_after.isoformat()}"),
        (grant.issued_at <= now + CLOCK_SKEW, Refusal.NOT_YET_VALID,
         f"the grant is issued at {grant.issued_at.isoformat()}, ahead of this site's clock"),
    )
    for holds, reason, message in checks:
        if not holds:
            raise GrantRefused(reason, message)
    return grant


# --- hold orders -------------------------------------------------------------------------------

def issue_hold_order(key: Ed25519PrivateKey, *, site: str, call_id: str, hold: bool, reason: str, ordered_by: str,
                     approved_by: str | None, now: datetime, order_id: str | None = None) -> str:
    check_site_name(site)
    if not reason.strip():
        raise AccessError("a hold order needs a reason")
    payload = {"site": site, "call_id": call_id, "hold": hold, "reason": reason, "ordered_by": ordered_by,
               "approved_by": approved_by, "issued_at": _aware(now).isoformat(timespec="seconds"),
               "order_id": order_id or secrets.token_hex(16)}
    _text(payload, "call_id")
    return _seal("hold_order", payload, key.sign)


def read_hold_order(token: str, key: Ed25519PublicKey, *, site: str) -> HoldOrder:
    """The order, if the centre signed it for this site; else GrantRefused."""
    payload = _open("hold_order", token, key.verify)
    hold, reason, by, approved = (payload.get(n) for n in ("hold", "reason", "ordered_by", "approved_by"))
    if not (isinstance(hold, bool) and isinstance(reason, str) and reason.strip() and isinstance(by, str)
            and (approved is None or isinstance(approved, str))):
        raise GrantRefused(Refusal.MALFORMED, "the hold order's hold, reason or names are malformed")
    order = HoldOrder(site=_text(payload, "site", SITE_NAME), call_id=_text(payload, "call_id"), hold=hold,
                      reason=reason, ordered_by=by, approved_by=approved, issued_at=_moment(payload, "issued_at"),
                      order_id=_text(payload, "order_id", _NONCE))
    if order.site != site:
        raise GrantRefused(Refusal.OTHER_SITE, f"the hold order is for site {order.site}, this is {site}")
    return order


def confirm_hold(key: ec.EllipticCurvePrivateKey, confirmation: HoldConfirmation) -> str:
    """The site's confirmation, signed with its enrolment key (the centre checks it against the
    certificate it issued the site)."""
    payload = {"site": confirmation.site, "order_id": confirmation.order_id, "call_id": confirmation.call_id,
               "state": confirmation.state, "detail": confirmation.detail,
               "at": confirmation.at.isoformat(timespec="seconds"), "ledger_seq": confirmation.ledger_seq}
    return _seal("hold_confirmation", payload, lambda data: key.sign(data, ec.ECDSA(hashes.SHA256())))


def check_confirmation(token: str, key: ec.EllipticCurvePublicKey, *, site: str, order_id: str) -> HoldConfirmation:
    """At the centre: the confirmation, if `site` signed it for `order_id`; the hold stays pending
    until one passes."""
    payload = _open("hold_confirmation", token, lambda sig, data: key.verify(sig, data, ec.ECDSA(hashes.SHA256())))
    state, detail, seq = payload.get("state"), payload.get("detail"), payload.get("ledger_seq")
    if state not in ("held", "released", "refused") or not isinstance(detail, str) or not (
            seq is None or (isinstance(seq, int) and not isinstance(seq, bool))):
        raise GrantRefused(Refusal.MALFORMED, "the confirmation's state, detail or ledger entry is malformed")
    confirmation = HoldConfirmation(site=_text(payload, "site", SITE_NAME), order_id=_text(payload, "order_id", _NONCE),
                                    call_id=_text(payload, "call_id"), state=state, detail=detail,
                                    at=_moment(payload, "at"), ledger_seq=seq)
    if confirmation.site != site or confirmation.order_id != order_id:
        raise GrantRefused(Refusal.OTHER_SITE, f"the confirmation is for order {confirmation.order_id} at site "
                           f"{confirmation.site}, not {order_id} at {site}")
    return confirmation
