//! Read-only connections for queries. Readers never touch the writer's connection; in WAL mode
//! they see the last committed state without blocking it.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;

use super::db::Connection;

use super::{Location, StoreError, database_path};

/// Idle read connections kept for reuse; a connection opened for a burst beyond them is closed
/// when its read ends, so the pool does not keep the peak's files open.
const MAX_IDLE: usize = 64;

/// How long a read waits for a connection when all that may be open are in use.
const WAIT_FOR_CONNECTION: Duration = Duration::from_secs(5);

/// A small pool of read-only connections, opened on demand and reused, at most `max_open` of
/// them at once: on PostgreSQL each is one of the server's connections, which every node shares.
pub struct ReadPool {
    location: Location,
    max_open: usize,
    /// How long a read waits for a connection (`WAIT_FOR_CONNECTION`).
    wait: Duration,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Connections open, idle or in use.
    open: usize,
}

impl ReadPool {
    pub fn new(location: Location, max_open: usize) -> Self {
        let max_open = max_open.max(1);
        ReadPool {
            location,
            max_open,
            wait: WAIT_FOR_CONNECTION,
            state: Mutex::default(),
            returned: Condvar::new(),
        }
    }

    /// An idle connection, a new one if fewer than `max_open` are open, or one given back within
    /// `WAIT_FOR_CONNECTION`; else `StoreError::Busy` (answered 503).
    fn take(&self) -> Result<Connection, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.state.lock().expect("read pool lock");
        loop {
            if let Some(conn) = state.idle.pop() {
                if !conn.is_broken() {
                    return Ok(conn);
                }
                state.open -= 1;
                continue;
            }
            if state.open < self.max_open {
                state.open += 1;
                drop(state);
                return open(&self.location).inspect_err(|_| self.give_back(None));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Busy);
            }
            state = self.returned.wait_timeout(state, deadline - now).expect("read pool lock").0;
        }
    }

    /// Gives a connection back (`None`, or one that may not be reused: it is closed).
    fn give_back(&self, conn: Option<Connection>) {
        let mut state = self.state.lock().expect("read pool lock");
        match conn {
            Some(conn) if state.idle.len() < MAX_IDLE => state.idle.push(conn),
            _ => state.open -= 1,
        }
        drop(state);
        self.returned.notify_one();
    }

    /// Runs `query` on an idle read-only connection, inside one read transaction: every statement
    /// of the query sees the same snapshot (a document and its ETag never come from two commits).
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.take()?;
        let (result, ended) = in_snapshot(&conn, query);
        // A connection whose transaction did not end cleanly is not given out again: it could
        // still be inside an old snapshot.
        let reusable = ended && !conn.is_broken();
        self.give_back(reusable.then_some(conn));
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

/// Opens `path` read-only, for queries and `ctxd verify`; an error names the file.
pub fn open_read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    open_read_only_unnamed(path).map_err(|error| error.naming(path))
}

fn open_read_only_unnamed(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16384;")?;
    super::plan_once(&conn)?;
    conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
    Ok(conn.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_cap_wait_for_a_connection_and_give_up_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::open_writer_connection(&database_path(dir.path()), true).unwrap());
        let pool = ReadPool {
            wait: Duration::from_millis(300),
            ..ReadPool::new(Location::Sqlite(dir.path().to_path_buf()), 1)
        };
        let pool = std::sync::Arc::new(pool);
        let (held, release) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.read(|_| {
                    started.send(()).unwrap();
                    release.recv().unwrap();
                    Ok(())
                })
            })
        };
        running.recv().unwrap();
        // The one connection is in use: a read that waits longer than the pool's wait gives up
        // (503), rather than hang.
        let started = Instant::now();
        let error = pool.read(|_| Ok(())).unwrap_err();
        assert!(matches!(error, StoreError::Busy) && error.is_unavailable(), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        // One that the connection comes back to in time is served with it.
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.read(crate::store::log::last_id))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the second read waits for the connection");
        held.send(()).unwrap();
        holder.join().unwrap().unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 0);
        assert_eq!(pool.state.lock().unwrap().open, 1, "one connection, reused");
    }
}
