//! Archives (docs/AUDIT.md, "Archives"): an account's events recorded before a time move out
//! of the live log into a segment file, and the account's projections as of the last of them
//! stay, stream by stream, as the snapshot that rebuilds and as-of reads start from.
//!
//! An archive is prepared from a read snapshot, away from the writer (`prepare.rs`): the events
//! are written to the segment (gzip NDJSON, `segment.rs`), then folded onto the previous
//! snapshot stream by stream, and each changed stream is staged by the writer, in short steps,
//! as it is folded, in rows no read sees yet (`stage`). The writer then commits it in one short
//! step (`commit`): it checks that nothing it relied on changed, records the segment (which
//! makes the staged snapshot the one reads see) and appends `LogArchived`. From that commit on,
//! every read treats the events up to the cut as gone; the writer then deletes them a step at a
//! time (`drop_step`), through the log's second door.

mod prepare;
pub mod segment;

pub use prepare::prepare;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::chain::{self, GENESIS, Hash};
use super::db::{Connection, OptionalExtension, params};
use super::log::format_time;
use super::payload;
use crate::domain::events::LogArchived;
use crate::domain::{DomainError, Event};
use crate::projections::memory::{MemoryTables, StreamState};

/// The last archive of an account: its log before and at `through_seq` is in segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub through_seq: u64,
    pub through_hash: Hash,
    pub through_recorded_at: String,
    /// The segment that holds `through_seq`.
    pub segment: String,
}

/// The account's last archive, if it has one.
pub fn cut(conn: &Connection, account: &str) -> Result<Option<Cut>, StoreError> {
    let row: Option<(u64, Vec<u8>, String, String)> = conn
        .prepare_cached(
            "SELECT through_seq, through_hash, through_recorded_at, segment FROM archives
             WHERE account_id = ?1 ORDER BY through_seq DESC LIMIT 1",
        )?
        .query_row([account], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .optional()?;
    row.map(|(through_seq, hash, through_recorded_at, segment)| {
        let through_hash = hash.try_into().map_err(|_| {
            StoreError::Corrupt(format!("account {account}: the archive through {through_seq} has no hash"))
        })?;
        Ok(Cut { through_seq, through_hash, through_recorded_at, segment })
    })
    .transpose()
}

/// The last archived position of the account (0 when nothing is archived): the live log
/// starts after it.
pub fn archived_through(conn: &Connection, account: &str) -> Result<u64, StoreError> {
    Ok(cut(conn, account)?.map_or(0, |cut| cut.through_seq))
}

/// The segment that holds `account`'s event `seq` (archived), for a 410's message.
pub fn segment_of(conn: &Connection, account: &str, seq: u64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT segment FROM archives WHERE account_id = ?1 AND first_seq <= ?2 AND through_seq >= ?2",
        )?
        .query_row(params![account, seq], |row| row.get(0))
        .optional()?)
}

/// Loads the snapshot's rows of `account`'s `streams` into `tables`, as they were at the cut.
pub fn seed(
    conn: &Connection,
    account: &str,
    streams: &[String],
    tables: &mut MemoryTables,
) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached("SELECT state FROM live_snapshot_streams WHERE stream = ?1")?;
    for name in streams {
        if let Some(state) = statement.query_row([name], |row| row.get::<Vec<u8>>(0)).optional()? {
            tables.load_stream(account, parse_state(name, &state)?);
        }
    }
    Ok(())
}

/// The snapshot streams of every account (or of the accounts in a JSON array) in stream order,
/// read a page at a time, for a fold in stream order (`projections::fold_into`).
pub struct Snapshots {
    accounts: Option<String>,
    /// Read and not yet loaded: account, stream, stored state.
    page: std::collections::VecDeque<(String, String, Vec<u8>)>,
    /// The last stream read; `done` once a page came back short.
    after: String,
    done: bool,
}

impl Snapshots {
    pub fn new(accounts: Option<String>) -> Snapshots {
        Snapshots { accounts, page: Default::default(), after: String::new(), done: false }
    }

    /// The next stream up to `through` (included), or of all that are left: its account, its
    /// state, and the bytes its state took.
    pub fn next_through(
        &mut self,
        conn: &Connection,
        through: Option<&str>,
    ) -> Result<Option<(String, StreamState, usize)>, StoreError> {
        if self.page.is_empty() && !self.done {
            self.read_page(conn)?;
        }
        let Some((_, stream, _)) = self.page.front() else { return Ok(None) };
        if through.is_some_and(|through| stream.as_str() > through) {
            return Ok(None);
        }
        let (account, stream, state) = self.page.pop_front().expect("looked at above");
        let text = unpack(&stream, &state)?;
        Ok(Some((account, parse_text(&stream, &text)?, text.len())))
    }

    fn read_page(&mut self, conn: &Connection) -> Result<(), StoreError> {
        const PAGE: usize = 1_000;
        let mut statement = conn.prepare_cached(&format!(
            "SELECT account_id, stream, state FROM live_snapshot_streams
             WHERE stream > ?1 AND (CAST(?2 AS TEXT) IS NULL OR account_id IN {})
             ORDER BY stream LIMIT {PAGE}",
            crate::projections::json_array_elements(conn, "?2")
        ))?;
        let rows = statement.query_map(params![self.after, self.accounts], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        self.page = rows.collect::<Result<_, _>>()?;
        self.done = self.page.len() < PAGE;
        if let Some((_, stream, _)) = self.page.back() {
            self.after.clone_from(stream);
        }
        Ok(())
    }
}

/// One stream's state in the snapshot of its account's last archive.
pub fn stream_state(conn: &Connection, stream: &str) -> Result<Option<StreamState>, StoreError> {
    let state: Option<Vec<u8>> = conn
        .prepare_cached("SELECT state FROM live_snapshot_streams WHERE stream = ?1")?
        .query_row([stream], |row| row.get(0))
        .optional()?;
    state.map(|state| parse_state(stream, &state)).transpose()
}

/// One segment of an account, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SegmentRow {
    pub segment: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub sha256: String,
    pub archived_at: String,
}

