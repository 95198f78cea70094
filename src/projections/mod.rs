//! Projections: read tables that are a pure function of the log. `apply` is the one code path
//! that updates them, live in the writer's transaction and during `ctxd rebuild` / `verify`.

pub mod accounts;
pub mod analytics;
pub mod analytics_queries;
pub mod as_of;
pub mod context;
pub mod customers;
pub mod history;
pub mod journeys;
pub mod memory;
pub mod tables;
pub mod verify;

use crate::store::db::Connection;
use crate::store::db::ValueRef;
use sha2::{Digest, Sha256};

use crate::domain::Event;
use crate::store::log::{self, RecordedEvent};
use crate::store::{StoreError, payload};
use memory::MemoryTables;
use tables::Tables;

/// Every projection table and the columns that order its rows for checksums.
pub const TABLES: &[(&str, &str)] = &[
    ("accounts", "account_id"),
    ("api_keys", "key_hash"),
    ("namespaces", "account_id, namespace"),
    ("session_ttls", "account_id, namespace, session_id"),
    ("properties", "account_id, namespace, session_id, key"),
    ("session_sizes", "account_id, namespace, session_id"),
    ("services", "account_id, service_id"),
    ("customers", "account_id, customer_id"),
    ("customer_attributes", "account_id, name, value, customer_id"),
    ("customer_erasures", "account_id, customer_id"),
    ("identification_keys", "account_id, name"),
    ("journey_settings", "account_id"),
    ("analytics_services", "account_id, service_type, hour, media_type"),
    ("analytics_states", "account_id, state_type, service_type, hour, media_type"),
    ("analytics_transitions", "account_id, from_type, to_type, service_type, hour, media_type"),
    ("analytics_paths", "account_id, media_type, path, service_type, hour"),
    ("analytics_services_days", "account_id, service_type, hour, media_type"),
    ("analytics_states_days", "account_id, state_type, service_type, hour, media_type"),
    ("analytics_transitions_days", "account_id, from_type, to_type, service_type, hour, media_type"),
    ("analytics_paths_days", "account_id, media_type, path, service_type, hour"),
    ("analytics_abandoned", "account_id, ended_at, service_id"),
];

/// What projections read of a recorded event.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub account: &'a str,
    /// Its position in the account's log: a fold in stream order (`fold_into`) uses it to put
    /// back the log's order where one stream's event changes another's row.
    pub seq: u64,
    /// As stored: RFC 3339, microseconds.
    pub recorded_at: &'a str,
    pub event: &'a Event,
}

/// Applies one event to every projection it concerns.
pub fn apply(tables: &mut impl Tables, recorded: &RecordedEvent) -> Result<(), StoreError> {
    let recorded_at = log::format_time(recorded.recorded_at);
    apply_event(
        tables,
        &EventRef {
            account: &recorded.account,
            seq: recorded.seq,
            recorded_at: &recorded_at,
            event: &recorded.event,
        },
    )
}

/// Applies one event of `account`, at position `seq` and recorded at `recorded_at` (as stored),
/// to every projection it concerns.
pub fn apply_ref(
    tables: &mut impl Tables,
    account: &str,
    seq: u64,
    recorded_at: &str,
    event: &Event,
) -> Result<(), StoreError> {
    apply_event(tables, &EventRef { account, seq, recorded_at, event })
}

fn apply_event(tables: &mut impl Tables, event: &EventRef<'_>) -> Result<(), StoreError> {
    match event.event {
        Event::AccountCreated(_)
        | Event::ApiKeyIssued(_)
        | Event::ApiKeyRevoked(_)
        | Event::AccountLimitsSet(_)
        | Event::RetentionSet(_) => accounts::apply(tables, event),
        // The snapshot it records is loaded by the fold that starts from it (`seed`).
        Event::LogArchived(_) => Ok(()),
        Event::NamespaceCreated(_)
        | Event::NamespaceTtlSet(_)
        | Event::NamespaceDeleted(_)
        | Event::NamespaceDeletionStarted(_)
        | Event::PropertiesPatched(_)
        | Event::PropertyDeleted(_)
        | Event::SessionPropertiesCleared(_)
        | Event::SessionDeleted(_)
        | Event::SessionTtlSet(_)
        | Event::PropertiesExpired(_)
        | Event::SessionErased(_) => context::apply(tables, event),
        _ => journeys::apply(tables, event),
    }
}

