//! The real `ctxd` binary as a child process: started on a fresh data directory and a free
//! port, set up over the admin API, observed through `/metrics`, stopped with SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use hyper::Method;
use serde_json::{Value, json};

use crate::http_client::fetch;

/// How long the server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ctxd serve`. Dropping it stops the server, so that a failed run leaves none behind.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    admin_token: String,
}

impl Server {
    /// Starts the `ctxd` binary that sits next to this one, storing in `data_dir`.
    pub fn start(data_dir: &Path) -> Result<Server, BoxError> {
        Server::start_on(data_dir, None)
    }

    /// Starts the server on `data_dir`, its store in the PostgreSQL database `database_url` if given.
    pub fn start_on(data_dir: &Path, database_url: Option<&str>) -> Result<Server, BoxError> {
        // The benchmark crate does not build the server: `cargo build --release --workspace`
        // builds both (docs/PERFORMANCE.md).
        let binary = std::env::current_exe()?.with_file_name("ctxd");
        if !binary.exists() {
            let hint = "build both with `cargo build --release --workspace`";
            return Err(format!("{} not found: {hint}", binary.display()).into());
        }
        let addr = free_local_addr()?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let mut command = Command::new(&binary);
        if let Some(url) = database_url {
            command.env("CTXD_DATABASE_URL", url);
        }
        let child = command
            .env("CTXD_DATA_DIR", data_dir)
            .env("CTXD_ADDR", addr.to_string())
            .env("CTXD_ADMIN_TOKEN", &admin_token)
            // The quick check reads the whole store before serving: a minute per 5 GB, past
            // `READY_TIMEOUT` on the analytics workload's larger stores. The stores are the
            // benchmark's own, just written.
            .env("CTXD_INTEGRITY_CHECK", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Server { child, addr, admin_token })
    }

    /// Waits until `GET /readyz` answers 200, or fails if the server exits or takes too long.
    pub async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("ctxd exited with {status} before it was ready").into());
            }
            if fetch(Method::GET, self.addr, "/readyz", &[], vec![]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("ctxd was not ready within {READY_TIMEOUT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates `account` through the admin API and returns a new API key for it.
    pub async fn issue_api_key(&self, account: &str) -> Result<String, BoxError> {
        let bearer = format!("Bearer {}", self.admin_token);
        let headers = [("authorization", bearer.as_str())];
        let body = serde_json::to_vec(&json!({ "account_id": account }))?;
        fetch(Method::POST, self.addr, "/admin/accounts", &headers, body).await?;
        let path = format!("/admin/accounts/{account}/api-key");
        let answer = fetch(Method::POST, self.addr, &path, &headers, vec![]).await?;
        let answer: Value = serde_json::from_slice(&answer)?;
        answer["api_key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no api_key in the answer of POST {path}: {answer}").into())
    }

    /// An admin API call; fails unless it answers 2xx.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::body::Bytes, BoxError> {
        let bearer = format!("Bearer {}", self.admin_token);
        fetch(method, self.addr, path, &[("authorization", bearer.as_str())], body).await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the server to drain and exit.
    pub fn stop(mut self) -> std::io::Result<ExitStatus> {
        self.terminate()
    }

    /// Stops the server; an unclean exit is reported, not fatal.
    pub fn stop_warning(self) -> Result<(), BoxError> {
        let status = self.stop()?;
        if !status.success() {
            eprintln!("warning: ctxd exited with {status} after SIGTERM");
        }
        Ok(())
    }

    /// Serves `data_dir` just long enough to create `account` and issue its API key, and stops:
    /// the stores that are then filled in-process need the account and the key.
    pub fn account_key(
        runtime: &tokio::runtime::Runtime,
        data_dir: &Path,
        account: &str,
    ) -> Result<String, BoxError> {
        let mut server = Server::start(data_dir)?;
        let key = runtime.block_on(async {
            server.wait_ready().await?;
            server.issue_api_key(account).await
        })?;
        server.stop_warning()?;
        Ok(key)
    }

    fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        self.child.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A local address no one listens on: bind port 0, note the port, let it go.
fn free_local_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The write-path counters of `/metrics` and the CPU time used so far, at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrape {
    commits: f64,
    commands: f64,
    appended: f64,
    /// Events in the log (its highest seq).
    log_length: f64,
    cpu: CpuTime,
}

/// CPU time in nanoseconds, from `/proc/<pid>/task/*/schedstat` (Linux; zero elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Every thread of the server.
    server: u64,
    /// The server's writer thread alone.
    writer: u64,
    /// Every thread of this benchmark process (the load generator).
    bench: u64,
    /// Every process of the machine (`/proc/stat`, all CPUs, idle and I/O wait excluded).
    machine: u64,
}

