"""Central search on a real PostgreSQL with two sites synced (tests/central_console.py): the
local search's statement in PostgreSQL's dialect with a site filter, the same candidates and
scores as each site's own search, tombstones that say whose they were, one call by (site, id),
the sites' sync status with its lag, and `callrec central search`."""
from __future__ import annotations

import json
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from storage.central_link import Centre, connect
from storage.central_search import COLUMNS, CentralSearch, SiteRow, central_statement, site_status
from storage.index import CallIndex
from storage.layout import INDEX_FILE
from storage.search import CallQuery, QueryError, Statement, find, statement
from tests.central_console import BULK, KUMAMOTO, TwoSites, two_sites
from tests.central_pg import PostgresServer
from tests.interop import run_cli

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = 1_800_000_000.0
EVERYTHING = CallQuery(start=0.0)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSites]:
    server = PostgresServer(prefix="cconsole-pg-")
    try:
        server.start()
        yield two_sites(server, tmp_path_factory.mktemp("cconsole-sites"))
    finally:
        server.remove()


@pytest.fixture
def search(sites: TwoSites) -> Iterator[CentralSearch]:
    centre = Centre(connect(sites.dsn))
    try:
        yield CentralSearch(centre, TOKYO)
    finally:
        centre.close()


def test_the_statement_is_the_local_one_in_postgresql_dialect_with_a_site_filter() -> None:
    query = CallQuery(around=1_780_000_030.0, remote_number="03-1234-5678")
    local = statement(query, COLUMNS)
    every, some = central_statement(query), central_statement(query, ["site-a", "site-b"])
    assert every.sql == local.sql.replace("%", "%%").replace("?", "%s") + ", site" and every.params == local.params
    assert some.sql.startswith(f"SELECT {', '.join(COLUMNS)} FROM calls WHERE site = ANY(%s) AND ")
    assert some.sql.endswith(every.sql.partition(" WHERE ")[2]) and some.params == (["site-a", "site-b"], *local.params)


def test_a_number_over_all_time_is_asked_in_a_form_the_indexes_answer() -> None:
    """"Ends with" as the reversed number's prefix, "is the end of" as one of the number's ends."""
    untimed = central_statement(CallQuery(local_number="2502"), ["site-b"])
    assert "LIKE ('%" not in untimed.sql and "?" not in untimed.sql
    assert "(reverse(local_number) LIKE %s OR local_number = ANY(%s) OR extension = %s)" in untimed.sql
    assert untimed.params == (["site-b"], "2052%", ["2502", "502", "02", "2", ""], "2502")


def test_the_rewritten_number_match_finds_what_the_local_one_finds(search: CentralSearch) -> None:
    """The LIKE of the local statement, run as it is (only put in PostgreSQL's dialect), and the
    indexed form select the same rows at the centre."""
    for query in (CallQuery(remote_number="0300000007"), CallQuery(remote_number="300000007"),
                  CallQuery(local_number="2502"), CallQuery(local_number="0263000000")):
        local = statement(query, ("*",))
        as_written = search._rows(Statement(local.sql.replace("%", "%%").replace("?", "%s"), local.params))
        assert as_written and {r.id for r in as_written} == {r.id for r in search._facts(central_statement(query))}


def _local(sites: TwoSites, site: str, query: CallQuery) -> set[tuple[str, str, int]]:
    index = CallIndex(sites.data(site) / INDEX_FILE)
    try:
        return {(site, c.row.id, c.score) for c in find(index, query, tz=TOKYO, now=NOW).candidates}
    finally:
        index.close()


@pytest.mark.parametrize("query", [EVERYTHING, CallQuery(around=1_780_000_030.0, window_seconds=20,
                                                           duration_seconds=60),
                                   CallQuery(remote_number="0300000007"), CallQuery(local_number="2502")],
                         ids=["everything", "around-a-time", "outside-number", "extension"])
def test_every_site_is_searched_and_ranked_as_each_site_ranks_its_own(sites: TwoSites, search: CentralSearch,
                                                                      query: CallQuery) -> None:
    found = search.find(query, now=NOW)
    assert {(c.row.site, c.row.id, c.score) for c in found.candidates} == (
        _local(sites, "site-a", query) | _local(sites, "site-b", query))
    assert [c.score for c in found.candidates] == sorted((c.score for c in found.candidates), reverse=True)
    assert all(isinstance(c.row, SiteRow) and c.row.audio_path is None for c in found.candidates)


def test_everything_from_both_sites_with_site_a_s_tombstone(sites: TwoSites, search: CentralSearch) -> None:
    found = search.find(EVERYTHING, now=NOW)
    by_site = {site: {c.row.id for c in found.candidates if c.row.site == site} for site in ("site-a", "site-b")}
    assert sites.held["site-a"] in by_site["site-a"] and sites.held["site-b"] in by_site["site-b"]
    assert len(by_site["site-b"]) == 1 + BULK
    assert found.erased and {site for site, _ in found.erased} == {"site-a"}
    for _, tomb in found.erased:
        assert "retention" in tomb.sentence and tomb.erased_at
    shown = found.as_dict()
    assert shown["sites"] == "all" and {c["site"] for c in shown["candidates"]} == {"site-a", "site-b"}
    assert {e["site"] for e in shown["erased"]} == {"site-a"}


