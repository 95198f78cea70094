//! Schemas of the analytics answers (docs/ANALYTICS.md has what each figure means).

#![allow(dead_code)] // these types describe bodies; the handlers build them

use serde_json::Value;
use utoipa::ToSchema;

/// The services a query counts.
#[derive(ToSchema)]
pub struct DropoffTotals {
    pub started: i64,
    pub completed: i64,
    pub abandoned: i64,
    pub active: i64,
    /// completed / started; null without services.
    pub completion_rate: Option<f64>,
    pub abandoned_before_first_state: i64,
    pub before_first_state_label: String,
}

/// One state type: how many entered it, left onward, abandoned there, and how long they stayed.
#[derive(ToSchema)]
pub struct DropoffState {
    pub state_type: String,
    pub entered: i64,
    pub left_onward: i64,
    pub abandoned_here: i64,
    pub dropoff_rate: Option<f64>,
    pub timed: i64,
    /// Seconds: the histogram bound holding the median (null: no data, or past the last bound).
    pub median_time_in_state_s: Option<u64>,
    pub p90_time_in_state_s: Option<u64>,
    pub avg_time_in_state_s: Option<f64>,
    pub estimated: i64,
    pub avg_est_duration_s: Option<f64>,
    pub avg_actual_duration_s: Option<f64>,
}

/// `GET …/analytics/dropoff`.
#[derive(ToSchema)]
pub struct Dropoff {
    /// The query's filters, echoed.
    #[schema(value_type = Object)]
    pub query: Value,
    pub totals: DropoffTotals,
    /// Most abandoned first.
    pub states: Vec<DropoffState>,
    /// With `breakdown=media_type`: `{"media_type", "totals", "states"}` of each channel.
    #[schema(value_type = Option<Vec<Object>>)]
    pub by_media_type: Option<Vec<Value>>,
    /// With `compare=previous`: `{"from", "to"}` of the period of the same length just before,
    /// and the same figures for it.
    #[schema(value_type = Option<Object>)]
    pub previous: Option<Value>,
    /// Present when the query named a service type, channel or state type (a step) that the
    /// account has never recorded: one message each.
    pub warnings: Option<Vec<String>>,
}

/// One step of a funnel.
#[derive(ToSchema)]
pub struct FunnelStep {
    pub state_type: String,
    pub reached: i64,
    pub conversion_from_previous: Option<f64>,
    pub conversion_from_first: Option<f64>,
    /// Reached this step but not the next; null on the last.
    pub dropped: Option<i64>,
    pub median_time_to_reach_s: Option<u64>,
}

/// A funnel of one media type.
#[derive(ToSchema)]
pub struct FunnelByMedia {
    /// Null: services of every media type; "": started without one.
    pub media_type: Option<String>,
    pub started: i64,
    pub steps: Vec<FunnelStep>,
}

/// `GET …/analytics/funnel`.
#[derive(ToSchema)]
pub struct Funnel {
    #[schema(value_type = Object)]
    pub query: Value,
    pub started: i64,
    pub steps: Vec<FunnelStep>,
    /// With `breakdown=media_type`.
    pub by_media_type: Option<Vec<FunnelByMedia>>,
    /// With `compare=previous`: `{"from", "to"}` of the period of the same length just before,
    /// and the same figures for it.
    #[schema(value_type = Option<Object>)]
    pub previous: Option<Value>,
    /// Present when the query named a service type, channel or state type (a step) that the
    /// account has never recorded: one message each.
    pub warnings: Option<Vec<String>>,
}

/// A move from one state type to another.
#[derive(ToSchema)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub count: i64,
    pub channel_switches: i64,
}

/// `GET …/analytics/transitions`.
#[derive(ToSchema)]
pub struct Transitions {
    #[schema(value_type = Object)]
    pub query: Value,
    /// Most frequent first.
    pub transitions: Vec<Transition>,
    /// Present when the query named a service type, channel or state type (a step) that the
    /// account has never recorded: one message each.
    pub warnings: Option<Vec<String>>,
}

/// One hour or day.
#[derive(ToSchema)]
pub struct Bucket {
    pub start: String,
    pub started: i64,
    pub completed: i64,
    pub abandoned: i64,
}

/// `GET …/analytics/timeseries`.
#[derive(ToSchema)]
pub struct Timeseries {
    #[schema(value_type = Object)]
    pub query: Value,
    pub buckets: Vec<Bucket>,
    /// With `breakdown=media_type`: `{"media_type", "buckets"}` of each channel.
    #[schema(value_type = Option<Vec<Object>>)]
    pub by_media_type: Option<Vec<Value>>,
    /// With `compare=previous`: `{"from", "to"}` of the period of the same length just before,
    /// and the same figures for it.
    #[schema(value_type = Option<Object>)]
    pub previous: Option<Value>,
    /// Present when the query named a service type, channel or state type (a step) that the
    /// account has never recorded: one message each.
    pub warnings: Option<Vec<String>>,
}

/// An abandoned service: where it was left, with its detail.
#[derive(ToSchema)]
pub struct AbandonedService {
    pub service_id: String,
    pub ended_at: String,
    #[schema(value_type = Value)]
    pub service_type: Value,
    #[schema(value_type = Value)]
    pub media_type: Value,
    #[schema(value_type = Value)]
    pub dropoff_state_type: Value,
    /// The drop-off: `state_id`, `state_type`, `since`, `media_type` (the channel there) and
    /// `time_in_step_ms` (from entering it to the customer leaving); null when the service was
    /// abandoned before its first state.
    #[schema(value_type = Option<Object>)]
    pub dropoff: Option<Value>,
    /// The service's `session_id`, else its `interaction_id`, when its start carried one.
    pub conversation_id: Option<String>,
    /// The conversation's live context: the properties of the context sessions named by
    /// `conversation_id`, by namespace.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// `GET …/analytics/abandoned`.
#[derive(ToSchema)]
pub struct Abandoned {
    #[schema(value_type = Object)]
    pub query: Value,
    pub services: Vec<AbandonedService>,
    /// The `after` of the next page; null on the last.
    #[schema(required = true)]
    pub next: Option<String>,
    /// Present when the query named a service type, channel or state type (a step) that the
    /// account has never recorded: one message each.
    pub warnings: Option<Vec<String>>,
}

/// The names the account's counters hold, within the filters given.
#[derive(ToSchema)]
pub struct Dimensions {
    #[schema(value_type = Object)]
    pub query: Value,
    pub service_types: Vec<String>,
    /// Channels; `""` is the channel of services started without one.
    pub media_types: Vec<String>,
    pub state_types: Vec<String>,
}
