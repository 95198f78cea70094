//! The context store's read model: namespaces, session TTL settings and properties with expiry.
//! A session exists as far as reads are concerned when it has properties or a TTL setting.

use crate::store::db::{Connection, Dialect, OptionalExtension, Value, params};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::EventRef;
use super::tables::{PropertyRow, SessionKey, Tables};
use crate::domain::Event;
use crate::domain::StreamVersion;
use crate::domain::context::{
    ExpiredProperty, NamespaceState, SessionState, StepBound, StoredProperty, property_chars,
};
use crate::domain::events::{SessionDeleted, SessionErased};
use crate::store::StoreError;

/// The SQL condition that the namespace `?2` of account `?1` is not being deleted: its sessions
/// read as gone from the delete's first step.
macro_rules! namespace_not_deleting {
    () => {
        "NOT EXISTS (SELECT 1 FROM namespaces deleting WHERE deleting.account_id = ?1
           AND deleting.namespace = ?2 AND deleting.deleting_since IS NOT NULL)"
    };
}

/// Applies a context event to the namespaces, session TTL and properties tables.
pub fn apply(tables: &mut impl Tables, recorded: &EventRef<'_>) -> Result<(), StoreError> {
    let (account, at) = (recorded.account, recorded.recorded_at);
    match recorded.event {
        Event::NamespaceCreated(e) => tables.insert_namespace(account, &e.namespace, at, e.ttl_second),
        Event::NamespaceTtlSet(e) => tables.set_namespace_ttl(account, &e.namespace, e.ttl_second),
        Event::NamespaceDeletionStarted(e) => tables.start_namespace_deletion(account, &e.namespace, at),
        Event::NamespaceDeleted(e) => tables.delete_namespace(account, &e.namespace),
        Event::PropertiesPatched(e) => {
            let session = key(account, &e.namespace, &e.session_id);
            let expires_at = e.expires_at.map(|time| time.timestamp_micros());
            for (key, value) in &e.properties {
                tables.upsert_property(PropertyRow { session, key, value: value.as_str(), expires_at })?;
            }
            Ok(())
        }
        Event::PropertyDeleted(e) => {
            tables.delete_property(key(account, &e.namespace, &e.session_id), &e.property)
        }
        Event::PropertiesExpired(e) => {
            let session = key(account, &e.namespace, &e.session_id);
            e.properties.iter().try_for_each(|property| tables.delete_property(session, property))
        }
        Event::SessionPropertiesCleared(e) => {
            tables.delete_session_properties(key(account, &e.namespace, &e.session_id))
        }
        // An erased session is left as a deleted one: its redacted events rebuild it, then this.
        Event::SessionDeleted(SessionDeleted { namespace, session_id, .. })
        | Event::SessionErased(SessionErased { namespace, session_id, .. }) => {
            let session = key(account, namespace, session_id);
            tables.delete_session_properties(session)?;
            tables.delete_session_ttl(session)
        }
        Event::SessionTtlSet(e) => {
            tables.upsert_session_ttl(key(account, &e.namespace, &e.session_id), e.ttl_second, at)
        }
        _ => Ok(()),
    }
}

fn key<'a>(account_id: &'a str, namespace: &'a str, session_id: &'a str) -> SessionKey<'a> {
    SessionKey { account_id, namespace, session_id }
}

