//! The hash chain that makes the log tamper-evident (docs/AUDIT.md).
//!
//! Every event stores `payload_hash`, the sha256 of its `data`, and `hash`, the sha256 of the
//! previous event's `hash` and of its own columns with the payload counted by `payload_hash`.
//! Changing any stored column breaks the event's own link or, for `hash`, the next one. An
//! erasure replaces a payload but keeps `payload_hash`, so the chain still links; the erasure
//! event records the sha256 of each redacted payload, and that event is itself in the chain.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::domain::Event;

pub type Hash = [u8; 32];

/// The `hash` before the first event.
pub const GENESIS: Hash = [0; 32];

/// The columns of one event row as stored, apart from its payload and hashes.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub seq: u64,
    pub account: &'a str,
    pub stream: &'a str,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub event_version: u32,
    pub meta: &'a str,
    pub recorded_at: &'a str,
}

/// sha256 of a payload, as stored in `payload_hash`.
pub fn payload_hash(data: &str) -> Hash {
    Sha256::digest(data.as_bytes()).into()
}

/// The `hash` of an event: its predecessor's hash, then each column, texts length-prefixed so
/// that no two rows hash the same input.
pub fn link(previous: &Hash, columns: &Columns<'_>, payload_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(columns.seq.to_le_bytes());
    for text in [columns.account, columns.stream] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(columns.stream_version.to_le_bytes());
    hasher.update((columns.event_type.len() as u64).to_le_bytes());
    hasher.update(columns.event_type.as_bytes());
    hasher.update(columns.event_version.to_le_bytes());
    hasher.update(payload_hash);
    for text in [columns.meta, columns.recorded_at] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

/// The hash of the last event (`GENESIS` for an empty log).
pub fn head(conn: &Connection) -> Result<Hash, StoreError> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT hash FROM events ORDER BY seq DESC LIMIT 1", [], |row| row.get(0))
        .optional()?;
    match stored {
        None => Ok(GENESIS),
        Some(bytes) => bytes.try_into().map_err(|_| StoreError::Corrupt("the last event has no hash".into())),
    }
}

const SELECT_ROWS: &str =
    "SELECT seq, account, stream, stream_version, event_type, event_version, data, meta,
        recorded_at, payload_hash, hash FROM events ORDER BY seq";

/// The columns and the payload of a row of `SELECT_ROWS`.
fn read_row<'r>(row: &'r rusqlite::Row<'_>) -> Result<(Columns<'r>, &'r str), StoreError> {
    let text = |index| row.get_ref(index).and_then(|value| value.as_str().map_err(Into::into));
    let columns = Columns {
        seq: row.get(0)?,
        account: text(1)?,
        stream: text(2)?,
        stream_version: row.get(3)?,
        event_type: text(4)?,
        event_version: row.get(5)?,
        meta: text(7)?,
        recorded_at: text(8)?,
    };
    Ok((columns, text(6)?))
}

/// Hashes the events written before the chain existed (migration 0005), in seq order.
pub fn backfill(conn: &Connection) -> Result<(), StoreError> {
    let mut previous = GENESIS;
    let mut update = conn.prepare("UPDATE events SET payload_hash = ?1, hash = ?2 WHERE seq = ?3")?;
    let mut select = conn.prepare(SELECT_ROWS)?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let (columns, data) = read_row(row)?;
        let payload = payload_hash(data);
        previous = link(&previous, &columns, &payload);
        update.execute(params![payload.as_slice(), previous.as_slice(), columns.seq])?;
    }
    Ok(())
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainReport {
    pub events: u64,
    /// Seq and hash of the last event: keep them elsewhere to detect a later truncation.
    pub last_seq: u64,
    pub head: Hash,
    /// The first event that does not verify, and why.
    pub first_bad: Option<(u64, String)>,
}

