"""The centre's one 通話記録管理簿 for the whole city (松本市 第10条; one 管理責任者 over several
appliances, REQUIREMENTS S1): the centre's own chain (access/centre_ledger.py) and every site's
ledger as the sync brought it (ledger_entries, book 'ledger'; the seal ledgers are not the
管理簿), in time order, a page at a time, by site and by event; and what the centre can check of
each book.

The centre's chain is checked by its MAC (the centre holds its key).  A site's entries are MACed
with the site's key, which never leaves the site, so the centre checks what it can without it
(`check_site`): seq runs 1, 2, 3 without a gap or repeat, each entry's prev is the previous
entry's mac (64 zeros first), each row's columns say what its stored line says, and the last
entry is the head the site anchored in ledger_heads at its last sync.  An entry deleted, added
or edited in the centre's database shows there; the MACs themselves are verified at the site
(`callrec ledger verify`).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import sql

from storage.ledger import LedgerEntry

from .centre_ledger import GENESIS

__all__ = ["CENTRE", "SITE_CHECKS", "BookEntry", "BookPage", "CentreBook", "SiteCheck"]

CENTRE = "@centre"
"""The site filter's value for the centre's own entries: never a site name (those are DNS labels)."""
BOOK = "ledger"
SITE_CHECKS = ("consecutive seq from 1 without a gap", "each prev is the previous entry's mac",
               "each row's columns match its stored line", "the last entry is the head the site anchored")
"""What the centre checks of a site's synced chain, in words (the MACs are checked at the site)."""
_COLUMNS = "seq, at, event, actor, reason, approved_by, details"


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One entry of the combined book: `site` None for the centre's own."""

    site: str | None
    seq: int
    at: datetime
    event: str
    actor: str
    reason: str | None
    approved_by: str | None
    details: dict[str, Any]

    def as_ledger(self) -> LedgerEntry:
        """As a ledger entry for the forms (access/forms.py); prev and mac are the book's own business."""
        return LedgerEntry(self.seq, self.at, self.event, self.actor, self.reason, self.approved_by, self.details,
                           "", "")


@dataclass(frozen=True, slots=True)
class BookPage:
    entries: list[BookEntry]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


@dataclass(frozen=True, slots=True)
class SiteCheck:
    """A site's synced chain as the centre checked it: how many entries, the head the site
    anchored (seq), and every problem found (empty: nothing the centre can see is wrong)."""

    site: str
    entries: int
    head: int | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Filters:
    site: str | None = None
    event: str | None = None
    actor: str | None = None
    since: datetime | None = None
    before: datetime | None = None


