"""What the centre says to a site and hears back, through the sync (issue 19, 4): a hold (and its
release) placed at the centre reaches the site, shows pending until the site's signed answer
comes back in a batch, then confirmed; an order that does not verify is refused at the site,
ledgered there, and the refusal reaches the centre.  And the sites' harassment marks at the
centre: category, who, when, how, withdrawn by whom and why, never the note.

A real PostgreSQL (tests/central_pg.py); the site is a data folder replayed from a public capture,
enrolled with the centre's CA, and synced by `callrec central sync --once` as its own process."""
from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from access.site_desk import SiteEvent, answer_hold_order
from access.site_grants import issue_hold_order, unverified_fields
from callrec.pki import CentreCA, init_ca
from storage.central_link import Centre, Sender, connect
from storage.central_sync import Batch
from storage.index import connect as connect_index
from storage.ledger import Event
from storage.marks import MarkBook
from storage.outbox import enable
from storage.store import Store
from storage.sweep import erase_recording
from tests.central_pg import PostgresServer, postgres
from tests.central_sites import centre_rows, local_rows, site_config
from tests.interop import capture, run_cli
from tests.marks_helpers import marks_policy, record_calls
from tests.test_site_fetch import _now, enrol, entries

__all__ = ["postgres"]

TOKYO = ZoneInfo("Asia/Tokyo")
SITE = "higashi"


@pytest.fixture
def centre(postgres: PostgresServer) -> str:
    dsn = postgres.create_database("centre")
    run_cli("central", "init", "--dsn", dsn)
    return dsn


@pytest.fixture
def ca(tmp_path: Path) -> CentreCA:
    return init_ca(tmp_path / "centre-ca", _now(), "松本市")


def _site(tmp_path: Path, dsn: str, ca: CentreCA) -> tuple[Path, Path, list[str]]:
    """An enrolled site with sealed calls, synced once: (config, data folder, sealed call ids)."""
    config = site_config(tmp_path / "sites", SITE, dsn)
    data = Path(json.loads(config.read_text())["data_dir"])
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--config", config)
    run_cli("replay", capture("sip-rtp-g722.pcap"), "--config", config)
    enrol(ca, SITE, data, tmp_path)
    sync(config)
    sealed = sorted(i for i, r in local_rows(data).items() if r["sha256"])
    assert len(sealed) >= 2 and set(sealed) <= set(centre_rows(dsn, SITE))
    return config, data, sealed


def sync(config: Path) -> None:
    result = run_cli("central", "sync", "--once", "--config", config)
    assert "in sync" in result.stdout, result.stderr


