//! The context workload over HTTP: N clients, each on its own keep-alive connection, PATCHing
//! the properties of its sessions back to back. Requests that complete inside the measured
//! window are counted; `/metrics` is scraped at the window's edges.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use hyper::{Method, StatusCode};

use crate::http_client::{Client, request};
use crate::report::thousands;
use crate::server::{Scrape, ServerActivity};
use crate::workload::{ACCOUNT, NAMESPACE, properties, session_id};

/// How hard and how long to load the server.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub clients: u32,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The measured window: after the warm-up, for the duration.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, instant: Instant) -> bool {
        self.from <= instant && instant < self.until
    }
}

/// What the workload measured.
pub struct LoadReport {
    clients: u32,
    duration: Duration,
    /// Latencies of the 204s completed in the window, in microseconds, sorted.
    latencies: Vec<u32>,
    /// Anything but a 204 in the window, transport errors included.
    errors: u64,
    first_error: Option<String>,
    /// The server's own account of the window.
    pub server: ServerActivity,
}

impl LoadReport {
    /// Successful PATCHes per second: each one is one durable append.
    pub fn appends_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.duration.as_secs_f64()
    }

    /// Latency at quantile `q` (nearest rank), in milliseconds.
    fn latency_ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return 0.0;
        };
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, last + 1);
        f64::from(self.latencies[rank - 1]) / 1000.0
    }
}

/// `context PATCH over HTTP, 64 clients: 23,456 appends/s, p50 1.9 ms, … (avg batch 48.2)`
/// and a line of the server's own counters.
impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "context PATCH over HTTP, {} clients: {} appends/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors (avg batch {:.1})",
            self.clients,
            thousands(self.appends_per_second().round() as u64),
            self.latency_ms(0.50),
            self.latency_ms(0.99),
            self.latency_ms(1.0),
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
        let (server, writer, bench) = self.server.cpu_per_append();
        write!(
            f,
            "\n  CPU per append: server {server:.1} µs (writer thread {writer:.1} µs), load generator {bench:.1} µs",
        )?;
        if let Some(error) = &self.first_error {
            write!(f, "\n  first error: {error}")?;
        }
        Ok(())
    }
}

/// Runs the workload against the server at `addr` with `api_key` for account `bench`.
pub async fn run(
    addr: SocketAddr,
    server_pid: u32,
    api_key: &str,
    settings: &LoadSettings,
) -> Result<LoadReport, BoxError> {
    let from = Instant::now() + settings.warmup;
    let window = Window { from, until: from + settings.duration };
    let scraper = tokio::spawn(scrape_edges(addr, server_pid, window));
    let api_key: Arc<str> = api_key.into();
    let clients: Vec<_> = (0..settings.clients)
        .map(|client| tokio::spawn(drive(addr, api_key.clone(), client, window)))
        .collect();
    let mut total = Tally::default();
    for client in clients {
        total.merge(client.await?);
    }
    let (before, after) = scraper.await??;
    total.latencies.sort_unstable();
    Ok(LoadReport {
        clients: settings.clients,
        duration: settings.duration,
        latencies: total.latencies,
        errors: total.errors,
        first_error: total.first_error,
        server: ServerActivity::between(before, after),
    })
}

async fn scrape_edges(
    addr: SocketAddr,
    server_pid: u32,
    window: Window,
) -> Result<(Scrape, Scrape), BoxError> {
    tokio::time::sleep_until(window.from.into()).await;
    let before = Scrape::take(addr, server_pid).await?;
    tokio::time::sleep_until(window.until.into()).await;
    let after = Scrape::take(addr, server_pid).await?;
    Ok((before, after))
}

/// One client's results.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<StatusCode, BoxError>, latency: Duration) {
        match outcome {
            Ok(StatusCode::NO_CONTENT) => {
                self.latencies.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX))
            }
            Ok(status) => self.error(format!("status {status}")),
            Err(error) => self.error(error.to_string()),
        }
    }

    fn error(&mut self, description: String) {
        self.errors += 1;
        self.first_error.get_or_insert(description);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Client `client`'s loop: PATCH, wait for the answer, PATCH again, until the window closes.
async fn drive(addr: SocketAddr, api_key: Arc<str>, client: u32, window: Window) -> Tally {
    let mut connection = Client::new(addr);
    let mut tally = Tally::default();
    for step in 0u64.. {
        let started = Instant::now();
        if started >= window.until {
            break;
        }
        let path = format!("/v1/account/{ACCOUNT}/{NAMESPACE}/{}/properties", session_id(client, step));
        let body = serde_json::to_vec(&properties(step)).expect("properties serialize");
        let headers = [("maven-api-key", &*api_key)];
        let patch = request(Method::PATCH, addr, &path, &headers, body);
        let outcome = connection.send(patch).await.map(|(status, _)| status);
        let finished = Instant::now();
        if window.contains(finished) {
            tally.record(outcome, finished - started);
        }
    }
    tally
}
