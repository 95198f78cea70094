//! `ctxd-bench`: the figures of `docs/PERFORMANCE.md`, measured on this machine and disk.
//!
//! It measures, in one run:
//! 1. **the context workload over real HTTP**: the real `ctxd` binary on a fresh data
//!    directory, N keep-alive clients PATCHing session properties (one durable append each);
//!    appends/s, latency percentiles, and the server's average group-commit batch;
//! 2. **the raw SQLite limit**: the same rows inserted straight into `events`, in transactions
//!    as large as the server's average batch, `synchronous=FULL`, on the same disk; then again
//!    with the projections applied. Their ratio to the server says what HTTP, the domain and the
//!    writer cost;
//! 3. **the journey workload over real HTTP** (`journeys.rs`): a fresh server, N clients each
//!    running whole journeys of 8 lifecycle calls of the Genesys-compatible API (service, state,
//!    task, transitions, end), chained by the ids the server returns; calls/s, journeys/s,
//!    events/s and latency percentiles; then its raw SQLite limit (`raw_journeys.rs`): the same
//!    calls' event rows plus a read and rewrite of the service's row, in batches of the
//!    server's average size;
//! 4. **journey analytics at scale** (`analytics.rs`): a store filled with
//!    `--analytics-services` realistic journeys through the live decide + append + apply path
//!    (`analytics_fill.rs`), then the real server on it answering the analytics queries
//!    (`dropoff`, `transitions`, `timeseries`, `abandoned`) one at a time; p50/p90/max per query,
//!    the fill rate and the store's size; with `--maintenance`, then the `ctxd` binary's
//!    `rebuild`, `verify`, `archive` of the whole log and `compact` on that store, each with its
//!    peak resident set, beside the raw read of the log in stream order (`maintenance.rs`);
//! 5. **audit reads** (`audit.rs`): as-of GETs of a session with `--audit-changes` changes, the
//!    account's event feed over SSE (catching up, then live under load) and the hash chain's
//!    verification, on a store filled with `--audit-events` events, each beside its raw limit;
//! 6. **rebuild, verify, export and import speed**: a store filled with `--rebuild-events`
//!    events, then `projections::rebuild`, `projections::verify::verify`, `ctxd export` to a
//!    file and `ctxd import` of it into an empty store timed, export and import each beside a
//!    raw SQLite limit (reading every row; `INSERT … SELECT` of every row).
//!
//! `--workload context|journeys|analytics|audit|all` picks the HTTP workloads (1–2, 3, 4, 5); any failed
//! request makes the run exit with an error after everything was printed.
//!
//! Run it with `cargo build --release --bins && cargo run --release --bin ctxd-bench`
//! (`--help` lists the flags). Scratch stores go under `target/bench-data/` and are deleted at
//! the end unless `--keep-data` is given. It prints lines ready to paste into the docs.

mod analytics;
mod analytics_fill;
mod audit;
mod audit_feed;
mod cluster;
mod failover;
mod http_client;
mod journeys;
mod load;
mod maintenance;
mod neighbours;
mod raw;
mod raw_journeys;
mod rebuild;
mod report;
mod server;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ctxd::app::BoxError;

use load::{LoadReport, LoadSettings, Workload};
use server::Server;

/// The HTTP workloads a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workloads {
    /// Context PATCHes, with their raw SQLite baselines.
    Context,
    /// Journeys of lifecycle calls, with their raw SQLite baselines.
    Journeys,
    /// Analytics queries over a store filled with `--analytics-services` journeys.
    Analytics,
    /// As-of reads, the event feed over SSE and the chain's verification, on a store filled
    /// with `--audit-events` events.
    Audit,
    /// A quiet account's round trips alone, during another account's flood past its limit, and
    /// during its delete of a namespace of `--neighbours-sessions` sessions.
    Neighbours,
    /// On a cluster started by `deploy/local-ha/up` (`--cluster`): the context workload
    /// through node 1 alone, then through every node, with the CPU each side spent per write.
    Cluster,
    /// On a cluster started by `deploy/local-ha/up` (`--cluster`): writes through both nodes
    /// while the PostgreSQL primary, then the sweeper's ctxd node, are killed; checks that no acknowledged
    /// write was lost or applied twice, positions and chains, an SSE follower, the sweeper.
    Failover,
    /// Context, then journeys, then analytics (unless `--analytics-services 0`), then audit
    /// (unless `--audit-events 0`), each against a fresh server and data directory.
    All,
}

