//! Schemas of the success bodies that handlers build as JSON (or that projections serialize):
//! context store, history, audit, admin and operations. They describe the bytes sent; the
//! fuzzing in CI (`.ci/fuzz`) checks every answer against them.

#![allow(dead_code)] // these types describe bodies; the handlers build them

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// Any JSON value, stored and returned in compact form.
#[derive(ToSchema)]
#[schema(value_type = Value)]
pub struct AnyJson(Value);

/// `{"status": "ok" | "ready"}`.
#[derive(ToSchema)]
pub struct Status {
    pub status: String,
}

/// `POST /v1/account/{account}`: the namespace to create.
#[derive(ToSchema)]
pub struct NewNamespace {
    /// The namespace: 1 to 256 bytes, no control characters, not a reserved name.
    #[schema(example = "billing")]
    pub name: String,
}

/// A registered namespace.
#[derive(ToSchema)]
pub struct NamespaceInfo {
    pub name: String,
    /// When it was registered (UTC, milliseconds).
    #[schema(rename = "createdAt")]
    pub created_at: String,
    /// The namespace TTL in seconds, when one is set.
    #[schema(rename = "ttlSecond", minimum = 0)]
    pub ttl_second: Option<u64>,
}

/// `POST …/namespace/{namespace}/session`: the session whose TTL to set.
#[derive(ToSchema)]
pub struct SessionIdBody {
    #[schema(rename = "sessionId", example = "conv-42")]
    pub session_id: String,
}

/// A session with a TTL setting.
#[derive(ToSchema)]
pub struct SessionTtlInfo {
    #[schema(rename = "sessionId")]
    pub session_id: String,
    #[schema(rename = "createdAt")]
    pub created_at: String,
    #[schema(rename = "ttlSecond", minimum = 0)]
    pub ttl_second: u64,
}

/// A session and its unexpired properties.
#[derive(ToSchema)]
pub struct SessionProperties {
    #[schema(rename = "sessionId")]
    pub session_id: String,
    pub properties: BTreeMap<String, Value>,
}

/// Where a namespace delete that proceeds in steps stands.
#[derive(ToSchema)]
pub struct DeletionStatus {
    pub namespace: String,
    /// True while the delete proceeds; false when none is (done, or never asked).
    pub deleting: bool,
    #[schema(rename = "startedAt")]
    pub started_at: Option<String>,
    #[schema(rename = "sessionsLeft", minimum = 0)]
    pub sessions_left: u64,
}

/// A property's value before and after an event (null: absent).
#[derive(ToSchema)]
pub struct PropertyChange {
    #[schema(value_type = Value)]
    pub old: Option<Value>,
    #[schema(value_type = Value)]
    pub new: Option<Value>,
    /// The expiry the patch stamped on the new value.
    pub expires_at: Option<String>,
}

/// One event of a history: when, by whom, what changed.
#[derive(ToSchema)]
pub struct HistoryEntry {
    #[schema(minimum = 1)]
    pub seq: u64,
    pub recorded_at: String,
    /// `key:<key name>`, `admin`, `system:sweeper`, …
    pub actor: String,
    /// Whom the actor said it acted for (`On-Behalf-Of`).
    pub on_behalf_of: Option<String>,
    pub request_id: String,
    pub event_type: String,
    /// A session's entry: each property the event touched.
    pub properties: Option<BTreeMap<String, PropertyChange>>,
    /// A `SessionTtlSet`'s TTL.
    #[schema(minimum = 0)]
    pub ttl_second: Option<u64>,
    /// `namespace_deleted` for a session deleted with its namespace.
    pub cause: Option<String>,
    /// A service's entry: the event's payload as stored.
    #[schema(value_type = Option<Object>)]
    pub change: Option<Value>,
}

/// A page of a history, oldest first.
#[derive(ToSchema)]
pub struct History {
    pub history: Vec<HistoryEntry>,
    /// The `after` of the next page; absent on the last.
    #[schema(minimum = 0)]
    pub next_after: Option<u64>,
}

/// One event as the feed shows it.
#[derive(ToSchema)]
pub struct FeedEntry {
    #[schema(minimum = 1)]
    pub seq: u64,
    pub stream: String,
    #[schema(minimum = 1)]
    pub stream_version: u64,
    /// An event type of docs/EVENTS.md.
    #[schema(rename = "type")]
    pub event_type: String,
    #[schema(minimum = 0)]
    pub event_version: u32,
    pub recorded_at: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub meta: Value,
    /// The event's link in the hash chain, hex.
    pub hash: String,
}

/// A page of the account's events.
#[derive(ToSchema)]
pub struct FeedPage {
    pub events: Vec<FeedEntry>,
    #[schema(minimum = 0)]
    pub next_after: u64,
    pub has_more: bool,
}

/// One conversation's story: its sessions and services, and a page of their changes.
#[derive(ToSchema)]
pub struct ConversationStory {
    pub conversation_id: String,
    /// The context sessions named by the id (`namespace`, `session_id`).
    pub sessions: Vec<BTreeMap<String, String>>,
    /// The services whose start carried the id as `session_id` or `interaction_id`.
    pub services: Vec<String>,
    /// In the account's order: history entries (`seq`, `recorded_at`, `actor`, `on_behalf_of`,
    /// `request_id`, `event_type`), a session's with `namespace`, `session_id` and `properties`
    /// (old and new values), a service's with `service_id` and `change` (the event's payload).
    pub story: Vec<BTreeMap<String, Value>>,
    /// The `after` of the next page; absent on the last.
    #[schema(minimum = 0)]
    pub next_after: Option<u64>,
    /// Present once the account was archived: the story starts after this position.
    #[schema(minimum = 1)]
    pub archived_through_seq: Option<u64>,
}

