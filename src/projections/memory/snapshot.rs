//! The projections of one account as of an archive's cut, stream by stream (docs/AUDIT.md,
//! "Archives"): what `MemoryTables` holds, split into the state each stream's events produced,
//! and loaded back before the events after the cut are replayed. A stream's state is the
//! unit a snapshot hashes, and the unit an erasure would redact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ApiKeyRow, MemoryTables, NamespaceRow, PropertyValues, split};
use crate::domain::events::{
    Properties, Role, account_stream, customer_stream, journey_settings_stream, namespace_stream,
    service_stream, session_stream,
};
use crate::domain::journeys::events::{IdentificationKeyDefined, JourneySettingsSet};
use crate::domain::journeys::service::ServiceDoc;
use crate::projections::analytics::{AbandonedRow, Counter};

/// The projection rows one stream's events produced (empty for a stream whose rows are gone:
/// a deleted session keeps its stream's version, and nothing else).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamState {
    /// The account's row: created at, writes per second, retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<(String, Option<u32>, Option<u32>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKey>,
    /// The namespace's name and row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<(String, NamespaceRow)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRows>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<AbandonedRow>,
    /// The archive segments (by their last position) that hold this stream's events: the ones
    /// an erasure of it rewrites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<u64>,
    /// The customers archived events gave this service to (`ServiceStarted`,
    /// `ServiceAssociated`), for an erasure of any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRows>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identification_keys: Vec<(usize, IdentificationKeyDefined)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journey_settings: Option<JourneySettingsSet>,
    /// The analytics counters' rows (kept with the account's stream): counter, keys after the
    /// account, values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<(Counter, Vec<String>, Vec<i64>)>,
}

/// A session's TTL and properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRows {
    pub namespace: String,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<(u64, String)>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropertyValues>,
}

/// A customer's profile (and when it was created), and their erasure in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRows {
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<(Properties, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<(String, Option<String>)>,
}

/// An API key's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key_hash: String,
    pub key_id: String,
    pub issued_at: String,
    pub revoked_at: Option<String>,
    pub name: String,
    pub role: Role,
}

fn at<'a>(
    streams: &'a mut BTreeMap<String, (String, StreamState)>,
    account: &str,
    stream: String,
) -> &'a mut StreamState {
    &mut streams.entry(stream).or_insert_with(|| (account.to_string(), StreamState::default())).1
}

fn customer<'a>(state: &'a mut StreamState, customer_id: &str) -> &'a mut CustomerRows {
    state.customer.get_or_insert_with(|| CustomerRows {
        customer_id: customer_id.to_string(),
        profile: None,
        erasure: None,
    })
}

impl MemoryTables {
    /// Every row, grouped by the stream whose events produced it, keyed by stream id; every
    /// account's rows (a snapshot folds one account, so there is one).
    pub fn into_streams(mut self) -> BTreeMap<String, (String, StreamState)> {
        let mut streams = self.take_stream_rows();
        let streams_ = &mut streams;
        for (account, (created_at, limit, retention)) in self.accounts {
            at(streams_, &account, account_stream(&account)).account = Some((created_at, limit, retention));
        }
        for (key_hash, key) in self.api_keys {
            let ApiKeyRow { key_id, account_id, issued_at, revoked_at, name, role } = key;
            let row = ApiKey { key_hash, key_id, issued_at, revoked_at, name, role };
            at(streams_, &account_id, account_stream(&account_id)).api_keys.push(row);
        }
        for ((account, customer_id), row) in self.customer_erasures {
            customer(at(streams_, &account, customer_stream(&account, &customer_id)), &customer_id).erasure =
                Some(row);
        }
        for ((account, _), key) in self.identification_keys {
            at(streams_, &account, journey_settings_stream(&account)).identification_keys.push(key);
        }
        for (account, settings) in self.journey_settings {
            at(streams_, &account, journey_settings_stream(&account)).journey_settings = Some(settings);
        }
        for (counter, mut key, values) in self.counters.into_rows() {
            let account = key.remove(0);
            at(streams_, &account, account_stream(&account)).counters.push((counter, key, values));
        }
        for (_, state) in streams.values_mut() {
            state.api_keys.sort_by(|a, b| a.key_hash.cmp(&b.key_hash));
            state.identification_keys.sort_by_key(|(position, _)| *position);
            state.counters.sort();
        }
        streams
    }

