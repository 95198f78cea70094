//! Change history: the events of one stream, each with who made it (actor, request id) and
//! what it changed. For a context session that is each property's value before and after,
//! found by folding the session's events from its first; for a service, the event's payload.

use std::collections::BTreeMap;

use crate::store::db::Connection;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::Event;
use crate::domain::events::JsonText;
use crate::store::StoreError;
use crate::store::log::format_time;

/// Which part of a history to return: the entries after seq `after`, at most `limit`, and
/// (after the first) as many as fit in about `bytes` of event rows.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub after: u64,
    pub limit: usize,
    pub bytes: usize,
}

impl Page {
    pub fn new(after: u64, limit: usize) -> Page {
        Page { after, limit, bytes: MAX_PAGE_BYTES }
    }
}

/// One page of a history.
#[derive(Debug, Serialize)]
pub struct History<C> {
    pub history: Vec<Entry<C>>,
    /// The `after` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// One event of a history: when, by whom, and what changed.
#[derive(Debug, Serialize)]
pub struct Entry<C> {
    pub seq: u64,
    pub recorded_at: String,
    /// `key:<key name>` (`key:<key id>` before keys had names), `admin`, `system:sweeper`, …
    /// (the event's `meta`).
    pub actor: String,
    /// Whom the actor said it acted for (`On-Behalf-Of`), when it said so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub request_id: String,
    pub event_type: String,
    #[serde(flatten)]
    pub change: C,
}

/// What one event did to a session.
#[derive(Debug, Default, Serialize)]
pub struct SessionChange {
    /// Every property the event touched.
    pub properties: BTreeMap<String, PropertyChange>,
    /// The session TTL a `SessionTtlSet` set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_second: Option<u64>,
    /// Why a session was deleted (`namespace_deleted`), when not by its own call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// A property's value before and after an event; `None` (null) when absent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PropertyChange {
    pub old: Option<JsonText>,
    pub new: Option<JsonText>,
    /// The expiry a patch stamped on the new value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// What one event of a service was: its payload as stored.
#[derive(Debug, Serialize)]
pub struct ServiceChange {
    pub change: Box<RawValue>,
}

/// The part of an event's `meta` that history shows.
#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    on_behalf_of: Option<String>,
    #[serde(default)]
    request_id: String,
}

/// The properties of one session as its events leave them: the last value written, until a
/// delete, clear, expiry or session delete removes it. (A value past its expiry that the
/// sweeper has not yet recorded is still there: history shows changes as they were recorded.)
#[derive(Debug, Default)]
pub struct SessionFold {
    values: BTreeMap<String, JsonText>,
}

impl SessionFold {
    /// Applies a session event and says what it changed.
    pub fn apply(&mut self, event: &Event) -> SessionChange {
        let mut change = SessionChange::default();
        let removed = |old| PropertyChange { old, new: None, expires_at: None };
        match event {
            Event::PropertiesPatched(e) => {
                for (key, value) in &e.properties {
                    let old = self.values.insert(key.clone(), value.clone());
                    let expires_at = e.expires_at.map(format_time);
                    change
                        .properties
                        .insert(key.clone(), PropertyChange { old, new: Some(value.clone()), expires_at });
                }
            }
            Event::PropertyDeleted(e) => {
                change.properties.insert(e.property.clone(), removed(self.values.remove(&e.property)));
            }
            Event::PropertiesExpired(e) => {
                for key in &e.properties {
                    change.properties.insert(key.clone(), removed(self.values.remove(key)));
                }
            }
            Event::SessionPropertiesCleared(_) | Event::SessionErased(_) => {
                change.properties = self.take_all();
            }
            Event::SessionDeleted(e) => {
                change.properties = self.take_all();
                change.cause = e.cause.clone();
            }
            Event::SessionTtlSet(e) => change.ttl_second = Some(e.ttl_second),
            _ => {}
        }
        change
    }

    fn take_all(&mut self) -> BTreeMap<String, PropertyChange> {
        let values = std::mem::take(&mut self.values);
        values
            .into_iter()
            .map(|(key, old)| (key, PropertyChange { old: Some(old), new: None, expires_at: None }))
            .collect()
    }

