//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit batch size histogram (commands per transaction).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Upper bounds of the commit latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A cumulative histogram with fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        if let Some(index) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A label value as the Prometheus text format writes it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Every metric ctxd exports.
pub struct Metrics {
    /// Requests by (route template, method, status).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Writes refused with 429 by account (accounts are created by the admin only: a bounded set).
    limited: Mutex<BTreeMap<String, u64>>,
    appends: AtomicU64,
    log_length: AtomicU64,
    batch_size: Histogram,
    commit_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            limited: Mutex::new(BTreeMap::new()),
            appends: AtomicU64::new(0),
            log_length: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_BUCKETS),
            commit_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        let mut requests = self.requests.lock().expect("metrics lock");
        *requests.entry((route.to_string(), method.to_string(), status)).or_insert(0) += 1;
    }

    /// A write of `account` refused because the account is past its rate.
    pub fn record_limited(&self, account: &str) {
        *self.limited.lock().expect("metrics lock").entry(account.to_string()).or_insert(0) += 1;
    }

    /// Called by the writer after each group commit.
    pub fn record_commit(&self, commands: usize, appended: u64, latency: Duration, last_seq: u64) {
        self.batch_size.observe(commands as f64);
        self.commit_latency.observe(latency.as_secs_f64());
        self.appends.fetch_add(appended, Ordering::Relaxed);
        self.set_log_length(last_seq);
    }

    pub fn set_log_length(&self, last_seq: u64) {
        self.log_length.store(last_seq, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP ctxd_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE ctxd_http_requests_total counter\n");
        for ((route, method, status), count) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "ctxd_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                label(route)
            );
        }
        out.push_str("# HELP ctxd_writes_limited_total Writes refused with 429 because the account was past its writes_per_second.\n");
        out.push_str("# TYPE ctxd_writes_limited_total counter\n");
        for (account, count) in self.limited.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "ctxd_writes_limited_total{{account=\"{}\"}} {count}", label(account));
        }
        let _ = writeln!(
            out,
            "# HELP ctxd_events_appended_total Events appended to the log by this process.\n# TYPE ctxd_events_appended_total counter\nctxd_events_appended_total {}",
            self.appends.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ctxd_log_length Events in the log, all accounts.\n# TYPE ctxd_log_length gauge\nctxd_log_length {}",
            self.log_length.load(Ordering::Relaxed)
        );
        self.batch_size.render(&mut out, "ctxd_commit_batch_size", "Commands per group commit.");
        self.commit_latency.render(
            &mut out,
            "ctxd_commit_seconds",
            "Duration of one group commit, fsync included.",
        );
        out
    }
}