/// Which events of the log `replay` folds.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub events: Events<'a>,
    pub until: Until<'a>,
}

/// The streams whose events `replay` folds (rebuild and verify fold in stream order instead:
/// `fold_into`).
#[derive(Debug, Clone, Copy)]
pub enum Events<'a> {
    /// Only the events of these streams.
    Streams(&'a [String]),
}

/// The last point of the log a fold includes.
#[derive(Debug, Clone, Copy)]
pub enum Until<'a> {
    /// Every event (of the caller's snapshot).
    End,
    /// Events with `seq <= n`: positions in one account's log, so only for a selection of
    /// that account's streams.
    Seq(u64),
    /// Events recorded at or before this time, written as `log::format_time` writes
    /// `recorded_at` (so that text order is time order).
    RecordedAt(&'a str),
}

impl Until<'_> {
    /// The SQL condition on `events`, with the bound as parameter `?2`.
    pub fn condition(&self) -> &'static str {
        match self {
            Until::End => "CAST(?2 AS TEXT) IS NULL",
            Until::Seq(_) => "seq <= ?2",
            Until::RecordedAt(_) => "recorded_at <= ?2",
        }
    }

    /// The bound, for parameter `?2`.
    pub fn bound(&self) -> crate::store::db::Value {
        match self {
            Until::End => crate::store::db::Value::Null,
            Until::Seq(seq) => crate::store::db::Value::Integer(i64::try_from(*seq).unwrap_or(i64::MAX)),
            Until::RecordedAt(time) => crate::store::db::Value::Text(time.to_string()),
        }
    }
}

/// The texts of the JSON array in `parameter`, as a subquery.
pub fn json_array_elements(conn: &Connection, parameter: &str) -> String {
    match conn.dialect() {
        crate::store::db::Dialect::Sqlite => format!("(SELECT value FROM json_each({parameter}))"),
        crate::store::db::Dialect::Postgres => {
            format!("(SELECT json_array_elements_text(CAST({parameter} AS JSON)))")
        }
    }
}

/// The text of field `name` of an event's JSON payload (`data`), of the event types whose
/// payloads stay text (`log::stored_payload`).
pub fn data_field(conn: &Connection, name: &str) -> String {
    conn.json_field("data", name)
}

/// Replays the `events` of `source` onto `target` in the order they were committed (store-wide
/// `id`; within an account, seq order), streaming them and reading only what projections need.
/// Returns the number of events applied.
pub fn replay(
    source: &Connection,
    target: &mut impl Tables,
    events: Selection<'_>,
) -> Result<u64, StoreError> {
    let Events::Streams(names) = events.events;
    let filter = format!("stream IN {}", json_array_elements(source, "?1"));
    // Events up to an account's last archive are folded into its snapshot (the caller seeds it):
    // the archive's writer deletes them in steps, and until then they are passed over here.
    let mut statement = source.prepare(&format!(
        "SELECT id, account, event_type, data, recorded_at, seq FROM events WHERE {filter} AND {} AND {LIVE} ORDER BY id",
        events.until.condition()
    ))?;
    let names = serde_json::to_string(names).expect("names serialize");
    let mut rows = statement.query_streamed(crate::params![names, events.until.bound()])?;
    let mut applied = 0;
    while let Some(row) = rows.next()? {
        let id: u64 = row.get(0)?;
        let text = |index| row.get_ref(index).and_then(|value| value.as_str());
        let event = Event::decode(text(2)?, &payload::text(row.get_ref(3)?)?)
            .map_err(|error| StoreError::Corrupt(format!("event id {id}: {error}")))?;
        let seq = row.get(5)?;
        apply_event(target, &EventRef { account: text(1)?, seq, recorded_at: text(4)?, event: &event })?;
        applied += 1;
    }
    Ok(applied)
}

