//! Preparing an archive, off the writer (docs/ARCHITECTURE.md, "Archives"): the segment is
//! written and read back, then the snapshot is folded in stream order — each stream from its
//! row of the previous snapshot and its archived events — and every stream that changed is
//! handed to the writer, in steps, as soon as it is folded. Memory holds one stream's rows, the
//! account-wide ones (the account's row and keys, its settings, the analytics counters, customer
//! erasures in progress) and a page of each source, whatever the account's size; the streams'
//! digests, which the snapshot's digest takes in stream order, wait in a file beside the
//! segment.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{
    ArchiveError, Claim, Kept, Prepared, STAGE_BYTES, STAGE_STREAMS, SnapshotDigest, SnapshotStream, Stage,
    Unclaimed, cut, live_redactions, pack, parse_text, segment, stream_digest, time_text, unpack,
};
use crate::domain::Event;
use crate::domain::events::{LogArchived, account_stream_ranges};
use crate::projections::memory::{MemoryTables, StreamState};
use crate::store::StoreError;
use crate::store::chain::{self, GENESIS, Hash};
use crate::store::db::{Connection, params};
use crate::store::payload;

/// Rows of each source read per query.
const PAGE: usize = 2_000;

/// Prepares the archive of `account`'s events recorded before `before`: writes the segment into
/// `dir`, folds the snapshot and hands each step of it to `stage` as it is made (the first
/// takes the account's turn; at least one is handed). `None` when no event of the live log is
/// that old (nothing handed). Run it inside a read transaction (one snapshot of the log).
pub fn prepare(
    conn: &Connection,
    account: &str,
    before: DateTime<Utc>,
    dir: &Path,
    now: DateTime<Utc>,
    stage: &mut dyn FnMut(Stage) -> Result<(), StoreError>,
) -> Result<Option<Prepared>, ArchiveError> {
    let previous = cut(conn, account)?;
    let after = previous.as_ref().map_or(0, |cut| cut.through_seq);
    let previous_hash = previous.as_ref().map_or(GENESIS, |cut| cut.through_hash);
    let last = crate::store::log::last_seq(conn, account)?;
    let first_kept: Option<u64> = conn
        .prepare_cached("SELECT min(seq) FROM events WHERE account = ?1 AND seq > ?2 AND recorded_at >= ?3")?
        .query_row(params![account, after, time_text(before)], |row| row.get(0))?;
    let through = first_kept.map_or(last, |first| first - 1);
    if through <= after {
        return Ok(None);
    }
    let report = chain::verify_range(conn, account, (after, previous_hash), through)?;
    if let Some((seq, reason)) = report.first_bad {
        return Err(ArchiveError::Broken { account: account.to_string(), seq, reason });
    }
    let (through_hash, through_recorded_at): (Vec<u8>, String) = conn
        .prepare_cached("SELECT hash, recorded_at FROM events WHERE account = ?1 AND seq = ?2")?
        .query_row(params![account, through], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let header = segment::Header {
        account: account.to_string(),
        first_seq: after + 1,
        through_seq: through,
        previous_hash: hex::encode(previous_hash),
        through_hash: hex::encode(&through_hash),
        created_at: time_text(now),
    };
    let written = segment::write(conn, dir, &header)?;
    // Removed again on any error below: only a committed archive keeps its segment.
    let guard = Unclaimed(Some(written.path.clone()));
    // Read back before anything relies on it: every event there, the chain to through_hash.
    let check = segment::verify(&written.path, &live_redactions(conn, account)?)?;
    if check.events != through - after || check.first_bad.is_some() || check.sha256 != written.sha256 {
        return Err(StoreError::Corrupt(format!(
            "the segment written for account {account} does not read back whole ({} events of {}, {:?}); nothing was archived",
            check.events,
            through - after,
            check.first_bad
        ))
        .into());
    }

    let mut stager = Stager {
        next: Stage {
            account: account.to_string(),
            through_seq: through,
            previous: previous.as_ref().map(|cut| cut.through_seq),
            read_seq: last,
            first: true,
            streams: Vec::new(),
            given: Vec::new(),
        },
        bytes: 0,
        handed: false,
        stage,
    };
    let mut spill = DigestSpill::create(&written.path)?;
    let mut fold = Fold { account, through, tables: MemoryTables::default(), deferred: BTreeMap::new() };
    let mut sources = Sources::new(account, (after, through));
    let mut archived = 0;
    while let Some(stream) = sources.next_stream(conn)? {
        let mut open =
            Open { stream, version: 0, kept: None, segments: Vec::new(), given_to: BTreeSet::new() };
        let mut given = Vec::new();
        if let Some(row) = sources.snapshot_row(&open.stream) {
            fold.load(&mut open, row)?;
        }
        while let Some(event) = sources.event_of(conn, &open.stream)? {
            let decoded = Event::decode(&event.event_type, &event.data).map_err(|error| {
                StoreError::Corrupt(format!("account {account}, event {}: {error}", event.seq))
            })?;
            crate::projections::apply_ref(
                &mut fold.tables,
                account,
                event.seq,
                &event.recorded_at,
                &decoded,
            )?;
            open.version = event.version;
            // The customers archived events gave the service to (an erasure of any of them
            // finds the service's archived events).
            let customer = match &decoded {
                Event::ServiceStarted(e) => e.customer_id.as_ref().map(|customer| (customer, &e.service_id)),
                Event::ServiceAssociated(e) => Some((&e.customer_id, &e.service_id)),
                _ => None,
            };
            if let Some((customer, service)) = customer
                && open.given_to.insert(customer.clone())
            {
                given.push((customer.clone(), service.clone()));
            }
            archived += 1;
        }
        if let Some(done) = fold.close(open)? {
            spill.add(&done.stream, done.version, &done.digest)?;
            if let Some(changed) = done.changed {
                stager.stream(changed)?;
            }
        }
        for pair in given {
            stager.given(pair)?;
        }
    }
    // The streams whose rows later streams' events change, now that every event is folded.
    let mut deferred: Vec<Closed> = Vec::new();
    for mut closed in fold.finish()? {
        if let Some(changed) = closed.changed.take() {
            stager.stream(changed)?;
        }
        deferred.push(closed);
    }
    stager.finish()?;
    let (streams, digest) = spill.digest(deferred)?;
    let event = LogArchived {
        first_seq: after + 1,
        through_seq: through,
        previous_hash: header.previous_hash,
        through_hash: header.through_hash,
        through_recorded_at,
        segment: written.name,
        segment_sha256: written.sha256,
        streams,
        snapshot_sha256: hex::encode(digest),
    };
    Ok(Some(Prepared {
        account: account.to_string(),
        previous: previous.map(|cut| cut.through_seq),
        read_seq: last,
        event,
        events: archived,
        path: guard.claim(),
        directory: dir.to_path_buf(),
        claim: Claim::new(written.claim),
    }))
}

/// A stream being folded: its version, and what the previous snapshot held of it.
struct Open {
    stream: String,
    version: u64,
    /// The previous snapshot's row: version, digest, and how to tell the new state unchanged.
    kept: Option<(u64, Hash, Kept)>,
    segments: Vec<u64>,
    given_to: BTreeSet<String>,
}

/// A stream folded: its entry in the snapshot's digest, and its row when it changed.
struct Closed {
    stream: String,
    version: u64,
    digest: Hash,
    changed: Option<SnapshotStream>,
}

/// The snapshot's fold: the tables of the stream being folded and the account-wide ones, and
/// the streams whose state waits for the end (`deferred`).
struct Fold<'a> {
    account: &'a str,
    through: u64,
    tables: MemoryTables,
    deferred: BTreeMap<String, (Open, StreamState)>,
}

