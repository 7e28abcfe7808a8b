-- "Records in use" at the centre: the people, the requests, the copies and their counters, as
-- access/store.py writes them on an appliance (the same columns, the same SQL), and the centre's
-- own 通話記録管理簿 chain.  A call is named by its site and its id: requests.call_ids holds
-- "site/id" references (JSON list) and the request_calls view splits them; copies carry the site
-- of their call as a column of its own.

CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    deputy_of TEXT,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    absent INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE requests (
    number TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    requester_role TEXT NOT NULL,
    department TEXT NOT NULL,
    purpose TEXT NOT NULL,
    wanted TEXT NOT NULL,
    call_ids TEXT NOT NULL,            -- JSON list of "site/id"
    details TEXT NOT NULL,
    filed_at TEXT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_role TEXT,
    decided_at TEXT,
    decision_reason TEXT,
    instructed_to TEXT,
    instructed_by TEXT,
    instructed_at TEXT,
    fulfilled_by TEXT,
    fulfilled_at TEXT,
    closed_at TEXT
);
CREATE INDEX requests_state ON requests (state, filed_at);

CREATE VIEW request_calls AS
SELECT r.number AS request, split_part(ref, '/', 1) AS site, substr(ref, strpos(ref, '/') + 1) AS call_id
  FROM requests r, jsonb_array_elements_text(r.call_ids::jsonb) AS ref;

CREATE TABLE copies (
    number TEXT PRIMARY KEY,
    request TEXT NOT NULL REFERENCES requests(number),
    call_id TEXT NOT NULL,             -- "site/id"
    site TEXT GENERATED ALWAYS AS (split_part(call_id, '/', 1)) STORED,
    sha256 TEXT NOT NULL,
    package TEXT NOT NULL,
    holder TEXT NOT NULL,
    made_by TEXT NOT NULL,
    made_at TEXT NOT NULL,
    deadline TEXT,
    disposed_at TEXT,
    disposed_how TEXT,
    disposed_by TEXT,
    witness TEXT
);
CREATE INDEX copies_open ON copies (disposed_at, deadline);
CREATE INDEX copies_site ON copies (site, call_id);

CREATE TABLE access_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Where each site's fetch server listens (callrec centre site-address): the centre calls it there
-- with its client certificate; the site's name in its certificate is checked, not the address.
CREATE TABLE site_addresses (
    site TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    set_by TEXT NOT NULL,
    set_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The centre's 通話記録管理簿: its own chain (access/centre_ledger.py), entries MAC-chained with
-- the centre's key exactly as a site's ledger.jsonl; `entry` is the canonical line the MAC covers.
CREATE TABLE centre_ledger (
    seq BIGINT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    approved_by TEXT,
    details JSONB NOT NULL,
    prev TEXT NOT NULL,
    mac TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX centre_ledger_event ON centre_ledger (event, at);

-- The chain's head under a MAC of its own (one row): cutting entries off the end is detected.
CREATE TABLE centre_ledger_head (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq BIGINT NOT NULL,
    mac TEXT NOT NULL,
    head_mac TEXT NOT NULL
);
