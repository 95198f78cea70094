-- The abandoned list's scan, newest first, without reading its rows: an index by the account's
-- order of abandonment (`ended_at`, `service_id`, as the key) that also holds the columns the
-- list filters on (the cohort's hour, service type and channel, the drop-off step). A page
-- walks it down from the cursor, skipping the entries that do not pass, and reads the full rows
-- (their `detail`) of the page only. Before it, a page of one week's cohorts read and skipped
-- the whole rows of every abandonment after that week (docs/PERFORMANCE.md).
CREATE INDEX analytics_abandoned_by_end
    ON analytics_abandoned (account_id, ended_at, service_id, hour, service_type, media_type, state_type);
