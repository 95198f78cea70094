//! `MemoryTables`: the projection tables held in memory while the log is replayed, then stored
//! once, in primary key order (see `tables.rs`).

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};

use super::analytics::{AbandonedRow, Counter};
use super::journeys::ServiceColumns;
use super::tables::{INSERT_ABANDONED, PendingCounts, PropertyRow, SessionKey, Tables};
use crate::domain::events::Properties;
use crate::domain::journeys::customers::attribute_values;
use crate::domain::journeys::events::{IdentificationKeyDefined, JourneySettingsSet};
use crate::domain::journeys::service::ServiceDoc;
use crate::store::StoreError;

/// A session as one string, `account \0 namespace \0 session`: names never contain control
/// characters, so byte order of this string is the order of the `(account, namespace, session)`
/// primary key, and one allocation-free lookup finds a session.
fn joined(s: SessionKey<'_>, buffer: &mut String) {
    buffer.clear();
    buffer.push_str(s.account_id);
    buffer.push('\0');
    buffer.push_str(s.namespace);
    buffer.push('\0');
    buffer.push_str(s.session_id);
}

fn split(joined: &str) -> (&str, &str, &str) {
    let mut parts = joined.splitn(3, '\0');
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next())
}

/// A property's columns after its key: value, expires at.
type PropertyValues = (String, Option<i64>);

/// A namespace: (created_at, ttl_second, deleting_since).
type NamespaceRow = (String, Option<u64>, Option<String>);

/// The projection tables held in memory; `write_to` stores them in primary key order.
#[derive(Debug, Default)]
pub struct MemoryTables {
    /// Reused for session lookups.
    buffer: String,
    /// `created_at` and `writes_per_second` by account.
    accounts: BTreeMap<String, (String, Option<u32>)>,
    /// key hash → (key id, account, issued at, revoked at)
    api_keys: BTreeMap<String, (String, String, String, Option<String>)>,
    /// (account, namespace) → (created at, ttl)
    namespaces: BTreeMap<(String, String), NamespaceRow>,
    /// joined session → (ttl, set at)
    session_ttls: HashMap<String, (u64, String)>,
    /// joined session → property → (value, expires at)
    properties: HashMap<String, BTreeMap<String, PropertyValues>>,
    /// (account, service id) → service
    services: HashMap<(String, String), ServiceDoc>,
    /// (account, customer id) → (profile, created at)
    customers: BTreeMap<(String, String), (Properties, String)>,
    /// (started_at, erased_through) of customer erasures in progress.
    customer_erasures: BTreeMap<(String, String), (String, Option<String>)>,
    /// (account, key name) → (position, key)
    identification_keys: BTreeMap<(String, String), (usize, IdentificationKeyDefined)>,
    journey_settings: BTreeMap<String, JourneySettingsSet>,
    counters: PendingCounts,
    abandoned: Vec<(String, AbandonedRow)>,
}

fn duplicate(table: &str, key: &str) -> StoreError {
    StoreError::Corrupt(format!("the log inserts {key} into {table} twice"))
}

impl Tables for MemoryTables {
    fn insert_account(&mut self, account_id: &str, created_at: &str) -> Result<(), StoreError> {
        match self.accounts.insert(account_id.to_string(), (created_at.to_string(), None)) {
            None => Ok(()),
            Some(_) => Err(duplicate("accounts", account_id)),
        }
    }

    fn insert_api_key(
        &mut self,
        key_hash: &str,
        key_id: &str,
        account_id: &str,
        issued_at: &str,
    ) -> Result<(), StoreError> {
        let row = (key_id.to_string(), account_id.to_string(), issued_at.to_string(), None);
        match self.api_keys.insert(key_hash.to_string(), row) {
            None => Ok(()),
            Some(_) => Err(duplicate("api_keys", key_id)),
        }
    }

    fn revoke_api_key(&mut self, account_id: &str, key_id: &str, revoked_at: &str) -> Result<(), StoreError> {
        for (id, account, _, revoked) in self.api_keys.values_mut() {
            if id == key_id && account == account_id && revoked.is_none() {
                *revoked = Some(revoked_at.to_string());
            }
        }
        Ok(())
    }

