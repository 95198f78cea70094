//! States and tasks of a service: start, end, transition, read, list, extensions.

use axum::extract::{MatchedPath, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::paths::{ServicePath, StateExtensionPath, StatePath, TaskExtensionPath, TaskPath};
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
use crate::http::openapi::journeys as body;
use crate::http::openapi::params::{AsOfQuery, WriteHeaders};
use crate::http::openapi::responses::{Done, JourneysError, JourneysRead, JourneysWrite};
use crate::http::openapi::{Caller, secured};
use crate::projections::journeys::Status;

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(start_state))
        .routes(routes!(transition))
        .routes(routes!(list_states))
        .routes(routes!(list_active_states))
        .routes(routes!(list_completed_states))
        .routes(routes!(get_state))
        .routes(routes!(end_state))
        .routes(routes!(state_extension))
        .routes(routes!(start_task))
        .routes(routes!(list_tasks))
        .routes(routes!(list_active_tasks))
        .routes(routes!(list_completed_tasks))
        .routes(routes!(get_task))
        .routes(routes!(end_task))
        .routes(routes!(task_extension));
    secured(router, Caller::Tenant, "journeys")
}

/// Starts a state of a service.
#[utoipa::path(post, path = "/services/{service_id}/states/start", params(ServicePath, WriteHeaders),
    request_body = body::EventBody,
    responses(
        (status = 200, description = "Started", body = body::StateId, headers(("ETag" = String))),
        (status = 404, description = "No such service", body = JourneysError),
        JourneysWrite,
    ))]
async fn start_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::StateStart)?;
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::StartState { body })
            .await?;
    Ok(done(&outcome, Some(json!({ "state_id": created_number(&outcome)? }))))
}

/// Ends a state; its open tasks are ended first.
#[utoipa::path(post, path = "/services/{service_id}/states/{state_id}/end", params(StatePath, WriteHeaders),
    request_body(content = Option<body::EventBody>, description = "The end's fields (optional)"),
    responses(Done, (status = 404, description = "No such service, state or task", body = JourneysError), JourneysWrite))]
async fn end_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(StatePath { service_id, state_id }): P<StatePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::StateEnd)?;
    let command = ServiceCommand::EndState { state_id, body };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

/// Ends a state and starts the next in one step.
#[utoipa::path(post, path = "/services/{service_id}/states/transition", params(ServicePath, WriteHeaders),
    request_body = body::TransitionBody,
    responses(
        (status = 200, description = "The state started and the one ended", body = body::Transitioned, headers(("ETag" = String))),
        (status = 404, description = "No such service, state or task", body = JourneysError),
        JourneysWrite,
    ))]
async fn transition(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let (from_state_id, end, start) = parse_transition(write.body.0)?;
    let command = ServiceCommand::Transition { from_state_id, end, start };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    let body = json!({ "state_id": created_number(&outcome)?, "previous_state_id": from_state_id });
    Ok(done(&outcome, Some(body)))
}

/// Starts a task of a service (in a state, with `state_id`).
#[utoipa::path(post, path = "/services/{service_id}/tasks/start", params(ServicePath, WriteHeaders),
    request_body = body::EventBody,
    responses(
        (status = 200, description = "Started", body = body::TaskId, headers(("ETag" = String))),
        (status = 404, description = "No such service, state or task", body = JourneysError),
        JourneysWrite,
    ))]
async fn start_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::TaskStart)?;
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::StartTask { body })
            .await?;
    Ok(done(&outcome, Some(json!({ "task_id": created_number(&outcome)? }))))
}

/// Ends a task.
#[utoipa::path(post, path = "/services/{service_id}/tasks/{task_id}/end", params(TaskPath, WriteHeaders),
    request_body(content = Option<body::EventBody>, description = "The end's fields (optional)"),
    responses(Done, (status = 404, description = "No such service, state or task", body = JourneysError), JourneysWrite))]
async fn end_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(TaskPath { service_id, task_id }): P<TaskPath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::TaskEnd)?;
    let command = ServiceCommand::EndTask { task_id, body };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

