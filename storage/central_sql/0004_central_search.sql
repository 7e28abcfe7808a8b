-- The central search (storage/central_search.py) asks what the local one asks: the calls recorded
-- in a window (`recorded_at`, the epoch the form's time is compared with), never an announcer's
-- leg, across every site or the sites named.  Version 2's indexes are on `started_at`, which the
-- search does not use.

CREATE INDEX calls_recorded ON calls (recorded_at, id) WHERE leg IS NULL;
CREATE INDEX calls_site_recorded ON calls (site, recorded_at) WHERE leg IS NULL;
