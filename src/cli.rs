//! The command line: `ctxd [serve]`, `ctxd admin …`, `ctxd rebuild`, `ctxd verify [--chain]`,
//! `ctxd export`, `ctxd import`.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::app::{Application, BoxError, ServeConfig, shutdown_signal};
use crate::auth::generate_api_key;
use crate::clock::SystemClock;
use crate::domain::Command;
use crate::domain::DomainError;
use crate::domain::accounts::AccountCommand;
use crate::http::serve::ConnectionLimits;
use crate::metrics::Metrics;
use crate::projections;
use crate::signing::KeySource;
use crate::store::transfer::{self, Selection, TransferError};
use crate::store::{self, EventMeta, Store, StoreError, WriteError, WriteRequest, WriterConfig, chain};

#[derive(Parser, Debug)]
#[command(name = "ctxd", version, about = "Event-sourced conversation context and journey engine")]
pub struct Cli {
    /// Directory of the store (the SQLite file, its lock and the admin token).
    #[arg(long, env = "CTXD_DATA_DIR", default_value = "./ctxd-data", global = true)]
    pub data_dir: PathBuf,
    /// Keep the store in this PostgreSQL database (`postgres://user:password@host:port/db`)
    /// instead of SQLite in the data directory; several nodes may share it. Every command
    /// takes it.
    #[arg(long, env = "CTXD_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Option<Commands>,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Run the HTTP server (the default).
    Serve(ServeArgs),
    /// Manage accounts and keys on a store that no server is running on.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Drop the projections and replay the whole log into them.
    Rebuild,
    /// Return to the file system the space that deletes, expiries and erasures freed, while no
    /// server runs on the data dir (SQLite: `VACUUM`; PostgreSQL: `VACUUM FULL`, which locks
    /// each table while it is rewritten).
    Compact,
    /// Rebuild the projections into a scratch database and compare them with the live ones.
    Verify {
        /// Also walk every account's hash chain and report the first event that does not verify.
        #[arg(long)]
        chain: bool,
        /// Check these archive segments instead: each one's chain, that each connects to the
        /// next of its account, and that the last connects to the live log's archive record.
        #[arg(long, num_args = 1.., value_name = "SEGMENT")]
        archive: Vec<PathBuf>,
    },
    /// Move an account's events recorded before a time into a segment file, keeping its current
    /// state as a snapshot (docs/AUDIT.md, "Archives"), while no server runs on the data dir
    /// (a server does it with `POST /admin/accounts/{id}/archive`).
    Archive {
        #[arg(long)]
        account: String,
        /// RFC 3339: events recorded before it are archived.
        #[arg(long)]
        before: String,
        /// Where segments go (default: `<data dir>/archive`).
        #[arg(long, env = "CTXD_ARCHIVE_DIR")]
        archive_dir: Option<PathBuf>,
    },
    /// Write the log to stdout as NDJSON, one event per line with every stored column, from one
    /// snapshot (safe beside a running server).
    Export {
        /// Only this account's log: what `ctxd import` needs to move the tenant to another store.
        #[arg(long)]
        account: Option<String>,
        /// Only the account's events after this seq (such an export cannot be imported).
        #[arg(long, default_value_t = 0, requires = "account")]
        after: u64,
    },
    /// Load an export (a whole store's, or whole accounts') into a store that holds none of its
    /// accounts, while no server runs on the data dir; check each account's hash chain and build
    /// their projections; all or nothing.
    Import {
        /// The NDJSON files `ctxd export` wrote (or `-` for stdin), read one after the other:
        /// an account's archive segments (gzip, as written) then its live log's export load
        /// its whole history.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Load a synthetic contact center's journeys (while no server runs on the data dir) and
    /// print an API key of the account, to try the journeys, analytics and dashboard with data.
    Demo {
        /// Journeys to load.
        #[arg(long, default_value_t = 5000)]
        services: u64,
        /// The account they belong to (created if it does not exist).
        #[arg(long, default_value = "demo")]
        account: String,
        /// The address the server will listen on, for the dashboard's address printed at the end.
        #[arg(long, env = "CTXD_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CTXD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Admin token; when unset, `<data dir>/admin-token` is used, generated on first start.
    #[arg(long, env = "CTXD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// `full` (durable on power loss, the default) or `normal` (durable on process crash only).
    #[arg(long, env = "CTXD_SYNCHRONOUS", default_value = "full")]
    pub synchronous: Synchronous,
    /// Most commands per group commit.
    #[arg(long, env = "CTXD_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,
    /// Writes per second of an account that has no limit of its own
    /// (`PUT /admin/accounts/{id}/limits`); 0: unlimited.
    #[arg(long, env = "CTXD_DEFAULT_WRITES_PER_SECOND", default_value_t = 0)]
    pub default_writes_per_second: u32,
    /// Writes of one account that may wait for the writer at once; more wait behind them,
    /// holding up only that account.
    #[arg(long, env = "CTXD_PENDING_WRITES_PER_ACCOUNT", default_value_t = 1024)]
    pub pending_writes_per_account: usize,
    /// Open HTTP connections at most; past it, new ones wait in the kernel's backlog.
    #[arg(long, env = "CTXD_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Read connections open at once (on PostgreSQL, this node's share of the server's
    /// `max_connections`); past it a read waits up to 5 s, then answers 503.
    #[arg(long, env = "CTXD_MAX_READ_CONNECTIONS", default_value_t = 64)]
    pub max_read_connections: usize,
    /// Live event streams (`…/events/stream`) one account may hold open at once.
    #[arg(long, env = "CTXD_STREAMS_PER_ACCOUNT", default_value_t = 32)]
    pub streams_per_account: usize,
    /// Large reads (feed and history pages, as-of reads, analytics…) of one account in flight at
    /// once, their answers' sending included; more wait their turn.
    #[arg(long, env = "CTXD_LARGE_READS_PER_ACCOUNT", default_value_t = 8)]
    pub large_reads_per_account: usize,
    /// Seconds a request's header may take to arrive; also how long a keep-alive connection may
    /// sit idle.
    #[arg(long, env = "CTXD_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a request body may take to arrive whole, from its request's header.
    #[arg(long, env = "CTXD_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,
    /// Seconds shutdown waits for open connections to finish.
    #[arg(long, env = "CTXD_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Milliseconds between expiry sweeps.
    #[arg(long, env = "CTXD_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub sweep_interval_ms: u64,
    /// Hours an `Idempotency-Key` is remembered.
    #[arg(long, env = "CTXD_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24)]
    pub idempotency_retention_hours: u64,
    /// The head-signing key, base64 of its 32-byte Ed25519 seed, so that several nodes sign with
    /// one key; when unset, `--signing-key-file`, else `<data dir>/signing-key`, generated on
    /// first start.
    #[arg(long, env = "CTXD_SIGNING_KEY", hide_env_values = true, conflicts_with = "signing_key_file")]
    pub signing_key: Option<String>,
    /// A file holding the head-signing key (base64 of its 32-byte seed).
    #[arg(long, env = "CTXD_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// `quick` (the default): SQLite's quick check reads the whole store before serving it, and
    /// a damaged one is refused; `off`: start without it (a large store on a cold disk takes
    /// about a minute per 5 GB; run `ctxd verify` instead, out of hours).
    #[arg(long, env = "CTXD_INTEGRITY_CHECK", default_value = "quick")]
    pub integrity_check: IntegrityCheck,
    /// Where archive segments are written (default: `<data dir>/archive`); with several nodes,
    /// a directory they share, or each node's own that the operator collects.
    #[arg(long, env = "CTXD_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
}

/// Whether the start checks the SQLite file (`store::integrity_problems`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityCheck {
    Quick,
    Off,
}

impl Default for ServeArgs {
    fn default() -> Self {
        let Cli { command: Some(Commands::Serve(args)), .. } = Cli::parse_from(["ctxd", "serve"]) else {
            unreachable!("`ctxd serve` parses as Serve")
        };
        args
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an account.
    CreateAccount { account_id: String },
    /// Issue a new API key for an account (revoking its previous key) and print it.
    IssueKey { account_id: String },
}

impl Cli {
    /// Where the commands find the store.
    pub fn location(&self) -> store::Location {
        store::Location::of(&self.data_dir, self.database_url.as_deref())
    }
}

impl ServeArgs {
    pub fn config(&self, data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            addr: self.addr.clone(),
            data_dir,
            database_url: None,
            admin_token: self.admin_token.clone(),
            writer: WriterConfig {
                synchronous_full: self.synchronous == Synchronous::Full,
                integrity_check: self.integrity_check == IntegrityCheck::Quick,
                max_batch: self.max_batch.max(1),
                default_writes_per_second: Some(self.default_writes_per_second).filter(|rate| *rate > 0),
                pending_per_account: self.pending_writes_per_account.max(1),
                read_connections: self.max_read_connections.max(1),
                archive_dir: self.archive_dir.clone(),
                ..WriterConfig::default()
            },
            sweep_interval: Duration::from_millis(self.sweep_interval_ms.max(10)),
            idempotency_retention: Duration::from_secs(self.idempotency_retention_hours.saturating_mul(3600)),
            connections: ConnectionLimits {
                max_connections: self.max_connections.max(1),
                streams_per_account: self.streams_per_account.max(1),
                large_reads_per_account: self.large_reads_per_account.max(1),
                header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
                drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            },
            signing_key: match (&self.signing_key, &self.signing_key_file) {
                (Some(key), _) => KeySource::Given(key.clone()),
                (None, Some(file)) => KeySource::File(file.clone()),
                (None, None) => KeySource::DataDir,
            },
        }
    }
}

/// Runs the command line; the exit code is 0 on success.
pub async fn run(cli: Cli) -> Result<i32, BoxError> {
    let location = cli.location();
    match cli.command.unwrap_or(Commands::Serve(ServeArgs::default())) {
        Commands::Serve(args) => {
            let config =
                ServeConfig { database_url: cli.database_url.clone(), ..args.config(cli.data_dir.clone()) };
            let app = Application::build(&config, Arc::new(SystemClock)).await?;
            match &location {
                store::Location::Sqlite(data_dir) => {
                    tracing::info!(data_dir = %data_dir.display(), "store opened")
                }
                store::Location::Postgres(_) => tracing::info!("store opened on PostgreSQL"),
            }
            app.run_until_stopped(shutdown_signal()).await?;
            Ok(0)
        }
        Commands::Admin { command } => admin(&location, command).await,
        Commands::Demo { services, account, addr } => demo(&location, &account, services, &addr).await,
        Commands::Rebuild => {
            let _lock = lock_sqlite(&location)?;
            let mut conn = store::open_writer(&location, true)?;
            let started = Instant::now();
            let events = projections::rebuild(&mut conn)?;
            println!("rebuilt the projections from {events} events in {}", elapsed_rate(events, started));
            Ok(0)
        }
        Commands::Compact => {
            let _lock = lock_sqlite(&location)?;
            let conn = store::open_writer(&location, true)?;
            let started = Instant::now();
            let (before, after) = store::compact(&conn)?;
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            println!(
                "compacted the store from {:.1} MiB to {:.1} MiB in {:.1} s",
                mib(before),
                mib(after),
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        Commands::Verify { archive, .. } if !archive.is_empty() => verify_archive(&location, &archive),
        Commands::Verify { chain, .. } => verify(&location, chain),
        Commands::Archive { account, before, archive_dir } => {
            let archive_dir = archive_dir.unwrap_or_else(|| cli.data_dir.join("archive"));
            archive(&location, &account, &before, archive_dir).await
        }
        Commands::Export { account, after } => {
            export(&location, &Selection { account, after, ..Selection::default() })
        }
        Commands::Import { files } => import(&location, &files),
    }
}

/// Holds a SQLite store's data directory for a command that writes while no server may run.
fn lock_sqlite(location: &store::Location) -> Result<Option<std::fs::File>, StoreError> {
    match location {
        store::Location::Sqlite(data_dir) => store::lock_data_dir(data_dir).map(Some),
        store::Location::Postgres(_) => Ok(None),
    }
}

/// A read-only connection to an existing store, which may be in use by a server.
fn open_existing(location: &store::Location) -> Result<store::db::Connection, BoxError> {
    let (conn, path) = match location {
        store::Location::Sqlite(data_dir) => {
            let path = store::database_path(data_dir);
            if !path.exists() {
                return Err(format!("no store at {}", path.display()).into());
            }
            let conn = store::read::open_read_only(&path)?;
            // The first read: a file that is not a database (or a damaged one) says so here.
            store::migrations::current_version(&conn).map_err(|error| error.naming(&path))?;
            (conn, path.display().to_string())
        }
        store::Location::Postgres(url) => {
            (store::db::Connection::Postgres(store::db::PgConnection::connect(url)?), "--database-url".into())
        }
    };
    // A read-only command cannot migrate: it would read an older schema's columns as this one's.
    let version = store::migrations::current_version(&conn)?;
    if version != store::migrations::latest_version(&conn) {
        return Err(format!(
            "the store at {path} is at schema version {version}, this ctxd reads version {}: open it once with \
             this ctxd (`ctxd serve`, or any command that writes) to migrate it, or read it with the \
             release that wrote it",
            store::migrations::latest_version(&conn)
        )
        .into());
    }
    Ok(conn)
}

/// `ctxd verify [--chain]`: exit 1 when the store's file is damaged (SQLite's full integrity
/// check, which prints only what it finds, so that a report reads the same on both backends),
/// the projections or (with `--chain`) the chain fail.
fn verify(location: &store::Location, with_chain: bool) -> Result<i32, BoxError> {
    if let store::Location::Sqlite(data_dir) = location {
        let path = store::database_path(data_dir);
        let damaged = match store::read::open_read_only(&path) {
            _ if !path.exists() => None,
            Ok(store::db::Connection::Sqlite(conn)) => {
                store::integrity_problems(&conn, true)?.map(|problem| StoreError::Damaged { path, problem })
            }
            Err(error @ StoreError::Damaged { .. }) => Some(error),
            Ok(_) => None,
            Err(error) => return Err(error.into()),
        };
        if let Some(damaged) = damaged {
            println!("DAMAGED: {damaged}");
            return Ok(1);
        }
    }
    let conn = open_existing(location)?;
    let report = projections::verify::verify(&conn)?;
    for (table, checksum) in &report.tables {
        println!("{table:<12} {checksum}");
    }
    let projections_match = match report.mismatch {
        None => {
            println!("ok: the projections match a rebuild from {} events", report.events);
            true
        }
        Some(difference) => {
            println!("MISMATCH: {difference}");
            false
        }
    };
    let (count, first) = projections::verify::names_not_in_nfc(&conn, 5)?;
    if count > 0 {
        // Not damage: names written before they were kept in NFC, which paths no longer reach.
        println!(
            "note: {count} stored names are not in Unicode NFC (first: {}); /v1/ paths reach names in NFC only (docs/API.md)",
            first.join(", ")
        );
    }
    // Its own snapshot: `projections::verify` opens and ends one of its own.
    let chain_intact = !with_chain || verify_chain(&conn)?;
    Ok(if projections_match && chain_intact { 0 } else { 1 })
}

/// Walks every account's hash chain in one read snapshot and prints what it found.
fn verify_chain(conn: &store::db::Connection) -> Result<bool, BoxError> {
    let snapshot = conn.snapshot()?;
    let reports = chain::verify_all(conn).and_then(|reports| Ok((reports, chain::global_head(conn)?)));
    snapshot.commit()?;
    let (reports, global) = reports?;
    if let Some(global) = global {
        let head = match global.head.is_empty() {
            true => "not kept (it was computed over payloads erased since, migration 0014)".to_string(),
            false => hex::encode(global.head),
        };
        println!(
            "before per-account logs (migration 0007), the store-wide chain ended at seq {} with head {head}",
            global.last_seq
        );
        if let Some(broken) = global.broken {
            println!(
                "and it did not verify at its seq {} (account {}, now seq {}): {}",
                broken.seq, broken.account, broken.position, broken.reason
            );
        }
    }
    let mut intact = true;
    for report in &reports {
        let account = &report.account;
        match &report.first_bad {
            None => {
                let head = hex::encode(report.head);
                println!(
                    "account {account}: chain intact, {} events, head {} {head}",
                    report.events, report.last_seq
                );
            }
            Some((seq, reason)) => {
                println!("account {account}: chain broken at seq {seq}: {reason}");
                intact = false;
            }
        }
    }
    let events: u64 = reports.iter().map(|report| report.events).sum();
    match intact {
        true => println!("chains intact: {} accounts, {events} events", reports.len()),
        false => println!("CHAIN BROKEN: see the accounts above"),
    }
    Ok(intact)
}

/// `ctxd export`: NDJSON on stdout, the count on stderr.
fn export(location: &store::Location, selection: &Selection) -> Result<i32, BoxError> {
    let conn = open_existing(location)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let started = Instant::now();
    let events = transfer::export(&conn, selection, &mut out).and_then(|events| {
        out.flush().map_err(StoreError::Io)?;
        Ok(events)
    });
    match events {
        Ok(events) => eprintln!("exported {events} events in {}", elapsed_rate(events, started)),
        // The reader stopped early (`ctxd export | head`): what it read is what it asked for.
        Err(TransferError::Store(StoreError::Io(error))) if error.kind() == ErrorKind::BrokenPipe => {}
        Err(error) => return Err(error.into()),
    }
    Ok(0)
}

/// `ctxd import FILE|-`: holds the data dir's lock, like `rebuild`, since no server may run.
/// `ctxd import`. A data directory it created is removed again when the import fails, so that a
/// failed import leaves nothing behind (into an existing one, it leaves the store as it was).
fn import(location: &store::Location, files: &[PathBuf]) -> Result<i32, BoxError> {
    let created = match location {
        store::Location::Sqlite(data_dir) if !data_dir.exists() => Some(data_dir),
        _ => None,
    };
    let imported = import_into(location, files);
    if let (Err(_), Some(data_dir)) = (&imported, created)
        && let Err(error) = std::fs::remove_dir_all(data_dir)
    {
        tracing::warn!(path = %data_dir.display(), %error, "could not remove the failed import's data directory");
    }
    imported
}

fn import_into(location: &store::Location, files: &[PathBuf]) -> Result<i32, BoxError> {
    let mut input: Box<dyn std::io::Read + Send> = Box::new(std::io::empty());
    for file in files {
        let next: Box<dyn std::io::Read + Send> = if file == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            let opened = std::fs::File::open(file).map_err(|error| format!("{}: {error}", file.display()))?;
            transfer::decompressed(opened)?
        };
        input = Box::new(std::io::Read::chain(input, next));
    }
    let input: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, input));
    let _lock = lock_sqlite(location).map_err(|error| match error {
        StoreError::Locked(_) => format!("{error}; stop the server before importing").into(),
        other => BoxError::from(other),
    })?;
    let mut conn = store::open_writer(location, true)?;
    let started = Instant::now();
    let imported = transfer::import(&mut conn, input)?;
    for report in &imported.accounts {
        let head = hex::encode(report.head);
        println!(
            "account {}: {} events, chain intact, head {} {head}",
            report.account, report.events, report.last_seq
        );
    }
    println!("imported {} events of {} accounts", imported.events, imported.accounts.len());
    println!("in {}: {}", elapsed_rate(imported.events, started), imported.phases);
    Ok(0)
}

