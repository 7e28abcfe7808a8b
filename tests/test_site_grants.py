"""The centre's grants and hold orders, checked by the pure core, and a hold placed at the centre
applied at the site: held, ledgered, confirmed with the site's signature, once.

The hold path is the one the centre's sync will carry: `apply_hold_order(store, order)` at the
site, `check_confirmation` at the centre; until a confirmation passes, the centre shows the hold
as pending.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from access.errors import AccessError
from access.site_desk import SiteEvent, apply_hold_order
from access.site_grants import (
    MAX_GRANT_LIFETIME,
    Allowed,
    GrantRefused,
    HoldConfirmation,
    Refusal,
    check_confirmation,
    check_grant,
    confirm_hold,
    issue_grant,
    issue_hold_order,
    read_hold_order,
    unverified_fields,
)
from callrec.pki import CentreCA, enrol_site, init_ca
from storage.ledger import Event
from storage.records import ledger_hold, set_hold
from storage.store import Store
from tests.interop import calls, capture, run_cli

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2027, 4, 1, 10, 0, tzinfo=TOKYO)
KEY = Ed25519PrivateKey.generate()
CALL = "20270401T095500-1a2b3c4d"


def _grant(**changes: object) -> str:
    values: dict = {"site": "higashi", "call_id": CALL, "request": "R2027-0001", "allow": Allowed.LISTEN, "now": NOW}
    values.update(changes)
    return issue_grant(KEY, **values)


def _check(token: str, **changes: object):  # type: ignore[no-untyped-def]
    values: dict = {"site": "higashi", "call_id": CALL, "request": "R2027-0001", "allow": Allowed.LISTEN,
                    "now": NOW + timedelta(minutes=1)}
    values.update(changes)
    return check_grant(token, KEY.public_key(), **values)


def _refusal(token: str, **changes: object) -> Refusal:
    with pytest.raises(GrantRefused) as refused:
        _check(token, **changes)
    return refused.value.reason


# --- the pure core -------------------------------------------------------------------------------

def test_a_grant_checks_for_its_site_call_request_and_use() -> None:
    grant = _check(_grant(approved_by="人事課長"))
    assert (grant.site, grant.call_id, grant.request, grant.allow) == ("higashi", CALL, "R2027-0001", Allowed.LISTEN)
    assert grant.approved_by == "人事課長" and len(grant.nonce) == 32
    assert grant.not_after - grant.issued_at == timedelta(minutes=10)


@pytest.mark.parametrize(("changes", "refusal"), [
    ({"site": "oote"}, Refusal.OTHER_SITE),
    ({"call_id": "20270401T095501-ffffffff"}, Refusal.OTHER_CALL),
    ({"request": "R2027-0002"}, Refusal.OTHER_REQUEST),
    ({"allow": Allowed.COPY}, Refusal.OTHER_USE),
    ({"now": NOW + timedelta(minutes=10)}, Refusal.EXPIRED),
    ({"now": NOW - timedelta(minutes=6)}, Refusal.NOT_YET_VALID),
])
def test_a_grant_is_refused_where_it_does_not_hold(changes: dict, refusal: Refusal) -> None:
    assert _refusal(_grant(), **changes) is refusal


def test_a_clock_a_little_behind_the_centres_still_accepts_a_fresh_grant() -> None:
    assert _check(_grant(), now=NOW - timedelta(minutes=4)).call_id == CALL


def test_a_forged_or_edited_or_foreign_kind_of_token_is_refused() -> None:
    token = _grant()
    assert _refusal(issue_grant(Ed25519PrivateKey.generate(), site="higashi", call_id=CALL, request="R2027-0001",
                                allow=Allowed.LISTEN, now=NOW)) is Refusal.SIGNATURE
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    body["not_after"] = (NOW + timedelta(days=7)).isoformat()
    edited = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode() + "." + token.split(".")[1]
    assert _refusal(edited) is Refusal.SIGNATURE
    order = issue_hold_order(KEY, site="higashi", call_id=CALL, hold=True, reason="訴訟", ordered_by="総務課",
                             approved_by=None, now=NOW)
    assert _refusal(order) is Refusal.SIGNATURE, "a hold order's signature never verifies as a grant's"
    for garbage in ("", "a.b.c", "!!!.???", "x" * 20000):
        assert _refusal(garbage) is Refusal.MALFORMED


def test_a_grant_is_short_lived_and_a_copy_grant_carries_its_manifest() -> None:
    with pytest.raises(AccessError):
        _grant(lifetime=MAX_GRANT_LIFETIME + timedelta(seconds=1))
    with pytest.raises(AccessError):
        _grant(allow=Allowed.COPY)
    with pytest.raises(AccessError, match="site name"):
        _grant(site="Higashi/../x")
    copy = _check(_grant(allow=Allowed.COPY, copy={"copy_number": "C2027-0001"}), allow=Allowed.COPY).copy
    assert copy == {"copy_number": "C2027-0001"}
    assert unverified_fields(_grant())["call_id"] == CALL


def test_a_confirmation_is_the_sites_own_word() -> None:
    site_key = ec.generate_private_key(ec.SECP256R1())
    confirmation = HoldConfirmation("higashi", "ab" * 16, CALL, "held", "", NOW, 12)
    token = confirm_hold(site_key, confirmation)
    assert check_confirmation(token, site_key.public_key(), site="higashi", order_id="ab" * 16) == confirmation
    with pytest.raises(GrantRefused) as other:
        check_confirmation(token, site_key.public_key(), site="higashi", order_id="cd" * 16)
    assert other.value.reason is Refusal.OTHER_SITE
    with pytest.raises(GrantRefused) as forged:
        check_confirmation(token, ec.generate_private_key(ec.SECP256R1()).public_key(), site="higashi",
                           order_id="ab" * 16)
    assert forged.value.reason is Refusal.SIGNATURE


def test_a_hold_order_names_its_site() -> None:
    order = issue_hold_order(KEY, site="higashi", call_id=CALL, hold=True, reason="訴訟", ordered_by="総務課",
                             approved_by="人事課長", now=NOW)
    assert read_hold_order(order, KEY.public_key(), site="higashi").approved_by == "人事課長"
    with pytest.raises(GrantRefused) as refused:
        read_hold_order(order, KEY.public_key(), site="oote")
    assert refused.value.reason is Refusal.OTHER_SITE


# --- a hold placed at the centre, applied at the site -----------------------------------------------

@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> CentreCA:
    return init_ca(tmp_path_factory.mktemp("mtls-hold-centre") / "centre", NOW, "松本市")


@pytest.fixture(scope="module")
def site_data(centre: CentreCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mtls-hold-site")
    data = tmp / "data"
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--data-dir", data)
    bundle, code = enrol_site(centre, "higashi", datetime.now(TOKYO))
    (tmp / "bundle").write_bytes(bundle)
    run_cli("site", "enrol", tmp / "bundle", "--data-dir", data, input=code + "\n")
    return data


@pytest.fixture
def store(site_data: Path) -> Iterator[Store]:
    with Store.open(site_data, TOKYO) as opened:
        yield opened


def _order(centre: CentreCA, call_id: str, hold: bool = True, site: str = "higashi") -> str:
    return issue_hold_order(centre.grant_key, site=site, call_id=call_id, hold=hold, reason="訴訟に備えた保全",
                            ordered_by="人事課 山田", approved_by="人事課長", now=datetime.now(TOKYO))


def _confirmed(centre: CentreCA, order: str, answer: str) -> HoldConfirmation:
    fields = unverified_fields(order)
    return check_confirmation(answer, centre.site_certificate("higashi").public_key(),  # type: ignore[arg-type]
                              site="higashi", order_id=fields["order_id"])


def test_a_central_hold_is_applied_ledgered_and_confirmed_once(centre: CentreCA, store: Store) -> None:
    call_id = calls(store.data_dir)[0]["id"]
    order = _order(centre, call_id)
    answer = apply_hold_order(store, order)
    confirmation = _confirmed(centre, order, answer)
    assert (confirmation.state, confirmation.call_id) == ("held", call_id)
    row = store.index.get(call_id)
    assert row is not None and row.held and row.hold_reason == "訴訟に備えた保全"
    entry = next(e for e in store.ledger.entries() if e.seq == confirmation.ledger_seq)
    assert entry.event == Event.HOLD_ADDED and entry.actor == "人事課 山田" and entry.approved_by == "人事課長"
    assert entry.details["order"] == unverified_fields(order)["order_id"] and entry.details["via"] == "centre"
    count = len(list(store.ledger.entries()))
    assert apply_hold_order(store, order) == answer, "delivered twice, the same answer"
    assert len(list(store.ledger.entries())) == count, "and nothing changed"

    release = _order(centre, call_id, hold=False)
    assert _confirmed(centre, release, apply_hold_order(store, release)).state == "released"
    row = store.index.get(call_id)
    assert row is not None and not row.held


def test_an_order_for_what_is_so_already_is_confirmed_and_noted(centre: CentreCA, store: Store) -> None:
    call_id = calls(store.data_dir)[0]["id"]
    order = _order(centre, call_id, hold=False)
    confirmation = _confirmed(centre, order, apply_hold_order(store, order))
    assert confirmation.state == "released" and confirmation.detail == "already so at the site"
    assert list(store.ledger.entries())[-1].event == SiteEvent.HOLD_ORDER_ALREADY


def test_an_order_that_cannot_apply_is_confirmed_as_refused(centre: CentreCA, store: Store) -> None:
    order = _order(centre, "20990101T000000-00000000")
    confirmation = _confirmed(centre, order, apply_hold_order(store, order))
    assert confirmation.state == "refused" and "no call" in confirmation.detail
    last = list(store.ledger.entries())[-1]
    assert last.event == SiteEvent.HOLD_ORDER_REFUSED and last.seq == confirmation.ledger_seq


@pytest.mark.parametrize("how", ["forged", "another_site"])
def test_a_hold_order_not_for_this_site_is_refused_and_ledgered(centre: CentreCA, store: Store, how: str) -> None:
    call_id = calls(store.data_dir)[0]["id"]
    if how == "forged":
        order = issue_hold_order(Ed25519PrivateKey.generate(), site="higashi", call_id=call_id, hold=True,
                                 reason="x", ordered_by="x", approved_by=None, now=NOW)
    else:
        order = _order(centre, call_id, site="oote")
    with pytest.raises(GrantRefused):
        apply_hold_order(store, order)
    last = list(store.ledger.entries())[-1]
    assert last.event == SiteEvent.HOLD_ORDER_REFUSED
    assert last.details["refusal"] == ("signature" if how == "forged" else "other_site")
    row = store.index.get(call_id)
    assert row is not None and not row.held


def test_the_hold_order_commands_carry_an_order_by_file(centre: CentreCA, site_data: Path, tmp_path: Path) -> None:
    call_id = calls(site_data)[0]["id"]
    run_cli("centre", "hold-order", "higashi", call_id, "--reason", "監査", "--approved-by", "人事課長",
            "--centre-dir", centre.folder, "-o", tmp_path / "order")
    run_cli("site", "hold-order", tmp_path / "order", "-o", tmp_path / "answer", "--data-dir", site_data)
    shown = run_cli("centre", "hold-confirmation", tmp_path / "answer", "--order", tmp_path / "order",
                    "--centre-dir", centre.folder).stdout
    assert f"call {call_id}: held" in shown


class _CrashOnce:
    """Stands for the process dying at one point: the first call raises, the next ones run."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.real, self.crashed = real, False

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("the process died here")
        return self.real(*args, **kwargs)