    fn set_account_limits(
        &mut self,
        account_id: &str,
        writes_per_second: Option<u32>,
    ) -> Result<(), StoreError> {
        if let Some((_, limit)) = self.accounts.get_mut(account_id) {
            *limit = writes_per_second;
        }
        Ok(())
    }

    fn insert_namespace(
        &mut self,
        account_id: &str,
        namespace: &str,
        created_at: &str,
        ttl_second: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = (account_id.to_string(), namespace.to_string());
        match self.namespaces.insert(key, (created_at.to_string(), ttl_second, None)) {
            None => Ok(()),
            Some(_) => Err(duplicate("namespaces", namespace)),
        }
    }

    fn set_namespace_ttl(
        &mut self,
        account_id: &str,
        namespace: &str,
        ttl_second: u64,
    ) -> Result<(), StoreError> {
        if let Some(row) = self.namespaces.get_mut(&(account_id.to_string(), namespace.to_string())) {
            row.1 = Some(ttl_second);
        }
        Ok(())
    }

    fn start_namespace_deletion(
        &mut self,
        account_id: &str,
        namespace: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        let row = self
            .namespaces
            .entry((account_id.to_string(), namespace.to_string()))
            .or_insert_with(|| (at.to_string(), None, None));
        row.2 = Some(at.to_string());
        Ok(())
    }

    fn delete_namespace(&mut self, account_id: &str, namespace: &str) -> Result<(), StoreError> {
        self.namespaces.remove(&(account_id.to_string(), namespace.to_string()));
        Ok(())
    }

    fn upsert_property(&mut self, row: PropertyRow<'_>) -> Result<(), StoreError> {
        joined(row.session, &mut self.buffer);
        if !self.properties.contains_key(self.buffer.as_str()) {
            self.properties.insert(self.buffer.clone(), BTreeMap::new());
        }
        let properties = self.properties.get_mut(self.buffer.as_str()).expect("inserted above");
        match properties.get_mut(row.key) {
            // Overwrite in place: replays rewrite the same properties many times.
            Some((value, expires_at)) => {
                value.clear();
                value.push_str(row.value);
                *expires_at = row.expires_at;
            }
            None => {
                properties.insert(row.key.to_string(), (row.value.to_string(), row.expires_at));
            }
        }
        Ok(())
    }

    fn delete_property(&mut self, session: SessionKey<'_>, key: &str) -> Result<(), StoreError> {
        joined(session, &mut self.buffer);
        if let Some(properties) = self.properties.get_mut(self.buffer.as_str()) {
            properties.remove(key);
            if properties.is_empty() {
                self.properties.remove(self.buffer.as_str());
            }
        }
        Ok(())
    }

    fn delete_session_properties(&mut self, session: SessionKey<'_>) -> Result<(), StoreError> {
        joined(session, &mut self.buffer);
        self.properties.remove(self.buffer.as_str());
        Ok(())
    }

    fn upsert_session_ttl(
        &mut self,
        session: SessionKey<'_>,
        ttl_second: u64,
        set_at: &str,
    ) -> Result<(), StoreError> {
        joined(session, &mut self.buffer);
        self.session_ttls.insert(self.buffer.clone(), (ttl_second, set_at.to_string()));
        Ok(())
    }

    fn delete_session_ttl(&mut self, session: SessionKey<'_>) -> Result<(), StoreError> {
        joined(session, &mut self.buffer);
        self.session_ttls.remove(self.buffer.as_str());
        Ok(())
    }

    fn take_service(&mut self, account_id: &str, service_id: &str) -> Result<Option<ServiceDoc>, StoreError> {
        Ok(self.services.remove(&(account_id.to_string(), service_id.to_string())))
    }

    fn put_service(&mut self, account_id: &str, doc: ServiceDoc) -> Result<(), StoreError> {
        self.services.insert((account_id.to_string(), doc.service_id.clone()), doc);
        Ok(())
    }

    fn delete_service(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError> {
        self.services.remove(&(account_id.to_string(), service_id.to_string()));
        Ok(())
    }

    fn put_customer(
        &mut self,
        account_id: &str,
        customer_id: &str,
        profile: &Properties,
        created_at: &str,
    ) -> Result<(), StoreError> {
        let row = self
            .customers
            .entry((account_id.to_string(), customer_id.to_string()))
            .or_insert_with(|| (Properties::new(), created_at.to_string()));
        row.0 = profile.clone();
        Ok(())
    }

    fn start_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        let key = (account_id.to_string(), customer_id.to_string());
        match self.customer_erasures.insert(key, (at.to_string(), None)) {
            None => Ok(()),
            Some(_) => Err(duplicate("customer_erasures", customer_id)),
        }
    }

