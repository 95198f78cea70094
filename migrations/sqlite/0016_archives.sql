-- Archives (docs/AUDIT.md, "Archives"): an account's events before a cut move into a segment
-- file, and the account's projections as of the cut stay here, stream by stream, covered by
-- the sha256 that the `LogArchived` event (appended after the cut) carries.

ALTER TABLE accounts ADD COLUMN retention_days INTEGER;   -- RetentionSet; NULL: keep everything

-- One row per segment: the positions it holds, the chain's links at both ends, its file.
CREATE TABLE archives (
    account_id          TEXT    NOT NULL,
    first_seq           INTEGER NOT NULL,
    through_seq         INTEGER NOT NULL,
    previous_hash       BLOB    NOT NULL,   -- the link before first_seq
    through_hash        BLOB    NOT NULL,   -- the link at through_seq
    through_recorded_at TEXT    NOT NULL,
    directory           TEXT    NOT NULL,   -- the archive directory it was written to
    segment             TEXT    NOT NULL,   -- its file name there
    segment_sha256      TEXT    NOT NULL,
    archived_at         TEXT    NOT NULL,
    PRIMARY KEY (account_id, through_seq)
) WITHOUT ROWID;

-- The snapshot: each stream with archived events, its version at the cut (new events go on
-- from it) and the projection rows its events produced (`StreamState` as JSON, deflated),
-- hashed (the JSON text) after a salt of its own.
CREATE TABLE snapshot_streams (
    stream     TEXT    PRIMARY KEY,
    account_id TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    salt       BLOB,
    digest     BLOB    NOT NULL,
    state      BLOB    NOT NULL,           -- deflated JSON
    contact_key TEXT                        -- a service's, for as-of reads by contact key
);
CREATE INDEX snapshot_streams_of_accounts ON snapshot_streams (account_id, stream);
CREATE INDEX snapshot_streams_by_contact_key ON snapshot_streams (account_id, contact_key)
    WHERE contact_key IS NOT NULL;

-- The services archived events gave to each customer (an erasure and as-of reads of a
-- customer find them here, as they find later ones in the log).
CREATE TABLE snapshot_customer_services (
    account_id  TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    PRIMARY KEY (account_id, customer_id, service_id)
) WITHOUT ROWID;

-- The second door of the append-only log: while a row is here, events at or before their
-- account's last archived position may be deleted (they are in a segment), and no other.
CREATE TABLE archive_in_progress ("only" INTEGER PRIMARY KEY CHECK ("only" = 1));

DROP TRIGGER events_are_append_only_delete;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM archive_in_progress)
    OR OLD.seq > coalesce((SELECT max(through_seq) FROM archives WHERE account_id = OLD.account), 0)
BEGIN SELECT RAISE(ABORT, 'events are append-only; only an archive may remove archived events'); END;
