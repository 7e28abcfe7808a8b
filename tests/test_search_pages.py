"""The fast search path answers exactly as the plain one, on SQLite and on a real PostgreSQL.

The plain path reads every row of the window whole and ranks them all (`rank` over CallRows,
nothing pruned): what the search did before pages.  The fast path (`find`, `CentralSearch.find`)
ranks tuples of the columns ranking reads, counts in SQL the rows the form's number, extension
or direction rules out, and reads whole only the page shown.  Over generated rows and forms
(numbers in every shape the matching has a rule for, withheld and missing ones, extensions,
unknown directions, calls in progress, erased rows, equal times at two sites), every page of the
fast answer is the slice of the plain one: the same rows, scores, reasons, order, tombstones,
count of others and words; and every row the SQL counts out is one `_marks` rules out."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from storage.central_link import Centre, connect
from storage.central_schema import migrate
from storage.central_search import COLUMNS, CentralSearch, at_centre
from storage.central_sync import Batch, central_row
from storage.index import CallIndex, call_row, iso
from storage.index import connect as connect_index
from storage.search import CallQuery, SearchResult, _marks, excluded, find, nearest, rank, statement, time_only
from tests.central_pg import PostgresServer

TOKYO = ZoneInfo("Asia/Tokyo")
BASE = 1_795_000_000.0
NOW = BASE + 86400
CALLER = "0312345678"
REMOTES = (CALLER, "0" + CALLER, CALLER[-8:], CALLER[-6:], CALLER[-5:], "180312345678", "x312345678", "0398765432",
           "5678", "anonymous", "", None, None)
LOCALS = ("0963281234", "81234", "1234", "234", "34", "0963289999", "2502", "", None)
EXTENSIONS = ("1234", "2502", "301", "", None, None)
WRITTEN_REMOTES = ("03-1234-5678", "+81 3 1234 5678", "12345678", "345678", "45678", "5678", "anonymous",
                   "0398765432", "180312345678")
WRITTEN_LOCALS = ("0963281234", "81234", "1234", "234", "34", "2502", "301")
DIRECTIONS = ("inbound", "outbound", "internal", "unknown")
SITES = ("site-a", "site-b")
ROWS = 400
PAGES = ((None, 0), (5, 0), (5, 5), (1, 3), (50, 0), (0, 0), (7, 10_000), (3, 40))


@dataclass
class Sites:
    indexes: dict[str, CallIndex]
    search: CentralSearch


def generate(index: CallIndex, site: int) -> None:
    """Rows of every shape within two hours of BASE; every site shares a tenth of its times and
    ids with the other (ties the order must keep), and an eighth are erased."""
    rng = random.Random(100 + site)
    shared = random.Random(7)
    for n in range(ROWS):
        common = shared.random() < 0.1
        at = round(BASE + (shared if common else rng).uniform(-7200, 7200), 1)
        call_id = f"c{n:04d}" if common else f"s{site}-{n:04d}"
        duration = None if rng.random() < 0.05 else round(rng.uniform(5, 1200), 1)
        state = "recording" if rng.random() < 0.05 else "sealed"
        remote, local = rng.choice(REMOTES), rng.choice(LOCALS)
        index.insert(id=call_id, sip_call_id=f"{call_id}@pbx", started_at=iso(at - 3, TOKYO), answered_at=iso(at, TOKYO),
                     ended_at=iso(at + duration, TOKYO) if duration is not None else None, duration=duration,
                     direction=rng.choice(DIRECTIONS), local_number=local, remote_number=remote, caller=remote,
                     callee=local, caller_withheld=remote is None and rng.random() < 0.7, state=state,
                     complete=state == "sealed", recorded_at=at, extension=rng.choice(EXTENSIONS))
        if rng.random() < 0.125:
            index.mark_erased(call_id, iso(at + 400 * 86400, TOKYO), rng.choice(("retention", "capacity")))
    for at, call_id in ties(site):
        index.insert(id=call_id, sip_call_id=f"{call_id}@pbx", started_at=iso(at - 3, TOKYO),
                     answered_at=iso(at, TOKYO), ended_at=iso(at + 60, TOKYO), duration=60.0, direction="inbound",
                     local_number=None, remote_number=None, caller=None, callee=None, caller_withheld=False,
                     state="sealed", complete=True, recorded_at=at, extension=None)
        if call_id.startswith("gone"):
            index.mark_erased(call_id, iso(at + 400 * 86400, TOKYO), "retention")


def ties(site: int) -> Iterator[tuple[float, str]]:
    """Calls at the same distance on both sides of a form's time (`TIME_ONLY`), several at one
    time, at both sites (the same id and time at each: the site orders them) and at one alone,
    with ids whose order by code point is not their order in a language's collation; the "gone"
    ones erased, so a page of the erased recordings orders equal times too."""
    for k in (0, 3, -5):
        around = BASE + k * 450.0
        for distance in (0.0, 30.0, 30.5, 200.0):
            for side in ((1,) if distance == 0.0 else (-1, 1)):
                for name in ("Z-tie", "a-tie", "tie-é", "tie-f", f"only-{site}", "gone-Z", "gone-a"):
                    yield around + side * distance, f"{name}-{k}-{distance}-{side}"


def forms(count: int) -> Iterator[CallQuery]:
    rng = random.Random(2026)
    for n in range(count):
        shape = n % 4
        at = BASE + rng.uniform(-7200, 7200)
        when: dict[str, Any] = (
            {"around": at, "window_seconds": rng.choice((60, 600, 1800, 5400))} if shape in (0, 1) else
            {"start": at - rng.uniform(0, 7200), "end": at + rng.uniform(0, 3600)} if shape == 2 else {})
        facts: dict[str, Any] = {
            "remote_number": rng.choice(WRITTEN_REMOTES) if shape == 3 or rng.random() < 0.5 else None,
            "local_number": rng.choice(WRITTEN_LOCALS) if rng.random() < 0.3 else None,
            "extension": rng.choice(("1234", "2502", "301")) if rng.random() < 0.2 else None,
            "direction": rng.choice(DIRECTIONS[:3]) if rng.random() < 0.4 else None,
            "duration_seconds": rng.uniform(30, 600) if rng.random() < 0.5 else None,
        }
        if shape == 3 and facts["remote_number"] is None:
            facts["remote_number"] = CALLER
        yield CallQuery(**when, **facts)


TIME_ONLY = (*(CallQuery(around=BASE + k * 450.0, window_seconds=w) for k in range(-16, 17) for w in (60, 1800)),
             CallQuery(start=BASE - 3600, end=BASE + 1800), CallQuery(start=BASE - 600))
"""Forms with a time alone: their pages come from the database's nearest calls (`nearest`), never
the window read whole; times on whole seconds, so calls at the same distance either side tie."""
QUERIES = (*forms(160), *TIME_ONLY)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    folder = tmp_path_factory.mktemp("csearch-pages")
    server = PostgresServer(prefix="csearch-pg-")
    indexes = {name: CallIndex(folder / f"{name}.sqlite3") for name in SITES}
    try:
        server.start()
        centre = Centre(connect(server.dsn))
        migrate(centre.conn)
        for n, (name, index) in enumerate(indexes.items()):
            generate(index, n)
            with closing(connect_index(index.path)) as db:
                rows = [central_row(r, 1) for r in db.execute("SELECT * FROM calls")]
            centre.conn.execute("INSERT INTO sites (site, instance) VALUES (%s, %s)", (name, f"i-{name}"))
            centre.apply(Batch(site=name, instance=f"i-{name}", last_seq=0, rows=rows))
        yield Sites(indexes, CentralSearch(centre, TOKYO))
        centre.close()
    finally:
        for index in indexes.values():
            index.close()
        server.remove()


def plain_local(index: CallIndex, query: CallQuery) -> SearchResult:
    """Every row of the window read whole, nothing pruned, all ranked."""
    with closing(connect_index(index.path)) as db:
        rows = [call_row(r) for r in db.execute(*_args(statement(query, ("*",), prune=False)))]
    return rank(query, rows, tz=TOKYO, now=NOW)


def plain_centre(search: CentralSearch, query: CallQuery) -> SearchResult:
    return rank(query, search._rows(at_centre(statement(query, ("*",), prune=False), None)), tz=TOKYO, now=NOW)


def same_page(fast: SearchResult, plain: SearchResult, limit: int | None, start: int) -> None:
    """The page's candidates and (with a page size) its share of the erased recordings are the
    plain answer's slices; the counts, the answer and the notes are the whole answer's."""
    end = None if limit is None else start + limit
    assert fast.candidates == plain.candidates[start:end]
    erased = plain.erased if limit is None else plain.erased[start:end]
    assert (fast.total, fast.start, fast.erased, fast.others, fast.answer, fast.notes, fast.description) == (
        len(plain.candidates), start, erased, plain.others, plain.answer, plain.notes, plain.description)
    assert fast.more == max(0, len(plain.candidates) - start - len(fast.candidates))
    assert fast.erased_count == len(plain.erased) and fast.as_dict()["erased_total"] == len(plain.erased)
    assert fast.erased_more == (0 if limit is None else max(0, len(plain.erased) - start - len(erased)))
    assert bool(fast.erased_shown) == (len(erased) != len(plain.erased))


def test_every_page_of_the_local_answer_is_the_plain_answer_s_slice(sites: Sites) -> None:
    answered = 0
    for query in QUERIES:
        for index in sites.indexes.values():
            plain = plain_local(index, query)
            answered += bool(plain.candidates) and plain.others > 0
            for limit, start in PAGES:
                same_page(find(index, query, tz=TOKYO, now=NOW, limit=limit, start=start), plain, limit, start)
    assert answered > 40  # the forms pruned something and still found something, many times


def test_every_page_of_the_centre_s_answer_is_the_plain_answer_s_slice(sites: Sites) -> None:
    for query in QUERIES:
        plain = plain_centre(sites.search, query)
        for limit, start in PAGES:
            found = sites.search.find(query, now=NOW, limit=limit, start=start)
            same_page(found.result, plain, limit, start)
            assert all(c.row.site in SITES for c in found.candidates)


def test_a_time_alone_is_answered_from_the_nearest_calls() -> None:
    assert all(time_only(q) for q in TIME_ONLY)
    assert sum(time_only(q) for q in QUERIES) > len(TIME_ONLY)
    page = nearest(TIME_ONLY[0], 10, 5)
    assert page.page.sql.endswith("AND recorded_at >= ? ORDER BY recorded_at, id LIMIT ?")
    assert page.before is not None
    assert page.before.sql.endswith("AND recorded_at < ? ORDER BY recorded_at DESC, id LIMIT ?")
    assert page.page.params[-2:] == page.before.params[-2:] == (TIME_ONLY[0].around, 15)
    period = nearest(TIME_ONLY[-1], 10, 5)
    assert period.before is None and period.page.sql.endswith("ORDER BY recorded_at, id LIMIT ? OFFSET ?")


def test_the_rows_counted_out_in_sql_are_the_ones_ranking_rules_out(sites: Sites) -> None:
    """On both engines: `statement` and `excluded` split the window's rows between them, and
    every row counted out fails a check of `_marks` (the plain rule)."""
    counted = 0
    for query in QUERIES:
        pruned = excluded(query)
        if pruned is None:
            continue
        ids = pruned.sql.replace("SELECT count(*)", "SELECT *", 1)
        for index in sites.indexes.values():
            with closing(connect_index(index.path)) as db:
                out = [call_row(r) for r in db.execute(ids, pruned.params)]
                shipped = db.execute(*_args(statement(query))).fetchall()
                window = db.execute(*_args(statement(query, prune=False))).fetchall()
            assert len(out) + len(shipped) == len(window)
            assert all(_marks(query, row, TOKYO, NOW) is None for row in out)
            counted += len(out)
        central = at_centre(pruned, None)
        out = sites.search._rows(type(central)(central.sql.replace("SELECT count(*)", "SELECT *", 1), central.params))
        assert all(_marks(query, row, TOKYO, NOW) is None for row in out)
        assert len(out) == sum(1 for _ in _local_out(sites, query))
    assert counted > 1000


def _local_out(sites: Sites, query: CallQuery) -> Iterator[str]:
    pruned = excluded(query)
    assert pruned is not None
    for index in sites.indexes.values():
        with closing(connect_index(index.path)) as db:
            yield from (r["id"] for r in db.execute(pruned.sql.replace("SELECT count(*)", "SELECT id", 1),
                                                     pruned.params))


def _args(query: Any) -> tuple[str, tuple[Any, ...]]:
    return query.sql, query.params


def test_a_page_past_the_end_says_how_many_there_are(sites: Sites) -> None:
    index = sites.indexes["site-a"]
    everything = find(index, CallQuery(start=0.0), tz=TOKYO, now=NOW)
    first = find(index, CallQuery(start=0.0), tz=TOKYO, now=NOW, limit=50)
    assert first.total == everything.total and len(first.candidates) == 50
    assert first.more == everything.total - 50
    assert first.shown == f"Shown: candidates 1-50 of {everything.total}; {first.more} more (ほか{first.more}件)."
    last = find(index, CallQuery(start=0.0), tz=TOKYO, now=NOW, limit=50, start=everything.total - 10)
    assert last.more == 0 and last.shown.endswith(f"of {everything.total}.")
    past = find(index, CallQuery(start=0.0), tz=TOKYO, now=NOW, limit=50, start=everything.total + 5)
    assert not past.candidates and past.found and "there are" in past.shown
    assert everything.shown == "" and everything.as_dict()["more"] == 0
    shown = first.as_dict()
    assert shown["candidates_total"] == everything.total and shown["more"] == first.more
    assert len(shown["candidates"]) == 50


def test_the_sql_stays_portable() -> None:
    """No engine's own functions in what the pruning adds (SQLite and PostgreSQL run it as is)."""
    for query in QUERIES:
        sql = statement(query).sql + (excluded(query) or statement(query)).sql
        for word in ("glob", "regexp", "~", "iif(", "ilike", "::", "strftime", "julianday", "printf"):
            assert word not in sql.lower(), (word, sql)


