//! The workloads over HTTP: N clients, each on its own keep-alive connection, sending requests
//! back to back: PATCHes of session properties (the context workload) or the lifecycle calls of
//! whole journeys (the journey workload, `journeys.rs`). Requests that complete inside the
//! measured window are counted; `/metrics` is scraped at the window's edges. Errors are counted
//! whenever they happen, warm-up included.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use hyper::{Method, StatusCode};

use crate::http_client::{Client, request};
use crate::journeys::{self, Call};
use crate::report::thousands;
use crate::server::{Scrape, ServerActivity};
use crate::workload::{ACCOUNT, NAMESPACE, properties, session_id};

/// Which requests the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// PATCH 4 properties of a session: one command, one event.
    Context,
    /// The 8 lifecycle calls of a journey (`journeys::Call`), chained by the ids they return.
    Journeys,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Context => "context",
            Workload::Journeys => "journeys",
        }
    }

    /// Kinds of request the latencies are kept apart for.
    fn kinds(self) -> usize {
        match self {
            Workload::Context => 1,
            Workload::Journeys => Call::ALL.len(),
        }
    }
}

/// How hard and how long to load the server.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub clients: u32,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The measured window: after the warm-up, for the duration.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    from: Instant,
    pub until: Instant,
}

impl Window {
    pub fn contains(&self, instant: Instant) -> bool {
        self.from <= instant && instant < self.until
    }
}

/// What the workload measured.
pub struct LoadReport {
    workload: Workload,
    clients: u32,
    duration: Duration,
    /// Latencies of the successful requests completed in the window, in microseconds, sorted.
    latencies: Vec<u32>,
    /// The same, by kind of request (`Workload::kinds`), each sorted.
    by_kind: Vec<Vec<u32>>,
    /// Failed requests (anything but the expected 2xx and body, transport errors included),
    /// over the whole run.
    pub errors: u64,
    pub first_error: Option<String>,
    /// The server's own account of the window.
    pub server: ServerActivity,
}

impl LoadReport {
    /// Successful requests per second: PATCHes (each one durable append) or lifecycle calls.
    pub fn requests_per_second(&self) -> f64 {
        self.per_second(self.latencies.len() as u64)
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.duration.as_secs_f64()
    }

    /// Latency at quantile `q` (nearest rank), in milliseconds.
    fn latency_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies, q)
    }

    fn context(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "context PATCH over HTTP, {} clients: {} appends/s, {}, {} errors (avg batch {:.1})",
            self.clients,
            thousands(self.requests_per_second().round() as u64),
            self.percentiles(),
            thousands(self.errors),
            self.server.average_batch(),
        )?;
        write!(
            f,
            "  server over the {} s window: {} events appended, {} commands in {} group commits",
            self.duration.as_secs(),
            thousands(self.server.appended),
            thousands(self.server.commands),
            thousands(self.server.commits),
        )?;
        let (server, writer, bench) = self.server.cpu_per(self.server.appended);
        write!(
            f,
            "\n  CPU per append: server {server:.1} µs (writer thread {writer:.1} µs), load generator {bench:.1} µs",
        )
    }

    fn journeys(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let journeys = self.by_kind[Call::EndService.index()].len() as u64;
        let events = self.server.log_growth;
        writeln!(
            f,
            "journeys over HTTP, {} clients: {} lifecycle calls/s, {} journeys/s, {} events/s, {}, {} errors (avg batch {:.1})",
            self.clients,
            thousands(self.requests_per_second().round() as u64),
            thousands(self.per_second(journeys).round() as u64),
            thousands(self.per_second(events).round() as u64),
            self.percentiles(),
            thousands(self.errors),
            self.server.average_batch(),
        )?;
        write!(
            f,
            "  server over the {} s window: log length +{} ({} events appended, {:.2} per call), {} commands in {} group commits",
            self.duration.as_secs(),
            thousands(events),
            thousands(self.server.appended),
            self.server.appended as f64 / self.latencies.len().max(1) as f64,
            thousands(self.server.commands),
            thousands(self.server.commits),
        )?;
        let (server, writer, bench) = self.server.cpu_per(self.latencies.len() as u64);
        write!(
            f,
            "\n  CPU per lifecycle call: server {server:.1} µs (writer thread {writer:.1} µs), load generator {bench:.1} µs",
        )?;
        write!(f, "\n  p50 / p99 by call:")?;
        for (call, latencies) in Call::ALL.iter().zip(&self.by_kind) {
            let separator = if call.index() == 0 { "" } else { "," };
            write!(
                f,
                "{separator} {} {:.1} / {:.1} ms",
                call.label(),
                quantile_ms(latencies, 0.50),
                quantile_ms(latencies, 0.99)
            )?;
        }
        Ok(())
    }

    /// `p50 1.9 ms, p90 4.0 ms, p99 9.9 ms, max 20.1 ms`
    fn percentiles(&self) -> String {
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.latency_ms(0.50),
            self.latency_ms(0.90),
            self.latency_ms(0.99),
            self.latency_ms(1.0),
        )
    }
}

