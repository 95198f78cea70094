//! `ctxd export` and `ctxd import`: the event log as NDJSON, one event per line with every
//! stored column (but the internal store-wide id), so that a store or one account's log can be
//! archived, inspected with ordinary tools, or moved to another store and rebuilt there
//! (docs/AUDIT.md).
//!
//! `data` and `meta` travel as raw JSON: an export writes exactly the stored text and an import
//! stores exactly the text it reads, never re-serialized, so every payload hash and link of the
//! chain is the same on both sides and the imported chain verifies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::ops::Range;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use chrono::DateTime;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;
use super::chain::{self, Hash};
use super::log;
use crate::domain::Event;
use crate::domain::names::check_name;
use crate::projections::Events;

/// Which events an export writes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this account's log (the whole log moves a tenant to another store).
    pub account: Option<String>,
    /// Only the account's events after this position (0: from the first); such an export
    /// cannot be imported. Ignored without `account`.
    pub after: u64,
}

/// What an import stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub events: u64,
    /// Each imported account's chain, as `ctxd verify --chain` reports it, in account order.
    pub accounts: Vec<chain::ChainReport>,
    /// Where the time went, for the benchmark and the command's report.
    pub phases: Phases,
}

/// The time of each step of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// Reading, parsing and inserting the lines.
    pub insert: Duration,
    /// `chain::verify` over the inserted log.
    pub chain: Duration,
    /// `projections::rebuild_within`.
    pub rebuild: Duration,
    pub commit: Duration,
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse + insert {:.1} s, chain check {:.1} s, rebuild {:.1} s, commit {:.1} s",
            self.insert.as_secs_f64(),
            self.chain.as_secs_f64(),
            self.rebuild.as_secs_f64(),
            self.commit.as_secs_f64()
        )
    }
}

