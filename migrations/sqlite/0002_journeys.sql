-- Journeys (Genesys Context Services compatible): services with their states and tasks,
-- customer profiles, identification keys and per-account journey settings. All projections.

-- One row per service. Its states and tasks live in `document` (JSON of domain::journeys::ServiceDoc):
-- every decision and every read needs the whole service, so one row read and one row write
-- serve a lifecycle call. The other columns are the indexes lists and the sweeper need.
CREATE TABLE services (
    account_id       TEXT    NOT NULL,
    service_id       TEXT    NOT NULL,
    customer_id      TEXT,             -- NULL while anonymous
    contact_key      TEXT,
    started_at       TEXT    NOT NULL, -- client timestamp of the start event, RFC 3339
    active           INTEGER NOT NULL, -- 1 until ended, auto-completed
    auto_complete_at INTEGER,          -- unix microseconds; NULL unless active with auto-complete
    expires_at       INTEGER,          -- unix microseconds; NULL: never
    document         TEXT    NOT NULL,
    PRIMARY KEY (account_id, service_id)
);
-- A rowid table, not WITHOUT ROWID: documents grow to about 2 KB, and a WITHOUT ROWID table keeps
-- only about 1 KB of a row in its 4 KiB page, so every rewrite went through overflow pages.
-- Measured in docs/PERFORMANCE.md (about 40% more read-and-rewrites per second).
CREATE INDEX services_by_customer ON services (account_id, customer_id, started_at)
    WHERE customer_id IS NOT NULL;
CREATE INDEX services_by_contact_key ON services (account_id, contact_key, started_at)
    WHERE customer_id IS NULL;
CREATE INDEX services_auto_complete ON services (auto_complete_at) WHERE auto_complete_at IS NOT NULL;
CREATE INDEX services_expiry ON services (expires_at) WHERE expires_at IS NOT NULL;

-- Customer profiles: attributes and extensions as one JSON object.
CREATE TABLE customers (
    account_id  TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    profile     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (account_id, customer_id)
) WITHOUT ROWID;

-- Every scalar attribute value of every profile (`Attr`, or `Extension.Attr`), for identification.
CREATE TABLE customer_attributes (
    account_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (account_id, name, value, customer_id)
) WITHOUT ROWID;

CREATE TABLE identification_keys (
    account_id TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    position   INTEGER NOT NULL, -- definition order: the lowest covering key is chosen first
    source     TEXT    NOT NULL, -- 'profile' or an extension name
    attributes TEXT    NOT NULL, -- JSON array of attribute names
    is_unique  INTEGER NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;

CREATE TABLE journey_settings (
    account_id           TEXT PRIMARY KEY,
    auto_complete_after  INTEGER, -- seconds; NULL: services without their own setting never auto-complete
    abandon_dispositions TEXT     -- JSON array; NULL: the default list
) WITHOUT ROWID;
