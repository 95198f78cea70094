//! The journey events: what happened to a service, its states and tasks, a customer profile,
//! an identification key or an account's journey settings. `docs/EVENTS.md` describes each.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::fields::Touch;
use crate::domain::events::{JsonText, Properties};

/// What a start event brings to a service, state or task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opening {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_duration: Option<u64>,
    pub started: Touch,
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub extensions: Properties,
}

/// What an end event brings: when and where it ended, how, and extensions that replace
/// earlier values of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closing {
    pub completed: Touch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub extensions: Properties,
    /// Set when the item did not end by its own end call but because its parent closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<ClosedBy>,
}

/// Why an item was closed by something other than its own end call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// Its service was ended with `/end`.
    ServiceEnded,
    /// Its service was auto-completed after inactivity.
    ServiceAutoCompleted,
    /// The state it belonged to was ended (tasks only).
    StateEnded,
}

/// A service's expiry: `ttl` seconds after its last update, or else a fixed time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<DateTime<Utc>>,
}

impl Expiry {
    pub fn is_set(&self) -> bool {
        self.ttl.is_some() || self.expiration_time.is_some()
    }

    pub fn is_unset(&self) -> bool {
        !self.is_set()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStarted {
    pub service_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_key: Option<String>,
    pub opening: Opening,
    /// Seconds of inactivity after which the sweeper completes the service: the start event's
    /// own setting, else the account default at start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_complete_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Expiry::is_unset")]
    pub expiry: Expiry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEnded {
    pub service_id: String,
    pub closing: Closing,
    /// Decided at the end by the account's abandonment dispositions (docs/ANALYTICS.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// Replaces the service's expiry when the end event set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAutoCompleted {
    pub service_id: String,
    pub completed_at: DateTime<Utc>,
    /// Server time of the service's last update, from which the inactivity was counted.
    pub idle_since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAssociated {
    pub service_id: String,
    pub customer_id: String,
    /// The customer the service belonged to before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<JsonText>,
    /// Channel fields of the start event replaced by the association body.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub channel: Properties,
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub extensions: Properties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceExpirySet {
    pub service_id: String,
    pub expiry: Expiry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDeleted {
    pub service_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceExpired {
    pub service_id: String,
    pub expired_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateStarted {
    pub service_id: String,
    pub state_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_type: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state_id: Option<u32>,
    pub opening: Opening,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEnded {
    pub service_id: String,
    pub state_id: u32,
    pub closing: Closing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub service_id: String,
    pub task_id: u32,
    /// The state the task belongs to; none: directly the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<JsonText>,
    pub opening: Opening,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnded {
    pub service_id: String,
    pub task_id: u32,
    pub closing: Closing,
}

/// Which item of a service an extension belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Service,
    State(u32),
    Task(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtensionReplaced {
    pub service_id: String,
    pub item: Item,
    pub name: String,
    pub value: JsonText,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerCreated {
    pub customer_id: String,
    /// Attributes and extensions, by name.
    pub profile: Properties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerReplaced {
    pub customer_id: String,
    /// The whole profile after the replacement.
    pub profile: Properties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentificationKeyDefined {
    pub name: String,
    /// `profile`, or the name of the extension the attributes belong to.
    pub source: String,
    pub attributes: Vec<String>,
    pub unique: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneySettingsSet {
    /// Default inactivity, in seconds, after which services started from now on auto-complete.
    pub auto_complete_after: Option<u64>,
    /// Dispositions that make an ended service count as abandoned; none: the default list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon_dispositions: Option<Vec<String>>,
}