impl Workloads {
    /// The load workloads selected.
    fn selected(self) -> &'static [Workload] {
        match self {
            Workloads::Context => &[Workload::Context],
            Workloads::Journeys => &[Workload::Journeys],
            Workloads::Analytics
            | Workloads::Audit
            | Workloads::Neighbours
            | Workloads::Cluster
            | Workloads::Failover => &[],
            Workloads::All => &[Workload::Context, Workload::Journeys],
        }
    }

    fn includes_analytics(self) -> bool {
        matches!(self, Workloads::Analytics | Workloads::All)
    }

    fn includes_audit(self) -> bool {
        matches!(self, Workloads::Audit | Workloads::All)
    }
}

#[derive(Parser, Debug)]
#[command(name = "ctxd-bench", about = "Measures ctxd's write throughput, latency and rebuild speed")]
struct Args {
    /// Which HTTP workloads (and their raw SQLite baselines) to run.
    #[arg(long, value_enum, default_value_t = Workloads::All)]
    workload: Workloads,
    /// Concurrent HTTP clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Seconds measured, for each HTTP workload and for each raw SQLite baseline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: u64,
    /// Events in the store whose rebuild and verify are timed.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_events: u64,
    /// Services (journeys, about 7.5 events each) in the store the analytics queries are timed
    /// on; 0 skips the analytics workload.
    #[arg(long, default_value_t = 1_000_000)]
    analytics_services: u64,
    /// After the analytics workload, on its store: `ctxd compact`, `rebuild` and `verify`, each
    /// timed with its peak resident set (minutes at 1,000,000 services).
    #[arg(long)]
    maintenance: bool,
    /// With `--maintenance`, then `ctxd archive` of the whole log, `compact`, and rebuild and
    /// verify from the snapshot.
    #[arg(long)]
    maintenance_archive: bool,
    /// With `--maintenance`: another `ctxd` binary (an earlier build) whose `rebuild` and
    /// `verify` run on the same store, alternated with this build's, two pairs each.
    #[arg(long)]
    maintenance_baseline: Option<PathBuf>,
    /// Events (journeys) in the store the audit workload's feed and chain figures are measured
    /// on; 0 skips the audit workload. The live feed runs under `--clients`, `--warmup-secs`
    /// and `--duration-secs`.
    #[arg(long, default_value_t = 1_000_000)]
    audit_events: u64,
    /// Events of other accounts written into the audit workload's store beside its account's,
    /// so that its account's chain is verified inside a larger store (per-account logs).
    #[arg(long, default_value_t = 0)]
    audit_other_events: u64,
    /// Sessions of the namespace the neighbours workload deletes.
    #[arg(long, default_value_t = 300_000)]
    neighbours_sessions: u64,
    /// Properties of the session the neighbours workload writes to one at a time.
    #[arg(long, default_value_t = 50_000)]
    neighbours_properties: u64,
    /// `writes_per_second` of the flooding account in the neighbours workload; 0: no limit.
    #[arg(long, default_value_t = 1000)]
    neighbours_limit: u32,
    /// Changes (PATCHes) of the one session the audit workload's as-of reads read.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    audit_changes: u64,
    /// Commands per transaction of the raw SQLite baselines (rows for context, lifecycle calls
    /// for journeys) [default: the server's average batch in the same workload].
    /// With --skip-http, the baselines run only when this is given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    raw_batch: Option<u64>,
    /// Skip the HTTP workloads, analytics included (and, without --raw-batch, the raw SQLite
    /// baselines).
    #[arg(long)]
    skip_http: bool,
    /// Skip the rebuild, verify, export and import timings.
    #[arg(long)]
    skip_rebuild: bool,
    /// Directory for the scratch stores [default: `bench-data` in the target directory].
    #[arg(long)]
    scratch_dir: Option<PathBuf>,
    /// Keep the scratch stores instead of deleting them at the end.
    #[arg(long)]
    keep_data: bool,
    /// Run the context and journeys workloads and their raw baselines on this PostgreSQL server
    /// (a URL whose database may create others: each run gets a fresh database, dropped after).
    #[arg(long, env = "CTXD_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// The directory of a cluster started by `deploy/local-ha/up DIR`, for `--workload cluster`
    /// and `--workload failover` (which kills parts of it).
    #[arg(long)]
    cluster: Option<PathBuf>,
}

