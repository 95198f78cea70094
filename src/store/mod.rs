//! The store: the event log, its single writer, read-only connections and schema migrations.
//!
//! Its interface is deliberately narrow — submit a command, read a stream or the feed, run a
//! projection query — so that another backend can replace SQLite without touching HTTP or domain code.

pub mod admission;
pub mod archive;
pub mod chain;
pub mod db;
pub mod fair;
pub mod idempotency;
pub mod log;
pub mod migrations;
pub mod notify;
pub mod payload;
pub mod read;
pub mod salting;
pub mod transfer;
pub mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use db::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::domain::context::ContextCommand;
use crate::domain::erasure::ErasureTarget;
use crate::domain::{Command, DomainError, StreamVersion};
use crate::metrics::Metrics;
use read::ReadPool;
pub use writer::WriterConfig;

/// Errors of the storage layer. Details are logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] db::Error),
    #[error("{0}")]
    Schema(String),
    #[error("the log holds an event this binary cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the data directory {0} is in use by another ctxd process")]
    Locked(PathBuf),
    #[error("every read connection this node may open is in use")]
    Busy,
    #[error(
        "the store {path} is damaged ({problem}); ctxd does not open it. Stop every ctxd using it and keep \
         a copy of the file (with its -wal), then restore the latest backup, or recover what SQLite can \
         still read: `sqlite3 {path} .recover | sqlite3 recovered.db`, put recovered.db in its place and \
         run `ctxd verify --chain` (docs/AUDIT.md, \"A damaged store\")"
    )]
    Damaged { path: PathBuf, problem: String },
    /// The database at `path` could not be opened or read.
    #[error("{}: {source}", path.display())]
    At { path: PathBuf, source: db::Error },
}

impl StoreError {
    /// This error as one that names the SQLite file at `path`: a damaged file as `Damaged`,
    /// any other error of the database as `At`.
    pub fn naming(self, path: &Path) -> StoreError {
        match self {
            StoreError::Database(db::Error::Sqlite(error)) if is_damage(&error) => {
                StoreError::Damaged { path: path.to_path_buf(), problem: error.to_string() }
            }
            StoreError::Database(source) => StoreError::At { path: path.to_path_buf(), source },
            other => other,
        }
    }
}

impl StoreError {
    /// The store could not be opened just now (out of file descriptors, or the file is gone): the
    /// request may be retried. The backend's own error codes stay behind this.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(error) => error.is_unavailable(),
            StoreError::Busy => true,
            _ => false,
        }
    }
}

/// Why a submitted command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyMismatch,
    #[error("the writer is shutting down")]
    Unavailable,
    #[error("the group commit failed")]
    CommitFailed,
    #[error(
        "the database cannot be reached just now; the write may or may not have been committed: \
         retry it with the same Idempotency-Key"
    )]
    DatabaseUnreachable,
    #[error("this account's writes are held up by another node's transaction; nothing was written, retry")]
    AccountBusy,
    #[error("this account is past its writes_per_second; retry later")]
    RateLimited { retry_after: std::time::Duration },
    #[error(
        "the store's disk is full: nothing was written; writes resume by themselves once space is freed, \
         retry then"
    )]
    DiskFull,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<db::Error> for WriteError {
    fn from(error: db::Error) -> Self {
        WriteError::Store(StoreError::Database(error))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(error.into())
    }
}

/// Who asked for a write and how: recorded as each event's `meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventMeta {
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// `key:<key name>`, `admin`, or `system:<task>`.
    pub actor: String,
    /// Whom the actor says it acts for (the `On-Behalf-Of` header, e.g. the agent at a desktop
    /// whose software holds the key): recorded as claimed, not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    /// `account/<id>`, or `admin` for admin calls: keys of different accounts never collide.
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
}

/// A command on its way to the writer.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub command: Command,
    pub meta: EventMeta,
    pub idempotency: Option<Idempotency>,
}

/// The result of a committed command (or of the first one, when replayed by idempotency key).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// Version of the stream the command addressed, after it: the `ETag`.
    pub version: StreamVersion,
    /// Number of events appended.
    pub appended: usize,
    /// Position in its account's log of the last event appended, if any.
    pub last_seq: Option<u64>,
    /// The id the command gave what it created (a service, state, task or customer), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// True when the command started one that proceeds in steps (answered 202, also on replay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepted: bool,
    /// True when this is the stored result of an earlier request with the same idempotency key.
    #[serde(skip)]
    pub replayed: bool,
}

