-- Tamper evidence and the event feed (docs/AUDIT.md).
--
-- Each event keeps the sha256 of its payload and a hash chained over the previous event's hash
-- and its own columns, with the payload counted by its hash: an erasure can redact a payload
-- and the chain still verifies. Rows written before this migration are hashed by 0007, which
-- chains each account's events anew (a Rust step that hashed them here first was removed with it).
ALTER TABLE events ADD COLUMN payload_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE events ADD COLUMN hash BLOB NOT NULL DEFAULT x'';

-- The event feed reads one account's events in seq order.
CREATE INDEX events_by_account ON events (account, seq);

-- Present (one row) only while the writer redacts payloads for an erasure, inside its
-- transaction: the one case in which an event row may change (store::log::redact_payload).
CREATE TABLE erasure_in_progress (only INTEGER PRIMARY KEY CHECK (only = 1));

DROP TRIGGER events_are_append_only_update;