/// Latency at quantile `q` (nearest rank) of sorted microseconds, in milliseconds; 0 when empty.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, last + 1);
    f64::from(sorted[rank - 1]) / 1000.0
}

/// `context PATCH over HTTP, 64 clients: 23,456 appends/s, p50 1.9 ms, … (avg batch 48.2)`
/// (or the journey workload's figures) and lines of the server's own counters.
impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.workload {
            Workload::Context => self.context(f)?,
            Workload::Journeys => self.journeys(f)?,
        }
        if let Some(error) = &self.first_error {
            write!(f, "\n  first error: {error}")?;
        }
        Ok(())
    }
}

/// Runs `workload` with `api_key` for account `bench` against the servers `nodes` (address and
/// process id; client `i` talks to node `i mod n`). The server figures are the nodes' sums.
pub async fn run(
    workload: Workload,
    nodes: &[(SocketAddr, u32)],
    api_key: &str,
    settings: &LoadSettings,
) -> Result<LoadReport, BoxError> {
    let from = Instant::now() + settings.warmup;
    let window = Window { from, until: from + settings.duration };
    let scraper = tokio::spawn(scrape_edges(nodes.to_vec(), window));
    let api_key: Arc<str> = api_key.into();
    let clients: Vec<_> = (0..settings.clients)
        .map(|client| {
            let (addr, _) = nodes[client as usize % nodes.len()];
            match workload {
                Workload::Context => tokio::spawn(drive(addr, api_key.clone(), client, window)),
                Workload::Journeys => tokio::spawn(journeys::drive(addr, api_key.clone(), client, window)),
            }
        })
        .collect();
    let mut total = Tally::new(workload.kinds());
    for client in clients {
        total.merge(client.await?);
    }
    let (before, after) = scraper.await??;
    for latencies in &mut total.by_kind {
        latencies.sort_unstable();
    }
    let mut latencies: Vec<u32> = total.by_kind.concat();
    latencies.sort_unstable();
    Ok(LoadReport {
        workload,
        clients: settings.clients,
        duration: settings.duration,
        latencies,
        by_kind: total.by_kind,
        errors: total.errors,
        first_error: total.first_error,
        server: ServerActivity::between(before, after),
    })
}

async fn scrape_edges(nodes: Vec<(SocketAddr, u32)>, window: Window) -> Result<(Scrape, Scrape), BoxError> {
    tokio::time::sleep_until(window.from.into()).await;
    let before = Scrape::take_all(&nodes).await?;
    tokio::time::sleep_until(window.until.into()).await;
    let after = Scrape::take_all(&nodes).await?;
    Ok((before, after))
}

/// One client's results.
pub struct Tally {
    /// Latencies in microseconds of the successful requests completed in the window, by kind.
    by_kind: Vec<Vec<u32>>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    pub fn new(kinds: usize) -> Self {
        Tally { by_kind: vec![Vec::new(); kinds], errors: 0, first_error: None }
    }

    /// A successful request of `kind` that finished at `finished`: counted if in the window.
    pub fn success(&mut self, kind: usize, window: &Window, started: Instant, finished: Instant) {
        if window.contains(finished) {
            let micros = u32::try_from((finished - started).as_micros()).unwrap_or(u32::MAX);
            self.by_kind[kind].push(micros);
        }
    }

    pub fn error(&mut self, description: String) {
        self.errors += 1;
        self.first_error.get_or_insert(description);
    }

    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            mine.extend(theirs);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Client `client`'s loop: PATCH, wait for the answer, PATCH again, until the window closes.
async fn drive(addr: SocketAddr, api_key: Arc<str>, client: u32, window: Window) -> Tally {
    let mut connection = Client::new(addr);
    let mut tally = Tally::new(Workload::Context.kinds());
    for step in 0u64.. {
        let started = Instant::now();
        if started >= window.until {
            break;
        }
        let path = format!("/v1/account/{ACCOUNT}/{NAMESPACE}/{}/properties", session_id(client, step));
        let body = serde_json::to_vec(&properties(step)).expect("properties serialize");
        let headers = [("maven-api-key", &*api_key)];
        let patch = request(Method::PATCH, addr, &path, &headers, body);
        match connection.send(patch).await {
            Ok((StatusCode::NO_CONTENT, _)) => tally.success(0, &window, started, Instant::now()),
            Ok((status, body)) => {
                tally.error(format!("PATCH {path}: status {status}: {}", String::from_utf8_lossy(&body)))
            }
            Err(error) => tally.error(format!("PATCH {path}: {error}")),
        }
    }
    tally
}
