"""What a copy package's signed manifest says of its call, wherever the package is made: on the
box (access/service.py) or at the owning site for the centre (access/site_desk.py).  Both take
the call's fields and, for an evidence export (証拠提出), its notice and marks from here, so a
copy made for the centre says exactly what a copy of the same call made on the box says.
"""
from __future__ import annotations

from typing import Any

from storage.index import CallRow
from storage.marks import MarkBook
from storage.notices import NoticeLog
from storage.store import Store

__all__ = ["CALL_FIELDS", "call_evidence", "call_fields"]

CALL_FIELDS = ("id", "started_at", "answered_at", "ended_at", "duration", "direction", "local_number",
               "remote_number", "extension", "withheld_number", "sha256", "audio_format")


def call_fields(row: CallRow) -> dict[str, Any]:
    """The call as the manifest names it."""
    return {name: getattr(row, name) for name in CALL_FIELDS}


def call_evidence(store: Store, row: CallRow, timezone: str) -> dict[str, Any]:
    """The proof of notice (whether and when the caller was told of the recording, and which
    announcement was played) and the call's harassment marks, withdrawn ones too (with who
    withdrew them and why), so the recipient sees the whole history; times in `timezone`."""
    notice = None
    if row.notice_id:
        log = NoticeLog(store.index.path, timezone)
        try:
            found = log.get(row.notice_id)
        finally:
            log.close()
        notice = found.as_dict() if found is not None else None
    with MarkBook(store) as book:
        marks = [mark.as_dict() for mark in book.of_call(row.id)]
    return {"notice": notice, "marks": marks}
