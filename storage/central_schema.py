"""The centre's schema: numbered SQL files (storage/central_sql/NNNN_name.sql) applied in order.

Plain SQL rather than a migration framework: the schema is a handful of tables, each file is
read by a reviewer as the DDL it is, and PostgreSQL runs DDL inside a transaction, so each
migration and the row that records it commit together or not at all.  A migration already
applied is never applied again, and one whose file changed since is refused by name: a centre
whose schema is not what its version says must be looked at, not migrated further.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog

from .errors import StorageError

__all__ = ["CentralSchemaError", "Migration", "applied", "migrate", "migrations"]

log = structlog.get_logger("callrec.central")

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK = 0x63616C6C  # "call": one migrator at a time, whoever else runs `callrec central migrate`
VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class CentralSchemaError(StorageError):
    """The centre's schema cannot be brought up to date as it is; says why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """Every migration shipped with this version, in order; numbers run 1, 2, 3 without a gap."""
    found = []
    for item in resources.files("storage").joinpath("central_sql").iterdir():
        match = _NAME.fullmatch(item.name)
        if match:
            found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise CentralSchemaError("the shipped migrations are not numbered 1, 2, 3 ... without a gap")
    return found


def applied(conn: Any) -> dict[int, tuple[str, str]]:
    """{version: (name, sha256)} of what the centre has applied; empty for an empty database."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT version, name, sha256 FROM schema_version ORDER BY version")
        return {int(v): (str(n), str(s)) for v, n, s in cur.fetchall()}


def migrate(conn: Any, target: int | None = None) -> list[int]:
    """Apply the migrations after the centre's version up to `target` (default: the newest),
    each in a transaction of its own with its version row; returns the versions applied.
    `conn` is a psycopg connection; an advisory lock keeps two migrators from racing."""
    shipped = migrations()
    target = shipped[-1].version if target is None else target
    if not 0 <= target <= len(shipped):
        raise CentralSchemaError(f"no migration {target}: this version ships 1 to {len(shipped)}")
    done: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(VERSION_TABLE)
    for migration in shipped[:target]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            have = applied(conn)
            newer = [v for v in have if v > len(shipped)]
            if newer:
                raise CentralSchemaError(f"the centre is at version {max(newer)}, newer than this callrec "
                                         f"({len(shipped)}): upgrade callrec first")
            if migration.version in have:
                name, digest = have[migration.version]
                if digest != migration.sha256:
                    raise CentralSchemaError(f"migration {migration.version} ({name}) was applied from a file "
                                             "that differs from the one shipped: the schema is not what its "
                                             "version says")
                continue
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_version (version, name, sha256) VALUES (%s, %s, %s)",
                         (migration.version, migration.name, migration.sha256))
        log.info("central.migrated", version=migration.version, name=migration.name)
        done.append(migration.version)
    return done
