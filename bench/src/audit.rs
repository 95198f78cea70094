//! `--workload audit`: what reading the past costs (issue 5). A store is filled with journeys
//! through the live write path (`analytics_fill.rs`), the real server is started on it, and each
//! figure is printed beside its raw SQLite limit, measured in the same run on the same store:
//! 1. **as-of reads** of one session with `--audit-changes` changes written over HTTP:
//!    `GET …/properties?as_of_seq=` and `?as_of=` at points spread through its history, and at
//!    its last change; the limit is reading and decoding the same events in-process (what any
//!    fold must do). The live GET is timed for comparison;
//! 2. **the account's feed over Server-Sent Events** to one client (`audit_feed.rs`): catching up
//!    from seq 0, against `log::read_feed` in pages of 256; then following live while the
//!    context load generator (`load.rs`) PATCHes at full speed: events delivered per second, and
//!    the lag;
//! 3. **the hash chain's verification**, in-process (`chain::verify`) and over HTTP, against a
//!    plain scan of every column of every event with the sha256 of each payload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ctxd::app::BoxError;
use ctxd::domain::Event;
use ctxd::domain::events::session_stream;
use ctxd::store::db::{Connection, params};
use ctxd::store::read::open_read_only;
use ctxd::store::{chain, log};
use ctxd::store::{database_path, lock_data_dir, open_writer_connection};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::analytics_fill;
use crate::audit_feed::{catch_up, follow_live, read_feed_pages};
use crate::http_client::{Client, fetch, request};
use crate::load::LoadSettings;
use crate::rebuild::SplitMix64;
use crate::report::{Throughput, thousands};
use crate::server::Server;
use crate::workload::ACCOUNT;

/// The namespace and session whose history the as-of reads read.
const NAMESPACE: &str = "conversations";
const SESSION: &str = "conv-history";
/// Property names the session's changes write, 1 to 3 at a time.
#[rustfmt::skip]
const KEYS: [&str; 20] = [
    "intent", "step", "agent", "channel", "language", "sentiment", "queue", "tier", "region", "product",
    "order_id", "case_id", "priority", "skill", "wait_s", "csat", "bot", "consent", "escalated", "topic",
];
/// Connections writing the session's changes at once (the writer orders them).
const WRITERS: u64 = 16;
/// Points of the history read as of, each timed once, for `as_of_seq` and for `as_of`.
const POINTS: usize = 200;
/// Untimed requests before each timed series.
const WARMUP: usize = 5;
/// Timed as-of reads at the last change (the whole history folded).
const LAST_REPETITIONS: usize = 50;
/// Events per journey of the fill, to size it (7.58 measured; see docs/PERFORMANCE.md).
const EVENTS_PER_SERVICE: f64 = 7.5;

/// How big the store and the session's history are.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Events filled into the store before the feed and chain figures (whole journeys: a few more).
    pub events: u64,
    /// Events of other accounts filled beside them.
    pub other_events: u64,
    /// Changes (PATCHes) of the session read as of.
    pub changes: u64,
}

