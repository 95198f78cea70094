//! Every event type, its payload, its schema version and the stream it belongs to.
//! `docs/EVENTS.md` describes each one; the names here are the `event_type` column.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use serde_json::value::RawValue;

pub use super::erasure::{CustomerErased, CustomerErasureStarted, ServiceErased, SessionErased};
pub use super::journeys::events::{
    CustomerCreated, CustomerReplaced, ExtensionReplaced, IdentificationKeyDefined, JourneySettingsSet,
    ServiceAssociated, ServiceAutoCompleted, ServiceDeleted, ServiceEnded, ServiceExpired, ServiceExpirySet,
    ServiceStarted, StateEnded, StateStarted, TaskEnded, TaskStarted,
};

/// A JSON value kept as its compact text: validated and normalized once where it enters (HTTP),
/// then stored and returned without being parsed again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The compact form of `value`.
    pub fn from_value(value: &serde_json::Value) -> JsonText {
        JsonText(serde_json::value::to_raw_value(value).expect("a JSON value always serializes"))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// A value as the projections store it (compact JSON written by `from_value`); a stored
    /// text that does not read as JSON (which they never hold) reads as null.
    pub fn from_stored(text: String) -> JsonText {
        match RawValue::from_string(text) {
            Ok(raw) => JsonText(raw),
            Err(_) => JsonText::from_value(&serde_json::Value::Null),
        }
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Property names and their values, in name order.
pub type Properties = BTreeMap<String, JsonText>;

/// An event about to be appended, with the account whose log it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub account: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub account_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyIssued {
    pub account_id: String,
    /// Public identifier of the key.
    pub key_id: String,
    /// sha256 of the key, hex; the key itself is shown once and never stored.
    pub key_hash: String,
    /// The key's name among the account's keys, recorded as the actor of what it writes
    /// (`key:<name>`). Version 1 has none: the account's one key, `default`.
    #[serde(default = "default_key_name")]
    pub name: String,
    /// What the key may do. Version 1 has none: everything (`write`).
    #[serde(default)]
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub account_id: String,
    pub key_id: String,
    /// The revoked key's name (version 1 has none: `default`).
    #[serde(default = "default_key_name")]
    pub name: String,
}

/// The name of the key `POST /admin/accounts/{id}/api-key` issues and replaces, and of every key
/// issued before keys had names.
pub const DEFAULT_KEY_NAME: &str = "default";

fn default_key_name() -> String {
    DEFAULT_KEY_NAME.to_string()
}

/// What an API key may do; each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read context, journeys and analytics.
    Read,
    /// Read, and read the audit surface: history, as-of reads, the feed and its stream, the
    /// chain's verification and signed head.
    Audit,
    /// Everything an account's key can do: read, audit, write, erase.
    #[default]
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Audit => "audit",
            Role::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Read, Role::Audit, Role::Write].into_iter().find(|role| role.as_str() == text)
    }
}

/// The account's own limits (`PUT /admin/accounts/{id}/limits`); `None`: the server's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountLimitsSet {
    pub account_id: String,
    pub writes_per_second: Option<u32>,
}

/// The account's retention (`PUT /admin/accounts/{id}/retention`): the sweeper archives its
/// events older than `days`; `None`: keep everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionSet {
    pub account_id: String,
    pub days: Option<u32>,
}