    /// Takes out the rows that belong to one stream each (`flush_stream_rows`' rows), grouped
    /// by stream as `into_streams` groups them, and keeps the account-wide ones: an archive's
    /// fold in stream order takes each stream's rows once its events are folded.
    pub fn take_stream_rows(&mut self) -> BTreeMap<String, (String, StreamState)> {
        let mut streams: BTreeMap<String, (String, StreamState)> = BTreeMap::new();
        let streams_ = &mut streams;
        for ((account, namespace), row) in std::mem::take(&mut self.namespaces) {
            at(streams_, &account, namespace_stream(&account, &namespace)).namespace =
                Some((namespace.clone(), row));
        }
        let session = |state: &mut StreamState, namespace: &str, session_id: &str| {
            state.session.get_or_insert_with(|| SessionRows {
                namespace: namespace.to_string(),
                session_id: session_id.to_string(),
                ttl: None,
                properties: BTreeMap::new(),
            });
        };
        for (joined, ttl) in std::mem::take(&mut self.session_ttls) {
            let (account, namespace, session_id) = split(&joined);
            let state = at(streams_, account, session_stream(account, namespace, session_id));
            session(state, namespace, session_id);
            state.session.as_mut().expect("set above").ttl = Some(ttl);
        }
        for (joined, properties) in std::mem::take(&mut self.properties) {
            let (account, namespace, session_id) = split(&joined);
            let state = at(streams_, account, session_stream(account, namespace, session_id));
            session(state, namespace, session_id);
            state.session.as_mut().expect("set above").properties = properties;
        }
        for ((account, service_id), doc) in std::mem::take(&mut self.services) {
            at(streams_, &account, service_stream(&account, &service_id)).service = Some(doc);
        }
        for (account, row) in std::mem::take(&mut self.abandoned) {
            at(streams_, &account, service_stream(&account, &row.service_id)).abandoned.push(row);
        }
        for ((account, customer_id), row) in std::mem::take(&mut self.customers) {
            customer(at(streams_, &account, customer_stream(&account, &customer_id)), &customer_id).profile =
                Some(row);
        }
        streams
    }

    /// Whether `stream` is the stream of a customer whose erasure is in progress: later
    /// services' events still change its rows (`advance_customer_erasure`).
    pub fn erasing(&self, stream: &str) -> bool {
        self.customer_erasures
            .keys()
            .any(|(account, customer_id)| customer_stream(account, customer_id) == stream)
    }

    /// Puts back the rows of one stream of `account` that `into_streams` took out.
    pub fn load_stream(&mut self, account: &str, state: StreamState) {
        let owned = || account.to_string();
        if let Some(row) = state.account {
            self.accounts.insert(owned(), row);
        }
        for key in state.api_keys {
            let ApiKey { key_hash, key_id, issued_at, revoked_at, name, role } = key;
            let row = ApiKeyRow { key_id, account_id: owned(), issued_at, revoked_at, name, role };
            self.api_keys.insert(key_hash, row);
        }
        if let Some(service) = state.service {
            self.services.insert((owned(), service.service_id.clone()), service);
        }
        for row in state.abandoned {
            self.abandoned.push((owned(), row));
        }
        if let Some(settings) = state.journey_settings {
            self.journey_settings.insert(owned(), settings);
        }
        for (position, key) in state.identification_keys {
            self.identification_keys.insert((owned(), key.name.clone()), (position, key));
        }
        for (counter, keys, values) in state.counters {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.counters.add(account, counter, &keys, &values);
        }
        if let Some((namespace, row)) = state.namespace {
            self.namespaces.insert((owned(), namespace), row);
        }
        if let Some(session) = state.session {
            let key = [account, &session.namespace, &session.session_id].join("\0");
            if let Some(ttl) = session.ttl {
                self.session_ttls.insert(key.clone(), ttl);
            }
            if !session.properties.is_empty() {
                self.properties.insert(key, session.properties);
            }
        }
        if let Some(customer) = state.customer {
            let key = (owned(), customer.customer_id);
            if let Some(profile) = customer.profile {
                self.customers.insert(key.clone(), profile);
            }
            if let Some(erasure) = customer.erasure {
                self.customer_erasures.insert(key, erasure);
            }
        }
    }
}