/// Why an export or an import stopped. An import that fails leaves the store as it was.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error(
        "the store already holds account {0}: an account is imported only into a store that does not hold it; nothing was imported"
    )]
    AccountExists(String),
    #[error("the input holds no event")]
    NoEvents,
    #[error(
        "an imported account's API key, or another value that must be unique in the store, is already in use here; nothing was imported"
    )]
    Clash,
    #[error(
        "account {account}: the imported hash chain is broken at seq {seq}: {reason}; nothing was imported"
    )]
    ChainBroken { account: String, seq: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for TransferError {
    fn from(error: rusqlite::Error) -> Self {
        TransferError::Store(StoreError::Sqlite(error))
    }
}

impl From<std::io::Error> for TransferError {
    fn from(error: std::io::Error) -> Self {
        TransferError::Store(StoreError::Io(error))
    }
}

/// One line of an export: one event row, every column but the store-wide id.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    /// The position in the account's log.
    seq: u64,
    #[serde(borrow)]
    account: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    stream_version: u64,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    event_version: u32,
    /// The payload as stored: compact JSON text, passed on unparsed.
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    meta: &'a RawValue,
    /// The stored text, unchanged (it is hashed as text).
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    /// Hex of the 32 stored bytes.
    #[serde(borrow)]
    payload_hash: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

const COLUMNS: &str = "seq, account, stream, stream_version, event_type, event_version, data, meta,
    recorded_at, payload_hash, hash";

/// Writes the selected events to `out` in commit order, one JSON object per line, from one read
/// snapshot of `conn` (so it may run beside a live server), streaming rows: memory stays
/// constant whatever the size of the log. Returns the number of events written.
pub fn export(conn: &Connection, selection: &Selection, out: &mut impl Write) -> Result<u64, TransferError> {
    conn.execute_batch("BEGIN")?;
    let result = export_in_snapshot(conn, selection, out);
    conn.execute_batch("COMMIT")?;
    result
}

fn export_in_snapshot(
    conn: &Connection,
    selection: &Selection,
    out: &mut impl Write,
) -> Result<u64, TransferError> {
    // Two statements rather than one with an optional filter: SQLite plans a statement once, and
    // only the one that names the account can use the `(account, seq)` index.
    let filter = match selection.account {
        None => "?1 >= 0 AND ?2 IS NULL ORDER BY id",
        Some(_) => "account = ?2 AND seq > ?1 ORDER BY seq",
    };
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM events WHERE {filter}"))?;
    let after = i64::try_from(selection.after).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![after, selection.account])?;
    let mut written = 0;
    while let Some(row) = rows.next()? {
        let seq: u64 = row.get(0)?;
        let text = |index| row.get_ref(index).and_then(|value| value.as_str().map_err(Into::into));
        let json = |index, column| stored_json(seq, column, text(index)?);
        let hex = |index, column| {
            stored_hash_hex(seq, column, row.get_ref(index)?.as_blob().map_err(rusqlite::Error::from)?)
        };
        let (payload_hash, hash) = (hex(9, "payload_hash")?, hex(10, "hash")?);
        let line = Line {
            seq,
            account: Cow::Borrowed(text(1)?),
            stream: Cow::Borrowed(text(2)?),
            stream_version: row.get(3)?,
            event_type: Cow::Borrowed(text(4)?),
            event_version: row.get(5)?,
            data: json(6, "data")?,
            meta: json(7, "meta")?,
            recorded_at: Cow::Borrowed(text(8)?),
            payload_hash: Cow::Borrowed(std::str::from_utf8(&payload_hash).expect("hex is ASCII")),
            hash: Cow::Borrowed(std::str::from_utf8(&hash).expect("hex is ASCII")),
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

/// A stored JSON column as a raw value, refused unless it is valid JSON with nothing around
/// it: the exported text must be the stored text byte for byte.
fn stored_json<'a>(seq: u64, column: &str, stored: &'a str) -> Result<&'a RawValue, TransferError> {
    let corrupt = |why: String| StoreError::Corrupt(format!("event {seq}: its {column} {why}"));
    let raw: &RawValue =
        serde_json::from_str(stored).map_err(|error| corrupt(format!("is not JSON: {error}")))?;
    if raw.get().len() != stored.len() {
        return Err(corrupt("has whitespace around its JSON value".into()).into());
    }
    Ok(raw)
}

fn stored_hash_hex(seq: u64, column: &str, stored: &[u8]) -> Result<[u8; 64], TransferError> {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(stored, &mut hex)
        .map_err(|_| StoreError::Corrupt(format!("event {seq}: its {column} is not 32 bytes")))?;
    Ok(hex)
}

/// Loads an export into the store of `conn` (a writer connection; no server may run on the
/// store), checks the chain of each account it loaded and brings their projections up.
///
/// The input holds whole account logs: each account's events with seqs consecutive from 1 (a
/// store's export, or `ctxd export --account`), none of them an account the store holds. One
/// transaction for the whole import, not one per batch of lines: events can never be deleted
/// (the append-only triggers), so a failure after a first committed batch would leave rows that
/// nothing may remove. In one transaction a bad line, a broken chain or a failed rebuild leaves
/// the store exactly as it was.
pub fn import(conn: &mut Connection, input: impl BufRead + Send) -> Result<Imported, TransferError> {
    // That one transaction may write a whole store. In WAL mode each page would be written twice,
    // into the WAL (as large as the store) and again by the checkpoint after the commit; with a
    // rollback journal the pages of an empty store go straight into the file, since pages added
    // to a file need no journal (measured on 1,000,000 events: the commit's 2 s down to 0.4 s,
    // and no WAL as large as the store on disk). The data dir's lock keeps servers away; if a
    // reader (`ctxd verify`) has the file open, the mode cannot change and the import runs in
    // WAL mode, only slower. A larger page cache keeps the `(stream, stream_version)` index,
    // which grows in random order, in memory (measured: 9.4 s of inserts down to 6.8 s); the
    // connection keeps it, as it is meant for this import.
    let rollback_journal = set_journal_mode(conn, "delete");
    conn.execute_batch("PRAGMA cache_size = -262144;")?;
    let imported = import_in_one_transaction(conn, input);
    if rollback_journal && !set_journal_mode(conn, "wal") {
        tracing::warn!("the store stays in rollback-journal mode until it is next opened for writing");
    }
    imported
}

/// Sets the journal mode, unless another connection has the file open; answers whether it did.
fn set_journal_mode(conn: &Connection, mode: &str) -> bool {
    let now = conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |row| row.get::<_, String>(0));
    now.is_ok_and(|now| now.eq_ignore_ascii_case(mode))
}

fn import_in_one_transaction(
    conn: &mut Connection,
    input: impl BufRead + Send,
) -> Result<Imported, TransferError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let first_id = log::last_id(&tx)? + 1;
    let mut lap = Instant::now();
    let mut took = || std::mem::replace(&mut lap, Instant::now()).elapsed();
    let (events, mut accounts) = insert_lines(&tx, input, first_id)?;
    if events == 0 {
        return Err(TransferError::NoEvents);
    }
    let insert = took();
    accounts.sort();
    let mut reports = Vec::with_capacity(accounts.len());
    for account in &accounts {
        let report = chain::verify(&tx, account)?;
        if let Some((seq, reason)) = report.first_bad {
            return Err(TransferError::ChainBroken { account: account.clone(), seq, reason });
        }
        reports.push(report);
    }
    let chain = took();
    let built = if first_id == 1 {
        crate::projections::rebuild_within(&tx).map(drop)
    } else {
        // The store's other accounts keep their projections; the new ones start from none.
        crate::projections::fold(&tx, Events::Accounts(&accounts))
            .and_then(|(tables, _)| tables.write_to(&tx))
    };
    built.map_err(|error| match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            TransferError::Clash
        }
        other => other.into(),
    })?;
    let rebuild = took();
    tx.commit()?;
    let phases = Phases { insert, chain, rebuild, commit: took() };
    Ok(Imported { events, accounts: reports, phases })
}

