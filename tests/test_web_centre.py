"""The console at the centre (`callrec web --centre DSN`) through plain HTTP, with two sites'
calls synced to a real PostgreSQL (tests/central_console.py): every site's calls in one search
with a 拠点 column and a site filter, the page of a call of site B, the erasure tombstone of site
A in words, the sites' sync status with a lagging site, and the rules on the server (no page
without a sign-in, no search for a role without it, no local-only page at the centre).  People,
requests and the ledger are the centre's (CentreService): a request for a call of site B is
filed and approved on screen, and the manager hears it, fetched from site B over mutual TLS.
Last, the centre going away and coming back: a 503 that says so, then the pages again."""
from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.central_console import CentreConsole, TwoSites, two_sites
from tests.central_pg import PostgresServer
from tests.central_sites import centre_rows
from tests.console_site import PASSWORD, csrf_of

PEOPLE = {"kanri": "manager", "sato": "requester", "audit": "auditor"}
EVERYTHING = {"from": "2000-01-01 00:00"}


@dataclass
class Centre:
    server: PostgresServer
    sites: TwoSites
    console: CentreConsole


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    folder = tmp_path_factory.mktemp("cconsole-web")
    server = PostgresServer(prefix="cconsole-pg-")
    try:
        server.start()
        sites = two_sites(server, folder)
        console = CentreConsole(folder, sites.dsn, PEOPLE)
        try:
            console.serve("site-b", sites.configs["site-b"])
            yield Centre(server, sites, console)
        finally:
            console.stop()
    finally:
        server.remove()