def holds(ca: CentreCA, dsn: str) -> tuple[int, list[dict]]:
    result = run_cli("centre", "holds", "--json", "--centre-dir", ca.folder, "--dsn", dsn, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def place(ca: CentreCA, dsn: str, call_id: str, *extra: str) -> str:
    out = run_cli("centre", "hold", SITE, call_id, "--reason", "訴訟のおそれ", "--approved-by", "人事課長",
                  "--centre-dir", ca.folder, "--dsn", dsn, *extra).stdout
    return out.split()[1].rstrip(":")


def test_a_hold_placed_centrally_is_pending_until_the_site_confirms_it_then_released(
        centre: str, ca: CentreCA, tmp_path: Path) -> None:
    config, data, sealed = _site(tmp_path, centre, ca)
    call_id = sealed[0]
    order = place(ca, centre, call_id)
    code, shown = holds(ca, centre)
    assert code == 0 and [(o["order_id"], o["state"]) for o in shown] == [(order, "pending")]
    assert not local_rows(data)[call_id]["held"]

    sync(config)
    row = local_rows(data)[call_id]
    assert row["held"] and row["hold_reason"] == "訴訟のおそれ"
    added = [e for e in entries(data) if e.event == Event.HOLD_ADDED and e.details.get("order") == order]
    assert len(added) == 1 and added[0].approved_by == "人事課長" and added[0].details["via"] == "centre"
    code, shown = holds(ca, centre)
    assert code == 0 and shown[0]["state"] == "confirmed" and shown[0]["outcome"] == "held"
    assert shown[0]["site_ledger_seq"] == added[0].seq
    assert centre_rows(centre, SITE)[call_id]["held"]  # the held row came in the same batch

    sync(config)  # answered once: a second sync neither re-applies nor re-ledgers
    assert len([e for e in entries(data) if e.details.get("order") == order]) == 1

    release = place(ca, centre, call_id, "--release")
    assert holds(ca, centre)[1][0]["state"] == "pending"
    sync(config)
    assert not local_rows(data)[call_id]["held"]
    code, shown = holds(ca, centre)
    assert code == 0 and {o["order_id"]: (o["state"], o["outcome"]) for o in shown} == {
        order: ("confirmed", "held"), release: ("confirmed", "released")}
    assert not centre_rows(centre, SITE)[call_id]["held"]


def test_a_forged_order_or_one_edited_in_the_database_is_refused_at_the_site_and_the_refusal_reaches_the_centre(
        centre: str, ca: CentreCA, tmp_path: Path) -> None:
    config, data, sealed = _site(tmp_path, centre, ca)
    forged = issue_hold_order(Ed25519PrivateKey.generate(), site=SITE, call_id=sealed[0], hold=True,
                              reason="偽造", ordered_by="someone", approved_by=None, now=_now())
    genuine_for_other = issue_hold_order(ca.grant_key, site=SITE, call_id=sealed[1], hold=True, reason="本物",
                                         ordered_by="人事課長", approved_by=None, now=_now())
    other = unverified_fields(genuine_for_other)
    with connect(centre) as conn:
        centre_db = Centre(conn)
        centre_db.place_order(SITE, unverified_fields(forged), forged)
        # a genuine token put under another call's row: the site applies only what was signed
        centre_db.place_order(SITE, {**other, "call_id": sealed[0]}, genuine_for_other)
    sync(config)
    rows = local_rows(data)
    assert not rows[sealed[0]]["held"] and not rows[sealed[1]]["held"]
    refused = [e for e in entries(data) if e.event == SiteEvent.HOLD_ORDER_REFUSED]
    assert {e.details["order"] for e in refused} == {unverified_fields(forged)["order_id"], other["order_id"]}
    assert {e.details["refusal"] for e in refused} == {"signature", "malformed"}
    code, shown = holds(ca, centre)
    assert code == 1 and {o["state"] for o in shown} == {"refused"} and all(o["detail"] for o in shown)

    with psycopg.connect(centre, autocommit=True) as conn:  # an answer edited at the centre is not believed
        conn.execute("UPDATE hold_orders SET outcome = 'held', state = 'confirmed'")
    code, shown = holds(ca, centre)
    assert code == 1 and {o["state"] for o in shown} == {"unverified"}


def test_an_order_reaches_only_a_site_that_is_known_with_a_call_the_centre_knows(
        centre: str, ca: CentreCA, tmp_path: Path) -> None:
    _site(tmp_path, centre, ca)
    result = run_cli("centre", "hold", SITE, "no-such-call", "--reason", "x", "--centre-dir", ca.folder,
                     "--dsn", centre, check=False)
    assert result.returncode != 0 and "no call no-such-call" in result.stderr
    assert holds(ca, centre)[1] == []


def test_marks_reach_the_centre_without_their_notes_and_follow_withdrawal_and_erasure(
        centre: str, tmp_path: Path) -> None:
    policy = marks_policy()
    note = "相手は「また電話する」と言った 090-1234-5678"
    with Store.open(tmp_path / "data", TOKYO, create_key=True) as store:
        db = connect_index(store.index.path)  # the outbox on, as at a site joined to a centre
        enable(db, 0.0)
        db.close()
        ids = record_calls(store, ["0312345678", "0312345679"], policy=policy)
        with MarkBook(store, policy.harassment) as book:
            first = book.add(ids[0], "threat", marked_by="ext:201", via="dtmf", note=note)
            second = book.add(ids[1], "demand", marked_by="sato", via="console")
        sender = Sender(store.index.path, {"ledger": store.ledger, "seals": store.seals}, centre, "east")
        try:
            while not sender.step().empty:
                pass
            with connect(centre) as conn:
                marks = {m["id"]: m for m in Centre(conn).marks("east")}
            assert set(marks) == {first.id, second.id}
            assert marks[first.id]["category"] == "threat" and marks[first.id]["marked_by"] == "ext:201"
            assert marks[first.id]["via"] == "dtmf" and marks[first.id]["has_note"] is True
            assert marks[second.id]["has_note"] is False and marks[second.id]["withdrawn_at"] is None
            assert marks[first.id]["hold_until"].timestamp() == first.hold_until
            assert centre_rows(centre, "east")[ids[0]]["evidence_until"] == first.hold_until

            with MarkBook(store, policy.harassment) as book:
                book.withdraw(second.id, by="manager", reason="番号違い")
            erase_recording(store, ids[0], store.now().isoformat(timespec="seconds"), "テスト消去")
            with MarkBook(store, policy.harassment) as book:
                book.forget_erased_notes()
            while not sender.step().empty:
                pass
        finally:
            sender.close()
    with connect(centre) as conn:
        marks = {m["id"]: m for m in Centre(conn).marks("east")}
        every_text = conn.execute("SELECT string_agg(m::text, ' ') FROM marks m").fetchone()[0]
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'marks'")}
    assert marks[second.id]["withdrawn_by"] == "manager" and marks[second.id]["withdrawn_reason"] == "番号違い"
    assert marks[first.id]["category"] == "threat" and marks[first.id]["withdrawn_at"] is None
    assert centre_rows(centre, "east")[ids[0]]["erased_at"] is not None
    assert "また電話" not in every_text and "090" not in every_text and "0312345678" not in every_text
    assert not {"note", "remote_number", "caller", "number"} & columns


def test_a_forged_order_seen_again_after_a_batch_that_never_committed_is_ledgered_once(
        centre: str, ca: CentreCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender answers the orders, then its batch dies before the centre commits it: the centre
    still shows the order pending, and the batch is sent again.  The site's refusal is the same
    answer, ledgered once, also when the crash fell between ledgering it and keeping the answer."""
    _config, data, sealed = _site(tmp_path, centre, ca)
    forged = issue_hold_order(Ed25519PrivateKey.generate(), site=SITE, call_id=sealed[0], hold=True,
                              reason="偽造", ordered_by="someone", approved_by=None, now=_now())
    order_id = unverified_fields(forged)["order_id"]
    with connect(centre) as conn:
        Centre(conn).place_order(SITE, unverified_fields(forged), forged)

    def refusals() -> list:
        return [e for e in entries(data) if e.event == SiteEvent.HOLD_ORDER_REFUSED and e.details["order"] == order_id]

    with Store.open(data, TOKYO) as store:
        sender = Sender(store.index.path, {"ledger": store.ledger, "seals": store.seals}, centre, SITE,
                        orders=lambda pending: answer_hold_order(store, pending))
        try:
            real_apply = Centre.apply

            def crash(self: Centre, batch: Batch) -> int:
                raise psycopg.OperationalError("the link went down mid-batch")

            monkeypatch.setattr(Centre, "apply", crash)
            for _ in range(2):  # answered, then the batch is lost: twice
                with pytest.raises(psycopg.OperationalError):
                    sender.step()
                sender.disconnect()
            assert len(refusals()) == 1
            assert holds(ca, centre)[1][0]["state"] == "pending"
            # a crash between ledgering the refusal and keeping its answer: found again in the ledger
            db = connect_index(store.index.path)
            db.execute("UPDATE site_order_refusals SET confirmation = NULL")
            db.close()
            with pytest.raises(psycopg.OperationalError):
                sender.step()
            sender.disconnect()
            monkeypatch.setattr(Centre, "apply", real_apply)
            sender.step()
            assert sender.step().answers == []  # answered at the centre: no longer pending
        finally:
            sender.close()
    (refusal,) = refusals()
    code, shown = holds(ca, centre)
    assert code == 1 and [(o["order_id"], o["state"]) for o in shown] == [(order_id, "refused")]
    assert shown[0]["site_ledger_seq"] == refusal.seq and not local_rows(data)[sealed[0]]["held"]
