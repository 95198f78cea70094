//! As-of reads: what a GET would have answered at an earlier point of the log. The events of
//! the streams the GET reads are folded, with the one `apply` that the writer and `ctxd rebuild`
//! use, into a scratch in-memory database of the full schema; the GET's own query then runs on
//! it. Same projection code, same query code: the answer is the one the GET gave then, byte
//! for byte, `ETag` included (the snapshot's `events` holds each folded stream's last event).

use std::sync::OnceLock;

use crate::store::db::{Connection, OptionalExtension, params};
use chrono::{DateTime, Utc};

use super::memory::MemoryTables;
use super::{Events, Selection, Until, replay};
use crate::domain::events::{customer_stream, namespace_stream, service_stream, session_stream};
use crate::store::log::{self, format_time};
use crate::store::{StoreError, migrations};

/// A point of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the account's event at this position (0: before its first event).
    Seq(u64),
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// The streams a GET reads, whose events a snapshot folds.
#[derive(Debug, Clone)]
pub enum Streams {
    /// These streams of the account (a session, a service).
    Named { account: String, names: Vec<String> },
    /// A customer's profile and every service that a `ServiceStarted` or `ServiceAssociated`
    /// had given to that customer by the point (it may have moved to another customer since).
    Customer { account: String, customer_id: String },
    /// Every service started with this contact key by the point.
    ContactKey { account: String, contact_key: String },
}

impl Streams {
    /// Just one stream of `account`.
    pub fn one(account: &str, stream: String) -> Streams {
        Streams::Named { account: account.to_string(), names: vec![stream] }
    }

    /// A session's stream, and its namespace's (a namespace being deleted hides its sessions).
    pub fn session(account: &str, namespace: &str, session_id: &str) -> Streams {
        let names =
            vec![namespace_stream(account, namespace), session_stream(account, namespace, session_id)];
        Streams::Named { account: account.to_string(), names }
    }

    /// The account whose log the streams are part of.
    pub fn account(&self) -> &str {
        match self {
            Streams::Named { account, .. }
            | Streams::Customer { account, .. }
            | Streams::ContactKey { account, .. } => account,
        }
    }
}