/// The walk of an account's hash chain.
#[derive(ToSchema)]
pub struct ChainReport {
    pub intact: bool,
    #[schema(minimum = 0)]
    pub events: u64,
    #[schema(minimum = 0)]
    pub last_seq: u64,
    /// The hash of the last event walked, hex.
    pub head: String,
    /// The first event whose link does not hold, when not intact.
    #[schema(minimum = 1)]
    pub first_bad_seq: Option<u64>,
    pub reason: Option<String>,
}

/// The account's last event, signed with the store's key.
#[derive(ToSchema)]
pub struct SignedHead {
    pub account: String,
    #[schema(minimum = 1)]
    pub seq: u64,
    pub hash: String,
    pub recorded_at: String,
    /// The exact text signed (docs/AUDIT.md, "Signed heads").
    pub signed: String,
    /// Base64 of the Ed25519 signature over `signed`'s UTF-8 bytes.
    pub signature: String,
    /// Base64 of the raw 32-byte public key.
    pub public_key: String,
}

/// The key that verifies signed heads.
#[derive(ToSchema)]
pub struct PublicKey {
    /// Base64 of the raw 32-byte Ed25519 key.
    pub public_key: String,
}

/// Where a customer erasure that proceeds in steps stands.
#[derive(ToSchema)]
pub struct ErasureStatus {
    pub customer_id: String,
    pub erasing: bool,
    pub started_at: Option<String>,
    #[schema(minimum = 0)]
    pub services_left: u64,
}

/// `POST /admin/accounts`.
#[derive(ToSchema)]
pub struct NewAccount {
    #[schema(example = "acme")]
    pub account_id: String,
}

/// `{"account_id"}`.
#[derive(ToSchema)]
pub struct AccountId {
    pub account_id: String,
}

/// An account.
#[derive(ToSchema)]
pub struct AccountSummary {
    pub account_id: String,
    pub created_at: String,
    /// The id of the account's `default` key, if it has one.
    pub active_key_id: Option<String>,
}

/// The `default` key issued by `POST …/api-key`, shown this once.
#[derive(ToSchema)]
pub struct IssuedDefaultKey {
    pub account_id: String,
    pub key_id: String,
    pub api_key: String,
}

/// The answer to a retried key issue: the key was shown once and is not shown again.
#[derive(ToSchema)]
pub struct ReplayedKey {
    pub account_id: String,
    pub replayed: bool,
    pub message: String,
}

/// `POST …/keys`.
#[derive(ToSchema)]
pub struct NewKey {
    /// 1–64 lower-case ASCII letters, digits, `-`, `_`, `.`, starting with a letter or a digit; not `default`.
    #[schema(example = "bot-7")]
    pub name: String,
    /// `read`, `audit` or `write`.
    #[schema(example = "read")]
    pub role: String,
}

/// A named key, shown this once.
#[derive(ToSchema)]
pub struct IssuedKey {
    pub name: String,
    pub role: String,
    pub key_id: String,
    pub key: String,
}

/// An active key: never its secret.
#[derive(ToSchema)]
pub struct KeySummary {
    pub name: String,
    pub role: String,
    pub key_id: String,
    pub created_at: String,
    /// To the minute; null: never used.
    pub last_used_at: Option<String>,
}

/// An account's active keys, by name.
#[derive(ToSchema)]
pub struct KeyList {
    pub account_id: String,
    pub keys: Vec<KeySummary>,
}

/// `PUT …/limits`: the field is required; null is the server's default.
#[derive(ToSchema)]
pub struct NewLimits {
    #[schema(required = true, minimum = 1, maximum = 1_000_000)]
    pub writes_per_second: Option<u32>,
}

/// An account's limits.
#[derive(ToSchema)]
pub struct Limits {
    pub account_id: String,
    /// The account's own limit, or null.
    #[schema(required = true)]
    pub writes_per_second: Option<u32>,
    /// The limit applied: its own, else the server's default, else null (unlimited).
    #[schema(required = true)]
    pub effective_writes_per_second: Option<u32>,
}

/// `PUT …/retention`: the field is required; null keeps everything.
#[derive(ToSchema)]
pub struct NewRetention {
    #[schema(required = true, minimum = 1, maximum = 36_500)]
    pub days: Option<u32>,
}

/// An account's retention and its archives.
#[derive(ToSchema)]
pub struct Retention {
    pub account_id: String,
    /// Days of the log kept live, or null: everything.
    #[schema(required = true)]
    pub days: Option<u32>,
    /// The last archived position, 0 when nothing is archived: the live log starts after it.
    pub archived_through_seq: u64,
    /// The account's segments, oldest first.
    pub segments: Vec<Segment>,
}

/// One archive segment of an account.
#[derive(ToSchema)]
pub struct Segment {
    pub segment: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub sha256: String,
    pub archived_at: String,
}

/// `POST …/archive`.
#[derive(ToSchema)]
pub struct NewArchive {
    /// RFC 3339: the events recorded before it are archived.
    #[schema(example = "2026-01-01T00:00:00Z")]
    pub before: String,
}

/// What an archive did.
#[derive(ToSchema)]
pub struct Archived {
    pub archived_events: u64,
    /// The segment's path in the archive directory; null when no event was that old.
    #[schema(required = true)]
    pub segment: Option<String>,
    #[schema(required = true)]
    pub first_seq: Option<u64>,
    #[schema(required = true)]
    pub last_seq: Option<u64>,
    /// The streams the snapshot holds.
    pub snapshot_streams: u64,
    /// The position of the `LogArchived` event.
    #[schema(required = true)]
    pub seq: Option<u64>,
}
