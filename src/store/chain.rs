//! The hash chains that make the log tamper-evident (docs/AUDIT.md): one per account.
//!
//! Every event stores `payload_salt`, 16 random bytes, `payload_hash`, the sha256 of the salt
//! and its `data`, and `hash`, the sha256 of the hash of the account's previous event and of
//! its own columns, with the payload counted by `payload_hash`. Changing any stored column
//! breaks the event's own link or, for `hash`, the next one. An erasure replaces a payload and
//! removes its salt but keeps `payload_hash`, so the chain still links, and neither that hash
//! nor the link can confirm a guess of the erased payload: the guess would need the salt. The
//! erasure event records the sha256 of each redacted payload, and that event is itself in the
//! chain. The store-wide `id` is not hashed: an account's chain is the same in any store it is
//! moved to.

use std::collections::HashMap;

use crate::store::db::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::domain::Event;

pub type Hash = [u8; 32];

/// The `hash` before an account's first event.
pub const GENESIS: Hash = [0; 32];

/// The columns of one event row as stored, apart from its payload and hashes.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// The event's position in its account's log.
    pub seq: u64,
    pub account: &'a str,
    pub stream: &'a str,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub event_version: u32,
    pub meta: &'a str,
    pub recorded_at: &'a str,
}

/// The random bytes hashed before a payload.
pub type Salt = [u8; 16];

/// sha256 of a payload without salt: the redacted form an erasure records, and `payload_hash`
/// as stores before migration 0014 wrote it.
pub fn payload_hash(data: &str) -> Hash {
    Sha256::digest(data.as_bytes()).into()
}

/// sha256 of `salt` and a payload, as stored in `payload_hash`.
pub fn salted_payload_hash(salt: &[u8], data: &str) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(data.as_bytes());
    hasher.finalize().into()
}

/// The payload hash of a stored row: salted when the row has a salt (every payload not
/// erased), else of the text alone.
pub fn stored_payload_hash(salt: Option<&[u8]>, data: &str) -> Hash {
    salt.map_or_else(|| payload_hash(data), |salt| salted_payload_hash(salt, data))
}

/// A new salt from the OS's random source, drawn 4 KiB at a time so that an event costs no
/// system call of its own.
pub fn new_salt() -> Salt {
    use std::cell::RefCell;
    thread_local! {
        static POOL: RefCell<(Box<[u8; 4096]>, usize)> = RefCell::new((Box::new([0; 4096]), 4096));
    }
    POOL.with_borrow_mut(|(pool, used)| {
        if *used + 16 > pool.len() {
            getrandom::fill(&mut pool[..]).expect("the OS random source is available");
            *used = 0;
        }
        let salt: Salt = pool[*used..*used + 16].try_into().expect("16 bytes");
        // Each salt is used once.
        pool[*used..*used + 16].fill(0);
        *used += 16;
        salt
    })
}

/// The `hash` of an event: its predecessor's hash, then each column, texts length-prefixed so
/// that no two rows hash the same input.
pub fn link(previous: &Hash, columns: &Columns<'_>, payload_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(columns.seq.to_le_bytes());
    for text in [columns.account, columns.stream] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(columns.stream_version.to_le_bytes());
    hasher.update((columns.event_type.len() as u64).to_le_bytes());
    hasher.update(columns.event_type.as_bytes());
    hasher.update(columns.event_version.to_le_bytes());
    hasher.update(payload_hash);
    for text in [columns.meta, columns.recorded_at] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

/// The last event of an account's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
    pub recorded_at: String,
}

/// The head of `account`'s log; `None` for an account without events.
pub fn head(conn: &Connection, account: &str) -> Result<Option<Head>, StoreError> {
    let stored: Option<(u64, Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT seq, hash, recorded_at FROM events WHERE account = ?1 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([account], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    stored
        .map(|(seq, hash, recorded_at)| {
            let hash = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("account {account}: event {seq} has no hash")))?;
            Ok(Head { seq, hash, recorded_at })
        })
        .transpose()
}

/// Every column of an event row but the store-wide `id`, in the order `read_row` reads.
pub(super) const SELECT_ROWS: &str =
    "SELECT seq, account, stream, stream_version, event_type, event_version, data, meta,
        recorded_at, payload_hash, hash, payload_salt FROM events";