/// A database of its own on `--database-url`'s server for one measurement, dropped when done
/// unless `--keep-data` was given.
struct ScratchDatabase {
    server: String,
    name: String,
    keep: bool,
}

impl ScratchDatabase {
    fn create(args: &Args, what: &str) -> Result<Option<ScratchDatabase>, BoxError> {
        let Some(server) = &args.database_url else { return Ok(None) };
        let name = format!("ctxd_bench_{what}_{}", std::process::id());
        let admin = ctxd::store::db::Connection::Postgres(ctxd::store::db::PgConnection::connect(server)?);
        admin.execute_batch(&format!("DROP DATABASE IF EXISTS {name}"))?;
        admin.execute_batch(&format!("CREATE DATABASE {name}"))?;
        Ok(Some(ScratchDatabase { server: server.clone(), name, keep: args.keep_data }))
    }

    fn url(&self) -> String {
        let (base, _) = self.server.rsplit_once('/').unwrap_or((&self.server, ""));
        format!("{base}/{}", self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let dropped = ctxd::store::db::PgConnection::connect(&self.server).and_then(|admin| {
            ctxd::store::db::Connection::Postgres(admin)
                .execute_batch(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(error) = dropped {
            eprintln!("warning: the scratch database {} was not dropped: {error}", self.name);
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ctxd-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    if matches!(args.workload, Workloads::Cluster | Workloads::Failover) {
        return on_cluster(&args);
    }
    let scratch = ScratchDir::create(&args)?;
    print_header(&args, &scratch.path);
    let mut failures = Vec::new();
    for &workload in args.workload.selected() {
        let mut server_figures = None;
        if !args.skip_http {
            let data_dir = scratch.path.join(format!("server-{}", workload.name()));
            let report = http_workload(&args, workload, &data_dir)?;
            println!("{report}");
            if report.errors > 0 {
                let first = report.first_error.as_deref().unwrap_or("");
                failures.push(format!(
                    "{}: {} failed requests; first: {first}",
                    workload.name(),
                    report::thousands(report.errors)
                ));
            }
            server_figures = Some((report.requests_per_second(), report.server.average_batch()));
        }
        let raw_batch = args.raw_batch.or(server_figures.map(|(_, batch)| batch.round().max(1.0) as u64));
        if let Some(batch) = raw_batch {
            raw_baselines(&args, workload, &scratch.path, batch, server_figures.map(|(rate, _)| rate))?;
        }
    }
    if args.workload.includes_analytics() && args.analytics_services > 0 && !args.skip_http {
        failures.extend(analytics::run(&scratch.path.join("analytics"), args.analytics_services)?);
        if args.maintenance {
            let dir = scratch.path.join("analytics");
            maintenance::run(&dir, args.maintenance_baseline.as_deref(), args.maintenance_archive)?;
        }
    }
    if args.workload.includes_audit() && args.audit_events > 0 && !args.skip_http {
        let sizes = audit::Sizes {
            events: args.audit_events,
            other_events: args.audit_other_events,
            changes: args.audit_changes,
        };
        failures.extend(audit::run(&scratch.path.join("audit"), &sizes, &load_settings(&args))?);
    }
    if args.workload == Workloads::Neighbours && !args.skip_http {
        let settings = neighbours::Settings {
            clients: args.clients,
            duration: Duration::from_secs(args.duration_secs),
            noisy_limit: args.neighbours_limit,
            sessions: args.neighbours_sessions,
            properties: args.neighbours_properties,
        };
        failures.extend(neighbours::run(&scratch.path.join("neighbours"), &settings)?);
    }
    if !args.skip_rebuild {
        rebuild::run(&scratch.path.join("rebuild"), args.rebuild_events)?;
    }
    if !failures.is_empty() {
        return Err(format!("requests failed:\n  {}", failures.join("\n  ")).into());
    }
    Ok(())
}

/// The workloads that run on a cluster of `deploy/local-ha` rather than on servers of their own.
fn on_cluster(args: &Args) -> Result<(), BoxError> {
    let dir = args.cluster.as_deref().ok_or("--workload cluster and failover need --cluster DIR")?;
    let cluster = cluster::Cluster::open(dir)?;
    print_header(args, dir);
    if args.workload == Workloads::Failover {
        return failover::run(&cluster, args.clients);
    }
    let failures = cluster::throughput(&cluster, &load_settings(args))?;
    if !failures.is_empty() {
        return Err(format!("requests failed:\n  {}", failures.join("\n  ")).into());
    }
    Ok(())
}

/// Runs `workload`'s raw SQLite baselines in transactions of `batch` commands and prints them,
/// as fractions of the server's rate when it was measured.
fn raw_baselines(
    args: &Args,
    workload: Workload,
    dir: &Path,
    batch: u64,
    server_rate: Option<f64>,
) -> Result<(), BoxError> {
    let (duration, clients) = (Duration::from_secs(args.duration_secs), args.clients);
    match workload {
        Workload::Context => {
            for with_projections in [false, true] {
                let settings = raw::RawSettings { batch, duration, clients, with_projections };
                let database = ScratchDatabase::create(args, "raw")?;
                let url = database.as_ref().map(ScratchDatabase::url);
                println!("{}", raw::measure(dir, url.as_deref(), &settings)?.line(server_rate));
            }
        }
        Workload::Journeys => {
            for projection_code in [false, true] {
                let settings = raw_journeys::RawJourneySettings { batch, duration, clients, projection_code };
                let database = ScratchDatabase::create(args, "raw_journeys")?;
                let url = database.as_ref().map(ScratchDatabase::url);
                println!("{}", raw_journeys::measure(dir, url.as_deref(), &settings)?.line(server_rate));
            }
        }
    }
    Ok(())
}

fn print_header(args: &Args, scratch: &Path) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let command: Vec<String> = std::env::args().collect();
    println!(
        "machine: {cpus} CPUs (available_parallelism), {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("command: {}", command.join(" "));
    println!(
        "settings: workload {}, {} clients, warmup {} s, duration {} s, rebuild events {}, analytics services {}, audit events {} and changes {}",
        args.workload.to_possible_value().map_or_else(String::new, |value| value.get_name().to_string()),
        args.clients,
        args.warmup_secs,
        args.duration_secs,
        report::thousands(args.rebuild_events),
        report::thousands(args.analytics_services),
        report::thousands(args.audit_events),
        report::thousands(args.audit_changes)
    );
    println!("scratch: {}", scratch.display());
}

/// Starts the server on `data_dir`, runs `workload` against it, and stops it.
fn http_workload(args: &Args, workload: Workload, data_dir: &Path) -> Result<LoadReport, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let database = ScratchDatabase::create(args, workload.name())?;
    let mut server = Server::start_on(data_dir, database.as_ref().map(ScratchDatabase::url).as_deref())?;
    let settings = load_settings(args);
    let report = runtime.block_on(async {
        server.wait_ready().await?;
        let api_key = server.issue_api_key("bench").await?;
        load::run(workload, &[(server.addr, server.pid())], &api_key, &settings).await
    })?;
    let status = server.stop()?;
    if !status.success() {
        eprintln!("warning: ctxd exited with {status} after SIGTERM");
    }
    Ok(report)
}

/// The load of the HTTP workloads, as the flags set it.
fn load_settings(args: &Args) -> LoadSettings {
    LoadSettings {
        clients: args.clients,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    }
}

/// The run's scratch directory, deleted when the run ends unless `--keep-data` was given.
struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    fn create(args: &Args) -> Result<ScratchDir, BoxError> {
        let root = match &args.scratch_dir {
            Some(root) => root.clone(),
            None => default_scratch_root()?,
        };
        let name = format!("run-{}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), std::process::id());
        let path = root.join(name);
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir { path, keep: args.keep_data })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `<target>/bench-data`, next to the build outputs (the bench runs from `<target>/release`),
/// so that the stores are on the project's disk.
fn default_scratch_root() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory; pass --scratch-dir")?;
    Ok(target.join("bench-data"))
}
