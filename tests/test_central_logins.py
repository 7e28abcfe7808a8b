"""Each site's own login to the centre (issue 19): `callrec central site-login NAME` makes a
PostgreSQL role that signs in with its password and may write only its own site's rows, so a
site's stolen credentials cannot touch another site's calls or ledgers; the centre's owner and a
console role read everything.

A real PostgreSQL whose socket asks every role but the owner for its SCRAM password."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from storage.central_link import ANSWER, Centre, Sender, connect
from storage.index import CallIndex
from storage.layout import INDEX_FILE
from storage.ledger import Event
from storage.store import Store
from tests.central_pg import PostgresServer, _tool, postgres
from tests.central_sites import centre_rows, make_rows
from tests.interop import run_cli

__all__ = ["postgres"]

TOKYO = ZoneInfo("Asia/Tokyo")
DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def centre(postgres: PostgresServer) -> str:
    (postgres.data / "pg_hba.conf").write_text("local all callrec trust\nlocal all all scram-sha-256\n")
    postgres._run([_tool("pg_ctl"), "-D", str(postgres.data), "reload"])  # the new rules
    dsn = postgres.create_database("centre")
    run_cli("central", "init", "--dsn", dsn)
    return dsn


def login(owner: str, site: str, *extra: str) -> str:
    """`callrec central site-login SITE`: the site's DSN with the password it printed."""
    out = run_cli("central", "site-login", site, "--dsn", owner, *extra).stdout
    dsn = re.search(r"config central\.dsn: (.*)", out)[1]  # type: ignore[index]
    password = re.search(r"~/\.pgpass line .*: (\S+)$", out, re.MULTILINE)[1].rsplit(":", 1)[1]  # type: ignore[index]
    return f"{dsn} password={password}"


def _sync(data: Path, dsn: str, site: str) -> None:
    with Store.open(data, TOKYO, create_key=True) as store:
        store.ledger.append(Event.HOLD_ADDED, "test", store.now(), reason="a ledger line to send", call_id="x")
        sender = Sender(store.index.path, {"ledger": store.ledger, "seals": store.seals}, dsn, site)
        try:
            while not sender.step().empty:
                pass
        finally:
            sender.close()


def _rowcount(dsn: str, statement: str, params: Any = ()) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).rowcount


