//! Journey analytics at scale: a store is filled with N realistic journeys through the live
//! write path (`analytics_fill.rs`), then the real server answers the analytics queries over
//! HTTP, one at a time, and their latencies are printed (target: `dropoff`, `funnel` and
//! `transitions` in ≤ 5 ms at p50 with 1,000,000 services over 30 days, ≤ 20 ms with more).
//!
//! The account and its API key are created over the admin API of a server started on the empty
//! data directory, which is stopped before the fill, so the log starts with the account as a
//! live one would.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use ctxd::app::BoxError;
use ctxd::projections::analytics::{Counter, Grain};
use ctxd::projections::analytics_queries::{self as queries, Cohorts};
use ctxd::store::StoreError;
use ctxd::store::db::Connection;
use ctxd::store::{database_path, lock_data_dir, open_writer_connection};
use hyper::Method;
use serde_json::Value;

use crate::analytics_fill::{self, DAYS, FILL_TRANSACTION, FillStats, SERVICE_TYPES};
use crate::http_client::{Client, request};
use crate::report::{Throughput, thousands};
use crate::server::Server;
use crate::workload::ACCOUNT;

/// Timed requests per query, after the warm-up ones.
const REPETITIONS: usize = 30;
/// Requests per query before the timed ones (the first is reported on its own).
const WARMUP: usize = 3;
/// The p50 the requirement asks of `dropoff`, `funnel` and `transitions` (issue 16): 5 ms up to
/// 1,000,000 services, 20 ms beyond (10,000,000).
fn target_p50_ms(services: u64) -> f64 {
    if services > 1_000_000 { 20.0 } else { 5.0 }
}

/// Fills a store in `dir` with `services` journeys, serves it, times the analytics queries and
/// prints the figures. Returns the failures (error answers, totals that differ from the fill).
pub fn run(dir: &Path, services: u64) -> Result<Vec<String>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let api_key = Server::account_key(&runtime, dir, ACCOUNT)?;

    let window = analytics_fill::window_start(Utc::now());
    eprintln!("filling a store with {} journeys…", thousands(services));
    let (stats, elapsed, rows) = {
        let _lock = lock_data_dir(dir)?;
        let mut conn = open_writer_connection(&database_path(dir), true)?;
        let started = Instant::now();
        let stats = analytics_fill::fill(&mut conn, services, window)?;
        let elapsed = started.elapsed();
        (stats, elapsed, counter_rows(&conn)?)
    };
    print_fill(&stats, elapsed, window, &rows, dir);

    let mut server = Server::start(dir)?;
    let pid = server.pid();
    let (results, server_peak) = runtime.block_on(async {
        server.wait_ready().await?;
        let results = time_queries(&server, &api_key, window, target_p50_ms(services)).await?;
        Ok::<_, BoxError>((results, peak_rss_kib(pid)))
    })?;
    server.stop_warning()?;
    let raw = raw_baseline(dir)?;
    let hourly = raw_hourly_baseline(dir)?;

    println!(
        "analytics over HTTP, one keep-alive connection, queries one at a time: {REPETITIONS} timed requests \
         per query after {WARMUP} warm-up (the first shown apart); target p50 ≤ {:.0} ms \
         (required of dropoff, funnel and transitions)",
        target_p50_ms(services)
    );
    let mut failures = Vec::new();
    for result in &results {
        println!("{}", result.line());
        if let Some(error) = &result.error {
            failures.push(format!("analytics {}: {error}", result.query));
        }
    }
    let p50s = |raw: &[(&str, f64)]| -> String {
        raw.iter().map(|(query, p50)| format!("{query} p50 {p50:.1} ms")).collect::<Vec<_>>().join(", ")
    };
    println!(
        "  raw SQLite limit (the sums the same queries read, run in-process on a read-only connection, \
         no HTTP or JSON; whole account): {}",
        p50s(&raw)
    );
    println!(
        "  the same sums over the hourly rows alone (what the queries read before the daily rollups): {}",
        p50s(&hourly)
    );
    let totals = results.first().and_then(|first| first.body.as_ref()).map(|body| body["totals"].clone());
    match totals {
        Some(totals) => {
            let line = totals_line(&totals, &stats);
            println!("  {line}");
            if line.contains("DIFFER") {
                failures.push(format!("analytics totals: {line}"));
            }
        }
        None => failures.push("analytics: no dropoff totals to check".to_string()),
    }
    println!(
        "  store after the run: {}; server peak RSS {}",
        store_size(dir),
        server_peak.map_or_else(|| "unknown".to_string(), mib)
    );
    Ok(failures)
}