impl Fold<'_> {
    /// Loads a stream's row of the previous snapshot.
    fn load(&mut self, open: &mut Open, row: SnapshotRow) -> Result<(), StoreError> {
        let stream = &open.stream;
        let text = unpack(stream, &row.state)?;
        let mut state = parse_text(stream, &text)?;
        let digest = row.digest.try_into().map_err(|_| {
            StoreError::Corrupt(format!("snapshot stream {stream}: its digest is not 32 bytes"))
        })?;
        open.version = row.version;
        open.segments = std::mem::take(&mut state.segments);
        open.given_to = std::mem::take(&mut state.given_to).into_iter().collect();
        let compare = match row.salt {
            Some(salt) => Kept::Salted(salt),
            None => Kept::Erased(text),
        };
        open.kept = Some((row.version, digest, compare));
        self.tables.load_stream(self.account, state);
        Ok(())
    }

    /// Takes a folded stream's rows: closes it, or keeps it for the end when later streams'
    /// events may still change it (the account's and settings' streams, whose rows are
    /// account-wide, and a customer's whose erasure is in progress).
    fn close(&mut self, open: Open) -> Result<Option<Closed>, StoreError> {
        let mut rows = self.tables.take_stream_rows();
        let state = rows.remove(&open.stream).map(|(_, state)| state).unwrap_or_default();
        if let Some(stream) = rows.into_keys().next() {
            return Err(self.stray(&stream));
        }
        let account_wide = [
            crate::domain::events::account_stream(self.account),
            crate::domain::events::journey_settings_stream(self.account),
        ];
        if account_wide.contains(&open.stream) || self.tables.erasing(&open.stream) {
            self.deferred.insert(open.stream.clone(), (open, state));
            return Ok(None);
        }
        Ok(Some(self.closed(open, state)))
    }

    /// Closes the deferred streams, their account-wide rows put back with the rest of theirs.
    fn finish(mut self) -> Result<Vec<Closed>, StoreError> {
        let mut tables = std::mem::take(&mut self.tables);
        let mut deferred = std::mem::take(&mut self.deferred);
        for (_, state) in deferred.values_mut() {
            tables.load_stream(self.account, std::mem::take(state));
        }
        let mut states = tables.into_streams();
        let mut closed = Vec::with_capacity(deferred.len());
        for (stream, (open, _)) in deferred {
            let state = states.remove(&stream).map(|(_, state)| state).unwrap_or_default();
            closed.push(self.closed(open, state));
        }
        match states.into_keys().next() {
            Some(stream) => Err(self.stray(&stream)),
            None => Ok(closed),
        }
    }

    fn stray(&self, stream: &str) -> StoreError {
        StoreError::Corrupt(format!("account {}: rows of stream {stream} without its events", self.account))
    }

    /// The stream's new state: kept as it was when nothing changed, else a new row.
    fn closed(&self, open: Open, mut state: StreamState) -> Closed {
        let Open { stream, version, kept, segments, given_to } = open;
        state.given_to = given_to.into_iter().collect();
        state.segments = segments;
        // A stream whose version moved had events in this segment.
        if kept.as_ref().is_none_or(|(kept_version, _, _)| *kept_version != version) {
            state.segments.push(self.through);
        }
        let contact_key = state.service.as_ref().and_then(|service| service.contact_key.clone());
        let state = serde_json::to_string(&state).expect("a stream state serializes");
        match kept {
            Some((kept_version, digest, compare))
                if kept_version == version && compare.unchanged(&stream, version, &digest, &state) =>
            {
                Closed { stream, version, digest, changed: None }
            }
            _ => {
                let salt = chain::new_salt();
                let digest = stream_digest(&salt, &stream, version, &state);
                let row = SnapshotStream {
                    stream: stream.clone(),
                    version,
                    salt,
                    digest,
                    state: pack(&state),
                    contact_key,
                };
                Closed { stream, version, digest, changed: Some(row) }
            }
        }
    }
}

