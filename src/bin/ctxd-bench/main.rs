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
//! 3. **rebuild and verify speed**: a store filled with `--rebuild-events` events, then
//!    `projections::rebuild` and `projections::verify::verify` timed.
//!
//! Run it with `cargo build --release --bins && cargo run --release --bin ctxd-bench`
//! (`--help` lists the flags). Scratch stores go under `target/bench-data/` and are deleted at
//! the end unless `--keep-data` is given. It prints lines ready to paste into the docs.

mod http_client;
mod load;
mod raw;
mod rebuild;
mod report;
mod server;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ctxd::app::BoxError;

use load::{LoadReport, LoadSettings};
use server::Server;

#[derive(Parser, Debug)]
#[command(name = "ctxd-bench", about = "Measures ctxd's write throughput, latency and rebuild speed")]
struct Args {
    /// Concurrent HTTP clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Seconds measured, for the HTTP workload and for each raw SQLite baseline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: u64,
    /// Events in the store whose rebuild and verify are timed.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_events: u64,
    /// Rows per transaction of the raw SQLite baselines [default: the server's average batch].
    /// With --skip-http, the baselines run only when this is given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    raw_batch: Option<u64>,
    /// Skip the HTTP workload (and, without --raw-batch, the raw SQLite baselines).
    #[arg(long)]
    skip_http: bool,
    /// Skip the rebuild and verify timings.
    #[arg(long)]
    skip_rebuild: bool,
    /// Directory for the scratch stores [default: `bench-data` in the target directory].
    #[arg(long)]
    scratch_dir: Option<PathBuf>,
    /// Keep the scratch stores instead of deleting them at the end.
    #[arg(long)]
    keep_data: bool,
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
    let scratch = ScratchDir::create(&args)?;
    print_header(&args, &scratch.path);
    let duration = Duration::from_secs(args.duration_secs);
    let mut server_figures = None;
    if !args.skip_http {
        let report = http_workload(&args, &scratch.path.join("server"))?;
        println!("{report}");
        server_figures = Some((report.appends_per_second(), report.server.average_batch()));
    }
    let raw_batch = args.raw_batch.or(server_figures.map(|(_, batch)| batch.round().max(1.0) as u64));
    if let Some(batch) = raw_batch {
        let server_rate = server_figures.map(|(rate, _)| rate);
        for with_projections in [false, true] {
            let settings = raw::RawSettings { batch, duration, clients: args.clients, with_projections };
            let report = raw::measure(&scratch.path, &settings)?;
            println!("{}", report.line(server_rate));
        }
    }
    if !args.skip_rebuild {
        rebuild::run(&scratch.path.join("rebuild"), args.rebuild_events)?;
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
        "settings: {} clients, warmup {} s, duration {} s, rebuild events {}",
        args.clients,
        args.warmup_secs,
        args.duration_secs,
        report::thousands(args.rebuild_events)
    );
    println!("scratch: {}", scratch.display());
}

/// Starts the server on `data_dir`, runs the context workload against it, and stops it.
fn http_workload(args: &Args, data_dir: &Path) -> Result<LoadReport, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut server = Server::start(data_dir)?;
    let settings = LoadSettings {
        clients: args.clients,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    };
    let report = runtime.block_on(async {
        server.wait_ready().await?;
        let api_key = server.issue_api_key("bench").await?;
        load::run(server.addr, server.pid(), &api_key, &settings).await
    })?;
    let status = server.stop()?;
    if !status.success() {
        eprintln!("warning: ctxd exited with {status} after SIGTERM");
    }
    Ok(report)
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
