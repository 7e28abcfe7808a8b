-- The central search (storage/central_search.py) asks what the local one asks: the calls recorded
-- in a window (`recorded_at`, the epoch the form's time is compared with), never an announcer's
-- leg, across every site or the sites named.  Version 2's indexes are on `started_at`, which the
-- search does not use.

CREATE INDEX calls_recorded ON calls (recorded_at, id) WHERE leg IS NULL;
CREATE INDEX calls_site_recorded ON calls (site, recorded_at) WHERE leg IS NULL;

-- A number over all time: "ends with" as "reversed, starts with" (text_pattern_ops, whatever the
-- database's collation), "is the end of" as equality on the number itself.
CREATE INDEX calls_remote_tail ON calls (reverse(remote_number) text_pattern_ops) WHERE leg IS NULL;
CREATE INDEX calls_local_tail ON calls (reverse(local_number) text_pattern_ops) WHERE leg IS NULL;
CREATE INDEX calls_local ON calls (local_number) WHERE leg IS NULL;
CREATE INDEX calls_extension ON calls (extension) WHERE leg IS NULL;
