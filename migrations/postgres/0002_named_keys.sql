-- Named API keys with roles: as SQLite's 0013_named_keys.sql (columns added at the end, in the
-- same order, so that `ctxd verify` hashes the same rows on both backends).
ALTER TABLE api_keys ADD COLUMN name TEXT COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN role TEXT COLLATE "C" NOT NULL DEFAULT 'write';
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (account_id, name) WHERE revoked_at IS NULL;
-- When each key was last used, to the minute, as the nodes report it: not a projection.
CREATE TABLE api_key_usage (
    key_hash     TEXT COLLATE "C" PRIMARY KEY,
    last_used_at BIGINT NOT NULL  -- Unix microseconds
);