/// The account's segments, oldest first.
pub fn segments(conn: &Connection, account: &str) -> Result<Vec<SegmentRow>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT segment, first_seq, through_seq, segment_sha256, archived_at FROM archives
         WHERE account_id = ?1 ORDER BY through_seq",
    )?;
    let rows = statement.query_map([account], |row| {
        Ok(SegmentRow {
            segment: row.get(0)?,
            first_seq: row.get(1)?,
            last_seq: row.get(2)?,
            sha256: row.get(3)?,
            archived_at: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The redactions that the live log's erasure events of `account` record (by position in its
/// log).
pub fn live_redactions(
    conn: &Connection,
    account: &str,
) -> Result<std::collections::HashMap<u64, Hash>, StoreError> {
    let mut walk = chain::Walk::new(0, GENESIS);
    let mut statement = conn.prepare(&format!(
        "SELECT event_type, data FROM events WHERE account = ?1 AND event_type IN ({})",
        chain::erasure_types_sql()
    ))?;
    let mut rows = statement.query_streamed([account])?;
    while let Some(row) = rows.next()? {
        let data = payload::text(row.get_ref(1)?)?;
        walk.note_erasure(0, row.get_ref(0)?.as_str()?, &data);
    }
    Ok(walk.redacted)
}

/// What the store's record of a segment (`archives`) says against the segment: `None` when
/// they agree (positions, links and the file's sha256), else what differs.
pub fn recorded_problem(conn: &Connection, report: &segment::Report) -> Result<Option<String>, StoreError> {
    let header = &report.header;
    let row: Option<(u64, Vec<u8>, Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT first_seq, previous_hash, through_hash, segment_sha256 FROM archives
             WHERE account_id = ?1 AND through_seq = ?2",
        )?
        .query_row(params![header.account, header.through_seq], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((first_seq, previous, through, sha256)) = row else {
        return Ok(Some(format!(
            "the store records no segment of account {} ending at seq {}",
            header.account, header.through_seq
        )));
    };
    if first_seq != header.first_seq
        || hex::encode(previous) != header.previous_hash
        || hex::encode(through) != header.through_hash
    {
        return Ok(Some("its header differs from the store's record of it".into()));
    }
    if sha256 != report.sha256 {
        return Ok(Some(format!(
            "its sha256 is {}, the store recorded {sha256} (rewritten since; its chain says whether what it holds changed)",
            report.sha256
        )));
    }
    Ok(None)
}

/// Checks the account's snapshot against the `LogArchived` event of its last archive (which the
/// chain covers): each stream's digest over its rows, or for a stream erased since (no salt
/// left) an erasure event of that stream after the cut, and the digest over all of them.
/// Answers the event's position and what does not match, if anything.
pub fn snapshot_problem(conn: &Connection, account: &str) -> Result<Option<(u64, String)>, StoreError> {
    let Some(cut) = cut(conn, account)? else { return Ok(None) };
    let recorded: Option<(u64, String)> = conn
        .prepare_cached(
            // The last archive's event is the account's last LogArchived.
            "SELECT seq, data FROM events WHERE account = ?1 AND seq > ?2 AND event_type = 'LogArchived'
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![account, cut.through_seq], |row| {
            Ok((row.get(0)?, payload::text(row.get_ref(1)?)?.into_owned()))
        })
        .optional()?;
    let Some((seq, data)) = recorded else {
        return Ok(Some((
            cut.through_seq + 1,
            "the live log has no LogArchived event for its last archive".into(),
        )));
    };
    let event: LogArchived = serde_json::from_str(&data)
        .map_err(|error| StoreError::Corrupt(format!("account {account}, event {seq}: {error}")))?;
    if event.through_seq != cut.through_seq || event.through_hash != hex::encode(cut.through_hash) {
        return Ok(Some((
            seq,
            "the store's record of the archive differs from its LogArchived event".into(),
        )));
    }
    // One pass in stream order, hashing as it goes (`snapshot_digest`'s order); the erased
    // streams (no salt) are checked after it, as no other statement may run on the connection
    // while the rows stream in.
    let mut statement = conn.prepare_cached(
        "SELECT stream, version, salt, digest, state FROM live_snapshot_streams WHERE account_id = ?1 ORDER BY stream",
    )?;
    let mut rows = statement.query_streamed([account])?;
    let mut digest = SnapshotDigest::default();
    let (mut problem, mut erased) = (None, Vec::new());
    while let Some(row) = rows.next()? {
        let (stream, version, salt, stored, state): (String, u64, Option<Vec<u8>>, Vec<u8>, Vec<u8>) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        match &salt {
            Some(salt) => {
                let sound = unpack(&stream, &state)
                    .is_ok_and(|state| stream_digest(salt, &stream, version, &state).as_slice() == stored);
                if !sound && problem.is_none() {
                    problem = Some(stream.clone());
                }
            }
            None => erased.push((stream.clone(), state)),
        }
        digest.add(&stream, version, &stored);
    }
    drop(rows);
    // An erased state must be the one the last erasure of its stream recorded (by the sha256 of
    // its text); an erasure made before they were recorded only has to be there.
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    let mut statement = conn.prepare_cached(&format!(
        "SELECT seq, event_type, data FROM events WHERE account = ?1 AND seq > ?2 AND event_type IN ({}) ORDER BY seq",
        chain::erasure_types_sql()
    ))?;
    let rows = statement.query_map(params![account, cut.through_seq], |row| {
        Ok((row.get(0)?, row.get(1)?, payload::text(row.get_ref(2)?)?.into_owned()))
    })?;
    for row in rows {
        let (seq, kind, data): (u64, String, String) = row?;
        let event = Event::decode(&kind, &data)
            .map_err(|error| StoreError::Corrupt(format!("account {account}, event {seq}: {error}")))?;
        for redaction in crate::domain::erasure::snapshot_redactions(&event) {
            recorded.insert(redaction.stream.clone(), redaction.redacted_sha256.clone());
        }
    }
    let mut erasure = conn.prepare_cached(&format!(
        "SELECT 1 FROM events WHERE stream = ?1 AND seq > ?2 AND event_type IN ({}) LIMIT 1",
        chain::erasure_types_sql()
    ))?;
    for (stream, state) in erased {
        let sound = match recorded.get(&stream) {
            Some(sha256) => unpack(&stream, &state)
                .is_ok_and(|text| hex::encode(Sha256::digest(text.as_bytes())) == *sha256),
            None => erasure.exists(params![stream, cut.through_seq])?,
        };
        if problem.is_none() && !sound {
            problem = Some(stream);
        }
    }
    let mut problem = problem
        .map(|stream| format!("the snapshot's state of stream {stream} was changed outside an erasure"));
    let (streams, digest) = digest.finish();
    if problem.is_none() && (hex::encode(digest) != event.snapshot_sha256 || streams != event.streams) {
        problem = Some("the snapshot's streams are not the ones its LogArchived event records".into());
    }
    Ok(problem.map(|why| (seq, why)))
}

/// A snapshot state as stored: its JSON text, deflated (service documents shrink about fivefold).
pub(crate) fn pack(state: &str) -> Vec<u8> {
    use std::io::Write;
    let mut out = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    out.write_all(state.as_bytes()).and_then(|_| out.finish()).expect("deflating into memory cannot fail")
}

/// A stored snapshot state's JSON text.
fn unpack(stream: &str, stored: &[u8]) -> Result<String, StoreError> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(stored)
        .read_to_string(&mut text)
        .map_err(|error| StoreError::Corrupt(format!("snapshot stream {stream}: {error}")))?;
    Ok(text)
}

/// A stored snapshot state, read.
fn parse_state(stream: &str, stored: &[u8]) -> Result<StreamState, StoreError> {
    parse_text(stream, &unpack(stream, stored)?)
}

/// A snapshot state's JSON text (`unpack`), read.
fn parse_text(stream: &str, text: &str) -> Result<StreamState, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("snapshot stream {stream}: {error}")))
}

/// Why an archive was not made.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "account {account}'s chain does not verify at seq {seq} ({reason}); nothing was archived — \
         see `ctxd verify --chain`"
    )]
    Broken { account: String, seq: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<super::db::Error> for ArchiveError {
    fn from(error: super::db::Error) -> Self {
        ArchiveError::Store(error.into())
    }
}

impl From<std::io::Error> for ArchiveError {
    fn from(error: std::io::Error) -> Self {
        ArchiveError::Store(error.into())
    }
}

/// One stream of a snapshot as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotStream {
    pub stream: String,
    pub version: u64,
    pub salt: chain::Salt,
    pub digest: Hash,
    /// `StreamState` as JSON, deflated (`pack`): off the writer, which only stores it.
    pub state: Vec<u8>,
    /// A service stream's contact key (as-of reads by contact key find it).
    pub contact_key: Option<String>,
}