    fn advance_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        service_id: &str,
    ) -> Result<(), StoreError> {
        if let Some(row) = self.customer_erasures.get_mut(&(account_id.to_string(), customer_id.to_string()))
        {
            row.1 = Some(service_id.to_string());
        }
        Ok(())
    }

    fn end_customer_erasure(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError> {
        self.customer_erasures.remove(&(account_id.to_string(), customer_id.to_string()));
        Ok(())
    }

    fn delete_customer(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError> {
        self.customers.remove(&(account_id.to_string(), customer_id.to_string()));
        Ok(())
    }

    fn insert_identification_key(
        &mut self,
        account_id: &str,
        key: &IdentificationKeyDefined,
    ) -> Result<(), StoreError> {
        let position =
            self.identification_keys.keys().filter(|(account, _)| account == account_id).count() + 1;
        match self
            .identification_keys
            .insert((account_id.to_string(), key.name.clone()), (position, key.clone()))
        {
            None => Ok(()),
            Some(_) => Err(duplicate("identification_keys", &key.name)),
        }
    }

    fn set_journey_settings(
        &mut self,
        account_id: &str,
        settings: &JourneySettingsSet,
    ) -> Result<(), StoreError> {
        self.journey_settings.insert(account_id.to_string(), settings.clone());
        Ok(())
    }

    fn add_counts(
        &mut self,
        account_id: &str,
        counter: Counter,
        keys: &[&str],
        deltas: &[i64],
    ) -> Result<(), StoreError> {
        self.counters.add(account_id, counter, keys, deltas);
        Ok(())
    }

    fn insert_abandoned(&mut self, account_id: &str, row: AbandonedRow) -> Result<(), StoreError> {
        self.abandoned.push((account_id.to_string(), row));
        Ok(())
    }

    fn redact_abandoned(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError> {
        for (account, row) in &mut self.abandoned {
            if account == account_id && row.service_id == service_id {
                row.detail = super::analytics::redacted_detail(&row.detail)?;
            }
        }
        Ok(())
    }
}

impl MemoryTables {
    /// Inserts every row into the (empty) projection tables of `conn`, in primary key order.
    pub fn write_to(&self, conn: &Connection) -> Result<(), StoreError> {
        self.write_context_to(conn)?;
        self.write_journeys_to(conn)?;
        self.write_analytics_to(conn)
    }

    fn write_analytics_to(&self, conn: &Connection) -> Result<(), StoreError> {
        self.counters.write(conn)?;
        let mut insert = conn.prepare(INSERT_ABANDONED)?;
        for (account_id, row) in &self.abandoned {
            insert.execute(params![
                account_id,
                row.ended_at,
                row.service_id,
                row.service_type,
                row.hour,
                row.media_type,
                row.state_type,
                row.detail
            ])?;
        }
        Ok(())
    }

    fn write_journeys_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO services (account_id, service_id, customer_id, contact_key, started_at, active,
                                   auto_complete_at, expires_at, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        for ((account_id, service_id), doc) in services {
            let c = ServiceColumns::of(doc);
            insert.execute(params![
                account_id,
                service_id,
                c.customer_id,
                c.contact_key,
                c.started_at,
                c.active,
                c.auto_complete_at,
                c.expires_at,
                c.document
            ])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO customer_erasures (account_id, customer_id, started_at, erased_through) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for ((account_id, customer_id), (started_at, erased_through)) in &self.customer_erasures {
            insert.execute(params![account_id, customer_id, started_at, erased_through])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO customers (account_id, customer_id, profile, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut attributes = Vec::new();
        for ((account_id, customer_id), (profile, created_at)) in &self.customers {
            let text = serde_json::to_string(profile).expect("a profile serializes");
            insert.execute((account_id, customer_id, text, created_at))?;
            for (name, value) in attribute_values(profile) {
                attributes.push((account_id, name, value, customer_id));
            }
        }
        attributes.sort();
        let mut insert = conn.prepare(
            "INSERT INTO customer_attributes (account_id, name, value, customer_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for row in attributes {
            insert.execute(row)?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO identification_keys (account_id, name, position, source, attributes, is_unique)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for ((account_id, name), (position, key)) in &self.identification_keys {
            let names = serde_json::to_string(&key.attributes).expect("names serialize");
            insert.execute(params![account_id, name, *position as i64, key.source, names, key.unique])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO journey_settings (account_id, auto_complete_after, abandon_dispositions) VALUES (?1, ?2, ?3)",
        )?;
        for (account_id, settings) in &self.journey_settings {
            let dispositions = settings
                .abandon_dispositions
                .as_ref()
                .map(|list| serde_json::to_string(list).expect("names serialize"));
            insert.execute(params![account_id, settings.auto_complete_after, dispositions])?;
        }
        Ok(())
    }

    fn write_context_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO accounts (account_id, created_at, writes_per_second) VALUES (?1, ?2, ?3)",
        )?;
        for (account_id, (created_at, writes_per_second)) in &self.accounts {
            insert.execute((account_id, created_at, writes_per_second))?;
        }
        let mut insert = conn
            .prepare("INSERT INTO api_keys (key_hash, key_id, account_id, issued_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (hash, (key_id, account_id, issued_at, revoked_at)) in &self.api_keys {
            insert.execute((hash, key_id, account_id, issued_at, revoked_at))?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO namespaces (account_id, namespace, created_at, ttl_second, deleting_since)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for ((account_id, namespace), (created_at, ttl, deleting_since)) in &self.namespaces {
            insert.execute(params![account_id, namespace, created_at, ttl, deleting_since])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO session_ttls (account_id, namespace, session_id, ttl_second, ttl_set_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (session, (ttl, set_at)) in sorted(&self.session_ttls) {
            let (account_id, namespace, session_id) = split(session);
            insert.execute(params![account_id, namespace, session_id, ttl, set_at])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO properties (account_id, namespace, session_id, key, value, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (session, properties) in sorted(&self.properties) {
            let (account_id, namespace, session_id) = split(session);
            for (key, (value, expires_at)) in properties {
                insert.execute(params![account_id, namespace, session_id, key, value, expires_at])?;
            }
        }
        Ok(())
    }
}

/// A hash map's entries in key order.
fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::events::*;
    use crate::projections::tables::SqlTables;
    use crate::projections::{apply, checksums};
    use crate::store::log::RecordedEvent;

    fn properties(pairs: &[(&str, serde_json::Value)]) -> Properties {
        pairs.iter().map(|(key, value)| (key.to_string(), JsonText::from_value(value))).collect()
    }

    /// Every event type, including rewrites, deletes of absent rows and re-creation.
    fn script() -> Vec<(&'static str, Event)> {
        let s = |id: &str| (String::from("ns"), id.to_string());
        let patched = |id: &str, pairs: &[(&str, serde_json::Value)], expires: bool| {
            Event::PropertiesPatched(PropertiesPatched {
                namespace: s(id).0,
                session_id: s(id).1,
                properties: properties(pairs),
                expires_at: expires.then(|| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()),
            })
        };
        vec![
            ("acme", Event::AccountCreated(AccountCreated { account_id: "acme".into() })),
            (
                "acme",
                Event::ApiKeyIssued(ApiKeyIssued {
                    account_id: "acme".into(),
                    key_id: "k1".into(),
                    key_hash: "h1".into(),
                }),
            ),
            ("acme", Event::ApiKeyRevoked(ApiKeyRevoked { account_id: "acme".into(), key_id: "k1".into() })),
            (
                "acme",
                Event::AccountLimitsSet(AccountLimitsSet {
                    account_id: "acme".into(),
                    writes_per_second: Some(50),
                }),
            ),
            (
                "acme",
                Event::ApiKeyIssued(ApiKeyIssued {
                    account_id: "acme".into(),
                    key_id: "k2".into(),
                    key_hash: "h2".into(),
                }),
            ),
            (
                "acme",
                Event::NamespaceCreated(NamespaceCreated {
                    namespace: "ns".into(),
                    ttl_second: None,
                    implicit: false,
                }),
            ),
            ("acme", Event::NamespaceTtlSet(NamespaceTtlSet { namespace: "ns".into(), ttl_second: 60 })),
            ("acme", patched("a", &[("x", 1.into()), ("y", "two".into())], false)),
            ("acme", patched("a", &[("x", serde_json::json!({"deep": [1, null]}))], true)),
            ("acme", patched("b", &[("z", true.into())], true)),
            (
                "acme",
                Event::SessionTtlSet(SessionTtlSet {
                    namespace: "ns".into(),
                    session_id: "b".into(),
                    ttl_second: 5,
                }),
            ),
            (
                "acme",
                Event::SessionTtlSet(SessionTtlSet {
                    namespace: "ns".into(),
                    session_id: "b".into(),
                    ttl_second: 7,
                }),
            ),
            (
                "acme",
                Event::PropertyDeleted(PropertyDeleted {
                    namespace: "ns".into(),
                    session_id: "a".into(),
                    property: "y".into(),
                }),
            ),
            (
                "acme",
                Event::PropertyDeleted(PropertyDeleted {
                    namespace: "ns".into(),
                    session_id: "a".into(),
                    property: "absent".into(),
                }),
            ),
            (
                "acme",
                Event::PropertiesExpired(PropertiesExpired {
                    namespace: "ns".into(),
                    session_id: "b".into(),
                    properties: vec!["z".into()],
                }),
            ),
            ("acme", patched("c", &[("k", 3.into())], false)),
            (
                "acme",
                Event::SessionPropertiesCleared(SessionPropertiesCleared {
                    namespace: "ns".into(),
                    session_id: "c".into(),
                }),
            ),
            ("globex", patched("a", &[("other", "tenant".into())], false)),
            (
                "acme",
                Event::SessionDeleted(SessionDeleted {
                    namespace: "ns".into(),
                    session_id: "b".into(),
                    cause: None,
                }),
            ),
            ("acme", Event::NamespaceDeleted(NamespaceDeleted { namespace: "ns".into() })),
            (
                "acme",
                Event::NamespaceCreated(NamespaceCreated {
                    namespace: "ns".into(),
                    ttl_second: Some(9),
                    implicit: true,
                }),
            ),
            // A delete in steps, left midway: of a registered namespace and of one never registered.
            ("acme", Event::NamespaceDeletionStarted(NamespaceDeletionStarted { namespace: "ns".into() })),
            ("acme", Event::NamespaceDeletionStarted(NamespaceDeletionStarted { namespace: "other".into() })),
        ]
        .into_iter()
        .chain(journey_script())
        .collect()
    }

    /// Every journey event type, written as stored payloads.
    fn journey_script() -> Vec<(&'static str, Event)> {
        let t = r#"{"timestamp":"2026-01-01T00:00:00Z","channel":{"media_type":"voice"}}"#;
        let start = |id: &str, extra: &str| {
            format!(
                r#"{{"service_id":"{id}","service_type":"billing","customer_id":"c1","contact_key":"k",
                    "opening":{{"est_duration":60,"started":{t},"extensions":{{"E":{{"a":1}}}}}},
                    "auto_complete_after":60,"expiry":{{"ttl":{extra},"expiration_time":null}}}}"#
            )
        };
        let closing = format!(
            r#"{{"completed":{t},"disposition":"ok","disposition_desc":"d","closed_by":"state_ended"}}"#
        );
        let payloads = [
            ("ServiceStarted", start("s1", "3600")),
            ("ServiceStarted", start("s2", "null")),
            ("ServiceStarted", start("s3", "null")),
            ("StateStarted", format!(r#"{{"service_id":"s1","state_id":1,"state_type":"ivr","previous_state_id":null,"opening":{{"est_duration":null,"started":{t}}}}}"#)),
            ("TaskStarted", format!(r#"{{"service_id":"s1","task_id":1,"state_id":1,"task_type":"t","opening":{{"est_duration":5,"started":{t}}}}}"#)),
            ("TaskEnded", format!(r#"{{"service_id":"s1","task_id":1,"closing":{closing}}}"#)),
            ("ExtensionReplaced", r#"{"service_id":"s1","item":{"state":1},"name":"N","value":[{"a":1}]}"#.to_string()),
            ("StateEnded", format!(r#"{{"service_id":"s1","state_id":1,"closing":{closing}}}"#)),
            ("ServiceAssociated", r#"{"service_id":"s1","customer_id":"c2","previous_customer_id":"c1","service_type":null,"channel":{"media_type":"chat"}}"#.to_string()),
            ("ServiceExpirySet", r#"{"service_id":"s1","expiry":{"ttl":null,"expiration_time":"2027-01-01T00:00:00Z"}}"#.to_string()),
            ("ServiceEnded", format!(r#"{{"service_id":"s1","closing":{closing}}}"#)),
            ("ServiceAutoCompleted", r#"{"service_id":"s2","completed_at":"2026-01-01T00:10:00Z","idle_since":"2026-01-01T00:00:00Z"}"#.to_string()),
            ("ServiceDeleted", r#"{"service_id":"s3"}"#.to_string()),
            ("ServiceStarted", start("s4", "1")),
            ("ServiceExpired", r#"{"service_id":"s4","expired_at":"2026-01-01T00:10:00Z"}"#.to_string()),
            ("CustomerCreated", r#"{"customer_id":"c1","profile":{"Email":"a@x.org","P":{"n":"1"}}}"#.to_string()),
            ("CustomerCreated", r#"{"customer_id":"c2","profile":{"Email":["b@x.org","c@x.org"]}}"#.to_string()),
            ("CustomerReplaced", r#"{"customer_id":"c1","profile":{"Email":"d@x.org","P":{"n":"1"}}}"#.to_string()),
            ("IdentificationKeyDefined", r#"{"name":"k","source":"profile","attributes":["Email"],"unique":true}"#.to_string()),
            ("IdentificationKeyDefined", r#"{"name":"j","source":"P","attributes":["n"],"unique":false}"#.to_string()),
            ("JourneySettingsSet", r#"{"auto_complete_after":300,"abandon_dispositions":["gave_up"]}"#.to_string()),
            ("ServiceErased", r#"{"service_id":"s1","customer_id":"c2"}"#.to_string()),
            ("ServiceErased", r#"{"service_id":"s3","customer_id":"c2"}"#.to_string()),
            ("CustomerErased", r#"{"customer_id":"c2","services":["s1","s3"],"redacted":[]}"#.to_string()),
            ("SessionErased", r#"{"namespace":"ns","session_id":"b","redacted":[]}"#.to_string()),
            // An erasure in steps, left midway.
            ("CustomerErasureStarted", r#"{"customer_id":"c1","redacted":[]}"#.to_string()),
            ("ServiceErased", r#"{"service_id":"s2","customer_id":"c1","redacted":[{"seq":1,"redacted_sha256":"00"}]}"#.to_string()),
        ];
        payloads.into_iter().map(|(kind, data)| ("acme", Event::decode(kind, &data).unwrap())).collect()
    }

    #[test]
    fn the_script_has_every_event_type() {
        let script = script();
        for kind in crate::domain::events::EVENT_TYPES {
            assert!(
                script.iter().any(|(_, event)| event.event_type() == *kind),
                "{kind} is not in the script"
            );
        }
    }

    #[test]
    fn sql_and_memory_tables_end_in_the_same_rows_for_every_event_type() {
        let mut live = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut live).unwrap();
        let mut memory = MemoryTables::default();
        for (seq, (account, event)) in script().into_iter().enumerate() {
            let recorded = RecordedEvent {
                id: seq as u64 + 1,
                seq: seq as u64 + 1,
                account: account.into(),
                stream: event.stream(account),
                stream_version: 1,
                event,
                meta: "{}".into(),
                recorded_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, seq as u32).unwrap(),
            };
            let mut tables = SqlTables::new(&live);
            apply(&mut tables, &recorded).unwrap();
            tables.finish().unwrap().write(&live).unwrap();
            apply(&mut memory, &recorded).unwrap();
        }
        let mut rebuilt = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut rebuilt).unwrap();
        memory.write_to(&rebuilt).unwrap();
        assert_eq!(checksums(&live).unwrap(), checksums(&rebuilt).unwrap());
        let properties: i64 =
            live.query_row("SELECT count(*) FROM properties", [], |row| row.get(0)).unwrap();
        assert_eq!(properties, 2, "acme's session a keeps x, globex's session a keeps its own");
    }

    #[test]
    fn a_log_that_inserts_a_row_twice_is_reported_as_corrupt() {
        let mut memory = MemoryTables::default();
        memory.insert_account("acme", "t").unwrap();
        assert!(matches!(memory.insert_account("acme", "t"), Err(StoreError::Corrupt(_))));
    }
}