/// The columns of `SELECT_ROWS` that migration 0007 found (before 0014 added salts).
const SELECT_ROWS_UNSALTED: &str =
    "SELECT seq, account, stream, stream_version, event_type, event_version, data, meta,
        recorded_at, payload_hash, hash FROM events";

/// The columns and the payload of a row of `SELECT_ROWS` (a payload may not read: compressed,
/// and changed since).
pub(super) fn read_row<'r>(
    row: &'r crate::store::db::Row<'_>,
) -> Result<(Columns<'r>, Payload<'r>), StoreError> {
    let text = |index| row.get_ref(index).and_then(|value| value.as_str());
    let columns = Columns {
        seq: row.get(0)?,
        account: text(1)?,
        stream: text(2)?,
        stream_version: row.get(3)?,
        event_type: text(4)?,
        event_version: row.get(5)?,
        meta: text(7)?,
        recorded_at: text(8)?,
    };
    Ok((columns, super::payload::text(row.get_ref(6)?)))
}

/// An event row's payload as read: its JSON text, or why it does not read.
pub(super) type Payload<'r> = Result<std::borrow::Cow<'r, str>, super::db::Error>;

/// Migration 0007: copies the store-wide log into `events_per_account`, numbering each
/// account's events 1, 2, 3 … in the old order and chaining them per account. The store-wide
/// seq becomes the internal `id`. Erasure records name the events they redacted by position,
/// so their payloads are renumbered too (and hashed anew); every other payload keeps the hash
/// it was first written with, so redacted payloads still link.
///
/// The new links are computed over the rows as they are, so the old chain is checked on the way
/// (links and gaps; a changed payload stays visible through its kept payload hash): its head and
/// its first break, if any, are kept in `global_chain_heads`, logged, and reported from then on
/// by the broken account's `verify`.
pub fn split_per_account(conn: &Connection) -> Result<(), StoreError> {
    let mut heads: HashMap<String, (u64, Hash)> = HashMap::new();
    let mut position = conn.prepare("SELECT seq FROM events_per_account WHERE id = ?1")?;
    let mut select = conn.prepare(&format!("{SELECT_ROWS_UNSALTED} ORDER BY seq"))?;
    let mut rows = select.query([])?;
    let mut old_head: Option<(u64, Vec<u8>)> = None;
    let mut old_previous = GENESIS;
    let mut old_break: Option<OldBreak> = None;
    while let Some(row) = rows.next()? {
        let (old, data) = read_row(&row)?;
        let data = data?;
        let data = &*data;
        let id = old.seq;
        let stored_payload: Vec<u8> = row.get(9)?;
        let stored_hash: Vec<u8> = row.get(10)?;
        let kept_payload: Hash = stored_payload.as_slice().try_into().unwrap_or_else(|_| payload_hash(data));
        let (data, payload) = if ERASURE_TYPES.contains(&old.event_type) {
            let mut event = Event::decode(old.event_type, data)
                .map_err(|error| StoreError::Corrupt(format!("event {id}: {error}")))?;
            for redaction in redactions_mut(&mut event) {
                redaction.seq = position.query_row([redaction.seq], |row| row.get(0))?;
            }
            let renumbered = event.data_json();
            let payload = payload_hash(&renumbered);
            (renumbered, payload)
        } else {
            (data.to_string(), kept_payload)
        };
        let head = heads.entry(old.account.to_string()).or_insert((0, GENESIS));
        let columns = Columns { seq: head.0 + 1, ..old };
        let hash = link(&head.1, &columns, &payload);
        *head = (columns.seq, hash);
        let data = super::db::Value::Text(data);
        super::log::insert_row(conn, "events_per_account", id, &columns, (&data, None), &payload, &hash)?;
        // The old chain, as `verify` checked it before this migration (a log that 0005 hashed in
        // this same run has no hashes yet, and nothing to check).
        if let Ok(stored) = Hash::try_from(stored_hash.as_slice()) {
            let last = old_head.as_ref().map_or(0, |(seq, _)| *seq);
            let why = if id != last + 1 {
                Some(format!("events {} to {} of the store-wide log were missing", last + 1, id - 1))
            } else if link(&old_previous, &old, &kept_payload) != stored {
                Some("its hash did not match its content and the previous event's hash".to_string())
            } else {
                None
            };
            if let Some(reason) = why.filter(|_| old_break.is_none()) {
                let (account, position) = (old.account.to_string(), columns.seq);
                old_break = Some(OldBreak { seq: id, account, position, reason });
            }
            old_previous = stored;
        }
        old_head = Some((id, stored_hash));
    }
    if let Some((last_seq, head)) = old_head.filter(|(_, head)| head.len() == 32) {
        let broken = old_break.as_ref();
        conn.execute(
            "INSERT INTO global_chain_heads (last_seq, head, migrated_at, first_bad_seq, first_bad_account,
                                             first_bad_position, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                last_seq,
                head,
                chrono::Utc::now().to_rfc3339(),
                broken.map(|b| b.seq),
                broken.map(|b| &b.account),
                broken.map(|b| b.position),
                broken.map(|b| &b.reason)
            ],
        )?;
        let head = hex::encode(&head);
        tracing::info!(
            last_seq,
            head,
            accounts = heads.len(),
            "split the store-wide hash chain into one chain per account; its last head is kept in global_chain_heads"
        );
        if let Some(broken) = broken {
            tracing::error!(
                seq = broken.seq,
                account = broken.account,
                position = broken.position,
                reason = broken.reason,
                "the store-wide chain did not verify before the split; that account's verify reports it"
            );
        }
    }
    Ok(())
}

