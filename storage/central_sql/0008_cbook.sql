-- The combined 通話記録管理簿 at the centre (access/centre_book.py): the centre's own chain and
-- every site's synced ledger, newest first, a page at a time.  These let PostgreSQL merge the two
-- in time order from their indexes rather than sort both books for every page.

CREATE INDEX ledger_entries_book ON ledger_entries (ledger, at, site, seq);
CREATE INDEX centre_ledger_time ON centre_ledger (at, seq);