/// Fills a store in `dir`, serves it, measures the three audit reads with their baselines and
/// prints them as a table. `live` is the load run while a client follows the feed. Returns
/// the failures (error answers, wrong answers, ids out of order, a broken chain).
pub fn run(dir: &Path, sizes: &Sizes, live: &LoadSettings) -> Result<Vec<String>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let api_key = Server::account_key(&runtime, dir, ACCOUNT)?;
    let services = (sizes.events as f64 / EVENTS_PER_SERVICE).ceil() as u64;
    eprintln!("audit: filling a store with {} journeys…", thousands(services));
    let fill = {
        let _lock = lock_data_dir(dir)?;
        let mut conn = open_writer_connection(&database_path(dir), true)?;
        let started = Instant::now();
        let stats = analytics_fill::fill(&mut conn, services, analytics_fill::window_start(Utc::now()))?;
        Throughput { items: stats.events, elapsed: started.elapsed() }
    };
    println!("audit fill (journeys: decide + append + apply): {fill}");
    if sizes.other_events > 0 {
        eprintln!(
            "audit: filling {} events of {OTHER_ACCOUNTS} other accounts…",
            thousands(sizes.other_events)
        );
        let _lock = lock_data_dir(dir)?;
        let mut conn = open_writer_connection(&database_path(dir), true)?;
        let started = Instant::now();
        fill_other_accounts(&mut conn, sizes.other_events)?;
        let other = Throughput { items: sizes.other_events, elapsed: started.elapsed() };
        println!("audit fill of other accounts (append, interleaved with each other): {other}");
    }
    let megabytes = std::fs::metadata(database_path(dir))?.len() as f64 / 1e6;
    let total: u64 =
        open_read_only(&database_path(dir))?
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
    println!("audit store: {} events of every account; ctxd.db {megabytes:.0} MB", thousands(total));

    let mut server = Server::start(dir)?;
    let http = Http { addr: server.addr, api_key: api_key.into() };
    let reader = open_read_only(&database_path(dir))?;
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    runtime.block_on(server.wait_ready())?;
    eprintln!("audit: writing {} changes of one session over HTTP…", thousands(sizes.changes));
    let started = Instant::now();
    runtime.block_on(write_history(&http, sizes.changes))?;
    let written = Throughput { items: sizes.changes, elapsed: started.elapsed() };
    println!("audit history: {WRITERS} connections PATCHing one session: {written}");
    as_of(&runtime, &http, &reader, sizes.changes, &mut rows, &mut failures)?;
    eprintln!("audit: the feed and the chain…");
    let feed = runtime.block_on(catch_up(&http, server.pid(), &reader))?;
    let raw_feed = timed(|| read_feed_pages(&reader))?;
    rows.push(feed.row(&raw_feed, &mut failures));
    chain_rows(&runtime, &http, &reader, &mut rows, &mut failures)?;
    let live = runtime.block_on(follow_live(&http, server.pid(), &reader, live))?;
    rows.push(live.row(&mut failures));
    server.stop_warning()?;

    println!(
        "| audit reads ({} changes of one session; {} events of the account) | server | raw SQLite limit, same run |",
        thousands(sizes.changes),
        thousands(feed.events)
    );
    println!("|---|---|---|");
    for [measure, server, raw] in &rows {
        println!("| {measure} | {server} | {raw} |");
    }
    println!("  loader during the live feed: {}", live.load);
    Ok(failures)
}

/// Stops `server` and warns when it did not exit cleanly.
/// Where the server is and the API key of the account.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    pub api_key: Arc<str>,
}

impl Http {
    pub fn get(&self, path: &str) -> hyper::Request<Full<Bytes>> {
        request(Method::GET, self.addr, path, &[("maven-api-key", &self.api_key)], vec![])
    }
}

/// `/v1/account/bench/conversations/conv-history/properties`
fn properties_path() -> String {
    format!("/v1/account/{ACCOUNT}/{NAMESPACE}/{SESSION}/properties")
}

/// The body of the session's `index`-th change: 1 to 3 of the 20 keys.
fn change(index: u64) -> Vec<u8> {
    let mut random = SplitMix64(index.wrapping_mul(0x9e37));
    let mut properties = Map::new();
    for _ in 0..1 + random.below(3) {
        let key = KEYS[random.below(KEYS.len() as u64) as usize];
        let value = match random.below(2) {
            0 => Value::from(random.below(1000)),
            _ => Value::from(format!("{key}-{}", random.below(50))),
        };
        properties.insert(key.to_string(), value);
    }
    serde_json::to_vec(&properties).expect("properties serialize")
}