    /// The properties held now, as (name, value text).
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// One stored event of a stream.
struct Row {
    seq: u64,
    recorded_at: String,
    event_type: String,
    data: String,
    meta: String,
}

impl Row {
    /// Bytes of the stored row that an entry shows.
    fn size(&self) -> usize {
        self.data.len() + self.meta.len() + self.event_type.len() + self.recorded_at.len()
    }

    fn entry<C>(self, change: C) -> Result<Entry<C>, StoreError> {
        let meta: Meta = serde_json::from_str(&self.meta)
            .map_err(|error| StoreError::Corrupt(format!("event {}: meta: {error}", self.seq)))?;
        Ok(Entry {
            seq: self.seq,
            recorded_at: self.recorded_at,
            actor: meta.actor,
            on_behalf_of: meta.on_behalf_of,
            request_id: meta.request_id,
            event_type: self.event_type,
            change,
        })
    }

    fn event(&self) -> Result<Event, StoreError> {
        Event::decode(&self.event_type, &self.data)
            .map_err(|error| StoreError::Corrupt(format!("event {}: {error}", self.seq)))
    }
}

/// Calls `visit` with each event of `stream` with `seq > after`, in order, until it answers
/// false. Returns whether the stream has any event at all.
fn each_event(
    conn: &Connection,
    stream: &str,
    after: u64,
    mut visit: impl FnMut(Row) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT seq, recorded_at, event_type, data, meta FROM events
         WHERE stream = ?1 AND seq > ?2 AND {} ORDER BY stream_version",
        super::LIVE
    ))?;
    let mut rows = statement.query(crate::params![stream, crate::store::log::cursor(after)])?;
    let mut any = false;
    while let Some(row) = rows.next()? {
        any = true;
        let row = Row {
            seq: row.get(0)?,
            recorded_at: row.get(1)?,
            event_type: row.get(2)?,
            data: crate::store::payload::text(row.get_ref(3)?)?.into_owned(),
            meta: row.get(4)?,
        };
        if !visit(row)? {
            break;
        }
    }
    Ok(any)
}

/// About how many bytes of entries one page holds (at least one entry): a session's values
/// reach 800,000 characters, so 1000 entries could otherwise be gigabytes in memory.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Collects entries into a page: `push` answers false once the page is full (by count, or by
/// about `MAX_PAGE_BYTES`), having noted where the next one starts.
struct Pager<C> {
    page: Page,
    history: History<C>,
    bytes: usize,
}

impl<C> Pager<C> {
    fn new(page: Page) -> Self {
        Pager { page, history: History { history: Vec::new(), next_after: None }, bytes: 0 }
    }

    /// Adds `entry`, whose event row was `size` bytes (its answer may show a value twice: old
    /// and new).
    fn push(&mut self, entry: Entry<C>, size: usize) -> bool {
        let full = self.history.history.len() == self.page.limit
            || (self.bytes >= self.page.bytes && !self.history.history.is_empty());
        if full {
            self.history.next_after = self.history.history.last().map(|last| last.seq);
            return false;
        }
        self.bytes += 2 * size;
        self.history.history.push(entry);
        true
    }
}

/// A session's changes, or only those of `property`. `None` when the stream has no event (or,
/// for one property, no event ever touched it).
pub fn session_history(
    conn: &Connection,
    stream: &str,
    property: Option<&str>,
    page: Page,
) -> Result<Option<History<SessionChange>>, StoreError> {
    // After an archive, the session's history goes on from its state in the snapshot.
    let mut fold = SessionFold::default();
    let archived = crate::store::archive::stream_state(conn, stream)?;
    let archived_any = archived.is_some();
    if let Some(session) = archived.and_then(|state| state.session) {
        fold.values = session
            .properties
            .into_iter()
            .map(|(key, (value, _))| (key, JsonText::from_stored(value)))
            .collect();
    }
    let mut pager = Pager::new(page);
    let mut touched = false;
    let any = each_event(conn, stream, 0, |row| {
        let mut change = fold.apply(&row.event()?);
        if let Some(property) = property {
            let Some(one) = change.properties.remove(property) else {
                return Ok(true);
            };
            change = SessionChange { properties: BTreeMap::from([(property.to_string(), one)]), ..change };
            touched = true;
        }
        if row.seq <= page.after {
            return Ok(true);
        }
        let size = row.size();
        Ok(pager.push(row.entry(change)?, size))
    })?;
    let found = if property.is_some() { touched || archived_any } else { any || archived_any };
    Ok(found.then_some(pager.history))
}

