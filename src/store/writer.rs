//! The single writer: owns the only write connection and commits commands in groups.
//!
//! It takes everything pending (up to `max_batch`) into one `BEGIN IMMEDIATE` transaction,
//! decides each command under its own savepoint (a refused command leaves its neighbours
//! untouched), appends its events, applies the projections, commits once, and only then
//! replies. One fsync thus covers the whole group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::store::db::{self, Connection, Dialect};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};

use super::admission::WriteLimits;
use super::chain::{self, Hash};
use super::fair::FairQueue;
use super::idempotency;
use super::log::{self, RecordedEvent};
use super::{FeedHead, KeyRing, Outcome, StoreError, WriteError, WriteRequest};
use crate::clock::Clock;
use crate::commands::{At, Decision, decide};
use crate::domain::context::StepBound;
use crate::domain::{Command, NewEvent, StreamVersion, context};
use crate::metrics::Metrics;
use crate::projections;
use crate::projections::tables::{PendingCounts, SqlTables};

/// Tuning of the write path.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// `synchronous=FULL` (durable on power loss) rather than `NORMAL`.
    pub synchronous_full: bool,
    /// SQLite's quick check of the file before the store is served (`--integrity-check`).
    pub integrity_check: bool,
    /// Most commands committed in one transaction.
    pub max_batch: usize,
    /// Commands that may wait for the writer before handlers are made to wait.
    pub queue_capacity: usize,
    /// Commands of one account that may wait for the writer at once (`store::admission`).
    pub pending_per_account: usize,
    /// `writes_per_second` of an account without a limit of its own; `None`: unlimited.
    pub default_writes_per_second: Option<u32>,
    /// The most one step of a long command (a namespace delete, a customer erasure) takes.
    pub step: StepBound,
    /// Read connections the store may have open at once (on PostgreSQL, this node's share of
    /// the server's `max_connections`); a read past it waits up to 5 s, then answers 503.
    pub read_connections: usize,
    /// Where archive segments are written (`--archive-dir`); `None`: `<data dir>/archive` on
    /// SQLite, and no archives on PostgreSQL.
    pub archive_dir: Option<std::path::PathBuf>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            synchronous_full: true,
            integrity_check: true,
            max_batch: 1024,
            queue_capacity: 8192,
            pending_per_account: 1024,
            default_writes_per_second: None,
            step: context::STEP,
            read_connections: 64,
            archive_dir: None,
        }
    }
}

/// What the writer keeps up to date for the rest of the store.
pub(super) struct Shared {
    pub keys: Arc<KeyRing>,
    pub limits: Arc<WriteLimits>,
    pub feed: Arc<watch::Sender<FeedHead>>,
    /// PostgreSQL's URL, to connect again when the connection is lost.
    pub database_url: Option<String>,
    /// This node's name in the notifications it sends (`store::notify`).
    pub node: String,
    /// False while the writer's connection is lost (PostgreSQL): `/readyz` answers 503 then.
    pub online: Arc<AtomicBool>,
    /// Set by `/readyz` when it asked for a reconnection; cleared when the writer tried.
    pub reconnect_asked: Arc<AtomicBool>,
    /// True from a group refused for a full disk until a write succeeds again: `/readyz`
    /// answers 503 then, and asks the writer to try (`Writer::probe_space`).
    pub disk_full: Arc<AtomicBool>,
    /// SQLite's data directory, where the writer tries whether space has returned.
    pub data_dir: Option<std::path::PathBuf>,
}

pub(super) enum Message {
    /// `place`: the command's place among its account's pending writes (`store::admission`),
    /// held until the writer has answered, even if the client has gone.
    Write {
        request: Box<WriteRequest>,
        reply: oneshot::Sender<Result<Outcome, WriteError>>,
        place: Option<OwnedSemaphorePermit>,
    },
    Stop {
        ack: oneshot::Sender<()>,
    },
    /// Another node changed keys or limits (or changes may have been missed): read them again.
    /// Done here, in order with this node's own reloads, so that an older read never replaces
    /// a newer one.
    Reload,
}

/// A command, where to answer it, and its place among its account's pending writes.
type Pending = (Box<WriteRequest>, Reply);

/// Where a command's answer goes; its place is given back once the answer is sent.
pub(super) struct Reply {
    pub sender: oneshot::Sender<Result<Outcome, WriteError>>,
    /// Held, not read: dropped with the reply.
    pub _place: Option<OwnedSemaphorePermit>,
}

