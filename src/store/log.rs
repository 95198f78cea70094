//! The event log table: append, stream versions, and reading events back in order.
//! This is the only code that writes `events`: it inserts, and redacts a payload for an erasure.

use crate::store::db::{Connection, Dialect, OptionalExtension, Value, params};
use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};

use super::StoreError;
use super::chain::{self, Hash};
use super::payload;
use crate::domain::{Event, StreamVersion};

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Store-wide commit order: internal, never shown by the API.
    pub id: u64,
    /// Position in its account's log (1, 2, 3 …): the `seq` the API shows.
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

/// Current version of `stream` (0 if it has no events): its last event's, or when all of its
/// events are archived, the version the archive's snapshot kept.
pub fn stream_version(conn: &Connection, stream: &str) -> Result<StreamVersion, StoreError> {
    // `max()` rather than `ORDER BY … LIMIT 1`, which SQLite prepared again at every call.
    let version: Option<u64> = conn
        .prepare_cached(
            "SELECT coalesce((SELECT max(stream_version) FROM events WHERE stream = ?1),
                             (SELECT version FROM live_snapshot_streams WHERE stream = ?1))",
        )?
        .query_row([stream], |row| row.get(0))?;
    Ok(version.unwrap_or(0))
}

/// Highest store-wide id in the log (0 when empty): internal, never shown by the API.
pub fn last_id(conn: &Connection) -> Result<u64, StoreError> {
    let id: Option<u64> =
        conn.query_row("SELECT max(id) FROM events", [], |row| row.get(0)).optional()?.flatten();
    Ok(id.unwrap_or(0))
}

/// Position of `account`'s last event (0 when it has none).
pub fn last_seq(conn: &Connection, account: &str) -> Result<u64, StoreError> {
    let seq: Option<u64> = conn
        .prepare_cached("SELECT max(seq) FROM events WHERE account = ?1")?
        .query_row([account], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(seq.unwrap_or(0))
}

/// Inserts one event row chained to `previous`, the hash of its account's event before it, and
/// answers the new event's hash.
pub fn append(conn: &Connection, recorded: &RecordedEvent, previous: &Hash) -> Result<Hash, StoreError> {
    let data = recorded.event.data_json();
    let recorded_at = format_time(recorded.recorded_at);
    let columns = chain::Columns {
        seq: recorded.seq,
        account: &recorded.account,
        stream: &recorded.stream,
        stream_version: recorded.stream_version,
        event_type: recorded.event.event_type(),
        event_version: recorded.event.event_version(),
        meta: &recorded.meta,
        recorded_at: &recorded_at,
    };
    let salt = chain::new_salt();
    let payload_hash = chain::salted_payload_hash(&salt, &data);
    let hash = chain::link(previous, &columns, &payload_hash);
    let stored = stored_payload(conn, columns.event_type, &data);
    insert_row(conn, "events", recorded.id, &columns, (&stored, Some(&salt)), &payload_hash, &hash)?;
    Ok(hash)
}

/// Event types whose payload fields SQL reads: the index on customers' services (migration
/// 0012) and the services of a contact key. Their payloads stay text, so `json_extract` and
/// PostgreSQL's `->>` read them.
const READ_BY_SQL: &[&str] = &["ServiceStarted", "ServiceAssociated"];

/// How an event's payload `data` is stored: compressed on SQLite (`payload`), except for the
/// types SQL reads.
pub fn stored_payload(conn: &Connection, event_type: &str, data: &str) -> Value {
    match READ_BY_SQL.contains(&event_type) {
        true => Value::Text(data.to_owned()),
        false => payload::stored(conn.dialect(), data),
    }
}

/// Inserts an event row into `table` (`events`, or the copy migration 0007 fills, which has no
/// salts).
pub(super) fn insert_row(
    conn: &Connection,
    table: &str,
    id: u64,
    columns: &chain::Columns<'_>,
    (data, salt): (&Value, Option<&chain::Salt>),
    payload_hash: &Hash,
    hash: &Hash,
) -> Result<(), StoreError> {
    let (id, value) = new_id(conn, id, "?1");
    // Migration 0007's copy has no salt column: its statement leaves it out.
    let (salt_column, salt_value) = match salt {
        Some(_) => (", payload_salt", ", ?13"),
        None => ("", ""),
    };
    let mut statement = conn.prepare_cached(&format!(
        "INSERT INTO {table} (id, account, seq, stream, stream_version, event_type, event_version, data,
                              meta, recorded_at, payload_hash, hash{salt_column})
         VALUES ({value}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12{salt_value})"
    ))?;
    let values = params![
        id,
        columns.account,
        columns.seq,
        columns.stream,
        columns.stream_version,
        columns.event_type,
        columns.event_version,
        data,
        columns.meta,
        columns.recorded_at,
        payload_hash.as_slice(),
        hash.as_slice(),
        salt.map(|salt| salt.as_slice()),
    ];
    statement.execute_later(&values[..values.len() - usize::from(salt.is_none())])?;
    Ok(())
}

