//! Read-only connections for queries. Readers never touch the writer's connection; in WAL mode
//! they see the last committed state without blocking it.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::OpenFlags;

use super::db::Connection;

use super::StoreError;

/// Idle read connections kept for reuse; a connection opened for a burst beyond them is closed
/// when its read ends, so the pool does not keep the peak's files open.
const MAX_IDLE: usize = 64;

/// A small pool of read-only connections, opened on demand and reused.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(path: PathBuf) -> Self {
        ReadPool { path, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `query` on an idle read-only connection, inside one read transaction: every statement
    /// of the query sees the same snapshot (a document and its ETag never come from two commits).
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("read pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_read_only(&self.path)?,
        };
        let result = in_snapshot(&conn, query);
        let mut idle = self.idle.lock().expect("read pool lock");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result
    }
}

fn in_snapshot<T>(
    conn: &Connection,
    query: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = query(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.prepare_cached(end)?.execute([])?;
    result
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