/// A registered namespace's (TTL, being deleted), or `None`.
fn namespace_row(
    conn: &Connection,
    account: &str,
    namespace: &str,
) -> Result<Option<(Option<u64>, bool)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT ttl_second, deleting_since IS NOT NULL FROM namespaces WHERE account_id = ?1 AND namespace = ?2",
        )?
        .query_row(params![account, namespace], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// What a session command is decided against: the session's stored size and the properties
/// the command names (`keys`); a large session is never read whole.
pub fn load_session_state(
    conn: &Connection,
    account: &str,
    session: (&str, &str),
    keys: &[&str],
    version: StreamVersion,
    now: DateTime<Utc>,
) -> Result<SessionState, StoreError> {
    let (namespace, session_id) = session;
    let namespace_row = namespace_row(conn, account, namespace)?;
    let session_ttl: Option<u64> = conn
        .prepare_cached(
            "SELECT ttl_second FROM session_ttls WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
        )?
        .query_row(params![account, namespace, session_id], |row| row.get(0))
        .optional()?;
    let now = now.timestamp_micros();
    let small = small_session(conn, account, session, now)?;
    session_state(conn, account, session, keys, version, now, (namespace_row, session_ttl, small))
}

/// A session command's stream version and the state it is decided against. On PostgreSQL in
/// one statement (each statement the writer waits for is a round trip to the server: measured
/// in docs/PERFORMANCE.md); on SQLite, where a read costs no round trip, each read on its own,
/// with the plans their tests pin.
pub fn load_session(
    conn: &Connection,
    account: &str,
    session: (&str, &str),
    keys: &[&str],
    stream: &str,
    now: DateTime<Utc>,
) -> Result<(StreamVersion, SessionState), StoreError> {
    if conn.dialect() == Dialect::Sqlite {
        let version = crate::store::log::stream_version(conn, stream)?;
        return Ok((version, load_session_state(conn, account, session, keys, version, now)?));
    }
    let (namespace, session_id) = session;
    let read = prefetch_sessions(conn, &[(account, namespace, session_id, stream)], now)?.pop();
    let read = read.expect("one answer per session asked for");
    session_from(conn, account, session, keys, now, read)
}

/// What `load_session` reads of a session before deciding: its stream's version, and its
/// namespace's row, its TTL and (when small) its properties.
pub type Prefetched = (StreamVersion, SessionRead);

/// `load_session`'s reads for several sessions (account, namespace, session id, stream) at once:
/// the writer reads those of a group's commands in one round trip (PostgreSQL).
pub fn prefetch_sessions(
    conn: &Connection,
    sessions: &[(&str, &str, &str, &str)],
    now: DateTime<Utc>,
) -> Result<Vec<Prefetched>, StoreError> {
    let now = now.timestamp_micros();
    let sets: Vec<Vec<Value>> = sessions
        .iter()
        .map(|(account, namespace, session_id, stream)| {
            vec![(*account).into(), (*namespace).into(), (*session_id).into(), now.into(), (*stream).into()]
        })
        .collect();
    let answers = conn.prepare_cached(SESSION_AT_ONCE)?.query_each(&sets, |row| {
        Ok((
            row.get::<i64>(0)?,
            row.get::<Option<String>>(1)?,
            row.get::<Option<u64>>(2)?,
            row.get::<Option<bool>>(3)?,
        ))
    })?;
    Ok(answers.into_iter().map(session_read).collect())
}

/// A row of `SESSION_AT_ONCE`: its kind, a property's key, a number, a flag.
type SessionFact = (i64, Option<String>, Option<u64>, Option<bool>);

/// A session's version and state from `SESSION_AT_ONCE`'s rows.
fn session_read(found: Vec<SessionFact>) -> Prefetched {
    let (mut version, mut namespace_row, mut session_ttl) = (0, None, None);
    let mut rows = SessionRows::new();
    for row in found {
        match row {
            (0, _, number, _) => version = number.unwrap_or(0),
            (1, _, ttl, deleting) => namespace_row = Some((ttl, deleting.unwrap_or(false))),
            (2, _, ttl, _) => session_ttl = ttl,
            (_, key, chars, live) => {
                let value_chars = usize::try_from(chars.unwrap_or(0)).unwrap_or(usize::MAX);
                rows.insert(
                    key.unwrap_or_default(),
                    StoredProperty { value_chars, live: live.unwrap_or(true) },
                );
            }
        }
    }
    let small = (rows.len() <= SMALL_SESSION).then_some(rows);
    (version, (namespace_row, session_ttl, small))
}

/// The version and state of a session from what was read of it (a large session's named
/// properties are read now).
pub fn session_from(
    conn: &Connection,
    account: &str,
    session: (&str, &str),
    keys: &[&str],
    now: DateTime<Utc>,
    (version, read): Prefetched,
) -> Result<(StreamVersion, SessionState), StoreError> {
    let state = session_state(conn, account, session, keys, version, now.timestamp_micros(), read)?;
    Ok((version, state))
}

/// `load_session`'s one statement on PostgreSQL: the stream's version (kind 0), the namespace
/// (1), the session's TTL (2) and up to `SMALL_SESSION` + 1 of its properties (3).
const SESSION_AT_ONCE: &str = "SELECT 0, CAST(NULL AS TEXT),
        coalesce((SELECT max(stream_version) FROM events WHERE stream = ?5),
                 (SELECT version FROM live_snapshot_streams WHERE stream = ?5)), CAST(NULL AS BOOLEAN)
     UNION ALL
     SELECT 1, NULL, ttl_second, deleting_since IS NOT NULL FROM namespaces WHERE account_id = ?1 AND namespace = ?2
     UNION ALL
     SELECT 2, NULL, ttl_second, NULL FROM session_ttls WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3
     UNION ALL
     (SELECT 3, key, length(value), (expires_at IS NULL OR expires_at > ?4) FROM properties
      WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 LIMIT 33)";

/// The namespace's row and the session's TTL, with its properties when it is small (`None`:
/// larger than `SMALL_SESSION`).
pub type SessionRead = (Option<(Option<u64>, bool)>, Option<u64>, Option<SessionRows>);

/// A session's state from what was read of it; a large session's named properties are read now.
fn session_state(
    conn: &Connection,
    account: &str,
    session: (&str, &str),
    keys: &[&str],
    version: StreamVersion,
    now: i64,
    (namespace_row, session_ttl, small): SessionRead,
) -> Result<SessionState, StoreError> {
    let (stored_chars, named, any_live) = match small {
        Some(rows) => {
            let stored = (!rows.is_empty())
                .then(|| rows.iter().map(|(key, p)| property_chars(key, p.value_chars)).sum());
            let any_live = rows.iter().any(|(_, p)| p.live);
            let named = rows.into_iter().filter(|(key, _)| keys.contains(&key.as_str())).collect();
            (stored, named, any_live)
        }
        None => large_session(conn, account, session, keys, now)?,
    };
    Ok(SessionState {
        version,
        namespace_registered: namespace_row.is_some(),
        namespace_ttl: namespace_row.and_then(|row| row.0),
        namespace_deleting: namespace_row.is_some_and(|row| row.1),
        session_known: session_ttl.is_some() || stored_chars.is_some(),
        session_ttl,
        stored_chars: stored_chars.unwrap_or(0),
        named,
        any_live,
    })
}

/// Sessions of at most this many properties are read whole by a write (one short range read,
/// cheaper than a lookup per named property); larger ones through `session_sizes`.
const SMALL_SESSION: usize = 32;
// `small_session`'s PostgreSQL query reads at most SMALL_SESSION + 1 rows: `LIMIT 33`.
const _: () = assert!(SMALL_SESSION + 1 == 33);

pub type SessionRows = std::collections::BTreeMap<String, StoredProperty>;

/// Every property of the session if it holds at most `SMALL_SESSION`, else `None`.
fn small_session(
    conn: &Connection,
    account: &str,
    (namespace, session_id): (&str, &str),
    now: i64,
) -> Result<Option<SessionRows>, StoreError> {
    // No `LIMIT ?`: a bound LIMIT makes SQLite prepare the statement again at every step, and
    // SQLite stops reading when the loop below does. PostgreSQL sends a whole result: a literal
    // LIMIT keeps a wide session's write from reading all its properties.
    let mut statement = conn.prepare_cached(conn.sql(
        "SELECT key, length(value), (expires_at IS NULL OR expires_at > ?4) FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
        "SELECT key, length(value), (expires_at IS NULL OR expires_at > ?4) FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 LIMIT 33",
    ))?;
    let mut rows = statement.query(params![account, namespace, session_id, now])?;
    let mut all = SessionRows::new();
    while let Some(row) = rows.next()? {
        if all.len() == SMALL_SESSION {
            return Ok(None);
        }
        all.insert(row.get(0)?, StoredProperty { value_chars: row.get(1)?, live: row.get(2)? });
    }
    Ok(Some(all))
}

/// The kept size of a large session, the properties of it that `keys` names, and (for commands
/// that name none: clear, delete, TTL) whether any of its properties is unexpired.
fn large_session(
    conn: &Connection,
    account: &str,
    (namespace, session_id): (&str, &str),
    keys: &[&str],
    now: i64,
) -> Result<(Option<usize>, SessionRows, bool), StoreError> {
    let stored: Option<usize> = conn
        .prepare_cached(
            "SELECT chars FROM session_sizes WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
        )?
        .query_row(params![account, namespace, session_id], |row| row.get(0))
        .optional()?;
    let mut named = SessionRows::new();
    let mut statement = conn.prepare_cached(
        "SELECT length(value), (expires_at IS NULL OR expires_at > ?5) FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND key = ?4",
    )?;
    for key in keys {
        let found = statement
            .query_row(params![account, namespace, session_id, key, now], |row| {
                Ok(StoredProperty { value_chars: row.get(0)?, live: row.get(1)? })
            })
            .optional()?;
        if let Some(found) = found {
            named.insert(key.to_string(), found);
        }
    }
    let any_live = keys.is_empty()
        && conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM properties
                 WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3
                   AND (expires_at IS NULL OR expires_at > ?4))",
            )?
            .query_row(params![account, namespace, session_id, now], |row| row.get(0))?;
    Ok((stored, named, any_live))
}