/// Hands the snapshot's changed streams to the writer in steps of at most `STAGE_STREAMS`
/// streams or `STAGE_BYTES`.
struct Stager<'a> {
    next: Stage,
    bytes: usize,
    handed: bool,
    stage: &'a mut dyn FnMut(Stage) -> Result<(), StoreError>,
}

impl Stager<'_> {
    fn stream(&mut self, stream: SnapshotStream) -> Result<(), StoreError> {
        let full = self.next.streams.len() == STAGE_STREAMS
            || (self.bytes + stream.state.len() > STAGE_BYTES && !self.next.streams.is_empty());
        if full {
            self.hand()?;
        }
        self.bytes += stream.state.len();
        self.next.streams.push(stream);
        Ok(())
    }

    fn given(&mut self, pair: (String, String)) -> Result<(), StoreError> {
        if self.next.given.len() == STAGE_STREAMS * 4 {
            self.hand()?;
        }
        self.next.given.push(pair);
        Ok(())
    }

    fn hand(&mut self) -> Result<(), StoreError> {
        let next = Stage { first: false, ..self.next.clone_empty() };
        (self.stage)(std::mem::replace(&mut self.next, next))?;
        self.bytes = 0;
        self.handed = true;
        Ok(())
    }

    /// Hands what is left (the first step at least: it takes the account's turn).
    fn finish(mut self) -> Result<(), StoreError> {
        if !self.handed || !self.next.streams.is_empty() || !self.next.given.is_empty() {
            self.hand()?;
        }
        Ok(())
    }
}

