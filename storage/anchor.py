"""Signed exports of the ledgers' heads, to be kept off the machine.

The anchor folder (ledger.py) catches a data folder put back from a backup
or a snapshot, but it is on the same machine: a root who knows of it can put
it back too.  What has left the machine cannot be put back.  So the heads
of both ledgers (the 管理簿 and the seal ledger) are exported as a small
signed statement: by `callrec ledger anchor` for the 管理責任者 to file with
the printed 管理簿 or send to the city's file server, and by the daemon once
a day into the journal (`ledger.anchor_exported`), which a log server that
receives the journal keeps.  `callrec verify --anchor FILE` then proves that
the ledgers still hold exactly those entries.

Signed with Ed25519 under a key derived from the master key (label
SIGNING_LABEL), never stored: anyone can check an export with the public
key alone (its fingerprint is printed in every export), and nobody without
the master key can make one.  Signed bytes: DOMAIN + the canonical JSON of
the export without `signature` (ledger.py's canonical form).
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .keys import MasterKey
from .ledger import Ledger, LedgerError, canonical
from .store import Store

__all__ = ["FORMAT", "check_anchor", "export_anchor", "public_key"]

SIGNING_LABEL = "callrec ledger anchor signing v1"
DOMAIN = b"callrec ledger anchor v1\n"
FORMAT = "callrec ledger anchor v1"


def _signing_key(master: MasterKey) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(master.derive(SIGNING_LABEL))


def public_key(master: MasterKey) -> bytes:
    return _signing_key(master).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _fingerprint(raw: bytes) -> str:
    digits = hashlib.sha256(raw).digest()[:16].hex().upper()
    return "-".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def _head(ledger: Ledger) -> dict[str, Any] | None:
    head = ledger.head()
    return None if head is None else {"seq": head[0], "mac": head[1]}


def export_anchor(store: Store, now: datetime) -> dict[str, Any]:
    """Both heads as they are now, signed; LedgerError when a head is bad
    (an export must never vouch for a ledger `verify` would not)."""
    key = public_key(store.master)
    body = {"format": FORMAT, "at": now.isoformat(timespec="seconds"), "master_key_id": store.master.key_id,
            "ledger": _head(store.ledger), "seals": _head(store.seals), "public_key": key.hex(),
            "fingerprint": _fingerprint(key)}
    signature = _signing_key(store.master).sign(DOMAIN + canonical(body))
    return {**body, "signature": signature.hex()}


def check_anchor(store: Store, export: Any) -> list[str]:
    """What does not match between an export and the ledgers now: an
    export this device did not sign, or a ledger that no longer holds the
    entry it named (put back from an earlier copy, or rewritten)."""
    if not isinstance(export, dict) or export.get("format") != FORMAT:
        return [f"not a {FORMAT} export"]
    body = {name: value for name, value in export.items() if name != "signature"}
    try:
        key = bytes.fromhex(str(export["public_key"]))
        signature = bytes.fromhex(str(export["signature"]))
        Ed25519PublicKey.from_public_bytes(key).verify(signature, DOMAIN + canonical(body))
    except (KeyError, ValueError, InvalidSignature):
        return ["the export's signature does not verify: it was edited, or is not an export"]
    if key != public_key(store.master):
        return [f"signed by another device (key {_fingerprint(key)}), not by this data folder's master key"]
    problems = []
    for name, ledger, title in (("ledger", store.ledger, "ledger"), ("seals", store.seals, "seal ledger")):
        head = export.get(name)
        if not isinstance(head, dict):
            continue
        seq, mac = head.get("seq"), head.get("mac")
        try:
            found = ledger.mac_at(seq) if isinstance(seq, int) else None
        except LedgerError as exc:
            problems.append(f"{title}: {exc}")
            continue
        if found is None:
            problems.append(f"{title}: rolled back: the export of {export['at']} names seq {seq}, which the {title} "
                            "no longer holds (put back from an earlier copy)")
        elif found != mac:
            problems.append(f"{title}: seq {seq} is not the entry the export of {export['at']} names (rewritten)")
    return problems