/// PATCHes the session `changes` times, over `WRITERS` connections.
async fn write_history(http: &Http, changes: u64) -> Result<(), BoxError> {
    let writers: Vec<JoinHandle<Result<(), BoxError>>> = (0..WRITERS)
        .map(|writer| {
            let http = http.clone();
            tokio::spawn(async move {
                let mut client = Client::new(http.addr);
                for index in (writer..changes).step_by(WRITERS as usize) {
                    let headers = [("maven-api-key", &*http.api_key)];
                    let patch =
                        request(Method::PATCH, http.addr, &properties_path(), &headers, change(index));
                    match client.send(patch).await? {
                        (StatusCode::NO_CONTENT, _) => {}
                        (status, body) => return Err(format!("PATCH: {status}: {body:?}").into()),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

/// One change of the session: its seq and `recorded_at` as stored.
struct Change {
    seq: u64,
    recorded_at: String,
}

/// The as-of rows: GETs at `POINTS` points of the session's history, at its last change, and
/// live, each beside reading and decoding the same events in-process.
fn as_of(
    runtime: &tokio::runtime::Runtime,
    http: &Http,
    reader: &Connection,
    changes: u64,
    rows: &mut Vec<[String; 3]>,
    failures: &mut Vec<String>,
) -> Result<(), BoxError> {
    let stream = session_stream(ACCOUNT, NAMESPACE, SESSION);
    let history: Vec<Change> = reader
        .prepare("SELECT seq, recorded_at FROM events WHERE stream = ?1 ORDER BY stream_version")?
        .query_map([&stream], |row| Ok(Change { seq: row.get(0)?, recorded_at: row.get(1)? }))?
        .collect::<Result<_, _>>()?;
    if history.len() as u64 != changes {
        failures.push(format!("as-of: the session has {} events, not {changes}", history.len()));
    }
    let last = history.last().ok_or("the session has no history")?;
    let points: Vec<&Change> =
        (0..POINTS).map(|i| &history[(2 * i + 1) * history.len() / (2 * POINTS)]).collect();
    let base = properties_path();
    let at_seq: Vec<String> = points.iter().map(|point| format!("{base}?as_of_seq={}", point.seq)).collect();
    let at_time: Vec<String> =
        points.iter().map(|point| format!("{base}?as_of={}", point.recorded_at)).collect();
    let (seq_times, _) = runtime.block_on(time_gets(http, &at_seq))?;
    let (time_times, _) = runtime.block_on(time_gets(http, &at_time))?;
    let (last_times, as_of_last) = runtime
        .block_on(time_gets(http, &vec![format!("{base}?as_of_seq={}", last.seq); LAST_REPETITIONS]))?;
    let (live_times, live_body) = runtime.block_on(time_gets(http, &vec![base; POINTS]))?;
    if as_of_last != live_body {
        failures.push("as-of: the document at the last change differs from the live one".to_string());
    }

    let raw_points = sorted(
        points.iter().map(|point| timed(|| read_and_decode(reader, &stream, point.seq)).map(|t| t.elapsed)),
    )?;
    let raw_last = sorted(
        (0..LAST_REPETITIONS)
            .map(|_| timed(|| read_and_decode(reader, &stream, last.seq)).map(|t| t.elapsed)),
    )?;
    let raw = "read + decode the session's events up to each point";
    rows.push([
        format!("as-of GET `?as_of_seq=`, {POINTS} points spread through the history"),
        latencies(&seq_times),
        format!("{raw}: {}", latencies(&raw_points)),
    ]);
    rows.push([
        format!("as-of GET `?as_of=<time>`, the same {POINTS} points"),
        latencies(&time_times),
        "(as above)".to_string(),
    ]);
    rows.push([
        format!(
            "as-of GET at the last change ({} events folded), {LAST_REPETITIONS} requests",
            thousands(history.len() as u64)
        ),
        latencies(&last_times),
        format!("read + decode all {} events: {}", thousands(history.len() as u64), latencies(&raw_last)),
    ]);
    rows.push([format!("live GET (no as_of), {POINTS} requests"), latencies(&live_times), "—".to_string()]);
    Ok(())
}

/// GETs each path once on one keep-alive connection, after `WARMUP` untimed requests; answers
/// the sorted latencies and the last body.
async fn time_gets(http: &Http, paths: &[String]) -> Result<(Vec<Duration>, Bytes), BoxError> {
    let mut client = Client::new(http.addr);
    let (mut latencies, mut last) = (Vec::with_capacity(paths.len()), Bytes::new());
    for (index, path) in paths.iter().take(WARMUP).chain(paths).enumerate() {
        let started = Instant::now();
        let (status, body) = client.send(http.get(path)).await?;
        let elapsed = started.elapsed();
        if status != StatusCode::OK {
            return Err(format!("GET {path}: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        if index >= WARMUP.min(paths.len()) {
            latencies.push(elapsed);
        }
        last = body;
    }
    latencies.sort_unstable();
    Ok((latencies, last))
}

/// Reads the events of `stream` up to `seq` and decodes them: the raw cost of folding them.
fn read_and_decode(conn: &Connection, stream: &str, seq: u64) -> Result<u64, BoxError> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, event_type, data FROM events WHERE stream = ?1 AND seq <= ?2 ORDER BY stream_version",
    )?;
    let mut rows = statement.query(params![stream, seq])?;
    let mut decoded = 0;
    while let Some(row) = rows.next()? {
        let (event_type, data) = (row.get_ref(1)?.as_str()?, ctxd::store::payload::text(row.get_ref(2)?)?);
        let seq: u64 = row.get(0)?;
        Event::decode(event_type, &data).map_err(|error| format!("event {seq}: {error}"))?;
        decoded += 1;
    }
    Ok(decoded)
}

/// Collects timings, sorted.
fn sorted(times: impl Iterator<Item = Result<Duration, BoxError>>) -> Result<Vec<Duration>, BoxError> {
    let mut times = times.collect::<Result<Vec<_>, _>>()?;
    times.sort_unstable();
    Ok(times)
}

/// `p50 1.2 ms, p90 2.0 ms, max 3.1 ms` of sorted latencies (nearest rank).
fn latencies(sorted: &[Duration]) -> String {
    let ms = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    format!("p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms", ms(0.5), ms(0.9), ms(1.0))
}

/// Runs `work`, which answers how many events it handled, and times it.
pub fn timed(work: impl FnOnce() -> Result<u64, BoxError>) -> Result<Throughput, BoxError> {
    let started = Instant::now();
    let items = work()?;
    Ok(Throughput { items, elapsed: started.elapsed() })
}

/// `12,345 events/s`
pub fn rate(throughput: &Throughput) -> String {
    format!("{} events/s", thousands(throughput.per_second().round() as u64))
}

/// The chain rows: `chain::verify` in-process and over HTTP, beside a scan of every column.
fn chain_rows(
    runtime: &tokio::runtime::Runtime,
    http: &Http,
    reader: &Connection,
    rows: &mut Vec<[String; 3]>,
    failures: &mut Vec<String>,
) -> Result<(), BoxError> {
    let raw = timed(|| scan_and_hash(reader))?;
    let mut in_process = None;
    let verified = timed(|| {
        let snapshot = reader.transaction()?;
        let report = chain::verify(&snapshot, ACCOUNT)?;
        in_process = Some(report.first_bad.clone());
        Ok(report.events)
    })?;
    let started = Instant::now();
    let answer: Value = serde_json::from_slice(&runtime.block_on(fetch(
        Method::GET,
        http.addr,
        &format!("/v1/account/{ACCOUNT}/audit/verify"),
        &[("maven-api-key", &http.api_key)],
        vec![],
    ))?)?;
    let over_http = Throughput { items: answer["events"].as_u64().unwrap_or(0), elapsed: started.elapsed() };
    if in_process != Some(None) || answer["intact"] != Value::Bool(true) {
        failures.push(format!("chain: in-process first bad {in_process:?}; over HTTP {answer}"));
    }
    let baseline =
        format!("`SELECT` every column of the account's events + sha256 of each payload: {}", rate(&raw));
    let ratio = |server: &Throughput| format!("(server / raw {:.2})", server.per_second() / raw.per_second());
    rows.push([
        format!("chain verify in-process (`chain::verify`), {} events", thousands(verified.items)),
        verified.to_string(),
        format!("{baseline} {}", ratio(&verified)),
    ]);
    rows.push([
        format!("`GET …/audit/verify`, {} events", thousands(over_http.items)),
        over_http.to_string(),
        format!("(as above) {}", ratio(&over_http)),
    ]);
    Ok(())
}

/// Reads every column of every event of the account and hashes each payload: what a walk of
/// its chain cannot avoid.
fn scan_and_hash(conn: &Connection) -> Result<u64, BoxError> {
    let snapshot = conn.transaction()?;
    let mut statement = snapshot.prepare(
        "SELECT seq, account, stream, stream_version, event_type, event_version, data, meta,
                recorded_at, payload_hash, hash FROM events WHERE account = ?1 ORDER BY seq",
    )?;
    let mut rows = statement.query([ACCOUNT])?;
    let (mut events, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        for column in 0..11 {
            bytes += row.get_ref(column)?.as_bytes().map_or(8, <[u8]>::len);
        }
        bytes += usize::from(chain::payload_hash(&ctxd::store::payload::text(row.get_ref(6)?)?)[0]);
        events += 1;
    }
    std::hint::black_box(bytes);
    Ok(events)
}

/// The accounts `fill_other_accounts` writes to.
const OTHER_ACCOUNTS: u64 = 9;

/// Appends `events` property patches of `OTHER_ACCOUNTS` other accounts, round robin, through
/// `log::append` with each account's own chain, in transactions of 10,000: the rest of a
/// multi-tenant store, around which one account's chain is verified.
fn fill_other_accounts(conn: &mut Connection, events: u64) -> Result<(), BoxError> {
    let mut next_id = log::last_id(conn)? + 1;
    let mut heads: Vec<(u64, chain::Hash)> = vec![(0, chain::GENESIS); OTHER_ACCOUNTS as usize];
    let meta = crate::workload::meta();
    let mut written = 0;
    while written < events {
        let tx = conn.transaction()?;
        let now = Utc::now();
        for _ in 0..10_000.min(events - written) {
            let tenant = (written % OTHER_ACCOUNTS) as usize;
            let account = format!("tenant-{tenant}");
            let head = &mut heads[tenant];
            let event = crate::workload::patched(0, head.0);
            let recorded = log::RecordedEvent {
                id: next_id,
                seq: head.0 + 1,
                stream: event.stream(&account),
                stream_version: head.0 + 1,
                account,
                event,
                meta: meta.clone(),
                recorded_at: now,
            };
            *head = (recorded.seq, log::append(&tx, &recorded, &head.1)?);
            (next_id, written) = (next_id + 1, written + 1);
        }
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process halves of the workload on a tiny store: the feed's pages, the chain and
    /// the scan see every event, and a fold's baseline decodes a whole stream.
    #[test]
    fn the_baselines_read_every_event_of_a_small_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_path(dir.path());
        let mut conn = open_writer_connection(&path, true).unwrap();
        let stats = analytics_fill::fill(&mut conn, 50, analytics_fill::window_start(Utc::now())).unwrap();
        let reader = open_read_only(&path).unwrap();
        assert_eq!(read_feed_pages(&reader).unwrap(), stats.events);
        assert_eq!(scan_and_hash(&reader).unwrap(), stats.events);
        let report = chain::verify(&reader, ACCOUNT).unwrap();
        assert_eq!((report.events, report.first_bad), (stats.events, None));
        let (stream, length): (String, u64) = reader
            .query_row(
                "SELECT stream, count(*) FROM events GROUP BY stream ORDER BY 2 DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(read_and_decode(&reader, &stream, report.last_seq).unwrap(), length);
        for index in 0..100 {
            let properties: Map<String, Value> = serde_json::from_slice(&change(index)).unwrap();
            assert!((1..=3).contains(&properties.len()), "{properties:?}");
        }
    }
}
