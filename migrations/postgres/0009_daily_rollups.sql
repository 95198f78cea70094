-- Daily rollups of the analytics counters: see migrations/sqlite/0021_daily_rollups.sql.

CREATE TABLE analytics_services_days (LIKE analytics_services INCLUDING ALL);

INSERT INTO analytics_services_days
SELECT account_id, service_type, split_part(hour, 'T', 1), media_type,
       sum(started), sum(completed), sum(abandoned)
FROM analytics_services
GROUP BY 1, 2, 3, 4;

CREATE TABLE analytics_states_days (LIKE analytics_states INCLUDING ALL);

INSERT INTO analytics_states_days
SELECT account_id, service_type, split_part(hour, 'T', 1), media_type, state_type,
       sum(entered), sum(onward), sum(abandoned), sum(timed), sum(duration_ms), sum(estimated), sum(est_duration_s), sum(est_actual_ms),
       sum(d0), sum(d1), sum(d2), sum(d3), sum(d4), sum(d5), sum(d6), sum(d7),
       sum(d8), sum(d9), sum(d10), sum(d11), sum(d12), sum(d13), sum(d14), sum(d15),
       sum(d16), sum(d17), sum(d18), sum(d19), sum(d20), sum(d21), sum(d22), sum(d23),
       sum(d24), sum(d25)
FROM analytics_states
GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE analytics_transitions_days (LIKE analytics_transitions INCLUDING ALL);

INSERT INTO analytics_transitions_days
SELECT account_id, service_type, split_part(hour, 'T', 1), media_type, from_type, to_type,
       sum(count), sum(channel_switches)
FROM analytics_transitions
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE TABLE analytics_paths_days (LIKE analytics_paths INCLUDING ALL);

INSERT INTO analytics_paths_days
SELECT account_id, service_type, split_part(hour, 'T', 1), media_type, path,
       sum(reached), sum(r0), sum(r1), sum(r2), sum(r3), sum(r4), sum(r5), sum(r6),
       sum(r7), sum(r8), sum(r9), sum(r10), sum(r11), sum(r12), sum(r13), sum(r14),
       sum(r15), sum(r16), sum(r17), sum(r18), sum(r19), sum(r20), sum(r21), sum(r22),
       sum(r23), sum(r24), sum(r25)
FROM analytics_paths
GROUP BY 1, 2, 3, 4, 5;