/// Stops `server` and warns when it did not exit cleanly.
/// Rows of each analytics table, in `Counter::ALL` and `Grain::ALL` order, then `analytics_abandoned`.
fn counter_rows(conn: &Connection) -> Result<Vec<(&'static str, u64)>, BoxError> {
    let tables = Counter::ALL.iter().flat_map(|counter| Grain::ALL.map(|grain| counter.table(grain)));
    let tables = tables.chain(["analytics_abandoned"]);
    tables
        .map(|table| {
            let count: u64 =
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))?;
            Ok((table, count))
        })
        .collect()
}

fn print_fill(stats: &FillStats, elapsed: Duration, window: DateTime<Utc>, rows: &[(&str, u64)], dir: &Path) {
    let services = Throughput { items: stats.services, elapsed };
    let events = Throughput { items: stats.events, elapsed };
    println!(
        "analytics fill (decide + append + apply, {} events per transaction): {} services, {} events in {:.1} s = {} services/s, {} events/s",
        thousands(FILL_TRANSACTION),
        thousands(stats.services),
        thousands(stats.events),
        elapsed.as_secs_f64(),
        thousands(services.per_second().round() as u64),
        thousands(events.per_second().round() as u64),
    );
    let share = |count: u64| 100.0 * count as f64 / stats.services.max(1) as f64;
    let per_service = |count: u64| count as f64 / stats.services.max(1) as f64;
    println!(
        "  journeys starting {} – {} ({DAYS} days, {} service types, voice/chat): {:.1}% resolved, {:.1}% ended customer_hangup, \
         {:.1}% auto-completed, {:.1}% active; {:.2} states, {:.2} commands, {:.2} events per service; {:.1}% switched media",
        window.format("%Y-%m-%d"),
        (window + TimeDelta::days(DAYS - 1)).format("%Y-%m-%d"),
        SERVICE_TYPES.len(),
        share(stats.resolved),
        share(stats.hangups),
        share(stats.auto_completed),
        share(stats.active),
        per_service(stats.states),
        per_service(stats.commands),
        per_service(stats.events),
        share(stats.switched_media),
    );
    let rows: Vec<String> =
        rows.iter().map(|(table, count)| format!("{table} {}", thousands(*count))).collect();
    println!(
        "  store after the fill: {}; rows: {}; bench peak RSS {}",
        store_size(dir),
        rows.join(", "),
        peak_rss_kib(std::process::id()).map_or_else(|| "unknown".to_string(), mib)
    );
}

