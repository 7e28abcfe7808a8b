"""The console's rules through plain HTTP, as an attacker or a curious colleague would try them:
sign-in, CSRF, another role's URL, forged forms, injection in search fields, a 10 MB form.
Each is refused and nothing changes; what the rules allow works."""
from __future__ import annotations

import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.console_site import PASSWORD, ConsoleSite, csrf_of
from tests.interop import calls
from web.config import WebConfig
from web.tls import server_context

PEOPLE = {"kanri": "manager", "sato": "requester", "audit": "auditor"}


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, "kumamoto", PEOPLE)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
async def anonymous(site: ConsoleSite) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(site.base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def sign_in(http: aiohttp.ClientSession, name: str, password: str | None = None) -> aiohttp.ClientResponse:
    page = await (await http.get("/login")).text()
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token
    return await http.post("/login", data={"login_token": token.group(1), "name": name,
                                           "password": password or PASSWORD.format(name)})


async def person(site: ConsoleSite, name: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(site.base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    response = await sign_in(http, name)
    assert response.status == 200 and str(response.url).endswith("/status"), await response.text()
    return http


async def test_every_page_needs_a_sign_in_and_a_bad_password_is_ledgered(site: ConsoleSite,
                                                                         anonymous: aiohttp.ClientSession) -> None:
    for path in ("/status", "/calls", f"/calls/{site.call['id']}", "/requests", "/ledger", "/users"):
        response = await anonymous.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login", path
    response = await anonymous.post("/requests", data={"department": "x"}, allow_redirects=False)
    assert response.status == 401
    refused = await sign_in(anonymous, "kanri", "not the password")
    assert refused.status == 401
    assert any(e["event"] == "login_failed" and e["actor"] == "kanri" for e in site.ledger())
    no_token = await anonymous.post("/login", data={"name": "kanri", "password": PASSWORD.format("kanri")})
    assert no_token.status == 403, "a sign-in post without the form's token is refused"


async def test_a_signed_in_manager_walks_status_search_call_and_hold(site: ConsoleSite) -> None:
    http = await person(site, "kanri")
    async with http:
        status = await (await http.get("/status")).text()
        assert "録音装置の応答がありません" in status and "<svg" in status, "no daemon runs in this test"
        found = await (await http.get("/calls", params={"at": "2025-11-25 01:00", "window": "2h",
                                                         "number": "03-1234-5678"})).text()
        assert site.call["id"] in found
        page = await (await http.get(f"/calls/{site.call['id']}")).text()
        assert site.call["sha256"] in page and "waveform.svg" in page
        svg = await http.get(f"/calls/{site.call['id']}/waveform.svg")
        assert svg.status == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
        assert "polyline" in await svg.text()
        forged = await http.post(f"/calls/{site.call['id']}/hold", data={"action": "add", "reason": "x",
                                                                         "csrf": "forged"})
        assert forged.status == 403
        missing = await http.post(f"/calls/{site.call['id']}/hold", data={"action": "add", "reason": "x"})
        assert missing.status == 403
        assert not calls(site.data)[0]["held"], "a forged or tokenless post changed nothing"
        held = await http.post(f"/calls/{site.call['id']}/hold", data={"action": "add", "reason": "開示請求",
                                                                       "csrf": csrf_of(page)})
        assert held.status == 200
        assert calls(site.data)[0]["held"]
        entry = [e for e in site.ledger() if e["event"] == "hold_added"][0]
        assert (entry["actor"], entry["details"]["role"]) == ("kanri", "manager")


async def test_another_roles_pages_and_forms_are_refused_on_the_server(site: ConsoleSite) -> None:
    http = await person(site, "sato")
    async with http:
        page = await (await http.get("/status")).text()
        token = csrf_of(page)
        for path in ("/users", "/ledger", "/ledger/book.csv"):
            assert (await http.get(path)).status == 403, path
        add = await http.post("/users", data={"csrf": token, "name": "evil", "role": "manager",
                                              "password": "x" * 16})
        assert add.status == 403
        filed = await http.post("/requests", data={"csrf": token, "call": site.call["id"], "department": "市民課",
                                                   "purpose": "disclosure", "wanted": "copy"})
        assert filed.status == 200
        number = str(filed.url).rsplit("/", 1)[1]
        approve = await http.post(f"/requests/{number}/approve", data={"csrf": token})
        assert approve.status == 403
        hold = await http.post(f"/calls/{site.call['id']}/hold", data={"csrf": token, "action": "add", "reason": "x"})
        assert hold.status == 403
    assert [u for u in site.ledger() if u["event"] == "user_added" and u["details"]["user"] == "evil"] == []
    assert all(e["event"] != "request_approved" for e in site.ledger())
    refusals = [e for e in site.ledger() if e["event"] == "refused_action" and e["actor"] == "sato"]
    assert len(refusals) >= 4


async def test_the_auditor_reads_the_ledger_but_hears_and_holds_nothing(site: ConsoleSite) -> None:
    http = await person(site, "audit")
    async with http:
        ledger = await (await http.get("/ledger", params={"verify": "1"})).text()
        assert "管理簿の連鎖は正常です" in ledger
        book = await http.get("/ledger/book.csv")
        assert book.status == 200 and (await book.read()).startswith("\ufeff".encode())
        assert (await http.get(f"/calls/{site.call['id']}")).status == 403
        assert (await http.get(f"/calls/{site.call['id']}/waveform.svg")).status == 403


async def test_hostile_input_is_refused_without_a_trace(site: ConsoleSite) -> None:
    http = await person(site, "kanri")
    async with http:
        for number in ("' OR 1=1 --", "0312345678'; DROP TABLE calls; --", "%00", "<script>x</script>"):
            response = await http.get("/calls", params={"number": number, "at": "2025-11-25 01:00"})
            assert response.status in (200, 400), number
            assert "<script>x</script>" not in await response.text()
        for path in ("/calls/..%2F..%2Fetc%2Fpasswd", "/calls/%2e%2e/%2e%2e/etc/passwd",
                     "/requests/..%2Findex.sqlite3"):
            response = await http.get(path)
            assert response.status in (400, 404), path
            assert "root:" not in await response.text()
        page = await (await http.get("/status")).text()
        huge = await http.post(f"/calls/{site.call['id']}/hold",
                               data={"csrf": csrf_of(page), "action": "add", "reason": "x" * (10 << 20)})
        assert huge.status == 413
    assert len(calls(site.data)) == 1 and not calls(site.data)[0]["held"]


async def test_sign_out_ends_the_session_on_the_server(site: ConsoleSite) -> None:
    http = await person(site, "kanri")
    async with http:
        page = await (await http.get("/status")).text()
        cookie = http.cookie_jar.filter_cookies(URL(site.base))["callrec_session"].value
        await http.post("/logout", data={"csrf": csrf_of(page)})
    async with aiohttp.ClientSession(site.base, cookies={"callrec_session": cookie}) as replay:
        response = await replay.get("/status", allow_redirects=False)
        assert response.status == 303, "a copied cookie is dead once its session ended"
    events = [e["event"] for e in site.ledger()]
    assert "login" in events and "logout" in events


def test_tls_with_a_self_signed_certificate_made_on_first_start(tmp_path: Path) -> None:
    running = ConsoleSite(tmp_path, "kumamoto", {"kanri": "manager"}, tls=True)
    try:
        cert = tmp_path / "data" / "web" / "console.crt"
        key = tmp_path / "data" / "web" / "console.key"
        assert cert.exists() and key.stat().st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with urllib.request.urlopen(f"{running.base}/login", context=context, timeout=10) as page:
            assert page.status == 200
            assert "Secure" in page.headers["Set-Cookie"]
    finally:
        running.stop()


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="only a loopback address"):
        server_context(WebConfig(listen="192.0.2.5", plain_http=True), Path("/nonexistent"))


async def test_the_language_switch_returns_to_the_page_and_never_off_site(site: ConsoleSite,
                                                                          anonymous: aiohttp.ClientSession) -> None:
    for target, expected in (("/calls?at=x", "/calls?at=x"), ("//evil.example/", "/status"),
                             ("https://evil.example/", "/status"), ("/\\evil.example", "/status")):
        response = await anonymous.get("/lang/en", params={"next": target}, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == expected, target
