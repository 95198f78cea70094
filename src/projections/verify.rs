//! `ctxd verify`: rebuilds the projections from the log into a scratch database and compares
//! them, table by table, with the live ones, inside one read snapshot of the live store.

use crate::store::db::Connection;
use crate::store::db::Value;

use super::{Events, TABLES, checksums, fold};
use crate::store::{StoreError, migrations};

/// What `verify` found.
#[derive(Debug)]
pub struct Report {
    pub events: u64,
    /// `(table, checksum)` of the live projections.
    pub tables: Vec<(String, String)>,
    /// The first difference, if any: table and the first row that differs.
    pub mismatch: Option<String>,
}

/// Verifies the store whose read-only connection is `live`.
pub fn verify(live: &Connection) -> Result<Report, StoreError> {
    let snapshot = live.snapshot()?;
    let result = verify_in_snapshot(live);
    snapshot.commit()?;
    result
}

fn verify_in_snapshot(live: &Connection) -> Result<Report, StoreError> {
    let mut scratch = Connection::open_in_memory()?;
    migrations::migrate(&mut scratch)?;
    let (tables, events) = fold(live, Events::All)?;
    scratch.execute_batch("BEGIN")?;
    tables.write_to(&scratch)?;
    scratch.execute_batch("COMMIT")?;
    let tables = checksums(live)?;
    let rebuilt = checksums(&scratch)?;
    let mismatch = tables
        .iter()
        .zip(&rebuilt)
        .zip(TABLES)
        .find(|((a, b), _)| a.1 != b.1)
        .map(|(_, (table, order_by))| first_difference(live, &scratch, table, order_by))
        .transpose()?;
    Ok(Report { events, tables, mismatch })
}

fn rows(conn: &Connection, table: &str, order_by: &str) -> Result<Vec<Vec<Value>>, StoreError> {
    let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order_by}"))?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| (0..columns).map(|index| row.get::<Value>(index)).collect())?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn first_difference(
    live: &Connection,
    rebuilt: &Connection,
    table: &str,
    order_by: &str,
) -> Result<String, StoreError> {
    let live_rows = rows(live, table, order_by)?;
    let rebuilt_rows = rows(rebuilt, table, order_by)?;
    for index in 0..live_rows.len().max(rebuilt_rows.len()) {
        let (a, b) = (live_rows.get(index), rebuilt_rows.get(index));
        if a != b {
            return Ok(format!("table {table}, row {index}: live {a:?}, rebuilt from the log {b:?}"));
        }
    }
    Ok(format!("table {table}: checksums differ"))
}
