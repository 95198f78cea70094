-- Archives (docs/AUDIT.md, "Archives"), as SQLite's 0016.

ALTER TABLE accounts ADD COLUMN retention_days BIGINT;

CREATE TABLE archives (
    account_id          TEXT COLLATE "C" NOT NULL,
    first_seq           BIGINT NOT NULL,
    through_seq         BIGINT NOT NULL,
    previous_hash       BYTEA  NOT NULL,
    through_hash        BYTEA  NOT NULL,
    through_recorded_at TEXT COLLATE "C" NOT NULL,
    directory           TEXT COLLATE "C" NOT NULL,
    segment             TEXT COLLATE "C" NOT NULL,
    segment_sha256      TEXT COLLATE "C" NOT NULL,
    archived_at         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, through_seq)
);

CREATE TABLE snapshot_streams (
    stream     TEXT COLLATE "C" PRIMARY KEY,
    account_id TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    salt       BYTEA,
    digest     BYTEA  NOT NULL,
    state      BYTEA  NOT NULL,
    contact_key TEXT COLLATE "C"
);
CREATE INDEX snapshot_streams_of_accounts ON snapshot_streams (account_id, stream);
CREATE INDEX snapshot_streams_by_contact_key ON snapshot_streams (account_id, contact_key)
    WHERE contact_key IS NOT NULL;

CREATE TABLE snapshot_customer_services (
    account_id  TEXT COLLATE "C" NOT NULL,
    customer_id TEXT COLLATE "C" NOT NULL,
    service_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account_id, customer_id, service_id)
);

CREATE TABLE archive_in_progress ("only" BIGINT PRIMARY KEY CHECK ("only" = 1));

-- The one erasure door (0004) and the archive's: archived events may be deleted.
CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'events are append-only';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM archive_in_progress)
            AND OLD.seq <= coalesce((SELECT max(through_seq) FROM archives WHERE account_id = OLD.account), 0)
        THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'events are append-only; only an archive may remove archived events';
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
        OR (NEW.payload_salt IS NOT NULL AND NEW.payload_salt IS DISTINCT FROM OLD.payload_salt)
    THEN
        RAISE EXCEPTION 'events are append-only; only an erasure may redact a payload';
    END IF;
    RETURN NEW;
END $$;
