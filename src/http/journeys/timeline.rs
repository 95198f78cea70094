//! `GET /customers/{id}/journey`: every service, state and task of a customer in time order,
//! across channels, with the steps still open first, so whoever takes over sees where the
//! customer is without reading the whole history.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::render::time;
use crate::domain::events::JsonText;
use crate::domain::journeys::fields::Touch;
use crate::domain::journeys::service::{Lifecycle, ServiceDoc};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{P, TenantAccount};
use crate::http::history::AsOf;
use crate::http::journeys::paths::CustomerPath;
use crate::http::openapi::journeys as body;
use crate::http::openapi::params::AsOfQuery;
use crate::http::openapi::responses::{JourneysError, JourneysRead};
use crate::projections::as_of::Streams;
use crate::projections::customers::load_profile;
use crate::projections::journeys::journey_services;

fn json(text: &JsonText) -> Value {
    serde_json::from_str(text.as_str()).expect("stored JSON parses")
}

fn media_type(touch: &Touch) -> Option<Value> {
    touch.channel.get("media_type").map(json)
}

/// One line of the timeline.
struct Entry {
    at: DateTime<Utc>,
    /// Order among entries of the same time: ends before starts, a child's end before its
    /// parent's, a parent's start before its child's.
    phase: u8,
    fields: Map<String, Value>,
}

fn entries_of(life: &Lifecycle, what: &str, ids: &Map<String, Value>, out: &mut Vec<Entry>) {
    let depth = match what {
        "service" => 0,
        "state" => 1,
        _ => 2,
    };
    let mut started = ids.clone();
    started.insert("event".into(), format!("{what}_started").into());
    if let Some(media) = media_type(&life.started) {
        started.insert("media_type".into(), media);
    }
    out.push(Entry { at: life.started.timestamp, phase: 3 + depth, fields: started });
    if let Some(completed) = &life.completed {
        let mut ended = ids.clone();
        ended.insert("event".into(), format!("{what}_completed").into());
        if let Some(media) = media_type(completed) {
            ended.insert("media_type".into(), media);
        }
        if let Some(disposition) = &life.disposition {
            ended.insert("disposition".into(), json(disposition));
        }
        if let Some(by) = life.closed_by {
            ended.insert("closed_by".into(), serde_json::to_value(by).expect("an enum serializes"));
        }
        if let Some(ms) = life.duration_ms() {
            ended.insert("duration".into(), ms.into());
        }
        out.push(Entry { at: completed.timestamp, phase: 2 - depth, fields: ended });
    }
}

fn ids(doc: &ServiceDoc, extra: &[(&str, Value)]) -> Map<String, Value> {
    let mut ids = Map::new();
    ids.insert("service_id".into(), doc.service_id.clone().into());
    if let Some(service_type) = &doc.service_type {
        ids.insert("service_type".into(), json(service_type));
    }
    for (name, value) in extra {
        if !value.is_null() {
            ids.insert(name.to_string(), value.clone());
        }
    }
    ids
}

/// Where the customer is in an active service: the open state and its open tasks.
fn current(doc: &ServiceDoc) -> Value {
    // The channel of the latest start; at equal times the later item (max_by_key keeps the last).
    let latest_media = std::iter::once(&doc.life.started)
        .chain(doc.states.iter().map(|s| &s.life.started))
        .chain(doc.tasks.iter().map(|t| &t.life.started))
        .filter(|touch| touch.channel.contains_key("media_type"))
        .max_by_key(|touch| touch.timestamp)
        .and_then(media_type);
    let state = doc.current_state().map(|state| {
        let tasks: Vec<Value> = doc
            .tasks
            .iter()
            .filter(|t| t.life.is_active() && t.state_id == Some(state.state_id))
            .map(|t| json!({ "task_id": t.task_id, "task_type": t.task_type.as_ref().map(json), "since": time(t.life.started.timestamp) }))
            .collect();
        json!({
            "state_id": state.state_id,
            "state_type": state.state_type.as_ref().map(json),
            "since": time(state.life.started.timestamp),
            "est_duration": state.life.est_duration,
            "media_type": media_type(&state.life.started),
            "active_tasks": tasks,
        })
    });
    json!({
        "service_id": doc.service_id,
        "service_type": doc.service_type.as_ref().map(json),
        "since": time(doc.life.started.timestamp),
        "media_type": latest_media,
        "current_state": state,
        "last_update": time(doc.updated_at),
    })
}

/// A customer's journey: every service, state and task in time order, across channels, with
/// where the customer is now.
#[utoipa::path(get, path = "/customers/{customer_id}/journey", params(CustomerPath, AsOfQuery), responses(
    (status = 200, description = "The timeline (docs/JOURNEYS.md)", body = body::Journey),
    (status = 404, description = "The customer has no profile and no service", body = JourneysError),
    JourneysRead,
))]
pub async fn journey(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
    at: AsOf,
) -> Result<Response, ApiError> {
    let (account_id, id) = (account.id.clone(), customer_id.clone());
    let streams = Streams::Customer { account: account.id, customer_id: customer_id.clone() };
    let (services, total, profile) = at
        .read_large(&state, streams, move |conn, _| {
            let (services, total) = journey_services(conn, &account_id, &id)?;
            Ok((services, total, load_profile(conn, &account_id, &id)?))
        })
        .await?;
    if services.is_empty() && profile.is_none() {
        return Err(ApiError::not_found(format!("There is no customer {customer_id}")));
    }
    let mut entries = Vec::new();
    for doc in &services {
        entries_of(&doc.life, "service", &ids(doc, &[]), &mut entries);
        for s in &doc.states {
            let extra = [
                ("state_id", s.state_id.into()),
                ("state_type", s.state_type.as_ref().map_or(Value::Null, json)),
            ];
            entries_of(&s.life, "state", &ids(doc, &extra), &mut entries);
        }
        for t in &doc.tasks {
            let extra = [
                ("task_id", t.task_id.into()),
                ("task_type", t.task_type.as_ref().map_or(Value::Null, json)),
                ("state_id", t.state_id.map_or(Value::Null, Value::from)),
            ];
            entries_of(&t.life, "task", &ids(doc, &extra), &mut entries);
        }
    }
    entries.sort_by_key(|entry| (entry.at, entry.phase));
    let mut channels: Vec<Value> = Vec::new();
    for media in entries.iter().filter_map(|entry| entry.fields.get("media_type")) {
        if !channels.contains(media) {
            channels.push(media.clone());
        }
    }
    let timeline: Vec<Value> = entries
        .into_iter()
        .map(|mut entry| {
            entry.fields.insert("timestamp".into(), time(entry.at).into());
            Value::Object(entry.fields)
        })
        .collect();
    let active: Vec<Value> = services.iter().filter(|doc| doc.is_active()).map(current).collect();
    Ok(axum::Json(json!({
        "customer_id": customer_id,
        "services": total,
        "shown_services": services.len(),
        "active_services": active.len(),
        "current": active,
        "channels": channels,
        "timeline": timeline,
    }))
    .into_response())
}