/// `ctxd archive`: an archive made offline, its archived events deleted before it returns.
async fn archive(
    location: &store::Location,
    account: &str,
    before: &str,
    dir: PathBuf,
) -> Result<i32, BoxError> {
    let before = chrono::DateTime::parse_from_rfc3339(before)
        .map_err(|error| format!("--before {before:?} is not an RFC 3339 time: {error}"))?
        .to_utc();
    let store = Store::open_at(
        location,
        WriterConfig { archive_dir: Some(dir.clone()), ..WriterConfig::default() },
        Arc::new(SystemClock),
        Arc::new(Metrics::default()),
    )?;
    let meta = EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: "admin:cli".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let request = |command| WriteRequest { command, meta, idempotency: None };
    let archived = store::archive::archive(&store, account, before, request, chrono::Utc::now()).await;
    let (_, stop) = tokio::sync::watch::channel(false);
    let dropped = match &archived {
        Ok(_) => crate::steps::finish(&store, &stop).await.map(drop),
        Err(_) => Ok(()),
    };
    store.shutdown().await;
    match (archived, dropped) {
        (Ok(archived), Ok(())) => {
            match &archived.segment {
                Some(segment) => println!(
                    "archived {} events of {account} (seq {} to {}) into {} in {}; the snapshot holds {} streams",
                    archived.archived_events,
                    archived.first_seq.unwrap_or(0),
                    archived.last_seq.unwrap_or(0),
                    dir.join(segment).display(),
                    elapsed_rate(archived.archived_events, started),
                    archived.snapshot_streams
                ),
                None => println!(
                    "no event of {account} in the live log was recorded before {}",
                    before.to_rfc3339()
                ),
            }
            Ok(0)
        }
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("ctxd: {error}");
            Ok(2)
        }
    }
}