/// Where the store-wide chain did not verify when migration 0007 split it.
#[derive(Debug, Clone, PartialEq)]
pub struct OldBreak {
    /// In the old, store-wide numbering.
    pub seq: u64,
    pub account: String,
    /// The event's seq in its account's log.
    pub position: u64,
    pub reason: String,
}

/// The store-wide chain as migration 0007 found it: its last seq and head, and its first break.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalHead {
    pub last_seq: u64,
    pub head: Vec<u8>,
    pub broken: Option<OldBreak>,
}

/// The store-wide chain as migration 0007 found it (`None` for a store created since, or whose
/// log had no chained events then).
pub fn global_head(conn: &Connection) -> Result<Option<GlobalHead>, StoreError> {
    let head = conn
        .query_row(
            "SELECT last_seq, head, first_bad_seq, first_bad_account, first_bad_position, reason
             FROM global_chain_heads",
            [],
            |row| {
                let broken = match row.get::<Option<u64>>(2)? {
                    Some(seq) => Some(OldBreak {
                        seq,
                        account: row.get(3)?,
                        position: row.get(4)?,
                        reason: row.get(5)?,
                    }),
                    None => None,
                };
                Ok(GlobalHead { last_seq: row.get(0)?, head: row.get(1)?, broken })
            },
        )
        .optional()?;
    Ok(head)
}

/// What a walk of one account's chain found.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainReport {
    pub account: String,
    pub events: u64,
    /// Position and hash of the account's last event: keep them elsewhere (or keep a signed
    /// head) to detect a later truncation.
    pub last_seq: u64,
    pub head: Hash,
    /// The first event that does not verify (its position), and why.
    pub first_bad: Option<(u64, String)>,
}

/// Walks `account`'s live chain in position order, recomputing every payload hash and link: from
/// its first event, or after its last archive from the link the archive recorded. Run it inside
/// a read transaction so that it sees one snapshot.
pub fn verify(conn: &Connection, account: &str) -> Result<ChainReport, StoreError> {
    let start =
        super::archive::cut(conn, account)?.map_or((0, GENESIS), |cut| (cut.through_seq, cut.through_hash));
    verify_salted(conn, account, start, true)
}

/// `verify` from `start` (the position before the walk and its link); with `salts_required`,
/// a payload still there and hashed without salt is a break too (an old node writing after the
/// upgrade). `store::salting` checks logs from before salts (and archives) without it.
pub(super) fn verify_salted(
    conn: &Connection,
    account: &str,
    start: (u64, Hash),
    salts_required: bool,
) -> Result<ChainReport, StoreError> {
    let mut walk = Walk::new(start.0, start.1);
    walk.salts_required = salts_required;
    walk_rows(conn, account, (start.0, u64::MAX), &mut walk)?;
    walk.settle(&HashMap::new());
    let mut report = walk.report(account);
    if start.0 > 0
        && let Some((seq, why)) = super::archive::snapshot_problem(conn, account)?
    {
        report.bad(seq, why);
    }
    if let Some(broken) = global_head(conn)?.and_then(|head| head.broken).filter(|b| b.account == account) {
        let why = format!(
            "before per-account logs (migration 0007), the store-wide chain did not verify at this event (its seq {} there): {}",
            broken.seq, broken.reason
        );
        report.bad(broken.position, why);
    }
    if let Some((position, reason)) = super::salting::break_before_salting(conn, account)? {
        let why =
            format!("before payloads were salted (migration 0014), the chain did not verify here: {reason}");
        report.bad(position, why);
    }
    Ok(report)
}