/// A new event's store-wide id as bound to `parameter`, and the SQL of its value. SQLite: the
/// id the writer counted. PostgreSQL: NULL, and the value is drawn from the table's sequence,
/// so that several nodes append at once.
pub(crate) fn new_id(
    conn: &Connection,
    id: u64,
    parameter: &'static str,
) -> (Option<u64>, Cow<'static, str>) {
    match conn.dialect() {
        // The append path allocates nothing for it.
        Dialect::Sqlite => (Some(id), Cow::Borrowed(parameter)),
        Dialect::Postgres => {
            (None, Cow::Owned(format!("coalesce(CAST({parameter} AS BIGINT), nextval('events_id_seq'))")))
        }
    }
}

/// Replaces the payload of `account`'s event `seq` with its redacted form and removes its salt:
/// the one change the log allows, made only for an erasure (`domain::erasure`). Its
/// `payload_hash` and `hash` stay, so the chain still links, and without the salt they confirm
/// no guess of the old payload; the erasure event records the sha256 of the new payload.
pub fn redact_payload(conn: &Connection, account: &str, seq: u64, redacted: &str) -> Result<(), StoreError> {
    conn.execute("INSERT INTO erasure_in_progress (\"only\") VALUES (1)", [])?;
    let changed = conn.execute(
        "UPDATE events SET data = ?1, payload_salt = NULL WHERE account = ?2 AND seq = ?3",
        params![redacted, account, seq],
    )?;
    conn.execute("DELETE FROM erasure_in_progress", [])?;
    if changed != 1 {
        return Err(StoreError::Corrupt(format!("event {seq} of {account} to redact is not in the log")));
    }
    Ok(())
}

/// Seq, type and payload of every event of the streams named (all of one account), in seq order.
pub fn stream_payloads(
    conn: &Connection,
    streams: &[String],
) -> Result<Vec<(u64, String, String)>, StoreError> {
    // Archived events still in the table (their deletion in steps not done) are redacted too.
    let mut statement = conn.prepare_cached(
        "SELECT seq, event_type, data FROM events WHERE stream = ?1 ORDER BY stream_version",
    )?;
    let mut all = Vec::new();
    for stream in streams {
        let rows = statement.query_map([stream], |row| {
            Ok((row.get(0)?, row.get(1)?, payload::text(row.get_ref(2)?)?.into_owned()))
        })?;
        for row in rows {
            all.push(row?);
        }
    }
    all.sort_by_key(|(seq, _, _)| *seq);
    Ok(all)
}

/// One event of the feed, as stored: payload and meta are JSON texts, passed on unparsed.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub seq: u64,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub event_version: u32,
    pub data: String,
    pub meta: String,
    pub recorded_at: String,
    pub hash: Vec<u8>,
}

