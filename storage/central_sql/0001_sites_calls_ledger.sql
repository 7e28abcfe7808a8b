-- The centre's first schema: every site's call rows, their changes in order, and the
-- combined ledger with each site's chain heads.  Every table carries `site`, so the
-- people, requests and console tables of a later version join on it.

CREATE TABLE sites (
    site TEXT PRIMARY KEY,
    instance TEXT NOT NULL,            -- the data folder's outbox identity: one site name, one folder
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_sync TIMESTAMPTZ,
    last_seq BIGINT NOT NULL DEFAULT 0, -- the highest outbox entry applied (the site's cursor)
    backlog BIGINT NOT NULL DEFAULT 0,  -- outbox entries the site still held after its last batch
    oldest_pending TIMESTAMPTZ          -- when the oldest of those was queued
);

CREATE TABLE calls (
    site TEXT NOT NULL REFERENCES sites(site),
    id TEXT NOT NULL,
    version BIGINT NOT NULL,            -- the site's outbox seq of the change this row reflects
    synced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sip_call_id TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    answered_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    duration DOUBLE PRECISION,
    direction TEXT NOT NULL,
    local_number TEXT,
    remote_number TEXT,
    caller TEXT,
    callee TEXT,
    caller_withheld BOOLEAN NOT NULL,
    codecs JSONB NOT NULL,
    audio_format TEXT,
    audio_frames BIGINT,
    sha256 TEXT,
    streams JSONB NOT NULL,
    dtmf JSONB NOT NULL,
    undecoded JSONB NOT NULL,
    late_samples BIGINT NOT NULL,
    end_reason TEXT,
    complete BOOLEAN NOT NULL,
    state TEXT NOT NULL,
    recorded_at DOUBLE PRECISION,
    size_bytes BIGINT NOT NULL,
    held BOOLEAN NOT NULL,
    hold_reason TEXT,
    held_since TIMESTAMPTZ,
    erased_at TIMESTAMPTZ,
    erased_reason TEXT,
    notice_id TEXT,
    announced_at TIMESTAMPTZ,
    extension TEXT,
    withheld_number TEXT,
    leg_call_ids JSONB NOT NULL,
    leg TEXT,
    started_by TEXT,
    start_requested_at TIMESTAMPTZ,
    gaps JSONB NOT NULL,
    stored_on TEXT,
    archived_at TIMESTAMPTZ,
    seal_mac TEXT,
    PRIMARY KEY (site, id)
);

CREATE TABLE call_changes (
    site TEXT NOT NULL REFERENCES sites(site),
    seq BIGINT NOT NULL,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- new, sealed, held, released, erased, notice, archived, updated
    queued_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site, seq)
);

CREATE TABLE ledger_entries (
    site TEXT NOT NULL REFERENCES sites(site),
    ledger TEXT NOT NULL,               -- 'ledger' (the 通話記録管理簿) or 'seals'
    seq BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    approved_by TEXT,
    details JSONB NOT NULL,
    prev TEXT NOT NULL,
    mac TEXT NOT NULL,
    entry TEXT NOT NULL,                -- the line as the site stored it, so its MAC can be checked with the key
    PRIMARY KEY (site, ledger, seq)
);

CREATE TABLE ledger_heads (
    site TEXT NOT NULL REFERENCES sites(site),
    ledger TEXT NOT NULL,
    seq BIGINT NOT NULL,
    mac TEXT NOT NULL,
    anchored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (site, ledger)
);
