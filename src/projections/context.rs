//! The context store's read model: namespaces, session TTL settings and properties with expiry.
//! A session exists as far as reads are concerned when it has properties or a TTL setting.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::EventRef;
use super::tables::{PropertyRow, SessionKey, Tables};
use crate::domain::Event;
use crate::domain::StreamVersion;
use crate::domain::context::{ExpiredProperty, NamespaceState, SessionState};
use crate::domain::events::{SessionDeleted, SessionErased};
use crate::store::StoreError;

/// Applies a context event to the namespaces, session TTL and properties tables.
pub fn apply(tables: &mut impl Tables, recorded: &EventRef<'_>) -> Result<(), StoreError> {
    let (account, at) = (recorded.account, recorded.recorded_at);
    match recorded.event {
        Event::NamespaceCreated(e) => tables.insert_namespace(account, &e.namespace, at, e.ttl_second),
        Event::NamespaceTtlSet(e) => tables.set_namespace_ttl(account, &e.namespace, e.ttl_second),
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

/// What a session command is decided against.
pub fn load_session_state(
    conn: &Connection,
    account: &str,
    namespace: &str,
    session_id: &str,
    version: StreamVersion,
    now: DateTime<Utc>,
) -> Result<SessionState, StoreError> {
    let namespace_row: Option<Option<u64>> = conn
        .prepare_cached("SELECT ttl_second FROM namespaces WHERE account_id = ?1 AND namespace = ?2")?
        .query_row(params![account, namespace], |row| row.get(0))
        .optional()?;
    let session_ttl: Option<u64> = conn
        .prepare_cached(
            "SELECT ttl_second FROM session_ttls WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
        )?
        .query_row(params![account, namespace, session_id], |row| row.get(0))
        .optional()?;
    let mut statement = conn.prepare_cached(
        "SELECT key, length(value), coalesce(expires_at > ?4, 1) FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
    )?;
    let mut rows = statement.query(params![account, namespace, session_id, now.timestamp_micros()])?;
    let mut live_properties = std::collections::BTreeMap::new();
    let mut has_property_rows = false;
    while let Some(row) = rows.next()? {
        has_property_rows = true;
        if row.get::<_, bool>(2)? {
            live_properties.insert(row.get::<_, String>(0)?, row.get::<_, usize>(1)?);
        }
    }
    Ok(SessionState {
        version,
        namespace_registered: namespace_row.is_some(),
        namespace_ttl: namespace_row.flatten(),
        session_known: session_ttl.is_some() || has_property_rows,
        session_ttl,
        live_properties,
    })
}

/// What a namespace command is decided against; the session list only when `with_sessions`.
pub fn load_namespace_state(
    conn: &Connection,
    account: &str,
    namespace: &str,
    version: StreamVersion,
    with_sessions: bool,
) -> Result<NamespaceState, StoreError> {
    let row: Option<Option<u64>> = conn
        .prepare_cached("SELECT ttl_second FROM namespaces WHERE account_id = ?1 AND namespace = ?2")?
        .query_row(params![account, namespace], |row| row.get(0))
        .optional()?;
    let sessions = if with_sessions {
        conn.prepare_cached(
            "SELECT session_id FROM session_ttls WHERE account_id = ?1 AND namespace = ?2
             UNION SELECT session_id FROM properties WHERE account_id = ?1 AND namespace = ?2
             ORDER BY 1",
        )?
        .query_map(params![account, namespace], |row| row.get(0))?
        .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(NamespaceState { version, registered: row.is_some(), ttl_second: row.flatten(), sessions })
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
            WHERE expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2)
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
        "SELECT namespace, {MILLIS}, ttl_second FROM namespaces WHERE account_id = ?1 ORDER BY namespace"
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
    let mut statement = conn.prepare_cached(
        "SELECT session_id, substr(ttl_set_at, 1, 23) || 'Z', ttl_second FROM session_ttls
         WHERE account_id = ?1 AND namespace = ?2 ORDER BY session_id",
    )?;
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
    let mut statement = conn.prepare_cached(
        "SELECT key, value FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND (expires_at IS NULL OR expires_at > ?4)
         ORDER BY key",
    )?;
    let rows = statement
        .query_map(params![account, namespace, session_id, now.timestamp_micros()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
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
        .prepare_cached(
            "SELECT value FROM properties WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND key = ?4
             AND (expires_at IS NULL OR expires_at > ?5)",
        )?
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
    let mut statement = conn.prepare_cached(
        "SELECT DISTINCT session_id FROM properties
         WHERE account_id = ?1 AND namespace = ?2 AND (expires_at IS NULL OR expires_at > ?3)
         ORDER BY session_id LIMIT ?4 OFFSET ?5",
    )?;
    let offset = page.saturating_mul(per_page).min(i64::MAX as u64);
    let rows = statement.query_map(
        params![account, namespace, now.timestamp_micros(), per_page as i64, offset as i64],
        |row| row.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
