"""Harassment marks on the console, with plain HTTP (issue 18): every rule is the server's, so a
forged form or another role's URL is refused (403, ledgered) whatever the screen showed.

On the 熊本市 example: the 主管課長 marks a call from its page (ledgered, evidence hold); the
manager alone withdraws a mark (with a reason) and releases the hold; the live alert is for the
manager only (the policy's alert roles), names the line and the extension but never the caller's
number, and offers no listen-in (熊本市 plays recordings only for an approved request); the
monthly report with its plot is for those who read the ledger. On a variant that allows
listening on the device and names a warning, the alert's listen-in link is there and works,
and the manager clears a warned number."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from storage.marks import MarkBook
from storage.store import Store
from tests.console_site import ConsoleSite, csrf_of
from tests.interop import REPO
from tests.test_web_http import PEOPLE, person

TOKYO = ZoneInfo("Asia/Tokyo")
CALLER_DIGITS = "312345678"  # the recorded call's caller (tests/call_frames.py), national form 0312345678


def dtmf_mark(site: ConsoleSite, category: str = "customer_harassment", extension: str = "201") -> str:
    """A mark as the recorder makes it when staff key the code (storage's KeypadMarks does this)."""
    from policy.loader import load_policy

    policy = load_policy(site.policy)
    with Store.open(site.data, TOKYO) as store, MarkBook(store, policy.harassment) as book:
        return book.add(site.call["id"], category, marked_by=f"ext:{extension}", via="dtmf").id


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, "kumamoto", PEOPLE)
    try:
        yield running
    finally:
        running.stop()


def variant(tmp_path: Path) -> Path:
    """熊本市's policy where recordings may be heard on the device and the alert may listen in, and
    a number marked on two calls hears a warning."""
    text = (REPO / "policies" / "kumamoto.yaml").read_text(encoding="utf-8")
    text = text.replace("on_device_listening: approved_request", "on_device_listening: allowed")
    text = text.replace("    listen: false\n", "    listen: true\n")
    text += ("  warning:\n    after_marks: 1\n    within_days: 90\n    announcement: warning.wav\n"
             "    clause: 熊本市 第1条\n")
    path = tmp_path / "variant.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def post(http: aiohttp.ClientSession, page_path: str, path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
    page = await (await http.get(page_path)).text()
    return await http.post(path, data={"csrf": csrf_of(page), **data}, allow_redirects=False)


async def test_marking_withdrawing_and_releasing_follow_the_roles(site: ConsoleSite) -> None:
    call = site.call["id"]
    sato = await person(site, "sato")
    async with sato:
        page = await (await sato.get(f"/calls/{call}")).text()
        assert 'id="mark-form"' in page and "クレーム・カスハラ" in page
        assert "/withdraw" not in page and "release-evidence" not in page, "the requester may not manage marks"
        marked = await post(sato, f"/calls/{call}", f"/calls/{call}/mark",
                            {"category": "improper_demand", "note": "何度も大声で要求"})
        assert marked.status == 303
        page = await (await sato.get(f"/calls/{call}")).text()
        assert "不正な圧力・要求" in page and "何度も大声で要求" in page and 'id="evidence"' in page
        no_token = await sato.post(f"/calls/{call}/mark", data={"category": "improper_demand"})
        assert no_token.status == 403
        bad = await post(sato, f"/calls/{call}", f"/calls/{call}/mark", {"category": "nonsense"})
        assert bad.status == 400
        with Store.open(site.data, TOKYO) as store, MarkBook(store) as book:
            (mark,) = book.of_call(call)
        forged = await post(sato, f"/calls/{call}", f"/marks/{mark.id}/withdraw", {"reason": "消したい"})
        assert forged.status == 403
        for path in ("/alerts", "/report", "/warnings", "/report/monthly.pdf"):
            assert (await sato.get(path)).status == 403, path
    audit = await person(site, "audit")
    async with audit:
        assert (await post(audit, "/status", f"/calls/{call}/mark", {"category": "improper_demand"})).status == 403
        report = await (await audit.get("/report")).text()
        assert "<svg" in report and 'id="counts"' in report
    events = [(e["event"], e["actor"]) for e in site.ledger()]
    assert ("harassment_marked", "sato") in events
    assert ("refused_action", "sato") in events and ("refused_action", "audit") in events

    kanri = await person(site, "kanri")
    async with kanri:
        dtmf = dtmf_mark(site)
        withdrawn = await post(kanri, f"/calls/{call}", f"/marks/{mark.id}/withdraw", {"reason": "区分の誤り"})
        assert withdrawn.status == 303
        page = await (await kanri.get(f"/calls/{call}")).text()
        assert "区分の誤り" in page and 'id="evidence"' in page, "the keypad mark still holds the call"
        released = await post(kanri, f"/calls/{call}", f"/calls/{call}/release-evidence", {"reason": "警察へ提出済み"})
        assert released.status == 303
        page = await (await kanri.get(f"/calls/{call}")).text()
        assert 'id="evidence"' not in page
    with Store.open(site.data, TOKYO) as store, MarkBook(store) as book:
        assert store.index.get(call).evidence_until is None  # type: ignore[union-attr]
        assert book.get(dtmf).released_by == "kanri"  # type: ignore[union-attr]
    assert [e["event"] for e in site.ledger() if e["actor"] == "kanri"][-2:] == [
        "harassment_mark_withdrawn", "evidence_hold_released"]