/// This process, as the store's other processes see it: the name of its writer's session
/// (PostgreSQL), the owner of an archive it stages.
pub(crate) fn process_id() -> &'static str {
    static ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| uuid::Uuid::new_v4().to_string());
    &ID
}

/// An API key's owner, as the auth layer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub account: String,
    /// The key's name in its account: the actor of what it writes is `key:<name>`.
    pub name: String,
    pub role: crate::domain::events::Role,
}

/// Active API keys by their sha256, refreshed by the writer after it commits key events.
pub type KeyRing = RwLock<std::collections::HashMap<String, KeyOwner>>;

/// What the event feed's followers watch: the log's last committed store-wide id, which accounts
/// the latest commit wrote to, and whether the server is stopping (followers then end their
/// streams so that the HTTP server can drain). Ids are internal: followers only compare them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedHead {
    pub last_id: u64,
    /// The id just before the latest commit's first event.
    pub commit_after: u64,
    /// The accounts whose events the latest commit appended: a follower that had read up to
    /// `commit_after` has nothing to read unless its account is one of them.
    pub accounts: Arc<[String]>,
    pub closed: bool,
}

/// Handle to an open store. Cloning is cheap; all clones share the one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    sender: mpsc::Sender<writer::Message>,
    admission: admission::Admission,
    reads: ReadPool,
    keys: Arc<KeyRing>,
    feed: Arc<watch::Sender<FeedHead>>,
    /// Wakes the task that carries long commands through their steps.
    steps: tokio::sync::Notify,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer's last word on its connection (`writer::Shared::online`).
    writer_online: Arc<AtomicBool>,
    /// The writer's word that the disk is full (`writer::Shared::disk_full`).
    disk_full: Arc<AtomicBool>,
    /// Set when `/readyz` asked the offline writer to reconnect, until the writer tried:
    /// however often `/readyz` is polled, one request is pending.
    reconnect_asked: Arc<AtomicBool>,
    /// Lookups of keys this node does not know, in flight at once (`key_owner`).
    key_lookups: tokio::sync::Semaphore,
    /// When this node last saw each key used (by hash, Unix microseconds to the minute), and
    /// whether that was recorded yet (`record_key_use`).
    key_use: Mutex<HashMap<String, (i64, bool)>>,
    /// Held until `shutdown`: one process per SQLite store.
    lock: Mutex<Option<File>>,
    /// PostgreSQL: the connection on which this node holds (or tries for) the sweeper's lock.
    sweeper: Mutex<SweeperTurn>,
    /// Where archive segments go (`WriterConfig::archive_dir`).
    archive_dir: Option<PathBuf>,
    /// The accounts this node is archiving now.
    archiving: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// This node's turn to archive an account (`Store::archive_turn`), given back when dropped.
pub struct ArchiveTurn {
    account: String,
    archiving: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for ArchiveTurn {
    fn drop(&mut self) {
        self.archiving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.account);
    }
}

/// Lookups of unknown API keys in the database that may run at once (`Store::key_owner`).
const KEY_LOOKUPS: usize = 4;

/// The advisory lock that makes one node at a time the sweeper of a PostgreSQL store.
const SWEEPER_LOCK: i64 = 0x6374_7864_7377_7070; // "ctxdswpp"

#[derive(Default)]
struct SweeperTurn {
    conn: Option<Connection>,
    holding: bool,
}

/// Where a store keeps its log and projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded store: `ctxd.db` in this data directory, written by one process.
    Sqlite(PathBuf),
    /// A PostgreSQL database (a libpq URL), which several ctxd nodes may share.
    Postgres(String),
}

impl Location {
    /// PostgreSQL when a database URL is given, else SQLite in the data directory.
    pub fn of(data_dir: &Path, database_url: Option<&str>) -> Location {
        match database_url {
            Some(url) => Location::Postgres(url.to_string()),
            None => Location::Sqlite(data_dir.to_path_buf()),
        }
    }
}