impl Stage {
    /// The same archive's step, with nothing in it.
    fn clone_empty(&self) -> Stage {
        Stage {
            account: self.account.clone(),
            through_seq: self.through_seq,
            previous: self.previous,
            read_seq: self.read_seq,
            first: self.first,
            streams: Vec::new(),
            given: Vec::new(),
        }
    }
}

/// The streams' digests in stream order, in a file beside the segment (removed when dropped):
/// the snapshot's digest takes every stream's, and the account's stream, the first, is closed
/// last.
struct DigestSpill {
    path: Unclaimed,
    out: BufWriter<std::fs::File>,
}

impl DigestSpill {
    fn create(segment: &Path) -> Result<DigestSpill, StoreError> {
        let mut path = segment.as_os_str().to_owned();
        path.push(".digests");
        let path = PathBuf::from(path);
        let file = segment::private_file(&path)?;
        Ok(DigestSpill { path: Unclaimed(Some(path)), out: BufWriter::new(file) })
    }

    fn add(&mut self, stream: &str, version: u64, digest: &Hash) -> Result<(), StoreError> {
        self.out.write_all(&(stream.len() as u64).to_be_bytes())?;
        self.out.write_all(stream.as_bytes())?;
        self.out.write_all(&version.to_be_bytes())?;
        self.out.write_all(digest)?;
        Ok(())
    }

    /// The snapshot's streams and digest: the spilled entries merged with `last` (in stream
    /// order) in stream order.
    fn digest(mut self, last: Vec<Closed>) -> Result<(u64, Hash), StoreError> {
        self.out.flush()?;
        let path = self.path.0.clone().expect("held until dropped");
        let mut input = BufReader::new(std::fs::File::open(&path)?);
        let mut digest = SnapshotDigest::default();
        let mut last = last.into_iter().peekable();
        while let Some((stream, version, hash)) = read_entry(&mut input)? {
            while let Some(closed) = last.next_if(|closed| closed.stream < stream) {
                digest.add(&closed.stream, closed.version, &closed.digest);
            }
            digest.add(&stream, version, &hash);
        }
        for closed in last {
            digest.add(&closed.stream, closed.version, &closed.digest);
        }
        Ok(digest.finish())
    }
}

