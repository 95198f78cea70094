//! The raw SQLite limit: the workload's rows inserted straight into `events` of a fresh store
//! (WAL, `synchronous=FULL`, same schema) in transactions of B rows, with no HTTP, no domain
//! decision and no writer thread; optionally with the projections applied, as the writer does.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ctxd::app::BoxError;
use ctxd::projections;
use ctxd::store::chain;
use ctxd::store::db::Connection;
use ctxd::store::log::{self, RecordedEvent};
use ctxd::store::{Location, StoreError, open_writer, open_writer_connection};

use crate::report::{Throughput, thousands};
use crate::workload::{ACCOUNT, meta, patched};

/// One baseline's shape.
#[derive(Debug, Clone)]
pub struct RawSettings {
    /// Rows per transaction: the server's average group commit.
    pub batch: u64,
    pub duration: Duration,
    /// Clients of the HTTP workload, whose sessions the rows cycle over.
    pub clients: u32,
    /// Apply the projections after each append, as the writer does.
    pub with_projections: bool,
}

/// What one baseline measured.
pub struct RawReport {
    settings: RawSettings,
    /// "SQLite" or "PostgreSQL".
    backend: &'static str,
    rows: Throughput,
}

impl RawReport {
    /// `raw SQLite (same rows, batches of 48, synchronous=FULL): 120,000 rows/s; server/raw = 0.19`
    pub fn line(&self, server_per_second: Option<f64>) -> String {
        let backend = self.backend;
        let what = if self.settings.with_projections { " + projections" } else { "" };
        let raw_per_second = self.rows.per_second();
        let mut line = format!(
            "raw {backend}{what} (same rows, batches of {}, durable commits): {} rows/s",
            self.settings.batch,
            thousands(raw_per_second.round() as u64)
        );
        if let Some(server) = server_per_second {
            line.push_str(&format!("; server/raw = {:.2}", server / raw_per_second));
        }
        line
    }
}

/// A baseline's store: the SQLite file `file`, or the PostgreSQL `database` when given, written
/// as the server's writer writes (on PostgreSQL, writes whose answers nobody reads go out
/// together).
pub fn open_baseline(file: &Path, database: Option<&str>) -> Result<Connection, StoreError> {
    match database {
        Some(url) => {
            let conn = open_writer(&Location::Postgres(url.to_string()), true)?;
            conn.set_deferred(true);
            Ok(conn)
        }
        None => open_writer_connection(file, true),
    }
}

/// Runs one baseline on a fresh file in `dir` (or a fresh database) for `settings.duration`.
pub fn measure(dir: &Path, database: Option<&str>, settings: &RawSettings) -> Result<RawReport, BoxError> {
    let name = if settings.with_projections { "raw-projections.db" } else { "raw.db" };
    let mut conn = open_baseline(&dir.join(name), database)?;
    let mut rows = WorkloadRows::new(settings.clients);
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < settings.duration {
        commit_batch(&mut conn, &mut rows, settings)?;
        written += settings.batch;
    }
    Ok(RawReport {
        settings: settings.clone(),
        backend: if database.is_some() { "PostgreSQL" } else { "SQLite" },
        rows: Throughput { items: written, elapsed: started.elapsed() },
    })
}

/// Appends one batch of rows in one transaction, as one group commit of the writer would.
fn commit_batch(
    conn: &mut Connection,
    rows: &mut WorkloadRows,
    settings: &RawSettings,
) -> Result<(), StoreError> {
    let tx = conn.write_transaction()?;
    let now = Utc::now();
    let mut previous = chain::head(&tx, ACCOUNT)?.map_or(chain::GENESIS, |head| head.hash);
    for _ in 0..settings.batch {
        let recorded = rows.next(now);
        previous = log::append(&tx, &recorded, &previous)?;
        if settings.with_projections {
            let mut tables = projections::tables::SqlTables::new(&tx);
            projections::apply(&mut tables, &recorded)?;
            tables.finish()?.write(&tx)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The rows the HTTP workload makes the server write, in the order its clients would.
struct WorkloadRows {
    clients: u32,
    next_seq: u64,
    /// Current version of each stream written so far.
    versions: HashMap<String, u64>,
}

impl WorkloadRows {
    fn new(clients: u32) -> Self {
        WorkloadRows { clients, next_seq: 1, versions: HashMap::new() }
    }

    fn next(&mut self, now: DateTime<Utc>) -> RecordedEvent {
        let index = self.next_seq - 1;
        let client = (index % u64::from(self.clients)) as u32;
        let event = patched(client, index / u64::from(self.clients));
        let stream = event.stream(ACCOUNT);
        let version = self.versions.entry(stream.clone()).or_insert(0);
        *version += 1;
        // One account in a fresh store: its positions are the store-wide ids.
        let recorded = RecordedEvent {
            id: self.next_seq,
            seq: self.next_seq,
            account: ACCOUNT.to_string(),
            stream,
            stream_version: *version,
            event,
            meta: meta(),
            recorded_at: now,
        };
        self.next_seq += 1;
        recorded
    }
}
