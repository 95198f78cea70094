//! Rebuild, verify, export and import speed: a store is filled with a realistic mix of context
//! events through the live code path (`log::append` + `projections::apply`, in large
//! transactions), then `projections::rebuild`, `projections::verify::verify`, `transfer::export`
//! (to an NDJSON file beside the store) and `transfer::import` (of that file into a second,
//! empty store: insert, chain check and rebuild in one transaction) are timed on it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use ctxd::app::BoxError;
use ctxd::domain::Event;
use ctxd::domain::events::{
    JsonText, NamespaceCreated, Properties, PropertiesPatched, PropertyDeleted, SessionTtlSet,
};
use ctxd::projections;
use ctxd::store::chain;
use ctxd::store::db::Connection;
use ctxd::store::log::{self, RecordedEvent};
use ctxd::store::transfer::{self, Imported, Selection, TransferError};
use ctxd::store::{StoreError, database_path, open_writer_connection, read::open_read_only};
use serde_json::Value;

use crate::report::{Throughput, thousands};
use crate::workload::{ACCOUNT, meta};

/// Namespaces of the filled store; sessions are spread over them.
const NAMESPACES: &[&str] = &["orders", "billing", "support", "journeys"];
/// Sessions the events are spread over.
const SESSIONS: u64 = 100_000;
/// Property names the events write and delete.
const KEYS: &[&str] = &["intent", "step", "agent", "channel", "language", "sentiment", "queue", "tier"];
/// Events per transaction of the fill.
const FILL_TRANSACTION: u64 = 50_000;

/// Fills a store in `dir` with `events` events, then times rebuild, verify, export and import
/// (into `dir` + `-import`), printing each.
pub fn run(dir: &Path, events: u64) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let path = database_path(dir);
    let mut conn = open_writer_connection(&path, true)?;
    eprintln!("filling a store with {} events…", thousands(events));
    let fill = timed(|| fill(&mut conn, events))?;
    println!("fill (append + apply, {} per transaction): {fill}", thousands(FILL_TRANSACTION));
    let rebuild = timed(|| projections::rebuild(&mut conn))?;
    println!("rebuild: {rebuild}");
    let reader = open_read_only(&path)?;
    let started = Instant::now();
    let report = projections::verify::verify(&reader)?;
    let verify = Throughput { items: report.events, elapsed: started.elapsed() };
    match report.mismatch {
        None => println!("verify: {verify} (projections match)"),
        Some(difference) => println!("verify: {verify} — MISMATCH: {difference}"),
    }
    let file = dir.join("export.ndjson");
    let export = timed(|| export_to_file(&reader, &file))?;
    let megabytes = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let raw_export = timed(|| read_every_column(&reader))?;
    println!(
        "export (NDJSON to a file, {megabytes:.0} MB): {export}; raw SQLite limit (read every column of every row, same run): {raw_export}; export/raw = {:.2}",
        export.per_second() / raw_export.per_second()
    );
    let import_dir = dir.with_file_name(format!("{}-import", dir.file_name().unwrap_or_default().display()));
    let started = Instant::now();
    let imported = import_file(&import_dir, &file)?;
    let import = Throughput { items: imported.events, elapsed: started.elapsed() };
    let same = projections::checksums(&reader)?
        == projections::checksums(&open_read_only(&database_path(&import_dir))?)?;
    let same = if same { "same checksums as the source" } else { "CHECKSUMS DIFFER from the source" };
    println!("import (one transaction: {}): {import} ({same})", imported.phases);
    let raw_dir = dir.with_file_name(format!("{}-raw-import", dir.file_name().unwrap_or_default().display()));
    let raw_import = timed(|| copy_rows(&raw_dir, &path))?;
    println!(
        "  raw SQLite limit (same run): INSERT … SELECT of every row into an empty store, one transaction: {raw_import}; import/raw = {:.2}",
        import.per_second() / raw_import.per_second()
    );
    std::fs::remove_dir_all(&raw_dir)?;
    Ok(())
}

/// What an export cannot avoid: reading every column of every event row in seq order.
fn read_every_column(reader: &Connection) -> Result<u64, StoreError> {
    let mut statement = reader.prepare("SELECT * FROM events ORDER BY seq")?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    let (mut events, mut bytes) = (0, 0usize);
    while let Some(row) = rows.next()? {
        for index in 0..columns {
            bytes += row.get_ref(index)?.as_bytes().map_or(8, <[u8]>::len);
        }
        events += 1;
    }
    std::hint::black_box(bytes);
    Ok(events)
}

/// What an import cannot avoid: inserting the rows into an empty store's `events`, with the
/// import's journal and cache settings, in one transaction — no parsing, no checks, no rebuild.
fn copy_rows(dir: &Path, source: &Path) -> Result<u64, StoreError> {
    std::fs::create_dir_all(dir)?;
    let conn = open_writer_connection(&database_path(dir), true)?;
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA cache_size = -262144;")?;
    conn.execute("ATTACH DATABASE ?1 AS source", [source.display().to_string()])?;
    let tx = conn.transaction()?;
    let columns = "seq, account, stream, stream_version, event_type, event_version, data, meta, recorded_at, payload_hash, hash";
    let copied = tx.execute(
        &format!("INSERT INTO main.events ({columns}) SELECT {columns} FROM source.events ORDER BY seq"),
        [],
    )?;
    tx.commit()?;
    Ok(copied as u64)
}

