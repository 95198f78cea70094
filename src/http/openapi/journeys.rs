//! Schemas of the journeys API's and analytics' bodies. Services, states, tasks and profiles
//! carry extensions as keys of their own, so their objects admit further properties.

#![allow(dead_code)] // these types describe bodies; the handlers build them

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A type, disposition or channel field: a name, or an integer id.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Label {
    Name(String),
    Id(i64),
}

/// A start or end: when, and the channel fields given with it.
#[derive(Serialize, ToSchema)]
pub struct Touch {
    /// `YYYY-MM-DDTHH:mm:ss.SSSZ`.
    pub timestamp: String,
    pub media_type: Option<Label>,
    pub application_type: Option<Label>,
    pub application_id: Option<Label>,
    pub resource_type: Option<Label>,
    pub resource_id: Option<Label>,
    pub session_id: Option<String>,
    pub interaction_id: Option<String>,
}

/// The body of a start, end or associate call (docs/API.md says which fields each takes);
/// any other key is an extension: any JSON, replacing an earlier value of the same name.
#[derive(ToSchema)]
pub struct EventBody {
    pub customer_id: Option<String>,
    pub contact_key: Option<String>,
    pub service_type: Option<Label>,
    pub state_type: Option<Label>,
    pub task_type: Option<Label>,
    #[schema(minimum = 1)]
    pub previous_state_id: Option<u32>,
    #[schema(minimum = 1)]
    pub state_id: Option<u32>,
    pub service_id: Option<String>,
    #[schema(max_length = 32)]
    pub session_id: Option<String>,
    #[schema(max_length = 50)]
    pub interaction_id: Option<String>,
    pub application_type: Option<Label>,
    pub application_id: Option<Label>,
    pub resource_type: Option<Label>,
    pub resource_id: Option<Label>,
    pub media_type: Option<Label>,
    /// RFC 3339; default: the server's time.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// Seconds.
    #[schema(minimum = 0)]
    pub est_duration: Option<u64>,
    pub disposition: Option<Label>,
    #[schema(max_length = 64)]
    pub disposition_desc: Option<String>,
    /// Seconds until the service expires.
    #[schema(minimum = 0)]
    pub ttl: Option<u64>,
    #[schema(format = DateTime)]
    pub expiration_time: Option<String>,
    /// Seconds after which an idle service completes by itself.
    #[schema(minimum = 1)]
    pub auto_complete_after: Option<u64>,
}

/// `POST …/states/transition`: end one state and start the next.
#[derive(ToSchema)]
pub struct TransitionBody {
    /// The state to end: `{"state_id", "disposition"?, "disposition_desc"?}`.
    #[schema(value_type = Object)]
    pub from: Value,
    /// The state to start: `{"state_type"?, "est_duration"?}`.
    #[schema(value_type = Option<Object>)]
    pub to: Option<Value>,
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
}

/// `PUT /services/{id}`: `ttl` and/or `expiration_time` (one required; `ttl` wins).
#[derive(ToSchema)]
pub struct ExpiryBody {
    #[schema(minimum = 0)]
    pub ttl: Option<u64>,
    #[schema(format = DateTime)]
    pub expiration_time: Option<String>,
}

/// What an item's life shows, beside its own fields.
#[derive(Serialize, ToSchema)]
pub struct Life {
    pub started: Touch,
    pub completed: Option<Touch>,
    #[schema(minimum = 0)]
    pub est_duration: Option<u64>,
    pub disposition: Option<Label>,
    pub disposition_desc: Option<String>,
    /// Milliseconds from start to end.
    #[schema(minimum = 0)]
    pub duration: Option<u64>,
    /// `service_ended`, `service_auto_completed` or `state_ended`: ended by its parent.
    pub closed_by: Option<String>,
}

/// A task; other keys are its extensions.
#[derive(Serialize, ToSchema)]
pub struct Task {
    #[schema(minimum = 1)]
    pub task_id: u32,
    pub task_type: Option<Label>,
    #[schema(minimum = 1)]
    pub state_id: Option<u32>,
    /// On a task read on its own.
    pub service_id: Option<String>,
    pub customer_id: Option<String>,
    #[schema(inline)]
    #[serde(flatten)]
    pub life: Life,
}