/// Walks `account`'s events after `start.0` through `through`, from the link `start.1`: what an
/// archive is about to move into a segment. Payloads redacted by an erasure after `through` are
/// recognized too.
pub fn verify_range(
    conn: &Connection,
    account: &str,
    start: (u64, Hash),
    through: u64,
) -> Result<ChainReport, StoreError> {
    let mut walk = Walk::new(start.0, start.1);
    walk_rows(conn, account, (start.0, through), &mut walk)?;
    let mut later = Walk::new(through, GENESIS);
    let mut statement = conn.prepare_cached(&format!(
        "SELECT event_type, data FROM events WHERE account = ?1 AND seq > ?2 AND event_type IN ({})",
        erasure_types_sql()
    ))?;
    let mut rows = statement.query_streamed(params![account, through])?;
    while let Some(row) = rows.next()? {
        let data = super::payload::text(row.get_ref(1)?)?;
        later.note_erasure(0, row.get_ref(0)?.as_str()?, &data);
    }
    walk.settle(&later.redacted);
    Ok(walk.report(account))
}

/// Feeds `account`'s events with `after < seq <= through` to `walk`.
fn walk_rows(
    conn: &Connection,
    account: &str,
    (after, through): (u64, u64),
    walk: &mut Walk,
) -> Result<(), StoreError> {
    let mut select = conn.prepare_cached(&format!(
        "{SELECT_ROWS} WHERE account = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq"
    ))?;
    let through = i64::try_from(through).unwrap_or(i64::MAX);
    let mut rows = select.query_streamed(params![account, after, through])?;
    while let Some(row) = rows.next()? {
        let (columns, data) = read_row(&row)?;
        let payload_hash: Vec<u8> = row.get(9)?;
        let hash: Vec<u8> = row.get(10)?;
        let salt: Option<Vec<u8>> = row.get(11)?;
        let stored = Stored { payload_hash: &payload_hash, hash: &hash, salt: salt.as_deref() };
        match data {
            Ok(data) => walk.step(&columns, &data, stored),
            Err(error) => {
                let why = format!("its payload was changed outside an erasure: it no longer reads ({error})");
                walk.bad(columns.seq, why);
                walk.step(&columns, "", stored);
            }
        }
    }
    Ok(())
}

/// The hashes an event row stores.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub payload_hash: &'a [u8],
    pub hash: &'a [u8],
    pub salt: Option<&'a [u8]>,
}

/// A walk along one account's chain, event by event, wherever the events are read from (the
/// live log, a segment).
#[derive(Debug, Clone)]
pub struct Walk {
    pub events: u64,
    pub last_seq: u64,
    pub head: Hash,
    pub first_bad: Option<(u64, String)>,
    /// Payloads whose hash no longer matches: sound only if an erasure redacted them to exactly
    /// this content.
    pub changed: Vec<(u64, Hash)>,
    /// The redactions the erasure events walked record.
    pub redacted: HashMap<u64, Hash>,
    /// Whether a payload hashed without salt is a break.
    pub salts_required: bool,
}

impl Walk {
    /// A walk that starts after position `after`, whose link is `head`.
    pub fn new(after: u64, head: Hash) -> Walk {
        Walk {
            events: 0,
            last_seq: after,
            head,
            first_bad: None,
            changed: Vec::new(),
            redacted: HashMap::new(),
            salts_required: true,
        }
    }

    /// Records a break at `seq`, unless an earlier one is known.
    pub fn bad(&mut self, seq: u64, why: String) {
        earliest(&mut self.first_bad, seq, why);
    }

