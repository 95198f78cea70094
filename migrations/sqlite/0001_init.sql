-- The event log: the only source of truth. Rows are only ever inserted.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,          -- gapless global position, assigned by the writer
    account        TEXT    NOT NULL,
    stream         TEXT    NOT NULL,             -- e.g. ctx/<account>/<namespace>/<session>
    stream_version INTEGER NOT NULL,             -- 1, 2, 3 … within the stream
    event_type     TEXT    NOT NULL,             -- past tense: PropertiesPatched, …
    event_version  INTEGER NOT NULL,             -- schema version of `data`
    data           TEXT    NOT NULL,             -- JSON payload
    meta           TEXT    NOT NULL,             -- JSON: request id, idempotency key, actor, client address
    recorded_at    TEXT    NOT NULL,             -- UTC, RFC 3339 with microseconds
    UNIQUE (stream, stream_version)
);

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- Idempotency records: a dedup cache written by the writer in the same transaction as the
-- events it guards. Not a projection (a rejected or no-op command leaves no event to rebuild it from).
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,   -- 'account/<id>', or 'admin'
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,   -- sha256 of method, path and body
    outcome      TEXT NOT NULL,   -- JSON of the first result
    created_at   INTEGER NOT NULL, -- unix microseconds
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Projections: read tables, a pure function of the log (see src/projections).
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,   -- sha256 hex of the key; the key itself is never stored
    key_id     TEXT NOT NULL,
    account_id TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
CREATE INDEX api_keys_by_account ON api_keys (account_id, revoked_at);

CREATE TABLE namespaces (
    account_id TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ttl_second INTEGER,            -- NULL: no namespace TTL
    PRIMARY KEY (account_id, namespace)
) WITHOUT ROWID;

-- Sessions with a TTL setting (a session with properties but no TTL has no row here).
CREATE TABLE session_ttls (
    account_id TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    ttl_second INTEGER NOT NULL,
    ttl_set_at TEXT    NOT NULL,
    PRIMARY KEY (account_id, namespace, session_id)
) WITHOUT ROWID;

CREATE TABLE properties (
    account_id TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,      -- compact JSON
    expires_at INTEGER,            -- unix microseconds; NULL: never
    PRIMARY KEY (account_id, namespace, session_id, key)
) WITHOUT ROWID;
CREATE INDEX properties_by_expiry ON properties (expires_at) WHERE expires_at IS NOT NULL;