/// A state; other keys are its extensions.
#[derive(Serialize, ToSchema)]
pub struct State {
    #[schema(minimum = 1)]
    pub state_id: u32,
    pub state_type: Option<Label>,
    #[schema(minimum = 1)]
    pub previous_state_id: Option<u32>,
    /// On a state read on its own.
    pub service_id: Option<String>,
    #[schema(inline)]
    #[serde(flatten)]
    pub life: Life,
    pub active_tasks: Option<Vec<Task>>,
    pub completed_tasks: Option<Vec<Task>>,
}

/// A service; other keys are its extensions. Children appear only when asked for.
#[derive(Serialize, ToSchema)]
pub struct Service {
    pub service_id: String,
    pub service_type: Option<Label>,
    pub customer_id: Option<String>,
    pub contact_key: Option<String>,
    #[schema(inline)]
    #[serde(flatten)]
    pub life: Life,
    pub active_states: Option<Vec<State>>,
    pub completed_states: Option<Vec<State>>,
    pub active_tasks: Option<Vec<Task>>,
    pub completed_tasks: Option<Vec<Task>>,
}

/// `{"service_id"}`.
#[derive(ToSchema)]
pub struct ServiceId {
    pub service_id: String,
}

/// `{"state_id"}`.
#[derive(ToSchema)]
pub struct StateId {
    #[schema(minimum = 1)]
    pub state_id: u32,
}

/// The state a transition started, and the one it ended.
#[derive(ToSchema)]
pub struct Transitioned {
    #[schema(minimum = 1)]
    pub state_id: u32,
    #[schema(minimum = 1)]
    pub previous_state_id: u32,
}

/// `{"task_id"}`.
#[derive(ToSchema)]
pub struct TaskId {
    #[schema(minimum = 1)]
    pub task_id: u32,
}

/// `{"customer_id"}`, and with `include_profile=yes` the profile's attributes.
#[derive(ToSchema)]
pub struct Profile {
    pub customer_id: String,
}

/// A customer's journey: every service, state and task in time order, the open ones first.
#[derive(ToSchema)]
pub struct Journey {
    pub customer_id: String,
    /// The customer's services.
    #[schema(minimum = 0)]
    pub services: u64,
    /// The services the timeline shows.
    #[schema(minimum = 0)]
    pub shown_services: u64,
    #[schema(minimum = 0)]
    pub active_services: u64,
    /// Where the customer is in each active service.
    #[schema(value_type = Vec<Object>)]
    pub current: Vec<Value>,
    /// The media types met, in order.
    pub channels: Vec<Label>,
    /// `{"event": "service_started" | …, "timestamp", "service_id", …}`, in time order.
    #[schema(value_type = Vec<Object>)]
    pub timeline: Vec<Value>,
}

/// `POST /metadata/identification-keys`.
#[derive(ToSchema)]
pub struct NewIdentificationKey {
    pub name: String,
    /// 1 to 8 attribute names.
    pub attributes: Vec<String>,
    /// Default `profile`.
    pub source: Option<String>,
    /// Default false.
    pub unique: Option<bool>,
}

/// An identification key.
#[derive(ToSchema)]
pub struct IdentificationKey {
    pub name: String,
    pub source: String,
    pub attributes: Vec<String>,
    pub unique: bool,
}

/// `{"name"}` of a key defined.
#[derive(ToSchema)]
pub struct KeyName {
    pub name: String,
}

/// `PUT /settings`: a field left out returns to its default.
#[derive(ToSchema)]
pub struct NewSettings {
    #[schema(minimum = 0)]
    pub auto_complete_after: Option<u64>,
    pub abandon_dispositions: Option<Vec<String>>,
}

/// The journey settings in force.
#[derive(ToSchema)]
pub struct Settings {
    #[schema(required = true, minimum = 0)]
    pub auto_complete_after: Option<u64>,
    pub abandon_dispositions: Vec<String>,
}
