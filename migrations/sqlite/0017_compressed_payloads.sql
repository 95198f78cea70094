-- From this version on, `events.data` and `services.document` may hold a BLOB: the JSON text
-- compressed against a fixed dictionary (src/store/payload.rs, docs/ARCHITECTURE.md). The schema
-- does not change; the version does, so that an older ctxd, which reads those columns as text
-- only, refuses the store ("written by a newer ctxd") instead of failing on its first such row.
-- Rows written before stay text and are read as they are.
SELECT 1;