/// Opens a writing connection to `location` and migrates it. A SQLite store's data directory is
/// locked by the caller (`lock_data_dir`).
pub fn open_writer(location: &Location, synchronous_full: bool) -> Result<Connection, StoreError> {
    open_writer_checked(location, synchronous_full, true)
}

/// `open_writer`, with SQLite's quick check of the file or without it (`--integrity-check off`).
pub fn open_writer_checked(
    location: &Location,
    synchronous_full: bool,
    integrity_check: bool,
) -> Result<Connection, StoreError> {
    match location {
        Location::Sqlite(data_dir) => {
            let path = database_path(data_dir);
            open_checked_writer(&path, synchronous_full, integrity_check).map_err(|error| error.naming(&path))
        }
        Location::Postgres(url) => {
            let mut conn = Connection::Postgres(db::PgConnection::connect(url)?);
            migrations::migrate_then_rebuild(&mut conn, |tx| {
                crate::projections::rebuild_within(tx)?;
                Ok(())
            })?;
            Ok(conn)
        }
    }
}

/// WAL pages between two checkpoints. Measured (docs/PERFORMANCE.md): 4000 rather than SQLite's
/// 1000 lets pages that many commits rewrite be copied back once, for less writer time per command.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

/// Prepared statements kept per connection.
pub const STATEMENT_CACHE: usize = 256;

/// Where the store keeps its file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ctxd.db")
}

/// Creates the data directory if it is missing, readable by its owner only (it holds the store,
/// the admin token and the signing key).
pub fn create_data_dir(data_dir: &Path) -> std::io::Result<()> {
    if data_dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(data_dir).map_err(|error| named(data_dir, error))
}

/// An I/O error that names the path it concerns.
pub fn named(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The store's files are its owner's alone (mode 0600): the SQLite file is created so before
/// SQLite opens it, and SQLite gives its WAL and shared-memory files the same mode; files of an
/// older store are narrowed to it.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = File::options().write(true).create_new(true).mode(0o600).open(path);
        match created {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(named(path, error)),
        }
        let mut companions = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            companions.push(PathBuf::from(name));
        }
        for file in companions.iter().filter(|file| file.exists()) {
            let mode = std::fs::metadata(file).map_err(|error| named(file, error))?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|error| named(file, error))?;
            }
        }
    }
    Ok(())
}

/// Takes the data directory's lock file, so that two processes never write one store.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, StoreError> {
    create_data_dir(data_dir)?;
    let lock_path = data_dir.join("ctxd.lock");
    let mut options = File::options();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(&lock_path).map_err(|error| named(&lock_path, error))?;
    lock.try_lock().map_err(|_| StoreError::Locked(data_dir.to_path_buf()))?;
    Ok(lock)
}

/// Rewrites the store without the space its deleted rows left (SQLite: every free page, which
/// later writes would otherwise reuse; PostgreSQL: dead row versions); answers its size in
/// bytes before and after. SQLite's `VACUUM` needs as much free disk again as the store's size
/// while it runs; `secure_delete` already zeroed the freed pages, so no erased value is in
/// what it drops.
pub fn compact(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let size_sql = conn.sql(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        "SELECT pg_database_size(current_database())",
    );
    let size = || conn.query_row(size_sql, [], |row| row.get::<u64>(0));
    let before = size()?;
    match conn.dialect() {
        db::Dialect::Sqlite => {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?
        }
        db::Dialect::Postgres => conn.execute_batch("VACUUM FULL")?,
    }
    Ok((before, size()?))
}

/// What SQLite's own check found wrong with the file at `path`, if anything: `quick_check`
/// (every page and b-tree read and checked, without matching indexes to their tables) or, with
/// `full`, `integrity_check`. A file SQLite cannot even read as a database counts as damaged.
pub fn integrity_problems(conn: &rusqlite::Connection, full: bool) -> Result<Option<String>, StoreError> {
    let pragma = if full { "PRAGMA integrity_check(20)" } else { "PRAGMA quick_check(20)" };
    let checked = conn.prepare(pragma).and_then(|mut statement| {
        statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()
    });
    match checked {
        Ok(lines) if lines == ["ok"] => Ok(None),
        Ok(lines) => Ok(Some(lines.join("; "))),
        Err(error) if is_damage(&error) => Ok(Some(error.to_string())),
        Err(error) => Err(error.into()),
    }
}