def test_the_centre_s_window_indexes_hold_every_column_the_search_reads(sites: Sites) -> None:
    """So a window is read from the index alone (migration search_covering): a column added to
    `search.RANKED` without adding it there would make every search read the table again."""
    with sites.search.centre.conn.cursor() as cur:
        for name in ("calls_recorded_ranked", "calls_site_recorded_ranked"):
            cur.execute("SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                        "WHERE c.relname = %s", (name,))
            assert {r[0] for r in cur.fetchall()} >= set(COLUMNS) - {"leg"}, name


PAGED_ERASED = (CallQuery(around=BASE, window_seconds=5400), CallQuery(start=BASE - 7200, end=BASE + 7200),
                CallQuery(around=BASE, window_seconds=5400, remote_number=CALLER),
                CallQuery(start=BASE - 7200, direction="inbound"))
"""Forms whose windows hold dozens of erased recordings (a time alone, and with a fact to check)."""


def test_the_erased_recordings_are_listed_page_by_page(sites: Sites) -> None:
    """A page lists its share of the window's erased recordings, in the order recorded; page
    after page, they are the plain answer's list, and each page's answer counts them all."""
    per = 4
    for query in PAGED_ERASED:
        answers: list[tuple[SearchResult, Callable[..., SearchResult]]] = [
            (plain_local(index, query), partial(find, index, query, tz=TOKYO, now=NOW, limit=per))
            for index in sites.indexes.values()]
        answers.append((plain_centre(sites.search, query), partial(_central_page, sites.search, query, per)))
        for plain, paged in answers:
            assert len(plain.erased) > 2 * per
            listed: list[Any] = []
            start = 0
            while True:
                page = paged(start=start)
                listed += page.erased
                assert page.answer == plain.answer and page.erased_count == len(plain.erased)
                if not (page.more or page.erased_more):
                    break
                start += per
            assert listed == list(plain.erased) and not page.erased_more
            first = paged(start=0)
            assert first.erased_shown == (f"Erased shown: 1-{per} of {len(plain.erased)}; "
                                          f"{len(plain.erased) - per} more (ほか{len(plain.erased) - per}件).")


def _central_page(search: CentralSearch, query: CallQuery, per: int, *, start: int) -> SearchResult:
    return search.find(query, now=NOW, limit=per, start=start).result


def test_the_cli_and_the_console_say_which_erased_recordings_are_listed(sites: Sites,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`calls find` and `central search` print the line; the console's page says it and links
    the next page while erased recordings remain after the last candidate."""
    import jinja2
    from aiohttp.test_utils import make_mocked_request

    from callrec.cmd_search import print_erased_more
    from web.i18n import translate
    from web.pages_calls import pages

    query = PAGED_ERASED[1]
    found = sites.search.find(query, now=NOW, limit=3, start=3)
    result = found.result
    total = result.erased_count
    print_erased_more(result, 2)
    said = capsys.readouterr().out
    assert said == (f"  Erased shown: 4-6 of {total}; {total - 6} more (ほか{total - 6}件).\n"
                    "  --page 3 lists the next 3; --limit 0 lists them all\n")
    last = sites.search.find(query, now=NOW, limit=3, start=total - 2).result
    assert not last.erased_more and len(last.erased) == 2
    print_erased_more(last, 9)
    assert capsys.readouterr().out == f"  Erased shown: {total - 1}-{total} of {total}.\n"
    request = make_mocked_request("GET", "/calls?from=2026&page=2&per=3")
    links = pages(request, replace(result, candidates=(), total=0), 3)
    assert links["next_url"] is not None and "page=3" in links["next_url"]
    assert pages(request, replace(last, total=last.start + len(last.candidates)), 3)["next_url"] is None
    folder = Path(__file__).resolve().parents[1] / "web" / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.get_template("search.html").render(
        t=lambda key: translate(key, "ja"), lang="ja", csrf="", me=None, title="", organisation="",
        on_demand_lines=False, harassment=None, centre_mode=True, here="/calls", result=result,
        erased_sites=found.erased_sites, q={}, directions=(), shown_remote=str, sites=list(SITES), chosen=[],
        **links)
    assert f'<p id="erased-shown">消去済み{total}件のうち4～6件目を表示、ほか{total - 6}件</p>' in page
    assert page.count('<li><a href="/sites/') == 3 and f"次の{min(3, result.erased_more)}件" in page
