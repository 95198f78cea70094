//! A cluster started by `deploy/local-ha/up DIR` (several ctxd nodes on PostgreSQL under
//! Patroni), and the `cluster` workload: the context workload through one node, then through
//! both, in one run, with the CPU each side spent per write.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctxd::app::BoxError;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http_client::{Client, fetch, request};
use crate::load::{self, LoadSettings, Workload};
use crate::report::thousands;

/// What `DIR/cluster.env` says, and where the scripts that act on the cluster are.
#[derive(Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    /// The ctxd nodes, node 1 first.
    pub nodes: Vec<SocketAddr>,
    admin_token: String,
}

impl Cluster {
    pub fn open(dir: &Path) -> Result<Cluster, BoxError> {
        let env = dir.join("cluster.env");
        let text = std::fs::read_to_string(&env).map_err(|error| {
            format!("{}: {error} (start the cluster with deploy/local-ha/up)", env.display())
        })?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("{} has no {name}", env.display()))
        };
        let nodes = value("CTXD_URLS")?
            .split(',')
            .map(|url| {
                let address = url.trim().trim_start_matches("http://").trim_end_matches('/');
                address.parse().map_err(|error| format!("CTXD_URLS: {url}: {error}"))
            })
            .collect::<Result<Vec<SocketAddr>, String>>()?;
        if nodes.is_empty() {
            return Err(format!("{}: CTXD_URLS lists no node", env.display()).into());
        }
        Ok(Cluster { dir: dir.to_path_buf(), nodes, admin_token: value("CTXD_ADMIN_TOKEN")? })
    }

    /// The process id of node `index` (0-based), as `up` recorded it.
    pub fn node_pid(&self, index: usize) -> Result<u32, BoxError> {
        let file = self.dir.join("pids").join(format!("ctxd{}", index + 1));
        let text = std::fs::read_to_string(&file).map_err(|error| format!("{}: {error}", file.display()))?;
        Ok(text.trim().parse()?)
    }

    /// Creates `account` (if new) through node `node` and returns a new API key for it.
    pub async fn account_key(&self, node: usize, account: &str) -> Result<String, BoxError> {
        let addr = self.nodes[node];
        let bearer = format!("Bearer {}", self.admin_token);
        let headers = [("authorization", bearer.as_str())];
        let body = serde_json::to_vec(&json!({ "account_id": account }))?;
        let create = request(Method::POST, addr, "/admin/accounts", &headers, body);
        let answer = tokio::time::timeout(Duration::from_secs(60), Client::new(addr).send(create)).await;
        let (status, answer) = answer.map_err(|_| "POST /admin/accounts: no answer within 60 s")??;
        // 409: the account exists already (an earlier run on the same cluster).
        if !status.is_success() && status != StatusCode::CONFLICT {
            return Err(
                format!("POST /admin/accounts: {status}: {}", String::from_utf8_lossy(&answer)).into()
            );
        }
        let path = format!("/admin/accounts/{account}/api-key");
        let answer: Value =
            serde_json::from_slice(&fetch(Method::POST, addr, &path, &headers, vec![]).await?)?;
        answer["api_key"].as_str().map(str::to_string).ok_or_else(|| format!("no api_key in {answer}").into())
    }

    /// Runs `deploy/local-ha/<script> DIR <args>` and returns what it printed; fails with its
    /// error output when it fails.
    pub fn script(&self, script: &str, args: &[&str]) -> Result<String, BoxError> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-ha").join(script);
        let output = std::process::Command::new(&path).arg(&self.dir).args(args).output()?;
        if !output.status.success() {
            let error = String::from_utf8_lossy(&output.stderr);
            return Err(format!("{} failed: {}", path.display(), error.trim()).into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// The context workload through node 1 alone, then through every node (clients spread evenly),
/// on the cluster's shared database. Returns the failures to report.
pub fn throughput(cluster: &Cluster, settings: &LoadSettings) -> Result<Vec<String>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let api_key = cluster.account_key(0, crate::workload::ACCOUNT).await?;
        // What the cluster costs doing nothing: Patroni's loops, etcd's heartbeats, replication.
        let idle = Duration::from_secs(5);
        let before = crate::server::machine_cpu();
        tokio::time::sleep(idle).await;
        let idle_cpu = crate::server::machine_cpu().saturating_sub(before) as f64 / 1e6 / idle.as_secs_f64();
        println!("cluster, idle: the machine used {idle_cpu:.0} ms of CPU per second");
        let mut failures = Vec::new();
        for count in [1, cluster.nodes.len()] {
            let nodes = (0..count)
                .map(|index| Ok((cluster.nodes[index], cluster.node_pid(index)?)))
                .collect::<Result<Vec<_>, BoxError>>()?;
            // The members' CPU at the load's window edges (load::run measures the same window).
            let dir = cluster.dir.clone();
            let (warmup, duration) = (settings.warmup, settings.duration);
            let members = tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                let before = member_cpu(&dir);
                tokio::time::sleep(duration).await;
                (before, member_cpu(&dir))
            });
            let report = load::run(Workload::Context, &nodes, &api_key, settings).await?;
            let (before, after) = members.await?;
            let appended = report.server.appended;
            println!("cluster, {count} node(s): {report}");
            let per = |nanos: u64| nanos as f64 / 1000.0 / appended.max(1) as f64;
            let mut database = 0;
            let mut line = String::from("  CPU per append in PostgreSQL:");
            for (member, role, nanos) in &after {
                let Some((_, _, earlier)) = before.iter().find(|(name, _, _)| name == member) else {
                    continue;
                };
                let spent = nanos.saturating_sub(*earlier);
                database += spent;
                line.push_str(&format!(" {member} ({role}) {:.1} µs,", per(spent)));
            }
            let others = report.server.others_cpu_per(appended) - per(database);
            println!(
                "{line} the rest of the machine (Patroni, etcd, the kernel's other work) {others:.1} µs"
            );
            if report.errors > 0 {
                let first = report.first_error.as_deref().unwrap_or("");
                failures.push(format!(
                    "cluster, {count} node(s): {} failed requests; first: {first}",
                    thousands(report.errors)
                ));
            }
        }
        Ok(failures)
    })
}

/// CPU nanoseconds each PostgreSQL member of the cluster has used so far: its postmaster (with
/// the children it reaped) and its live children, from `/proc`; with its role (a member with a
/// `walreceiver` process is a standby).
fn member_cpu(dir: &Path) -> Vec<(String, &'static str, u64)> {
    let mut members = Vec::new();
    for member in 1..=3 {
        let name = format!("pg{member}");
        let pid_file = dir.join(&name).join("data/postmaster.pid");
        let Some(postmaster) =
            std::fs::read_to_string(pid_file).ok().and_then(|text| text.lines().next()?.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((_, own)) = stat(postmaster, true) else { continue };
        let mut total = own;
        let mut role = "primary";
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((parent, spent)) = stat(pid, false)
                && parent == postmaster
            {
                total += spent;
                let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if command.contains("walreceiver") {
                    role = "standby";
                }
            }
        }
        members.push((name, role, total));
    }
    members
}

/// A process's parent and the CPU nanoseconds it used (utime + stime, and its reaped children's
/// when `with_children`), from `/proc/<pid>/stat` (ticks of 10 ms).
fn stat(pid: u32, with_children: bool) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok()).unwrap_or(0);
    let parent = u32::try_from(number(1)).ok()?;
    let mut ticks = number(11) + number(12);
    if with_children {
        ticks += number(13) + number(14);
    }
    Some((parent, ticks * 10_000_000))
}
