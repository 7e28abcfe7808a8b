-- A window's kept calls are counted and its erased recordings listed apart (storage/search.py
-- `nearest`): a day of ten sites holds 6,850 calls, which the window's index (version 9) walks
-- whole for either, testing each entry's erased_at.  A narrow index of the kept calls' times
-- counts them (a day of ten sites: 1.1 ms, 2.1 ms on the wide one), and an index of the erased
-- recordings alone lists them without passing over a kept one (a recent day has none: 0.05 ms,
-- 1 ms before).  Both partial on what the statements ask, so the planner can prove they hold
-- every row asked; with the columns ranking reads, the erased list is read from the index alone.

CREATE INDEX calls_kept_recorded ON calls (recorded_at) WHERE leg IS NULL AND erased_at IS NULL;
CREATE INDEX calls_erased_ranked ON calls (recorded_at, id)
    INCLUDE (site, duration, direction, local_number, remote_number, caller_withheld, state, extension,
             erased_at, erased_reason)
    WHERE leg IS NULL AND erased_at IS NOT NULL;
