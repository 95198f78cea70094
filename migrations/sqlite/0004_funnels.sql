-- Funnels, and the time-in-state histogram folded into its state row (docs/ANALYTICS.md).
-- The analytics are a pure function of the log, so this migration drops their tables and the
-- store rebuilds every projection from the log right after it (`Migration::rebuilds_projections`).
--
-- The primary keys lead with what the queries group by (state type; from and to; channel and
-- path), so that a query's GROUP BY reads rows in key order instead of sorting them: 2-3 times
-- faster over 30 days of counters. The filters (service type, hours) are then tested per row.
--
-- Histogram columns: bucket i counts the times up to projections::analytics::DURATION_BOUNDS_S[i]
-- (d0 = up to 1 s … d24 = up to 1 day); the last one (d25, r25) counts everything longer.

DROP TABLE analytics_state_durations;
DROP TABLE analytics_states;
DROP TABLE analytics_transitions;

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
    -- the timed ones by time in state
    d0  INTEGER NOT NULL,
    d1  INTEGER NOT NULL,
    d2  INTEGER NOT NULL,
    d3  INTEGER NOT NULL,
    d4  INTEGER NOT NULL,
    d5  INTEGER NOT NULL,
    d6  INTEGER NOT NULL,
    d7  INTEGER NOT NULL,
    d8  INTEGER NOT NULL,
    d9  INTEGER NOT NULL,
    d10 INTEGER NOT NULL,
    d11 INTEGER NOT NULL,
    d12 INTEGER NOT NULL,
    d13 INTEGER NOT NULL,
    d14 INTEGER NOT NULL,
    d15 INTEGER NOT NULL,
    d16 INTEGER NOT NULL,
    d17 INTEGER NOT NULL,
    d18 INTEGER NOT NULL,
    d19 INTEGER NOT NULL,
    d20 INTEGER NOT NULL,
    d21 INTEGER NOT NULL,
    d22 INTEGER NOT NULL,
    d23 INTEGER NOT NULL,
    d24 INTEGER NOT NULL,
    d25 INTEGER NOT NULL,
    PRIMARY KEY (account_id, state_type, service_type, hour, media_type)
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
    PRIMARY KEY (account_id, from_type, to_type, service_type, hour, media_type)
) WITHOUT ROWID;

-- The first states of each journey, in the order they started: one row per path prefix
-- (a JSON array of state types, at most projections::analytics::FUNNEL_DEPTH long) and cohort,
-- counting the services whose path began so, by the time from the service's start to the
-- prefix's last state.
CREATE TABLE analytics_paths (
    account_id   TEXT    NOT NULL,
    service_type TEXT    NOT NULL,
    hour         TEXT    NOT NULL,
    media_type   TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    reached      INTEGER NOT NULL,
    r0  INTEGER NOT NULL,
    r1  INTEGER NOT NULL,
    r2  INTEGER NOT NULL,
    r3  INTEGER NOT NULL,
    r4  INTEGER NOT NULL,
    r5  INTEGER NOT NULL,
    r6  INTEGER NOT NULL,
    r7  INTEGER NOT NULL,
    r8  INTEGER NOT NULL,
    r9  INTEGER NOT NULL,
    r10 INTEGER NOT NULL,
    r11 INTEGER NOT NULL,
    r12 INTEGER NOT NULL,
    r13 INTEGER NOT NULL,
    r14 INTEGER NOT NULL,
    r15 INTEGER NOT NULL,
    r16 INTEGER NOT NULL,
    r17 INTEGER NOT NULL,
    r18 INTEGER NOT NULL,
    r19 INTEGER NOT NULL,
    r20 INTEGER NOT NULL,
    r21 INTEGER NOT NULL,
    r22 INTEGER NOT NULL,
    r23 INTEGER NOT NULL,
    r24 INTEGER NOT NULL,
    r25 INTEGER NOT NULL,
    PRIMARY KEY (account_id, media_type, path, service_type, hour)
) WITHOUT ROWID;
