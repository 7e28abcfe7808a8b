-- Searching every site at once (by time, by site and time, by number) and the erasure
-- tombstones as a view: "erased on DATE under RULE" for any site.

CREATE INDEX calls_started ON calls (started_at);
CREATE INDEX calls_site_started ON calls (site, started_at);
CREATE INDEX calls_remote ON calls (remote_number) WHERE remote_number IS NOT NULL;
CREATE INDEX calls_erased ON calls (site, erased_at) WHERE erased_at IS NOT NULL;
CREATE INDEX call_changes_call ON call_changes (site, call_id);
CREATE INDEX ledger_entries_event ON ledger_entries (site, event, at);

CREATE VIEW erasures AS
SELECT c.site, c.id, c.erased_at, c.erased_reason, c.seal_mac,
       (SELECT l.details ->> 'sha256' FROM ledger_entries l
         WHERE l.site = c.site AND l.ledger = 'ledger' AND l.event = 'policy_changed' AND l.at <= c.erased_at
         ORDER BY l.at DESC, l.seq DESC LIMIT 1) AS policy_sha256
  FROM calls c
 WHERE c.erased_at IS NOT NULL;