/// What part of an account's events the feed reads.
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    pub stream: Option<String>,
    pub event_type: Option<String>,
    /// `meta.actor`, as recorded (`key:<name>`, `admin`, `system:sweeper` …).
    pub actor: Option<String>,
    /// `meta.request_id`: the events one request wrote.
    pub request_id: Option<String>,
    /// Recorded at or after this time (`format_time`'s form, which compares as text).
    pub from: Option<String>,
    /// Recorded before this time.
    pub to: Option<String>,
}

impl FeedFilter {
    /// Whether the filter reads the account's events rather than one stream's, to find only some.
    fn scans_the_account(&self) -> bool {
        let FeedFilter { stream, event_type, actor, request_id, from, to } = self;
        stream.is_none() && [event_type, actor, request_id, from, to].iter().any(|field| field.is_some())
    }
}

/// A seq given by a client as a cursor, as SQLite can bind it: no seq exceeds i64::MAX (SQLite's
/// integers), so a larger cursor is simply past the end.
pub fn cursor(after: u64) -> u64 {
    after.min(i64::MAX as u64)
}

/// The feed's query: of an account, on its `(account, seq)` index, or of one stream, on the
/// stream's own index (within a stream, seq order is stream_version order), up to `?6`; the
/// filters on meta and time are checked on the rows read. (`+account` keeps SQLite from
/// choosing the account's index for a stream, which would read every event of the account.)
fn feed_sql(conn: &Connection, by_stream: bool) -> String {
    let (actor, request_id) = (conn.json_field("meta", "actor"), conn.json_field("meta", "request_id"));
    let (range, order) = match (by_stream, conn.dialect()) {
        (false, _) => ("account = ?1 AND seq > ?2 AND seq <= ?6 AND CAST(?3 AS TEXT) IS NULL", "seq"),
        (true, Dialect::Sqlite) => {
            ("stream = ?3 AND seq > ?2 AND seq <= ?6 AND +account = ?1", "stream_version")
        }
        (true, Dialect::Postgres) => {
            ("stream = ?3 AND seq > ?2 AND seq <= ?6 AND account = ?1", "stream_version")
        }
    };
    format!(
        "SELECT seq, stream, stream_version, event_type, event_version, data, meta, recorded_at, hash
         FROM events
         WHERE {range} AND (CAST(?4 AS TEXT) IS NULL OR event_type = ?4)
           AND (CAST(?7 AS TEXT) IS NULL OR {actor} = ?7) AND (CAST(?8 AS TEXT) IS NULL OR {request_id} = ?8)
           AND (CAST(?9 AS TEXT) IS NULL OR recorded_at >= ?9) AND (CAST(?10 AS TEXT) IS NULL OR recorded_at < ?10)
         ORDER BY {order} LIMIT ?5"
    )
}

/// Positions a page filtered without a stream (by type, actor, request id or time) examines at
/// most: such a filter reads every event of the account in the range to find its few, so a page
/// stops after this many and says where to go on, whatever it found.
pub const FEED_SCAN_WINDOW: u64 = 10_000;

/// A page of the feed.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Where the next page starts: the last event's seq when the page is full, else the last
    /// position examined (past what a filter skipped, so nothing is read twice).
    pub next_after: u64,
    pub has_more: bool,
}

