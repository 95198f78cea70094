//! The event log table: append, stream versions, and reading events back in order.
//! This is the only code that writes `events`, and it only inserts.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::domain::{Event, StreamVersion};

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub seq: u64,
    pub account: String,
    pub stream: String,
    pub stream_version: StreamVersion,
    pub event: Event,
    /// JSON: request id, idempotency key, actor, client address.
    pub meta: String,
    pub recorded_at: DateTime<Utc>,
}

/// The one text form of timestamps in the store: RFC 3339, UTC, microseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Current version of `stream` (0 if it has no events).
pub fn stream_version(conn: &Connection, stream: &str) -> Result<StreamVersion, StoreError> {
    let version: Option<u64> = conn
        .prepare_cached(
            "SELECT stream_version FROM events WHERE stream = ?1 ORDER BY stream_version DESC LIMIT 1",
        )?
        .query_row([stream], |row| row.get(0))
        .optional()?;
    Ok(version.unwrap_or(0))
}

/// Highest seq in the log (0 when empty).
pub fn last_seq(conn: &Connection) -> Result<u64, StoreError> {
    let seq: Option<u64> =
        conn.query_row("SELECT max(seq) FROM events", [], |row| row.get(0)).optional()?.flatten();
    Ok(seq.unwrap_or(0))
}

/// Inserts one event row.
pub fn append(conn: &Connection, recorded: &RecordedEvent) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (seq, account, stream, stream_version, event_type, event_version, data, meta, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        recorded.seq,
        recorded.account,
        recorded.stream,
        recorded.stream_version,
        recorded.event.event_type(),
        recorded.event.event_version(),
        recorded.event.data_json(),
        recorded.meta,
        format_time(recorded.recorded_at),
    ])?;
    Ok(())
}

/// Up to `limit` events with `after < seq <= up_to`, in seq order.
pub fn read_range(
    conn: &Connection,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, account, stream, stream_version, event_type, data, meta, recorded_at
         FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = statement.query_map(params![after, up_to, limit as i64], |row| {
        Ok((
            row.get::<_, u64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u64>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, String>(7)?,
        ))
    })?;
    let mut events = Vec::with_capacity(limit.min(65_536));
    for row in rows {
        let (seq, account, stream, stream_version, event_type, data, meta, recorded_at) = row?;
        let event = Event::decode(&event_type, &data)
            .map_err(|error| StoreError::Corrupt(format!("event {seq}: {error}")))?;
        let recorded_at = DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|error| StoreError::Corrupt(format!("event {seq}: recorded_at: {error}")))?
            .with_timezone(&Utc);
        events.push(RecordedEvent { seq, account, stream, stream_version, event, meta, recorded_at });
    }
    Ok(events)
}