/// Lines parsed per batch handed from the parsing thread to the inserting one.
const BATCH_LINES: usize = 1024;

/// Lines parsed and checked, on their way to the inserting thread: their texts in one string
/// (one allocation per batch rather than six per event, which the other thread would free).
#[derive(Default)]
struct Batch {
    texts: String,
    rows: Vec<Row>,
}

/// One event of a batch.
struct Row {
    /// The line it was read from.
    line: u64,
    seq: u64,
    stream_version: u64,
    event_version: u32,
    payload_hash: Hash,
    hash: Hash,
    /// `account`, `stream`, `event_type`, `data`, `meta` and `recorded_at`, in `Batch::texts`.
    texts: [Range<usize>; 6],
}

impl Batch {
    fn push(&mut self, line: u64, event: &Line<'_>, payload_hash: Hash, hash: Hash) {
        let texts = [
            &event.account,
            &event.stream,
            &event.event_type,
            event.data.get(),
            event.meta.get(),
            &event.recorded_at,
        ]
        .map(|text| {
            let start = self.texts.len();
            self.texts.push_str(text);
            start..self.texts.len()
        });
        let (seq, stream_version, event_version) = (event.seq, event.stream_version, event.event_version);
        self.rows.push(Row { line, seq, stream_version, event_version, payload_hash, hash, texts });
    }
}