/// Puts a command in its account's line (the sweeper's commands share one of their own).
fn queue(waiting: &mut FairQueue<Pending>, request: Box<WriteRequest>, reply: Reply) {
    waiting.push((request, reply), |(request, _)| request.command.account().unwrap_or(""));
}

pub(super) fn spawn(
    conn: Connection,
    receiver: mpsc::Receiver<Message>,
    config: WriterConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shared: Shared,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let cursor = Cursor::of(&conn)?;
    let reconnect = Reconnect { url: shared.database_url.clone(), attempts: 0, next: Instant::now() };
    let mut writer =
        Writer { cursor, conn, config, clock, metrics, shared, reconnect, disk_full_said: false };
    let thread =
        std::thread::Builder::new().name("ctxd-writer".into()).spawn(move || writer.run(receiver))?;
    Ok(thread)
}

/// Where the next events go: the store-wide id, and each account's next position and the hash
/// its next event chains to, loaded on an account's first write and kept from then on.
#[derive(Debug, Clone, Default)]
struct Cursor {
    next_id: u64,
    /// Shared keys: noting what a command changed clones a pointer, not the account's name.
    accounts: HashMap<Arc<str>, AccountHead>,
    /// What the current command changed, to rewind it if the command is refused.
    undo: Vec<(Arc<str>, Option<AccountHead>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct AccountHead {
    next_seq: u64,
    previous: Hash,
}

impl Cursor {
    /// The end of the log as the database holds it; accounts' heads are read when first needed.
    fn of(conn: &Connection) -> Result<Cursor, StoreError> {
        Ok(Cursor { next_id: log::last_id(conn)? + 1, ..Cursor::default() })
    }

    /// The next id, `account`'s next position and the hash its next event chains to.
    fn next(&mut self, conn: &Connection, account: &str) -> Result<(u64, u64, Hash), StoreError> {
        if !self.accounts.contains_key(account) {
            let (next_seq, previous) = match conn.dialect() {
                Dialect::Sqlite => {
                    chain::head(conn, account)?.map_or((1, chain::GENESIS), |head| (head.seq + 1, head.hash))
                }
                Dialect::Postgres => lock_head(conn, account)?,
            };
            let key: Arc<str> = account.into();
            self.undo.push((key.clone(), None));
            self.accounts.insert(key, AccountHead { next_seq, previous });
        }
        let head = self.accounts[account];
        Ok((self.next_id, head.next_seq, head.previous))
    }

    /// Takes the head rows of `accounts` (PostgreSQL), in sorted order so that two nodes never
    /// wait for each other's rows: the group's commands then decide and append on them alone.
    fn lock(&mut self, conn: &Connection, accounts: &mut Vec<&str>) -> Result<(), GroupError> {
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts.iter() {
            if !self.accounts.contains_key(*account) {
                let (next_seq, previous) = lock_head(conn, account).map_err(|error| match error {
                    StoreError::Database(error) if error.is_lock_timeout() => {
                        GroupError::Locked(account.to_string(), error.into())
                    }
                    error => GroupError::Store(error),
                })?;
                self.accounts.insert((*account).into(), AccountHead { next_seq, previous });
            }
        }
        Ok(())
    }

    /// Writes the heads this transaction moved back to their rows (PostgreSQL).
    fn store_heads(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut statement =
            conn.prepare_cached("UPDATE account_heads SET last_seq = ?2, hash = ?3 WHERE account = ?1")?;
        for (account, head) in &self.accounts {
            statement.execute_later((&**account, head.next_seq - 1, head.previous))?;
        }
        Ok(())
    }

    /// Moves past the event `next` answered for `account`, whose row got `hash`.
    fn advance(&mut self, account: &str, hash: Hash) {
        let (key, head) = self.accounts.get_key_value(account).expect("`next` loaded the account's head");
        if !self.undo.iter().any(|(touched, _)| touched == key) {
            self.undo.push((key.clone(), Some(*head)));
        }
        let head = self.accounts.get_mut(account).expect("just read");
        *head = AccountHead { next_seq: head.next_seq + 1, previous: hash };
        self.next_id += 1;
    }

    /// Starts a command: what it changes from here can be rewound.
    fn begin(&mut self) -> u64 {
        self.undo.clear();
        self.next_id
    }

    /// Rewinds what the command begun at `next_id` changed.
    fn rewind(&mut self, next_id: u64) {
        self.next_id = next_id;
        for (account, head) in self.undo.drain(..).rev() {
            match head {
                Some(head) => self.accounts.insert(account, head),
                None => self.accounts.remove(&*account),
            };
        }
    }
}

/// The writer's PostgreSQL session: writes deferred, and bounds on what another node's stuck
/// transaction can do to it: a head row held for more than 5 s refuses that account's commands
/// (503) rather than stall every account's, and a transaction of this node left idle for a
/// minute (a node that hangs mid-group) is ended by the server, which releases its rows.
fn writer_session(conn: Connection) -> Connection {
    conn.set_deferred(true);
    let settings = format!(
        "SET lock_timeout = '5s'; SET idle_in_transaction_session_timeout = '60s'; SET application_name = '{}'",
        session_name(super::process_id())
    );
    if let Err(error) = conn.execute_batch(&settings) {
        tracing::warn!(%error, "the writer's session settings were not applied");
    }
    conn
}

/// The name of a process's writer session on PostgreSQL: it shows operators the writer among a
/// node's connections, and other nodes that the process is alive (an archive it stages).
pub(crate) fn session_name(process: &str) -> String {
    format!("ctxd writer {process}")
}

/// PostgreSQL keeps an updated row's old version until VACUUM: vacuum what an erasure rewrites,
/// so that the erased values leave the tables' pages now (docs/AUDIT.md says what remains). On
/// a connection and a thread of its own: a VACUUM of a large log must not hold up the writer.
fn vacuum_after_erasure(url: &str) {
    let url = url.to_string();
    let vacuum = move || {
        let tables = "events, properties, session_sizes, session_ttls, services, customers, \
                      customer_attributes, customer_erasures, analytics_abandoned, snapshot_streams, \
                      snapshot_customer_services";
        let done = crate::store::db::PgConnection::connect(&url)
            .and_then(|conn| Connection::Postgres(conn).execute_batch(&format!("VACUUM {tables}")));
        if let Err(error) = done {
            tracing::warn!(%error, "VACUUM after an erasure failed");
        }
    };
    if let Err(error) = std::thread::Builder::new().name("ctxd-vacuum".into()).spawn(vacuum) {
        tracing::warn!(%error, "VACUUM after an erasure could not start");
    }
}

/// Takes `account`'s head row until the transaction ends (creating it for a new account):
/// answers its next position and the hash its next event chains to.
fn lock_head(conn: &Connection, account: &str) -> Result<(u64, Hash), StoreError> {
    let (last_seq, hash): (u64, Hash) = conn.query_row(
        "INSERT INTO account_heads AS head (account, last_seq, hash) VALUES (?1, 0, ?2)
         ON CONFLICT (account) DO UPDATE SET account = head.account
         RETURNING last_seq, hash",
        (account, chain::GENESIS),
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok((last_seq + 1, hash))
}

/// How the writer gets a new connection to PostgreSQL once it lost its own: tried before a
/// group, at most once per backoff (doubling from 100 ms to 2 s); meanwhile commands are
/// answered at once that the database cannot be reached.
struct Reconnect {
    url: Option<String>,
    attempts: u32,
    next: Instant,
}

struct Writer {
    reconnect: Reconnect,
    conn: Connection,
    cursor: Cursor,
    config: WriterConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shared: Shared,
    /// The current full-disk episode was logged (`note_disk_full`).
    disk_full_said: bool,
}

impl Writer {
    fn run(&mut self, mut receiver: mpsc::Receiver<Message>) {
        // PostgreSQL: a connection that this thread drives itself (`PgConnection::connect_here`);
        // the one that migrated was opened where a runtime ran.
        if let Some(url) = &self.reconnect.url {
            match crate::store::db::PgConnection::connect_here(url) {
                Ok(conn) => {
                    self.conn = writer_session(Connection::Postgres(conn));
                }
                Err(error) => tracing::warn!(%error, "the writer keeps the connection it was opened with"),
            }
        }
        let mut waiting: FairQueue<Pending> = FairQueue::default();
        let mut batch: Vec<Pending> = Vec::with_capacity(self.config.max_batch);
        let mut stop = None;
        loop {
            if waiting.is_empty() && stop.is_none() {
                match receiver.blocking_recv() {
                    Some(Message::Write { request, reply, place }) => {
                        queue(&mut waiting, request, Reply { sender: reply, _place: place })
                    }
                    Some(Message::Stop { ack }) => stop = Some(ack),
                    Some(Message::Reload) => {
                        self.reload_keys();
                        self.probe_space();
                    }
                    None => break,
                }
            }
            // Take in what else is waiting, up to the queue's capacity: past it, handlers wait
            // on the channel (and each account's own pending limit keeps one account from
            // filling it, `Store::submit`).
            while stop.is_none() && waiting.len() < self.config.queue_capacity {
                match receiver.try_recv() {
                    Ok(Message::Write { request, reply, place }) => {
                        queue(&mut waiting, request, Reply { sender: reply, _place: place })
                    }
                    Ok(Message::Stop { ack }) => stop = Some(ack),
                    Ok(Message::Reload) => {
                        self.reload_keys();
                        self.probe_space();
                    }
                    Err(_) => break,
                }
            }
            waiting.take(self.config.max_batch, &mut batch);
            if !batch.is_empty() {
                self.commit_group(&mut batch);
                self.shared.online.store(!self.conn.is_broken(), Ordering::Release);
            }
            if stop.is_some() && waiting.is_empty() {
                break;
            }
        }
        receiver.close();
        while let Ok(message) = receiver.try_recv() {
            if let Message::Write { reply, .. } = message {
                let _ = reply.send(Err(WriteError::Unavailable));
            }
        }
        if self.conn.dialect() == Dialect::Sqlite
            && let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        {
            tracing::warn!(%error, "WAL checkpoint at shutdown failed");
        }
        tracing::info!("writer stopped");
        if let Some(ack) = stop {
            let _ = ack.send(());
        }
    }

    /// A connection that answers, reconnecting if its own was lost (PostgreSQL): false while
    /// the database cannot be reached.
    fn connected(&mut self) -> bool {
        let connected = self.reconnected();
        self.shared.online.store(connected, Ordering::Release);
        self.shared.reconnect_asked.store(false, Ordering::Release);
        connected
    }

    fn reconnected(&mut self) -> bool {
        if !self.conn.is_broken() {
            return true;
        }
        let Some(url) = &self.reconnect.url else { return false };
        if Instant::now() < self.reconnect.next {
            return false;
        }
        let connected = crate::store::db::PgConnection::connect_here(url).map(Connection::Postgres);
        match connected.map_err(StoreError::from).and_then(|conn| Ok((Cursor::of(&conn)?, conn))) {
            Ok((cursor, conn)) => {
                let conn = writer_session(conn);
                tracing::info!(
                    attempts = self.reconnect.attempts + 1,
                    "the writer reconnected to PostgreSQL"
                );
                // The counter the feed's followers compare goes on from where it was.
                self.cursor =
                    Cursor { next_id: self.cursor.next_id.max(cursor.next_id), ..Cursor::default() };
                self.conn = conn;
                self.reconnect.attempts = 0;
                true
            }
            Err(error) => {
                let backoff = std::time::Duration::from_millis(100 << self.reconnect.attempts.min(4))
                    .min(std::time::Duration::from_secs(2));
                tracing::warn!(%error, ?backoff, "the writer cannot reach PostgreSQL");
                self.reconnect.attempts += 1;
                self.reconnect.next = Instant::now() + backoff;
                false
            }
        }
    }

    /// A group met a full disk: said once per episode, however many writes meet it (an episode
    /// ends with a group that appends, not with a probe, so that a probe that succeeds while
    /// the next group still fails is not said again).
    fn note_disk_full(&mut self, error: &GroupError) {
        self.shared.disk_full.store(true, Ordering::Release);
        if !std::mem::replace(&mut self.disk_full_said, true) {
            let store = self.shared.data_dir.as_ref().map_or("PostgreSQL's data directory".into(), |dir| {
                super::database_path(dir).display().to_string()
            });
            tracing::error!(
                %error,
                store,
                "the disk is full: writes are refused with 507 until space is freed, then resume by themselves"
            );
        }
    }

    /// A group appended: if the disk was full, it is no longer.
    fn space_returned(&mut self) {
        self.shared.disk_full.store(false, Ordering::Release);
        if std::mem::replace(&mut self.disk_full_said, false) {
            tracing::info!("space has returned: writes resume");
        }
    }

    /// While the disk is full, tries whether a write would succeed again, so that `/readyz`
    /// turns ready without a client's write: SQLite, a 1 MiB file written, synced and removed in
    /// the data directory; PostgreSQL, a one-row update committed.
    fn probe_space(&mut self) {
        if !self.shared.disk_full.load(Ordering::Acquire) {
            return;
        }
        let probed = match &self.shared.data_dir {
            Some(dir) => probe_file(dir).map_err(|error| error.to_string()),
            None => self
                .conn
                .execute("UPDATE schema_version SET applied_at = applied_at WHERE version = 1", [])
                .map(drop)
                .map_err(|error| error.to_string()),
        };
        match probed {
            // Ready again; the episode ends with the next group that appends.
            Ok(()) => self.shared.disk_full.store(false, Ordering::Release),
            Err(error) => tracing::debug!(%error, "the disk is still full"),
        }
    }

    /// Reads the active API keys and the accounts' write limits again.
    fn reload_keys(&mut self) {
        if !self.connected() {
            // Said once per episode by the reconnection's own warnings.
            tracing::debug!("reloading API keys: the database cannot be reached");
            return;
        }
        match projections::accounts::active_keys(&self.conn) {
            Ok(active) => *self.shared.keys.write().expect("key ring lock") = active,
            Err(error) => tracing::error!(%error, "reloading API keys failed"),
        }
        match projections::accounts::write_limits(&self.conn) {
            Ok(limits) => *self.shared.limits.write().expect("write limits lock") = limits,
            Err(error) => tracing::error!(%error, "reloading accounts' write limits failed"),
        }
    }

    /// Commits one group and replies to every command in it.
    fn commit_group(&mut self, batch: &mut Vec<Pending>) {
        if !self.connected() {
            for (_, reply) in batch.drain(..) {
                let _ = reply.sender.send(Err(WriteError::DatabaseUnreachable));
            }
            return;
        }
        let started = Instant::now();
        let first = self.cursor.next_id;
        let mut accounts = Vec::new();
        let mut again = 0;
        let (results, touched_accounts) = loop {
            accounts.clear();
            let attempt = self.try_commit_group(batch, &mut accounts);
            if let Err(error) = &attempt
                && error.lost_connection()
            {
                // Known from the error before the socket tells: the branches below see it.
                self.conn.abandon();
            }
            match attempt {
                Ok(done) => break done,
                Err(error) if error.disk_full() => {
                    // Every command of the group is refused: each would meet the same disk.
                    self.note_disk_full(&error);
                    self.cursor =
                        Cursor::of(&self.conn).unwrap_or(Cursor { next_id: first, ..Cursor::default() });
                    break (batch.iter().map(|_| Err(WriteError::DiskFull)).collect(), false);
                }
                Err(GroupError::NotStarted(error)) => {
                    // An idle connection the server closed is found here: connect again and run
                    // the group once more (nothing of it was sent).
                    if self.conn.is_broken() && again == 0 && self.connected() {
                        again += 1;
                        continue;
                    }
                    tracing::error!(%error, "a group's transaction did not begin");
                    break (batch.iter().map(|_| Err(WriteError::CommitFailed)).collect(), false);
                }
                Err(GroupError::Locked(account, error)) => {
                    // One account's writes wait for another node; the others' do not.
                    tracing::warn!(%error, "an account's head row stayed locked; its commands are refused with 503");
                    self.cursor = Cursor { next_id: first, ..Cursor::default() };
                    let (held, rest): (Vec<Pending>, Vec<Pending>) = batch
                        .drain(..)
                        .partition(|(request, _)| request.command.account() == Some(account.as_str()));
                    *batch = rest;
                    for (_, reply) in held {
                        let _ = reply.sender.send(Err(WriteError::AccountBusy));
                    }
                    if batch.is_empty() {
                        break (Vec::new(), false);
                    }
                }
                Err(GroupError::Command(_, error) | GroupError::Store(error)) if self.conn.is_broken() => {
                    // Whether the commit happened is unknown: a retry with the same
                    // Idempotency-Key answers the first outcome if it did.
                    tracing::error!(%error, "the connection to PostgreSQL was lost during a group");
                    self.cursor = Cursor { next_id: first, ..Cursor::default() };
                    break (batch.iter().map(|_| Err(WriteError::DatabaseUnreachable)).collect(), false);
                }
                Err(
                    GroupError::Command(_, StoreError::Database(error))
                    | GroupError::Store(StoreError::Database(error)),
                ) if error.is_conflict() && again < 3 => {
                    // A deadlock with another node, or a serialization failure: no command of
                    // the group is at fault; it runs again.
                    tracing::warn!(%error, "the group met another node's transaction; it runs again");
                    again += 1;
                    self.cursor = Cursor { next_id: first, ..Cursor::default() };
                }
                Err(GroupError::Command(_, StoreError::Database(db::Error::Deferred(error))))
                | Err(GroupError::Store(StoreError::Database(db::Error::Deferred(error)))) => {
                    // A write sent ahead failed; which command made it is found by running
                    // the group again with each statement waited for.
                    let error = db::Error::Deferred(error);
                    tracing::warn!(%error, "a deferred write failed; the group runs again statement by statement");
                    self.conn.set_deferred(false);
                    self.cursor = Cursor { next_id: first, ..Cursor::default() };
                }
                Err(GroupError::Command(index, error)) => {
                    tracing::error!(%error, "a command failed on the database; its group runs again without it");
                    self.cursor = Cursor { next_id: first, ..Cursor::default() };
                    let (_, reply) = batch.remove(index);
                    let answer = match error {
                        StoreError::Database(error) if error.is_lock_timeout() => WriteError::AccountBusy,
                        error => WriteError::Store(error),
                    };
                    let _ = reply.sender.send(Err(answer));
                }
                Err(GroupError::Store(error)) => {
                    tracing::error!(%error, "group commit failed; every command in it is refused");
                    // Ask the database rather than assume the failed commit left nothing behind.
                    self.cursor =
                        Cursor::of(&self.conn).unwrap_or(Cursor { next_id: first, ..Cursor::default() });
                    break (batch.iter().map(|_| Err(WriteError::CommitFailed)).collect(), false);
                }
            }
        };
        if self.conn.dialect() == Dialect::Postgres {
            // Other nodes may append to these accounts before this one's next group.
            self.cursor.accounts.clear();
            self.conn.set_deferred(true);
        }
        let appended = self.cursor.next_id.saturating_sub(first);
        if appended > 0 {
            self.space_returned();
        }
        self.metrics.record_commit(batch.len(), appended, started.elapsed(), self.cursor.next_id - 1);
        let erased = results
            .iter()
            .zip(batch.iter())
            .any(|(result, (request, _))| result.is_ok() && matches!(request.command, Command::Erase { .. }));
        if let (true, Some(url)) = (erased, &self.reconnect.url) {
            vacuum_after_erasure(url);
        } else if erased {
            // The WAL still holds the pages as they were before the redaction: copy the new ones
            // back and empty it, so the erased values leave the files now, not at some later
            // checkpoint. A reader holding an older snapshot can keep it from finishing.
            match self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<i64>(0)) {
                Ok(0) => {}
                Ok(_) => tracing::warn!(
                    "checkpoint after an erasure was blocked by a reader; the WAL empties later"
                ),
                Err(error) => tracing::warn!(%error, "checkpoint after an erasure failed"),
            }
        }
        if touched_accounts {
            self.reload_keys();
        }
        if appended > 0 {
            // Never blocks: followers read the new events from the log, at their own pace.
            super::notify::advance_feed(&self.shared.feed, appended, Some(accounts.into()));
        }
        for ((_, reply), result) in batch.drain(..).zip(results) {
            let _ = reply.sender.send(result);
        }
    }

    /// Commits the group; `accounts` collects the accounts whose events it appended.
    fn try_commit_group(
        &mut self,
        batch: &[Pending],
        accounts: &mut Vec<String>,
    ) -> Result<(Vec<Result<Outcome, WriteError>>, bool), GroupError> {
        let now = self.clock.now();
        let postgres = self.conn.dialect() == Dialect::Postgres;
        let tx = self.conn.write_transaction().map_err(|error| GroupError::NotStarted(error.into()))?;
        if postgres {
            // The accounts the sweeper's commands will write, found now and locked with the
            // others in sorted order: their decisions then read under the locks.
            let mut swept = Vec::new();
            for (request, _) in batch.iter().filter(|(request, _)| request.command.account().is_none()) {
                swept.extend(crate::commands::accounts_written(&tx, &request.command, now)?);
            }
            let mut locked: Vec<&str> =
                batch.iter().filter_map(|(request, _)| request.command.account()).collect();
            locked.extend(swept.iter().map(String::as_str));
            self.cursor.lock(&tx, &mut locked)?;
        }
        // PostgreSQL: the session commands' reads, in one round trip, under the accounts' rows.
        let mut prefetched = match postgres {
            true => crate::commands::prefetch(&tx, batch.iter().map(|(request, _)| &request.command), now)?,
            false => Vec::new(),
        };
        let mut written = std::collections::HashSet::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut touched_keys = false;
        // The counter deltas of the commands that succeeded, written once per row before the commit.
        let mut counts = PendingCounts::default();
        for (index, (request, _)) in batch.iter().enumerate() {
            let (before, accounts_before) = (self.cursor.begin(), accounts.len());
            // SQLite: a savepoint per command, cached so that it costs no statement preparation.
            // PostgreSQL: none (more than 64 subtransactions slow every snapshot of the server);
            // a command is refused before it writes, and one that fails on the database fails
            // the transaction: the group is run again without it (`commit_group`).
            if !postgres {
                tx.prepare_cached("SAVEPOINT command")?.execute([])?;
            }
            let at = At { now, step: self.config.step };
            let known = prefetched
                .get_mut(index)
                .and_then(Option::take)
                .filter(|_| crate::commands::still_holds(&request.command, &written));
            let streams = postgres.then_some(&mut written);
            let result = match execute(&tx, request, at, &mut self.cursor, accounts, known, streams) {
                Ok((outcome, command_counts)) => {
                    counts.merge(command_counts);
                    Ok(outcome)
                }
                Err(WriteError::Store(error)) if postgres => {
                    return Err(GroupError::Command(index, error));
                }
                // A full disk fails the group whole (SQLite may have rolled it back already).
                Err(WriteError::Store(StoreError::Database(error))) if error.is_disk_full() => {
                    return Err(GroupError::Command(index, StoreError::Database(error)));
                }
                Err(error) => {
                    if !postgres {
                        tx.prepare_cached("ROLLBACK TO command")?.execute([])?;
                    }
                    self.cursor.rewind(before);
                    accounts.truncate(accounts_before);
                    Err(error)
                }
            };
            if !postgres {
                tx.prepare_cached("RELEASE command")?.execute([])?;
            }
            touched_keys |= result.is_ok() && matches!(request.command, Command::Account(_));
            results.push(result);
        }
        counts.write(&tx)?;
        if postgres {
            self.cursor.store_heads(&tx)?;
            // Delivered to the other nodes when (and only if) the transaction commits.
            super::notify::send(&tx, &self.shared.node, accounts, touched_keys)?;
        }
        tx.commit()?;
        Ok((results, touched_keys))
    }
}

/// Why a group did not commit: the database failed it, or one of its commands did (PostgreSQL,
/// where the group then runs again without that command).
#[derive(Debug, thiserror::Error)]
enum GroupError {
    /// Another transaction held this account's head row past `lock_timeout` (a node that hangs
    /// inside a transaction): the group runs again without the account's commands.
    #[error("account {0}'s head row is held by another transaction: {1}")]
    Locked(String, StoreError),
    /// The transaction could not begin: nothing was sent.
    #[error("the group's transaction did not begin: {0}")]
    NotStarted(StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("command {0} of the group: {1}")]
    Command(usize, StoreError),
}

/// Writes, syncs and removes a 1 MiB file in `dir`: room for a group's WAL frames.
fn probe_file(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".space-probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&[0; 1 << 20])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

impl GroupError {
    /// The database's own error behind this one, if any.
    fn database_error(&self) -> Option<&db::Error> {
        match self {
            GroupError::Locked(_, StoreError::Database(error))
            | GroupError::NotStarted(StoreError::Database(error))
            | GroupError::Store(StoreError::Database(error))
            | GroupError::Command(_, StoreError::Database(error)) => Some(error),
            _ => None,
        }
    }

    /// The database's disk is full (`db::Error::is_disk_full`).
    fn disk_full(&self) -> bool {
        self.database_error().is_some_and(db::Error::is_disk_full)
    }

    /// The server ended the connection (`db::Error::is_connection_lost`).
    fn lost_connection(&self) -> bool {
        self.database_error().is_some_and(db::Error::is_connection_lost)
    }
}

impl From<crate::store::db::Error> for GroupError {
    fn from(error: crate::store::db::Error) -> Self {
        GroupError::Store(error.into())
    }
}

/// Decides and appends one command inside the current savepoint; answers its outcome and the
/// counter deltas its events made, which the caller writes with those of the whole group.
fn execute(
    conn: &Connection,
    request: &WriteRequest,
    at: At,
    cursor: &mut Cursor,
    accounts: &mut Vec<String>,
    known: Option<crate::projections::context::Prefetched>,
    mut written: Option<&mut std::collections::HashSet<String>>,
) -> Result<(Outcome, PendingCounts), WriteError> {
    let now = at.now;
    if let Command::PruneIdempotencyKeys { retention_seconds } = request.command {
        idempotency::prune(conn, now, retention_seconds)?;
        return Ok((Outcome::default(), PendingCounts::default()));
    }
    if let Command::RecordKeyUse { uses } = &request.command {
        projections::accounts::record_key_use(conn, uses)?;
        return Ok((Outcome::default(), PendingCounts::default()));
    }
    if let Some(key) = &request.idempotency
        && let Some(first) = idempotency::first_outcome(conn, key)?
    {
        return Ok((first, PendingCounts::default()));
    }
    let Decision { events, primary, created, service } = decide(conn, &request.command, at, known)?;
    let mut tables = match service {
        Some((account, doc)) => SqlTables::with_service(conn, &account, doc),
        None => SqlTables::new(conn),
    };
    let meta = serde_json::to_string(&request.meta).expect("meta serializes");
    let accepted = events.iter().any(|new| new.event.starts_steps());
    let mut outcome = Outcome { appended: events.len(), created, accepted, ..Outcome::default() };
    // Stream versions this command has seen, so each stream's index is read at most once: the
    // stream it addresses, and a map of the others (a namespace delete appends to hundreds of
    // thousands of streams; most commands to none but their own).
    let mut primary = primary;
    let mut others: HashMap<String, StreamVersion> = HashMap::new();
    for NewEvent { account, event } in events {
        if accounts.last() != Some(&account) && !accounts.contains(&account) {
            accounts.push(account.clone());
        }
        let stream = event.stream(&account);
        // The account's head first: on PostgreSQL it is the lock under which the stream's
        // version is read.
        let (id, seq, previous) = cursor.next(conn, &account)?;
        let known = match &mut primary {
            Some((addressed, version)) if *addressed == stream => Some(version),
            _ => others.get_mut(&stream),
        };
        let stream_version = match known {
            Some(version) => {
                *version += 1;
                *version
            }
            None => {
                let version = log::stream_version(conn, &stream)? + 1;
                others.insert(stream.clone(), version);
                version
            }
        };
        let recorded = RecordedEvent {
            id,
            seq,
            stream_version,
            account,
            stream,
            event,
            meta: meta.clone(),
            recorded_at: now,
        };
        cursor.advance(&recorded.account, log::append(conn, &recorded, &previous)?);
        if let Some(written) = written.as_deref_mut() {
            written.insert(recorded.stream.clone());
        }
        projections::apply(&mut tables, &recorded)?;
        outcome.last_seq = Some(recorded.seq);
    }
    let counts = tables.finish()?;
    if let Some((_, version)) = primary {
        outcome.version = version;
    }
    if let Some(key) = &request.idempotency {
        idempotency::record(conn, key, &outcome, now)?;
    }
    Ok((outcome, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_command_rewinds_the_ids_and_every_account_head_it_moved() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let mut cursor = Cursor::of(&conn).unwrap();
        let before = cursor.begin();
        assert_eq!(cursor.next(&conn, "a").unwrap(), (1, 1, chain::GENESIS));
        cursor.advance("a", [1; 32]);
        let kept = cursor.accounts.clone();

        // A command that appended to `a` and to a first-seen `b`, then was refused.
        let command = cursor.begin();
        assert_eq!(command, before + 1);
        assert_eq!(cursor.next(&conn, "a").unwrap(), (2, 2, [1; 32]));
        cursor.advance("a", [2; 32]);
        assert_eq!(cursor.next(&conn, "b").unwrap(), (3, 1, chain::GENESIS));
        cursor.advance("b", [3; 32]);
        cursor.advance("a", [4; 32]);
        cursor.rewind(command);
        assert_eq!((cursor.next_id, &cursor.accounts), (2, &kept));
        assert_eq!(cursor.next(&conn, "a").unwrap(), (2, 2, [1; 32]));
    }
}