/// Why a point cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    #[error("as_of_seq {asked} is beyond the end of the account's log (its last seq is {last})")]
    BeyondLog { asked: u64, last: u64 },
    /// The point is before the account's last archive: its events are in segments.
    #[error(
        "the account's log up to seq {through_seq} (recorded at or before {through_recorded_at}) is archived, \
         the point asked for is before that; the last archived events are in segment {segment} \
         (docs/AUDIT.md, \"Archives\": import the segments into a scratch store to read that period)"
    )]
    Archived { through_seq: u64, through_recorded_at: String, segment: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The projections as they were at a point, for the streams asked for.
pub struct Snapshot {
    /// An in-memory database with the full schema.
    pub conn: Connection,
    /// The time reads compare expiries with: the point's time, or for a seq the time its
    /// event was recorded.
    pub now: DateTime<Utc>,
}

/// Folds `streams` of the log in `source` up to `point` of their account's log. `source` should
/// be inside one read transaction, so that the streams found and the events folded come from
/// one commit.
pub fn snapshot(source: &Connection, point: Point, streams: &Streams) -> Result<Snapshot, AsOfError> {
    let account = streams.account();
    let recorded_at;
    let cut = crate::store::archive::cut(source, account)?;
    let archived = |cut: &crate::store::archive::Cut| AsOfError::Archived {
        through_seq: cut.through_seq,
        through_recorded_at: cut.through_recorded_at.clone(),
        segment: cut.segment.clone(),
    };
    let (until, now) = match point {
        Point::Seq(asked) => {
            let last = log::last_seq(source, account)?;
            if asked > last {
                return Err(AsOfError::BeyondLog { asked, last });
            }
            // The snapshot is the state at the cut itself: only a point before it is gone.
            if let Some(cut) = cut.as_ref().filter(|cut| asked < cut.through_seq) {
                return Err(archived(cut));
            }
            match cut.as_ref().filter(|cut| asked == cut.through_seq) {
                // The cut ends a command (its events share a time); its events are gone.
                Some(cut) => (Until::Seq(asked), parse_time(asked, cut.through_recorded_at.clone())?),
                None => {
                    let end = command_end(source, account, asked)?;
                    (Until::Seq(end), time_of(source, account, end)?)
                }
            }
        }
        Point::Time(time) => {
            recorded_at = format_time(time);
            // A time before the first live event is in the archived period.
            let first_live =
                cut.as_ref().map(|cut| time_of(source, account, cut.through_seq + 1)).transpose()?;
            if let Some(cut) = cut.as_ref().filter(|_| first_live.is_some_and(|first| time < first)) {
                return Err(archived(cut));
            }
            (Until::RecordedAt(&recorded_at), time)
        }
    };
    Ok(Snapshot { conn: fold(source, streams, until)?, now })
}

/// A scratch database with the projections of `streams` at `until`.
fn fold(source: &Connection, streams: &Streams, until: Until<'_>) -> Result<Connection, StoreError> {
    let names = stream_names(source, streams, until)?;
    let mut tables = MemoryTables::default();
    // Streams with archived events start from the snapshot (a point before the cut was refused).
    crate::store::archive::seed(source, streams.account(), &names, &mut tables)?;
    replay(source, &mut tables, Selection { events: Events::Streams(&names), until })?;
    let conn = Connection::open_in_memory()?;
    let tx = conn.transaction()?;
    tx.execute_batch(schema()?)?;
    tables.write_to(&tx)?;
    for stream in &names {
        copy_last_event(source, &tx, stream, until)?;
    }
    tx.commit()?;
    Ok(conn)
}

/// The full schema as SQL, taken once from a database that `migrations::migrate` built: every
/// snapshot then creates it in one batch, without running (and logging) each migration again.
fn schema() -> Result<&'static str, StoreError> {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    if let Some(schema) = SCHEMA.get() {
        return Ok(schema);
    }
    let mut conn = Connection::open_in_memory()?;
    // Its migrations are not the store's: keep their log lines out of the server's log.
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        migrations::migrate(&mut conn)
    })?;
    let mut statement = conn.prepare(
        "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
         ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid",
    )?;
    let statements = statement.query_map([], |row| row.get::<String>(0))?;
    let mut schema = String::new();
    for sql in statements {
        schema.push_str(&sql?);
        schema.push_str(";\n");
    }
    Ok(SCHEMA.get_or_init(|| schema))
}

/// The last event of `account` of the command that appended its event `seq`, so that a point inside a command
/// (ending a service appends its states' ends, then its own) reads as after it: no GET ever saw
/// a command half applied. A command's events are consecutive and share one `meta` (its
/// request id) and one `recorded_at`.
fn command_end(source: &Connection, account: &str, seq: u64) -> Result<u64, StoreError> {
    if seq == 0 {
        return Ok(0);
    }
    // In windows of positions: a query that runs to the log's end would make a server that
    // sends whole results (PostgreSQL) read the rest of the account's log.
    const WINDOW: u64 = 1024;
    let mut statement = source.prepare_cached(
        "SELECT seq, meta, recorded_at FROM events WHERE account = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
    )?;
    let (mut end, mut command) = (seq, None::<(String, String)>);
    for from in (seq..).step_by(WINDOW as usize) {
        let mut rows = statement.query(params![account, from, from.saturating_add(WINDOW)])?;
        let mut any = false;
        while let Some(row) = rows.next()? {
            any = true;
            let (meta, recorded_at): (String, String) = (row.get(1)?, row.get(2)?);
            match &command {
                None => command = Some((meta, recorded_at)),
                Some(first) if *first != (meta, recorded_at) => return Ok(end),
                Some(_) => {}
            }
            end = row.get(0)?;
        }
        if !any {
            break;
        }
    }
    Ok(end)
}

/// When `account`'s event `seq` (or its last one before it) was recorded; the epoch before any.
fn time_of(source: &Connection, account: &str, seq: u64) -> Result<DateTime<Utc>, StoreError> {
    let text: Option<String> = source
        .prepare_cached(
            "SELECT recorded_at FROM events WHERE account = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![account, seq], |row| row.get(0))
        .optional()?;
    let Some(text) = text else {
        return Ok(DateTime::UNIX_EPOCH);
    };
    parse_time(seq, text)
}

/// A stored `recorded_at` of event `seq`.
fn parse_time(seq: u64, text: String) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(&text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt(format!("event {seq}: recorded_at: {error}")))
}