/// Replaces one extension of a state.
#[utoipa::path(put, path = "/services/{service_id}/states/{state_id}/extensions/{name}",
    params(StateExtensionPath, WriteHeaders),
    request_body(content = Object, description = "A JSON object, or an array (a multi-valued extension)"),
    responses(Done, (status = 404, description = "No such service, state or task", body = JourneysError), JourneysWrite))]
async fn state_extension(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(StateExtensionPath { service_id, state_id, name }): P<StateExtensionPath>,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    replace(&state, &account, write, &service_id, Item::State(state_id), name).await
}

/// Replaces one extension of a task.
#[utoipa::path(put, path = "/services/{service_id}/tasks/{task_id}/extensions/{name}",
    params(TaskExtensionPath, WriteHeaders),
    request_body(content = Object, description = "A JSON object, or an array (a multi-valued extension)"),
    responses(Done, (status = 404, description = "No such service, state or task", body = JourneysError), JourneysWrite))]
async fn task_extension(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(TaskExtensionPath { service_id, task_id, name }): P<TaskExtensionPath>,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    replace(&state, &account, write, &service_id, Item::Task(task_id), name).await
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ItemQuery {
    /// States: embed their active tasks.
    active_tasks: Option<bool>,
    /// States: embed their completed tasks.
    completed_tasks: Option<bool>,
    /// The extensions shown: `a,b` or `*` (default none).
    extensions: Option<String>,
    /// Lists of states only: these state types, comma-separated.
    state_types: Option<String>,
    /// Lists of tasks only: these task types, comma-separated.
    task_types: Option<String>,
    /// Lists of tasks only: the tasks of this state.
    #[param(minimum = 1)]
    state_id: Option<u32>,
    /// `as_of` and `as_of_seq` are read by the `AsOf` extractor.
    #[serde(rename = "as_of")]
    #[param(ignore)]
    _as_of: Option<IgnoredAny>,
    #[serde(rename = "as_of_seq")]
    #[param(ignore)]
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

/// A service's states, by id.
#[utoipa::path(get, path = "/services/{service_id}/states", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The states", body = Vec<body::State>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_states(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
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

/// One state of a service.
#[utoipa::path(get, path = "/services/{service_id}/states/{state_id}", params(StatePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The state", body = body::State), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn get_state(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(StatePath { service_id, state_id }): P<StatePath>,
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

/// A service's tasks, by id.
#[utoipa::path(get, path = "/services/{service_id}/tasks", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The tasks", body = Vec<body::Task>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_tasks(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
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

/// One task of a service.
#[utoipa::path(get, path = "/services/{service_id}/tasks/{task_id}", params(TaskPath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The task", body = body::Task), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn get_task(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(TaskPath { service_id, task_id }): P<TaskPath>,
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

/// A service's active states.
#[utoipa::path(get, path = "/services/{service_id}/states/active", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The states", body = Vec<body::State>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_active_states(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ServicePath>,
    at: AsOf,
    query: Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_states(state, account, path, at, query, route).await
}

/// A service's completed states.
#[utoipa::path(get, path = "/services/{service_id}/states/completed", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The states", body = Vec<body::State>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_completed_states(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ServicePath>,
    at: AsOf,
    query: Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_states(state, account, path, at, query, route).await
}

/// A service's active tasks.
#[utoipa::path(get, path = "/services/{service_id}/tasks/active", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The tasks", body = Vec<body::Task>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_active_tasks(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ServicePath>,
    at: AsOf,
    query: Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_tasks(state, account, path, at, query, route).await
}

/// A service's completed tasks.
#[utoipa::path(get, path = "/services/{service_id}/tasks/completed", params(ServicePath, ItemQuery, AsOfQuery),
    responses((status = 200, description = "The tasks", body = Vec<body::Task>), (status = 404, description = "No such service, state or task", body = JourneysError), JourneysRead))]
async fn list_completed_tasks(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ServicePath>,
    at: AsOf,
    query: Q<ItemQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_tasks(state, account, path, at, query, route).await
}