/// A service's events, with their payloads. `None` when the stream has no event.
pub fn service_history(
    conn: &Connection,
    stream: &str,
    page: Page,
) -> Result<Option<History<ServiceChange>>, StoreError> {
    if crate::store::log::stream_version(conn, stream)? == 0 {
        return Ok(None);
    }
    let mut pager = Pager::new(page);
    each_event(conn, stream, page.after, |row| {
        let change = RawValue::from_string(row.data.clone())
            .map_err(|error| StoreError::Corrupt(format!("event {}: {error}", row.seq)))?;
        let size = row.size();
        Ok(pager.push(row.entry(ServiceChange { change })?, size))
    })?;
    Ok(Some(pager.history))
}

/// The streams of one conversation (`audit/conversations/{id}`): the context sessions named by
/// its id in any namespace, and the services whose start carried it as `session_id` or
/// `interaction_id`.
#[derive(Debug, Default)]
pub struct Conversation {
    /// (namespace, stream)
    pub sessions: Vec<(String, String)>,
    /// (service id, stream)
    pub services: Vec<(String, String)>,
}

impl Conversation {
    pub fn streams(&self) -> impl Iterator<Item = &String> {
        self.sessions.iter().chain(&self.services).map(|(_, stream)| stream)
    }
}

/// A conversation's streams of `account` with events in the live log.
pub fn conversation(conn: &Connection, account: &str, id: &str) -> Result<Conversation, StoreError> {
    use crate::domain::events::{service_stream, session_stream};
    let mut found = Conversation::default();
    for namespace in super::analytics_queries::namespaces(conn, account)? {
        let stream = session_stream(account, &namespace, id);
        if crate::store::log::stream_version(conn, &stream)? > 0 {
            found.sessions.push((namespace, stream));
        }
    }
    // The expressions of the indexes `events_services_of_sessions` and `…_of_interactions`
    // (migrations 0019, PostgreSQL 0007), which the statement must repeat to use them.
    let channel = |field: &str| match conn.dialect() {
        crate::store::db::Dialect::Sqlite => {
            format!("json_extract(data, '$.opening.started.channel.{field}')")
        }
        crate::store::db::Dialect::Postgres => {
            format!("(((data::jsonb) #>> '{{opening,started,channel,{field}}}') COLLATE \"C\")")
        }
    };
    let service_id = super::data_field(conn, "service_id");
    let sql = format!(
        "SELECT {service_id} FROM events WHERE account = ?1 AND event_type = 'ServiceStarted' AND {session} = ?2
         UNION
         SELECT {service_id} FROM events WHERE account = ?1 AND event_type = 'ServiceStarted' AND {interaction} = ?2
         ORDER BY 1",
        session = channel("session_id"),
        interaction = channel("interaction_id"),
    );
    let services: Vec<String> = conn
        .prepare_cached(&sql)?
        .query_map(crate::params![account, id], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for service_id in services {
        let stream = service_stream(account, &service_id);
        found.services.push((service_id, stream));
    }
    Ok(found)
}

/// One page of a conversation's story: the changes of its sessions and services merged in the
/// account's order, each entry naming its session (`namespace`, `session_id`) or `service_id`;
/// and the `after` of the next page, if there is one.
pub fn conversation_story(
    conn: &Connection,
    conversation: &Conversation,
    id: &str,
    page: Page,
) -> Result<(Vec<serde_json::Value>, Option<u64>), StoreError> {
    // The page's bytes shared between the streams.
    let streams = conversation.sessions.len() + conversation.services.len();
    let page = Page { bytes: (page.bytes / streams.max(1)).max(64 * 1024), ..page };
    let mut entries: Vec<(u64, serde_json::Value)> = Vec::new();
    // The first position after which a stream's page stopped short: the merged page may not
    // go past it.
    let mut cut: Option<u64> = None;
    let mut add = |history: serde_json::Value, next_after: Option<u64>, named: serde_json::Value| {
        for mut entry in history.as_array().cloned().unwrap_or_default() {
            let seq = entry["seq"].as_u64().unwrap_or(0);
            if let (Some(entry), Some(named)) = (entry.as_object_mut(), named.as_object()) {
                entry.extend(named.clone());
            }
            entries.push((seq, entry));
        }
        if let Some(next) = next_after {
            cut = Some(cut.map_or(next, |cut| cut.min(next)));
        }
    };
    for (namespace, stream) in &conversation.sessions {
        if let Some(history) = session_history(conn, stream, None, page)? {
            let named = serde_json::json!({"namespace": namespace, "session_id": id});
            add(to_json(&history.history)?, history.next_after, named);
        }
    }
    for (service_id, stream) in &conversation.services {
        if let Some(history) = service_history(conn, stream, page)? {
            add(
                to_json(&history.history)?,
                history.next_after,
                serde_json::json!({"service_id": service_id}),
            );
        }
    }
    entries.sort_by_key(|(seq, _)| *seq);
    if let Some(cut) = cut {
        entries.retain(|(seq, _)| *seq <= cut);
    }
    let more = cut.is_some() || entries.len() > page.limit;
    entries.truncate(page.limit);
    let next_after = more.then(|| entries.last().map(|(seq, _)| *seq)).flatten();
    Ok((entries.into_iter().map(|(_, entry)| entry).collect(), next_after))
}

fn to_json(value: &impl Serialize) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|error| StoreError::Corrupt(format!("a history entry: {error}")))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::projections::memory::MemoryTables;
    use crate::projections::{apply, context};
    use crate::store::log::RecordedEvent;

    /// A session event of `ns`/`s` with the payload fields `fields` besides those two.
    fn event(event_type: &str, fields: &str) -> Event {
        let separator = if fields.is_empty() { "" } else { "," };
        Event::decode(event_type, &format!(r#"{{"namespace":"ns","session_id":"s"{separator}{fields}}}"#))
            .unwrap()
    }

    /// The session's document as the projection holds it after `events`.
    fn projected(events: &[Event]) -> String {
        let mut tables = MemoryTables::default();
        for (index, event) in events.iter().enumerate() {
            let recorded = RecordedEvent {
                id: index as u64 + 1,
                seq: index as u64 + 1,
                account: "acme".into(),
                stream: event.stream("acme"),
                stream_version: index as u64 + 1,
                event: event.clone(),
                meta: "{}".into(),
                recorded_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            };
            apply(&mut tables, &recorded).unwrap();
        }
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        tables.write_to(&conn).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        context::session_document(&conn, "acme", "ns", "s", now, None).unwrap()
    }

    #[test]
    fn the_history_fold_holds_what_the_projection_holds_after_every_event_type() {
        let events = [
            event("PropertiesPatched", r#""properties":{"a":1,"b":[true]},"expires_at":null"#),
            event("SessionTtlSet", r#""ttl_second":5"#),
            event("PropertiesPatched", r#""properties":{"a":2,"c":"x"},"expires_at":"2030-01-01T00:00:00Z""#),
            event("PropertyDeleted", r#""property":"b""#),
            event("PropertiesExpired", r#""properties":["c"]"#),
            event("SessionPropertiesCleared", ""),
            event("PropertiesPatched", r#""properties":{"d":{"e":null}},"expires_at":null"#),
            event("SessionDeleted", r#""cause":"namespace_deleted""#),
            event("PropertiesPatched", r#""properties":{"f":0},"expires_at":null"#),
        ];
        let mut fold = SessionFold::default();
        for upto in 1..=events.len() {
            let change = fold.apply(&events[upto - 1]);
            let held: Vec<String> = fold.values().map(|(key, value)| format!("{key:?}:{value}")).collect();
            assert_eq!(format!("{{{}}}", held.join(",")), projected(&events[..upto]), "after event {upto}");
            for (key, changed) in &change.properties {
                let now = fold.values().find(|(held, _)| held == key).map(|(_, value)| value.to_string());
                assert_eq!(changed.new.as_ref().map(|v| v.as_str().to_string()), now, "{key} after {upto}");
            }
        }
        let mut fold = SessionFold::default();
        let changes: Vec<_> = events.iter().map(|event| fold.apply(event)).collect();
        let a = &changes[2].properties["a"];
        assert_eq!((a.old.as_ref().unwrap().as_str(), a.new.as_ref().unwrap().as_str()), ("1", "2"));
        assert_eq!(a.expires_at.as_deref(), Some("2030-01-01T00:00:00.000000Z"));
        assert_eq!(changes[1].ttl_second, Some(5));
        assert_eq!(changes[5].properties.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(changes[7].cause.as_deref(), Some("namespace_deleted"));
    }
}
