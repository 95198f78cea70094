-- Snapshot rows keyed by the cut they were taken at, written in steps before the archive's
-- commit (as SQLite's 0018).
ALTER TABLE snapshot_streams ADD COLUMN through_seq BIGINT;
UPDATE snapshot_streams s
SET through_seq = coalesce((SELECT max(a.through_seq) FROM archives a WHERE a.account_id = s.account_id), 0);
ALTER TABLE snapshot_streams ALTER COLUMN through_seq SET NOT NULL;
ALTER TABLE snapshot_streams DROP CONSTRAINT snapshot_streams_pkey;
ALTER TABLE snapshot_streams ADD PRIMARY KEY (stream, through_seq);
DROP INDEX snapshot_streams_of_accounts;
CREATE INDEX snapshot_streams_of_accounts ON snapshot_streams (account_id, through_seq, stream);

CREATE VIEW live_snapshot_streams AS
SELECT s.stream, s.through_seq, s.account_id, s.version, s.salt, s.digest, s.state, s.contact_key
FROM snapshot_streams s
WHERE s.through_seq = (
    SELECT max(n.through_seq) FROM snapshot_streams n
    WHERE n.stream = s.stream
      AND n.through_seq <= coalesce((SELECT max(a.through_seq) FROM archives a WHERE a.account_id = s.account_id), 0));

ALTER TABLE archives ADD COLUMN superseded_after TEXT COLLATE "C";

CREATE TABLE archive_stages (
    account_id  TEXT COLLATE "C" PRIMARY KEY,
    through_seq BIGINT NOT NULL,
    owner       TEXT COLLATE "C" NOT NULL,
    touched_at  TEXT COLLATE "C" NOT NULL,
    abandoned   BIGINT NOT NULL DEFAULT 0
);
