//! `ctxd export` and `ctxd import`: the event log as NDJSON, one event per line with every
//! stored column, so that a store can be archived, inspected with ordinary tools, or moved and
//! rebuilt elsewhere (docs/AUDIT.md).
//!
//! `data` and `meta` travel as raw JSON: an export writes exactly the stored text and an import
//! stores exactly the text it reads, never re-serialized, so every payload hash and link of the
//! chain is the same on both sides and the imported chain verifies.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use rusqlite::{Connection, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;
use super::chain::{self, Hash};
use super::log;

/// Which events an export writes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this account's events (an export that cannot be imported: its seqs have gaps).
    pub account: Option<String>,
    /// Only the events with a greater seq (0: from the first).
    pub after: u64,
}

/// What an import stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub events: u64,
    /// Seq and hash of the last event: the chain head, as `ctxd verify --chain` prints it.
    pub last_seq: u64,
    pub head: Hash,
}

/// Why an export or an import stopped. An import that fails leaves the store empty.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error(
        "the store already holds events (up to seq {0}): import only into an empty store, a fresh --data-dir"
    )]
    NotEmpty(u64),
    #[error("the input holds no event")]
    NoEvents,
    #[error("the imported log's hash chain is broken at seq {seq}: {reason}; nothing was imported")]
    ChainBroken { seq: u64, reason: String },
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

/// One line of an export: one event row, every column, in the order of the table.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
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

/// Writes the selected events to `out` in seq order, one JSON object per line, from one read
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
        None => "seq > ?1 AND ?2 IS NULL",
        Some(_) => "account = ?2 AND seq > ?1",
    };
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM events WHERE {filter} ORDER BY seq"))?;
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

/// Loads an export into the empty store of `conn` (a writer connection; no server may run on
/// the store), checks the chain of what it loaded and rebuilds the projections from it.
///
/// Each line must be a complete event, with seqs consecutive from 1: a partial export (by
/// account, or after a seq) cannot be imported, because the chain links every event to the one
/// before it.
///
/// One transaction for the whole import, not one per batch of lines: events can never be deleted
/// (the append-only triggers), so a failure after a first committed batch would leave rows that
/// nothing may remove. In one transaction a bad line, a broken chain or a failed rebuild leaves
/// the store exactly as empty as it was. The cost is one large transaction: its pages go through
/// the WAL, which grows to about the size of the store until the checkpoint when the
/// connection closes.
pub fn import(conn: &mut Connection, input: impl BufRead) -> Result<Imported, TransferError> {
    if let Ok(p) = std::env::var("IMPORT_PRAGMA") { conn.execute_batch(&p)?; }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing = log::last_seq(&tx)?;
    if existing > 0 {
        return Err(TransferError::NotEmpty(existing));
    }
    let t = std::time::Instant::now();
    let events = insert_lines(&tx, input)?;
    eprintln!("insert {:?}", t.elapsed());
    if events == 0 {
        return Err(TransferError::NoEvents);
    }
    let t = std::time::Instant::now();
    let report = chain::verify(&tx)?;
    eprintln!("chain {:?}", t.elapsed());
    if let Some((seq, reason)) = report.first_bad {
        return Err(TransferError::ChainBroken { seq, reason });
    }
    let t = std::time::Instant::now();
    crate::projections::rebuild_within(&tx)?;
    eprintln!("rebuild {:?}", t.elapsed());
    let t = std::time::Instant::now();
    tx.commit()?;
    eprintln!("commit {:?}", t.elapsed());
    Ok(Imported { events, last_seq: report.last_seq, head: report.head })
}

/// Parses and inserts every line of `input`, checking each as it goes. Returns the number of
/// events inserted.
fn insert_lines(tx: &Connection, mut input: impl BufRead) -> Result<u64, TransferError> {
    let mut insert = tx.prepare(&format!(
        "INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut line = 0;
    loop {
        buffer.clear();
        if input.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(line);
        }
        line += 1;
        let at = |reason: String| TransferError::Line { line, reason };
        let text = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = std::str::from_utf8(text).map_err(|error| at(format!("it is not UTF-8: {error}")))?;
        if text.is_empty() {
            return Err(at("it is empty; every line must hold one event".into()));
        }
        let event: Line<'_> =
            serde_json::from_str(text).map_err(|error| at(format!("it is not a complete event: {error}")))?;
        if event.seq != line {
            return Err(at(out_of_sequence(event.seq, line)));
        }
        let payload_hash =
            parse_hash(&event.payload_hash).map_err(|why| at(format!("payload_hash {why}")))?;
        let hash = parse_hash(&event.hash).map_err(|why| at(format!("hash {why}")))?;
        if std::env::var_os("NO_INSERT").is_some() { continue; }
        insert
            .execute(params![
                event.seq,
                event.account,
                event.stream,
                event.stream_version,
                event.event_type,
                event.event_version,
                event.data.get(),
                event.meta.get(),
                event.recorded_at,
                payload_hash.as_slice(),
                hash.as_slice(),
            ])
            .map_err(|error| at(format!("it cannot be stored: {error}")))?;
    }
}

/// Why line `line` cannot hold event `seq`: an import needs seqs 1, 2, 3, … one a line.
fn out_of_sequence(seq: u64, line: u64) -> String {
    let partial = "a partial export (`ctxd export --account` or `--after`) cannot be imported, \
                   only a whole log";
    if line == 1 {
        format!("the first event has seq {seq}, not 1: {partial}")
    } else {
        format!("seq {seq} follows seq {}: seqs must be consecutive; {partial}", line - 1)
    }
}

fn parse_hash(hex: &str) -> Result<Hash, String> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex, &mut hash).map_err(|_| format!("is not 64 hex digits: {hex:?}"))?;
    Ok(hash)
}
