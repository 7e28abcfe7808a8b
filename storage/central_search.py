"""Searching every site's calls at the centre with the query language and ranking of the local
search (storage/search.py), one call of any site, and the sites' sync status.

The rows worth scoring are chosen by the very SQL `search.statement()` writes for the index file,
put into PostgreSQL's dialect (psycopg's `%s` placeholders, `%` of LIKE patterns doubled) with
a site filter in front; they are ranked by the same `search.rank()`.  So a form's answer is the
same at the centre as at the site, and a change to the search changes both.  The centre's rows
carry their site (`SiteRow`), and the erased recordings of a window say whose they were.

A window of every site holds ten sites' calls: they are ranked as plain tuples of the columns
ranking reads (`search.Facts`, the site last), the rows a form's number or direction rules out
are only counted (`search.excluded`), and only the candidates shown are read whole.

The centre keeps no audio (it stays at the site): a row from here has no audio path and no
side files.  Its times are the centre's `timestamptz`, shown in the console's zone.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from typing import Any

from psycopg.rows import dict_row

from .central_link import Centre
from .index import CallRow
from .search import (
    RANKED,
    CallQuery,
    Candidate,
    Facts,
    QueryError,
    SearchResult,
    Statement,
    Tombstone,
    erased_page,
    excluded,
    nearest,
    needs_criteria,
    rank,
    rank_page,
    statement,
    time_only,
    with_erased,
)

__all__ = ["COLUMNS", "LAG_WARNING_SECONDS", "CentralResult", "CentralSearch", "SiteRow", "at_centre", "central_statement", "site_status"]

LAG_WARNING_SECONDS = 15 * 60.0
"""A site whose oldest unsent change is older than this is lagging: the default of the site's own
warning (callrec.config.Central.lag_warning_seconds)."""

_TAIL = re.compile(r"\((\w+) LIKE %s OR %s LIKE \('%%' \|\| \1\)")
"""The local statement's number match without a time: the stored number ends with the one
asked, or is its end.  Neither half can use an index as written; `_tails` rewrites them."""

_ORDER = " ORDER BY recorded_at, id"
_TIES = ("recorded_at", 'id COLLATE "C"', "site")
"""How the centre orders a `time_only` form's calls at the same distance: as `rank` sorts them
(the id by code point, whatever the database's collation), then by site, as it reads equal rows."""
"""How `search.statement` orders the rows it reads."""
_CALLROW_FIELDS = tuple(f.name for f in fields(CallRow))
COLUMNS = (*RANKED, "site")
"""What ranking reads of a centre's row: `search.Facts`."""
_AT_SITE_ONLY: dict[str, Any] = {"audio_path": None, "side_files": []}
"""What only the site keeps of a row: where its files are."""


@dataclass(frozen=True, slots=True)
class SiteRow(CallRow):
    """A call row as the centre holds it: the site's row, the site it belongs to, and the row's
    seal as the site made it (storage/sealing.py; the call page shows it, no listing does)."""

    site: str = ""
    seal_mac: str | None = None


@dataclass(frozen=True, slots=True)
class CentralResult:
    """The local search's answer, with the site of each candidate and of each erased recording."""

    result: SearchResult
    erased_sites: tuple[str, ...]
    """The site of each of `result.erased`, in the same order."""
    sites: tuple[str, ...] | None
    """The sites searched; None: every site."""

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return self.result.candidates

    @property
    def erased(self) -> tuple[tuple[str, Tombstone], ...]:
        return tuple(zip(self.erased_sites, self.result.erased, strict=True))

    def as_dict(self) -> dict[str, Any]:
        values = self.result.as_dict()
        values["sites"] = list(self.sites) if self.sites is not None else "all"
        for shown, candidate in zip(values["candidates"], self.result.candidates, strict=True):
            shown["site"] = _site(candidate.row)
        for shown, site in zip(values["erased"], self.erased_sites, strict=True):
            shown["site"] = site
        return values


def central_statement(query: CallQuery, sites: Sequence[str] | None = None, *, erased: bool = True) -> Statement:
    """`search.statement()` for the centre's `calls` table (the site after the columns ranking
    reads): PostgreSQL's placeholders, and only the sites asked for (None: all)."""
    return at_centre(statement(query, COLUMNS, erased=erased), sites)


def at_centre(local: Statement, sites: Sequence[str] | None) -> Statement:
    """A statement of storage/search.py on the centre's `calls` table.  It always has a WHERE
    (an announcer's leg is never a call of its own), so the site filter goes first in it, where
    the (site, recorded_at) index can use it.  Two sites may hold a call of the same id and time:
    the site orders them, so that the ranking (which keeps the order read among equals) and the
    tombstones come out the same on every run, whatever plan the server chose."""
    sql = local.sql.replace("%", "%%").replace("?", "%s")
    sql = f"{sql}, site" if sql.endswith(_ORDER) else sql.replace(f"{_ORDER} LIMIT ", f"{_ORDER}, site LIMIT ")
    sql, params = _tails(sql, local.params)
    if sites is not None:
        head, where, rest = sql.partition(" WHERE ")
        if not where:
            raise QueryError("the local search's statement has no WHERE clause to filter sites in")
        sql = f"{head} WHERE site = ANY(%s) AND {rest}"
        params = (list(sites), *params)
    return Statement(sql, params)


def _tails(sql: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """A number over all time, in a form the centre's indexes answer (a scan of ten sites' rows
    is ten times the site's): "ends with 0312345678" is "reversed, starts with 8765432130" (an
    index on the reversed number), and "is the end of 0312345678" is "is one of its ends" (the
    number's own index).  The number asked is digits only (`statement` matches others exactly),
    so neither reading differs from the LIKE it replaces for any number the ranking accepts."""
    match = _TAIL.search(sql)
    if match is None:
        return sql, params
    at = sql[:match.start()].count("%s")
    wanted = params[at + 1]
    column = match.group(1)
    sql = f"{sql[:match.start()]}(reverse({column}) LIKE %s OR {column} = ANY(%s){sql[match.end():]}"
    ends = [wanted[n:] for n in range(len(wanted) + 1)]
    return sql, (*params[:at], wanted[::-1] + "%", ends, *params[at + 2:])


class CentralSearch:
    """The centre's calls as the console and `callrec central search` read them."""

    def __init__(self, centre: Centre, tz: tzinfo) -> None:
        self.centre = centre
        self.tz = tz

    def find(self, query: CallQuery, *, sites: Sequence[str] | None = None, now: float | None = None,
             limit: int | None = None, start: int = 0) -> CentralResult:
        """The call a form describes, across every site (or the ones named): the best `limit`
        candidates from `start` (all by default), read whole, and as many of the window's erased
        recordings from `start`; the rest only counted.  In one
        snapshot (repeatable read): the rows read whole are the rows ranked, whatever the sync
        writes meanwhile."""
        needs_criteria(query)
        conn = self.centre.conn
        with conn.pipeline(), conn.transaction():  # BEGIN, SET and the statements in one round trip
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            at = time.time() if now is None else now
            if limit is not None and time_only(query):
                page = nearest(query, start, limit, COLUMNS, _TIES)
                after, before, tombs, kept, gone = self._read(
                    [at_centre(s, sites) if s is not None else None
                     for s in (page.page, page.before, page.erased, page.count, page.erased_count)])
                shown = page.merge(query, self._ranked(after), self._ranked(before), start, limit)
                erased = self._ranked(tombs)
                result = rank_page(query, shown, erased, total=int(kept[0][0]), start=start, tz=self.tz, now=at,
                                   whole=self._whole, erased_total=int(gone[0][0]))
                return CentralResult(result=result, erased_sites=_erased_sites(erased, result.erased),
                                     sites=tuple(sites) if sites is not None else None)
            paged = limit is not None and query.timed
            pruned = excluded(query)
            listed = erased_page(query, start, limit, COLUMNS) if paged and limit is not None else None
            rows, counted, tombs, gone = self._read([
                central_statement(query, sites, erased=not paged),
                at_centre(pruned, sites) if pruned is not None else None,
                at_centre(listed.page, sites) if listed is not None else None,
                at_centre(listed.total, sites) if listed is not None else None])
            ranked = self._ranked(rows)
            result = rank(query, ranked, tz=self.tz, now=at, excluded=int(counted[0][0]) if counted else 0,
                          limit=limit, start=start, whole=self._whole)
            if listed is not None:
                ranked = self._ranked(tombs)
                result = with_erased(result, ranked, int(gone[0][0]), tz=self.tz)
        return CentralResult(result=result, erased_sites=_erased_sites(ranked, result.erased),
                             sites=tuple(sites) if sites is not None else None)

    def call(self, site: str, call_id: str) -> SiteRow | None:
        """One call of one site; None when the centre has no such row."""
        rows = self._rows(Statement("SELECT * FROM calls WHERE site = %s AND id = %s", (site, call_id)))
        return rows[0] if rows else None

    def site_names(self) -> list[str]:
        return [str(r[0]) for r in self.centre.conn.execute("SELECT site FROM sites ORDER BY site")]

    def sites(self, now: float | None = None, warn_after: float = LAG_WARNING_SECONDS) -> list[dict[str, Any]]:
        """Each site's last sync, backlog and lag (`site_status`)."""
        at = time.time() if now is None else now
        return [site_status(s, at, warn_after) for s in self.centre.sites()]

    def _facts(self, query: Statement) -> list[Facts]:
        """The rows to rank (`_ranked`) of one statement."""
        return self._ranked(self._read([query])[0])

    def _read(self, statements: Sequence[Statement | None]) -> list[list[tuple[Any, ...]]]:
        """Each statement's rows as tuples (in binary: a number is not parsed from text); none
        for a None.  Sent together (psycopg's pipeline mode): one round trip to the server for
        all of them, where one each would wait on the server's answer before the next."""
        conn = self.centre.conn
        with conn.pipeline():
            cursors = [conn.cursor(binary=True) if s is not None else None for s in statements]
            for cursor, statement in zip(cursors, statements, strict=True):
                if cursor is not None and statement is not None:
                    cursor.execute(*_args(statement))
        rows = [cursor.fetchall() if cursor is not None else [] for cursor in cursors]
        for cursor in cursors:
            if cursor is not None:
                cursor.close()
        return rows

    def _ranked(self, rows: Iterable[tuple[Any, ...]]) -> list[Facts]:
        """Rows to rank as `Facts`; an erased one's time in the site's ISO text (its tombstone
        says when), as `_site_row` writes it."""
        facts = [Facts._make(r) for r in rows]
        return [f._replace(erased_at=self._text(f.erased_at)) if f.erased_at is not None else f for f in facts]

    def _whole(self, shown: Sequence[Facts]) -> list[SiteRow]:
        """The shown candidates' whole rows, in their order."""
        keys = [(f.site, f.id) for f in shown]
        rows = {(r.site, r.id): r for r in self._rows(Statement(
            "SELECT * FROM calls WHERE (site, id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys])))} if keys else {}
        return [rows[k] for k in keys]

    def _text(self, moment: Any) -> str:
        return str(moment.astimezone(self.tz).isoformat(timespec="milliseconds"))

    def _rows(self, query: Statement) -> list[SiteRow]:
        with self.centre.conn.cursor(row_factory=dict_row, binary=True) as cur:
            cur.execute(query.sql, query.params)  # type: ignore[arg-type]  # composed from search.statement()
            return [self._site_row(r) for r in cur.fetchall()]

    def _site_row(self, row: dict[str, Any]) -> SiteRow:
        values = {**_AT_SITE_ONLY, **{k: row[k] for k in _CALLROW_FIELDS if k in row}}
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = self._text(value)
        return SiteRow(**values, site=row["site"], seal_mac=row["seal_mac"])


def site_status(site: dict[str, Any], now: float, warn_after: float = LAG_WARNING_SECONDS) -> dict[str, Any]:
    """A site of `Centre.sites()` with its lag: how long its oldest unsent change has waited, as
    the site last reported it (a site cut off keeps its backlog at the centre, so its lag grows
    with the clock), `lagging` past `warn_after` (the site's own default threshold).  A site with
    nothing to send does not write to the centre, so an old last sync alone is not a lag."""
    oldest = _epoch(site["oldest_pending"])
    lag = max(0.0, now - oldest) if oldest is not None and site["backlog"] else 0.0
    return {**site, "lag_seconds": lag, "lagging": lag > warn_after, "warn_after_seconds": warn_after}


def _epoch(text: str | None) -> float | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _site(row: CallRow) -> str:
    return row.site if isinstance(row, SiteRow) else ""


def _args(query: Statement) -> tuple[Any, ...]:
    return query.sql, query.params


def _erased_sites(rows: Iterable[Facts], tombstones: Iterable[Tombstone]) -> tuple[str, ...]:
    """Whose each erased recording was: a tombstone keeps the row's id, its recording time and
    its erasure time, which together name one row of one site."""
    owners = {(r.id, r.recorded_at, r.erased_at): r.site for r in rows if r.erased_at}
    return tuple(owners[(t.id, t.recorded_at, t.erased_at)] for t in tombstones)