/// `ctxd verify --archive SEGMENT…`: each segment's chain, that the segments of an account
/// connect in order, and that the last connects to the live log's record of its archive.
fn verify_archive(location: &store::Location, paths: &[PathBuf]) -> Result<i32, BoxError> {
    let conn = open_existing(location).ok();
    // Each account's redactions recorded anywhere: a segment's payload erased later is sound
    // if one names it.
    let mut redacted: std::collections::HashMap<String, std::collections::HashMap<u64, chain::Hash>> =
        std::collections::HashMap::new();
    let mut reports = Vec::new();
    for path in paths {
        let report = store::archive::segment::verify(path, &Default::default())?;
        redacted.entry(report.header.account.clone()).or_default().extend(report.redacted.clone());
        reports.push((path, report));
    }
    if let Some(conn) = &conn {
        for (account, redactions) in redacted.iter_mut() {
            redactions.extend(store::archive::live_redactions(conn, account)?);
        }
    }
    let mut intact = true;
    reports.sort_by(|a, b| {
        (&a.1.header.account, a.1.header.first_seq).cmp(&(&b.1.header.account, b.1.header.first_seq))
    });
    let mut previous: Option<&store::archive::segment::Report> = None;
    for (path, report) in &reports {
        let report_now = store::archive::segment::verify(
            path,
            redacted.get(&report.header.account).unwrap_or(&Default::default()),
        )?;
        let header = &report.header;
        let mut problems: Vec<String> =
            report_now.first_bad.iter().map(|(seq, why)| format!("seq {seq}: {why}")).collect();
        match previous.filter(|p| p.header.account == header.account) {
            Some(before)
                if before.header.through_seq + 1 != header.first_seq
                    || before.header.through_hash != header.previous_hash =>
            {
                problems.push(format!(
                    "it does not connect to the segment before it (which ends at seq {} with link {})",
                    before.header.through_seq, before.header.through_hash
                ));
            }
            None if header.first_seq != 1 => problems.push(format!(
                "it starts at seq {}: the segments before it were not given",
                header.first_seq
            )),
            _ => {}
        }
        if let Some(conn) = &conn
            && let Some(problem) = store::archive::recorded_problem(conn, report)?
        {
            problems.push(problem);
        }
        if problems.is_empty() {
            println!(
                "{}: account {}, seq {} to {}, {} events, chain intact, sha256 {}",
                path.display(),
                header.account,
                header.first_seq,
                header.through_seq,
                report.events,
                report.sha256
            );
        } else {
            intact = false;
            println!("{}: BROKEN: {}", path.display(), problems.join("; "));
        }
        previous = Some(report);
    }
    if let Some(conn) = &conn {
        for account in reports
            .iter()
            .map(|(_, report)| &report.header.account)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let last =
                reports.iter().rev().find(|(_, report)| &report.header.account == account).map(|(_, r)| r);
            let cut = store::archive::cut(conn, account)?;
            match (last, cut) {
                (Some(last), Some(cut)) if last.header.through_seq == cut.through_seq => println!(
                    "account {account}: the segments connect to the live log, which goes on after seq {}",
                    cut.through_seq
                ),
                (_, Some(cut)) => println!(
                    "account {account}: the live log goes on after seq {}; the last segment given ends before",
                    cut.through_seq
                ),
                (_, None) => {
                    intact = false;
                    println!("account {account}: BROKEN: the store records no archive of this account");
                }
            }
        }
    }
    match intact {
        true => println!("segments intact: {}", reports.len()),
        false => println!("SEGMENTS BROKEN: see above"),
    }
    Ok(if intact { 0 } else { 1 })
}

