-- Journey analytics (docs/ANALYTICS.md): counters maintained by projections in the write
-- transaction, so that a query sums rows per state type and hour, never rows per service.
-- Every counter is keyed by the service's cohort: its service type, the hour it started
-- (client time, 'YYYY-MM-DDTHH') and the media type it started on ('' when none).

CREATE TABLE analytics_services (
    account_id   TEXT    NOT NULL,
    service_type TEXT    NOT NULL,
    hour         TEXT    NOT NULL,
    media_type   TEXT    NOT NULL,
    started      INTEGER NOT NULL,
    completed    INTEGER NOT NULL,
    abandoned    INTEGER NOT NULL,
    PRIMARY KEY (account_id, service_type, hour, media_type)
) WITHOUT ROWID;

CREATE TABLE analytics_states (
    account_id      TEXT    NOT NULL,
    service_type    TEXT    NOT NULL,
    hour            TEXT    NOT NULL,
    media_type      TEXT    NOT NULL,
    state_type      TEXT    NOT NULL,
    entered         INTEGER NOT NULL, -- states of this type started
    onward          INTEGER NOT NULL, -- of them, followed by another state or by the service's completion
    abandoned       INTEGER NOT NULL, -- services abandoned with this type as their drop-off point
    timed           INTEGER NOT NULL, -- states of this type ended by their own end or a transition
    duration_ms     INTEGER NOT NULL, -- their summed time in state
    estimated       INTEGER NOT NULL, -- of the timed ones, those with an est_duration
    est_duration_s  INTEGER NOT NULL, -- their summed est_duration
    est_actual_ms   INTEGER NOT NULL, -- their summed actual time in state
    PRIMARY KEY (account_id, service_type, hour, media_type, state_type)
) WITHOUT ROWID;

-- Histogram of time in state: `bucket` indexes the bounds of projections::analytics::DURATION_BOUNDS_S.
CREATE TABLE analytics_state_durations (
    account_id   TEXT    NOT NULL,
    service_type TEXT    NOT NULL,
    hour         TEXT    NOT NULL,
    media_type   TEXT    NOT NULL,
    state_type   TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (account_id, service_type, hour, media_type, state_type, bucket)
) WITHOUT ROWID;

-- Moves between steps: '(start)' → first state → … → '(completed)' or '(abandoned)'.
CREATE TABLE analytics_transitions (
    account_id       TEXT    NOT NULL,
    service_type     TEXT    NOT NULL,
    hour             TEXT    NOT NULL,
    media_type       TEXT    NOT NULL,
    from_type        TEXT    NOT NULL,
    to_type          TEXT    NOT NULL,
    count            INTEGER NOT NULL,
    channel_switches INTEGER NOT NULL, -- of them, moves whose media type differs from the step before
    PRIMARY KEY (account_id, service_type, hour, media_type, from_type, to_type)
) WITHOUT ROWID;

-- The abandoned services themselves, with the context they had when they ended.
CREATE TABLE analytics_abandoned (
    account_id   TEXT NOT NULL,
    ended_at     TEXT NOT NULL, -- server time of the abandonment, RFC 3339
    service_id   TEXT NOT NULL,
    service_type TEXT NOT NULL,
    hour         TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    state_type   TEXT NOT NULL, -- the drop-off point
    detail       TEXT NOT NULL, -- JSON: customer_id/contact_key, how it ended, extensions of the service and the open state
    PRIMARY KEY (account_id, ended_at, service_id)
) WITHOUT ROWID;
