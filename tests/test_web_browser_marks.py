"""Harassment marks as people see them in a real headless Chromium (the model and its helpers are
tests/test_web_browser.py): the 主管課長 marks a call from its page, the manager's live alert
shows the calls staff marked from their extension (which line, never the caller), the report
shows its plot, and the manager withdraws a mark with a reason. Screens are saved under the
test's tmp_path (screens/NN-name.png); docs/console-alert.png and docs/console-report.png were
taken from them."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from selenium.webdriver.common.by import By

from policy.loader import load_policy
from storage.marks import MarkBook
from storage.store import Store
from tests.builders import PBX, TRUNK
from tests.call_frames import T0, bye, media, signalling
from tests.console_site import ConsoleSite
from tests.interop import calls
from tests.test_web_browser import KUMAMOTO, Browser, browse

TOKYO = ZoneInfo("Asia/Tokyo")
CALLERS = ("0312345678", "0456781234", "0667891234", "0921234567")
DID = "0961001234"  # one of 熊本市's example ダイヤルイン (096-100-1XXX)


def four_calls() -> list[tuple[float, bytes]]:
    frames: list[tuple[float, bytes]] = []
    for n, caller in enumerate(CALLERS):
        t, port = T0 + n * 120, 20000 + 2 * n
        up, _ = media(t + 1.05, 2, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=n + 1, seed=n)
        frames += signalling(f"b{n}@x", t=t, caller=caller, callee=DID, tport=port, pport=port + 20000) + up
        frames += bye(t + 4, f"b{n}@x", caller=caller, callee=DID)
    return sorted(frames, key=lambda f: f[0])


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, "kumamoto", KUMAMOTO, frames=four_calls())
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
def b(site: ConsoleSite, tmp_path: Path) -> Iterator[Browser]:
    screens = tmp_path / "screens"
    screens.mkdir()
    yield from browse(site, tmp_path, screens)


def keypad_marks(site: ConsoleSite, ids: list[str]) -> None:
    """Marks as the recorder stores them when staff key *91 / *92 during the call."""
    policy = load_policy(site.policy)
    with Store.open(site.data, TOKYO) as store, MarkBook(store, policy.harassment) as book:
        for call_id, category in zip(ids, ("customer_harassment", "improper_demand", "customer_harassment"),
                                     strict=False):
            book.add(call_id, category, marked_by="ext:201", via="dtmf")


def test_mark_alert_report_and_withdraw_in_the_browser(site: ConsoleSite, b: Browser) -> None:
    ids = [c["id"] for c in sorted(calls(site.data), key=lambda c: c["started_at"])]
    keypad_marks(site, ids[1:])
    first = ids[0]

    b.sign_in("sato")
    assert not b.driver.find_elements(By.ID, "nav-alerts"), "the requester is not among the alert's roles"
    b.go(f"/calls/{first}", "call-sato")
    b.fill("mark", category="improper_demand", note="「責任者を出せ」と30分繰り返す")
    b.press("mark", "marked-sato")
    assert b.path == f"/calls/{first}#marks"
    rows = b.by_id("mark-list").text
    assert "不正な圧力・要求" in rows and "sato" in rows and "責任者を出せ" in rows
    assert b.has("evidence") and not b.driver.find_elements(By.CSS_SELECTOR, "button.withdraw")
    b.go("/alerts", "alerts-refused")
    b.refused("roles the policy names")
    b.sign_out()

    b.sign_in("kanri")
    b.click(b.by_id("nav-alerts"), "alerts")
    assert b.heading() == "カスハラ通報"
    table = b.by_id("alerts").text
    assert table.count("クレーム・カスハラ") == 2 and "不正な圧力・要求" in table
    assert not any(caller in table for caller in CALLERS), "the alert names the line, never the caller"
    assert not b.driver.find_elements(By.CSS_SELECTOR, "a.listen-in"), "熊本市 allows no listening in"
    refresh = b.driver.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content")
    assert refresh == "10"

    b.nav("カスハラ集計", "report-this-month")
    assert b.heading().startswith("カスハラ集計")
    b.go("/report?month=2025-11", "report")  # the month the calls were made in
    assert b.heading() == "カスハラ集計 2025-11"
    plot = b.by_id("plot").find_element(By.TAG_NAME, "svg")
    assert plot.size["height"] > 100 and len(plot.find_elements(By.TAG_NAME, "rect")) == 2
    total = b.by_id("total").text.split()
    assert total == ["合計", "4", "4", "2", "2", "0", "0"], total  # calls, marked, per category, holds, exports
    assert "ダイヤルイン" in b.by_id("counts").text
    assert not any(caller in b.by_id("counts").text for caller in CALLERS)

    b.go(f"/calls/{first}", "call-kanri")
    form = b.driver.find_element(By.CSS_SELECTOR, "form[action$='/withdraw']")
    form.find_element(By.NAME, "reason").send_keys("別の通話と取り違えた")
    b.click(form.find_element(By.TAG_NAME, "button"), "withdrawn")
    assert "別の通話と取り違えた" in b.by_id("mark-list").text and not b.has("evidence")
    for shot in b.taken:
        assert shot.stat().st_size > 10_000, shot