/// `3.21 GiB (WAL 12.0 MiB)`: the database file and its WAL.
fn store_size(dir: &Path) -> String {
    let db = database_path(dir);
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    let (main, wal) = (size(&db), size(Path::new(&wal)));
    format!(
        "{:.2} GiB (ctxd.db {:.2} GiB + WAL {:.1} MiB)",
        gib(main + wal),
        gib(main),
        wal as f64 / 1048576.0
    )
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// A process's peak resident set (`VmHWM`), in KiB (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The raw SQLite limit of the required queries over the whole account: the counter sums each
/// reads (`projections::analytics_queries`, the server's own SQL), timed in-process on a
/// read-only connection, without HTTP or JSON. Answers each query's p50 in ms.
fn raw_baseline(dir: &Path) -> Result<Vec<(&'static str, f64)>, BoxError> {
    let conn = ctxd::store::read::open_read_only(&database_path(dir))?;
    let cohorts = Cohorts { account_id: ACCOUNT.to_string(), ..Cohorts::default() };
    let queries: [(&str, Sums); 3] = [
        ("dropoff", |conn, cohorts| {
            queries::service_totals(conn, cohorts)?;
            Ok(queries::sums(conn, cohorts, Counter::States, &["state_type"])?.len())
        }),
        ("funnel", |conn, cohorts| {
            queries::sums(conn, cohorts, Counter::Services, &["media_type"])?;
            Ok(queries::sums(conn, cohorts, Counter::Paths, &["media_type", "path"])?.len())
        }),
        ("transitions", |conn, cohorts| {
            Ok(queries::sums(conn, cohorts, Counter::Transitions, &["from_type", "to_type"])?.len())
        }),
    ];
    p50s_of(&conn, &queries, &cohorts)
}

/// The same sums as `raw_baseline`, written out over the hourly tables only: the raw limit of
/// the queries as they read before the daily rollups (migration 0021).
fn raw_hourly_baseline(dir: &Path) -> Result<Vec<(&'static str, f64)>, BoxError> {
    let conn = ctxd::store::read::open_read_only(&database_path(dir))?;
    let cohorts = Cohorts { account_id: ACCOUNT.to_string(), ..Cohorts::default() };
    let queries: [(&str, Sums); 3] = [
        ("dropoff", |conn, _| {
            hourly_sums(conn, Counter::Services, "account_id")?;
            hourly_sums(conn, Counter::States, "state_type")
        }),
        ("funnel", |conn, _| {
            hourly_sums(conn, Counter::Services, "media_type")?;
            hourly_sums(conn, Counter::Paths, "media_type, path")
        }),
        ("transitions", |conn, _| hourly_sums(conn, Counter::Transitions, "from_type, to_type")),
    ];
    p50s_of(&conn, &queries, &cohorts)
}

type Sums = fn(&Connection, &Cohorts) -> Result<usize, StoreError>;

/// The bench account's sums of `counter`'s hourly rows grouped `by`: the number of groups.
fn hourly_sums(conn: &Connection, counter: Counter, by: &str) -> Result<usize, StoreError> {
    let totals: Vec<String> = counter.values().iter().map(|v| format!("sum({v})")).collect();
    let sql = format!(
        "SELECT {by}, {} FROM {} WHERE account_id = ?1 GROUP BY {by}",
        totals.join(", "),
        counter.table(Grain::Hour)
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([ACCOUNT])?;
    let mut count = 0;
    while rows.next()?.is_some() {
        count += 1;
    }
    Ok(count)
}

/// Each query's p50 in ms over `REPETITIONS` runs after `WARMUP`.
fn p50s_of(
    conn: &Connection,
    queries: &[(&'static str, Sums)],
    cohorts: &Cohorts,
) -> Result<Vec<(&'static str, f64)>, BoxError> {
    let mut p50s = Vec::new();
    for (name, query) in queries {
        let mut latencies = Vec::with_capacity(REPETITIONS);
        for attempt in 0..WARMUP + REPETITIONS {
            let started = Instant::now();
            query(conn, cohorts)?;
            if attempt >= WARMUP {
                latencies.push(started.elapsed());
            }
        }
        latencies.sort_unstable();
        p50s.push((*name, latencies[(REPETITIONS - 1) / 2].as_secs_f64() * 1000.0));
    }
    Ok(p50s)
}

/// One query's timings and what it answered.
struct QueryResult {
    query: String,
    /// Sorted.
    latencies: Vec<Duration>,
    first: Duration,
    bytes: usize,
    /// What the query's answer holds, e.g. `12 state types`.
    summary: String,
    /// The last answer, parsed.
    body: Option<Value>,
    error: Option<String>,
    /// Whether the p50 target is a requirement for this query.
    required: bool,
    /// The p50 target, ms.
    target_ms: f64,
}

impl QueryResult {
    fn ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else { return 0.0 };
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, last + 1);
        self.latencies[rank - 1].as_secs_f64() * 1000.0
    }

    /// `  dropoff: p50 12.3 ms, p90 13.0 ms, max 15.1 ms (first 40.2 ms; 3,456 bytes, 8 state types) — met`
    fn line(&self) -> String {
        if let Some(error) = &self.error {
            return format!("  {}: FAILED: {error}", self.query);
        }
        let p50 = self.ms(0.5);
        let target = self.target_ms;
        let verdict = match (p50 <= target, self.required) {
            (true, true) => format!("≤ {target:.0} ms: met"),
            (false, true) => format!("≤ {target:.0} ms: NOT MET"),
            (true, false) => format!("≤ {target:.0} ms"),
            (false, false) => format!("> {target:.0} ms"),
        };
        format!(
            "  {}: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (first {:.1} ms; {} bytes, {}) — {verdict}",
            self.query,
            p50,
            self.ms(0.9),
            self.ms(1.0),
            self.first.as_secs_f64() * 1000.0,
            thousands(self.bytes as u64),
            self.summary,
        )
    }
}

/// Times every query against the server, sequentially.
async fn time_queries(
    server: &Server,
    api_key: &str,
    window: DateTime<Utc>,
    target_ms: f64,
) -> Result<Vec<QueryResult>, BoxError> {
    let hour = |time: DateTime<Utc>| time.format("%Y-%m-%dT%H:00:00Z").to_string();
    let (from, to) = (hour(window + TimeDelta::days(7)), hour(window + TimeDelta::days(14)));
    let week = format!("service_type=billing&media_type=chat&from={from}&to={to}");
    let queries = [
        ("dropoff".to_string(), true),
        (format!("dropoff?{week}"), true),
        ("funnel?steps=ivr,identification,queue,agent&service_type=billing".to_string(), true),
        ("funnel?steps=ivr,queue,agent&window=1h&breakdown=media_type".to_string(), true),
        (format!("funnel?steps=queue,agent&{week}"), true),
        ("transitions".to_string(), true),
        (format!("transitions?{week}"), true),
        ("timeseries?interval=day".to_string(), false),
        ("timeseries?interval=hour".to_string(), false),
        ("abandoned?limit=100".to_string(), false),
        (format!("abandoned?limit=100&from={from}&to={to}"), false),
    ];
    let mut client = Client::new(server.addr);
    let headers = [("maven-api-key", api_key)];
    let mut results = Vec::new();
    for (query, required) in queries {
        let path = format!("/v1/account/{ACCOUNT}/analytics/{query}");
        let mut result = QueryResult {
            query,
            latencies: Vec::with_capacity(REPETITIONS),
            first: Duration::ZERO,
            bytes: 0,
            summary: String::new(),
            body: None,
            error: None,
            required,
            target_ms,
        };
        for attempt in 0..WARMUP + REPETITIONS {
            let started = Instant::now();
            let answer = client.send(request(Method::GET, server.addr, &path, &headers, vec![])).await;
            let elapsed = started.elapsed();
            let body = match answer {
                Ok((status, body)) if status.is_success() => body,
                Ok((status, body)) => {
                    result.error = Some(format!("status {status}: {}", String::from_utf8_lossy(&body)));
                    break;
                }
                Err(error) => {
                    result.error = Some(error.to_string());
                    break;
                }
            };
            match attempt {
                0 => result.first = elapsed,
                n if n >= WARMUP => result.latencies.push(elapsed),
                _ => {}
            }
            if attempt + 1 == WARMUP + REPETITIONS {
                result.bytes = body.len();
                result.body = serde_json::from_slice(&body).ok();
            }
        }
        result.latencies.sort_unstable();
        result.summary = summary(result.body.as_ref());
        results.push(result);
    }
    Ok(results)
}

/// What an answer holds: the length of its list.
fn summary(body: Option<&Value>) -> String {
    let Some(body) = body else { return "no JSON answer".to_string() };
    let count = |field: &str| body[field].as_array().map(Vec::len);
    match (count("states"), count("transitions"), count("buckets"), count("services")) {
        _ if count("steps").is_some() => format!("{} steps", count("steps").unwrap_or(0)),
        (Some(n), ..) => format!("{n} state types"),
        (_, Some(n), ..) => format!("{n} transitions"),
        (_, _, Some(n), _) => format!("{n} buckets"),
        (_, _, _, Some(n)) => format!("{n} services"),
        _ => "unexpected answer".to_string(),
    }
}

/// The account totals `dropoff` answered, checked against what the fill wrote.
fn totals_line(totals: &Value, stats: &FillStats) -> String {
    let get = |field: &str| totals[field].as_i64().unwrap_or(-1);
    let answered = [get("started"), get("completed"), get("abandoned"), get("active")];
    let expected = [stats.services, stats.resolved, stats.hangups + stats.auto_completed, stats.active]
        .map(|count| count as i64);
    let verdict = if answered == expected { "as filled" } else { "DIFFER from the fill" };
    let [started, completed, abandoned, active] = answered.map(|n| thousands(n.max(0) as u64));
    format!(
        "dropoff totals: started {started}, completed {completed}, abandoned {abandoned}, active {active} — {verdict}{}",
        if answered == expected { String::new() } else { format!(" (expected {expected:?})") }
    )
}