async def test_the_live_alert_is_for_the_manager_and_names_the_line_not_the_caller(site: ConsoleSite) -> None:
    dtmf_mark(site, "customer_harassment", "201")
    kanri = await person(site, "kanri")
    async with kanri:
        status = await (await kanri.get("/status")).text()
        assert 'href="/alerts"' in status
        response = await kanri.get("/alerts")
        page = await response.text()
        assert response.status == 200 and 'http-equiv="refresh"' in page
        assert "クレーム・カスハラ" in page and f'class="alert-line">{site.call["local_number"]}<' in page
        assert CALLER_DIGITS not in page, "never the caller's number"
        assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", page) and "+09:00" not in page, "a clock time"
        assert "listen-in" not in page, "熊本市 plays recordings only for an approved request"
        assert (await kanri.get(f"/calls/{site.call['id']}/listen-in")).status == 403
        report = await (await kanri.get("/report")).text()
        assert "クレーム・カスハラ" in report and CALLER_DIGITS not in report
        pdf = await kanri.get("/report/monthly.pdf")
        assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
        csv = await (await kanri.get("/report/monthly.csv")).text()
        assert "合計" in csv and CALLER_DIGITS not in csv
        assert (await kanri.get("/report?month=2026-13")).status == 400
    sato = await person(site, "sato")
    async with sato:
        assert 'href="/alerts"' not in await (await sato.get("/status")).text()


async def test_listen_in_and_clearing_a_warned_number_where_the_policy_allows(tmp_path: Path) -> None:
    site = ConsoleSite(tmp_path, "kumamoto", PEOPLE, policy=variant(tmp_path))
    try:
        dtmf_mark(site)
        kanri = await person(site, "kanri")
        async with kanri:
            page = await (await kanri.get("/alerts")).text()
            assert f'href="/calls/{site.call["id"]}/listen-in"' in page
            audio = await kanri.get(f"/calls/{site.call['id']}/listen-in")
            assert audio.status == 200 and (await audio.read())[:4] == b"RIFF"
            warned = await (await kanri.get("/warnings")).text()
            assert "0312345678" in warned, "the manager sees the number to clear it"
            cleared = await post(kanri, "/warnings", "/warnings/clear", {"number": "0312345678", "reason": "謝罪あり"})
            assert cleared.status == 303
            assert "0312345678" not in await (await kanri.get("/warnings")).text()
        sato = await person(site, "sato")
        async with sato:
            assert (await sato.get(f"/calls/{site.call['id']}/listen-in")).status == 403
            assert (await post(sato, "/status", "/warnings/clear", {"number": "0312345678", "reason": "x"})).status == 403
        events = [(e["event"], e["actor"], e["details"].get("via")) for e in site.ledger()]
        assert ("listened", "kanri", "harassment_alert") in events
        assert ("harassment_warning_cleared", "kanri", None) in events
    finally:
        site.stop()
