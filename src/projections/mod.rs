//! Projections: read tables that are a pure function of the log. `apply` is the one code path
//! that updates them, live in the writer's transaction and during `ctxd rebuild` / `verify`.

pub mod accounts;
pub mod context;
pub mod verify;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use crate::domain::Event;
use crate::store::StoreError;
use crate::store::log::{self, RecordedEvent};

/// Every projection table and the columns that order its rows for checksums.
pub const TABLES: &[(&str, &str)] = &[
    ("accounts", "account_id"),
    ("api_keys", "key_hash"),
    ("namespaces", "account_id, namespace"),
    ("session_ttls", "account_id, namespace, session_id"),
    ("properties", "account_id, namespace, session_id, key"),
];

/// Applies one event to every projection it concerns.
pub fn apply(conn: &Connection, recorded: &RecordedEvent) -> Result<(), StoreError> {
    match &recorded.event {
        Event::AccountCreated(_) | Event::ApiKeyIssued(_) | Event::ApiKeyRevoked(_) => {
            accounts::apply(conn, recorded)
        }
        _ => context::apply(conn, recorded),
    }
}

/// Replays events `after < seq <= up_to` from `source` onto the projections in `target`.
/// Returns the number of events applied.
pub fn replay(source: &Connection, target: &Connection, up_to: u64) -> Result<u64, StoreError> {
    const PAGE: usize = 20_000;
    let mut after = 0;
    let mut applied = 0;
    loop {
        let events = log::read_range(source, after, up_to, PAGE)?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in &events {
            apply(target, event)?;
        }
        applied += events.len() as u64;
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

/// Drops the projections and rebuilds them from the log, in one transaction.
pub fn rebuild(conn: &mut Connection) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    clear(&tx)?;
    let up_to = log::last_seq(&tx)?;
    let applied = replay(&tx, &tx, up_to)?;
    tx.commit()?;
    Ok(applied)
}

/// A deterministic sha256 of one projection table's rows, hex.
pub fn table_checksum(
    conn: &Connection,
    table: &str,
    order_by: &str,
) -> Result<String, StoreError> {
    let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order_by}"))?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
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
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    hasher.update([3u8]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
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
