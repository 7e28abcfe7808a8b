"""The sync's I/O: the site's outbox and ledgers read, batches (storage/central_sync.py) written
to the centre's PostgreSQL with psycopg 3 (chosen over asyncpg by measurement: README, several
sites), and the centre's answers (status, erasures).

Each batch is one PostgreSQL transaction holding the site's row lock: rows upserted only when
their version is newer, changes and ledger lines inserted once, the chain heads and the site's
cursor moved.  The site forgets its outbox entries only after that commit, and reads on from the
cursor the centre holds, so a sender killed at any point sends again what was not committed and
nothing twice; two senders for one site queue on the row lock.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from . import outbox
from .central_schema import CentralSchemaError
from .central_sync import (
    CENTRAL_COLUMNS,
    JSON_COLUMNS,
    LEDGERS,
    MARK_COLUMNS,
    Batch,
    LedgerLine,
    OrderAnswer,
    PendingOrder,
    SyncRefused,
    build_batch,
    central_mark,
    ledger_lines,
)
from .index import connect as connect_index
from .ledger import Ledger

__all__ = ["SCRAM_ITERATIONS", "SITE_GRANTS", "Centre", "OrderAnswerer", "Sender", "SiteLogin", "connect",
           "scram_verifier", "site_login", "site_role"]

log = structlog.get_logger("callrec.central")

TIME_COLUMNS = frozenset({"started_at", "answered_at", "ended_at", "held_since", "erased_at", "announced_at",
                          "start_requested_at", "archived_at"})
OFFSET_SETTING = "outbox_ledger_offset_"
ACKED_SETTING = "outbox_acked"
"""The highest seq the centre has confirmed: a centre whose cursor is lower has lost what it had."""


def connect(dsn: str, timeout: float = 10.0, name: str = "callrec") -> psycopg.Connection[Any]:
    """A connection to the centre that fails within `timeout` rather than hanging on a cut link;
    autocommit, so that every write is inside an explicit transaction; `name` shows in the
    centre's pg_stat_activity."""
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout)), application_name=name,
                           options=f"-c statement_timeout={int(timeout * 6000)}")


def _upsert_sql() -> str:
    cols = ("site", "version", *CENTRAL_COLUMNS)
    values = ", ".join(f"%({c})s::timestamptz" if c in TIME_COLUMNS else f"%({c})s" for c in cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("site", "id"))
    return (f"INSERT INTO calls ({', '.join(cols)}, synced_at) VALUES ({values}, now()) "
            f"ON CONFLICT (site, id) DO UPDATE SET {updates}, synced_at = now() "
            "WHERE calls.version < excluded.version")


UPSERT = _upsert_sql()
MARK_TIMES = frozenset({"marked_at", "withdrawn_at", "released_at"})


def _mark_upsert_sql() -> str:
    cols = ("site", "version", *MARK_COLUMNS, "has_note")
    values = ", ".join("to_timestamp(%(hold_until)s)" if c == "hold_until" else
                       f"%({c})s::timestamptz" if c in MARK_TIMES else f"%({c})s" for c in cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("site", "id"))
    return (f"INSERT INTO marks ({', '.join(cols)}, synced_at) VALUES ({values}, now()) "
            f"ON CONFLICT (site, id) DO UPDATE SET {updates}, synced_at = now() "
            "WHERE marks.version <= excluded.version")


MARK_UPSERT = _mark_upsert_sql()
ANSWER = ("UPDATE hold_orders SET state = %s, outcome = %s, detail = %s, confirmation = %s, "
          "answered_at = %s::timestamptz, site_ledger_seq = %s WHERE site = %s AND order_id = %s AND state = 'pending'")
ORDER_COLUMNS = ("site", "order_id", "call_id", "hold", "reason", "ordered_by", "approved_by", "placed_at", "state",
                 "outcome", "detail", "confirmation", "answered_at", "site_ledger_seq", "token")

OrderAnswerer = Callable[[PendingOrder], OrderAnswer]
"""The site's side of a hold order (access/site_desk.py, passed in by callrec: storage does not
import access): verify it, apply it, ledger it, and return the signed answer."""


