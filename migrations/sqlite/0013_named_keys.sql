-- Named API keys with roles (`POST /admin/accounts/{id}/keys`, events ApiKeyIssued v2 and
-- ApiKeyRevoked v2): several active keys per account, each with a name unique among the
-- account's active keys and a role. Keys issued before are the account's `default` key, able to
-- do everything (`write`), as version 1 of the events reads.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'write';
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (account_id, name) WHERE revoked_at IS NULL;
-- When each key was last used, to the minute, as the nodes report it (`Command::RecordKeyUse`):
-- not a projection of the log (use is not an event), like the idempotency records.
CREATE TABLE api_key_usage (
    key_hash     TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL  -- Unix microseconds
);
