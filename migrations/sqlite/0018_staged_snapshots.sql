-- An archive's snapshot rows are written in steps of the writer before its commit, so that the
-- commit is one short step whatever the account's size (docs/ARCHITECTURE.md, "Archives").
-- Each row now carries the cut it was taken at (`through_seq`); a stream's row that reads see
-- is its last one at or before the account's last committed archive (`live_snapshot_streams`).
CREATE TABLE snapshot_streams_by_cut (
    stream      TEXT    NOT NULL,
    through_seq INTEGER NOT NULL,           -- the archive (its last position) it was taken at
    account_id  TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    salt        BLOB,
    digest      BLOB    NOT NULL,
    state       BLOB    NOT NULL,           -- deflated JSON
    contact_key TEXT,                       -- a service's, for as-of reads by contact key
    PRIMARY KEY (stream, through_seq)
);
INSERT INTO snapshot_streams_by_cut
    (stream, through_seq, account_id, version, salt, digest, state, contact_key)
SELECT s.stream, coalesce((SELECT max(a.through_seq) FROM archives a WHERE a.account_id = s.account_id), 0),
       s.account_id, s.version, s.salt, s.digest, s.state, s.contact_key
FROM snapshot_streams s;
DROP TABLE snapshot_streams;
ALTER TABLE snapshot_streams_by_cut RENAME TO snapshot_streams;
CREATE INDEX snapshot_streams_of_accounts ON snapshot_streams (account_id, through_seq, stream);
CREATE INDEX snapshot_streams_by_contact_key ON snapshot_streams (account_id, contact_key)
    WHERE contact_key IS NOT NULL;

-- The snapshot as reads see it: each stream's last row at or before its account's last
-- committed archive. Rows after it are an archive's being written (or an interrupted one's);
-- rows before a later one of the same stream are superseded, deleted in steps.
CREATE VIEW live_snapshot_streams AS
SELECT s.stream, s.through_seq, s.account_id, s.version, s.salt, s.digest, s.state, s.contact_key
FROM snapshot_streams s
WHERE s.through_seq = (
    SELECT max(n.through_seq) FROM snapshot_streams n
    WHERE n.stream = s.stream
      AND n.through_seq <= coalesce((SELECT max(a.through_seq) FROM archives a WHERE a.account_id = s.account_id), 0));

-- After an archive's commit: its rows' streams (in stream order) whose older rows are still to
-- be deleted start after this one; NULL once none are left.
ALTER TABLE archives ADD COLUMN superseded_after TEXT;

-- An archive being written: at most one per account (whichever node writes it). `owner` is the
-- process that writes it, `touched_at` its last step; one whose owner is gone (another process
-- on SQLite, or no step for a while) or that was given up is `abandoned`, and its rows are
-- deleted in steps before another archive of the account may start.
CREATE TABLE archive_stages (
    account_id  TEXT    PRIMARY KEY,
    through_seq INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    touched_at  TEXT    NOT NULL,
    abandoned   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
