//! Read-only connections for queries. Readers never touch the writer's connection; in WAL mode
//! they see the last committed state without blocking it.

use std::sync::Mutex;

use rusqlite::OpenFlags;

use super::db::Connection;

use super::{Location, StoreError, database_path};

/// Idle read connections kept for reuse; a connection opened for a burst beyond them is closed
/// when its read ends, so the pool does not keep the peak's files open.
const MAX_IDLE: usize = 64;

/// A small pool of read-only connections, opened on demand and reused.
pub struct ReadPool {
    location: Location,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(location: Location) -> Self {
        ReadPool { location, idle: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        open(&self.location)
    }

    /// Runs `query` on an idle read-only connection, inside one read transaction: every statement
    /// of the query sees the same snapshot (a document and its ETag never come from two commits).
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("read pool lock").pop();
        let conn = match pooled {
            Some(conn) if !conn.is_broken() => conn,
            _ => self.open()?,
        };
        let (result, ended) = in_snapshot(&conn, query);
        let mut idle = self.idle.lock().expect("read pool lock");
        // A connection whose transaction did not end cleanly is not given out again: it could
        // still be inside an old snapshot.
        if idle.len() < MAX_IDLE && ended && !conn.is_broken() {
            idle.push(conn);
        }
        result
    }
}

/// `query` in one snapshot, and whether the snapshot then ended cleanly.
fn in_snapshot<T>(
    conn: &Connection,
    query: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    let snapshot = match conn.snapshot() {
        Ok(snapshot) => snapshot,
        Err(error) => return (Err(error.into()), false),
    };
    let result = query(conn);
    let ended = match &result {
        Ok(_) => snapshot.commit(),
        Err(_) => snapshot.rollback(),
    };
    match (result, ended) {
        (Ok(value), Ok(())) => (Ok(value), true),
        (Ok(_), Err(error)) => (Err(error.into()), false),
        (Err(error), ended) => (Err(error), ended.is_ok()),
    }
}

/// A connection for reads (`ctxd verify`, export): read-only on SQLite.
pub fn open(location: &Location) -> Result<Connection, StoreError> {
    match location {
        Location::Sqlite(data_dir) => open_read_only(&database_path(data_dir)),
        Location::Postgres(url) => Ok(Connection::Postgres(super::db::PgConnection::connect(url)?)),
    }
}

/// Opens `path` read-only, for queries and `ctxd verify`.
pub fn open_read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16384;")?;
    super::plan_once(&conn)?;
    conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
    Ok(conn.into())
}
