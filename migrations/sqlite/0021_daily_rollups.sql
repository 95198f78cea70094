-- Daily rollups of the analytics counters (docs/ANALYTICS.md, "How the figures are stored"):
-- each `analytics_X_days` table holds the sums of `analytics_X`'s rows by the day their cohort
-- started, with the same columns and key, `hour` holding the day (`YYYY-MM-DD`, the hour key
-- up to its `T`). A query over whole days reads these, and only the hours at either end of its
-- range from the hourly rows, so its cost follows the days and names in range, not the hours.
-- The writer keeps them with every counter delta (`PendingCounts::write`); here they are
-- summed from the hourly rows an existing store already holds, which is the same function.

CREATE TABLE analytics_services_days (
    account_id TEXT NOT NULL, service_type TEXT NOT NULL, hour TEXT NOT NULL, media_type TEXT NOT NULL,
    started INTEGER NOT NULL, completed INTEGER NOT NULL, abandoned INTEGER NOT NULL,
    PRIMARY KEY (account_id, service_type, hour, media_type)
) WITHOUT ROWID;

INSERT INTO analytics_services_days
SELECT account_id, service_type, substr(hour, 1, instr(hour, 'T') - 1), media_type,
       sum(started), sum(completed), sum(abandoned)
FROM analytics_services
GROUP BY 1, 2, 3, 4;

CREATE TABLE analytics_states_days (
    account_id TEXT NOT NULL, service_type TEXT NOT NULL, hour TEXT NOT NULL, media_type TEXT NOT NULL,
    state_type TEXT NOT NULL, entered INTEGER NOT NULL, onward INTEGER NOT NULL, abandoned INTEGER NOT NULL,
    timed INTEGER NOT NULL, duration_ms INTEGER NOT NULL, estimated INTEGER NOT NULL, est_duration_s INTEGER NOT NULL,
    est_actual_ms INTEGER NOT NULL, d0 INTEGER NOT NULL, d1 INTEGER NOT NULL, d2 INTEGER NOT NULL,
    d3 INTEGER NOT NULL, d4 INTEGER NOT NULL, d5 INTEGER NOT NULL, d6 INTEGER NOT NULL,
    d7 INTEGER NOT NULL, d8 INTEGER NOT NULL, d9 INTEGER NOT NULL, d10 INTEGER NOT NULL,
    d11 INTEGER NOT NULL, d12 INTEGER NOT NULL, d13 INTEGER NOT NULL, d14 INTEGER NOT NULL,
    d15 INTEGER NOT NULL, d16 INTEGER NOT NULL, d17 INTEGER NOT NULL, d18 INTEGER NOT NULL,
    d19 INTEGER NOT NULL, d20 INTEGER NOT NULL, d21 INTEGER NOT NULL, d22 INTEGER NOT NULL,
    d23 INTEGER NOT NULL, d24 INTEGER NOT NULL, d25 INTEGER NOT NULL,
    PRIMARY KEY (account_id, state_type, service_type, hour, media_type)
) WITHOUT ROWID;

INSERT INTO analytics_states_days
SELECT account_id, service_type, substr(hour, 1, instr(hour, 'T') - 1), media_type, state_type,
       sum(entered), sum(onward), sum(abandoned), sum(timed), sum(duration_ms), sum(estimated), sum(est_duration_s), sum(est_actual_ms),
       sum(d0), sum(d1), sum(d2), sum(d3), sum(d4), sum(d5), sum(d6), sum(d7),
       sum(d8), sum(d9), sum(d10), sum(d11), sum(d12), sum(d13), sum(d14), sum(d15),
       sum(d16), sum(d17), sum(d18), sum(d19), sum(d20), sum(d21), sum(d22), sum(d23),
       sum(d24), sum(d25)
FROM analytics_states
GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE analytics_transitions_days (
    account_id TEXT NOT NULL, service_type TEXT NOT NULL, hour TEXT NOT NULL, media_type TEXT NOT NULL,
    from_type TEXT NOT NULL, to_type TEXT NOT NULL, count INTEGER NOT NULL, channel_switches INTEGER NOT NULL,
    PRIMARY KEY (account_id, from_type, to_type, service_type, hour, media_type)
) WITHOUT ROWID;

INSERT INTO analytics_transitions_days
SELECT account_id, service_type, substr(hour, 1, instr(hour, 'T') - 1), media_type, from_type, to_type,
       sum(count), sum(channel_switches)
FROM analytics_transitions
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE TABLE analytics_paths_days (
    account_id TEXT NOT NULL, service_type TEXT NOT NULL, hour TEXT NOT NULL, media_type TEXT NOT NULL,
    path TEXT NOT NULL, reached INTEGER NOT NULL, r0 INTEGER NOT NULL, r1 INTEGER NOT NULL,
    r2 INTEGER NOT NULL, r3 INTEGER NOT NULL, r4 INTEGER NOT NULL, r5 INTEGER NOT NULL,
    r6 INTEGER NOT NULL, r7 INTEGER NOT NULL, r8 INTEGER NOT NULL, r9 INTEGER NOT NULL,
    r10 INTEGER NOT NULL, r11 INTEGER NOT NULL, r12 INTEGER NOT NULL, r13 INTEGER NOT NULL,
    r14 INTEGER NOT NULL, r15 INTEGER NOT NULL, r16 INTEGER NOT NULL, r17 INTEGER NOT NULL,
    r18 INTEGER NOT NULL, r19 INTEGER NOT NULL, r20 INTEGER NOT NULL, r21 INTEGER NOT NULL,
    r22 INTEGER NOT NULL, r23 INTEGER NOT NULL, r24 INTEGER NOT NULL, r25 INTEGER NOT NULL,
    PRIMARY KEY (account_id, media_type, path, service_type, hour)
) WITHOUT ROWID;

INSERT INTO analytics_paths_days
SELECT account_id, service_type, substr(hour, 1, instr(hour, 'T') - 1), media_type, path,
       sum(reached), sum(r0), sum(r1), sum(r2), sum(r3), sum(r4), sum(r5), sum(r6),
       sum(r7), sum(r8), sum(r9), sum(r10), sum(r11), sum(r12), sum(r13), sum(r14),
       sum(r15), sum(r16), sum(r17), sum(r18), sum(r19), sum(r20), sum(r21), sum(r22),
       sum(r23), sum(r24), sum(r25)
FROM analytics_paths
GROUP BY 1, 2, 3, 4, 5;