/// The hash of one snapshot stream: its salt, then its id, version and rows.
pub fn stream_digest(salt: &[u8], stream: &str, version: u64, state: &str) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    for text in [stream.as_bytes(), &version.to_be_bytes(), state.as_bytes()] {
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text);
    }
    hasher.finalize().into()
}

/// The hash over a snapshot's streams (in stream order): each one's id, version and digest.
pub fn snapshot_digest<'a>(streams: impl Iterator<Item = (&'a str, u64, &'a [u8])>) -> Hash {
    let mut digest = SnapshotDigest::default();
    for (stream, version, stream_digest) in streams {
        digest.add(stream, version, stream_digest);
    }
    digest.finish().1
}

/// `snapshot_digest` built a stream at a time, in stream order.
#[derive(Default)]
struct SnapshotDigest {
    hasher: Sha256,
    streams: u64,
}

impl SnapshotDigest {
    fn add(&mut self, stream: &str, version: u64, digest: &[u8]) {
        self.hasher.update((stream.len() as u64).to_be_bytes());
        self.hasher.update(stream.as_bytes());
        self.hasher.update(version.to_be_bytes());
        self.hasher.update(digest);
        self.streams += 1;
    }

    /// How many streams, and the digest.
    fn finish(self) -> (u64, Hash) {
        (self.streams, self.hasher.finalize().into())
    }
}

/// How a previous snapshot stream is told unchanged (`prepare`).
enum Kept {
    /// By its digest, with this salt.
    Salted(Vec<u8>),
    /// An erased stream (its salt removed), by its text.
    Erased(String),
}