SITE_GRANTS: dict[str, tuple[str, ...]] = {
    "schema_version": ("SELECT",),
    "sites": ("SELECT", "INSERT", "UPDATE (last_seq, last_sync, backlog, oldest_pending)"),
    "calls": ("SELECT", "INSERT", "UPDATE"),
    "call_changes": ("SELECT", "INSERT"),
    "ledger_entries": ("SELECT", "INSERT"),
    "ledger_heads": ("SELECT", "INSERT", "UPDATE"),
    "marks": ("SELECT", "INSERT", "UPDATE"),
    "hold_orders": ("SELECT", "UPDATE (state, outcome, detail, confirmation, answered_at, site_ledger_seq)"),
}
"""What a site's login may do, table by table: what its sender writes, never DELETE or TRUNCATE;
which rows is the row-level security's business (central_sql/0004: its own site's only)."""


@dataclass(frozen=True, slots=True)
class SiteLogin:
    role: str
    password: str
    created: bool
    """False: the role existed and was given a new password."""


SCRAM_ITERATIONS = 4096
"""PostgreSQL's own default (scram_iterations): the password is 24 random bytes, so the count
guards nothing a longer one would."""


def site_role(site: str) -> str:
    return f"callrec_site_{site}"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802, RFC 7677), made
    here so that the password itself never travels in a CREATE ROLE statement, which the
    server's statement log or pg_stat_statements would keep."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    encode = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{encode(salt).decode()}"
            f"${encode(stored_key).decode()}:{encode(server_key).decode()}")


def site_login(conn: psycopg.Connection[Any], site: str, rotate: bool = False) -> SiteLogin:
    """The PostgreSQL role the site connects with: made (or, with `rotate`, given a new password),
    granted `SITE_GRANTS`, and named in `site_logins` so the policies hold it to its own rows.
    Run by the centre's owner (it needs CREATEROLE)."""
    if conn.execute("SELECT to_regclass('site_logins')").fetchone()[0] is None:
        raise CentralSchemaError("the centre's schema has no site logins yet: run `callrec central migrate`")
    role = site_role(site)
    password = secrets.token_urlsafe(24)
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        if exists and not rotate:
            raise SyncRefused(f"site {site!r} has a login ({role}) already: --rotate gives it a new password")
        verb = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if exists else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
        conn.execute(sql.SQL(verb).format(sql.Identifier(role), sql.Literal(scram_verifier(password))))
        for table, privileges in SITE_GRANTS.items():
            conn.execute(sql.SQL("GRANT " + ", ".join(privileges) + " ON {} TO {}").format(
                sql.Identifier(table), sql.Identifier(role)))
        conn.execute("INSERT INTO site_logins (role_name, site) VALUES (%s, %s) ON CONFLICT (role_name) DO NOTHING",
                     (role, site))
    log.info("central.site_login", site=site, role=role, created=not exists)
    return SiteLogin(role, password, not exists)


@dataclass(frozen=True, slots=True)
class Cursor:
    last_seq: int
    heads: dict[str, tuple[int, str]]


