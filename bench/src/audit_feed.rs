//! The audit workload's feed figures (`audit.rs`): one client of the account's Server-Sent
//! Events feed, parsed as little as possible (its `id:` lines counted, checked to increase),
//! catching up from seq 0 or following live while the context load generator writes; and the
//! feed's raw limit, `log::read_feed` in-process in the pages the server's follower reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use ctxd::store::db::Connection;
use ctxd::store::log::{FeedFilter, read_feed};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::audit::{Http, rate};
use crate::load::{self, LoadSettings, Workload};
use crate::report::{Throughput, thousands};
use crate::server::{Scrape, ServerActivity};
use crate::workload::ACCOUNT;

/// Events per `read_feed` page, as the server's live follower reads them.
const FEED_PAGE: usize = 256;
/// How long a feed client may take to reach the log's head.
const FEED_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the live follower's lag is sampled.
const LAG_SAMPLE: Duration = Duration::from_millis(100);

/// Seq of the account's last event (0 when it has none).
fn account_head(conn: &Connection) -> Result<u64, BoxError> {
    let seq: Option<u64> =
        conn.query_row("SELECT max(seq) FROM events WHERE account = ?1", [ACCOUNT], |row| row.get(0))?;
    Ok(seq.unwrap_or(0))
}

/// The account's whole feed read in-process as the follower reads it, in pages of `FEED_PAGE`.
pub fn read_feed_pages(conn: &Connection) -> Result<u64, BoxError> {
    let (mut after, mut events) = (0, 0);
    loop {
        let page = read_feed(conn, ACCOUNT, after, FEED_PAGE, usize::MAX, &FeedFilter::default())?;
        let Some(last) = page.events.last() else { return Ok(events) };
        after = last.seq;
        events += page.events.len() as u64;
    }
}

/// What one SSE client received while it caught up from seq 0.
pub struct CatchUp {
    pub events: u64,
    elapsed: Duration,
    expected: u64,
    out_of_order: u64,
    server: ServerActivity,
}

impl CatchUp {
    pub fn row(&self, raw: &Throughput, failures: &mut Vec<String>) -> [String; 3] {
        let http = Throughput { items: self.events, elapsed: self.elapsed };
        if self.events != self.expected || self.out_of_order > 0 || raw.items != self.expected {
            failures.push(format!(
                "feed catch-up: {} events over SSE, {} in-process, {} expected, {} ids out of order",
                self.events, raw.items, self.expected, self.out_of_order
            ));
        }
        let (server_cpu, _, client_cpu) = self.server.cpu_per(self.events);
        [
            format!("feed catch-up: one SSE client, seq 0 to the head, {} events", thousands(self.events)),
            format!("{http}; CPU per event: server {server_cpu:.1} µs, client {client_cpu:.1} µs"),
            format!(
                "`read_feed` in pages of {FEED_PAGE}: {} (server / raw {:.2})",
                rate(raw),
                http.per_second() / raw.per_second()
            ),
        ]
    }
}

