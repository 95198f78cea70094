-- The whole schema of the PostgreSQL backend, equal to what migrations/sqlite/ builds, with
-- PostgreSQL's types: every integer a BIGINT (SQLite's INTEGER is 64-bit), hashes BYTEA, and
-- every text in the "C" collation, which orders by bytes as SQLite does: cursors (`service_id >
-- ?`), pages and `ctxd verify`'s row order must not depend on the database's locale.
-- What SQLite does with triggers in SQL (the append-only log, session sizes) is done here with
-- PL/pgSQL functions of the same rules.

CREATE TABLE idempotency_keys (
    scope        TEXT COLLATE "C"   NOT NULL,   -- 'account/<id>', or 'admin'
    key          TEXT COLLATE "C"   NOT NULL,
    fingerprint  TEXT COLLATE "C"   NOT NULL,   -- sha256 of method, path and body
    outcome      TEXT COLLATE "C"   NOT NULL,   -- JSON of the first result
    created_at   BIGINT NOT NULL,   -- unix microseconds
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE accounts (
    account_id        TEXT COLLATE "C" PRIMARY KEY,
    created_at        TEXT COLLATE "C" NOT NULL,
    writes_per_second BIGINT
);

CREATE TABLE api_keys (
    key_hash   TEXT COLLATE "C" PRIMARY KEY,   -- sha256 hex of the key; the key itself is never stored
    key_id     TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    issued_at  TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C"
);
CREATE INDEX api_keys_by_account ON api_keys (account_id, revoked_at);

CREATE TABLE namespaces (
    account_id     TEXT COLLATE "C" NOT NULL,
    namespace      TEXT COLLATE "C" NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    ttl_second     BIGINT,            -- NULL: no namespace TTL
    deleting_since TEXT COLLATE "C",
    PRIMARY KEY (account_id, namespace)
);
CREATE INDEX namespaces_being_deleted ON namespaces (deleting_since) WHERE deleting_since IS NOT NULL;

CREATE TABLE session_ttls (
    account_id TEXT COLLATE "C"   NOT NULL,
    namespace  TEXT COLLATE "C"   NOT NULL,
    session_id TEXT COLLATE "C"   NOT NULL,
    ttl_second BIGINT NOT NULL,
    ttl_set_at TEXT COLLATE "C"   NOT NULL,
    PRIMARY KEY (account_id, namespace, session_id)
);

CREATE TABLE properties (
    account_id TEXT COLLATE "C" NOT NULL,
    namespace  TEXT COLLATE "C" NOT NULL,
    session_id TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    value      TEXT COLLATE "C" NOT NULL,      -- compact JSON
    expires_at BIGINT,             -- unix microseconds; NULL: never
    PRIMARY KEY (account_id, namespace, session_id, key)
);
CREATE INDEX properties_by_expiry ON properties (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE session_sizes (
    account_id TEXT COLLATE "C"   NOT NULL,
    namespace  TEXT COLLATE "C"   NOT NULL,
    session_id TEXT COLLATE "C"   NOT NULL,
    chars      BIGINT NOT NULL,
    properties BIGINT NOT NULL,
    PRIMARY KEY (account_id, namespace, session_id)
);

CREATE TABLE services (
    account_id       TEXT COLLATE "C"   NOT NULL,
    service_id       TEXT COLLATE "C"   NOT NULL,
    customer_id      TEXT COLLATE "C",             -- NULL while anonymous
    contact_key      TEXT COLLATE "C",
    started_at       TEXT COLLATE "C"   NOT NULL,  -- client timestamp of the start event, RFC 3339
    active           BIGINT NOT NULL,  -- 1 until ended, auto-completed
    auto_complete_at BIGINT,           -- unix microseconds; NULL unless active with auto-complete
    expires_at       BIGINT,           -- unix microseconds; NULL: never
    document         TEXT COLLATE "C"   NOT NULL,
    PRIMARY KEY (account_id, service_id)
);
CREATE INDEX services_by_customer ON services (account_id, customer_id, started_at)
    WHERE customer_id IS NOT NULL;
CREATE INDEX services_by_contact_key ON services (account_id, contact_key, started_at)
    WHERE customer_id IS NULL;
CREATE INDEX services_auto_complete ON services (auto_complete_at) WHERE auto_complete_at IS NOT NULL;
CREATE INDEX services_expiry ON services (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE customers (
    account_id  TEXT COLLATE "C" NOT NULL,
    customer_id TEXT COLLATE "C" NOT NULL,
    profile     TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, customer_id)
);

CREATE TABLE customer_attributes (
    account_id  TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    customer_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, name, value, customer_id)
);

CREATE TABLE customer_erasures (
    account_id     TEXT COLLATE "C" NOT NULL,
    customer_id    TEXT COLLATE "C" NOT NULL,
    started_at     TEXT COLLATE "C" NOT NULL,
    erased_through TEXT COLLATE "C",           -- the last service id erased; NULL: none yet
    PRIMARY KEY (account_id, customer_id)
);

CREATE TABLE identification_keys (
    account_id TEXT COLLATE "C"   NOT NULL,
    name       TEXT COLLATE "C"   NOT NULL,
    position   BIGINT NOT NULL, -- definition order: the lowest covering key is chosen first
    source     TEXT COLLATE "C"   NOT NULL, -- 'profile' or an extension name
    attributes TEXT COLLATE "C"   NOT NULL, -- JSON array of attribute names
    is_unique  BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE journey_settings (
    account_id           TEXT COLLATE "C" PRIMARY KEY,
    auto_complete_after  BIGINT, -- seconds; NULL: services without their own setting never auto-complete
    abandon_dispositions TEXT COLLATE "C"    -- JSON array; NULL: the default list
);

CREATE TABLE analytics_services (
    account_id   TEXT COLLATE "C"   NOT NULL,
    service_type TEXT COLLATE "C"   NOT NULL,
    hour         TEXT COLLATE "C"   NOT NULL,
    media_type   TEXT COLLATE "C"   NOT NULL,
    started      BIGINT NOT NULL,
    completed    BIGINT NOT NULL,
    abandoned    BIGINT NOT NULL,
    PRIMARY KEY (account_id, service_type, hour, media_type)
);

CREATE TABLE analytics_abandoned (
    account_id   TEXT COLLATE "C" NOT NULL,
    ended_at     TEXT COLLATE "C" NOT NULL,
    service_id   TEXT COLLATE "C" NOT NULL,
    service_type TEXT COLLATE "C" NOT NULL,
    hour         TEXT COLLATE "C" NOT NULL,
    media_type   TEXT COLLATE "C" NOT NULL,
    state_type   TEXT COLLATE "C" NOT NULL,
    detail       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, ended_at, service_id)
);

CREATE TABLE analytics_states (
    account_id      TEXT COLLATE "C"   NOT NULL,
    service_type    TEXT COLLATE "C"   NOT NULL,
    hour            TEXT COLLATE "C"   NOT NULL,
    media_type      TEXT COLLATE "C"   NOT NULL,
    state_type      TEXT COLLATE "C"   NOT NULL,
    entered         BIGINT NOT NULL,
    onward          BIGINT NOT NULL,
    abandoned       BIGINT NOT NULL,
    timed           BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    estimated       BIGINT NOT NULL,
    est_duration_s  BIGINT NOT NULL,
    est_actual_ms   BIGINT NOT NULL,
    d0 BIGINT NOT NULL, d1 BIGINT NOT NULL, d2 BIGINT NOT NULL, d3 BIGINT NOT NULL,
    d4 BIGINT NOT NULL, d5 BIGINT NOT NULL, d6 BIGINT NOT NULL, d7 BIGINT NOT NULL,
    d8 BIGINT NOT NULL, d9 BIGINT NOT NULL, d10 BIGINT NOT NULL, d11 BIGINT NOT NULL,
    d12 BIGINT NOT NULL, d13 BIGINT NOT NULL, d14 BIGINT NOT NULL, d15 BIGINT NOT NULL,
    d16 BIGINT NOT NULL, d17 BIGINT NOT NULL, d18 BIGINT NOT NULL, d19 BIGINT NOT NULL,
    d20 BIGINT NOT NULL, d21 BIGINT NOT NULL, d22 BIGINT NOT NULL, d23 BIGINT NOT NULL,
    d24 BIGINT NOT NULL, d25 BIGINT NOT NULL,
    PRIMARY KEY (account_id, state_type, service_type, hour, media_type)
);

CREATE TABLE analytics_transitions (
    account_id       TEXT COLLATE "C"   NOT NULL,
    service_type     TEXT COLLATE "C"   NOT NULL,
    hour             TEXT COLLATE "C"   NOT NULL,
    media_type       TEXT COLLATE "C"   NOT NULL,
    from_type        TEXT COLLATE "C"   NOT NULL,
    to_type          TEXT COLLATE "C"   NOT NULL,
    count            BIGINT NOT NULL,
    channel_switches BIGINT NOT NULL,
    PRIMARY KEY (account_id, from_type, to_type, service_type, hour, media_type)
);

CREATE TABLE analytics_paths (
    account_id   TEXT COLLATE "C"   NOT NULL,
    service_type TEXT COLLATE "C"   NOT NULL,
    hour         TEXT COLLATE "C"   NOT NULL,
    media_type   TEXT COLLATE "C"   NOT NULL,
    path         TEXT COLLATE "C"   NOT NULL,
    reached      BIGINT NOT NULL,
    r0 BIGINT NOT NULL, r1 BIGINT NOT NULL, r2 BIGINT NOT NULL, r3 BIGINT NOT NULL,
    r4 BIGINT NOT NULL, r5 BIGINT NOT NULL, r6 BIGINT NOT NULL, r7 BIGINT NOT NULL,
    r8 BIGINT NOT NULL, r9 BIGINT NOT NULL, r10 BIGINT NOT NULL, r11 BIGINT NOT NULL,
    r12 BIGINT NOT NULL, r13 BIGINT NOT NULL, r14 BIGINT NOT NULL, r15 BIGINT NOT NULL,
    r16 BIGINT NOT NULL, r17 BIGINT NOT NULL, r18 BIGINT NOT NULL, r19 BIGINT NOT NULL,
    r20 BIGINT NOT NULL, r21 BIGINT NOT NULL, r22 BIGINT NOT NULL, r23 BIGINT NOT NULL,
    r24 BIGINT NOT NULL, r25 BIGINT NOT NULL,
    PRIMARY KEY (account_id, media_type, path, service_type, hour)
);

-- The log. `id` orders events store-wide; on PostgreSQL it comes from a sequence, so that
-- several nodes may append at once: within one account it follows `seq`, because an account's
-- events are appended only by the holder of its `account_heads` row.
CREATE SEQUENCE events_id_seq;
CREATE TABLE events (
    id             BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
    account        TEXT COLLATE "C"   NOT NULL,
    seq            BIGINT NOT NULL,             -- position in the account's log: 1, 2, 3 …
    stream         TEXT COLLATE "C"   NOT NULL,
    stream_version BIGINT NOT NULL,
    event_type     TEXT COLLATE "C"   NOT NULL,
    event_version  BIGINT NOT NULL,
    data           TEXT COLLATE "C"   NOT NULL,
    meta           TEXT COLLATE "C"   NOT NULL,
    recorded_at    TEXT COLLATE "C"   NOT NULL,
    payload_hash   BYTEA  NOT NULL,             -- sha256 of data as first written
    hash           BYTEA  NOT NULL,             -- link of the account's chain
    UNIQUE (account, seq),
    UNIQUE (stream, stream_version)
);
ALTER SEQUENCE events_id_seq OWNED BY events.id;
CREATE INDEX events_services_of_customers ON events (
    account,
    (((data::jsonb) ->> 'customer_id') COLLATE "C"),
    (((data::jsonb) ->> 'service_id') COLLATE "C")
) WHERE event_type IN ('ServiceStarted', 'ServiceAssociated');

-- Each account's head: where its next event goes and what it chains to. A write transaction
-- takes the rows of the accounts it writes (FOR UPDATE, in sorted order), so one account's
-- positions stay gapless and in commit order while other accounts commit in parallel.
CREATE TABLE account_heads (
    account  TEXT COLLATE "C"   PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    hash     BYTEA  NOT NULL
);

CREATE TABLE erasure_in_progress ("only" BIGINT PRIMARY KEY CHECK ("only" = 1));

CREATE TABLE global_chain_heads (
    last_seq           BIGINT NOT NULL,
    head               BYTEA  NOT NULL,
    migrated_at        TEXT COLLATE "C"   NOT NULL,
    first_bad_seq      BIGINT,
    first_bad_account  TEXT COLLATE "C",
    first_bad_position BIGINT,
    reason             TEXT COLLATE "C"
);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION 'events are append-only';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM erasure_in_progress)
        OR NEW.id IS DISTINCT FROM OLD.id
        OR NEW.account IS DISTINCT FROM OLD.account
        OR NEW.seq IS DISTINCT FROM OLD.seq
        OR NEW.stream IS DISTINCT FROM OLD.stream
        OR NEW.stream_version IS DISTINCT FROM OLD.stream_version
        OR NEW.event_type IS DISTINCT FROM OLD.event_type
        OR NEW.event_version IS DISTINCT FROM OLD.event_version
        OR NEW.meta IS DISTINCT FROM OLD.meta
        OR NEW.recorded_at IS DISTINCT FROM OLD.recorded_at
        OR NEW.payload_hash IS DISTINCT FROM OLD.payload_hash
        OR NEW.hash IS DISTINCT FROM OLD.hash
    THEN
        RAISE EXCEPTION 'events are append-only; only an erasure may redact a payload';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_are_not_truncated BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- A session's stored length: the characters of its JSON document (each property `"key":value`