/// The stream ids `streams` names at `until`.
fn stream_names(source: &Connection, streams: &Streams, until: Until<'_>) -> Result<Vec<String>, StoreError> {
    let (account, contact_key) = match streams {
        Streams::Named { names, .. } => return Ok(names.clone()),
        Streams::Customer { account, customer_id } => {
            let services = super::journeys::services_ever_of(source, account, customer_id, until)?;
            let mut names = vec![customer_stream(account, customer_id)];
            names.extend(services.iter().map(|service_id| service_stream(account, service_id)));
            return Ok(names);
        }
        Streams::ContactKey { account, contact_key } => (account, contact_key),
    };
    // Services started before the last archive are found in its snapshot.
    let sql = format!(
        "SELECT stream FROM events WHERE account = ?1 AND {}
           AND event_type = 'ServiceStarted' AND {} = ?3
         UNION
         SELECT stream FROM live_snapshot_streams WHERE account_id = ?1 AND contact_key = ?3
         ORDER BY stream",
        until.condition(),
        super::data_field(source, "contact_key")
    );
    let mut statement = source.prepare_cached(&sql)?;
    let rows = statement.query_map(params![account, until.bound(), contact_key], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Copies the last event of `stream` at `until` into the snapshot, so that `log::stream_version`
/// answers there as it did then.
fn copy_last_event(
    source: &Connection,
    target: &Connection,
    stream: &str,
    until: Until<'_>,
) -> Result<(), StoreError> {
    const COLUMNS: &str = "id, seq, account, stream, stream_version, event_type, event_version, data, meta,
        recorded_at, payload_hash, hash, payload_salt";
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE stream = ?1 AND {} ORDER BY stream_version DESC LIMIT 1",
        until.condition()
    );
    let mut statement = source.prepare_cached(&sql)?;
    let mut rows = statement.query(params![stream, until.bound()])?;
    if let Some(row) = rows.next()? {
        let values: Vec<crate::store::db::Value> =
            (0..13).map(|index| row.get(index)).collect::<Result<_, _>>()?;
        target
            .prepare_cached(&format!(
                "INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?
            .execute(crate::store::db::params_from_iter(values))?;
    }
    // A stream whose events are archived goes on from the version the snapshot kept.
    let version: Option<u64> = source
        .prepare_cached("SELECT version FROM live_snapshot_streams WHERE stream = ?1")?
        .query_row([stream], |row| row.get(0))
        .optional()?;
    if let Some(version) = version {
        target.execute(
            // At position 0 of no account: the scratch copy records no archive.
            "INSERT INTO snapshot_streams (stream, through_seq, account_id, version, digest, state)
             VALUES (?1, 0, '', ?2, x'', x'')",
            params![stream, version],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::service_stream;
    use crate::projections::{context, journeys};

    /// A log of `(recorded_at second, event type, payload)` in account `acme`, seq from 1, each
    /// event appended by a command of its own.
    fn log_of(events: &[(u32, &str, String)]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn).unwrap();
        let mut versions = std::collections::HashMap::new();
        for (index, (second, event_type, data)) in events.iter().enumerate() {
            let event = crate::domain::Event::decode(event_type, data).unwrap();
            let stream = event.stream("acme");
            let version = versions.entry(stream.clone()).and_modify(|v| *v += 1).or_insert(1u64);
            conn.execute(
                "INSERT INTO events (id, seq, account, stream, stream_version, event_type, event_version, data, meta, recorded_at, payload_hash, hash)
                 VALUES (?1, ?1, 'acme', ?2, ?3, ?4, 1, ?5, ?6, ?7, x'', x'')",
                params![
                    index as u64 + 1,
                    stream,
                    *version,
                    event_type,
                    data,
                    // Each event its own request, so each is a command of its own.
                    format!(r#"{{"request_id":"r{index}"}}"#),
                    format!("2026-01-01T10:00:{second:02}.000000Z")
                ],
            )
            .unwrap();
        }
        conn
    }

    fn patch(session: &str, properties: &str) -> (&'static str, String) {
        let data = format!(
            r#"{{"namespace":"ns","session_id":"{session}","properties":{properties},"expires_at":null}}"#
        );
        ("PropertiesPatched", data)
    }

    fn document(source: &Connection, point: Point) -> (String, u64) {
        let stream = session_stream("acme", "ns", "s");
        let snapshot = snapshot(source, point, &Streams::one("acme", stream.clone())).unwrap();
        let conn = &snapshot.conn;
        let document = context::session_document(conn, "acme", "ns", "s", snapshot.now, None).unwrap();
        (document, log::stream_version(conn, &stream).unwrap())
    }

    #[test]
    fn a_session_is_folded_up_to_a_seq_or_a_time_with_its_version_then() {
        let events = [
            (1, patch("s", r#"{"a":1}"#)),
            (2, patch("other", r#"{"x":1}"#)),
            (3, patch("s", r#"{"a":2,"b":true}"#)),
            (4, ("PropertyDeleted", r#"{"namespace":"ns","session_id":"s","property":"a"}"#.to_string())),
        ];
        let events: Vec<(u32, &str, String)> =
            events.into_iter().map(|(t, (kind, data))| (t, kind, data)).collect();
        let source = log_of(&events);
        assert_eq!(document(&source, Point::Seq(0)), ("{}".into(), 0));
        assert_eq!(document(&source, Point::Seq(1)), (r#"{"a":1}"#.into(), 1));
        assert_eq!(document(&source, Point::Seq(2)), (r#"{"a":1}"#.into(), 1));
        assert_eq!(document(&source, Point::Seq(3)), (r#"{"a":2,"b":true}"#.into(), 2));
        assert_eq!(document(&source, Point::Seq(4)), (r#"{"b":true}"#.into(), 3));
        let at = |second: u32| Point::Time(format!("2026-01-01T10:00:{second:02}.5Z").parse().unwrap());
        assert_eq!(document(&source, at(0)), ("{}".into(), 0));
        assert_eq!(document(&source, at(3)), (r#"{"a":2,"b":true}"#.into(), 2));
        let beyond =
            snapshot(&source, Point::Seq(5), &Streams::Named { account: "acme".into(), names: Vec::new() });
        assert!(matches!(beyond, Err(AsOfError::BeyondLog { asked: 5, last: 4 })));
    }

    #[test]
    fn a_customers_services_are_those_that_were_theirs_at_the_point() {
        let t = r#"{"timestamp":"2026-01-01T00:00:00Z","channel":{}}"#;
        let start = |id: &str| {
            let data = format!(r#"{{"service_id":"{id}","customer_id":"c1","opening":{{"started":{t}}}}}"#);
            (1, "ServiceStarted", data)
        };
        let moved = r#"{"service_id":"s1","customer_id":"c2","previous_customer_id":"c1"}"#.to_string();
        let source = log_of(&[start("s1"), start("s2"), (2, "ServiceAssociated", moved)]);
        let services = |seq: u64, customer: &str| {
            let streams = Streams::Customer { account: "acme".into(), customer_id: customer.into() };
            let snapshot = snapshot(&source, Point::Seq(seq), &streams).unwrap();
            let (docs, _) = journeys::journey_services(&snapshot.conn, "acme", customer).unwrap();
            let mut ids: Vec<String> = docs.into_iter().map(|doc| doc.service_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(services(1, "c1"), ["s1"]);
        assert_eq!(services(2, "c1"), ["s1", "s2"]);
        assert_eq!(services(3, "c1"), ["s2"]);
        assert_eq!(services(2, "c2"), Vec::<String>::new());
        assert_eq!(services(3, "c2"), ["s1"]);
        let stream = service_stream("acme", "s1");
        let snapshot = snapshot(&source, Point::Seq(3), &Streams::one("acme", stream.clone())).unwrap();
        assert_eq!(log::stream_version(&snapshot.conn, &stream).unwrap(), 2);
    }
}