/// `ctxd export > file`, as the CLI does it.
fn export_to_file(reader: &Connection, file: &Path) -> Result<u64, TransferError> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(file)?);
    let events = transfer::export(reader, &Selection::default(), &mut out)?;
    out.flush()?;
    Ok(events)
}

/// `ctxd import file` into a new store in `dir`, as the CLI does it, the store's creation included.
fn import_file(dir: &Path, file: &Path) -> Result<Imported, TransferError> {
    std::fs::create_dir_all(dir)?;
    let mut conn = open_writer_connection(&database_path(dir), true)?;
    let input = BufReader::with_capacity(1 << 20, File::open(file)?);
    transfer::import(&mut conn, input)
}

/// Runs `work`, which returns how many events it handled, and times it.
fn timed<E>(work: impl FnOnce() -> Result<u64, E>) -> Result<Throughput, E> {
    let started = Instant::now();
    let items = work()?;
    Ok(Throughput { items, elapsed: started.elapsed() })
}

/// Appends `events` generated events and applies them, as the writer would.
fn fill(conn: &mut Connection, events: u64) -> Result<u64, StoreError> {
    let mut generator = EventMix::new(Utc::now() - TimeDelta::days(30));
    let mut written = 0;
    while written < events {
        let tx = conn.transaction()?;
        let mut previous = chain::head(&tx, ACCOUNT)?.map_or(chain::GENESIS, |head| head.hash);
        for _ in 0..FILL_TRANSACTION.min(events - written) {
            let recorded = generator.next();
            previous = log::append(&tx, &recorded, &previous)?;
            let mut tables = projections::tables::SqlTables::new(&tx);
            projections::apply(&mut tables, &recorded)?;
            tables.finish()?.write(&tx)?;
            written += 1;
        }
        tx.commit()?;
    }
    Ok(written)
}

/// A deterministic stream of context events: each namespace's implicit creation, then 90%
/// `PropertiesPatched` of 1–3 properties, 7% `PropertyDeleted`, 3% `SessionTtlSet`, over
/// `SESSIONS` sessions.
struct EventMix {
    random: SplitMix64,
    next_seq: u64,
    /// Stream version of each session, by session number.
    versions: Vec<u64>,
    started_at: DateTime<Utc>,
}

impl EventMix {
    fn new(started_at: DateTime<Utc>) -> Self {
        EventMix { random: SplitMix64(0x5eed), next_seq: 1, versions: vec![0; SESSIONS as usize], started_at }
    }

    fn next(&mut self) -> RecordedEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (event, stream_version) = match NAMESPACES.get(seq as usize - 1) {
            Some(namespace) => (namespace_created(namespace), 1),
            None => self.session_event(),
        };
        // One account in a fresh store: its positions are the store-wide ids.
        RecordedEvent {
            id: seq,
            seq,
            account: ACCOUNT.to_string(),
            stream: event.stream(ACCOUNT),
            stream_version,
            event,
            meta: meta(),
            recorded_at: self.started_at + TimeDelta::milliseconds(seq as i64),
        }
    }

    /// An event on a random session, and the session's version after it.
    fn session_event(&mut self) -> (Event, u64) {
        let session = self.random.below(SESSIONS);
        let namespace = NAMESPACES[(session % NAMESPACES.len() as u64) as usize].to_string();
        let session_id = format!("conv-{session:06}");
        let event = match self.random.below(100) {
            0..90 => Event::PropertiesPatched(PropertiesPatched {
                namespace,
                session_id,
                properties: self.properties(),
                expires_at: None,
            }),
            90..97 => Event::PropertyDeleted(PropertyDeleted {
                namespace,
                session_id,
                property: self.key().to_string(),
            }),
            _ => Event::SessionTtlSet(SessionTtlSet { namespace, session_id, ttl_second: 3600 }),
        };
        let version = &mut self.versions[session as usize];
        *version += 1;
        (event, *version)
    }

    /// 1 to 3 properties with short string or number values.
    fn properties(&mut self) -> Properties {
        let count = 1 + self.random.below(3);
        (0..count)
            .map(|_| {
                let key = self.key();
                let value = match key {
                    "step" => Value::from(self.random.below(40)),
                    _ => Value::from(format!("{key}-{}", self.random.below(50))),
                };
                (key.to_string(), JsonText::from_value(&value))
            })
            .collect()
    }

    fn key(&mut self) -> &'static str {
        KEYS[self.random.below(KEYS.len() as u64) as usize]
    }
}

fn namespace_created(namespace: &str) -> Event {
    Event::NamespaceCreated(NamespaceCreated {
        namespace: namespace.to_string(),
        ttl_second: None,
        implicit: true,
    })
}

/// A small, fast, seedable pseudo-random generator (SplitMix64): the fill is the same every run.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