def test_a_site_filter_keeps_to_its_sites(search: CentralSearch) -> None:
    only_b = search.find(EVERYTHING, sites=["site-b"], now=NOW)
    assert {c.row.site for c in only_b.candidates} == {"site-b"} and not only_b.erased
    assert not search.find(EVERYTHING, sites=["nowhere"], now=NOW).candidates
    with pytest.raises(QueryError, match="a time or a number"):
        search.find(CallQuery(direction="inbound"))


def test_one_call_by_site_and_id(sites: TwoSites, search: CentralSearch) -> None:
    held = search.call("site-b", sites.held["site-b"])
    assert held is not None and held.site == "site-b" and held.held and held.hold_reason == "情報公開請求 site-b"
    assert held.started_at.endswith("+09:00") and held.sealed
    assert search.call("site-a", sites.held["site-b"]) is None  # the right id at the wrong site
    erased = [c for c in sites.calls("site-a") if c["id"] != sites.held["site-a"]]
    assert not erased  # `calls list` hides the erased: take it from the centre's tombstone instead
    tomb = search.find(EVERYTHING, sites=["site-a"], now=NOW).erased[0][1]
    row = search.call("site-a", tomb.id)
    assert row is not None and row.erased_reason == "retention" and row.remote_number is None


def test_the_sites_sync_status_and_lag(search: CentralSearch) -> None:
    shown = {s["site"]: s for s in search.sites()}
    assert set(shown) == {"site-a", "site-b"}
    assert all(s["backlog"] == 0 and s["lag_seconds"] == 0.0 and not s["lagging"] for s in shown.values())
    assert shown["site-b"]["calls"] == 1 + BULK
    cut_off = {**shown["site-a"], "backlog": 40, "oldest_pending": "2026-12-07T10:00:00+00:00"}
    at = 1_796_637_600.0  # 2026-12-07 10:00 UTC
    assert site_status(cut_off, at + 60)["lag_seconds"] == 60.0 and not site_status(cut_off, at + 60)["lagging"]
    assert site_status(cut_off, at + 3600)["lagging"]
    assert not site_status(cut_off, at + 3600, warn_after=7200)["lagging"]


def test_callrec_central_search(sites: TwoSites) -> None:
    base = ("central", "search", "--dsn", sites.dsn, "--policy", KUMAMOTO)
    said = run_cli(*base, "--number", "03-0000-0007").stdout
    assert "every site" in said and "site site-b" in said and "b-0000007" in said and "site site-a" not in said
    answer = json.loads(run_cli(*base, "--from", "2000-01-01", "--site", "site-a", "--json").stdout)
    assert answer["sites"] == ["site-a"] and {c["site"] for c in answer["candidates"]} == {"site-a"}
    assert answer["erased"] and answer["erased"][0]["site"] == "site-a"
    refused = run_cli(*base, "--direction", "inbound", check=False)
    assert refused.returncode != 0 and "a time or a number" in refused.stderr




def test_callrec_central_search_a_page_at_a_time(sites: TwoSites, search: CentralSearch) -> None:
    """--limit candidates from --page on, the rest said in words (ほかN件) and in the JSON; the
    pages are the slices of the whole answer, which `--limit 0` prints."""
    base = ("central", "search", "--dsn", sites.dsn, "--policy", KUMAMOTO, "--from", "2000-01-01")
    whole = [(c.row.site, c.row.id) for c in search.find(EVERYTHING, now=NOW).candidates]
    assert len(whole) > 12
    second = json.loads(run_cli(*base, "--limit", "5", "--page", "2", "--json").stdout)
    assert [(c["site"], c["id"]) for c in second["candidates"]] == whole[5:10]
    assert second["candidates_total"] == len(whole) and second["start"] == 5 and second["more"] == len(whole) - 10
    assert f"ほか{len(whole) - 10}件" in second["shown"]
    said = run_cli(*base, "--limit", "5", "--page", "2").stdout
    assert f"Shown: candidates 6-10 of {len(whole)}; {len(whole) - 10} more (ほか{len(whole) - 10}件)." in said
    assert "--page 3 shows the next 5" in said and "\n  6. " in said and "\n  5. " not in said
    everything = json.loads(run_cli(*base, "--limit", "0", "--json").stdout)
    assert len(everything["candidates"]) == len(whole) and everything["more"] == 0 and everything["shown"] == ""
    refused = run_cli(*base, "--limit", "0", "--page", "2", check=False)
    assert refused.returncode != 0 and "leave out --page" in refused.stderr