/// What a namespace command is decided against; for deletes (`with_sessions`), the sessions
/// the next step takes, within `bound`, found by seeks on the two tables that name sessions.
pub fn load_namespace_state(
    conn: &Connection,
    account: &str,
    namespace: &str,
    version: StreamVersion,
    with_sessions: Option<StepBound>,
) -> Result<NamespaceState, StoreError> {
    let row = namespace_row(conn, account, namespace)?;
    let mut state = NamespaceState {
        version,
        registered: row.is_some(),
        ttl_second: row.and_then(|row| row.0),
        deleting: row.is_some_and(|row| row.1),
        ..NamespaceState::default()
    };
    if let Some(bound) = with_sessions {
        (state.sessions, state.more_sessions) = next_sessions(conn, account, namespace, bound)?;
    }
    Ok(state)
}

/// The first sessions of a namespace in id order, as many as `bound` allows (at least one),
/// and whether more remain.
fn next_sessions(
    conn: &Connection,
    account: &str,
    namespace: &str,
    bound: StepBound,
) -> Result<(Vec<String>, bool), StoreError> {
    let limit = bound.items as i64 + 1;
    // Sessions with properties, with how many, and sessions with only a TTL setting.
    let mut sized: Vec<(String, u64)> = conn
        .prepare_cached(
            "SELECT session_id, properties FROM session_sizes WHERE account_id = ?1 AND namespace = ?2
             ORDER BY session_id LIMIT ?3",
        )?
        .query_map(params![account, namespace, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let timed: Vec<String> = conn
        .prepare_cached(
            "SELECT session_id FROM session_ttls WHERE account_id = ?1 AND namespace = ?2
             ORDER BY session_id LIMIT ?3",
        )?
        .query_map(params![account, namespace, limit], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    sized.extend(timed.into_iter().map(|session| (session, 0)));
    // A session in both lists comes first from `session_sizes`, with its count.
    sized.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    sized.dedup_by(|next, kept| next.0 == kept.0);
    bound.take(sized.into_iter().map(Ok))
}

/// Every namespace being deleted in steps, as (account, namespace).
pub fn namespaces_being_deleted(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT account_id, namespace FROM namespaces WHERE deleting_since IS NOT NULL ORDER BY deleting_since",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where a namespace delete stands, as `GET …/namespace/{ns}/deletion` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeletionStatus {
    pub namespace: String,
    /// True while the delete proceeds in steps; false when none is (done, or never asked).
    pub deleting: bool,
    #[serde(rename = "startedAt", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Sessions still to delete.
    #[serde(rename = "sessionsLeft")]
    pub sessions_left: u64,
}

pub fn deletion_status(
    conn: &Connection,
    account: &str,
    namespace: &str,
) -> Result<DeletionStatus, StoreError> {
    let started_at: Option<String> = conn
        .prepare_cached(
            "SELECT substr(deleting_since, 1, 23) || 'Z' FROM namespaces
             WHERE account_id = ?1 AND namespace = ?2 AND deleting_since IS NOT NULL",
        )?
        .query_row(params![account, namespace], |row| row.get(0))
        .optional()?;
    let sessions_left = match started_at {
        None => 0,
        Some(_) => conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT session_id FROM session_sizes WHERE account_id = ?1 AND namespace = ?2
                 UNION SELECT session_id FROM session_ttls WHERE account_id = ?1 AND namespace = ?2) AS sessions",
            )?
            .query_row(params![account, namespace], |row| row.get(0))?,
    };
    Ok(DeletionStatus {
        namespace: namespace.to_string(),
        deleting: started_at.is_some(),
        started_at,
        sessions_left,
    })
}

/// Properties whose expiry is at or before `now`, oldest first, grouped by session.
pub fn expired_properties(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<ExpiredProperty>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT account_id, namespace, session_id, key FROM
           (SELECT account_id, namespace, session_id, key FROM properties
            WHERE expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2) AS due
         ORDER BY account_id, namespace, session_id, key",
    )?;
    let rows = statement.query_map(params![now.timestamp_micros(), limit as i64], |row| {
        Ok(ExpiredProperty {
            account: row.get(0)?,
            namespace: row.get(1)?,
            session_id: row.get(2)?,
            key: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A namespace as `GET /v1/account/{accountId}` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "ttlSecond", skip_serializing_if = "Option::is_none")]
    pub ttl_second: Option<u64>,
}

/// Millisecond form of a stored timestamp, as the LivePerson API shows it.
const MILLIS: &str = "substr(created_at, 1, 23) || 'Z'";

pub fn list_namespaces(conn: &Connection, account: &str) -> Result<Vec<NamespaceInfo>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT namespace, {MILLIS}, ttl_second FROM namespaces
         WHERE account_id = ?1 AND deleting_since IS NULL ORDER BY namespace"
    ))?;
    let rows = statement.query_map([account], |row| {
        Ok(NamespaceInfo { name: row.get(0)?, created_at: row.get(1)?, ttl_second: row.get(2)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A session with a TTL setting, as `GET .../namespace/{ns}/session` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionTtlInfo {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "ttlSecond")]
    pub ttl_second: u64,
}

pub fn list_session_ttls(
    conn: &Connection,
    account: &str,
    namespace: &str,
) -> Result<Vec<SessionTtlInfo>, StoreError> {
    let mut statement = conn.prepare_cached(concat!(
        "SELECT session_id, substr(ttl_set_at, 1, 23) || 'Z', ttl_second FROM session_ttls
         WHERE account_id = ?1 AND namespace = ?2 AND ",
        namespace_not_deleting!(),
        " ORDER BY session_id"
    ))?;
    let rows = statement.query_map(params![account, namespace], |row| {
        Ok(SessionTtlInfo { session_id: row.get(0)?, created_at: row.get(1)?, ttl_second: row.get(2)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A session's unexpired properties as one JSON object text; `include` keeps only those keys.
pub fn session_document(
    conn: &Connection,
    account: &str,
    namespace: &str,
    session_id: &str,
    now: DateTime<Utc>,
    include: Option<&[String]>,
) -> Result<String, StoreError> {
    let mut statement = conn.prepare_cached(concat!(
        "SELECT key, value FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND (expires_at IS NULL OR expires_at > ?4)
           AND ",
        namespace_not_deleting!(),
        " ORDER BY key"
    ))?;
    let rows = statement
        .query_map(params![account, namespace, session_id, now.timestamp_micros()], |row| {
            Ok((row.get::<String>(0)?, row.get::<String>(1)?))
        })?;
    let mut document = String::from("{");
    for row in rows {
        let (key, value) = row?;
        if include.is_some_and(|wanted| !wanted.contains(&key)) {
            continue;
        }
        if document.len() > 1 {
            document.push(',');
        }
        document.push_str(&serde_json::to_string(&key).expect("strings serialize"));
        document.push(':');
        document.push_str(&value);
    }
    document.push('}');
    Ok(document)
}

/// One unexpired property's JSON value text.
pub fn property_value(
    conn: &Connection,
    account: &str,
    namespace: &str,
    session_id: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT value FROM properties WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND key = ?4
             AND (expires_at IS NULL OR expires_at > ?5) AND ",
            namespace_not_deleting!()
        ))?
        .query_row(params![account, namespace, session_id, key, now.timestamp_micros()], |row| row.get(0))
        .optional()?)
}

/// Page `page` (from 0) of the ids of sessions that hold unexpired properties, in id order.
pub fn session_ids(
    conn: &Connection,
    account: &str,
    namespace: &str,
    now: DateTime<Utc>,
    page: u64,
    per_page: u64,
) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(concat!(
        "SELECT DISTINCT session_id FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND (expires_at IS NULL OR expires_at > ?3) AND ",
        namespace_not_deleting!(),
        " ORDER BY session_id LIMIT ?4 OFFSET ?5"
    ))?;
    let offset = page.saturating_mul(per_page).min(i64::MAX as u64);
    let rows = statement.query_map(
        params![account, namespace, now.timestamp_micros(), per_page as i64, offset as i64],
        |row| row.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