impl Kept {
    fn unchanged(&self, stream: &str, version: u64, digest: &Hash, state: &str) -> bool {
        match self {
            Kept::Salted(salt) => stream_digest(salt, stream, version, state) == *digest,
            Kept::Erased(text) => text == state,
        }
    }
}

/// An archive ready to commit: its segment written, its snapshot computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub account: String,
    /// The account's archive before this one (`None`: its first).
    pub previous: Option<u64>,
    /// The account's last position when it was prepared: an erasure after it would have
    /// changed what the segment holds.
    pub read_seq: u64,
    pub event: LogArchived,
    pub events: u64,
    /// Where the segment file is, and the archive directory it is in.
    pub path: PathBuf,
    pub directory: PathBuf,
    /// The segment's lock, held until the archive committed or failed.
    pub claim: Claim,
}

/// The lock on a prepared segment's file (`segment::locked_file`), released when the last copy
/// is dropped. Not part of what an archive is: any two compare equal.
#[derive(Clone)]
pub struct Claim(#[allow(dead_code, reason = "held for its lock, never read")] std::sync::Arc<std::fs::File>);

impl Claim {
    pub(super) fn new(file: std::fs::File) -> Claim {
        Claim(std::sync::Arc::new(file))
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

impl PartialEq for Claim {
    fn eq(&self, _: &Claim) -> bool {
        true
    }
}

/// A segment file that no committed archive records yet: removed when dropped unclaimed.
struct Unclaimed(Option<PathBuf>);

impl Unclaimed {
    fn claim(mut self) -> PathBuf {
        self.0.take().expect("claimed once")
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The time of an event as the store writes it.
fn time_text(time: DateTime<Utc>) -> String {
    format_time(time)
}

/// An archive being staged whose owner took no step for this long is taken for interrupted,
/// even if its owner seems alive.
const STAGE_STALE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Snapshot streams (and their bytes) written per step of the writer while an archive is staged:
/// about the cost of an ordinary group of writes.
pub const STAGE_STREAMS: usize = 1_000;
const STAGE_BYTES: usize = 4 << 20;

/// One step of staging a prepared archive's snapshot: rows at `through_seq`, above the account's
/// last committed archive, which no read sees until the archive's commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub account: String,
    pub through_seq: u64,
    /// The archive it follows and the position it was prepared at (`Prepared`).
    pub previous: Option<u64>,
    pub read_seq: u64,
    /// The first step takes the account's `archive_stages` row.
    pub first: bool,
    pub streams: Vec<SnapshotStream>,
    pub given: Vec<(String, String)>,
}

/// Refuses a step of an archive when the account's log changed in a way the prepared archive
/// does not survive: another archive was committed, or an erasure recorded, since it was read.
fn still_current(
    conn: &Connection,
    account: &str,
    previous: Option<u64>,
    read_seq: u64,
) -> Result<(), crate::store::WriteError> {
    let conflict = |why: &str| {
        DomainError::Conflict(format!(
            "account {account}: {why} while the archive was prepared; archive again"
        ))
    };
    let current = cut(conn, account)?.map(|cut| cut.through_seq);
    if current != previous {
        return Err(conflict("another archive was made").into());
    }
    let erased: bool = conn
        .prepare_cached(&format!(
            "SELECT 1 FROM events WHERE account = ?1 AND seq > ?2 AND event_type IN ({}) LIMIT 1",
            chain::erasure_types_sql()
        ))?
        .exists(params![account, read_seq])?;
    if erased {
        return Err(conflict("an erasure was recorded").into());
    }
    Ok(())
}

/// The account's archive being staged: (through_seq, owner, touched_at, abandoned).
fn stage_row(conn: &Connection, account: &str) -> Result<Option<(u64, String, String, bool)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT through_seq, owner, touched_at, abandoned FROM archive_stages WHERE account_id = ?1",
        )?
        .query_row([account], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<i64>(3)? != 0)))
        .optional()?)
}

/// Whether an archive being staged will take no further step: given up, silent for
/// `STAGE_STALE`, or its owner gone (on SQLite, another process than this one, which holds the
/// store alone; on PostgreSQL, a process whose writer has no session on the server).
fn stage_is_dead(
    conn: &Connection,
    owner: &str,
    touched_at: &str,
    abandoned: bool,
) -> Result<bool, StoreError> {
    if abandoned || *touched_at < *time_text(Utc::now() - STAGE_STALE) {
        return Ok(true);
    }
    if owner == super::process_id() {
        return Ok(false);
    }
    Ok(match conn.dialect() {
        super::db::Dialect::Sqlite => true,
        super::db::Dialect::Postgres => !conn
            .prepare_cached("SELECT 1 FROM pg_stat_activity WHERE application_name = ?1")?
            .exists([super::writer::session_name(owner)])?,
    })
}

/// Holds the account's turn to stage an archive at `through_seq` for this process: takes it on
/// the first step, and checks it is still held on the next ones.
fn hold_stage(
    conn: &Connection,
    account: &str,
    through_seq: u64,
    first: bool,
) -> Result<(), crate::store::WriteError> {
    // Real time, not the store's clock: this is a lease between processes, not a fact of the log.
    let touched = time_text(Utc::now());
    match (stage_row(conn, account)?, first) {
        (None, true) => {
            conn.execute(
                "INSERT INTO archive_stages (account_id, through_seq, owner, touched_at) VALUES (?1, ?2, ?3, ?4)",
                params![account, through_seq, super::process_id(), touched],
            )?;
        }
        (Some((held, owner, _, false)), false) if held == through_seq && owner == super::process_id() => {
            conn.execute(
                "UPDATE archive_stages SET touched_at = ?2 WHERE account_id = ?1",
                params![account, touched],
            )?;
        }
        (Some((_, owner, touched_at, abandoned)), true) => {
            let why = if stage_is_dead(conn, &owner, &touched_at, abandoned)? {
                "what an interrupted archive of it staged is being deleted"
            } else {
                "an archive of it is in progress"
            };
            return Err(DomainError::Conflict(format!("account {account}: {why}; try again shortly")).into());
        }
        (_, false) => {
            return Err(DomainError::Conflict(format!(
                "account {account}: the archive being staged was given up; archive again"
            ))
            .into());
        }
    }
    Ok(())
}

