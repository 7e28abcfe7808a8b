"""HTTP digest authentication for REGISTER (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

Only the client side: the announcer answers a registrar's 401/407 challenge. MD5 and SHA-256
(and their -sess variants) with qop=auth or no qop; auth-int is refused because a REGISTER
without body gains nothing from it and registrars offer auth beside it.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from wire.errors import RemoteInputError

from .errors import AnnouncerError

_ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256"}


class DigestError(AnnouncerError, RemoteInputError):
    """A registrar's challenge the announcer cannot answer (the registrar's input, not our bug);
    the message says why."""


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _split_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        name = text[i:eq].strip().lower()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            value = "".join(chars)
            i += 1
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        params.setdefault(name, value)
    return params


def parse_challenge(header: str) -> Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"authentication scheme {scheme[:20]!r} is not Digest")
    params = _split_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in _ALGORITHMS:
        raise DigestError(f"digest algorithm {algorithm[:20]!r} is not supported (MD5 or SHA-256)")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise DigestError(f"qop {','.join(qop)[:40]!r} offers no 'auth'")
    return Challenge(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"),
                     params.get("stale", "").lower() == "true")


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_ALGORITHMS[algorithm.upper().removesuffix("-SESS")], text.encode("utf-8")).hexdigest()


def response_value(challenge: Challenge, *, username: str, password: str, method: str, uri: str,
                   cnonce: str, nc: int) -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 when qop is absent)."""
    alg = challenge.algorithm
    ha1 = _h(alg, f"{username}:{challenge.realm}:{password}")
    if alg.upper().endswith("-SESS"):
        ha1 = _h(alg, f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = _h(alg, f"{method}:{uri}")
    if challenge.qop:
        return _h(alg, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return _h(alg, f"{ha1}:{challenge.nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, *, username: str, password: str, method: str, uri: str,
                  nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization / Proxy-Authorization value answering challenge."""
    cnonce = cnonce or secrets.token_hex(8)
    digest = response_value(challenge, username=username, password=password, method=method, uri=uri,
                            cnonce=cnonce, nc=nc)
    parts = [f"username={_quote(username)}", f"realm={_quote(challenge.realm)}", f"nonce={_quote(challenge.nonce)}",
             f"uri={_quote(uri)}", f"response={_quote(digest)}", f"algorithm={challenge.algorithm}"]
    if challenge.qop:
        parts += ["qop=auth", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
