"""The access layer's tables: accounts, requests, copies; in the index file beside the calls on
an appliance, or in the centre's PostgreSQL (storage/central_sql/0004_access.sql) for several sites.

One short statement or transaction per change, as the calls table is written, and the same SQL
on both (TEXT/INTEGER columns, parameters, ON CONFLICT upserts): only the parameter marks differ,
`?` for sqlite3 and `%s` for psycopg, swapped in one place.  On SQLite the tables are made here;
at the centre the numbered migrations make them.  Rows come back as the core's frozen dataclasses,
never as dicts.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

from policy.access import Wanted
from storage.index import connect, transaction

from .copies import CopyRecord
from .people import Account
from .requests import Request, RequestState

__all__ = ["AccessStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    deputy_of TEXT,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    absent INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    number TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    requester_role TEXT NOT NULL,
    department TEXT NOT NULL,
    purpose TEXT NOT NULL,
    wanted TEXT NOT NULL,
    call_ids TEXT NOT NULL,
    details TEXT NOT NULL,
    filed_at TEXT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_role TEXT,
    decided_at TEXT,
    decision_reason TEXT,
    instructed_to TEXT,
    instructed_by TEXT,
    instructed_at TEXT,
    fulfilled_by TEXT,
    fulfilled_at TEXT,
    closed_at TEXT
);
CREATE TABLE IF NOT EXISTS copies (
    number TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    call_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    package TEXT NOT NULL,
    holder TEXT NOT NULL,
    made_by TEXT NOT NULL,
    made_at TEXT NOT NULL,
    deadline TEXT,
    disposed_at TEXT,
    disposed_how TEXT,
    disposed_by TEXT,
    witness TEXT
);
CREATE INDEX IF NOT EXISTS copies_open ON copies(disposed_at, deadline);
CREATE TABLE IF NOT EXISTS access_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_ACCOUNT_COLUMNS = ("name", "role", "deputy_of", "disabled", "absent", "failed_logins", "locked_until", "created_at")
_REQUEST_COLUMNS = tuple(f.name for f in fields(Request))
_COPY_COLUMNS = tuple(f.name for f in fields(CopyRecord))


class AccessStore:
    """The three tables of one index file, or of the centre's database.

    `where` is the index file's path (SQLite, opened and closed here), or an open psycopg 3
    connection in autocommit mode (the centre's; its owner closes it)."""

    def __init__(self, where: Path | Any) -> None:
        self._sqlite = isinstance(where, Path)
        if self._sqlite:
            self._db = connect(where)
            self._db.executescript(SCHEMA)
        else:
            self._db = where

    def close(self) -> None:
        if self._sqlite:
            self._db.close()

    def transaction(self) -> AbstractContextManager[Any]:
        return transaction(self._db) if self._sqlite else self._db.transaction()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One statement; the only difference between the two databases is the parameter mark."""
        return self._db.execute(sql if self._sqlite else sql.replace("?", "%s"), params)

    def next_serial(self, name: str) -> int:
        """The next number of a yearly series (requests, copies): the counter survives the
        rows, so a number is never given twice even after erasure."""
        self._run("INSERT INTO access_counters (name, value) VALUES (?, 1) "
                         "ON CONFLICT (name) DO UPDATE SET value = access_counters.value + 1", (name,))
        return int(self._run("SELECT value FROM access_counters WHERE name = ?", (name,)).fetchone()[0])

    # ---- accounts -----------------------------------------------------------
    def account_count(self) -> int:
        return int(self._run("SELECT count(*) FROM accounts").fetchone()[0])

    def add_account(self, account: Account, password_hash: str) -> None:
        self._run(f"INSERT INTO accounts ({', '.join(_ACCOUNT_COLUMNS)}, password_hash) "
                         f"VALUES ({', '.join('?' for _ in _ACCOUNT_COLUMNS)}, ?)",
                         (*(int(v) if isinstance(v, bool) else v for v in astuple(account)), password_hash))

    def account(self, name: str) -> tuple[Account, str] | None:
        """The account and its password hash."""
        row = self._run(f"SELECT {', '.join(_ACCOUNT_COLUMNS)}, password_hash FROM accounts WHERE name = ?",
                               (name,)).fetchone()
        if row is None:
            return None
        values = dict(zip(_ACCOUNT_COLUMNS, tuple(row)[:-1]))
        values["disabled"], values["absent"] = bool(values["disabled"]), bool(values["absent"])
        return Account(**values), str(tuple(row)[-1])

    def accounts(self) -> list[Account]:
        names = [r[0] for r in self._run("SELECT name FROM accounts ORDER BY name")]
        return [found[0] for name in names if (found := self.account(name)) is not None]

    def update_account(self, name: str, **values: object) -> None:
        columns = list(values)
        encoded = [int(v) if isinstance(v, bool) else v for v in values.values()]
        self._run(f"UPDATE accounts SET {', '.join(f'{c} = ?' for c in columns)} WHERE name = ?",
                         (*encoded, name))

    # ---- requests -----------------------------------------------------------
    def save_request(self, request: Request) -> None:
        values = [json.dumps(list(v)) if name == "call_ids" else (str(v) if isinstance(v, (Wanted, RequestState))
                                                                   else v)
                  for name, v in zip(_REQUEST_COLUMNS, astuple(request))]
        updates = ", ".join(f"{c} = excluded.{c}" for c in _REQUEST_COLUMNS[1:])
        self._run(f"INSERT INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
                         f"VALUES ({', '.join('?' for _ in _REQUEST_COLUMNS)}) "
                         f"ON CONFLICT (number) DO UPDATE SET {updates}", values)

    def request(self, number: str) -> Request | None:
        row = self._run(f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM requests WHERE number = ?",
                               (number,)).fetchone()
        return None if row is None else _request(row)

    def requests(self) -> list[Request]:
        return [_request(r) for r in self._run(
            f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM requests ORDER BY filed_at, number")]

    # ---- copies -------------------------------------------------------------
    def add_copy(self, copy: CopyRecord) -> None:
        self._run(f"INSERT INTO copies ({', '.join(_COPY_COLUMNS)}) "
                         f"VALUES ({', '.join('?' for _ in _COPY_COLUMNS)})", astuple(copy))

    def copy(self, number: str) -> CopyRecord | None:
        row = self._run(f"SELECT {', '.join(_COPY_COLUMNS)} FROM copies WHERE number = ?",
                               (number,)).fetchone()
        return None if row is None else CopyRecord(*tuple(row))

    def copies(self) -> list[CopyRecord]:
        return [CopyRecord(*tuple(r)) for r in self._run(
            f"SELECT {', '.join(_COPY_COLUMNS)} FROM copies ORDER BY made_at, number")]

    def mark_disposed(self, number: str, *, at: str, how: str, by: str, witness: str | None) -> None:
        self._run("UPDATE copies SET disposed_at = ?, disposed_how = ?, disposed_by = ?, witness = ? "
                         "WHERE number = ?", (at, how, by, witness, number))


def _request(row: Sequence[Any]) -> Request:
    values = dict(zip(_REQUEST_COLUMNS, tuple(row)))
    values["call_ids"] = tuple(json.loads(values["call_ids"]))
    values["wanted"] = Wanted(values["wanted"])
    values["state"] = RequestState(values["state"])
    return Request(**values)