fn read_entry(input: &mut impl Read) -> Result<Option<(String, u64, Hash)>, StoreError> {
    let mut length = [0u8; 8];
    match input.read_exact(&mut length) {
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut stream = vec![0u8; u64::from_be_bytes(length) as usize];
    let (mut version, mut digest) = ([0u8; 8], [0u8; 32]);
    input.read_exact(&mut stream)?;
    input.read_exact(&mut version)?;
    input.read_exact(&mut digest)?;
    let stream = String::from_utf8(stream).map_err(|_| StoreError::Corrupt("a spilled stream id".into()))?;
    Ok(Some((stream, u64::from_be_bytes(version), digest)))
}

/// A stream's row of the previous snapshot.
struct SnapshotRow {
    stream: String,
    version: u64,
    digest: Vec<u8>,
    state: Vec<u8>,
    salt: Option<Vec<u8>>,
}

/// An archived event, as read.
struct EventRow {
    stream: String,
    version: u64,
    seq: u64,
    event_type: String,
    data: String,
    recorded_at: String,
}

/// The account's previous snapshot rows and archived events, both in stream order, read a page
/// at a time over the ranges of stream ids that hold the account's streams, and only those
/// (an index range each: other accounts' rows are not read).
struct Sources {
    events: (u64, u64),
    ranges: Vec<(String, String)>,
    snapshot: Cursor<SnapshotRow>,
    archived: Cursor<EventRow>,
}

/// One source's page, and where the next starts: the range, and the last key read in it.
struct Cursor<T> {
    page: VecDeque<T>,
    range: usize,
    after: (String, u64),
}

impl<T> Default for Cursor<T> {
    fn default() -> Self {
        Cursor { page: VecDeque::new(), range: 0, after: (String::new(), 0) }
    }
}

impl Sources {
    fn new(account: &str, events: (u64, u64)) -> Sources {
        Sources {
            events,
            ranges: account_stream_ranges(account),
            snapshot: Cursor::default(),
            archived: Cursor::default(),
        }
    }

    /// The next stream that either source holds.
    fn next_stream(&mut self, conn: &Connection) -> Result<Option<String>, StoreError> {
        self.fill_snapshot(conn)?;
        self.fill_events(conn)?;
        let snapshot = self.snapshot.page.front().map(|row| &row.stream);
        let archived = self.archived.page.front().map(|row| &row.stream);
        Ok(match (snapshot, archived) {
            (Some(a), Some(b)) => Some(a.min(b).clone()),
            (a, b) => a.or(b).cloned(),
        })
    }

    /// The previous snapshot's row of `stream`, if it is the next one.
    fn snapshot_row(&mut self, stream: &str) -> Option<SnapshotRow> {
        self.snapshot.page.pop_front_if(|row| row.stream == stream)
    }

    /// The next archived event of `stream`.
    fn event_of(&mut self, conn: &Connection, stream: &str) -> Result<Option<EventRow>, StoreError> {
        self.fill_events(conn)?;
        Ok(self.archived.page.pop_front_if(|row| row.stream == stream))
    }

    fn fill_snapshot(&mut self, conn: &Connection) -> Result<(), StoreError> {
        while self.snapshot.page.is_empty() && self.snapshot.range < self.ranges.len() {
            let (from, to) = &self.ranges[self.snapshot.range];
            if self.snapshot.after.0.is_empty() {
                self.snapshot.after.0.clone_from(from);
            }
            // One bound below, one above: the primary key's range (the view's account
            // condition would make it read the account's rows and sort them).
            let mut statement = conn.prepare_cached(&format!(
                "SELECT stream, version, digest, state, salt FROM live_snapshot_streams
                 WHERE stream >= ?1 AND stream < ?2 ORDER BY stream LIMIT {PAGE}"
            ))?;
            let rows = statement.query_map(params![self.snapshot.after.0, to], |row| {
                Ok(SnapshotRow {
                    stream: row.get(0)?,
                    version: row.get(1)?,
                    digest: row.get(2)?,
                    state: row.get(3)?,
                    salt: row.get(4)?,
                })
            })?;
            self.snapshot.page = rows.collect::<Result<_, _>>()?;
            match self.snapshot.page.back() {
                // The next page starts just after it (no stream id holds a character below 1).
                Some(row) if self.snapshot.page.len() == PAGE => {
                    self.snapshot.after.0 = format!("{}\u{1}", row.stream);
                }
                _ => {
                    self.snapshot.range += 1;
                    self.snapshot.after.0.clear();
                }
            }
        }
        Ok(())
    }

    fn fill_events(&mut self, conn: &Connection) -> Result<(), StoreError> {
        while self.archived.page.is_empty() && self.archived.range < self.ranges.len() {
            let (from, to) = &self.ranges[self.archived.range];
            if self.archived.after.0.is_empty() {
                // Versions start at 1.
                self.archived.after = (from.clone(), 0);
            }
            // The `(stream, stream_version)` index's range, the positions checked row by row
            // (the account's position index would read its whole range and sort it).
            let mut statement = conn.prepare_cached(&format!(
                "SELECT stream, stream_version, seq, event_type, data, recorded_at FROM events
                 WHERE (stream, stream_version) > (?1, ?2) AND stream < ?3 AND seq > ?4 AND seq <= ?5
                 ORDER BY stream, stream_version LIMIT {PAGE}"
            ))?;
            let (after, through) = self.events;
            let (last_stream, last_version) = &self.archived.after;
            let mut rows = statement.query(params![last_stream, *last_version, to, after, through])?;
            let mut page = VecDeque::new();
            while let Some(row) = rows.next()? {
                page.push_back(EventRow {
                    stream: row.get(0)?,
                    version: row.get(1)?,
                    seq: row.get(2)?,
                    event_type: row.get(3)?,
                    data: payload::text(row.get_ref(4)?)?.into_owned(),
                    recorded_at: row.get(5)?,
                });
            }
            self.archived.page = page;
            match self.archived.page.back() {
                Some(row) if self.archived.page.len() == PAGE => {
                    self.archived.after = (row.stream.clone(), row.version);
                }
                _ => {
                    self.archived.range += 1;
                    self.archived.after = (String::new(), 0);
                }
            }
        }
        Ok(())
    }
}