/// SQLite's word that a file is not a database, or a damaged one.
pub fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Opens the write connection with the pragmas every writer uses, checks the file
/// (`integrity_problems`, quick) and migrates it.
pub fn open_writer_connection(path: &Path, synchronous_full: bool) -> Result<Connection, StoreError> {
    open_checked_writer(path, synchronous_full, true).map_err(|error| error.naming(path))
}

fn open_checked_writer(
    path: &Path,
    synchronous_full: bool,
    integrity_check: bool,
) -> Result<Connection, StoreError> {
    make_private(path)?;
    let conn = rusqlite::Connection::open(path)?;
    let started = std::time::Instant::now();
    if !integrity_check {
        tracing::warn!(path = %path.display(), "the store's file is served without SQLite's quick check (--integrity-check off)");
    } else if let Some(problem) = integrity_problems(&conn, false)? {
        return Err(StoreError::Damaged { path: path.to_path_buf(), problem });
    } else {
        tracing::info!(took = ?started.elapsed(), "the store's file passed SQLite's quick check");
    }
    // A 16 MiB page cache: SQLite walks its page cache's hash table at the end of every commit
    // (`pcache1TruncateUnsafe`), so a larger cache costs every commit (docs/PERFORMANCE.md).
    // `secure_delete`: what an update or a delete frees is overwritten with zeros, so an erased
    // value does not live on in the file's free space (docs/AUDIT.md).
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA secure_delete = ON;
         PRAGMA synchronous = {};
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};
         PRAGMA journal_size_limit = 67108864;",
        if synchronous_full { "FULL" } else { "NORMAL" },
    ))?;
    plan_once(&conn)?;
    // The writer cycles through a few dozen statements; the default cache of 16 would re-prepare them.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mut conn = Connection::from(conn);
    migrations::migrate_then_rebuild(&mut conn, |tx| {
        tracing::info!(path = %path.display(), "rebuilding the projections from the log after a migration");
        let events = crate::projections::rebuild_within(tx)?;
        tracing::info!(events, "projections rebuilt");
        Ok(())
    })?;
    Ok(conn)
}