async def signed_in(centre: Centre, name: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(centre.console.base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    page = await (await http.get("/login")).text()
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token
    response = await http.post("/login", data={"login_token": token.group(1), "name": name,
                                               "password": PASSWORD.format(name)})
    assert response.status == 200 and str(response.url).endswith("/status"), await response.text()
    return http


@pytest.fixture
async def manager(centre: Centre) -> AsyncIterator[aiohttp.ClientSession]:
    async with await signed_in(centre, "kanri") as http:
        yield http


def _rows(page: str) -> list[str]:
    """The search results' rows, each as its text."""
    table = re.search(r'<table class="list" id="results">(.*?)</table>', page, re.DOTALL)
    assert table, page
    return re.findall(r"<tr><td>(.*?)</tr>", table.group(1), re.DOTALL)


async def test_no_page_without_a_sign_in(centre: Centre) -> None:
    held_b = centre.sites.held["site-b"]
    async with aiohttp.ClientSession(centre.console.base) as anonymous:
        for path in ("/status", "/sites", "/calls", f"/sites/site-b/calls/{held_b}", "/requests", "/ledger"):
            response = await anonymous.get(path, allow_redirects=False)
            assert response.status == 303 and response.headers["Location"] == "/login", path
        assert (await anonymous.post("/requests", data={"department": "x"}, allow_redirects=False)).status == 401


async def test_a_role_that_may_not_search_sees_no_call_of_any_site(centre: Centre) -> None:
    async with await signed_in(centre, "audit") as http:
        for path in ("/calls?from=2000-01-01", f"/sites/site-b/calls/{centre.sites.held['site-b']}"):
            response = await http.get(path)
            assert response.status == 403 and "この操作は許可されていません" in await response.text(), path
        sites = await http.get("/sites")  # the sync status is the auditor's to check (verify)
        assert sites.status == 200 and "site-b" in await sites.text()


async def test_every_site_in_one_search_with_a_site_column(centre: Centre, manager: aiohttp.ClientSession) -> None:
    page = await (await manager.get("/calls", params=EVERYTHING)).text()
    assert "<th>拠点</th>" in page and 'id="site-filter"' in page
    rows = _rows(page)
    sites = [re.search(r'<td class="site">([^<]+)</td>', row).group(1) for row in rows]  # type: ignore[union-attr]
    assert set(sites) == {"site-a", "site-b"} and len(rows) == sum(
        1 for c in (*centre.sites.calls("site-a"), *centre.sites.calls("site-b")))
    held_b = centre.sites.held["site-b"]
    assert f'href="/sites/site-b/calls/{held_b}"' in page
    erased = re.search(r'<h2>消去済み</h2><ul><li><a href="/sites/site-a/calls/([^"]+)">site-a</a>: ', page)
    assert erased, "site A's tombstone is listed with its site"


async def test_the_site_filter(centre: Centre, manager: aiohttp.ClientSession) -> None:
    page = await (await manager.get("/calls", params={**EVERYTHING, "site": "site-b"})).text()
    assert all('<td class="site">site-b</td>' in row for row in _rows(page))
    assert '<option value="site-b" selected>' in page and "<h2>消去済み</h2>" not in page
    by_number = await (await manager.get("/calls", params={"number": "03-0000-0007", "site": "site-a"})).text()
    assert 'id="results"' not in by_number, "site B's number is not searched at site A"
    unknown = await (await manager.get("/calls", params={**EVERYTHING, "site": "nowhere"})).text()
    assert len(_rows(unknown)) == len(_rows(await (await manager.get("/calls", params=EVERYTHING)).text())), \
        "a site the centre does not know filters nothing out (it is not offered)"


async def test_the_page_of_a_call_of_site_b(centre: Centre, manager: aiohttp.ClientSession) -> None:
    held_b = centre.sites.held["site-b"]
    stored = centre_rows(centre.sites.dsn, "site-b")[held_b]
    page = await (await manager.get(f"/sites/site-b/calls/{held_b}")).text()
    assert '<td id="site">site-b</td>' in page, centre.console.logtext()[-3000:]
    assert stored["seal_mac"] and f'<td class="hash" id="seal">{stored["seal_mac"]}</td>' in page
    assert stored["sha256"] in page and "情報公開請求 site-b" in page and "封印済み" in page
    assert "音声はセンターにはなく" in page and "waveform.svg" not in page
    assert (await manager.get(f"/sites/site-a/calls/{held_b}")).status == 404, "the id at another site"
    for local_only in (f"/calls/{held_b}", f"/calls/{held_b}/waveform.svg", "/live", "/alerts"):
        assert (await manager.get(local_only)).status == 404, local_only


async def test_an_erased_call_says_when_and_under_which_rule(centre: Centre, manager: aiohttp.ClientSession) -> None:
    erased = [row for row in centre_rows(centre.sites.dsn, "site-a").values() if row["erased_at"]]
    assert erased
    row = erased[0]
    day = row["erased_at"].astimezone(ZoneInfo("Asia/Tokyo")).date().isoformat()  # the policy's zone
    page = await (await manager.get(f"/sites/site-a/calls/{row['id']}")).text()
    assert f'<td id="erased">{day}に消去（保存期間の経過）' in page
    assert "封印（MAC）" in page and row["seal_mac"] in page, "the tombstone is sealed, and its seal shown"
    await manager.get("/lang/en")
    english = await (await manager.get(f"/sites/site-a/calls/{row['id']}")).text()
    await manager.get("/lang/ja")
    assert f"erased on {day} under the retention rule (past its retention period)" in english


async def test_the_sites_page_shows_last_sync_backlog_and_a_lagging_site(centre: Centre,
                                                                        manager: aiohttp.ClientSession) -> None:
    page = await (await manager.get("/sites")).text()
    assert "すべての拠点が同期しています" in page and 'id="site-site-a"' in page and 'id="site-site-b"' in page
    assert (await (await manager.get("/status")).text()).count('id="site-site-') == 2, "status is the sites page"
    with psycopg.connect(centre.sites.dsn, autocommit=True) as conn:  # site B reported a backlog, then went quiet
        conn.execute("UPDATE sites SET backlog = 120, oldest_pending = %s WHERE site = 'site-b'",
                     (datetime.now(UTC) - timedelta(hours=2),))
        try:
            lagging = await (await manager.get("/sites")).text()
        finally:
            conn.execute("UPDATE sites SET backlog = 0, oldest_pending = NULL WHERE site = 'site-b'")
    assert "1拠点の同期が15 min以上遅れています: site-b" in lagging
    row_b = re.search(r'<tr class="late" id="site-site-b">(.*?)</tr>', lagging, re.DOTALL)
    assert row_b and "<td>120</td>" in row_b.group(1) and "2 h 00 min" in row_b.group(1) and "遅延" in row_b.group(1)
    assert '<tr class="" id="site-site-a">' in lagging


async def test_a_request_for_a_call_of_site_b_is_approved_and_heard_from_site_b(centre: Centre,
                                                                                manager: aiohttp.ClientSession) -> None:
    held_b = centre.sites.held["site-b"]
    ref = f"site-b/{held_b}"
    async with await signed_in(centre, "sato") as sato:
        page = await (await sato.get(f"/sites/site-b/calls/{held_b}")).text()
        assert f'name="call" value="{ref}"' in page, "the call page offers a request for this site's call"
        filed = await sato.post("/requests", data={"csrf": csrf_of(page), "call": ref, "department": "市民課",
                                                   "purpose": "manager_need", "wanted": "listen", "details": ""})
        assert filed.status == 200 and "/requests/" in str(filed.url), await filed.text()
        number = str(filed.url).rsplit("/", 1)[1]
        shown = await filed.text()
        assert f'href="/sites/site-b/calls/{held_b}"' in shown
        assert (await sato.get(f"/requests/{number}/listen/{ref}")).status == 403, "a requester does not listen"
    request_page = await (await manager.get(f"/requests/{number}")).text()
    approved = await manager.post(f"/requests/{number}/approve", data={"csrf": csrf_of(request_page),
                                                                       "reason": "管理責任者が必要と認めた"})
    assert approved.status == 200 and "承認済み" in await approved.text()
    call_page = await (await manager.get(f"/sites/site-b/calls/{held_b}")).text()
    assert f'src="/requests/{number}/listen/{ref}"' in call_page
    heard = await manager.get(f"/requests/{number}/listen/{ref}")
    audio = await heard.read()
    assert heard.status == 200 and heard.headers["Content-Type"] == "audio/wav" and audio[:4] == b"RIFF"
    seal = centre_rows(centre.sites.dsn, "site-b")[held_b]["sha256"]
    assert hashlib.sha256(audio).hexdigest() == seal, "the site's recording as sealed, byte for byte"
    book = await (await manager.get("/ledger")).text()
    for event in ("request_filed", "request_approved", "grant_issued", "site_fetched", "listened"):
        assert event in book, event
    assert (await manager.get(f"/requests/{number}/listen/site-a/{held_b}")).status == 403, "not in the request"


def _book_rows(page: str) -> list[tuple[str, str, str]]:
    """(拠点, seq, event) of each row of the combined ledger page."""
    table = re.search(r'<table class="list" id="entries">(.*?)</table>', page, re.DOTALL)
    assert table, page
    return re.findall(r'<tr><td class="site">([^<]*)</td><td>(\d+)</td><td>[^<]*</td><td>([^<]*)</td>', table.group(1))


async def test_one_ledger_of_the_centre_and_every_site_with_a_site_filter_and_pages(
        centre: Centre, manager: aiohttp.ClientSession) -> None:
    with psycopg.connect(centre.sites.dsn, autocommit=True) as conn:
        synced = {site: n for site, n in conn.execute(
            "SELECT site, count(*) FROM ledger_entries WHERE ledger = 'ledger' GROUP BY site")}
        ours = conn.execute("SELECT count(*) FROM centre_ledger").fetchone()[0]
        seals = conn.execute("SELECT count(*) FROM ledger_entries WHERE ledger = 'seals'").fetchone()[0]
    assert set(synced) == {"site-a", "site-b"} and ours and seals
    total = ours + sum(synced.values())
    page = await (await manager.get("/ledger")).text()
    assert "<th>拠点</th>" in page and 'id="site-filter"' in page and f"（{total}件）" in page
    rows = _book_rows(page)
    assert {site for site, _, _ in rows} <= {"センター", "site-a", "site-b"} and len(rows) == min(total, 100)

    every: list[tuple[str, str, str]] = []  # page by page, the whole book once
    for number in range(1, total // 100 + 2):
        every += _book_rows(await (await manager.get("/ledger", params={"page": str(number)})).text())
    assert len(every) == len(set(every)) == total
    for site, count in synced.items():
        assert sum(1 for s, _, _ in every if s == site) == count
        only = _book_rows(await (await manager.get("/ledger", params={"site": site})).text())
        assert {s for s, _, _ in only} == {site} and len(only) == min(count, 100)
        assert [int(seq) for _, seq, _ in only] == sorted((int(seq) for _, seq, _ in only), reverse=True)
    mine = _book_rows(await (await manager.get("/ledger", params={"site": "@centre", "event": "login"})).text())
    assert mine and {(s, e) for s, _, e in mine} == {("センター", "login")}

    checked = await (await manager.get("/ledger", params={"verify": "1"})).text()
    assert 'id="centre-chain"' in checked and "センターの鍵（MAC）で検証しました" in checked
    for site, count in synced.items():
        assert (f'<p class="good" id="check-{site}">{site}: {count}件、センターで確認できる範囲で異常はありません'
                in checked)
    assert "MACそのものは拠点で検証します" in checked

    with psycopg.connect(centre.sites.dsn, autocommit=True) as conn:  # an entry of site B edited, one removed
        edited = conn.execute("SELECT seq, actor FROM ledger_entries WHERE site = 'site-b' AND ledger = 'ledger' "
                              "ORDER BY seq LIMIT 1").fetchone()
        conn.execute("UPDATE ledger_entries SET actor = 'someone else' WHERE site = 'site-b' AND ledger = 'ledger' "
                     "AND seq = %s", (edited[0],))
        removed = conn.execute("DELETE FROM ledger_entries WHERE site = 'site-a' AND ledger = 'ledger' AND seq = "
                               "(SELECT max(seq) FROM ledger_entries WHERE site = 'site-a' AND ledger = 'ledger') "
                               "RETURNING *").fetchone()
        try:
            bad = await (await manager.get("/ledger", params={"verify": "1"})).text()
        finally:
            conn.execute("UPDATE ledger_entries SET actor = %s WHERE site = 'site-b' AND ledger = 'ledger' "
                         "AND seq = %s", (edited[1], edited[0]))
            conn.execute("INSERT INTO ledger_entries VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (*removed[:8], Jsonb(removed[8]), *removed[9:]))
    assert '<p class="bad" id="check-site-b">site-b: 管理簿に異常があります</p>' in bad
    assert f"site-b: seq {edited[0]}: the row&#39;s columns differ from its stored line" in bad
    assert '<p class="bad" id="check-site-a">' in bad and "does not end at the head the site anchored" in bad
    assert 'id="centre-chain">センターの管理簿' in bad, "the centre's own chain is still intact"
    again = await (await manager.get("/ledger", params={"verify": "1"})).text()
    assert all(f'id="check-{site}"' in again and "管理簿に異常があります" not in again for site in synced)


async def test_a_page_waiting_on_a_slow_centre_query_holds_up_no_other_page(
        centre: Centre, manager: aiohttp.ClientSession) -> None:
    """The ledger page's query waits on a lock another session holds on the centre's ledger; the
    sites page and the requests page answer meanwhile (the console's event loop is free), and the
    ledger page answers once the lock is gone."""
    def waiting_on_the_lock() -> bool:
        with psycopg.connect(centre.sites.dsn, autocommit=True) as probe:
            return probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND application_name = 'callrec centre'").fetchone()[0] > 0

    with psycopg.connect(centre.sites.dsn) as locker:
        locker.execute("LOCK TABLE centre_ledger IN ACCESS EXCLUSIVE MODE")
        slow = asyncio.ensure_future(manager.get("/ledger"))
        deadline = time.monotonic() + 30
        while not waiting_on_the_lock():
            assert time.monotonic() < deadline and not slow.done(), "the ledger page never reached the lock"
            await asyncio.sleep(0.05)
        for path in ("/sites", "/requests", "/calls?from=2000-01-01"):
            other = await asyncio.wait_for(manager.get(path), 30)
            assert other.status == 200, (path, await other.text())
        assert not slow.done() and waiting_on_the_lock(), "the ledger page was still waiting on its query"
        locker.rollback()
    ledger = await asyncio.wait_for(slow, 30)
    assert ledger.status == 200 and 'id="entries"' in await ledger.text()


async def test_a_centre_gone_away_is_said_and_its_return_is_picked_up(centre: Centre,
                                                                      manager: aiohttp.ClientSession) -> None:
    warm = await asyncio.gather(*(manager.get(path) for path in ("/sites", "/requests", "/ledger") * 4))
    assert [p.status for p in warm] == [200] * 12  # every worker thread has its connections now
    centre.server.stop()
    try:
        down = await manager.get("/calls", params=EVERYTHING)
        assert down.status == 503 and "センターに接続できません" in await down.text()
    finally:
        centre.server.start()
    # Every worker thread had its connections from before the restart: once one page found them
    # lost, none of the others fails on its own stale one in turn.
    pages = await asyncio.gather(*(manager.get(path) for path in ("/sites", "/requests", "/ledger") * 4))
    assert [p.status for p in pages] == [200] * 12
    deadline = time.monotonic() + 30
    while (back := await manager.get("/sites")).status != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert back.status == 200 and "site-b" in await back.text()


async def test_the_best_first_then_the_next_ones_page_by_page(centre: Centre,
                                                               manager: aiohttp.ClientSession) -> None:
    """A page holds the best `per` candidates and says how many more there are (ほかN件); its
    link shows the next ones, the form's fields kept; the pages together are the whole answer."""
    whole = _rows(await (await manager.get("/calls", params=EVERYTHING)).text())
    assert 20 < len(whole) <= 50
    seen: list[str] = []
    page = await (await manager.get("/calls", params={**EVERYTHING, "per": "10"})).text()
    while True:
        rows = _rows(page)
        first, more = len(seen) + 1, len(whole) - len(seen) - len(rows)
        seen += rows
        shown = re.search(r'<p id="shown">([^<]+)</p>', page)
        assert shown, page
        link = re.search(r'<a id="next-page" href="([^"]+)">次の(\d+)件</a>', page)
        if more:
            assert shown.group(1) == f"候補{len(whole)}件のうち{first}～{len(seen)}件目を表示、ほか{more}件"
            assert link and int(link.group(2)) == min(10, more) and "from=2000-01-01" in link.group(1)
            page = await (await manager.get(link.group(1).replace("&amp;", "&"))).text()
        else:
            assert shown.group(1) == f"候補{len(whole)}件のうち{first}～{len(seen)}件目を表示" and link is None
            assert 'id="previous-page"' in page
            break
    assert seen == whole
    assert (await manager.get("/calls", params={**EVERYTHING, "page": "0"})).status == 400
    assert (await manager.get("/calls", params={**EVERYTHING, "per": "5000"})).status == 400


async def test_stopping_the_console_closes_what_each_thread_opened(centre: Centre,
                                                                   manager: aiohttp.ClientSession) -> None:
    """Last in this file: it stops the console.  Every thread (the loop's and each worker's) holds
    one connection to the centre, however often the centre went away before (a lost one is closed
    when replaced, not kept to the end), and on SIGTERM each thread's event loop and connection
    is closed before the process ends."""
    pages = await asyncio.gather(*(manager.get(path) for path in ("/sites", "/requests", "/ledger") * 4))
    assert [p.status for p in pages] == [200] * 12
    with psycopg.connect(centre.sites.dsn) as db:
        (held,) = db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'callrec centre'"
                             ).fetchone()
    assert held <= 5, "at most the loop's connection and one per worker thread"
    centre.console.stop()
    assert centre.console.proc.returncode == 0
    log = centre.console.logtext()
    closed = log.split("web.closed", 1)[1].splitlines()[0] if "web.closed" in log else log[-2000:]
    assert "connections=5" in closed and "loops=4" in closed, closed
    assert "web.stopped" in log
