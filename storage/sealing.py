"""The seal over a row's metadata: a MAC, so that an edited number, time,
state or hash in the index is caught by `callrec verify` like an edited
recording is.

The MAC is HMAC-SHA256 under a key derived from the master key (label
SEAL_LABEL) over the canonical JSON of the row's sealed columns exactly as
the database returns them (text, integers, reals, NULL; the JSON columns as
their stored text), prefixed with the version that names those columns:
``v1:<hex>``.  A column added to the index later is sealed only by a new
version with a longer list, so rows sealed before it still verify.

Not sealed: the hold (`held`, `hold_reason`, `held_since`), which people set
and release after the call, each change in the ledger; where an archive
stage moved the recording (`stored_on`, `archived_at`: the move is in the
ledger and the audio's own seal holds wherever it lies); and the seal's own
bookkeeping.  v2 adds the staff side, the legs, the announcer's leg and an
on-demand recording's start and gaps.  An erasure clears the row and seals the tombstone in its
place, with `erased_at` and `erased_reason`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["SEALED_COLUMNS", "SEAL_LABEL", "row_mac", "seal_matches"]

SEAL_LABEL = "callrec row seal v1"

SEALED_COLUMNS: dict[str, tuple[str, ...]] = {
    "v1": (
        "id", "sip_call_id", "started_at", "answered_at", "ended_at", "duration", "direction", "local_number",
        "remote_number", "caller", "callee", "caller_withheld", "codecs", "audio_path", "audio_format",
        "audio_frames", "sha256", "streams", "dtmf", "undecoded", "side_files", "late_samples", "end_reason",
        "complete", "state", "recorded_at", "size_bytes", "erased_at", "erased_reason", "notice_id",
        "announced_at",
    ),
}
SEALED_COLUMNS["v2"] = SEALED_COLUMNS["v1"] + (
    "extension", "withheld_number", "leg_call_ids", "leg", "started_by", "start_requested_at", "gaps",
)
CURRENT = "v2"


def _mac(key: bytes, version: str, row: Mapping[str, Any]) -> str:
    body = {name: row[name] for name in SEALED_COLUMNS[version]}
    data = json.dumps([version, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
    return f"{version}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"


def row_mac(key: bytes, row: Mapping[str, Any]) -> str:
    """The seal of a row as stored (a sqlite3.Row or a mapping of its columns)."""
    return _mac(key, CURRENT, row)


def seal_matches(key: bytes, row: Mapping[str, Any], seal: str) -> bool:
    """Whether the row still reads as it did when `seal` was made."""
    version = seal.split(":", 1)[0]
    if version not in SEALED_COLUMNS:
        return False
    return hmac.compare_digest(seal, _mac(key, version, row))
