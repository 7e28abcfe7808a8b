"""Several sites, one centre, on a real PostgreSQL the test starts: migrations from empty and
from the previous version; the same batch twice; appliances replaying different public captures
as separate processes, each with its own sender, holds and erasures on the way; a sender killed
with -9 mid-batch and restarted; the centre stopped while calls are recorded, then restarted.
Each time every row and every change arrives exactly once, and the local ledgers verify."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import structlog
from structlog.testing import capture_logs

from callrec.central import CentralSync
from callrec.cli import main
from callrec.cmd_central import central_line
from callrec.config import Central, Config
from callrec.daemon import Daemon
from storage.central_link import Centre, connect
from storage.central_schema import CentralSchemaError, applied, migrate, migrations
from storage.central_sync import SyncRefused, build_batch
from storage.layout import INDEX_FILE
from storage.outbox import INSTANCE_SETTING, OutboxEntry
from storage.store import Store
from tests.central_pg import PostgresServer, postgres
from tests.central_sites import centre_changes, centre_rows, local_rows, make_rows, site_config
from tests.interop import REPO, calls, capture, run_cli
from tests.on_demand_frames import call
from tests.test_central_core import _row
from tests.test_on_demand_live import FeedSource, play

__all__ = ["postgres"]

KUMAMOTO = REPO / "policies" / "kumamoto.yaml"
SITES = {"site-a": "sip-rtp-g711.pcap", "site-b": "SIP_DTMF2.pcap", "site-c": "b2bua-asterisk.pcapng"}


@pytest.fixture
def centre(postgres: PostgresServer) -> Iterator[str]:
    dsn = postgres.create_database("centre")
    run_cli("central", "init", "--dsn", dsn)
    yield dsn


def _schema(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' UNION ALL SELECT tablename, indexname, indexdef, '' FROM pg_indexes "
            "WHERE schemaname = 'public' UNION ALL SELECT viewname, definition, '', '' FROM pg_views "
            "WHERE schemaname = 'public' ORDER BY 1, 2").fetchall()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`callrec ARGS` in this process (the commands that only talk to the centre): exit status, output.
    The log configuration the command sets (onto this test's captured stream) is put back after."""
    saved = structlog.get_config()
    try:
        code = main([str(a) for a in args])
    finally:
        structlog.configure(**saved)
    return code, capsys.readouterr().out