/// `2.00 s (500000 events/s)`.
fn elapsed_rate(events: u64, started: Instant) -> String {
    let seconds = started.elapsed().as_secs_f64();
    format!("{seconds:.2} s ({:.0} events/s)", events as f64 / seconds.max(1e-9))
}

/// Opens the store for a CLI write, or explains how to do it while a server holds it.
fn open_for_cli(location: &store::Location) -> Result<Store, BoxError> {
    Store::open_at(location, WriterConfig::default(), Arc::new(SystemClock), Arc::new(Metrics::default()))
        .map_err(|error| match (error, location) {
            (error @ StoreError::Locked(_), store::Location::Sqlite(data_dir)) => format!(
                "{error}; while the server runs, use the admin API (POST /admin/accounts, POST /admin/accounts/ID/api-key) with the token in {}",
                data_dir.join("admin-token").display()
            )
            .into(),
            (other, _) => BoxError::from(other),
        })
}

async fn admin(location: &store::Location, command: AdminCommand) -> Result<i32, BoxError> {
    let store = open_for_cli(location)?;
    let meta = EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: "admin:cli".into(),
        ..Default::default()
    };
    let submit = |command| store.submit(WriteRequest { command, meta, idempotency: None });
    let result = match command {
        AdminCommand::CreateAccount { account_id } => {
            let account_id = crate::domain::names::normal_form(account_id);
            let command = Command::Account(AccountCommand::CreateAccount { account_id: account_id.clone() });
            submit(command).await.map(|_| println!("created account {account_id}"))
        }
        AdminCommand::IssueKey { account_id } => {
            let key = generate_api_key();
            let command =
                Command::Account(AccountCommand::issue_default_key(&account_id, &key.key_id, &key.key_hash));
            submit(command).await.map(|_| println!("{}", key.key))
        }
    };
    store.shutdown().await;
    match result {
        Ok(()) => Ok(0),
        Err(error) => {
            eprintln!("ctxd: {error}");
            Ok(2)
        }
    }
}