/// Writes one step of an archive's snapshot in the writer's transaction. No read sees these
/// rows before the archive's commit (`live_snapshot_streams`).
pub fn stage(conn: &Connection, stage: &Stage) -> Result<(), crate::store::WriteError> {
    let account = stage.account.as_str();
    still_current(conn, account, stage.previous, stage.read_seq)?;
    hold_stage(conn, account, stage.through_seq, stage.first)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO snapshot_streams (stream, through_seq, account_id, version, salt, digest, state, contact_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for stream in &stage.streams {
        insert.execute(params![
            stream.stream,
            stage.through_seq,
            account,
            stream.version,
            stream.salt.as_slice(),
            stream.digest.as_slice(),
            stream.state,
            stream.contact_key
        ])?;
    }
    // Facts of events that are still in the live log until the commit: reads that see them
    // early find them there too.
    let mut insert = conn.prepare_cached(
        "INSERT INTO snapshot_customer_services (account_id, customer_id, service_id) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    for (customer, service) in &stage.given {
        insert.execute(params![account, customer, service])?;
    }
    Ok(())
}

/// Gives up the account's archive being staged at `through_seq` (by this process): its rows are
/// deleted in steps (`drop_step`).
pub fn abandon(conn: &Connection, account: &str, through_seq: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE archive_stages SET abandoned = 1 WHERE account_id = ?1 AND through_seq = ?2 AND owner = ?3",
        params![account, through_seq, super::process_id()],
    )?;
    Ok(())
}

/// Commits a staged archive in the writer's transaction: checks that the account's log is still
/// as it was prepared from and that its snapshot was staged whole by this process, then records
/// the segment, which makes the staged snapshot the one reads see. The caller appends the
/// returned `LogArchived`. One short step, whatever the snapshot's size.
pub fn commit(
    conn: &Connection,
    prepared: &Prepared,
    now: DateTime<Utc>,
) -> Result<Event, crate::store::WriteError> {
    let account = prepared.account.as_str();
    let event = &prepared.event;
    still_current(conn, account, prepared.previous, prepared.read_seq)?;
    match stage_row(conn, account)? {
        Some((through, owner, _, false)) if through == event.through_seq && owner == super::process_id() => {}
        _ => {
            return Err(DomainError::Conflict(format!(
                "account {account}: the archive's snapshot was not staged whole; archive again"
            ))
            .into());
        }
    }
    conn.execute("DELETE FROM archive_stages WHERE account_id = ?1", [account])?;
    let hash = |text: &str| {
        hex::decode(text).map_err(|_| StoreError::Corrupt("an archive's hash is not hex".into()))
    };
    // After a first archive no stream has an older row; after a later one, the older rows of
    // the streams it wrote are deleted in steps, from the first stream on.
    let superseded_after = prepared.previous.map(|_| String::new());
    conn.execute(
        "INSERT INTO archives (account_id, first_seq, through_seq, previous_hash, through_hash,
                               through_recorded_at, segment, segment_sha256, archived_at, directory,
                               superseded_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            account,
            event.first_seq,
            event.through_seq,
            hash(&event.previous_hash)?,
            hash(&event.through_hash)?,
            event.through_recorded_at,
            event.segment,
            event.segment_sha256,
            time_text(now),
            prepared.directory.to_string_lossy().into_owned(),
            superseded_after
        ],
    )?;
    Ok(Event::LogArchived(event.clone()))
}

/// What an archive did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Archived {
    pub archived_events: u64,
    /// The segment's name in the archive directory; `None` when nothing was old enough.
    pub segment: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The streams the snapshot holds.
    pub snapshot_streams: u64,
    /// The position of the `LogArchived` event.
    pub seq: Option<u64>,
}

/// Archives `account`'s events recorded before `before`: prepares the archive from a read
/// snapshot (off the writer), then has the writer commit it as `request` makes it; the writer's steps
/// then delete the archived events (`Store::wake_steps`). A commit refused (the log changed
/// meanwhile) removes the segment it wrote.
pub async fn archive(
    store: &super::Store,
    account: &str,
    before: DateTime<Utc>,
    request: impl FnOnce(crate::domain::Command) -> super::WriteRequest + Send + 'static,
    now: DateTime<Utc>,
) -> Result<Archived, super::WriteError> {
    // One archive of an account at a time on this node (two would prepare from the same cut),
    // carried to its end even when the request that asked for it is gone.
    let Some(turn) = store.archive_turn(account) else {
        return Err(DomainError::Conflict(format!(
            "an archive of account {account} is in progress; try again once it is done"
        ))
        .into());
    };
    let (store, account) = (store.clone(), account.to_string());
    tokio::spawn(async move {
        let archived = archive_now(&store, &account, before, request, now).await;
        drop(turn);
        archived
    })
    .await
    .map_err(|_| super::WriteError::Unavailable)?
}