/// Plans each statement once, whatever values are bound to it (SQLite's query planner stability
/// guarantee). Without it, a statement whose plan SQLite drew from a bound value (an `ORDER BY`
/// or `LIMIT` over an index, a partial index) is prepared again each time it is taken from the
/// statement cache, which clears its bindings: measured with cachegrind, 37,000 of the ~270,000
/// instructions of a PATCH went to preparing the stream-version lookup again
/// (docs/PERFORMANCE.md). Every plan ctxd relies on is pinned by a test on its own.
pub fn plan_once(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        Store::open_at(&Location::Sqlite(data_dir.to_path_buf()), config, clock, metrics)
    }

    /// Opens (creating or migrating if needed) the store at `location` and starts its writer.
    pub fn open_at(
        location: &Location,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let lock = match location {
            Location::Sqlite(data_dir) => Some(lock_data_dir(data_dir)?),
            Location::Postgres(_) => None,
        };
        let conn = open_writer_checked(location, config.synchronous_full, config.integrity_check)?;
        let keys = Arc::new(RwLock::new(crate::projections::accounts::active_keys(&conn)?));
        let limits = Arc::new(RwLock::new(crate::projections::accounts::write_limits(&conn)?));
        let admission = admission::Admission::new(
            config.default_writes_per_second,
            config.pending_per_account,
            limits.clone(),
            metrics.clone(),
        );
        let last_id = log::last_id(&conn)?;
        metrics.set_log_length(last_id);
        let feed =
            Arc::new(watch::Sender::new(FeedHead { last_id, commit_after: last_id, ..FeedHead::default() }));
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let database_url = match location {
            Location::Postgres(url) => Some(url.clone()),
            Location::Sqlite(_) => None,
        };
        let node = uuid::Uuid::new_v4().simple().to_string();
        if let Some(url) = &database_url {
            notify::listen(url, &node, sender.clone(), feed.clone())?;
        }
        let online = Arc::new(AtomicBool::new(true));
        let reconnect_asked = Arc::new(AtomicBool::new(false));
        let disk_full = Arc::new(AtomicBool::new(false));
        let shared = writer::Shared {
            keys: keys.clone(),
            limits,
            feed: feed.clone(),
            database_url,
            node,
            online: online.clone(),
            reconnect_asked: reconnect_asked.clone(),
            disk_full: disk_full.clone(),
            data_dir: match location {
                Location::Sqlite(data_dir) => Some(data_dir.clone()),
                Location::Postgres(_) => None,
            },
        };
        let read_connections = config.read_connections;
        let archive_dir = config.archive_dir.clone().or_else(|| match location {
            Location::Sqlite(data_dir) => Some(data_dir.join("archive")),
            Location::Postgres(_) => None,
        });
        let thread = writer::spawn(conn, receiver, config, clock, metrics, shared)?;
        Ok(Store {
            inner: Arc::new(Inner {
                reads: ReadPool::new(location.clone(), read_connections),
                location: location.clone(),
                sender,
                admission,
                keys,
                feed,
                steps: tokio::sync::Notify::new(),
                writer_thread: Mutex::new(Some(thread)),
                writer_online: online,
                reconnect_asked,
                disk_full,
                key_lookups: tokio::sync::Semaphore::new(KEY_LOOKUPS),
                key_use: Mutex::new(HashMap::new()),
                sweeper: Mutex::new(SweeperTurn::default()),
                archive_dir,
                archiving: Arc::default(),
                lock: Mutex::new(lock),
            }),
        })
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Path of the SQLite file; `None` for a PostgreSQL store.
    pub fn path(&self) -> Option<PathBuf> {
        match &self.inner.location {
            Location::Sqlite(data_dir) => Some(database_path(data_dir)),
            Location::Postgres(_) => None,
        }
    }

    /// Sends a command to the writer and waits until it is durable (or refused). A tenant's
    /// command is admitted first (`admission`): refused past the account's rate, and held while
    /// the account has as many commands pending as it may.
    pub async fn submit(&self, request: WriteRequest) -> Result<Outcome, WriteError> {
        // ctxd's own steps of a command that was admitted when it started are not counted again.
        let place = match &request.command {
            Command::Account(_)
            | Command::StageArchive { .. }
            | Command::Archive { .. }
            | Command::AbandonArchive { .. }
            | Command::DropArchived { .. }
            | Command::Context { command: ContextCommand::DeleteNamespaceStep { .. }, .. }
            | Command::Erase { target: ErasureTarget::CustomerStep { .. }, .. } => None,
            command => match command.account() {
                Some(account) => Some(self.inner.admission.admit(account, std::time::Instant::now()).await?),
                None => None,
            },
        };
        let (reply, answer) = oneshot::channel();
        self.inner
            .sender
            .send(writer::Message::Write { request: Box::new(request), reply, place })
            .await
            .map_err(|_| WriteError::Unavailable)?;
        answer.await.map_err(|_| WriteError::Unavailable)?
    }

    /// Runs a query on a read-only connection.
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.reads.read(query)
    }

    /// On SQLite, copies the WAL's pages back into the database on a connection of its own,
    /// beside the writer. A long read pins every page written while it runs (an archive's
    /// snapshot is staged while it is being folded); once it ends, the writer's next commit
    /// would copy them all in its automatic checkpoint, holding every tenant's writes meanwhile
    /// (326 ms after a 100,000-stream archive, docs/PERFORMANCE.md). A passive checkpoint
    /// never waits for the writer nor holds it up. A failure only leaves the work to the writer.
    pub async fn checkpoint_beside_writer(&self) {
        let Location::Sqlite(data_dir) = &self.inner.location else { return };
        let path = database_path(data_dir);
        let checkpointed = tokio::task::spawn_blocking(move || -> rusqlite::Result<(i64, i64)> {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))
        })
        .await;
        match checkpointed {
            Ok(Ok((wal, copied))) => tracing::debug!(wal, copied, "checkpoint beside the writer"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "checkpoint beside the writer failed; the writer's own will do it")
            }
            Err(error) => tracing::warn!(%error, "checkpoint beside the writer did not run"),
        }
    }

    /// Runs a query that may take long (listings, pages of documents) on tokio's blocking pool,
    /// so that it does not hold up one of the threads that serve requests.
    pub async fn read_large<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(query))
            .await
            .map_err(|error| StoreError::Io(std::io::Error::other(error)))?
    }

    /// True when this node is the one that sweeps: always on SQLite (one process per store); on
    /// PostgreSQL, the node that holds an advisory lock on a connection of its own, which the
    /// server releases when the node dies or loses that connection, so that another takes over.
    pub async fn sweeper_turn(&self) -> bool {
        if let Location::Sqlite(_) = self.inner.location {
            return true;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.try_sweeper_lock()).await.unwrap_or(false)
    }

    /// `sweeper_turn` on PostgreSQL: takes (or keeps) the sweeper's advisory lock.
    fn try_sweeper_lock(&self) -> bool {
        let Location::Postgres(url) = &self.inner.location else { return true };
        let mut turn = self.inner.sweeper.lock().expect("sweeper lock");
        if turn.conn.as_ref().is_none_or(Connection::is_broken) {
            *turn = SweeperTurn::default();
            match db::PgConnection::connect(url) {
                Ok(conn) => turn.conn = Some(Connection::Postgres(conn)),
                Err(error) => {
                    tracing::warn!(%error, "the sweeper cannot reach PostgreSQL");
                    return false;
                }
            }
        }
        if !turn.holding {
            let conn = turn.conn.as_ref().expect("connected above");
            turn.holding = conn
                .query_row("SELECT pg_try_advisory_lock(?1)", [SWEEPER_LOCK], |row| row.get(0))
                .unwrap_or(false);
            if turn.holding {
                tracing::info!("this node is the sweeper now");
            }
        }
        turn.holding
    }

    /// The `writes_per_second` an account's writes are held to (`None`: unlimited).
    pub fn write_rate(&self, account: &str) -> Option<u32> {
        self.inner.admission.rate_of(account)
    }

    /// The owner of an API key this node knows, by the key's sha256.
    pub fn known_key(&self, key_hash: &str) -> Option<KeyOwner> {
        self.inner.keys.read().expect("key ring lock").get(key_hash).cloned()
    }

    /// The owner of an API key, by the key's sha256. On PostgreSQL a key this node does not
    /// know is looked up in the database: one issued through another node a moment ago works
    /// here before that node's notice arrives. The lookup is not kept (a revocation's notice
    /// cannot be overtaken by it), and at most `KEY_LOOKUPS` run at once: past that, unknown
    /// keys are answered 503 (`StoreError::Busy`), so that made-up keys cannot take every
    /// worker or read connection.
    pub async fn key_owner(&self, key_hash: &str) -> Result<Option<KeyOwner>, StoreError> {
        let known = self.known_key(key_hash);
        if known.is_some() || matches!(self.inner.location, Location::Sqlite(_)) {
            return Ok(known);
        }
        let Ok(_turn) = self.inner.key_lookups.try_acquire() else {
            return Err(StoreError::Busy);
        };
        let (store, key_hash) = (self.clone(), key_hash.to_string());
        let lookup = move || store.read(|conn| crate::projections::accounts::active_key(conn, &key_hash));
        tokio::task::spawn_blocking(lookup).await.map_err(|_| StoreError::Busy)?
    }

    /// Notes that a key was used now (to the minute: a key used all day is noted once a minute).
    pub fn note_key_use(&self, key_hash: &str, now: chrono::DateTime<chrono::Utc>) {
        let minute = now.timestamp_micros() / 60_000_000 * 60_000_000;
        let mut uses = self.inner.key_use.lock().expect("key use lock");
        match uses.get_mut(key_hash) {
            Some((at, _)) if *at >= minute => {}
            Some(noted) => *noted = (minute, false),
            None => {
                uses.insert(key_hash.to_string(), (minute, false));
            }
        }
    }

    /// When this node last saw the key used (Unix microseconds), recorded or not.
    pub fn key_last_used_here(&self, key_hash: &str) -> Option<i64> {
        self.inner.key_use.lock().expect("key use lock").get(key_hash).map(|(at, _)| *at)
    }

    /// Records the key uses noted since the last call (`Command::RecordKeyUse`, one small
    /// transaction; nothing when there are none). Uses whose recording failed are tried again.
    pub async fn record_key_use(&self) -> Result<(), WriteError> {
        let uses: Vec<(String, i64)> = {
            let mut noted = self.inner.key_use.lock().expect("key use lock");
            noted
                .iter_mut()
                .filter(|(_, (_, recorded))| !*recorded)
                .map(|(hash, (at, recorded))| {
                    *recorded = true;
                    (hash.clone(), *at)
                })
                .collect()
        };
        if uses.is_empty() {
            return Ok(());
        }
        let command = Command::RecordKeyUse { uses: uses.clone() };
        let meta = EventMeta { actor: "system:key-use".into(), ..Default::default() };
        let recorded = self.submit(WriteRequest { command, meta, idempotency: None }).await;
        if recorded.is_err() {
            let mut noted = self.inner.key_use.lock().expect("key use lock");
            for (hash, at) in uses {
                if let Some(entry) = noted.get_mut(&hash)
                    && entry.0 == at
                {
                    entry.1 = false;
                }
            }
        }
        recorded.map(drop)
    }

    /// Follows the log's head: changes after every commit that appended events.
    pub fn watch_feed(&self) -> watch::Receiver<FeedHead> {
        self.inner.feed.subscribe()
    }

    /// The turn to archive `account`; `None` while this node archives it already.
    pub fn archive_turn(&self, account: &str) -> Option<ArchiveTurn> {
        let archiving = self.inner.archiving.clone();
        let newly =
            archiving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(account.to_string());
        newly.then(|| ArchiveTurn { account: account.to_string(), archiving })
    }

    /// Where this node writes archive segments, if it may archive.
    pub fn archive_dir(&self) -> Option<&Path> {
        self.inner.archive_dir.as_deref()
    }

    /// Says that a command was started that proceeds in steps (`steps::run` carries it on).
    pub fn wake_steps(&self) {
        self.inner.steps.notify_one();
    }

    /// Resolves once `wake_steps` was called since the last time it resolved.
    pub async fn steps_wanted(&self) {
        self.inner.steps.notified().await;
    }

    /// Tells the feed's followers that the server is stopping.
    pub fn close_feeds(&self) {
        self.inner.feed.send_modify(|head| head.closed = true);
    }

    /// True while the writer thread accepts commands.
    pub fn is_writable(&self) -> bool {
        !self.inner.sender.is_closed()
    }

    /// False while the writer has lost its database connection (PostgreSQL: a failover, a
    /// restart); each call then asks the writer to try again (within its backoff), so that a
    /// node polled by its load balancer reconnects even when no write comes.
    pub fn writer_connected(&self) -> bool {
        let online = self.inner.writer_online.load(Ordering::Acquire);
        if !online {
            self.ask_writer_to_try();
        }
        online
    }

    /// True while writes are refused for a full disk; each call then asks the writer to try
    /// whether space has returned (coalesced as `writer_connected`'s).
    pub fn disk_full(&self) -> bool {
        let full = self.inner.disk_full.load(Ordering::Acquire);
        if full {
            self.ask_writer_to_try();
        }
        full
    }

    /// Sends the writer one `Reload` (it reconnects, or probes for space), unless one is pending;
    /// a full channel leaves none pending, so that the next call asks again.
    fn ask_writer_to_try(&self) {
        if !self.inner.reconnect_asked.swap(true, Ordering::AcqRel)
            && self.inner.sender.try_send(writer::Message::Reload).is_err()
        {
            self.inner.reconnect_asked.store(false, Ordering::Release);
        }
    }

    /// Lets the writer finish everything queued, checkpoints the WAL, stops the thread and
    /// releases the data directory.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.sender.send(writer::Message::Stop { ack }).await.is_ok() {
            let _ = done.await;
        }
        let thread = self.inner.writer_thread.lock().expect("writer thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // The writer is gone: the data directory is free for the next process, even while a
        // connection task that is still ending holds a handle on this store (its reads only).
        drop(self.inner.lock.lock().expect("data dir lock").take());
    }
}