    /// Checks the next event.
    pub fn step(&mut self, columns: &Columns<'_>, data: &str, stored: Stored<'_>) {
        let seq = columns.seq;
        if seq != self.last_seq + 1 {
            let why = format!("events {} to {} are missing", self.last_seq + 1, seq.wrapping_sub(1));
            self.bad(self.last_seq + 1, why);
        }
        let actual = stored_payload_hash(stored.salt, data);
        if stored.payload_hash != actual {
            self.changed.push((seq, actual));
        } else if stored.salt.is_none() && self.salts_required {
            self.bad(
                seq,
                "its payload is hashed without salt (written by a release before salted hashes)".into(),
            );
        }
        let payload: Hash = stored.payload_hash.try_into().unwrap_or(actual);
        let expected = link(&self.head, columns, &payload);
        if stored.hash != expected {
            self.bad(seq, "its hash does not match its content and the previous event's hash".into());
        }
        self.note_erasure(seq, columns.event_type, data);
        self.head = stored.hash.try_into().unwrap_or(expected);
        self.last_seq = seq;
        self.events += 1;
    }

    /// Notes the redactions an erasure event records (nothing for any other event).
    pub fn note_erasure(&mut self, seq: u64, event_type: &str, data: &str) {
        if ERASURE_TYPES.contains(&event_type) {
            match Event::decode(event_type, data) {
                Ok(mut event) => self.redacted.extend(erasure_list(&mut event)),
                Err(error) => self.bad(seq, format!("its payload does not read: {error}")),
            }
        }
    }

    /// Reports each changed payload that no erasure — of this walk, or `elsewhere` — redacted.
    pub fn settle(&mut self, elsewhere: &HashMap<u64, Hash>) {
        for (seq, actual) in std::mem::take(&mut self.changed) {
            let redacted = |map: &HashMap<u64, Hash>| map.get(&seq) == Some(&actual);
            if !redacted(&self.redacted) && !redacted(elsewhere) {
                self.bad(seq, "its payload was changed outside an erasure".into());
            }
        }
    }

    pub fn report(&self, account: &str) -> ChainReport {
        ChainReport {
            account: account.to_string(),
            events: self.events,
            last_seq: self.last_seq,
            head: self.head,
            first_bad: self.first_bad.clone(),
        }
    }
}

impl ChainReport {
    /// Records a break at `seq`, unless an earlier one is known.
    fn bad(&mut self, seq: u64, why: String) {
        earliest(&mut self.first_bad, seq, why);
    }
}

/// Keeps the earliest of the breaks found.
fn earliest(first_bad: &mut Option<(u64, String)>, seq: u64, why: String) {
    if first_bad.as_ref().is_none_or(|(first, _)| seq < *first) {
        *first_bad = Some((seq, why));
    }
}