/// The CPU the whole machine has spent so far, in nanoseconds: the busy fields of `/proc/stat`'s
/// first line (user, nice, system, irq, softirq, steal), counted in USER_HZ (100 per second).
pub fn machine_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return 0 };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    busy * 10_000_000
}

/// Total CPU nanoseconds of a process's threads, and of its thread named `ctxd-writer`.
fn process_cpu(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let (mut total, mut writer) = (0, 0);
    for task in tasks.flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let nanos: u64 =
            read("schedstat").split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        total += nanos;
        if read("comm").trim() == "ctxd-writer" {
            writer += nanos;
        }
    }
    (total, writer)
}

impl Scrape {
    pub async fn take(addr: SocketAddr, server_pid: u32) -> Result<Scrape, BoxError> {
        Scrape::take_all(&[(addr, server_pid)]).await
    }

    /// The sums of several nodes' counters and CPU (address and process id of each); the log's
    /// length is the longest any node reports (they share one log).
    pub async fn take_all(nodes: &[(SocketAddr, u32)]) -> Result<Scrape, BoxError> {
        let mut sum = Scrape::default();
        for &(addr, pid) in nodes {
            let text = fetch(Method::GET, addr, "/metrics", &[], vec![]).await?;
            let scrape = Scrape::parse(&String::from_utf8_lossy(&text))?;
            let (server, writer) = process_cpu(pid);
            sum.commits += scrape.commits;
            sum.commands += scrape.commands;
            sum.appended += scrape.appended;
            sum.log_length = sum.log_length.max(scrape.log_length);
            sum.cpu.server += server;
            sum.cpu.writer += writer;
        }
        sum.cpu.bench = process_cpu(std::process::id()).0;
        sum.cpu.machine = machine_cpu();
        Ok(sum)
    }

    fn parse(text: &str) -> Result<Scrape, BoxError> {
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("/metrics has no {name}"))
        };
        Ok(Scrape {
            commits: value("ctxd_commit_batch_size_count")?,
            commands: value("ctxd_commit_batch_size_sum")?,
            appended: value("ctxd_events_appended_total")?,
            log_length: value("ctxd_log_length")?,
            cpu: CpuTime::default(),
        })
    }
}

/// What the server did between two scrapes.
#[derive(Debug, Clone, Copy)]
pub struct ServerActivity {
    pub commits: u64,
    pub commands: u64,
    pub appended: u64,
    /// How many events the log grew by.
    pub log_growth: u64,
    /// CPU nanoseconds used in the window: server, its writer thread, the load generator.
    pub cpu: (u64, u64, u64),
    /// CPU nanoseconds the whole machine used in the window.
    pub machine_cpu: u64,
}

impl ServerActivity {
    pub fn between(before: Scrape, after: Scrape) -> ServerActivity {
        let delta = |a: f64, b: f64| (b - a).max(0.0).round() as u64;
        ServerActivity {
            commits: delta(before.commits, after.commits),
            commands: delta(before.commands, after.commands),
            appended: delta(before.appended, after.appended),
            log_growth: delta(before.log_length, after.log_length),
            cpu: (
                after.cpu.server.saturating_sub(before.cpu.server),
                after.cpu.writer.saturating_sub(before.cpu.writer),
                after.cpu.bench.saturating_sub(before.cpu.bench),
            ),
            machine_cpu: after.cpu.machine.saturating_sub(before.cpu.machine),
        }
    }

    /// CPU microseconds per one of `count` things done in the window by every process but the
    /// servers and the load generator (on a cluster: PostgreSQL, Patroni and etcd).
    pub fn others_cpu_per(&self, count: u64) -> f64 {
        let others = self.machine_cpu.saturating_sub(self.cpu.0 + self.cpu.2);
        others as f64 / 1000.0 / count.max(1) as f64
    }

    /// CPU microseconds per one of `count` things done in the window (appended events,
    /// lifecycle calls): server, writer thread, load generator.
    pub fn cpu_per(&self, count: u64) -> (f64, f64, f64) {
        let per = |nanos: u64| nanos as f64 / 1000.0 / count.max(1) as f64;
        (per(self.cpu.0), per(self.cpu.1), per(self.cpu.2))
    }

    /// Commands per group commit.
    pub fn average_batch(&self) -> f64 {
        self.commands as f64 / self.commits.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Scrape;

    #[test]
    fn the_write_counters_are_read_from_the_exposition() {
        let text = "ctxd_events_appended_total 120\nctxd_log_length 130\n\
                    ctxd_commit_batch_size_bucket{le=\"1\"} 3\n\
                    ctxd_commit_batch_size_sum 100\nctxd_commit_batch_size_count 4\n";
        let scrape = Scrape::parse(text).unwrap();
        let counters = (scrape.commits, scrape.commands, scrape.appended, scrape.log_length);
        assert_eq!(counters, (4.0, 100.0, 120.0, 130.0));
    }
}