/// The condition on `events` that keeps the live log: the events after their account's last
/// archive.
pub const LIVE: &str =
    "seq > coalesce((SELECT max(through_seq) FROM archives WHERE archives.account_id = events.account), 0)";

/// Replays `account`'s events after `after` through `through` onto `target` in position order,
/// showing `each` every event's stream and stream version. Returns the number applied.
pub fn replay_range(
    source: &Connection,
    account: &str,
    (after, through): (u64, u64),
    target: &mut impl Tables,
    mut each: impl FnMut(&str, u64, &Event),
) -> Result<u64, StoreError> {
    let mut statement = source.prepare_cached(
        "SELECT seq, stream, stream_version, event_type, data, recorded_at FROM events
         WHERE account = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq",
    )?;
    let mut rows = statement.query_streamed(crate::params![account, after, through])?;
    let mut applied = 0;
    while let Some(row) = rows.next()? {
        let seq: u64 = row.get(0)?;
        let text = |index| row.get_ref(index).and_then(|value| value.as_str());
        let event = Event::decode(text(3)?, &payload::text(row.get_ref(4)?)?)
            .map_err(|error| StoreError::Corrupt(format!("account {account}, event {seq}: {error}")))?;
        apply_event(target, &EventRef { account, seq, recorded_at: text(5)?, event: &event })?;
        each(text(1)?, row.get(2)?, &event);
        applied += 1;
    }
    Ok(applied)
}

/// Empties every projection table.
pub fn clear(conn: &Connection) -> Result<(), StoreError> {
    for (table, _) in TABLES {
        conn.execute(&format!("DELETE FROM {table}"), [])?;
    }
    Ok(())
}

/// How much a fold in stream order reads (bytes of event payloads and snapshot states) before
/// it stores the rows it has folded: what bounds its memory, whatever the log's length.
const FOLD_BUDGET_BYTES: usize = 64 << 20;

/// Events a fold in stream order reads per query.
const FOLD_PAGE: usize = 20_000;

/// Folds the log — every account's, or only `accounts'` — into the projection tables of
/// `target`, which hold none of the rows it makes: stream by stream, in stream order, each
/// stream from its account's archive snapshot (if it has one) and then its live events. A
/// stream's rows are its own, so the rows of the streams folded so far are stored whenever
/// `FOLD_BUDGET_BYTES` have been read, and memory holds only those and the account-wide rows
/// (docs/ARCHITECTURE.md, "Bounded rebuild"). Run it inside a transaction of `source`, so that
/// it folds one snapshot of the log; `source` and `target` may be the same connection. Returns
/// the number of events applied.
pub fn fold_into(
    source: &Connection,
    target: &Connection,
    accounts: Option<&[String]>,
) -> Result<u64, StoreError> {
    fold_in_stream_order(source, target, accounts, FOLD_BUDGET_BYTES)
}

