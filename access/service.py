"""The access layer at work on one appliance: sign people in, and carry out what the core decides.

This is the adapter over one data folder: it reads and writes the access tables in the index
file and the data folder's ledger, reads recordings through storage, and asks `rules`, `requests`
and `copies` what may happen (the part shared with the centre is access/desk.py).  The CLI and the
console both call it, so a rule holds whichever way a person comes in.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path

from policy.schema import Policy
from storage.index import CallRow
from storage.layout import INDEX_FILE
from storage.ledger import LedgerEntry
from storage.records import hand_out, sealed_files, sealed_row
from storage.store import Store

from . import requests as core
from .copies import CopyRecord, copy_deadline, copy_number
from .copy_manifest import call_evidence, call_fields
from .desk import DISCLOSING, AccessDesk, Fulfilment
from .errors import Forbidden
from .package import signing_fingerprint, write_package
from .requests import AccessEvent, LedgerNote, Request, RequestState
from .rules import Actor, Grant
from .store import AccessStore

__all__ = ["DISCLOSING", "AccessService", "Fulfilment"]

EXPORTS = "exports"


class AccessService(AccessDesk):
    """People, requests and copies over one opened data folder."""

    def __init__(self, store: Store, policy: Policy) -> None:
        self.store = store
        self._setup(policy, lambda: AccessStore(store.data_dir / INDEX_FILE))

    # ---- where things are ---------------------------------------------------------
    def now(self) -> datetime:
        return self.store.now()

    def _append(self, event: AccessEvent, actor: str, now: datetime, reason: str | None = None,
                approved_by: str | None = None, **details: object) -> LedgerEntry:
        return self.store.ledger.append(event, actor, now, reason=reason, approved_by=approved_by, **details)

    def _find_call(self, call_id: str) -> CallRow | None:
        return self.store.index.get(call_id)

    def _ledger_entries(self) -> Iterable[LedgerEntry]:
        return self.store.ledger.entries()

    def _signing_fingerprint(self, copies: list[CopyRecord]) -> str | None:
        return signing_fingerprint(self.store.master)

    def _default_exports(self) -> Path:
        return self.store.data_dir / EXPORTS

    # ---- handing recordings out -----------------------------------------------------
    def _copies(self, grant: Grant, request: Request, holder: str, folder: Path, now: datetime) -> Fulfilment:
        made: list[CopyRecord] = []
        deadline = copy_deadline(self.access.copies, now.date())
        for call_id in request.call_ids:
            row = sealed_row(self.store, call_id)
            with self.tables.transaction():
                number = copy_number(now.year, self.tables.next_serial(f"copy-{now.year}"))
            path = folder / f"{number}.zip"
            manifest = self._manifest(number, row, request, holder, deadline)
            info = write_package(path, sealed_files(self.store, row), manifest, self.store.master)
            record = CopyRecord(number, request.number, call_id, str(row.sha256), str(path), holder, grant.actor,
                                now.isoformat(timespec="seconds"), deadline.isoformat() if deadline else None)
            self.tables.add_copy(record)
            self._ledger(LedgerNote(AccessEvent.COPY_MADE, grant, approved_by=request.decided_by, details={
                "copy": number, "request": request.number, "call_id": call_id, "sha256": row.sha256,
                "holder": holder, "deadline": record.deadline, "package": str(path),
                "signing_key": info.fingerprint}), now)
            made.append(record)
        return Fulfilment(request, copies=tuple(made))

    def _manifest(self, number: str, row: CallRow, request: Request, holder: str,
                  deadline: date | None) -> dict[str, object]:
        purpose = self.access.purpose(request.purpose)
        return {
            "copy_number": number, "organisation": self.access.forms, "request": request.number,
            "purpose": {"key": request.purpose, "label": purpose.label if purpose else request.purpose,
                        "clause": purpose.clause if purpose else ""},
            "approved_by": request.decided_by, "approved_at": request.decided_at, "holder": holder,
            "conditions": self.access.copies.conditions, "dispose_by": deadline.isoformat() if deadline else None,
            "keep_rule": {"keep": self.access.copies.keep, "clause": self.access.copies.clause},
            "call": call_fields(row),
            **({"evidence": call_evidence(self.store, row, self.timezone)}
               if purpose is not None and purpose.evidence else {}),
        }

    def _listening(self, grant: Grant, request: Request, folder: Path, now: datetime) -> Fulfilment:
        if self.access.on_device_listening == "never":
            raise Forbidden(f"recordings are not listened to on the device ({self.access.listening_clause})")
        files = []
        for call_id in request.call_ids:
            out = folder / f"{request.number}-{call_id}.wav"
            copy = hand_out(self.store, call_id, out, actor=grant.actor, reason=f"request {request.number}",
                            reason_required=False)
            files.extend(copy.files)
            self._ledger(LedgerNote(AccessEvent.LISTENED, grant, approved_by=request.decided_by, details={
                "request": request.number, "call_id": call_id, "sha256": copy.sha256}), now)
        return Fulfilment(request, files=tuple(files))

    def listen(self, by: Actor, number: str, call_id: str) -> Iterator[bytes]:
        """One call of an approved listening request, as the sealed WAV streamed to the browser
        (authenticated record by record as it is read, never written anywhere in the clear),
        ledgered; the first play fulfils the request."""
        grant, request = self._may_listen(by, number, call_id)
        now = self.store.now()
        row = sealed_row(self.store, call_id)
        audio = sealed_files(self.store, row)[0]
        self._ledger(LedgerNote(AccessEvent.LISTENED, grant, approved_by=request.decided_by, details={
            "request": number, "call_id": call_id, "sha256": row.sha256, "via": "console"}), now)
        if request.state is RequestState.APPROVED:
            moved, note = core.fulfilled(request, grant, now, holder=grant.actor)
            self.tables.save_request(moved)
            self._ledger(note, now)
        return audio.chunks