async fn demo(location: &store::Location, account: &str, services: u64, addr: &str) -> Result<i32, BoxError> {
    let store = open_for_cli(location)?;
    let meta = || EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: "admin:cli".into(),
        ..Default::default()
    };
    let create = Command::Account(AccountCommand::CreateAccount { account_id: account.to_string() });
    match store.submit(WriteRequest { command: create, meta: meta(), idempotency: None }).await {
        Ok(_) | Err(WriteError::Domain(DomainError::Conflict(_))) => {}
        Err(error) => return Err(error.into()),
    }
    let key = generate_api_key();
    let issue = Command::Account(AccountCommand::issue_default_key(account, &key.key_id, &key.key_hash));
    store.submit(WriteRequest { command: issue, meta: meta(), idempotency: None }).await?;
    let started = Instant::now();
    let report = crate::demo::load(&store, account, services, 64).await;
    store.shutdown().await;
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} journeys of account {account} ({} completed, {} abandoned, {} still open) with {} lifecycle calls in {seconds:.1} s",
        report.services, report.completed, report.abandoned, report.active, report.calls
    );
    let store = match location {
        store::Location::Sqlite(data_dir) => format!("--data-dir {}", data_dir.display()),
        store::Location::Postgres(_) => "--database-url …".to_string(),
    };
    eprintln!(
        "start the server on this store (ctxd {store} serve --addr {addr}), open {} and paste this API key:",
        crate::http::dashboard_url(addr)
    );
    println!("{}", key.key);
    Ok(0)
}