-- plus a separator), as SQLite's triggers keep it.
CREATE FUNCTION session_size() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO session_sizes AS size (account_id, namespace, session_id, chars, properties)
        VALUES (NEW.account_id, NEW.namespace, NEW.session_id,
                length(to_json(NEW.key)::text) + length(NEW.value) + 2, 1)
        ON CONFLICT (account_id, namespace, session_id) DO UPDATE
        SET chars = size.chars + excluded.chars, properties = size.properties + 1;
    ELSIF TG_OP = 'UPDATE' THEN
        IF length(NEW.value) <> length(OLD.value) THEN
            UPDATE session_sizes SET chars = chars + length(NEW.value) - length(OLD.value)
            WHERE account_id = NEW.account_id AND namespace = NEW.namespace AND session_id = NEW.session_id;
        END IF;
    ELSE
        UPDATE session_sizes
        SET chars = chars - (length(to_json(OLD.key)::text) + length(OLD.value) + 2),
            properties = properties - 1
        WHERE account_id = OLD.account_id AND namespace = OLD.namespace AND session_id = OLD.session_id;
        DELETE FROM session_sizes
        WHERE account_id = OLD.account_id AND namespace = OLD.namespace AND session_id = OLD.session_id
          AND properties = 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER session_size AFTER INSERT OR UPDATE OF value OR DELETE ON properties
    FOR EACH ROW EXECUTE FUNCTION session_size();