async fn archive_now(
    store: &super::Store,
    account: &str,
    before: DateTime<Utc>,
    request: impl FnOnce(crate::domain::Command) -> super::WriteRequest,
    now: DateTime<Utc>,
) -> Result<Archived, super::WriteError> {
    let Some(dir) = store.archive_dir().map(Path::to_path_buf) else {
        return Err(DomainError::Conflict(
            "this node has no archive directory: start it with --archive-dir (CTXD_ARCHIVE_DIR)".into(),
        )
        .into());
    };
    let owned = account.to_string();
    let started = std::time::Instant::now();
    {
        let (store, dir, account) = (store.clone(), dir.clone(), owned.clone());
        tokio::task::spawn_blocking(move || remove_unrecorded(&store, &dir, &account))
            .await
            .map_err(|_| super::WriteError::Unavailable)??;
    }
    // The snapshot's steps go to the writer while it is still being folded: one in hand at a
    // time, so that memory does not grow with the account.
    let (steps, mut stepped) = tokio::sync::mpsc::channel::<Stage>(1);
    let preparing = {
        let store = store.clone();
        tokio::spawn(async move {
            // One read snapshot (`Store::read`).
            store
                .read_large(move |conn| {
                    let mut hand = |stage| {
                        steps.blocking_send(stage).map_err(|_| {
                            StoreError::Io(std::io::Error::other("the archive's snapshot was refused a step"))
                        })
                    };
                    Ok(prepare(conn, &owned, before, &dir, now, &mut hand))
                })
                .await
        })
    };
    // Each step queues with every account's commands: the longest is what others waited for.
    let (mut longest, mut staged) = (std::time::Duration::ZERO, None);
    let mut outcome = Ok(());
    while let Some(stage) = stepped.recv().await {
        let step = std::time::Instant::now();
        let through_seq = stage.through_seq;
        let command =
            crate::domain::Command::StageArchive { account: account.to_string(), stage: Box::new(stage) };
        outcome = store.submit(system_request(command)).await.map(|_| ());
        longest = longest.max(step.elapsed());
        if outcome.is_err() {
            break;
        }
        staged = Some(through_seq);
    }
    // A step refused ends the preparation (its next hand fails).
    drop(stepped);
    let prepared =
        preparing.await.map_err(|_| super::WriteError::Unavailable)??.map_err(|error| match error {
            ArchiveError::Broken { .. } => super::WriteError::from(DomainError::Conflict(error.to_string())),
            ArchiveError::Store(error) => error.into(),
        });
    let prepared = match (outcome, prepared) {
        (Ok(()), Ok(prepared)) => prepared,
        (Err(error), _) | (Ok(()), Err(error)) => {
            // An interrupted archive's rows in the way are deleted in steps.
            store.wake_steps();
            if let Some(through_seq) = staged {
                give_up(store, account, through_seq).await;
            }
            return Err(error);
        }
    };
    let Some(prepared) = prepared else {
        let nothing = Archived {
            archived_events: 0,
            segment: None,
            first_seq: None,
            last_seq: None,
            snapshot_streams: 0,
            seq: None,
        };
        return Ok(nothing);
    };
    let path = prepared.path.clone();
    let archived = Archived {
        archived_events: prepared.events,
        segment: Some(prepared.event.segment.clone()),
        first_seq: Some(prepared.event.first_seq),
        last_seq: Some(prepared.event.through_seq),
        snapshot_streams: prepared.event.streams,
        seq: None,
    };
    let through_seq = prepared.event.through_seq;
    // Held until the commit's answer: the writer's copy may be dropped before its transaction ends.
    let _claim = prepared.claim.clone();
    // The staged rows the preparation's read kept in the WAL are copied back now, not in the
    // commit's step.
    store.checkpoint_beside_writer().await;
    let prepared_in = started.elapsed();
    let command =
        crate::domain::Command::Archive { account: account.to_string(), prepared: Box::new(prepared) };
    match store.submit(request(command)).await {
        Ok(outcome) => {
            tracing::info!(
                account,
                events = archived.archived_events,
                streams = archived.snapshot_streams,
                prepare_and_stage = ?prepared_in,
                longest_stage_step = ?longest,
                commit = ?(started.elapsed() - prepared_in),
                "archived; the archived events are deleted in steps"
            );
            store.wake_steps();
            Ok(Archived { seq: outcome.last_seq, ..archived })
        }
        Err(error) => {
            // Refused by the writer: not committed. Otherwise it may have been (the database
            // unreachable): the segment stays, unless the store says it records no such archive.
            let recorded = |store: &super::Store| {
                let name = archived.segment.clone().unwrap_or_default();
                store.read(|conn| {
                    Ok(conn
                        .prepare_cached("SELECT 1 FROM archives WHERE account_id = ?1 AND segment = ?2")?
                        .exists(params![account, name])?)
                })
            };
            let not_committed =
                matches!(error, super::WriteError::Domain(_)) || matches!(recorded(store), Ok(false));
            // An interrupted archive's rows in the way are deleted in steps.
            store.wake_steps();
            if not_committed {
                let _ = std::fs::remove_file(&path);
                give_up(store, account, through_seq).await;
            }
            Err(error)
        }
    }
}

/// Gives up an archive that failed after staging: what it staged is deleted in steps. If this
/// fails too, the stage is taken for interrupted once its owner is gone or silent.
async fn give_up(store: &super::Store, account: &str, through_seq: u64) {
    store.wake_steps();
    let command = crate::domain::Command::AbandonArchive { account: account.to_string(), through_seq };
    if let Err(error) = store.submit(system_request(command)).await {
        tracing::warn!(account, %error, "an archive that failed could not be given up");
    }
}

