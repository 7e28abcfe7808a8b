"""The console over plain HTTP on a withheld caller's call (熊本市's policy keeps the number
masked): the search, its results and the call's page never show the number, a search by it
finds nothing, and only the person who carries out an approved request sees it once the
request is fulfilled, each time ledgered.  The extension is shown apart from the DID."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_site import ConsoleSite, csrf_of
from tests.test_web_http import person
from tests.trunk_frames import CARRIER_A, T0, trunk_call

PEOPLE = {"kanri": "manager", "sato": "requester"}


@pytest.fixture()
def withheld_site(tmp_path: Path) -> Iterator[tuple[ConsoleSite, str]]:
    frames, want = trunk_call(1, T0, carrier=CARRIER_A, outbound=False, withheld=True, talk=2.0)
    running = ConsoleSite(tmp_path, "kumamoto", PEOPLE, frames=frames)
    try:
        yield running, str(want["withheld"])
    finally:
        running.stop()


async def test_the_console_masks_a_withheld_number_until_an_approved_request_is_fulfilled(
        withheld_site: tuple[ConsoleSite, str]) -> None:
    site, number = withheld_site
    call = site.call["id"]
    sato = await person(site, "sato")
    async with sato:
        found = await (await sato.get("/calls", params={"at": "2025-11-25 01:00", "window": "2h"})).text()
        assert call in found and "非通知 (withheld; number kept, masked)" in found and number not in found
        by_number = await (await sato.get("/calls", params={"number": number})).text()
        assert f"/calls/{call}" not in by_number
        page = await (await sato.get(f"/calls/{call}")).text()
        assert number not in page and 'id="extension"' in page
        token = csrf_of(page)
        filed = await sato.post("/requests", data={"csrf": token, "call": call, "department": "市民課",
                                                   "purpose": "manager_need", "wanted": "listen"})
        request = str(filed.url).rsplit("/", 1)[1]
        assert (await sato.get(f"/calls/{call}/withheld/{request}")).status == 403
    kanri = await person(site, "kanri")
    async with kanri:
        token = csrf_of(await (await kanri.get(f"/requests/{request}")).text())
        assert (await kanri.post(f"/requests/{request}/approve", data={"csrf": token})).status == 200
        assert (await kanri.get(f"/calls/{call}/withheld/{request}")).status == 404, "approved, not yet fulfilled"
        before = await (await kanri.get(f"/calls/{call}")).text()
        assert number not in before and f"/calls/{call}/withheld/" not in before
        audio = await kanri.get(f"/requests/{request}/listen/{call}")
        assert audio.status == 200 and (await audio.read())[:4] == b"RIFF"
        after = await (await kanri.get(f"/calls/{call}")).text()
        assert number not in after and f"/calls/{call}/withheld/{request}" in after
        shown = await (await kanri.get(f"/calls/{call}/withheld/{request}")).text()
        assert f'<td id="withheld">{number}' in shown
    disclosed = [e for e in site.ledger() if e["event"] == "withheld_number_disclosed"]
    assert [(e["actor"], e["details"]["via"], e["details"]["call_id"]) for e in disclosed] == [
        ("kanri", "console", call)]


async def test_a_search_by_extension_in_the_console(withheld_site: tuple[ConsoleSite, str]) -> None:
    site, _ = withheld_site
    sato = await person(site, "sato")
    async with sato:
        found = await sato.get("/calls", params={"extension": "301"})
        assert found.status == 200 and "/calls/" not in await found.text(), "the trunk leg alone has no extension"