class CentreBook:
    """The combined book over the centre's connection (psycopg 3, autocommit)."""

    def __init__(self, conn: Any, tz: ZoneInfo) -> None:
        self.conn = conn
        self.tz = tz

    def filters(self, site: str | None = None, event: str | None = None, actor: str | None = None,
                since: date | None = None, until: date | None = None) -> Filters:
        """The page's filters: days are whole days in the policy's zone, `until` included."""
        start = datetime.combine(since, time(), self.tz) if since else None
        end = datetime.combine(until + timedelta(days=1), time(), self.tz) if until else None
        return Filters(site or None, event or None, actor or None, start, end)

    def sites(self) -> list[str]:
        return [str(s) for (s,) in self.conn.execute("SELECT site FROM sites ORDER BY site")]

    def events(self) -> list[str]:
        return [str(e) for (e,) in self.conn.execute(
            "SELECT event FROM centre_ledger UNION SELECT event FROM ledger_entries WHERE ledger = %s ORDER BY 1",
            (BOOK,))]

    def page(self, filters: Filters, page: int = 1, size: int = 200) -> BookPage:
        """Page `page` (from 1) of the entries that pass, newest first."""
        page = max(1, page)
        union, params = _union(filters)
        total = int(self.conn.execute(sql.SQL("SELECT count(*) FROM ({}) book").format(union), params).fetchone()[0])
        rows = self.conn.execute(sql.SQL("SELECT * FROM ({}) book ORDER BY at DESC, site DESC NULLS LAST, seq DESC "
                                         "LIMIT %(limit)s OFFSET %(offset)s").format(union),
                                 {**params, "limit": size, "offset": (page - 1) * size}).fetchall()
        return BookPage([self._entry(row) for row in rows], total, page, size)

    def entries(self, filters: Filters | None = None) -> Iterator[BookEntry]:
        """Every entry that passes, oldest first (the book to print)."""
        union, params = _union(filters or Filters())
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM ({}) book ORDER BY at, site NULLS FIRST, seq").format(union), params)
            for row in cur:
                yield self._entry(row)

    def _entry(self, row: tuple[Any, ...]) -> BookEntry:
        site, seq, at, event, actor, reason, approved_by, details = row
        return BookEntry(site, int(seq), at.astimezone(self.tz), str(event), str(actor), reason, approved_by,
                         dict(details))

    # ---- what the centre can check of a site's chain --------------------------------
    def check_sites(self) -> list[SiteCheck]:
        """Every site that synced a ledger, checked (`check_site`)."""
        names = [str(s) for (s,) in self.conn.execute(
            "SELECT site FROM ledger_heads WHERE ledger = %s UNION SELECT DISTINCT site FROM ledger_entries "
            "WHERE ledger = %s ORDER BY 1", (BOOK, BOOK))]
        return [self.check_site(name) for name in names]

    def check_site(self, site: str) -> SiteCheck:
        problems: list[str] = []
        expected_seq, expected_prev, last, count = 1, GENESIS, None, 0
        with self.conn.cursor() as cur:
            cur.execute("SELECT seq, at, event, actor, reason, approved_by, details, prev, mac, entry "
                        "FROM ledger_entries WHERE site = %s AND ledger = %s ORDER BY seq", (site, BOOK))
            for row in cur:
                count += 1
                seq = int(row[0])
                problems.extend(f"seq {seq}: {p}" for p in _row_problems(row))
                if seq != expected_seq:
                    problems.append(f"seq {seq}: gap or repeat (expected {expected_seq}): an entry was removed "
                                    "or added at the centre")
                if row[7] != expected_prev:
                    problems.append(f"seq {seq}: its prev is not the previous entry's mac (an entry was removed, "
                                    "inserted or edited at the centre)")
                expected_seq, expected_prev, last = seq + 1, str(row[8]), (seq, str(row[8]))
        head = self.conn.execute("SELECT seq, mac FROM ledger_heads WHERE site = %s AND ledger = %s",
                                 (site, BOOK)).fetchone()
        anchored = None if head is None else (int(head[0]), str(head[1]))
        if anchored is None and last is not None:
            problems.append("the site anchored no head, yet the centre holds entries of its book")
        elif anchored is not None and last != anchored:
            problems.append(f"the book does not end at the head the site anchored (seq {anchored[0]}): entries "
                            "were cut off, added or edited at the centre")
        return SiteCheck(site, count, anchored[0] if anchored else None, problems)


def _row_problems(row: tuple[Any, ...]) -> list[str]:
    """Whether the row's columns say what its stored line (the one the site's MAC covers) says."""
    try:
        entry = json.loads(row[9])
    except ValueError:
        return ["the stored line is not JSON"]
    if not isinstance(entry, dict):
        return ["the stored line is not a ledger entry"]
    columns = (int(row[0]), row[2], row[3], row[4], row[5], row[6], row[7], row[8])
    stored = tuple(entry.get(k) for k in ("seq", "event", "actor", "reason", "approved_by", "details", "prev", "mac"))
    try:
        same_time = datetime.fromisoformat(str(entry.get("at"))) == row[1]
    except ValueError:
        same_time = False
    if columns != stored or not same_time:
        return ["the row's columns differ from its stored line (edited at the centre)"]
    return []


def _union(filters: Filters) -> tuple[sql.Composed, dict[str, Any]]:
    """The centre's entries and the sites' (or one of them) under the filters, pushed into each
    part so each uses its own index."""
    where = [sql.SQL("TRUE")]
    params: dict[str, Any] = {"book": BOOK, "site": filters.site}
    for column, key, op in (("event", "event", "="), ("actor", "actor", "="), ("at", "since", ">="),
                            ("at", "before", "<")):
        value = getattr(filters, key)
        if value is not None:
            where.append(sql.SQL("{} {} {}").format(sql.Identifier(column), sql.SQL(op), sql.Placeholder(key)))
            params[key] = value
    cond = sql.SQL(" AND ").join(where)
    centre = sql.SQL(f"SELECT NULL::text AS site, {_COLUMNS} FROM centre_ledger WHERE {{}}").format(cond)
    sites = sql.SQL(f"SELECT site, {_COLUMNS} FROM ledger_entries WHERE ledger = %(book)s "
                    "AND (%(site)s::text IS NULL OR site = %(site)s) AND {}").format(cond)
    if filters.site == CENTRE:
        return centre, params
    if filters.site is not None:
        return sites, params
    return sql.SQL("{} UNION ALL {}").format(centre, sites), params