def test_migrations_from_empty_and_from_the_previous_version(postgres: PostgresServer,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    fresh, upgraded = postgres.create_database("fresh"), postgres.create_database("upgraded")
    assert cli(capsys, "central", "migrate", "--dsn", upgraded, "--to", "1")[0] == 0
    assert cli(capsys, "central", "status", "--dsn", upgraded)[0] == 1  # behind this callrec
    with connect(upgraded) as conn:  # a row as version 1 held it, written in that version's columns
        Centre(conn).register("east", "i1")
        conn.execute("INSERT INTO calls (site, id, version, sip_call_id, started_at, direction, caller_withheld, "
                     "codecs, streams, dtmf, undecoded, late_samples, complete, state, size_bytes, held, "
                     "leg_call_ids, gaps) VALUES ('east', 'a', 1, 'a@x', now(), 'inbound', false, '[]', '[]', "
                     "'[]', '[]', 0, true, 'sealed', 0, false, '[]', '[]')")
    assert f"schema version 1 -> {len(migrations())}" in cli(capsys, "central", "migrate", "--dsn", upgraded)[1]
    with connect(upgraded) as conn:  # the row's next change, with the columns added since
        Centre(conn).apply(build_batch("east", "i1", 0, [OutboxEntry(2, "a", "evidence_held", 1.0)],
                                       {"a": {**_row("a"), "evidence_until": 1.9e9}}, {"a": 2}, [], 0, None))
        assert conn.execute("SELECT evidence_until FROM calls WHERE id = 'a'").fetchone()[0] == 1.9e9
    assert cli(capsys, "central", "init", "--dsn", fresh)[0] == 0
    assert cli(capsys, "central", "init", "--dsn", fresh)[0] == 2
    assert cli(capsys, "central", "migrate", "--dsn", fresh) == (0, f"schema version {len(migrations())}: up to date\n")
    assert cli(capsys, "central", "status", "--dsn", fresh)[0] == 0
    assert _schema(fresh) == _schema(upgraded)
    assert set(centre_rows(upgraded, "east")) == {"a"}
    with connect(upgraded) as conn:
        assert sorted(applied(conn)) == list(range(1, len(migrations()) + 1)) and migrate(conn) == []
        conn.execute("UPDATE schema_version SET sha256 = 'edited' WHERE version = 1")
        with pytest.raises(CentralSchemaError, match="differs from the one shipped"):
            migrate(conn)


def test_the_same_batch_twice_changes_nothing_and_an_older_copy_never_wins(centre: str) -> None:
    with connect(centre) as conn:
        c = Centre(conn)
        c.register("east", "i1")
        newer = build_batch("east", "i1", 0, [OutboxEntry(1, "a", "new", 1.0), OutboxEntry(2, "a", "sealed", 2.0)],
                            {"a": _row("a")}, {"a": 2}, [], 0, None)
        assert c.apply(newer) == 2 and c.apply(newer) == 2
        older = build_batch("east", "i1", 0, [OutboxEntry(1, "a", "new", 1.0)], {"a": _row("a", "recording")},
                            {"a": 1}, [], 0, None)
        assert c.apply(older) == 2
        with pytest.raises(SyncRefused, match="another data folder"):
            c.register("east", "i2")
    assert centre_rows(centre, "east")["a"]["state"] == "sealed"
    assert centre_changes(centre, "east") == [(1, "a", "new"), (2, "a", "sealed")]


def _sender(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "callrec", "central", "sync", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def _data(config: Path) -> Path:
    return Path(json.loads(config.read_text())["data_dir"])


def _in_sync(dsn: str, config: Path) -> bool:
    site = json.loads(config.read_text())["central"]["site"]
    local, remote = local_rows(_data(config)), centre_rows(dsn, site)
    return set(local) == set(remote) and all(remote[i]["state"] == r["state"] and remote[i]["held"] == bool(r["held"])
                                             and remote[i]["seal_mac"] == r["seal_mac"] for i, r in local.items())


def assert_exactly_once(dsn: str, config: Path) -> None:
    """The centre holds every row of the site once, as the site holds it now, and every change
    the site queued once, in order (seq 1, 2, 3 ... without a gap or a repeat); the site's
    ledgers verify and the centre's heads are the site's."""
    site = json.loads(config.read_text())["central"]["site"]
    data = _data(config)
    local, remote = local_rows(data), centre_rows(dsn, site)
    assert set(remote) == set(local) and local
    for call_id, row in local.items():
        assert remote[call_id]["state"] == row["state"] and remote[call_id]["seal_mac"] == row["seal_mac"]
        assert remote[call_id]["remote_number"] == row["remote_number"]
    changes = centre_changes(dsn, site)
    assert [seq for seq, _, _ in changes] == list(range(1, len(changes) + 1))
    assert {call_id for _, call_id, _ in changes} == set(local)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT backlog FROM sites WHERE site = %s", (site,)).fetchone()[0] == 0
        heads = dict(conn.execute("SELECT ledger, seq FROM ledger_heads WHERE site = %s", (site,)).fetchall())
    for name, file in (("ledger", "ledger.head"), ("seals", "seals.head")):
        if (data / file).exists():
            assert heads[name] == json.loads((data / file).read_text())["seq"]
    assert run_cli("ledger", "verify", "--data-dir", data).returncode == 0


def test_three_sites_replaying_at_once_reach_one_centre_exactly_once(centre: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    configs = {site: site_config(tmp_path, site, centre) for site in SITES}
    for config in configs.values():  # each appliance's data folder and key, as at installation
        run_cli("replay", capture("ipv6frag.pcap"), "--config", config)
    senders = [_sender(config) for config in configs.values()]
    try:
        replays = [subprocess.Popen([sys.executable, "-m", "callrec", "replay", str(capture(name)), "--config",
                                     str(configs[site])], cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for site, name in SITES.items()]
        for replay in replays:
            assert replay.wait(300) == 0, replay.stderr.read() if replay.stderr else ""
        a = configs["site-a"]
        first = calls(_data(a))[0]
        run_cli("hold", "add", first["id"], "--reason", "情報公開請求 第12号", "--config", a)
        run_cli("retention", "run", "--now", "2018-01-01T00:00:00+09:00", "--policy", KUMAMOTO, "--config", a)
        for config in configs.values():
            _wait(lambda config=config: _in_sync(centre, config), 300, f"{config.stem} never reached the centre")
    finally:
        for sender in senders:
            _stop(sender)
    for config in configs.values():
        assert_exactly_once(centre, config)
    remote = centre_rows(centre, "site-a")
    assert remote[first["id"]]["held"] and remote[first["id"]]["hold_reason"] == "情報公開請求 第12号"
    erased = {i: row for i, row in local_rows(_data(a)).items() if row["erased_at"]}
    assert erased
    for call_id, row in erased.items():
        assert remote[call_id]["erased_reason"] == "retention" and remote[call_id]["remote_number"] is None
        code, said = cli(capsys, "central", "erasure", "site-a", call_id, "--dsn", centre)
        assert code == 0 and said.startswith(f"site-a {call_id}: erased on ") and "under retention" in said
        answer = json.loads(cli(capsys, "central", "erasure", "site-a", call_id, "--json", "--dsn", centre)[1])
        assert datetime.fromisoformat(answer["erased_at"]) == datetime.fromisoformat(row["erased_at"])
    assert ("held" in {k for _, c, k in centre_changes(centre, "site-a") if c == first["id"]})
    status = json.loads(cli(capsys, "central", "status", "--json", "--dsn", centre)[1])
    assert [s["site"] for s in status["sites"]] == sorted(SITES) and all(s["backlog"] == 0 for s in status["sites"])


def _blocked_sender(dsn: str) -> int | None:
    """The pid of the sender's backend while it waits on a row lock inside its transaction."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'callrec sync site-k' "
                           "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL").fetchone()
    return None if row is None else int(row[0])


def test_a_sender_killed_mid_batch_resends_nothing_twice_and_loses_nothing(centre: str, tmp_path: Path) -> None:
    """First a kill inside a batch for certain: the test holds an uncommitted insert of a row in
    the middle of the backlog, so the sender's batch waits on it with half its rows written; the
    sender is killed with -9 there.  Then kills at random moments, and a last run to the end."""
    config = site_config(tmp_path, "site-k", centre, batch_rows=40)
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--config", config)
    make_rows(_data(config), 3000)
    total = len(local_rows(_data(config)))
    with sqlite3.connect(_data(config) / INDEX_FILE) as db:
        [(instance,)] = db.execute("SELECT value FROM settings WHERE name = ?", (INSTANCE_SETTING,)).fetchall()
    with connect(centre) as conn:
        Centre(conn).register("site-k", instance)
    blocker = psycopg.connect(centre)
    blocker.execute(
        "INSERT INTO calls (site, id, version, sip_call_id, started_at, direction, caller_withheld, codecs, streams, "
        "dtmf, undecoded, late_samples, complete, state, size_bytes, held, leg_call_ids, gaps) VALUES ('site-k', "
        "'bulk-0000300', 0, 'x', now(), 'inbound', false, '[]', '[]', '[]', '[]', 0, false, 'x', 0, false, '[]', "
        "'[]')")
    sender = _sender(config)
    try:
        _wait(lambda: _blocked_sender(centre), 600, "the sender never reached the held row")
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    finally:
        blocker.rollback()
        blocker.close()
    partial, changes = centre_rows(centre, "site-k"), centre_changes(centre, "site-k")
    assert "bulk-0000300" not in partial and 0 < len(partial) < total
    assert set(partial) == {call_id for _, call_id, _ in changes}, "a batch was half committed"
    with psycopg.connect(centre) as conn:
        assert conn.execute("SELECT last_seq FROM sites WHERE site = 'site-k'").fetchone()[0] == len(changes)
    kills = 1
    for _ in range(3):
        sender = _sender(config)
        before = len(centre_rows(centre, "site-k"))
        enough = min(before + 40, total)  # a sender that caught up in an earlier round has only the rest to send
        _wait(lambda enough=enough: len(centre_rows(centre, "site-k")) >= enough, 600, "the sender never sent")
        if sender.poll() is None:  # a sender that caught up quickly runs on: it is stopped too
            kills += len(centre_rows(centre, "site-k")) < total
            os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    assert kills >= 1
    run_cli("central", "sync", "--once", "--config", config)
    assert_exactly_once(centre, config)


def test_the_centre_away_while_calls_are_recorded_then_back(postgres: PostgresServer, centre: str,
                                                            tmp_path: Path) -> None:
    config = site_config(tmp_path, "site-o", centre)
    run_cli("replay", capture("aaa.pcap"), "--config", config)
    sender = _sender(config)
    try:
        _wait(lambda: _in_sync(centre, config), 300, "the first calls never reached the centre")
        postgres.stop()
        run_cli("replay", capture("sip-rtp-g711.pcap"), "--config", config)
        make_rows(_data(config), 300, prefix="outage")
        time.sleep(2)
        assert sender.poll() is None, "the sender gave up while the centre was away"
        postgres.start()
        _wait(lambda: _in_sync(centre, config), 300, "the backlog never reached the centre")
    finally:
        _stop(sender)
    assert_exactly_once(centre, config)


def test_the_daemons_sender_reports_last_sync_backlog_and_lag(postgres: PostgresServer, centre: str,
                                                              tmp_path: Path) -> None:
    """What `callrec status` shows and the journal says: the last sync and the backlog; with the
    centre away, the failure, the lag, and one warning when it passes the threshold."""
    config = site_config(tmp_path, "site-d", centre)
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--config", config)
    settings = Central(dsn=centre, site="site-d", lag_warning_seconds=30)
    with Store.open(_data(config), ZoneInfo("Asia/Tokyo")) as store:
        sync = CentralSync(settings, store)
        now = time.time()
        sync.cycle(now)
        state = sync.status(now)
        assert state["backlog"] == 0 and state["last_sync"] and state["error"] is None
        postgres.stop()
        make_rows(_data(config), 10, prefix="late")
        with capture_logs() as logs:
            assert sync.cycle(now + 1) == 1.0
            sync.cycle(now + 40)
            sync.cycle(now + 50)
        state = sync.status(now + 50)
        assert state["backlog"] == 20 and state["lagging"] and state["error"]
        assert "LAGGING" in central_line(state) and "failing since" in central_line(state)
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["central.sync_failed", "central.lagging"]
        postgres.start()
        with capture_logs() as logs:
            sync.cycle(now + 60)
        state = sync.status(now + 60)
        assert state["backlog"] == 0 and not state["lagging"] and state["error"] is None
        assert "central.sync_resumed" in {e["event"] for e in logs}
        sync.close()
    assert (_data(config) / INDEX_FILE).exists()


async def test_the_daemon_records_syncs_and_reports_it(centre: str, tmp_path: Path) -> None:
    """`callrec run`'s Daemon (in this process, fed frames through a pipe): a call recorded live
    reaches the centre with the policy's ledger entry, and the status the socket serves says
    when it last synced and that nothing is waiting."""
    source = FeedSource()
    settings = Central(dsn=centre, site="site-live", interval_seconds=0.2)
    config = Config(data_dir=tmp_path / "site-live", interfaces=["feed"], sweep_interval_seconds=3600,
                    central=settings)
    daemon = Daemon(config, open_source=lambda name, config: source)
    running = asyncio.create_task(daemon.run())
    try:
        while not config.status_path.exists():
            assert not running.done(), running
            await asyncio.sleep(0.05)
        await play(source, call(2, call_id="live@x", callee="0263000001"), time.time())

        def arrived() -> bool:
            rows = centre_rows(centre, "site-live")
            return bool(rows) and all(r["state"] == "sealed" for r in rows.values())

        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(arrived):
            assert time.monotonic() < deadline, "the live call never reached the centre"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        status = await asyncio.to_thread(lambda: run_cli("status", "--json", "--data-dir", config.data_dir,
                                                         check=False).stdout)
    finally:
        daemon.stop()
        await running
    assert running.result() == 0
    state = json.loads(status)["central"]
    assert state["site"] == "site-live" and state["backlog"] == 0 and state["last_sync"] and not state["lagging"]
    with psycopg.connect(centre) as conn:
        events = [e for (e,) in conn.execute("SELECT event FROM ledger_entries WHERE site = 'site-live' "
                                             "AND ledger = 'ledger' ORDER BY seq")]
    assert events[0] == "policy_changed"


def test_a_centre_that_lost_what_it_had_gets_every_row_again(postgres: PostgresServer, centre: str,
                                                              tmp_path: Path) -> None:
    """A centre restored from an older backup (here: a new, empty database under the same
    site name) has a cursor behind what it confirmed: the site sends every row and its whole
    ledgers again, and the journal says so."""
    config = site_config(tmp_path, "site-r", centre)
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--config", config)
    run_cli("central", "sync", "--once", "--config", config)
    assert _in_sync(centre, config)
    restored = postgres.create_database("restored")
    run_cli("central", "init", "--dsn", restored)
    with Store.open(_data(config), ZoneInfo("Asia/Tokyo")) as store:
        sync = CentralSync(Central(dsn=restored, site="site-r"), store)
        with capture_logs() as logs:
            sync.cycle(time.time())
        sync.close()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["central.centre_behind"]
    assert _in_sync(restored, config)
    with psycopg.connect(restored) as conn:
        assert conn.execute("SELECT seq FROM ledger_heads WHERE site = 'site-r' AND ledger = 'seals'").fetchone()[0] \
            == json.loads((_data(config) / "seals.head").read_text())["seq"]
