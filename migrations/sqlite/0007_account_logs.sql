-- Each account its own log (docs/EVENTS.md, docs/ARCHITECTURE.md): every event carries `seq`,
-- its position in its account's log (1, 2, 3 … gapless, in commit order), and each account has
-- its own hash chain. `id` keeps the store-wide commit order for rebuilds; no API shows it.
--
-- The events are copied, renumbered and chained anew by the Rust step that runs right after
-- this file (store::chain::split_per_account), which also records the head of the old
-- store-wide chain in `global_chain_heads`. 0008 then puts the new table in the old one's place.
CREATE TABLE events_per_account (
    id             INTEGER PRIMARY KEY,          -- store-wide commit order (internal)
    account        TEXT    NOT NULL,
    seq            INTEGER NOT NULL,             -- position in the account's log: 1, 2, 3 …
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    event_version  INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    meta           TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    payload_hash   BLOB    NOT NULL,             -- sha256 of data as first written
    hash           BLOB    NOT NULL,             -- link of the account's chain
    UNIQUE (account, seq),
    UNIQUE (stream, stream_version)
);

-- The head of the store-wide chain when this migration split it per account, so that an
-- auditor who kept a head of the old chain can connect it to the new ones, and the first event
-- at which the old chain did not verify, if any: the new chains are computed over the rows as
-- they are, so an edit made before the migration is recorded here, and the account's
-- `audit/verify` keeps reporting it. No row for a store that had no chained events.
CREATE TABLE global_chain_heads (
    last_seq          INTEGER NOT NULL,
    head              BLOB    NOT NULL,
    migrated_at       TEXT    NOT NULL,
    first_bad_seq     INTEGER,          -- in the old, store-wide numbering
    first_bad_account TEXT,
    first_bad_position INTEGER,         -- the same event's seq in its account's log
    reason            TEXT
);