/// Inserts every line of `input`, the first with id `first_id`. A second thread reads and
/// parses the lines while this one inserts them, so that the two costs overlap. Returns the
/// number of events inserted and the accounts they belong to.
fn insert_lines(
    tx: &Connection,
    input: impl BufRead + Send,
    first_id: u64,
) -> Result<(u64, Vec<String>), TransferError> {
    let mut insert = tx.prepare(&format!(
        "INSERT INTO events ({COLUMNS}, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?;
    let mut held = tx.prepare("SELECT 1 FROM events WHERE account = ?1 LIMIT 1")?;
    let mut accounts = Vec::new();
    std::thread::scope(|scope| {
        let (batches, parsed) = std::sync::mpsc::sync_channel(4);
        scope.spawn(move || parse_lines(input, &batches));
        let mut inserted = 0;
        // An error returned here drops `parsed`, which stops the parsing thread at its next batch.
        for batch in parsed {
            let batch = batch?;
            for row in &batch.rows {
                let [account, stream, event_type, data, meta, recorded_at] =
                    row.texts.clone().map(|range| &batch.texts[range]);
                // Each account's first line has seq 1 (the parser checked): it is new here or refused.
                if row.seq == 1 {
                    if held.exists([account])? {
                        return Err(TransferError::AccountExists(account.to_string()));
                    }
                    accounts.push(account.to_string());
                }
                let values = params![
                    row.seq,
                    account,
                    stream,
                    row.stream_version,
                    event_type,
                    row.event_version,
                    data,
                    meta,
                    recorded_at,
                    row.payload_hash.as_slice(),
                    row.hash.as_slice(),
                    first_id + inserted,
                ];
                insert.execute(values).map_err(|error| TransferError::Line {
                    line: row.line,
                    reason: format!("it cannot be stored: {error}"),
                })?;
                inserted += 1;
            }
        }
        Ok((inserted, accounts))
    })
}

/// Reads, parses and checks the lines of `input`, sending them in batches, and an error as the
/// last batch if a line is wrong.
fn parse_lines(mut input: impl BufRead, batches: &SyncSender<Result<Batch, TransferError>>) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut batch = Batch::default();
    let (mut last_seqs, mut versions) = (HashMap::new(), HashMap::new());
    for line in 1.. {
        buffer.clear();
        let parsed = match input.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => parse_line(&buffer, line, (&mut last_seqs, &mut versions), &mut batch),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = parsed {
            let _ = batches.send(Err(error));
            return;
        }
        if batch.rows.len() == BATCH_LINES && batches.send(Ok(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
    let _ = batches.send(Ok(batch));
}

/// Parses line number `line` of the input into `batch`: the next event of its account's log
/// and of its stream, whose last seq and version so far `last_seqs` and `versions` hold.
fn parse_line(
    bytes: &[u8],
    line: u64,
    (last_seqs, versions): (&mut HashMap<String, u64>, &mut HashMap<String, u64>),
    batch: &mut Batch,
) -> Result<(), TransferError> {
    let at = |reason: String| TransferError::Line { line, reason };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|error| at(format!("it is not UTF-8: {error}")))?;
    if text.is_empty() {
        return Err(at("it is empty; every line must hold one event".into()));
    }
    let event: Line<'_> = serde_json::from_str(text).map_err(|error| at(not_an_event(&error)))?;
    check_name("account", &event.account).map_err(|error| at(error.to_string()))?;
    let last = last_seqs.get(event.account.as_ref()).copied().unwrap_or(0);
    if event.seq != last + 1 {
        return Err(at(out_of_sequence(&event.account, event.seq, last)));
    }
    let version = versions.get(event.stream.as_ref()).copied().unwrap_or(0);
    if event.stream_version != version + 1 {
        return Err(at(format!(
            "stream_version {} of stream {:?} follows its version {version}: versions must run 1, 2, 3, …",
            event.stream_version, event.stream
        )));
    }
    let written =
        DateTime::parse_from_rfc3339(&event.recorded_at).map(|time| log::format_time(time.to_utc()));
    if written.as_deref() != Ok(event.recorded_at.as_ref()) {
        return Err(at(format!(
            "recorded_at {:?} is not a time as ctxd writes it (RFC 3339, UTC, microseconds)",
            event.recorded_at
        )));
    }
    if !event.meta.get().starts_with('{') {
        return Err(at("meta is not a JSON object".into()));
    }
    match Event::decode(&event.event_type, event.data.get()) {
        Ok(decoded) if decoded.is_of(&event.account, &event.stream) => {}
        Ok(_) => {
            return Err(at(format!(
                "its stream {:?} or its payload is not one of account {:?}'s",
                event.stream, event.account
            )));
        }
        Err(error) => {
            return Err(at(format!("its payload does not read as a {}: {error}", event.event_type)));
        }
    }
    let payload_hash = parse_hash(&event.payload_hash).map_err(|why| at(format!("payload_hash {why}")))?;
    let hash = parse_hash(&event.hash).map_err(|why| at(format!("hash {why}")))?;
    match last {
        0 => last_seqs.insert(event.account.to_string(), 1),
        _ => last_seqs.get_mut(event.account.as_ref()).map(|seq| std::mem::replace(seq, event.seq)),
    };
    match version {
        0 => versions.insert(event.stream.to_string(), 1),
        _ => versions.get_mut(event.stream.as_ref()).map(|v| std::mem::replace(v, event.stream_version)),
    };
    batch.push(line, &event, payload_hash, hash);
    Ok(())
}

/// What serde_json found wrong with a line, by column: its own "line 1" would mislead.
fn not_an_event(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let what = message.strip_suffix(&position).unwrap_or(&message);
    format!("it is not a well-formed event: {what}, at column {}", error.column())
}

/// Why event `seq` of `account` cannot follow its event `last`: an import needs each account's
/// seqs 1, 2, 3 … in order.
fn out_of_sequence(account: &str, seq: u64, last: u64) -> String {
    let partial = "an export after a seq (`ctxd export --account … --after`) cannot be imported, \
                   only whole account logs";
    if last == 0 {
        format!("the first event of account {account:?} has seq {seq}, not 1: {partial}")
    } else {
        format!(
            "seq {seq} of account {account:?} follows its seq {last}: seqs must be consecutive; {partial}"
        )
    }
}

/// The 32 bytes of a hash written as 64 hex digits. By hand, with a table and no branch per
/// digit: `hex::decode_to_slice`, and a first version with a `match` per digit, cost about a
/// third of the parsing thread's time.
fn parse_hash(hex: &str) -> Result<Hash, String> {
    let digits = hex.as_bytes();
    let mut hash = [0u8; 32];
    let mut invalid = digits.len() != 64;
    if !invalid {
        for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
            let (high, low) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
            invalid |= (high | low) & NOT_HEX != 0;
            *byte = high << 4 | low;
        }
    }
    if invalid { Err(format!("is not 64 hex digits: {hex:?}")) } else { Ok(hash) }
}

/// Marks a byte that is not a hex digit in `HEX_VALUES` (no digit's value has this bit).
const NOT_HEX: u8 = 0x10;

/// The value of each byte as a hex digit, or `NOT_HEX`.
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut byte = 0;
    while byte < 256 {
        values[byte] = match byte as u8 {
            digit @ b'0'..=b'9' => digit - b'0',
            digit @ b'a'..=b'f' => digit - b'a' + 10,
            digit @ b'A'..=b'F' => digit - b'A' + 10,
            _ => NOT_HEX,
        };
        byte += 1;
    }
    values
};
