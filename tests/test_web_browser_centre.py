"""The console at the centre as a person sees it, in a real headless Chromium (the model and its
helpers are tests/test_web_browser.py): the manager signs in to the sites' sync status, searches
every site's calls at once (the 拠点 column), narrows to one site with the filter, opens a call of
site B, and reads site A's erasure tombstone in words; and reads the one 通話記録管理簿 of the
centre and every site, filtered and checked.  Screens are saved under the test's tmp_path
(screens/NN-name.png); docs/console-centre.png and docs/console-centre-ledger.png were taken
from them."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.central_console import CentreConsole, TwoSites, two_sites
from tests.central_pg import PostgresServer
from tests.test_web_browser import KUMAMOTO, Browser, browse


@pytest.fixture()
def centre(tmp_path: Path) -> Iterator[tuple[TwoSites, CentreConsole]]:
    server = PostgresServer(prefix="cconsole-pg-")
    try:
        server.start()
        sites = two_sites(server, tmp_path / "sites")
        console = CentreConsole(tmp_path, sites.dsn, KUMAMOTO)
        try:
            yield sites, console
        finally:
            console.stop()
    finally:
        server.remove()


@pytest.fixture()
def at_centre(centre: tuple[TwoSites, CentreConsole], tmp_path: Path) -> Iterator[Browser]:
    screens = tmp_path / "screens"
    screens.mkdir()
    yield from browse(centre[1], tmp_path, screens)  # type: ignore[arg-type]  # a console at its base URL


def _site_column(browser: Browser) -> list[str]:
    return [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "#results td.site")]


def test_the_manager_searches_every_site_and_opens_a_call_of_site_b(centre: tuple[TwoSites, CentreConsole],
                                                                    at_centre: Browser) -> None:
    sites, _ = centre
    browser = at_centre
    browser.sign_in("kanri")
    assert browser.heading() == "拠点の同期状況"
    assert browser.driver.find_element(By.CSS_SELECTOR, "header .brand").text.endswith("センター（全拠点）")
    assert browser.text("in-sync") == "すべての拠点が同期しています"
    assert "site-a" in browser.text("site-site-a") and "site-b" in browser.text("site-site-b")

    browser.nav("通話検索", "search")
    browser.fill("find", **{"from": "2000-01-01 00:00", "site": ""})
    browser.press("find", "every-site")
    column = _site_column(browser)
    assert set(column) == {"site-a", "site-b"}, column
    assert browser.driver.find_element(By.XPATH, "//table[@id='results']//th[2]").text == "拠点"
    assert "site-a" in browser.driver.find_element(By.XPATH, "//h2[.='消去済み']/following-sibling::ul").text

    browser.fill("find", site="site-b")
    browser.press("find", "site-b-only")
    assert set(_site_column(browser)) == {"site-b"}
    held_b = sites.held["site-b"]
    browser.click(browser.driver.find_element(By.CSS_SELECTOR, f"a[href='/sites/site-b/calls/{held_b}']"), "call-b")
    assert browser.path == f"/sites/site-b/calls/{held_b}"
    assert browser.text("site") == "site-b" and "情報公開請求 site-b" in browser.text("hold")
    assert browser.text("seal") and browser.text("state") == "封印済み"
    assert "音声はセンターにはなく" in browser.text("audio-note")

    browser.go("/calls?from=2000-01-01+00%3A00&site=site-a", "site-a-only")
    tomb = browser.driver.find_element(By.XPATH, "//h2[.='消去済み']/following-sibling::ul//a")
    browser.click(tomb, "erased-a")
    assert "に消去（保存期間の経過）" in browser.text("erased")


def _book_sites(browser: Browser) -> list[str]:
    return [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "#entries td.site")]


def test_the_manager_reads_the_one_ledger_of_every_site_and_checks_it(centre: tuple[TwoSites, CentreConsole],
                                                                      at_centre: Browser) -> None:
    """The one 通話記録管理簿: the centre's entries and each site's, a 拠点 column, a site filter, and
    the check of every book with what the centre could check said in words."""
    browser = at_centre
    browser.sign_in("kanri")
    browser.nav("通話記録管理簿", "ledger")
    assert browser.heading() == "通話記録管理簿（全拠点）"
    assert browser.driver.find_element(By.XPATH, "//table[@id='entries']//th[1]").text == "拠点"
    assert {"センター", "site-a", "site-b"} <= set(_book_sites(browser))
    assert "ページ" in browser.text("pager")
    browser.fill("verify", site="")
    browser.press("verify", "ledger-verified")
    assert "センターの鍵（MAC）で検証しました" in browser.text("centre-chain")
    for site in ("site-a", "site-b"):
        assert "センターで確認できる範囲で異常はありません" in browser.text(f"check-{site}")
    assert "MACそのものは拠点で検証します" in browser.text("site-checks")
    browser.fill("verify", site="site-b")
    browser.press("verify", "ledger-site-b")
    assert set(_book_sites(browser)) == {"site-b"}
    browser.fill("verify", site="@centre", event="login")
    browser.press("verify", "ledger-centre-logins")
    assert set(_book_sites(browser)) == {"センター"} and browser.text("check-site-a")
