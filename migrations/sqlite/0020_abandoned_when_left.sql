-- `analytics_abandoned.ended_at` is now when the customer left (the end's client time; the
-- last activity for an auto-completion; the expiry for an expired service), not when the store
-- recorded it, and `detail` carries the drop-off's channel, the time spent in it and the
-- conversation ids (docs/ANALYTICS.md). The schema does not change; the projections are
-- rebuilt from the log when an existing store is upgraded.
SELECT 1;