class Centre:
    """The centre's database as the sync and `callrec central` use it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def register(self, site: str, instance: str) -> Cursor:
        """The site's cursor; a new site is added.  A site name already used by another data
        folder is refused: its outbox numbers would be taken for ones the centre has seen."""
        with self.conn.transaction():
            self.conn.execute("INSERT INTO sites (site, instance) VALUES (%s, %s) ON CONFLICT (site) DO NOTHING",
                              (site, instance))
            return self._cursor(site, instance, lock=False)

    def _cursor(self, site: str, instance: str, lock: bool) -> Cursor:
        row = self.conn.execute("SELECT instance, last_seq FROM sites WHERE site = %s"
                                + (" FOR NO KEY UPDATE" if lock else ""), (site,)).fetchone()
        if row is None:
            raise SyncRefused(f"site {site!r} is not registered at the centre")
        if row[0] != instance:
            raise SyncRefused(f"site name {site!r} belongs to another data folder at the centre (instance "
                              f"{row[0]}, this folder {instance}): give each appliance a site name of its own")
        heads = {str(n): (int(s), str(m)) for n, s, m in self.conn.execute(
            "SELECT ledger, seq, mac FROM ledger_heads WHERE site = %s", (site,))}
        return Cursor(int(row[1]), heads)

    def apply(self, batch: Batch) -> int:
        """Write one batch in one transaction; returns the site's cursor after it.  What the
        centre already has is skipped, so the same batch twice changes nothing."""
        with self.conn.transaction():
            cursor = self._cursor(batch.site, batch.instance, lock=True)
            with self.conn.cursor() as cur:
                if batch.rows:
                    cur.executemany(UPSERT, [_params(batch.site, row) for row in batch.rows])
                fresh = [c for c in batch.changes if c.seq > cursor.last_seq]
                if fresh:
                    cur.executemany(
                        "INSERT INTO call_changes (site, seq, call_id, kind, queued_at) "
                        "VALUES (%s, %s, %s, %s, to_timestamp(%s)) ON CONFLICT DO NOTHING",
                        [(batch.site, c.seq, c.call_id, c.kind, c.queued_at) for c in fresh])
                for name in LEDGERS:
                    self._append_ledger(cur, batch.site, name, [e for e in batch.ledger if e.ledger == name],
                                        cursor.heads.get(name))
                if batch.marks:
                    cur.executemany(MARK_UPSERT, [{"site": batch.site, **m} for m in batch.marks])
                if batch.answers:
                    cur.executemany(ANSWER, [(a.state, a.outcome, a.detail, a.confirmation, a.at, a.ledger_seq,
                                              batch.site, a.order_id) for a in batch.answers])
            last = max(cursor.last_seq, batch.last_seq)
            oldest = None if batch.oldest_pending is None else datetime.fromtimestamp(batch.oldest_pending, UTC)
            self.conn.execute("UPDATE sites SET last_seq = %s, last_sync = now(), backlog = %s, oldest_pending = %s "
                              "WHERE site = %s", (last, batch.backlog, oldest, batch.site))
        return last

    @staticmethod
    def _append_ledger(cur: psycopg.Cursor[Any], site: str, name: str, lines: Sequence[LedgerLine],
                       head: tuple[int, str] | None) -> None:
        """The lines that continue the centre's copy of that chain (checked again under the lock:
        another sender may have moved the head since the batch was built)."""
        if not lines:
            return
        fresh = ledger_lines(name, [(line.line.encode(), line.end) for line in lines], head)
        if not fresh:
            return
        cur.executemany(
            "INSERT INTO ledger_entries (site, ledger, seq, at, event, actor, reason, approved_by, details, prev, "
            "mac, entry) VALUES (%s, %s, %s, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(site, name, e.entry["seq"], e.entry["at"], e.entry["event"], e.entry["actor"], e.entry["reason"],
              e.entry["approved_by"], Jsonb(e.entry["details"]), e.entry["prev"], e.entry["mac"], e.line)
             for e in fresh])
        last = fresh[-1].entry
        cur.execute("INSERT INTO ledger_heads (site, ledger, seq, mac) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (site, ledger) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, "
                    "anchored_at = now()", (site, name, last["seq"], last["mac"]))

    def sites(self) -> list[dict[str, Any]]:
        """Each site's last sync, backlog (as the site last reported it), rows and ledger heads."""
        rows = self.conn.execute(
            "SELECT s.site, s.last_sync, s.last_seq, s.backlog, s.oldest_pending, "
            "(SELECT COUNT(*) FROM calls c WHERE c.site = s.site), "
            "(SELECT COUNT(*) FROM calls c WHERE c.site = s.site AND c.erased_at IS NOT NULL) "
            "FROM sites s ORDER BY s.site").fetchall()
        heads: dict[str, dict[str, int]] = {}
        for site, name, seq in self.conn.execute("SELECT site, ledger, seq FROM ledger_heads"):
            heads.setdefault(site, {})[name] = int(seq)
        return [{"site": r[0], "last_sync": r[1].isoformat() if r[1] else None, "last_seq": int(r[2]),
                 "backlog": int(r[3]), "oldest_pending": r[4].isoformat() if r[4] else None, "calls": int(r[5]),
                 "erased": int(r[6]), "ledger_heads": heads.get(r[0], {})} for r in rows]

    def erasure(self, site: str, call_id: str) -> dict[str, Any] | None:
        """"Erased on DATE under RULE" for one call of any site: the tombstone's time and reason and
        the policy in force then (its hash, from the site's ledger); None when not erased."""
        row = self.conn.execute("SELECT erased_at, erased_reason, policy_sha256, seal_mac FROM erasures "
                                "WHERE site = %s AND id = %s", (site, call_id)).fetchone()
        if row is None:
            return None
        return {"site": site, "id": call_id, "erased_at": row[0].isoformat(), "rule": row[1],
                "policy_sha256": row[2], "seal": row[3]}


    def place_order(self, site: str, fields: dict[str, Any], token: str) -> None:
        """A signed hold order (`fields` as signed, `token` the order itself) for a call the centre
        knows at that site; pending until the site's sender carries its answer back."""
        with self.conn.transaction():
            known = self.conn.execute("SELECT 1 FROM calls WHERE site = %s AND id = %s",
                                      (site, fields["call_id"])).fetchone()
            if known is None:
                raise SyncRefused(f"the centre has no call {fields['call_id']} of site {site!r}: "
                                  "an order goes only to a call the site has sent")
            self.conn.execute(
                "INSERT INTO hold_orders (site, order_id, call_id, hold, reason, ordered_by, approved_by, token) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (site, fields["order_id"], fields["call_id"], bool(fields["hold"]), fields["reason"],
                 fields["ordered_by"], fields.get("approved_by"), token))

    def pending_orders(self, site: str) -> list[PendingOrder]:
        """The site's orders still pending, oldest first."""
        return [PendingOrder(str(o), str(c), str(t)) for o, c, t in self.conn.execute(
            "SELECT order_id, call_id, token FROM hold_orders WHERE site = %s AND state = 'pending' "
            "ORDER BY placed_at, order_id", (site,))]

    def orders(self, site: str | None = None) -> list[dict[str, Any]]:
        """Every hold order (of one site), newest first, with its state and the site's answer."""
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM hold_orders WHERE %(site)s::text IS NULL "
                        "OR site = %(site)s ORDER BY placed_at DESC, order_id", {"site": site})
            return [dict(zip(ORDER_COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def marks(self, site: str | None = None) -> list[dict[str, Any]]:
        """The sites' harassment marks as the centre holds them, oldest first."""
        cols = ("site", *MARK_COLUMNS, "has_note")
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM marks WHERE %(site)s::text IS NULL OR site = %(site)s "
                        "ORDER BY marked_at, site, id", {"site": site})
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _params(site: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"site": site, **{k: Jsonb(v) if k in JSON_COLUMNS else v for k, v in row.items()}}


class Sender:
    """Sends one site's outbox and ledgers to the centre, a batch at a time (`step`), from a
    connection of its own to the index file (a thread of the daemon, or `callrec central sync`)."""

    def __init__(self, index_path: Path, ledgers: dict[str, Ledger], dsn: str, site: str,
                 batch_rows: int = 500, timeout: float = 10.0, orders: OrderAnswerer | None = None) -> None:
        self._db = connect_index(index_path)
        self._orders = orders
        self._ledgers = ledgers
        self._dsn = dsn
        self._timeout = timeout
        self.centre: Centre | None = None
        self.site = site
        self.batch_rows = batch_rows
        self.instance, queued = outbox.enable(self._db, datetime.now(UTC).timestamp())
        if queued:
            log.info("central.outbox_enabled", site=site, rows=queued)
        self._cursor: Cursor | None = None

    def close(self) -> None:
        self.disconnect()
        self._db.close()

    def disconnect(self) -> None:
        """After a failure: drop the connection and ask the centre again where it stands (the
        batch in flight may have committed)."""
        if self.centre is not None:
            try:
                self.centre.close()
            except psycopg.Error:
                pass
        self.centre = None
        self._cursor = None

    def pending(self) -> tuple[int, float | None]:
        return outbox.stats(self._db)

    def step(self) -> Batch:
        """Send the next batch (outbox entries after the centre's cursor, ledger lines after its
        heads); returns it (empty when there was nothing to send)."""
        if self.centre is None:
            self.centre = Centre(connect(self._dsn, self._timeout, f"callrec sync {self.site}"))
        if self._cursor is None:
            self._cursor = self.centre.register(self.site, self.instance)
            self._check_behind(self._cursor.last_seq)
            outbox.remove_through(self._db, self._cursor.last_seq)
        answers = self._answer_orders(self.centre)
        batch = replace(self._read(self._cursor), answers=answers)
        if batch.empty:
            return batch
        last = self.centre.apply(batch)
        heads = dict(self._cursor.heads)
        ends = {line.ledger: line for line in batch.ledger}
        for name, line in ends.items():
            heads[name] = (int(line.entry["seq"]), str(line.entry["mac"]))
            self._set_offset(name, int(line.entry["seq"]), line.end)
        self._cursor = Cursor(last, heads)
        self._set_setting(ACKED_SETTING, str(last))
        outbox.remove_through(self._db, last)
        return batch

    def _answer_orders(self, centre: Centre) -> list[OrderAnswer]:
        """Apply the hold orders the centre shows pending for this site (each answered once at the
        site, so an order seen again after a failed batch gets the same answer again)."""
        if self._orders is None:
            return []
        answers = []
        for order in centre.pending_orders(self.site):
            answer = self._orders(order)
            log.info("central.hold_order_answered", site=self.site, order=order.order_id, call_id=order.call_id,
                     outcome=answer.outcome)
            answers.append(answer)
        return answers

    def _check_behind(self, centre_seq: int) -> None:
        """A centre that has less than it confirmed (restored from an older backup, or a new
        database under the same site name) gets every row again; the ledgers resume from the
        centre's heads by themselves."""
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (ACKED_SETTING,)).fetchone()
        acked = int(row[0]) if row is not None else 0
        if centre_seq < acked:
            queued = outbox.requeue(self._db, datetime.now(UTC).timestamp())
            log.error("central.centre_behind", site=self.site, centre_seq=centre_seq, site_acked=acked, rows=queued)
            self._set_setting(ACKED_SETTING, str(centre_seq))

    def _read(self, cursor: Cursor) -> Batch:
        self._db.execute("BEGIN")
        try:
            entries = outbox.read(self._db, cursor.last_seq, self.batch_rows)
            ids = sorted({e.call_id for e in entries})
            rows: dict[str, sqlite3.Row] = {}
            versions: dict[str, int] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows.update((r["id"], r) for r in self._db.execute(f"SELECT * FROM calls WHERE id IN ({marks})", chunk))
                versions.update((r[0], int(r[1])) for r in self._db.execute(
                    f"SELECT call_id, MAX(seq) FROM outbox WHERE call_id IN ({marks}) GROUP BY call_id", chunk))
            marks = self._marks(ids, versions)
            last = entries[-1].seq if entries else cursor.last_seq
            left = self._db.execute("SELECT COUNT(*), MIN(queued_at) FROM outbox WHERE seq > ?", (last,)).fetchone()
        finally:
            self._db.execute("COMMIT")
        lines: list[LedgerLine] = []
        for name in LEDGERS:
            lines.extend(self._ledger_lines(name, cursor.heads.get(name)))
        batch = build_batch(self.site, self.instance, cursor.last_seq, entries, rows, versions, lines,
                            int(left[0]), None if left[1] is None else float(left[1]))
        sent = {row["id"] for row in batch.rows}
        return replace(batch, marks=[m for m in marks if m["call_id"] in sent])

    def _marks(self, ids: list[str], versions: dict[str, int]) -> list[dict[str, Any]]:
        """The marks of these calls as they stand, at their call's version (a mark's every change
        queues its call: storage/marks.py)."""
        if not ids or self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                                       "AND name = 'marks'").fetchone()[0] == 0:
            return []
        found = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.extend(central_mark(r, versions[r["call_id"]]) for r in self._db.execute(
                f"SELECT * FROM marks WHERE call_id IN ({', '.join('?' for _ in chunk)}) ORDER BY id", chunk))
        return found

    def _ledger_lines(self, name: str, head: tuple[int, str] | None) -> list[LedgerLine]:
        """The ledger's lines after the centre's head, read on from the offset noted after the last
        batch when that matches the head (else from the start, once)."""
        seq, offset = self._offset(name)
        if seq != (head[0] if head is not None else 0):
            offset = 0
        while True:
            lines = self._ledgers[name].lines_from(offset, self.batch_rows)
            found = ledger_lines(name, lines, head)
            if found or len(lines) < self.batch_rows:
                return found
            offset = lines[-1][1]  # the centre has all of these: read on

    def _offset(self, name: str) -> tuple[int, int]:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (OFFSET_SETTING + name,)).fetchone()
        if row is None:
            return 0, 0
        seq, _, offset = str(row[0]).partition(":")
        return int(seq), int(offset)

    def _set_offset(self, name: str, seq: int, offset: int) -> None:
        self._set_setting(OFFSET_SETTING + name, f"{seq}:{offset}")

    def _set_setting(self, name: str, value: str) -> None:
        self._db.execute("INSERT INTO settings (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
