//! As-of reads: what a GET would have answered at an earlier point of the log. The events of
//! the streams the GET reads are folded, with the one `apply` that the writer and `ctxd rebuild`
//! use, into a scratch in-memory database of the full schema; the GET's own query then runs on
//! it. Same projection code, same query code: the answer is the one the GET gave then, byte
//! for byte, `ETag` included (the snapshot's `events` holds each folded stream's last event).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::memory::MemoryTables;
use super::{Selection, Until, replay};
use crate::domain::events::customer_stream;
use crate::store::log::{self, format_time};
use crate::store::{StoreError, migrations};

/// A point of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the event with this seq (0: before the first event).
    Seq(u64),
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// The streams a GET reads, whose events a snapshot folds.
#[derive(Debug, Clone)]
pub enum Streams {
    /// These streams (a session, a service).
    Named(Vec<String>),
    /// A customer's profile and every service that a `ServiceStarted` or `ServiceAssociated`
    /// had given to that customer by the point (it may have moved to another customer since).
    Customer { account: String, customer_id: String },
    /// Every service started with this contact key by the point.
    ContactKey { account: String, contact_key: String },
}

impl Streams {
    pub fn one(stream: String) -> Streams {
        Streams::Named(vec![stream])
    }
}

/// Why a point cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    #[error("as_of_seq {asked} is beyond the end of the log (its last seq is {last})")]
    BeyondLog { asked: u64, last: u64 },
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

/// Folds `streams` of the log in `source` up to `point`. `source` should be inside one read
/// transaction, so that the streams found and the events folded come from one commit.
pub fn snapshot(source: &Connection, point: Point, streams: &Streams) -> Result<Snapshot, AsOfError> {
    let recorded_at;
    let (until, now) = match point {
        Point::Seq(asked) => {
            let last = log::last_seq(source)?;
            if asked > last {
                return Err(AsOfError::BeyondLog { asked, last });
            }
            (Until::Seq(asked), time_of(source, asked)?)
        }
        Point::Time(time) => {
            recorded_at = format_time(time);
            (Until::RecordedAt(&recorded_at), time)
        }
    };
    Ok(Snapshot { conn: fold(source, streams, until)?, now })
}

/// A scratch database with the projections of `streams` at `until`.
fn fold(source: &Connection, streams: &Streams, until: Until<'_>) -> Result<Connection, StoreError> {
    let names = stream_names(source, streams, until)?;
    let mut tables = MemoryTables::default();
    replay(source, &mut tables, Selection { streams: Some(&names), until })?;
    let mut conn = Connection::open_in_memory()?;
    migrations::migrate(&mut conn)?;
    let tx = conn.transaction()?;
    tables.write_to(&tx)?;
    for stream in &names {
        copy_last_event(source, &tx, stream, until)?;
    }
    tx.commit()?;
    Ok(conn)
}

/// When the event `seq` (or the last one before it) was recorded; the epoch before any.
fn time_of(source: &Connection, seq: u64) -> Result<DateTime<Utc>, StoreError> {
    let text: Option<String> = source
        .prepare_cached("SELECT recorded_at FROM events WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([seq], |row| row.get(0))
        .optional()?;
    let Some(text) = text else {
        return Ok(DateTime::UNIX_EPOCH);
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt(format!("event {seq}: recorded_at: {error}")))
}

/// The stream ids `streams` names at `until`.
fn stream_names(source: &Connection, streams: &Streams, until: Until<'_>) -> Result<Vec<String>, StoreError> {
    let (account, condition, value, mut names) = match streams {
        Streams::Named(names) => return Ok(names.clone()),
        Streams::Customer { account, customer_id } => (
            account,
            "event_type IN ('ServiceStarted', 'ServiceAssociated') AND json_extract(data, '$.customer_id') = ?3",
            customer_id,
            vec![customer_stream(account, customer_id)],
        ),
        Streams::ContactKey { account, contact_key } => (
            account,
            "event_type = 'ServiceStarted' AND json_extract(data, '$.contact_key') = ?3",
            contact_key,
            Vec::new(),
        ),
    };
    let sql = format!(
        "SELECT DISTINCT stream FROM events WHERE account = ?1 AND {} AND {condition} ORDER BY stream",
        until.condition()
    );
    let mut statement = source.prepare_cached(&sql)?;
    let rows = statement.query_map(params![account, until.bound(), value], |row| row.get::<_, String>(0))?;
    for name in rows {
        names.push(name?);
    }
    Ok(names)
}

/// Copies the last event of `stream` at `until` into the snapshot, so that `log::stream_version`
/// answers there as it did then.
fn copy_last_event(
    source: &Connection,
    target: &Connection,
    stream: &str,
    until: Until<'_>,
) -> Result<(), StoreError> {
    const COLUMNS: &str =
        "seq, account, stream, stream_version, event_type, event_version, data, meta, recorded_at";
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE stream = ?1 AND {} ORDER BY stream_version DESC LIMIT 1",
        until.condition()
    );
    let mut statement = source.prepare_cached(&sql)?;
    let mut rows = statement.query(params![stream, until.bound()])?;
    if let Some(row) = rows.next()? {
        let values: Vec<rusqlite::types::Value> =
            (0..9).map(|index| row.get(index)).collect::<Result<_, _>>()?;
        target
            .prepare_cached(&format!(
                "INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(rusqlite::params_from_iter(values))?;
    }
    Ok(())
}