/// A command of ctxd's own that appends nothing (a step of an archive).
fn system_request(command: crate::domain::Command) -> super::WriteRequest {
    let meta = super::EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: crate::steps::ARCHIVE_ACTOR.into(),
        ..Default::default()
    };
    super::WriteRequest { command, meta, idempotency: None }
}

/// Erases `streams` of `account` from its archive: the snapshot's state of each (what the
/// erasure does to the projections, done to the state; its salt removed, its digest kept, as
/// an erased payload's) and, in every segment, the payloads of their events (each segment
/// rewritten whole, then renamed over the old one). Answers the redactions made in segments
/// and the sha256 of each redacted state, for the erasure event to record. A segment this node cannot reach fails the erasure: an
/// erasure is not done while a copy of the data remains.
pub fn erase_streams(
    conn: &Connection,
    account: &str,
    streams: &[(String, Event)],
) -> Result<crate::domain::erasure::Redacted, super::WriteError> {
    let mut redacted = crate::domain::erasure::Redacted::default();
    // Rows no read sees keep no copy of erased data: an older state the last archive superseded,
    // and an archive's being staged (which then cannot commit: an erasure came after it read).
    let mut others = conn.prepare_cached(
        "DELETE FROM snapshot_streams WHERE stream = ?1
           AND through_seq <> coalesce((SELECT through_seq FROM live_snapshot_streams WHERE stream = ?1), -1)",
    )?;
    for (stream, _) in streams {
        others.execute([stream])?;
    }
    if archived_through(conn, account)? == 0 {
        return Ok(redacted);
    }
    let mut holding = Vec::new();
    for (stream, erasure) in streams {
        let Some(state) = stream_state(conn, stream)? else { continue };
        holding.extend(state.segments.iter().copied());
        let (segments, given_to) = (state.segments.clone(), state.given_to.clone());
        let mut tables = MemoryTables::default();
        tables.load_stream(account, state);
        let at = time_text(Utc::now());
        // The erasure comes after every event the state holds.
        crate::projections::apply_ref(&mut tables, account, u64::MAX, &at, erasure)?;
        let mut state = tables.into_streams().remove(stream).map(|(_, state)| state).unwrap_or_default();
        (state.segments, state.given_to) = (segments, given_to);
        let text = serde_json::to_string(&state).expect("a stream state serializes");
        // The contact key goes with the state: an erasure redacts it.
        let contact_key = state.service.as_ref().and_then(|service| service.contact_key.clone());
        // The one row left of the stream is the one reads see.
        conn.execute(
            "UPDATE snapshot_streams SET state = ?1, salt = NULL, contact_key = ?2 WHERE stream = ?3",
            params![pack(&text), contact_key, stream],
        )?;
        let redacted_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        redacted
            .snapshot
            .push(crate::domain::erasure::SnapshotRedaction { stream: stream.clone(), redacted_sha256 });
    }
    let names: BTreeSet<&str> = streams.iter().map(|(stream, _)| stream.as_str()).collect();
    let mut statement = conn.prepare_cached(
        "SELECT directory, segment, through_seq FROM archives WHERE account_id = ?1 ORDER BY through_seq",
    )?;
    let rows: Vec<(String, String, u64)> = statement
        .query_map([account], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    // Only the segments that hold the streams' events.
    let holding: BTreeSet<u64> = holding.into_iter().collect();
    for (directory, name, through) in rows.into_iter().filter(|(_, _, through)| holding.contains(through)) {
        let path = Path::new(&directory).join(&name);
        let (made, sha256) = segment::redact(&path, &names).map_err(|error| {
            DomainError::Conflict(format!(
                "segment {} of this account's archive cannot be rewritten here ({error}); nothing was erased: \
                 run the erasure on a node that reaches the archive directory",
                path.display()
            ))
        })?;
        if !made.is_empty() {
            conn.execute(
                "UPDATE archives SET segment_sha256 = ?1 WHERE account_id = ?2 AND through_seq = ?3",
                params![sha256, account, through],
            )?;
        }
        redacted.payloads.extend(made);
    }
    Ok(redacted)
}

/// Files younger than this are left alone by `remove_unrecorded`: one just created is locked
/// a moment after it appears.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the files of `account`'s segment directory that no archive records and no process
/// is writing: what a process killed between writing a segment (or a segment's rewrite) and
/// committing it left, on either backend, on a directory of its own or one that nodes share.
/// A file being written is locked until its archive commits or fails (`segment::locked_file`);
/// so each file is locked first, and only then are the recorded segments read, in a read that
/// begins after the lock was taken — a segment whose archive committed before is seen there,
/// and one whose archive had not committed never will be (its process is gone).
fn remove_unrecorded(store: &super::Store, dir: &Path, account: &str) -> Result<usize, StoreError> {
    let folder = dir.join(segment::account_dir(account));
    let Ok(entries) = std::fs::read_dir(&folder) else { return Ok(0) };
    let mut leftovers = Vec::new();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age >= LEFTOVER_AGE));
        let Ok(file) = std::fs::File::open(entry.path()) else { continue };
        if old && file.try_lock().is_ok() {
            let name = format!("{}/{}", segment::account_dir(account), entry.file_name().to_string_lossy());
            leftovers.push((name, entry.path(), file));
        }
    }
    if leftovers.is_empty() {
        return Ok(0);
    }
    let recorded: BTreeSet<String> =
        store.read(|conn| segments(conn, account))?.into_iter().map(|row| row.segment).collect();
    let mut removed = 0;
    for (name, path, _lock) in leftovers {
        if !recorded.contains(&name) {
            tracing::info!(file = %path.display(), "removing a segment file no archive records and no process writes (left by a stop before its commit)");
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Events deleted per step of the writer: about the cost of an ordinary group.
pub const DROP_STEP: u64 = 2_000;

/// One step of what follows an archive, up to `limit` rows each: deletes the account's archived
/// events still in the live log (through the log's second door, `archive_in_progress`), the
/// snapshot rows its last archive superseded, and the rows of an archive of it being staged
/// that will not commit (`stage_is_dead`). Answers how many rows it deleted.
pub fn drop_step(conn: &Connection, account: &str, limit: u64) -> Result<u64, StoreError> {
    let through = archived_through(conn, account)?;
    let mut deleted = 0;
    if through > 0 {
        conn.execute("INSERT INTO archive_in_progress (\"only\") VALUES (1)", [])?;
        let events = conn.execute(
            "DELETE FROM events WHERE account = ?1 AND seq IN
                (SELECT seq FROM events WHERE account = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
            params![account, through, limit],
        );
        conn.execute("DELETE FROM archive_in_progress", [])?;
        deleted += events? as u64;
    }
    deleted += delete_superseded(conn, account, through, limit)?;
    if let Some((_, owner, touched_at, abandoned)) = stage_row(conn, account)?
        && stage_is_dead(conn, &owner, &touched_at, abandoned)?
    {
        // Marked, so that its owner, if it comes back, takes no further step.
        conn.execute("UPDATE archive_stages SET abandoned = 1 WHERE account_id = ?1", [account])?;
        let staged = conn.execute(
            "DELETE FROM snapshot_streams WHERE account_id = ?1 AND through_seq > ?2 AND stream IN
                (SELECT stream FROM snapshot_streams WHERE account_id = ?1 AND through_seq > ?2 LIMIT ?3)",
            params![account, through, limit],
        )? as u64;
        if staged == 0 {
            conn.execute("DELETE FROM archive_stages WHERE account_id = ?1", [account])?;
        }
        deleted += staged;
    }
    Ok(deleted)
}

/// Deletes the older rows of up to `limit` of the streams that the account's last archive
/// (`through`) wrote, going on from where the last step stopped (`archives.superseded_after`).
fn delete_superseded(conn: &Connection, account: &str, through: u64, limit: u64) -> Result<u64, StoreError> {
    let after: Option<String> = conn
        .prepare_cached("SELECT superseded_after FROM archives WHERE account_id = ?1 AND through_seq = ?2")?
        .query_row(params![account, through], |row| row.get(0))
        .optional()?
        .flatten();
    let Some(after) = after else { return Ok(0) };
    let streams: Vec<String> = conn
        .prepare_cached(
            "SELECT stream FROM snapshot_streams WHERE account_id = ?1 AND through_seq = ?2 AND stream > ?3
             ORDER BY stream LIMIT ?4",
        )?
        .query_map(params![account, through, after, limit], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut delete =
        conn.prepare_cached("DELETE FROM snapshot_streams WHERE stream = ?1 AND through_seq < ?2")?;
    let mut deleted = 0;
    for stream in &streams {
        deleted += delete.execute(params![stream, through])? as u64;
    }
    let next = (streams.len() as u64 == limit).then(|| streams.last().cloned()).flatten();
    conn.execute(
        "UPDATE archives SET superseded_after = ?3 WHERE account_id = ?1 AND through_seq = ?2",
        params![account, through, next],
    )?;
    Ok(deleted.max(streams.len() as u64))
}

/// The accounts with work left after an archive (`drop_step`): archived events still in the
/// live log, superseded snapshot rows, or an interrupted archive's staged rows.
pub fn accounts_to_drop(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT a.account_id FROM archives a
         WHERE a.through_seq = (SELECT max(through_seq) FROM archives WHERE account_id = a.account_id)
           AND (a.superseded_after IS NOT NULL
                OR EXISTS (SELECT 1 FROM events WHERE account = a.account_id AND seq <= a.through_seq))",
    )?;
    let mut accounts: BTreeSet<String> =
        statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
    let mut statement =
        conn.prepare("SELECT account_id, owner, touched_at, abandoned FROM archive_stages")?;
    let stages: Vec<(String, String, String, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (account, owner, touched_at, abandoned) in stages {
        if stage_is_dead(conn, &owner, &touched_at, abandoned != 0)? {
            accounts.insert(account);
        }
    }
    Ok(accounts.into_iter().collect())
}

/// The accounts whose retention asks for an archive now: their oldest live event is older
/// than their retention. Answers (account, the time before which to archive).
pub fn due_for_retention(
    conn: &Connection,
    now: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let mut statement = conn.prepare("SELECT account_id, retention_days FROM accounts WHERE retention_days IS NOT NULL ORDER BY account_id")?;
    let policies: Vec<(String, u32)> =
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut due = Vec::new();
    for (account, days) in policies {
        let before = now - chrono::Duration::days(i64::from(days));
        let after = archived_through(conn, &account)?;
        let oldest: Option<String> = conn
            .prepare_cached(
                "SELECT recorded_at FROM events WHERE account = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![account, after], |row| row.get(0))
            .optional()?;
        if oldest.is_some_and(|oldest| oldest < time_text(before)) {
            due.push((account, before));
        }
    }
    Ok(due)
}
