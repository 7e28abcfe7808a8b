"""Sites for the central tests and bench: config files that name a centre, rows made in bulk
through the index as the recorder makes them (a new row, then sealed), and the rows and
changes as the centre and the site each hold them."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from storage.index import CallIndex
from storage.layout import INDEX_FILE
from storage.outbox import enable

__all__ = ["centre_changes", "centre_rows", "local_rows", "make_rows", "site_config"]


def site_config(folder: Path, site: str, dsn: str, **central: Any) -> Path:
    """A config file for one appliance: its own data folder, the centre, and the site's name."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"dsn": dsn, "site": site, "interval_seconds": 0.2, "timeout_seconds": 5, **central}
    path = folder / f"{site}.yaml"
    path.write_text(json.dumps({"data_dir": str(folder / site), "central": settings}), encoding="utf-8")
    return path


def make_rows(data_dir: Path, count: int, prefix: str = "bulk", start: float = 1_780_000_000.0) -> None:
    """`count` calls as the recorder writes them (a row, then its end sealed), 1.8 s apart, with
    the outbox on: two changes each."""
    db = sqlite3.connect(data_dir / INDEX_FILE)
    enable(db, start)
    db.close()
    index = CallIndex(data_dir / INDEX_FILE)
    try:
        for n in range(count):
            call_id = f"{prefix}-{n:07d}"
            at = start + 1.8 * n
            index.insert(id=call_id, sip_call_id=f"{call_id}@192.0.2.10", started_at=_iso(at), direction="inbound",
                         remote_number=f"03{n:08d}", local_number="0263000000", recorded_at=at)
            index.update(call_id, ended_at=_iso(at + 60), duration=60.0, state="sealed", complete=True,
                         codecs=["PCMU"], size_bytes=960_000)
    finally:
        index.close()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone(timedelta(hours=9))).isoformat(timespec="milliseconds")


def local_rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The site's rows by id, as the index holds them."""
    db = sqlite3.connect(data_dir / INDEX_FILE)
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM calls")}
    finally:
        db.close()


def centre_rows(dsn: str, site: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM calls WHERE site = %s", (site,))
        return {r["id"]: r for r in cur.fetchall()}


def centre_changes(dsn: str, site: str) -> list[tuple[int, str, str]]:
    """(seq, call id, kind) of every change the centre holds for the site, in order."""
    with psycopg.connect(dsn) as conn:
        return [(int(s), str(c), str(k)) for s, c, k in conn.execute(
            "SELECT seq, call_id, kind FROM call_changes WHERE site = %s ORDER BY seq", (site,))]
