"""The console as a person sees it: a real headless Chromium, driven by Selenium, walks each
role's path on the 熊本市 and さいたま example policies and checks what the screens SHOW (the
texts of the elements the templates name by id) and what they refuse.

What plain HTTP cannot catch is caught here: the browser's own requests (a favicon fetched
behind the person's back), cookies as a browser keeps them (SameSite=Strict, HttpOnly), the
waveform image really decoding, the player pointing at audio the browser can load.  Every
screen visited is saved as a PNG under the test's tmp_path (screens/NN-name.png), kept as a
test artefact to look at.

The browser is Debian's `chromium` and `chromium-driver`, used from /usr/bin and nowhere else
(Selenium Manager never downloads anything).  A machine without them fails these tests,
saying what to install: they are never skipped.  Nothing here needs root.
"""
from __future__ import annotations

import hashlib
import json
import re
import socketserver
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.console_site import PASSWORD, ConsoleSite
from tests.interop import calls, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KUMAMOTO = {"kanri": "manager", "sato": "requester", "audit": "auditor"}
SAITAMA = {"kimura": "manager", "staff1": "staff", "vendor": "contractor"}
WAIT = 15.0
FORBIDDEN_JA = "この操作は許可されていません"
DAEMON_DOWN_JA = "録音装置の応答がありません"


def chromium(profile: Path) -> WebDriver:
    """Headless Chromium from Debian's packages, with a fresh profile, touching no network."""
    for needed, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: the browser tests need Debian's {package} package "
                        "(apt-get install chromium chromium-driver, as the README's test command does)",
                        pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
                     "--window-size=1280,1000", "--lang=ja-JP"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        pytest.fail(f"cannot start {CHROMIUM} through {CHROMEDRIVER}: {exc.msg}", pytrace=False)



def _left(page: WebElement) -> bool:
    """Whether the browser has left the page `page` was the root of.  Mid-navigation Chromium may
    answer "Node with given id does not belong to the document" instead of a stale reference:
    the same news, in other words."""
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False

class Browser:
    """One person at one browser: goes to pages, fills forms, reads what is shown, and keeps a
    screenshot of every screen it reaches."""

    def __init__(self, driver: WebDriver, site: ConsoleSite, shots: Path) -> None:
        self.driver, self.site, self.shots = driver, site, shots
        self.taken: list[Path] = []

    # moving about -------------------------------------------------------------------------
    def go(self, path: str, name: str) -> None:
        self.driver.get(self.site.base + path)
        self._settled(name)

    def click(self, element: WebElement, name: str) -> None:
        """Click something that loads a new page, and wait until that page is there."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(self.driver, WAIT).until(lambda _: _left(page))
        self._settled(name)

    def press(self, button_id: str, name: str) -> None:
        self.click(self.by_id(button_id), name)

    def nav(self, label: str, name: str) -> None:
        """Follow a link of the header's menu by the words it shows."""
        self.click(self.driver.find_element(By.XPATH, f"//header/nav/a[normalize-space()='{label}']"), name)

    def _settled(self, name: str) -> None:
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        self.shot(name)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(self.taken) + 1:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        self.taken.append(path)
        return path

    # reading -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        assert url.startswith(self.site.base), url
        return url[len(self.site.base):]

    def by_id(self, element_id: str) -> WebElement:
        found = self.driver.find_elements(By.ID, element_id)
        assert found, f"no #{element_id} on {self.path}: {self.heading()!r} {self.message()!r}"
        return found[0]

    def text(self, element_id: str) -> str:
        text: str = self.by_id(element_id).text
        return text

    def has(self, element_id: str) -> bool:
        return bool(self.driver.find_elements(By.ID, element_id))

    def heading(self) -> str:
        found = self.driver.find_elements(By.TAG_NAME, "h1")
        return str(found[0].text) if found else ""

    def message(self) -> str:
        found = self.driver.find_elements(By.ID, "message")
        return str(found[0].text) if found else ""

    def audio(self) -> list[WebElement]:
        return list(self.driver.find_elements(By.TAG_NAME, "audio"))

    # forms ---------------------------------------------------------------------------------
    def fill(self, button_id: str, **fields: str) -> None:
        """Type into (or choose from) the named fields of the form the button submits."""
        form = self.by_id(button_id).find_element(By.XPATH, "./ancestor::form")
        for field, value in fields.items():
            element = form.find_element(By.NAME, field)
            if element.tag_name == "select":
                choice = Select(element)
                if element.find_elements(By.CSS_SELECTOR, "option[value]"):
                    choice.select_by_value(value)
                else:
                    choice.select_by_visible_text(value)
            else:
                element.clear()
                element.send_keys(value)

    def sign_in(self, name: str) -> None:
        self.go("/login", f"login-{name}")
        assert self.heading() == "ログイン"
        self.fill("signin", name=name, password=PASSWORD.format(name))
        self.press("signin", f"status-{name}")
        assert self.path == "/status", (self.path, self.heading(), self.message())
        assert self.text("me").startswith(f"{name}（"), self.text("me")

    def sign_out(self) -> None:
        self.click(self.driver.find_element(By.CSS_SELECTOR, "header form.who button"), "signed-out")
        assert self.path == "/login"
        assert not self.driver.get_cookie("callrec_session"), "the session cookie is gone"

    def session_cookie(self) -> str:
        cookie = self.driver.get_cookie("callrec_session")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
        return str(cookie["value"])

    def refused(self, what: str) -> str:
        """The page is the console's refusal, sent as a 403; returns its message (the rule and
        its clause)."""
        assert self.heading() == FORBIDDEN_JA, (self.path, self.heading(), self.message())
        assert what in self.message(), self.message()
        with pytest.raises(urllib.error.HTTPError) as refusal:
            fetch(self, self.path)
        assert refusal.value.code == 403, refusal.value
        return self.message()


