//! `MemoryTables`: the projection tables held in memory while the log is replayed, then stored
//! once, in primary key order (see `tables.rs`).

use std::collections::{BTreeMap, HashMap};

use super::analytics::{AbandonedRow, Counter};
use super::tables::{PendingCounts, PropertyRow, SessionKey, Tables};
use crate::domain::events::{Properties, Role};
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
pub type PropertyValues = (String, Option<i64>);

/// A namespace: (created_at, ttl_second, deleting_since).
pub type NamespaceRow = (String, Option<u64>, Option<String>);

/// The projection tables held in memory; `write_to` stores them in primary key order.
#[derive(Debug, Default)]
pub struct MemoryTables {
    /// Reused for session lookups.
    buffer: String,
    /// `created_at`, `writes_per_second` and `retention_days` by account.
    accounts: BTreeMap<String, (String, Option<u32>, Option<u32>)>,
    /// key hash → its row
    api_keys: BTreeMap<String, ApiKeyRow>,
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
    /// The positions of each erasure's start and of its last advance (`Tables::
    /// start_customer_erasure`); 0 for one loaded from a snapshot.
    erasure_positions: HashMap<(String, String), (u64, u64)>,
    /// (account, key name) → (position, key)
    identification_keys: BTreeMap<(String, String), (usize, IdentificationKeyDefined)>,
    journey_settings: BTreeMap<String, JourneySettingsSet>,
    counters: PendingCounts,
    abandoned: Vec<(String, AbandonedRow)>,
}

fn duplicate(table: &str, key: &str) -> StoreError {
    StoreError::Corrupt(format!("the log inserts {key} into {table} twice"))
}

/// A row of `api_keys`, as the SQL tables hold it.
#[derive(Debug, Clone)]
struct ApiKeyRow {
    key_id: String,
    account_id: String,
    issued_at: String,
    revoked_at: Option<String>,
    name: String,
    role: Role,
}

impl Tables for MemoryTables {
    fn insert_account(&mut self, account_id: &str, created_at: &str) -> Result<(), StoreError> {
        match self.accounts.insert(account_id.to_string(), (created_at.to_string(), None, None)) {
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
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        let row = ApiKeyRow {
            key_id: key_id.to_string(),
            account_id: account_id.to_string(),
            issued_at: issued_at.to_string(),
            revoked_at: None,
            name: name.to_string(),
            role,
        };
        match self.api_keys.insert(key_hash.to_string(), row) {
            None => Ok(()),
            Some(_) => Err(duplicate("api_keys", key_id)),
        }
    }

    fn revoke_api_key(&mut self, account_id: &str, key_id: &str, revoked_at: &str) -> Result<(), StoreError> {
        for row in self.api_keys.values_mut() {
            if row.key_id == key_id && row.account_id == account_id && row.revoked_at.is_none() {
                row.revoked_at = Some(revoked_at.to_string());
            }
        }
        Ok(())
    }

    fn set_account_limits(
        &mut self,
        account_id: &str,
        writes_per_second: Option<u32>,
    ) -> Result<(), StoreError> {
        if let Some((_, limit, _)) = self.accounts.get_mut(account_id) {
            *limit = writes_per_second;
        }
        Ok(())
    }

    fn set_account_retention(&mut self, account_id: &str, days: Option<u32>) -> Result<(), StoreError> {
        if let Some((_, _, retention)) = self.accounts.get_mut(account_id) {
            *retention = days;
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
        seq: u64,
    ) -> Result<(), StoreError> {
        let key = (account_id.to_string(), customer_id.to_string());
        self.erasure_positions.insert(key.clone(), (seq, seq));
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
        seq: u64,
    ) -> Result<(), StoreError> {
        let key = (account_id.to_string(), customer_id.to_string());
        if let Some(row) = self.customer_erasures.get_mut(&key) {
            let (started, advanced) = self.erasure_positions.entry(key).or_default();
            // An advance of an earlier erasure of the customer, or one before the last, is
            // passed over: in stream order they may come after it.
            if seq > *started && seq > *advanced {
                row.1 = Some(service_id.to_string());
                *advanced = seq;
            }
        }
        Ok(())
    }

    fn end_customer_erasure(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError> {
        let key = (account_id.to_string(), customer_id.to_string());
        self.erasure_positions.remove(&key);
        self.customer_erasures.remove(&key);
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

mod snapshot;
#[cfg(test)]
mod tests;
mod write;

pub use snapshot::{ApiKey, CustomerRows, SessionRows, StreamState};
