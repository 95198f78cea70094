-- Salted payload hashes (docs/AUDIT.md): each event's payload is hashed after 16 random bytes
-- of its own, which an erasure removes with the payload, so the kept hash confirms no guess.
-- The step that follows (store::salting) salts every account's log and links it anew, keeping
-- each old head, and any break the old chain had, in chain_rewrites. The append-only trigger
-- is set again by 0015, over the new column.
ALTER TABLE events ADD COLUMN payload_salt BLOB;
DROP TRIGGER events_are_append_only_update;

CREATE TABLE chain_rewrites (
    account            TEXT PRIMARY KEY,
    last_seq           INTEGER NOT NULL,
    old_head           BLOB,               -- NULL when the old chain held an erased payload
    new_head           BLOB NOT NULL,
    rewritten_at       TEXT NOT NULL,
    first_bad_position INTEGER,
    reason             TEXT
);
