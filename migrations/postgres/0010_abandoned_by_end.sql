-- The abandoned list's scan without reading its rows: see migrations/sqlite/0022_abandoned_by_end.sql.
CREATE INDEX analytics_abandoned_by_end
    ON analytics_abandoned (account_id, ended_at, service_id, hour, service_type, media_type, state_type);
