-- Events are append-only again (0001), with the one exception of an erasure (a row in
-- erasure_in_progress), which may replace `data` with its redacted form and remove its salt.
CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
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
        OR (NEW.payload_salt IS NOT NULL AND NEW.payload_salt IS DISTINCT FROM OLD.payload_salt)
    THEN
        RAISE EXCEPTION 'events are append-only; only an erasure may redact a payload';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
