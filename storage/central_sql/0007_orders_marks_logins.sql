-- Hold orders placed at the centre and answered by their site through the sync; the sites'
-- harassment marks (never their notes); and per-site logins that may write only their own
-- site's rows (row-level security keyed on `site`).

CREATE TABLE hold_orders (
    site TEXT NOT NULL REFERENCES sites(site),
    order_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    hold BOOLEAN NOT NULL,              -- false: the order releases a hold
    reason TEXT NOT NULL,
    ordered_by TEXT NOT NULL,
    approved_by TEXT,
    token TEXT NOT NULL,                -- the order as the centre's grant key signed it
    placed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed', 'refused')),
    outcome TEXT,                       -- the site's word: held, released or refused
    detail TEXT,
    confirmation TEXT,                  -- signed by the site's key: the centre checks it with the site's certificate
    answered_at TIMESTAMPTZ,
    site_ledger_seq BIGINT,
    PRIMARY KEY (site, order_id)
);
CREATE INDEX hold_orders_pending ON hold_orders (site, placed_at) WHERE state = 'pending';
CREATE INDEX hold_orders_call ON hold_orders (site, call_id);

CREATE TABLE marks (
    site TEXT NOT NULL REFERENCES sites(site),
    id TEXT NOT NULL,
    version BIGINT NOT NULL,            -- the call's outbox seq the mark was read at: an older copy never wins
    call_id TEXT NOT NULL,
    category TEXT NOT NULL,
    marked_by TEXT NOT NULL,            -- an account, or the staff side's extension ("ext:201")
    marked_at TIMESTAMPTZ NOT NULL,
    via TEXT NOT NULL,
    has_note BOOLEAN NOT NULL,          -- the note itself stays at the site
    hold_until TIMESTAMPTZ,
    withdrawn_by TEXT,
    withdrawn_at TIMESTAMPTZ,
    withdrawn_reason TEXT,
    released_by TEXT,
    released_at TIMESTAMPTZ,
    released_reason TEXT,
    synced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (site, id)
);
CREATE INDEX marks_call ON marks (site, call_id);
CREATE INDEX marks_time ON marks (marked_at);

-- Site logins: `callrec central site-login NAME` makes the role and this row.  A role named
-- here sees and writes only its site's rows; every other role with grants (the owner, the
-- console's) is not limited by the policies below.
CREATE TABLE site_logins (
    role_name TEXT PRIMARY KEY,
    site TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The site a login is held to (NULL: not a site login).  Called as a scalar subquery in the
-- policies, so it runs once per statement, not per row: the console's search over every site
-- pays nothing, and a site's own statements can use the (site, ...) indexes.
CREATE FUNCTION callrec_login_site(who TEXT) RETURNS TEXT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT l.site FROM public.site_logins l WHERE l.role_name = who
$$;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['sites', 'calls', 'call_changes', 'ledger_entries', 'ledger_heads', 'hold_orders',
                             'marks'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY by_site ON %I '
                       'USING ((SELECT callrec_login_site(current_user)) IS NULL '
                       'OR site = (SELECT callrec_login_site(current_user))) '
                       'WITH CHECK ((SELECT callrec_login_site(current_user)) IS NULL '
                       'OR site = (SELECT callrec_login_site(current_user)))', t);
    END LOOP;
END $$;