@pytest.fixture()
def screens(tmp_path: Path) -> Path:
    folder = tmp_path / "screens"
    folder.mkdir()
    return folder


def open_site(tmp_path: Path, organisation: str, people: dict[str, str]) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, organisation, people)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
def kumamoto(tmp_path: Path) -> Iterator[ConsoleSite]:
    yield from open_site(tmp_path, "kumamoto", KUMAMOTO)


@pytest.fixture()
def saitama(tmp_path: Path) -> Iterator[ConsoleSite]:
    yield from open_site(tmp_path, "saitama", SAITAMA)


def browse(site: ConsoleSite, tmp_path: Path, screens: Path) -> Iterator[Browser]:
    driver = chromium(tmp_path / "profile")
    try:
        yield Browser(driver, site, screens)
    finally:
        driver.quit()


@pytest.fixture()
def at_kumamoto(kumamoto: ConsoleSite, tmp_path: Path, screens: Path) -> Iterator[Browser]:
    yield from browse(kumamoto, tmp_path, screens)


@pytest.fixture()
def at_saitama(saitama: ConsoleSite, tmp_path: Path, screens: Path) -> Iterator[Browser]:
    yield from browse(saitama, tmp_path, screens)


def fetch(browser: Browser, path: str) -> tuple[int, str, bytes]:
    """GET with the browser's own session cookie (copied from the driver), as its player would."""
    ask = urllib.request.Request(browser.site.base + path,
                                 headers={"Cookie": f"callrec_session={browser.session_cookie()}"})
    with urllib.request.urlopen(ask, timeout=30) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read()