def _released(store: Store) -> str:
    """The module's first call, not held (tests before may have left it held)."""
    call_id = calls(store.data_dir)[0]["id"]
    row = store.index.get(call_id)
    if row is not None and row.held:
        set_hold(store, call_id, False, actor="試験", reason="試験の前に解除", approved_by=None)
    return call_id


def _for_order(store: Store, order: str) -> list:
    order_id = unverified_fields(order)["order_id"]
    return [e for e in store.ledger.entries() if e.details.get("order") == order_id]


@pytest.mark.parametrize("kind", ["hold", "already", "refused"])
def test_an_order_cut_short_after_its_entry_is_answered_from_that_entry(
        centre: CentreCA, store: Store, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The site ledgered the order, then died before keeping its answer: the order, shown again,
    is answered from the entry it wrote, and the 管理簿 has that one entry."""
    call_id = _released(store) if kind != "refused" else "20990101T000000-00000000"
    order = _order(centre, call_id, hold=kind != "already")
    monkeypatch.setattr("access.site_desk.confirm_hold", _CrashOnce(confirm_hold))
    with pytest.raises(RuntimeError):
        apply_hold_order(store, order)
    (entry,) = _for_order(store, order)
    confirmation = _confirmed(centre, order, apply_hold_order(store, order))
    assert _for_order(store, order) == [entry] and confirmation.ledger_seq == entry.seq
    assert confirmation.state == {"hold": "held", "already": "released", "refused": "refused"}[kind]
    assert (confirmation.detail == "already so at the site") == (kind == "already")
    if kind == "hold":
        assert entry.event == Event.HOLD_ADDED
        release = _order(centre, call_id, hold=False)
        assert _confirmed(centre, release, apply_hold_order(store, release)).state == "released"


def test_a_hold_whose_entry_a_crash_cut_off_gets_it_when_the_order_comes_again(
        centre: CentreCA, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash fell inside set_hold: the row says held, the 管理簿 says nothing.  The order noted
    before says the row was not held then, so the hold is this order's: its entry is written on the
    next try (not "already so"), once, and the confirmation names it."""
    call_id = _released(store)
    order = _order(centre, call_id)
    monkeypatch.setattr("storage.records.ledger_hold", _CrashOnce(ledger_hold))
    with pytest.raises(RuntimeError):
        apply_hold_order(store, order)
    row = store.index.get(call_id)
    assert row is not None and row.held and _for_order(store, order) == []
    confirmation = _confirmed(centre, order, apply_hold_order(store, order))
    (entry,) = _for_order(store, order)
    assert entry.event == Event.HOLD_ADDED and entry.approved_by == "人事課長" and entry.details["via"] == "centre"
    assert (confirmation.state, confirmation.detail, confirmation.ledger_seq) == ("held", "", entry.seq)
    assert apply_hold_order(store, order) == apply_hold_order(store, order) and len(_for_order(store, order)) == 1
    release = _order(centre, call_id, hold=False)
    assert _confirmed(centre, release, apply_hold_order(store, release)).state == "released"