/// One SSE client reads the whole account's feed from seq 0, timed until it has the last event.
pub async fn catch_up(http: &Http, server_pid: u32, reader: &Connection) -> Result<CatchUp, BoxError> {
    let (expected, head): (u64, u64) = reader.query_row(
        "SELECT count(*), coalesce(max(seq), 0) FROM events WHERE account = ?1",
        [ACCOUNT],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let before = Scrape::take(http.addr, server_pid).await?;
    let started = Instant::now();
    let mut client = FeedClient::start(http, 0);
    client.wait_for(head).await?;
    let elapsed = started.elapsed();
    let server = ServerActivity::between(before, Scrape::take(http.addr, server_pid).await?);
    let (events, _, out_of_order) = client.progress.read();
    Ok(CatchUp { events, elapsed, expected, out_of_order, server })
}

/// What one SSE client received while the loader wrote.
pub struct Live {
    /// What the loader measured.
    pub load: load::LoadReport,
    duration: Duration,
    /// Events received in the load's measured window.
    delivered: u64,
    /// Events the log grew by in the window, seq written minus seq received at its end, and
    /// that lag sampled through the window (sorted).
    written: u64,
    lag_at_end: u64,
    lags: Vec<u64>,
    caught_up_after: Duration,
    out_of_order: u64,
}

impl Live {
    pub fn row(&self, failures: &mut Vec<String>) -> [String; 3] {
        if self.out_of_order > 0 || self.load.errors > 0 {
            failures.push(format!(
                "feed live: {} ids out of order, {} failed PATCHes",
                self.out_of_order, self.load.errors
            ));
        }
        let per_second = |count: u64| thousands((count as f64 / self.duration.as_secs_f64()).round() as u64);
        let lag =
            |q: f64| self.lags.get(((q * self.lags.len() as f64) as usize).min(self.lags.len().max(1) - 1));
        [
            "feed live: one SSE client following the context load generator".to_string(),
            format!(
                "delivered {} events/s of {} written/s; lag at the window's end {} events (every {} ms: p50 {}, max {}); caught up {:.0} ms after the load stopped",
                per_second(self.delivered),
                per_second(self.written),
                thousands(self.lag_at_end),
                LAG_SAMPLE.as_millis(),
                thousands(lag(0.5).copied().unwrap_or(0)),
                thousands(self.lags.last().copied().unwrap_or(0)),
                self.caught_up_after.as_secs_f64() * 1000.0,
            ),
            "—".to_string(),
        ]
    }
}

/// One SSE client follows the feed from the head while `load::run` PATCHes for `settings`.
pub async fn follow_live(
    http: &Http,
    server_pid: u32,
    reader: &Connection,
    settings: &LoadSettings,
) -> Result<Live, BoxError> {
    let mut client = FeedClient::start(http, account_head(reader)?);
    let window_from = Instant::now() + settings.warmup;
    let window_until = window_from + settings.duration;
    let sampler = async {
        tokio::time::sleep_until(window_from.into()).await;
        let (received_before, _, _) = client.progress.read();
        let mut lags = Vec::new();
        loop {
            let (received, last_seq, _) = client.progress.read();
            let lag = account_head(reader)?.saturating_sub(last_seq);
            lags.push(lag);
            if Instant::now() >= window_until {
                lags.sort_unstable();
                return Ok::<_, BoxError>((received - received_before, lag, lags));
            }
            tokio::time::sleep(LAG_SAMPLE.min(window_until.saturating_duration_since(Instant::now()))).await;
        }
    };
    let node = [(http.addr, server_pid)];
    let (load, sampled) = tokio::join!(load::run(Workload::Context, &node, &http.api_key, settings), sampler);
    let (load, (delivered, lag_at_end, lags)) = (load?, sampled?);
    let stopped = Instant::now();
    client.wait_for(account_head(reader)?).await?;
    Ok(Live {
        duration: settings.duration,
        delivered,
        written: load.server.log_growth,
        lag_at_end,
        lags,
        caught_up_after: stopped.elapsed(),
        out_of_order: client.progress.read().2,
        load,
    })
}

/// What an SSE client has received so far, shared with the task that reads its stream.
#[derive(Default)]
struct Progress {
    events: AtomicU64,
    last_seq: AtomicU64,
    out_of_order: AtomicU64,
}

impl Progress {
    /// Events received, the last seq received, ids that did not increase.
    fn read(&self) -> (u64, u64, u64) {
        (self.events.load(Relaxed), self.last_seq.load(Relaxed), self.out_of_order.load(Relaxed))
    }
}

/// One SSE client of `GET …/events/stream`, reading in a task of its own; dropping it hangs up.
struct FeedClient {
    progress: Arc<Progress>,
    task: AbortOnDrop<Result<(), BoxError>>,
}

impl FeedClient {
    fn start(http: &Http, after: u64) -> FeedClient {
        let progress = Arc::new(Progress { last_seq: after.into(), ..Progress::default() });
        let task = AbortOnDrop(tokio::spawn(read_stream(http.clone(), after, progress.clone())));
        FeedClient { progress, task }
    }

    /// Waits until the client has received the event `seq`.
    async fn wait_for(&mut self, seq: u64) -> Result<(), BoxError> {
        let deadline = Instant::now() + FEED_TIMEOUT;
        while self.progress.read().1 < seq {
            if self.task.0.is_finished() {
                (&mut self.task.0).await??;
                return Err(format!("the feed ended before seq {seq}").into());
            }
            if Instant::now() > deadline {
                return Err(format!("the feed did not reach seq {seq} within {FEED_TIMEOUT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the feed after `after` and reads it until the server ends it, publishing progress.
async fn read_stream(http: Http, after: u64, progress: Arc<Progress>) -> Result<(), BoxError> {
    let stream = TcpStream::connect(http.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    // Driven by a task of its own, ended with this one: that closes the socket.
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let path = format!("/v1/account/{ACCOUNT}/events/stream?after={after}");
    let response = sender.send_request(http.get(&path)).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("GET {path}: {}", response.status()).into());
    }
    let mut body = response.into_body();
    let mut ids = SseIds { last: after, ..SseIds::default() };
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            ids.push(data);
            progress.events.store(ids.events, Relaxed);
            progress.out_of_order.store(ids.out_of_order, Relaxed);
            progress.last_seq.store(ids.last, Relaxed);
        }
    }
    Ok(())
}

/// The least parsing of an SSE stream: counts its `id:` lines and checks that they increase.
#[derive(Default)]
struct SseIds {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    events: u64,
    last: u64,
    out_of_order: u64,
}

impl SseIds {
    fn push(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|&byte| byte == b'\n') {
            if self.partial.is_empty() {
                self.line(&chunk[..end]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                self.line(&line);
                line.clear();
                self.partial = line;
            }
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
    }

    fn line(&mut self, line: &[u8]) {
        let Some(id) = line.strip_prefix(b"id:") else { return };
        let id = std::str::from_utf8(id).ok().and_then(|id| id.trim().parse::<u64>().ok()).unwrap_or(0);
        if id <= self.last {
            self.out_of_order += 1;
        }
        self.last = self.last.max(id);
        self.events += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_ids_are_counted_across_chunk_boundaries() {
        let stream =
            b"id: 1\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 2\ndata: {}\n\nid: 2\ndata: {}\n\nid: 10\n";
        for split in 0..stream.len() {
            let mut ids = SseIds::default();
            ids.push(&stream[..split]);
            ids.push(&stream[split..]);
            assert_eq!((ids.events, ids.last, ids.out_of_order), (4, 10, 1), "split at {split}");
        }
    }
}