def file_request(b: Browser, call_id: str, *, purpose: str, wanted: str, name: str) -> str:
    """From the search screen to a filed request, as the requester does it; its number."""
    b.nav("通話検索", f"search-{name}")
    assert b.heading() == "通話検索" and not b.has("results")
    b.fill("find", at="2025-11-25 01:00", window="2h", number="03-1234-5678")
    b.press("find", f"found-{name}")
    assert b.path.startswith("/calls?")
    assert b.text("answer"), "the search says what it found"
    results = b.by_id("results")
    assert "0312345678" in results.text and "着信" in results.text
    b.click(results.find_element(By.LINK_TEXT, "2025-11-25T01:00:00"), f"call-{name}")
    assert b.path == f"/calls/{call_id}" and b.heading() == f"通話 {call_id}"
    b.fill("file", department="市民課", purpose=purpose, wanted=wanted, details="11月25日 1時頃の着信")
    b.press("file", f"filed-{name}")
    assert b.path.startswith("/requests/R"), b.path
    number = b.path.rsplit("/", 1)[1]
    assert b.heading() == f"依頼・申請 {number}"
    assert b.text("state") == "依頼中"
    assert "市民課" in b.text("request") and call_id in b.text("request")
    return number


class StandInDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The daemon's status socket, answering a document of the shape `Daemon.status()` writes
    (one JSON line per connection), so the status screen can be seen with a recorder running."""

    daemon_threads = True

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.document = document
        outer = self

        class Answer(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(json.dumps(outer.document, ensure_ascii=False).encode() + b"\n")

        super().__init__(str(path), Answer)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        Path(str(self.server_address)).unlink(missing_ok=True)


def daemon_document(**changes: Any) -> dict[str, Any]:
    now = time.time()
    return {"healthy": True, "problems": [], "warnings": [], "recording_stopped": None, "announcer_calls": 1,
            "active_calls": 2, "packets_per_second": 100.0, "kernel_drops": 0, "disk_used_percent": 12.5,
            "store_bytes": 3 * 2**30, "capacity_bytes": 200 * 2**30, "last_sip": now - 5, "last_rtp": now - 1,
            "interfaces": ["eth1"], "policy": "policies/kumamoto.yaml", "uptime_seconds": 3600, **changes}


def test_the_status_screen_shows_what_the_daemon_reports(at_kumamoto: Browser) -> None:
    b, site = at_kumamoto, at_kumamoto.site
    b.sign_in("kanri")
    assert b.text("health") == DAEMON_DOWN_JA and not b.has("active")
    daemon = StandInDaemon(site.data / "status.sock", daemon_document())
    try:
        b.nav("稼働状況", "status-healthy")
        assert b.text("health") == "正常に録音しています"
        assert "good" in (b.by_id("health").get_attribute("class") or "")
        assert b.text("active") == "2" and b.text("today").isdigit()
        assert b.text("disk") == "12.5% ・ 録音 3,072 MiB / 204,800 MiB", b.text("disk")
        charts = b.driver.find_elements(By.CSS_SELECTOR, "div.plot svg")
        assert len(charts) == 2 and all(chart.size["height"] > 100 for chart in charts)
        daemon.document = daemon_document(healthy=False, kernel_drops=12, problems=[
            {"code": "kernel_drops", "message": "the kernel dropped 12 packets since the last check: calls may "
                                                "have gaps"}])
        b.nav("稼働状況", "status-unhealthy")
        assert b.text("health") == "異常があります"
        assert "bad" in (b.by_id("health").get_attribute("class") or "")
        problems = b.driver.find_element(By.XPATH, "//h2[.='異常']/following-sibling::ul[1]").text
        assert problems.startswith("kernel_drops: the kernel dropped 12 packets"), problems
    finally:
        daemon.stop()
    b.nav("稼働状況", "status-daemon-gone")
    assert b.text("health") == DAEMON_DOWN_JA


def test_a_copy_request_from_search_to_download_then_a_hold_and_the_ledger(at_kumamoto: Browser) -> None:
    b, site = at_kumamoto, at_kumamoto.site
    call_id = site.call["id"]

    b.sign_in("sato")
    assert b.text("health") == DAEMON_DOWN_JA, "no daemon runs in this test, and the screen says so"
    assert b.text("me") == "sato（requester）"
    number = file_request(b, call_id, purpose="disclosure", wanted="copy", name="sato")
    assert not b.has("approve") and not b.has("fulfil"), "the requester decides nothing"
    assert b.audio() == []
    b.sign_out()

    b.sign_in("kanri")
    b.nav("依頼・申請", "requests-kanri")
    listed = b.by_id("requests")
    row = listed.find_element(By.XPATH, f".//tr[td/a[normalize-space()='{number}']]")
    assert "依頼中" in row.text and "sato" in row.text and "市民課" in row.text
    b.click(row.find_element(By.LINK_TEXT, number), "request-kanri")
    b.fill("approve", reason="開示請求のため")
    b.press("approve", "approved-kanri")
    assert b.text("state") == "承認済み"
    assert "kanri" in b.text("request") and "開示請求のため" in b.text("request")
    assert not b.has("approve")
    b.fill("fulfil", holder="市民課 佐藤")
    b.press("fulfil", "fulfilled-kanri")
    assert b.text("state") == "実行済み"
    copies = b.by_id("copies")
    assert "市民課 佐藤" in copies.text and "目的達成時" in copies.text, copies.text
    download = copies.find_element(By.LINK_TEXT, "ダウンロード")
    link = download.get_attribute("href") or ""
    assert link.startswith(f"{site.base}/copies/") and link.endswith("/package"), link
    status, kind, body = fetch(b, link[len(site.base):])
    assert (status, kind) == (200, "application/zip") and body[:2] == b"PK"
    assert b.audio() == [], "a copy request has no player"

    b.click(b.by_id("request").find_element(By.LINK_TEXT, call_id), "call-kanri")
    assert b.heading() == f"通話 {call_id}"
    facts = b.text("facts")
    assert site.call["sha256"] in facts and "0312345678" in facts and "着信" in facts
    wave = b.driver.find_element(By.CSS_SELECTOR, "img.wave")
    WebDriverWait(b.driver, WAIT).until(lambda d: d.execute_script("return arguments[0].complete", wave))
    width = b.driver.execute_script("return arguments[0].naturalWidth", wave)
    assert width and width > 0, "the waveform image was loaded and decoded by the browser"
    assert wave.size["width"] > 600 and wave.is_displayed()
    assert b.by_id("hold").text == "保全する"
    b.fill("hold", reason="開示請求に備えて保全")
    b.press("hold", "held-kanri")
    assert b.path == f"/calls/{call_id}"
    held = b.driver.find_element(By.XPATH, "//table[@id='facts']//tr[th='保全中']/td").text
    assert "開示請求に備えて保全" in held, held
    assert b.by_id("hold").text == "保全を解除する"
    assert calls(site.data)[0]["held"]

    b.nav("通話記録管理簿", "ledger-kanri")
    assert b.heading() == "通話記録管理簿" and not b.has("chain")
    entries = b.text("entries")
    for event in ("request_filed", "request_approved", "copy_made", "request_fulfilled", "hold_added"):
        assert event in entries, event
    b.press("verify", "ledger-verified-kanri")
    assert b.text("chain") == "管理簿の連鎖は正常です"
    assert "good" in (b.by_id("chain").get_attribute("class") or "")


def test_the_auditor_reads_the_ledger_and_the_requester_is_refused_the_managers_screens(
        at_kumamoto: Browser) -> None:
    b, site = at_kumamoto, at_kumamoto.site
    b.sign_in("audit")
    b.nav("通話記録管理簿", "ledger-audit")
    assert "login" in b.text("entries") and "user_added" in b.text("entries")
    b.fill("verify", actor="audit")
    b.click(b.by_id("verify").find_element(By.XPATH, "../button[not(@name)]"), "ledger-filtered-audit")
    assert b.path.startswith("/ledger?")
    for row in b.by_id("entries").find_elements(By.XPATH, ".//tr[td]"):
        assert row.find_elements(By.TAG_NAME, "td")[3].text == "audit", row.text
    b.press("verify", "ledger-verified-audit")
    assert b.text("chain") == "管理簿の連鎖は正常です"
    b.go(f"/calls/{site.call['id']}", "call-refused-audit")
    assert "熊本市 第8条" in b.refused("may not search")
    assert b.driver.find_elements(By.CSS_SELECTOR, "img.wave") == []
    b.go("/users", "users-refused-audit")
    b.refused("may not manage_users")
    b.sign_out()

    b.sign_in("sato")
    b.go("/users", "users-refused-sato")
    assert "熊本市 第2条(5)" in b.refused("may not manage_users")
    assert not b.has("adduser") and not b.has("users")
    b.go("/ledger", "ledger-refused-sato")
    b.refused("may not read_ledger")
    assert not b.has("entries") and not b.has("verify")
    refusals = [e for e in site.ledger() if e["event"] == "refused_action" and e["actor"] in ("sato", "audit")]
    assert len(refusals) >= 4, "every refusal shown is in the ledger too"


def test_the_language_switch_shows_english_labels_and_back(at_kumamoto: Browser) -> None:
    b = at_kumamoto
    b.go("/login", "login-ja")
    assert b.driver.find_element(By.CSS_SELECTOR, "a.lang").text == "English"
    b.click(b.driver.find_element(By.CSS_SELECTOR, "a.lang"), "login-en")
    assert b.heading() == "Sign in" and b.by_id("signin").text == "Sign in"
    b.fill("signin", name="kanri", password=PASSWORD.format("kanri"))
    b.press("signin", "status-en")
    assert b.heading() == "Status" and b.text("health") == "The recorder does not answer"
    menu = [a.text for a in b.driver.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert menu == ["Status", "Harassment alerts", "Harassment report", "Find calls", "Requests", "Copies", "Ledger",
                    "Users", "Policy"], menu
    assert b.driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    b.nav("Find calls", "search-en")
    labels = [label.text.strip() for label in b.driver.find_elements(By.CSS_SELECTOR, "form.search label")]
    assert labels[:4] == ["About when", "Either side", "About how long", "Other party's number"], labels
    assert b.by_id("find").text == "Find"
    b.click(b.driver.find_element(By.CSS_SELECTOR, "a.lang"), "back-to-ja")
    assert b.driver.find_element(By.CSS_SELECTOR, "a.lang").text == "English"
    assert b.driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ja"
    menu = [a.text for a in b.driver.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert menu == ["稼働状況", "カスハラ通報", "カスハラ集計", "通話検索", "依頼・申請", "複製データ", "通話記録管理簿",
                    "利用者", "運用方針"], menu
    b.nav("通話検索", "search-ja")
    assert b.heading() == "通話検索" and b.by_id("find").text == "検索"


def test_saitama_never_puts_a_player_on_the_screen(at_saitama: Browser) -> None:
    """さいたま 第4条1: recordings are not listened to on the device, even once a request is
    approved and instructed; only the exported data is heard."""
    b, site = at_saitama, at_saitama.site
    call_id = site.call["id"]

    b.sign_in("staff1")
    b.go(f"/calls/{call_id}", "call-refused-staff1")
    b.refused("may not search")
    b.sign_out()
    # 広聴課職員 may request but not search, so no screen offers them the form: they file with
    # the command (what the console cannot do for them is in the report).
    filed = run_cli("request", "file", "--data-dir", site.data, "--policy", site.policy, "--user", "staff1",
                    "--department", "広聴課", "--purpose", "article1", "--wanted", "copy", "--call", call_id,
                    input=PASSWORD.format("staff1") + "\n")
    numbered = re.search(r"\bR\d{4}-\d{4}\b", filed.stdout)
    assert numbered, filed.stdout
    number = numbered.group(0)

    b.sign_in("kimura")
    b.go(f"/requests/{number}", "request-kimura")
    assert b.text("state") == "依頼中" and b.audio() == []
    b.press("approve", "approved-kimura")
    assert b.text("state") == "承認済み" and b.audio() == []
    assert not b.has("fulfil"), "the manager instructs; the contractor fulfils"
    b.fill("instruct", to="vendor")
    b.press("instruct", "instructed-kimura")
    assert "vendor" in b.text("request") and b.audio() == []
    b.go(f"/calls/{call_id}", "call-kimura")
    assert b.heading() == f"通話 {call_id}" and b.audio() == []
    assert b.driver.find_elements(By.CSS_SELECTOR, "img.wave"), "the waveform is shown, not the sound"
    b.sign_out()

    b.sign_in("vendor")
    b.go(f"/requests/{number}", "request-vendor")
    assert b.text("state") == "承認済み" and b.audio() == []
    b.go(f"/calls/{call_id}", "call-vendor")
    assert b.audio() == []
    b.go(f"/requests/{number}/listen/{call_id}", "listen-refused-vendor")
    assert "第4条1" in b.refused("not listened to on the device")
    b.go(f"/requests/{number}", "request-vendor-again")
    b.fill("fulfil", holder="運営受託者 保管庫")
    b.press("fulfil", "fulfilled-vendor")
    assert b.text("state") == "実行済み" and b.audio() == []
    assert "ダウンロード" in b.text("copies")
    assert not any(e["event"] == "listened" for e in site.ledger())


def test_kumamoto_plays_an_approved_crime_request_to_the_manager_only(at_kumamoto: Browser) -> None:
    """熊本市 第4条3: played back only when a crime occurred (or the manager finds it needed),
    on an approved request; the player's sound is the sealed recording, byte for byte."""
    b, site = at_kumamoto, at_kumamoto.site
    call_id = site.call["id"]

    b.sign_in("sato")
    number = file_request(b, call_id, purpose="crime", wanted="listen", name="sato")
    assert b.audio() == []
    b.sign_out()

    b.sign_in("kanri")
    b.go(f"/requests/{number}", "request-kanri")
    assert b.text("state") == "依頼中" and b.audio() == [], "nothing is heard before approval"
    b.fill("approve", reason="窃盗事件の捜査")
    b.press("approve", "approved-kanri")
    assert b.text("state") == "承認済み"
    assert not b.has("fulfil"), "listening is fulfilled by playing, not by a copy"
    players = b.audio()
    assert len(players) == 1 and players[0].is_displayed()
    src = players[0].get_attribute("src") or ""
    assert src == f"{site.base}/requests/{number}/listen/{call_id}", src
    b.go(f"/calls/{call_id}", "call-kanri")
    assert [a.get_attribute("src") for a in b.audio()] == [src], "the call page offers the same player"

    status, kind, body = fetch(b, src[len(site.base):])
    assert (status, kind) == (200, "audio/wav")
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert hashlib.sha256(body).hexdigest() == calls(site.data)[0]["sha256"] == site.call["sha256"]
    listened = [e for e in site.ledger() if e["event"] == "listened"]
    assert len(listened) == 1 and listened[0]["actor"] == "kanri"
    assert listened[0]["details"]["sha256"] == site.call["sha256"]

    b.go(f"/requests/{number}", "request-played-kanri")
    assert b.text("state") == "実行済み", "the first play fulfils the request"
    player = b.audio()[0]
    b.driver.execute_script("arguments[0].preload = 'auto'; arguments[0].load();", player)
    WebDriverWait(b.driver, WAIT).until(lambda d: d.execute_script(
        "return arguments[0].readyState >= 1 || arguments[0].error !== null", player))
    error = b.driver.execute_script("return arguments[0].error && arguments[0].error.code", player)
    assert error is None, f"the browser could not load the recording (MediaError {error})"
    duration = b.driver.execute_script("return arguments[0].duration", player)
    assert abs(duration - site.call["duration"]) < 0.1, duration
    b.shot("player-loaded-kanri")
    b.sign_out()

    b.sign_in("sato")
    b.go(f"/requests/{number}", "request-sato")
    assert b.text("state") == "実行済み" and b.audio() == [], "the requester is not the one who plays it"
    b.go(f"/requests/{number}/listen/{call_id}", "listen-refused-sato")
    b.refused("may not fulfil")