/// Walks the whole log in seq order, recomputing every payload hash and link. Run it inside a
/// read transaction so that it sees one snapshot.
pub fn verify(conn: &Connection) -> Result<ChainReport, StoreError> {
    let mut report = ChainReport { events: 0, last_seq: 0, head: GENESIS, first_bad: None };
    // Payloads whose hash no longer matches: sound only if a later erasure redacted them to
    // exactly this content.
    let mut changed: Vec<(u64, Hash)> = Vec::new();
    let mut redacted: HashMap<u64, Hash> = HashMap::new();
    let mut select = conn.prepare(SELECT_ROWS)?;
    let mut rows = select.query([])?;
    let bad = |seq: u64, why: String, report: &mut ChainReport| {
        if report.first_bad.as_ref().is_none_or(|(first, _)| seq < *first) {
            report.first_bad = Some((seq, why));
        }
    };
    while let Some(row) = rows.next()? {
        let (columns, data) = read_row(row)?;
        let seq = columns.seq;
        if seq != report.last_seq + 1 {
            bad(
                report.last_seq + 1,
                format!("events {} to {} are missing", report.last_seq + 1, seq - 1),
                &mut report,
            );
        }
        let stored_payload: Vec<u8> = row.get(9)?;
        let stored_hash: Vec<u8> = row.get(10)?;
        let actual = payload_hash(data);
        if stored_payload != actual {
            changed.push((seq, actual));
        }
        let payload: Hash = stored_payload.as_slice().try_into().unwrap_or(actual);
        let expected = link(&report.head, &columns, &payload);
        if stored_hash != expected {
            bad(seq, "its hash does not match its content and the previous event's hash".into(), &mut report);
        }
        if ERASURE_TYPES.contains(&columns.event_type) {
            match Event::decode(columns.event_type, data) {
                Ok(event) => redacted.extend(erasure_list(&event)),
                Err(error) => bad(seq, format!("its payload does not read: {error}"), &mut report),
            }
        }
        report.head = stored_hash.as_slice().try_into().unwrap_or(expected);
        report.last_seq = seq;
        report.events += 1;
    }
    for (seq, actual) in changed {
        if redacted.get(&seq) != Some(&actual) {
            bad(seq, "its payload was changed outside an erasure".into(), &mut report);
        }
    }
    Ok(report)
}

/// The event types that record an erasure.
const ERASURE_TYPES: &[&str] = &["CustomerErased", "SessionErased"];

/// The payloads an erasure event redacted, with the sha256 of each redacted form.
fn erasure_list(event: &Event) -> Vec<(u64, Hash)> {
    let redactions = match event {
        Event::CustomerErased(erased) => &erased.redacted,
        Event::SessionErased(erased) => &erased.redacted,
        _ => return Vec::new(),
    };
    let decode = |text: &str| -> Option<Hash> { hex::decode(text).ok()?.try_into().ok() };
    redactions.iter().filter_map(|r| Some((r.seq, decode(&r.redacted_sha256)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::{MIGRATIONS, migrate};

    /// A store written before the chain existed (schema 4), with three events.
    fn store_before_the_chain() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .unwrap();
        for migration in MIGRATIONS.iter().filter(|m| m.version <= 4) {
            conn.execute_batch(migration.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version VALUES (?1, ?2, 'then')",
                (migration.version, migration.name),
            )
            .unwrap();
        }
        for seq in 1..=3 {
            conn.execute(
                "INSERT INTO events (seq, account, stream, stream_version, event_type, event_version, data, meta, recorded_at)
                 VALUES (?1, 'a', 'account/a', ?1, 'AccountCreated', 1, '{\"account_id\":\"a\"}', '{\"actor\":\"admin\"}',
                         '2026-01-01T00:00:00.000000Z')",
                [seq],
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn migrating_an_existing_log_chains_it_and_then_keeps_it_append_only() {
        let mut conn = store_before_the_chain();
        migrate(&mut conn).unwrap();
        let report = verify(&conn).unwrap();
        assert_eq!((report.events, report.last_seq, report.first_bad.clone()), (3, 3, None));
        let columns = Columns {
            seq: 1,
            account: "a",
            stream: "account/a",
            stream_version: 1,
            event_type: "AccountCreated",
            event_version: 1,
            meta: r#"{"actor":"admin"}"#,
            recorded_at: "2026-01-01T00:00:00.000000Z",
        };
        let first: Vec<u8> =
            conn.query_row("SELECT hash FROM events WHERE seq = 1", [], |row| row.get(0)).unwrap();
        assert_eq!(first, link(&GENESIS, &columns, &payload_hash(r#"{"account_id":"a"}"#)));
        assert_eq!(head(&conn).unwrap(), report.head);
        for sql in
            ["UPDATE events SET hash = x'00' WHERE seq = 2", "UPDATE events SET data = '{}' WHERE seq = 2"]
        {
            let error = conn.execute(sql, []).unwrap_err().to_string();
            assert!(error.contains("append-only"), "{error}");
        }
    }

    #[test]
    fn a_missing_event_and_a_redaction_without_a_record_are_reported() {
        let mut conn = store_before_the_chain();
        migrate(&mut conn).unwrap();
        conn.execute_batch("DROP TRIGGER events_are_append_only_delete; DELETE FROM events WHERE seq = 2")
            .unwrap();
        let report = verify(&conn).unwrap();
        assert_eq!(report.first_bad.map(|(seq, _)| seq), Some(2));

        let mut conn = store_before_the_chain();
        migrate(&mut conn).unwrap();
        // The erasure door alone (a permit row, as an erasure opens it) does not make a
        // redaction valid: the chain wants an erasure event that records it.
        crate::store::log::redact_payload(&conn, 3, r#"{"account_id":"[erased]"}"#).unwrap();
        let report = verify(&conn).unwrap();
        assert_eq!(report.first_bad.map(|(seq, _)| seq), Some(3));
    }
}