/// Up to `limit` events of `account` with `seq > after`, in seq order, and no more than about
/// `max_bytes` of payload and meta (at least one event). An account's positions are assigned
/// by the one writer and become visible a whole commit at a time, so `after` is a stable
/// cursor. Run it inside a read transaction: the account's head and its events are read from
/// one snapshot.
pub fn read_feed(
    conn: &Connection,
    account: &str,
    after: u64,
    limit: usize,
    max_bytes: usize,
    filter: &FeedFilter,
) -> Result<FeedPage, StoreError> {
    // The feed starts after the account's last archive (its segments hold what was before).
    let after = cursor(after).max(super::archive::archived_through(conn, account)?);
    let head = last_seq(conn, account)?;
    let end =
        if filter.scans_the_account() { after.saturating_add(FEED_SCAN_WINDOW).min(head) } else { head };
    let mut statement = conn.prepare_cached(&feed_sql(conn, filter.stream.is_some()))?;
    let mut rows = statement.query(params![
        account,
        after,
        filter.stream,
        filter.event_type,
        limit as i64 + 1,
        end,
        filter.actor,
        filter.request_id,
        filter.from,
        filter.to
    ])?;
    let mut page = FeedPage { next_after: after.max(end), has_more: end < head, ..FeedPage::default() };
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        if page.events.len() == limit || (bytes >= max_bytes && !page.events.is_empty()) {
            page.next_after = page.events.last().map_or(after, |last| last.seq);
            page.has_more = true;
            break;
        }
        let event = FeedEvent {
            seq: row.get(0)?,
            stream: row.get(1)?,
            stream_version: row.get(2)?,
            event_type: row.get(3)?,
            event_version: row.get(4)?,
            data: payload::text(row.get_ref(5)?)?.into_owned(),
            meta: row.get(6)?,
            recorded_at: row.get(7)?,
            hash: row.get(8)?,
        };
        bytes += event.data.len() + event.meta.len();
        page.events.push(event);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_seeks_an_account_or_a_stream_on_an_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        let plan = |sql: &str| -> String {
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = statement
                .query_map(params!["a", 0, "ctx/a/ns/s", "x", 10, 20, "y", "z", "t", "u"], |row| {
                    row.get::<String>(3)
                });
            rows.unwrap().map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let by_account = plan(&feed_sql(&conn, false));
        assert!(by_account.contains("(account=? AND seq>? AND seq<?)"), "{by_account}");
        let by_stream = plan(&feed_sql(&conn, true));
        assert!(by_stream.contains("(stream=?"), "{by_stream}");
        for plan in [by_account, by_stream] {
            assert!(!plan.contains("TEMP B-TREE") && !plan.contains("SCAN"), "{plan}");
        }
    }

    #[test]
    fn a_filtered_page_examines_a_window_and_goes_on_past_it_and_a_page_stops_at_its_bytes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO events (id, account, seq, stream, stream_version, event_type, event_version, data, meta,
                                 recorded_at, payload_hash, hash)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)
             SELECT i, 'a', i, 'ctx/a/ns/s', i, CASE i WHEN 24000 THEN 'SessionDeleted' ELSE 'PropertiesPatched' END,
                    1, '{}', '{}', 't', x'', x'' FROM n",
        )
        .unwrap();
        let deleted = FeedFilter { event_type: Some("SessionDeleted".into()), ..FeedFilter::default() };
        let page = |after: u64, limit: usize, max_bytes: usize, filter: &FeedFilter| {
            let page = read_feed(&conn, "a", after, limit, max_bytes, filter).unwrap();
            (page.events.iter().map(|event| event.seq).collect::<Vec<_>>(), page.next_after, page.has_more)
        };
        assert_eq!(page(0, 100, 1 << 20, &deleted), (vec![], 10_000, true));
        assert_eq!(page(10_000, 100, 1 << 20, &deleted), (vec![], 20_000, true));
        assert_eq!(page(20_000, 100, 1 << 20, &deleted), (vec![24_000], 25_000, false));
        // A follower at the head reads nothing again.
        assert_eq!(page(25_000, 100, 1 << 20, &deleted), (vec![], 25_000, false));
        // Each event here is 4 bytes of payload and meta: a budget of 5 stops after the second.
        let all = FeedFilter::default();
        assert_eq!(page(0, 100, 5, &all), (vec![1, 2], 2, true));
        assert_eq!(page(24_998, 100, 1 << 20, &all), (vec![24_999, 25_000], 25_000, false));
        assert_eq!(page(0, 3, 1 << 20, &all), (vec![1, 2, 3], 3, true));
    }
}
