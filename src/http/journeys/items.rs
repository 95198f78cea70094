//! States and tasks of a service: start, end, transition, read, list, extensions.

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::render::{self, Embed, Extensions};
use super::services::{list, load, replace};
use super::{ObjectBody, created_number, done, event_body, status_of, submit_service};
use crate::domain::journeys::ServiceCommand;
use crate::domain::journeys::events::Item;
use crate::domain::journeys::fields::{BodyKind, label_text, parse_transition};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, P, Q, TenantAccount, Write};
use crate::http::history::AsOf;
use crate::projections::journeys::Status;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/services/{service_id}/states/start", post(start_state))
        .route("/services/{service_id}/states/transition", post(transition))
        .route("/services/{service_id}/states", get(list_states))
        .route("/services/{service_id}/states/active", get(list_states))
        .route("/services/{service_id}/states/completed", get(list_states))
        .route("/services/{service_id}/states/{state_id}", get(get_state))
        .route("/services/{service_id}/states/{state_id}/end", post(end_state))
        .route("/services/{service_id}/states/{state_id}/extensions/{name}", put(state_extension))
        .route("/services/{service_id}/tasks/start", post(start_task))
        .route("/services/{service_id}/tasks", get(list_tasks))
        .route("/services/{service_id}/tasks/active", get(list_tasks))
        .route("/services/{service_id}/tasks/completed", get(list_tasks))
        .route("/services/{service_id}/tasks/{task_id}", get(get_task))
        .route("/services/{service_id}/tasks/{task_id}/end", post(end_task))
        .route("/services/{service_id}/tasks/{task_id}/extensions/{name}", put(task_extension))
}

async fn start_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::StateStart)?;
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::StartState { body })
            .await?;
    Ok(done(&outcome, Some(json!({ "state_id": created_number(&outcome)? }))))
}

async fn end_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, state_id)): P<(String, u32)>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::StateEnd)?;
    let command = ServiceCommand::EndState { state_id, body };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

async fn transition(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let (from_state_id, end, start) = parse_transition(write.body.0)?;
    let command = ServiceCommand::Transition { from_state_id, end, start };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    let body = json!({ "state_id": created_number(&outcome)?, "previous_state_id": from_state_id });
    Ok(done(&outcome, Some(body)))
}

async fn start_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::TaskStart)?;
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::StartTask { body })
            .await?;
    Ok(done(&outcome, Some(json!({ "task_id": created_number(&outcome)? }))))
}

async fn end_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, task_id)): P<(String, u32)>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::TaskEnd)?;
    let command = ServiceCommand::EndTask { task_id, body };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

async fn state_extension(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, state_id, name)): P<(String, u32, String)>,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    replace(&state, &account, write, &service_id, Item::State(state_id), name).await
}

async fn task_extension(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, task_id, name)): P<(String, u32, String)>,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    replace(&state, &account, write, &service_id, Item::Task(task_id), name).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ItemQuery {
    active_tasks: Option<bool>,
    completed_tasks: Option<bool>,
    extensions: Option<String>,
    state_types: Option<String>,
    task_types: Option<String>,
    state_id: Option<u32>,
    /// `as_of` and `as_of_seq` are read by the `AsOf` extractor.
    #[serde(rename = "as_of")]
    _as_of: Option<IgnoredAny>,
    #[serde(rename = "as_of_seq")]
    _as_of_seq: Option<IgnoredAny>,
}

impl ItemQuery {
    fn embed(&self) -> Embed {
        Embed {
            active_tasks: self.active_tasks.unwrap_or(false),
            completed_tasks: self.completed_tasks.unwrap_or(false),
            ..Embed::default()
        }
    }
}

/// Whether an item of `active`-ness is wanted by a list of `status`.
fn wanted(status: Status, active: bool) -> bool {
    match status {
        Status::All => true,
        Status::Active => active,
        Status::Completed => !active,
    }
}

fn type_matches(wanted: &[String], item_type: &Option<crate::domain::events::JsonText>) -> bool {
    wanted.is_empty() || item_type.as_ref().is_some_and(|t| wanted.contains(&label_text(t)))
}

async fn list_states(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    at: AsOf,
    Q(query): Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    if query.task_types.is_some() || query.state_id.is_some() {
        return Err(ApiError::bad_request("task_types and state_id filter lists of tasks"));
    }
    let doc = load(&state, at, &account.id, &service_id).await?;
    let (status, types) = (status_of(&route), list(query.state_types.as_deref()));
    let picked = Extensions::parse(query.extensions.as_deref()).for_listed_states();
    let states = doc.states.iter().filter(|s| wanted(status, s.life.is_active()));
    let body: Vec<Value> = states
        .filter(|s| type_matches(&types, &s.state_type))
        .map(|s| render::state(&doc, s, query.embed(), &picked, true))
        .collect();
    Ok(axum::Json(body).into_response())
}

async fn get_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, state_id)): P<(String, u32)>,
    at: AsOf,
    Q(query): Q<ItemQuery>,
) -> Result<Response, ApiError> {
    if query.task_types.is_some() || query.state_id.is_some() || query.state_types.is_some() {
        return Err(ApiError::bad_request("this route takes active_tasks, completed_tasks and extensions"));
    }
    let doc = load(&state, at, &account.id, &service_id).await?;
    let found =
        doc.state(state_id).ok_or_else(|| ApiError::not_found(format!("There is no state {state_id}")))?;
    let picked = Extensions::parse(query.extensions.as_deref()).for_listed_states();
    Ok(axum::Json(render::state(&doc, found, query.embed(), &picked, true)).into_response())
}

async fn list_tasks(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    at: AsOf,
    Q(query): Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    if query.state_types.is_some() || query.active_tasks.is_some() || query.completed_tasks.is_some() {
        return Err(ApiError::bad_request("this route takes state_id, task_types and extensions"));
    }
    let doc = load(&state, at, &account.id, &service_id).await?;
    let (status, types) = (status_of(&route), list(query.task_types.as_deref()));
    let picked = Extensions::parse(query.extensions.as_deref()).for_listed_tasks();
    let tasks = doc.tasks.iter().filter(|t| wanted(status, t.life.is_active()));
    let body: Vec<Value> = tasks
        .filter(|t| query.state_id.is_none() || t.state_id == query.state_id)
        .filter(|t| type_matches(&types, &t.task_type))
        .map(|t| render::task(&doc, t, &picked, true))
        .collect();
    Ok(axum::Json(body).into_response())
}

async fn get_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P((service_id, task_id)): P<(String, u32)>,
    at: AsOf,
    Q(query): Q<ItemQuery>,
) -> Result<Response, ApiError> {
    let others = [query.active_tasks.is_some(), query.completed_tasks.is_some(), query.state_id.is_some()];
    if others.contains(&true) || query.state_types.is_some() || query.task_types.is_some() {
        return Err(ApiError::bad_request("this route takes extensions only"));
    }
    let doc = load(&state, at, &account.id, &service_id).await?;
    let found =
        doc.task(task_id).ok_or_else(|| ApiError::not_found(format!("There is no task {task_id}")))?;
    let picked = Extensions::parse(query.extensions.as_deref()).for_listed_tasks();
    Ok(axum::Json(render::task(&doc, found, &picked, true)).into_response())
}
