//! `ctxd export` and `ctxd import`: the event log as NDJSON, one event per line with every
//! stored column (but the internal store-wide id), so that a store or one account's log can be
//! archived, inspected with ordinary tools, or moved to another store and rebuilt there
//! (docs/AUDIT.md).
//!
//! `data` and `meta` travel as raw JSON: an export writes exactly the stored text and an import
//! stores exactly the text it reads, never re-serialized, so every payload hash and link of the
//! chain is the same on both sides and the imported chain verifies.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;
use super::chain;

/// Which events an export writes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this account's log (the whole log moves a tenant to another store).
    pub account: Option<String>,
    /// Only the account's events after this position (0: from the first); such an export
    /// cannot be imported. Ignored without `account`.
    pub after: u64,
    /// Only the account's events up to this position. Ignored without `account`.
    pub through: Option<u64>,
    /// Only the account's events of these streams (one conversation's). Ignored without
    /// `account`.
    pub streams: Option<Vec<String>>,
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
    #[error(
        "account {0} reads the same as account {1} (their ids differ only in case or character width): \
         one of them must be renamed before the import; nothing was imported"
    )]
    LookAlike(String, String),
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

impl From<crate::store::db::Error> for TransferError {
    fn from(error: crate::store::db::Error) -> Self {
        TransferError::Store(StoreError::Database(error))
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
    /// Hex of the 16 bytes hashed before the payload; absent for an erased payload, and in
    /// exports from stores before salted hashes (an import salts those accounts anew).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    payload_salt: Option<Cow<'a, str>>,
}

const COLUMNS: &str = "seq, account, stream, stream_version, event_type, event_version, data, meta,
    recorded_at, payload_hash, hash, payload_salt";

mod export;
mod import;

pub use export::{export, export_within};
pub use import::import;

/// An event line of one of `streams` with its payload redacted (`domain::erasure`) and its
/// salt removed, and the redaction to record; `None` for any other line, or one with nothing
/// to redact. A line redacted before (no salt, its payload in redacted form) is answered as it
/// is, with its redaction: an erasure run again after a rollback records it again.
pub fn redacted_line(
    text: &str,
    streams: &std::collections::BTreeSet<&str>,
) -> Result<Option<(String, crate::domain::erasure::Redaction)>, StoreError> {
    if text.starts_with(r#"{"ctxd_segment":"#) {
        return Ok(None);
    }
    let mut line: Line<'_> = serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("a segment line: {error}")))?;
    if !streams.contains(line.stream.as_ref()) {
        return Ok(None);
    }
    let event = crate::domain::Event::decode(&line.event_type, line.data.get())
        .map_err(|error| StoreError::Corrupt(format!("seq {}: {error}", line.seq)))?;
    let redacted = crate::domain::erasure::redact(&event).data_json();
    if redacted == line.data.get() && line.payload_salt.is_some() {
        return Ok(None);
    }
    let raw = RawValue::from_string(redacted).expect("an event payload is JSON");
    line.data = &raw;
    line.payload_salt = None;
    let redaction = crate::domain::erasure::Redaction {
        seq: line.seq,
        redacted_sha256: hex::encode(chain::payload_hash(raw.get())),
    };
    let text = serde_json::to_string(&line).expect("a line serializes");
    Ok(Some((text, redaction)))
}

/// A file's bytes, decompressed when it is gzip (an archive segment) and read as is otherwise.
pub fn decompressed(file: std::fs::File) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(match gzip {
        true => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        false => Box::new(reader),
    })
}

/// An event line read back (a segment's), with its stored hashes decoded.
pub struct ParsedLine<'a> {
    pub seq: u64,
    pub account: Cow<'a, str>,
    pub data: &'a str,
    line: Line<'a>,
    payload_hash: Vec<u8>,
    hash: Vec<u8>,
    salt: Option<Vec<u8>>,
}

/// Parses one event line as `ctxd export` writes it.
pub fn parse_event(text: &str) -> Result<ParsedLine<'_>, String> {
    let line: Line<'_> = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let hex = |name: &str, text: &str| hex::decode(text).map_err(|_| format!("its {name} is not hex"));
    let payload_hash = hex("payload_hash", &line.payload_hash)?;
    let hash = hex("hash", &line.hash)?;
    let salt = line.payload_salt.as_deref().map(|salt| hex("payload_salt", salt)).transpose()?;
    Ok(ParsedLine {
        seq: line.seq,
        account: line.account.clone(),
        data: line.data.get(),
        payload_hash,
        hash,
        salt,
        line,
    })
}

impl ParsedLine<'_> {
    pub fn columns(&self) -> chain::Columns<'_> {
        let line = &self.line;
        chain::Columns {
            seq: line.seq,
            account: &line.account,
            stream: &line.stream,
            stream_version: line.stream_version,
            event_type: &line.event_type,
            event_version: line.event_version,
            meta: line.meta.get(),
            recorded_at: &line.recorded_at,
        }
    }

    pub fn stored(&self) -> chain::Stored<'_> {
        chain::Stored { payload_hash: &self.payload_hash, hash: &self.hash, salt: self.salt.as_deref() }
    }
}