/// Every account that has events, in order.
pub fn accounts(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare("SELECT DISTINCT account FROM events ORDER BY account")?;
    let rows = statement.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Walks every account's chain (`ctxd verify --chain`), in account order.
pub fn verify_all(conn: &Connection) -> Result<Vec<ChainReport>, StoreError> {
    accounts(conn)?.iter().map(|account| verify(conn, account)).collect()
}

/// `ERASURE_TYPES` as an SQL list, for `event_type IN (…)`.
pub fn erasure_types_sql() -> String {
    ERASURE_TYPES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
}

/// The event types that record an erasure.
pub const ERASURE_TYPES: &[&str] =
    &["CustomerErased", "CustomerErasureStarted", "ServiceErased", "SessionErased"];

/// The redactions an erasure event records (none for any other event).
fn redactions_mut(event: &mut Event) -> &mut [crate::domain::erasure::Redaction] {
    match event {
        Event::CustomerErased(erased) => &mut erased.redacted,
        Event::CustomerErasureStarted(erased) => &mut erased.redacted,
        Event::ServiceErased(erased) => &mut erased.redacted,
        Event::SessionErased(erased) => &mut erased.redacted,
        _ => &mut [],
    }
}

/// The payloads an erasure event redacted, with the sha256 of each redacted form.
fn erasure_list(event: &mut Event) -> Vec<(u64, Hash)> {
    let decode = |text: &str| -> Option<Hash> { hex::decode(text).ok()?.try_into().ok() };
    redactions_mut(event).iter().filter_map(|r| Some((r.seq, decode(&r.redacted_sha256)?))).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::migrations::{MIGRATIONS, migrate};

    /// A store as the release before per-account logs wrote it (schema 6): one store-wide seq
    /// and chain over `events`, each `(account, stream, event type, payload)`.
    fn store_at_schema_6(events: &[(&str, &str, &str, &str)]) -> Connection {
        store_at(6, events)
    }

    /// A store at schema `version`, 4 (before the chain) or 6.
    pub(crate) fn store_at(version: u32, events: &[(&str, &str, &str, &str)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .unwrap();
        let chained = version >= 6;
        for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
            conn.execute_batch(migration.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version VALUES (?1, ?2, 'then')",
                (migration.version, migration.name),
            )
            .unwrap();
        }
        let mut previous = GENESIS;
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (index, (account, stream, event_type, data)) in events.iter().enumerate() {
            let version = versions.entry(stream).and_modify(|v| *v += 1).or_insert(1);
            let columns = Columns {
                seq: index as u64 + 1,
                account,
                stream,
                stream_version: *version,
                event_type,
                event_version: 1,
                meta: r#"{"actor":"admin"}"#,
                recorded_at: "2026-01-01T00:00:00.000000Z",
            };
            let payload = payload_hash(data);
            previous = link(&previous, &columns, &payload);
            let (payload, hash) = (payload.to_vec(), previous.to_vec());
            let mut values = params![
                columns.seq,
                account,
                stream,
                columns.stream_version,
                event_type,
                data,
                columns.meta,
                columns.recorded_at,
                payload,
                hash
            ]
            .to_vec();
            let (hashed, hashes) = match chained {
                true => (", payload_hash, hash", ", ?9, ?10"),
                false => {
                    values.truncate(8);
                    ("", "")
                }
            };
            conn.execute(
                &format!(
                    "INSERT INTO events (seq, account, stream, stream_version, event_type, event_version, data,
                                         meta, recorded_at{hashed}) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8{hashes})"
                ),
                values.as_slice(),
            )
            .unwrap();
        }
        conn
    }

    const CREATED_A: (&str, &str, &str, &str) = ("a", "account/a", "AccountCreated", r#"{"account_id":"a"}"#);
    const CREATED_B: (&str, &str, &str, &str) = ("b", "account/b", "AccountCreated", r#"{"account_id":"b"}"#);

    fn positions(conn: &Connection) -> Vec<(u64, String, u64)> {
        let mut statement = conn.prepare("SELECT id, account, seq FROM events ORDER BY id").unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn migrating_a_store_wide_log_numbers_and_chains_each_account_and_keeps_the_old_head() {
        fn patch(
            account: &'static str,
            value: &'static str,
        ) -> (&'static str, &'static str, &'static str, &'static str) {
            (account, if account == "a" { "ctx/a/ns/s" } else { "ctx/b/ns/s" }, "PropertiesPatched", value)
        }
        let events = [
            CREATED_A,
            CREATED_B,
            patch("a", r#"{"namespace":"ns","session_id":"s","properties":{"x":1},"expires_at":null}"#),
            patch("b", r#"{"namespace":"ns","session_id":"s","properties":{"y":1},"expires_at":null}"#),
            patch("a", r#"{"namespace":"ns","session_id":"s","properties":{"x":2},"expires_at":null}"#),
        ];
        let mut conn = store_at_schema_6(&events);
        let old_head: Vec<u8> =
            conn.query_row("SELECT hash FROM events WHERE seq = 5", [], |row| row.get(0)).unwrap();
        migrate(&mut conn).unwrap();
        let expected = [(1, "a", 1), (2, "b", 1), (3, "a", 2), (4, "b", 2), (5, "a", 3)];
        let expected: Vec<(u64, String, u64)> =
            expected.iter().map(|(id, account, seq)| (*id, account.to_string(), *seq)).collect();
        assert_eq!(positions(&conn), expected);
        for (account, events) in [("a", 3), ("b", 2)] {
            let report = verify(&conn, account).unwrap();
            assert_eq!(
                (report.events, report.last_seq, report.first_bad),
                (events, events, None),
                "{account}"
            );
            assert_eq!(head(&conn, account).unwrap().unwrap().hash, report.head);
        }
        let kept = global_head(&conn).unwrap().unwrap();
        assert_eq!((kept.last_seq, kept.head, kept.broken), (5, old_head, None));
        // Still append-only, the new position column included.
        for sql in [
            "UPDATE events SET seq = 9 WHERE id = 2",
            "UPDATE events SET data = '{}' WHERE id = 2",
            "DELETE FROM events",
        ] {
            let error = conn.execute(sql, []).unwrap_err().to_string();
            assert!(error.contains("append-only"), "{error}");
        }
    }

    #[test]
    fn an_edit_made_before_the_migration_stays_reported_in_its_account() {
        let mut conn = store_at_schema_6(&[CREATED_A, CREATED_B, CREATED_A, CREATED_B]);
        // Someone rewrote who made event 3 (acme's second) in the old store, around the trigger.
        conn.execute_batch(
            "DROP TRIGGER events_are_append_only_update; UPDATE events SET meta = '{\"actor\":\"x\"}' WHERE seq = 3",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let broken = global_head(&conn).unwrap().unwrap().broken.expect("the old chain's break is kept");
        assert_eq!((broken.seq, broken.account.as_str(), broken.position), (3, "a", 2));
        let report = verify(&conn, "a").unwrap();
        let (seq, why) = report.first_bad.expect("acme's verify reports it");
        assert_eq!(seq, 2);
        assert!(why.contains("before per-account logs"), "{why}");
        assert_eq!(verify(&conn, "b").unwrap().first_bad, None);

        let mut conn = store_at_schema_6(&[CREATED_A, CREATED_B, CREATED_A]);
        conn.execute_batch("DROP TRIGGER events_are_append_only_delete; DELETE FROM events WHERE seq = 2")
            .unwrap();
        migrate(&mut conn).unwrap();
        let broken = global_head(&conn).unwrap().unwrap().broken.expect("a deleted event is kept as a break");
        assert!(broken.reason.contains("missing"), "{broken:?}");
        assert!(verify(&conn, "a").unwrap().first_bad.is_some());
    }

    #[test]
    fn a_store_from_before_the_chain_is_chained_per_account() {
        // Schema 4 had no hashes: 0005 to 0008 run in one go.
        let mut conn = store_at(4, &[CREATED_A, CREATED_B]);
        migrate(&mut conn).unwrap();
        let first = Columns {
            seq: 1,
            account: "b",
            stream: "account/b",
            stream_version: 1,
            event_type: "AccountCreated",
            event_version: 1,
            meta: r#"{"actor":"admin"}"#,
            recorded_at: "2026-01-01T00:00:00.000000Z",
        };
        let expected = link(&GENESIS, &first, &payload_hash(r#"{"account_id":"b"}"#));
        // 0014 salted it afterwards, keeping the head it started from.
        let old_head: Vec<u8> = conn
            .query_row("SELECT old_head FROM chain_rewrites WHERE account = 'b'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(old_head, expected);
        let report = verify(&conn, "b").unwrap();
        assert_ne!(report.head, expected);
        assert_eq!(report.first_bad, None);
        let kept: u64 =
            conn.query_row("SELECT count(*) FROM global_chain_heads", [], |row| row.get(0)).unwrap();
        assert_eq!(kept, 0, "no one kept a head of a log that had none");
    }

    #[test]
    fn a_missing_event_and_a_redaction_without_a_record_are_reported_in_their_account_only() {
        let mut conn = store_at_schema_6(&[CREATED_A, CREATED_B, CREATED_A]);
        migrate(&mut conn).unwrap();
        // (The second AccountCreated of `a` shares a stream version with the first in no real log;
        // the chain does not care.)
        conn.execute_batch(
            "DROP TRIGGER events_are_append_only_delete; DELETE FROM events WHERE account = 'a' AND seq = 1",
        )
        .unwrap();
        let report = verify(&conn, "a").unwrap();
        assert_eq!(report.first_bad.map(|(seq, _)| seq), Some(1));
        assert_eq!(verify(&conn, "b").unwrap().first_bad, None);

        let mut conn = store_at_schema_6(&[CREATED_A, CREATED_B, CREATED_A]);
        migrate(&mut conn).unwrap();
        // The erasure door alone (a permit row, as an erasure opens it) does not make a
        // redaction valid: the chain wants an erasure event that records it.
        crate::store::log::redact_payload(&conn, "a", 2, r#"{"account_id":"[erased]"}"#).unwrap();
        let reports = verify_all(&conn).unwrap();
        let bad: Vec<(String, Option<u64>)> =
            reports.into_iter().map(|r| (r.account, r.first_bad.map(|(seq, _)| seq))).collect();
        assert_eq!(bad, [("a".to_string(), Some(2)), ("b".to_string(), None)]);
    }
}
