-- The per-account log of 0007 takes the place of the store-wide one, with the append-only
-- triggers of 0001 and 0006 over its columns: rows are only inserted, never deleted, and the
-- one update allowed is an erasure's redaction of `data` (store::log::redact_payload).
DROP TABLE events;
ALTER TABLE events_per_account RENAME TO events;

CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
WHEN NOT EXISTS (SELECT 1 FROM erasure_in_progress)
    OR NEW.id IS NOT OLD.id
    OR NEW.account IS NOT OLD.account
    OR NEW.seq IS NOT OLD.seq
    OR NEW.stream IS NOT OLD.stream
    OR NEW.stream_version IS NOT OLD.stream_version
    OR NEW.event_type IS NOT OLD.event_type
    OR NEW.event_version IS NOT OLD.event_version
    OR NEW.meta IS NOT OLD.meta
    OR NEW.recorded_at IS NOT OLD.recorded_at
    OR NEW.payload_hash IS NOT OLD.payload_hash
    OR NEW.hash IS NOT OLD.hash
BEGIN SELECT RAISE(ABORT, 'events are append-only; only an erasure may redact a payload'); END;