/// The account's events up to `through_seq` moved out of the live log into the segment file
/// `segment` (docs/AUDIT.md, "Archives"). Appended after them, it is the snapshot of the
/// account's projections as of `through_seq`: the rows are kept stream by stream beside the
/// log (`snapshot_streams`), and `snapshot_sha256` — part of this event, so of the chain —
/// covers them. Rebuilds start from them and replay the events after `through_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogArchived {
    /// The first and last positions the segment holds.
    pub first_seq: u64,
    pub through_seq: u64,
    /// Hex of the chain's link before `first_seq` and at `through_seq`: the segment connects
    /// to the log before it and to the live log after it.
    pub previous_hash: String,
    pub through_hash: String,
    /// When the event at `through_seq` was recorded.
    pub through_recorded_at: String,
    /// The file name of the segment, and the sha256 of its bytes.
    pub segment: String,
    pub segment_sha256: String,
    /// The streams the snapshot holds, and the sha256 over each one's (stream, version, digest).
    pub streams: u64,
    pub snapshot_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceCreated {
    pub namespace: String,
    /// Namespace TTL given at creation, if any.
    pub ttl_second: Option<u64>,
    /// True when the namespace came into being by a property write rather than by POST.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceTtlSet {
    pub namespace: String,
    pub ttl_second: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDeleted {
    pub namespace: String,
}

/// A namespace too large to delete in one step reads as deleted from here on; its sessions'
/// `SessionDeleted` events follow in steps, then `NamespaceDeleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDeletionStarted {
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesPatched {
    pub namespace: String,
    pub session_id: String,
    /// The keys written and their new values; keys not listed are untouched.
    pub properties: Properties,
    /// Expiry stamped at write time by the TTL rule; absent: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyDeleted {
    pub namespace: String,
    pub session_id: String,
    pub property: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPropertiesCleared {
    pub namespace: String,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDeleted {
    pub namespace: String,
    pub session_id: String,
    /// Set when the session went with its namespace (`namespace_deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTtlSet {
    pub namespace: String,
    pub session_id: String,
    pub ttl_second: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesExpired {
    pub namespace: String,
    pub session_id: String,
    pub properties: Vec<String>,
}

/// Declares the event enum with, for each type, its schema version, so that the type name,
/// the version and the payload codec can never disagree.
macro_rules! event_types {
    ($($name:ident = $version:literal),* $(,)?) => {
        /// Every event ctxd records.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event { $($name($name)),* }

        /// All event type names, for docs and tests.
        pub const EVENT_TYPES: &[&str] = &[$(stringify!($name)),*];

        impl Event {
            /// The `event_type` column: the variant's name.
            pub fn event_type(&self) -> &'static str {
                match self { $(Event::$name(_) => stringify!($name)),* }
            }

            /// The `event_version` column: the schema version of the payload.
            pub fn event_version(&self) -> u32 {
                match self { $(Event::$name(_) => $version),* }
            }

            /// The payload as compact JSON, for the `data` column.
            pub fn data_json(&self) -> String {
                let encoded = match self { $(Event::$name(payload) => serde_json::to_string(payload)),* };
                encoded.expect("event payloads are plain data and always serialize")
            }

            /// Reads a stored event back from its type name and payload.
            pub fn decode(event_type: &str, data: &str) -> Result<Event, DecodeError> {
                match event_type {
                    $(stringify!($name) => Ok(Event::$name(serde_json::from_str(data)?)),)*
                    other => Err(DecodeError::UnknownType(other.to_string())),
                }
            }
        }
    };
}

event_types! {
    AccountCreated = 1,
    ApiKeyIssued = 2,
    ApiKeyRevoked = 2,
    AccountLimitsSet = 1,
    RetentionSet = 1,
    LogArchived = 1,
    NamespaceCreated = 1,
    NamespaceTtlSet = 1,
    NamespaceDeleted = 1,
    NamespaceDeletionStarted = 1,
    PropertiesPatched = 1,
    PropertyDeleted = 1,
    SessionPropertiesCleared = 1,
    SessionDeleted = 1,
    SessionTtlSet = 1,
    PropertiesExpired = 1,
    ServiceStarted = 1,
    ServiceEnded = 1,
    ServiceAutoCompleted = 1,
    ServiceAssociated = 1,
    ServiceExpirySet = 1,
    ServiceDeleted = 1,
    ServiceExpired = 1,
    StateStarted = 1,
    StateEnded = 1,
    TaskStarted = 1,
    TaskEnded = 1,
    ExtensionReplaced = 1,
    CustomerCreated = 1,
    CustomerReplaced = 1,
    IdentificationKeyDefined = 1,
    JourneySettingsSet = 1,
    CustomerErased = 1,
    CustomerErasureStarted = 1,
    SessionErased = 1,
    ServiceErased = 1,
}

/// A stored event that this binary cannot read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("malformed event payload: {0}")]
    Payload(#[from] serde_json::Error),
}

impl Event {
    /// Whether this event, stored in `stream` of `account`'s log, is one of that account's
    /// events: its stream is the one it belongs to there, and an account event names that
    /// account. An import checks every event with it, so that no file can write to another
    /// account (an API key, say) from inside its own log.
    pub fn is_of(&self, account: &str, stream: &str) -> bool {
        let named = match self {
            Event::AccountCreated(AccountCreated { account_id })
            | Event::ApiKeyIssued(ApiKeyIssued { account_id, .. })
            | Event::ApiKeyRevoked(ApiKeyRevoked { account_id, .. })
            | Event::AccountLimitsSet(AccountLimitsSet { account_id, .. })
            | Event::RetentionSet(RetentionSet { account_id, .. }) => Some(account_id),
            _ => None,
        };
        named.is_none_or(|named| named == account) && self.stream(account) == stream
    }

    /// Whether this event starts a command that ctxd carries on in steps (answered 202).
    pub fn starts_steps(&self) -> bool {
        matches!(self, Event::NamespaceDeletionStarted(_) | Event::CustomerErasureStarted(_))
    }

    /// The stream this event belongs to within `account`'s log.
    pub fn stream(&self, account: &str) -> String {
        match self {
            Event::AccountCreated(_)
            | Event::ApiKeyIssued(_)
            | Event::ApiKeyRevoked(_)
            | Event::AccountLimitsSet(_)
            | Event::RetentionSet(_)
            | Event::LogArchived(_) => account_stream(account),
            Event::NamespaceCreated(NamespaceCreated { namespace, .. })
            | Event::NamespaceTtlSet(NamespaceTtlSet { namespace, .. })
            | Event::NamespaceDeleted(NamespaceDeleted { namespace })
            | Event::NamespaceDeletionStarted(NamespaceDeletionStarted { namespace }) => {
                namespace_stream(account, namespace)
            }
            Event::PropertiesPatched(PropertiesPatched { namespace, session_id, .. })
            | Event::PropertyDeleted(PropertyDeleted { namespace, session_id, .. })
            | Event::SessionPropertiesCleared(SessionPropertiesCleared { namespace, session_id })
            | Event::SessionDeleted(SessionDeleted { namespace, session_id, .. })
            | Event::SessionTtlSet(SessionTtlSet { namespace, session_id, .. })
            | Event::PropertiesExpired(PropertiesExpired { namespace, session_id, .. })
            | Event::SessionErased(SessionErased { namespace, session_id, .. }) => {
                session_stream(account, namespace, session_id)
            }
            Event::ServiceStarted(ServiceStarted { service_id, .. })
            | Event::ServiceEnded(ServiceEnded { service_id, .. })
            | Event::ServiceAutoCompleted(ServiceAutoCompleted { service_id, .. })
            | Event::ServiceAssociated(ServiceAssociated { service_id, .. })
            | Event::ServiceExpirySet(ServiceExpirySet { service_id, .. })
            | Event::ServiceDeleted(ServiceDeleted { service_id })
            | Event::ServiceExpired(ServiceExpired { service_id, .. })
            | Event::StateStarted(StateStarted { service_id, .. })
            | Event::StateEnded(StateEnded { service_id, .. })
            | Event::TaskStarted(TaskStarted { service_id, .. })
            | Event::TaskEnded(TaskEnded { service_id, .. })
            | Event::ExtensionReplaced(ExtensionReplaced { service_id, .. })
            | Event::ServiceErased(ServiceErased { service_id, .. }) => service_stream(account, service_id),
            Event::CustomerCreated(CustomerCreated { customer_id, .. })
            | Event::CustomerReplaced(CustomerReplaced { customer_id, .. })
            | Event::CustomerErased(CustomerErased { customer_id, .. })
            | Event::CustomerErasureStarted(CustomerErasureStarted { customer_id, .. }) => {
                customer_stream(account, customer_id)
            }
            Event::IdentificationKeyDefined(_) | Event::JourneySettingsSet(_) => {
                journey_settings_stream(account)
            }
        }
    }
}

/// Stream of one service with its states and tasks.
pub fn service_stream(account: &str, service_id: &str) -> String {
    format!("svc/{}/{}", escape(account), escape(service_id))
}

/// Stream of one customer profile.
pub fn customer_stream(account: &str, customer_id: &str) -> String {
    format!("cust/{}/{}", escape(account), escape(customer_id))
}

/// Stream of an account's identification keys and journey settings.
pub fn journey_settings_stream(account: &str) -> String {
    format!("cs/{}", escape(account))
}

/// Stream of an account's lifecycle and keys.
pub fn account_stream(account: &str) -> String {
    format!("account/{}", escape(account))
}

/// Stream of a namespace's registration and TTL.
pub fn namespace_stream(account: &str, namespace: &str) -> String {
    format!("ns/{}/{}", escape(account), escape(namespace))
}

/// Stream of one context session (namespace properties are session `__default__`).
pub fn session_stream(account: &str, namespace: &str, session_id: &str) -> String {
    format!("ctx/{}/{}/{}", escape(account), escape(namespace), escape(session_id))
}

/// The ranges `[from, to)` of stream ids that hold `account`'s streams, in stream order:
/// its account and settings streams (one id each), then its sessions', customers',
/// namespaces' and services' (every id under a prefix; an account id, escaped, has no `/`).
pub fn account_stream_ranges(account: &str) -> Vec<(String, String)> {
    let one = |stream: String| {
        let to = format!("{stream}\u{1}");
        (stream, to)
    };
    let under =
        |prefix: &str| (format!("{prefix}/{}/", escape(account)), format!("{prefix}/{}0", escape(account)));
    vec![
        one(account_stream(account)),
        one(journey_settings_stream(account)),
        under("ctx"),
        under("cust"),
        under("ns"),
        under("svc"),
    ]
}

/// Names may contain `/`; escaping it (and `%`) keeps stream ids unambiguous.
fn escape(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['/', '%']) { name.replace('%', "%25").replace('/', "%2F").into() } else { name.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        let event = Event::PropertiesPatched(PropertiesPatched {
            namespace: "ns".into(),
            session_id: "s".into(),
            properties: serde_json::from_str(r#"{"a":1,"b":{"c":[true,null]}}"#).unwrap(),
            expires_at: None,
        });
        let decoded = Event::decode(event.event_type(), &event.data_json()).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn stream_ids_cannot_collide_through_slashes_in_names() {
        assert_ne!(session_stream("a", "b/c", "d"), session_stream("a", "b", "c/d"));
    }
}