fn fold_in_stream_order(
    source: &Connection,
    target: &Connection,
    accounts: Option<&[String]>,
    budget: usize,
) -> Result<u64, StoreError> {
    let accounts = accounts.map(|names| serde_json::to_string(names).expect("names serialize"));
    let mut statement = source.prepare(&format!(
        "SELECT stream, stream_version, account, seq, event_type, data, recorded_at FROM events
         WHERE (stream, stream_version) > (?1, ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR account IN {})
           AND {LIVE}
         ORDER BY stream, stream_version LIMIT {FOLD_PAGE}",
        json_array_elements(source, "?3")
    ))?;
    let mut snapshots = crate::store::archive::Snapshots::new(accounts.clone());
    let mut tables = MemoryTables::default();
    let (mut after, mut read, mut applied) = ((String::new(), 0i64), 0usize, 0u64);
    // At a stream's start (of its snapshot, or of its events when it has none), the streams
    // before it are complete: stores them once the budget is spent.
    let at_stream_start = |tables: &mut MemoryTables, read: &mut usize| {
        if *read >= budget {
            tables.flush_stream_rows(target)?;
            *read = 0;
        }
        Ok::<_, StoreError>(())
    };
    // Loads the snapshot's streams up to `through` (all that are left for `None`).
    let mut load = |through: Option<&str>, tables: &mut MemoryTables, read: &mut usize| {
        while let Some((account, state, bytes)) = snapshots.next_through(source, through)? {
            at_stream_start(tables, read)?;
            tables.load_stream(&account, state);
            *read += bytes;
        }
        Ok::<_, StoreError>(())
    };
    loop {
        // A page at a time, received whole on PostgreSQL: the rows folded so far are stored on
        // the same connection midway (rebuild), which `query_streamed` would not allow.
        let mut rows = statement.query(crate::params![after.0, after.1, accounts])?;
        let mut page = 0;
        while let Some(row) = rows.next()? {
            let text = |index| row.get_ref(index).and_then(|value| value.as_str());
            let (stream, version): (&str, i64) = (text(0)?, row.get(1)?);
            if stream != after.0 {
                // Not between its snapshot and its events: they make one stream.
                at_stream_start(&mut tables, &mut read)?;
                load(Some(stream), &mut tables, &mut read)?;
                after.0.clear();
                after.0.push_str(stream);
            }
            after.1 = version;
            let (account, seq): (&str, u64) = (text(2)?, row.get(3)?);
            let data = payload::text(row.get_ref(5)?)?;
            let event = Event::decode(text(4)?, &data)
                .map_err(|error| StoreError::Corrupt(format!("account {account}, event {seq}: {error}")))?;
            apply_event(&mut tables, &EventRef { account, seq, recorded_at: text(6)?, event: &event })?;
            read += data.len();
            page += 1;
        }
        applied += page as u64;
        if page < FOLD_PAGE {
            break;
        }
    }
    load(None, &mut tables, &mut read)?;
    tables.write_to(target)?;
    Ok(applied)
}

/// Drops the projections and rebuilds them from the log, in one transaction.
pub fn rebuild(conn: &mut Connection) -> Result<u64, StoreError> {
    let tx = conn.write_transaction()?;
    let applied = rebuild_within(&tx)?;
    tx.commit()?;
    Ok(applied)
}

/// `rebuild` inside the caller's transaction (a migration's, so that the two commit together).
pub fn rebuild_within(tx: &Connection) -> Result<u64, StoreError> {
    clear(tx)?;
    fold_into(tx, tx, None)
}

/// A deterministic sha256 of one projection table's rows, hex.
pub fn table_checksum(conn: &Connection, table: &str, order_by: &str) -> Result<String, StoreError> {
    let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order_by}"))?;
    let columns = statement.column_count();
    let mut rows = statement.query_streamed([])?;
    let mut hasher = Sha256::new();
    while let Some(row) = rows.next()? {
        for index in 0..columns {
            match row.get_ref(index)? {
                ValueRef::Null => hasher.update([0u8]),
                ValueRef::Integer(value) => {
                    hasher.update([1u8]);
                    hasher.update(value.to_le_bytes());
                }
                ValueRef::Real(value) => {
                    hasher.update([2u8]);
                    hasher.update(value.to_le_bytes());
                }
                ValueRef::Text(text) => {
                    hasher.update([3u8]);
                    hasher.update((text.len() as u64).to_le_bytes());
                    hasher.update(text);
                }
                // The only blobs of projection tables are compressed texts: hashed as their
                // text, so the checksum does not depend on how (or whether) a store compresses.
                ValueRef::Blob(bytes) => {
                    let text = payload::decompress(bytes)?;
                    hasher.update([3u8]);
                    hasher.update((text.len() as u64).to_le_bytes());
                    hasher.update(text);
                }
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checksums of every projection table, in `TABLES` order.
pub fn checksums(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    TABLES
        .iter()
        .map(|(table, order_by)| Ok((table.to_string(), table_checksum(conn, table, order_by)?)))
        .collect()
}