def _denied(dsn: str, statement: str, params: Any = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(DENIED):
        conn.execute(statement, params)


def test_a_sites_login_writes_its_own_rows_only_and_the_owner_and_console_read_all(
        centre: str, tmp_path: Path) -> None:
    east, west = login(centre, "east"), login(centre, "west")
    for site, dsn in (("east", east), ("west", west)):
        (tmp_path / site).mkdir()
        CallIndex(tmp_path / site / INDEX_FILE).close()
        make_rows(tmp_path / site, 20, prefix=site)
        _sync(tmp_path / site, dsn, site)  # each sender through its own login: the grants suffice
    with connect(centre) as conn:
        centre_db = Centre(conn)
        for site in ("east", "west"):
            centre_db.place_order(site, {"order_id": f"{site:0>32}"[-32:], "call_id": f"{site}-0000001", "hold": True,
                                         "reason": "r", "ordered_by": "o"}, "token")
    before = centre_rows(centre, "west")
    assert len(before) == 20 and len(centre_rows(centre, "east")) == 20

    with psycopg.connect(east, autocommit=True) as conn:  # east sees only east
        for table in ("sites", "calls", "call_changes", "ledger_entries", "ledger_heads", "hold_orders"):
            assert {r[0] for r in conn.execute(f"SELECT DISTINCT site FROM {table}")} == {"east"}, table
    row = dict(before["west-0000001"])
    _denied(east, "INSERT INTO calls (site, id, version, sip_call_id, started_at, direction, caller_withheld, codecs, "
                  "streams, dtmf, undecoded, late_samples, complete, state, size_bytes, held, leg_call_ids, gaps) "
                  "VALUES ('west', 'forged', 1, 'f@x', now(), 'inbound', false, '[]', '[]', '[]', '[]', 0, true, "
                  "'sealed', 0, false, '[]', '[]')")
    assert _rowcount(east, "UPDATE calls SET held = true, version = version + 1000 WHERE site = 'west'") == 0
    _denied(east, "UPDATE calls SET site = 'west' WHERE site = 'east'")
    _denied(east, "DELETE FROM calls WHERE site = 'west'")
    _denied(east, "DELETE FROM calls WHERE site = 'east'")  # nobody's sender deletes
    _denied(east, "INSERT INTO ledger_entries (site, ledger, seq, at, event, actor, details, prev, mac, entry) "
                  "VALUES ('west', 'ledger', 999, now(), 'x', 'x', '{}', 'x', 'x', 'x')")
    assert _rowcount(east, "UPDATE ledger_heads SET seq = 0 WHERE site = 'west'") == 0
    _denied(east, "UPDATE ledger_entries SET event = 'edited' WHERE site = 'east'")
    _denied(east, "DELETE FROM ledger_entries WHERE site = 'west'")
    _denied(east, "TRUNCATE ledger_entries")
    assert _rowcount(east, "UPDATE sites SET last_seq = 0 WHERE site = 'west'") == 0
    _denied(east, "INSERT INTO sites (site, instance) VALUES ('south', 'i')")
    _denied(east, "INSERT INTO hold_orders (site, order_id, call_id, hold, reason, ordered_by, token) "
                  "VALUES ('east', 'o', 'c', true, 'r', 'o', 't')")  # orders come from the centre only
    _denied(east, "UPDATE hold_orders SET reason = 'edited' WHERE site = 'east'")
    answer = ("refused", "refused", "d", "c", "2026-12-07T10:00:00+09:00", 1)
    assert _rowcount(east, ANSWER, (*answer, "west", f"{'west':0>32}")) == 0
    assert _rowcount(east, ANSWER, (*answer, "east", f"{'east':0>32}")) == 1
    _denied(east, "SELECT * FROM erasures")
    _denied(east, "UPDATE site_logins SET site = 'west'")
    for name in ("west", "south"):  # east's sender cannot pose as another site, known or new
        with connect(east) as conn, pytest.raises(DENIED):
            Centre(conn).register(name, "another folder")

    after = centre_rows(centre, "west")  # the owner reads all, west's rows as west sent them
    assert after == before and row["held"] is False
    with psycopg.connect(centre, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger_entries WHERE site = 'west'").fetchone()[0] >= 1
        conn.execute("CREATE ROLE console LOGIN PASSWORD 'console-pw'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO console")
    console = centre.replace("user=callrec", "user=console") + " password=console-pw"
    with psycopg.connect(console) as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT site FROM calls")} == {"east", "west"}
        assert conn.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()[0] >= 2
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM calls WHERE remote_number = '0'"))
    assert "InitPlan" in plan and "callrec_login_site" not in plan.split("Filter:", 1)[-1], plan  # once, not per row


def test_a_login_needs_its_password_and_a_new_one_replaces_the_old(centre: str) -> None:
    east = login(centre, "east")
    with psycopg.connect(east) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "callrec_site_east"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(east.rsplit(" password=", 1)[0] + " password=wrong").close()
    again = run_cli("central", "site-login", "east", "--dsn", centre, check=False)
    assert again.returncode != 0 and "--rotate" in again.stderr
    rotated = login(centre, "east", "--rotate")
    assert rotated != east
    psycopg.connect(rotated).close()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(east).close()
    with psycopg.connect(centre) as conn:  # the owner sees what the server keeps: a verifier, never the password
        [(stored,)] = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'callrec_site_east'").fetchall()
    password = rotated.rsplit(" password=", 1)[1]
    assert stored.startswith("SCRAM-SHA-256$4096:") and password not in stored
