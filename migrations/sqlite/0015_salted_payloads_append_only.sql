-- Events are append-only again (0008), with the one exception of an erasure (a row in
-- erasure_in_progress), which may replace `data` with its redacted form and remove its salt.
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
    OR (NEW.payload_salt IS NOT NULL AND NEW.payload_salt IS NOT OLD.payload_salt)
BEGIN SELECT RAISE(ABORT, 'events are append-only; only an erasure may redact a payload'); END;
