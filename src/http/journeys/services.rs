//! Services: start, end, read, delete, expiry, association, extensions, and the lists by
//! customer and by anonymous contact key.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::lists;
use super::paths::{AssociatePath, ServiceExtensionPath, ServicePath};
use super::render::{self, Embed, Extensions};
use super::{ObjectBody, done, event_body, submit_service};
use crate::domain::events::service_stream;
use crate::domain::journeys::ServiceCommand;
use crate::domain::journeys::events::{Expiry, Item};
use crate::domain::journeys::fields::{BodyKind, check_extension_name, parse_time};
use crate::domain::names::check_name;
use crate::http::AppState;
use crate::http::error::{ApiError, etag};
use crate::http::extract::{JsonBody, NoBody, P, Q, TenantAccount, Write};
use crate::http::history::AsOf;
use crate::http::openapi::journeys as body;
use crate::http::openapi::params::{AsOfQuery, WriteHeaders};
use crate::http::openapi::responses::{Done, JourneysError, JourneysRead, JourneysWrite};
use crate::http::openapi::{Caller, secured};
use crate::projections::as_of::Streams;
use crate::projections::journeys as read;
use crate::store::log;

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(get_service, delete_service, set_expiry))
        .routes(routes!(end))
        .routes(routes!(crate::http::history::service_history))
        .routes(routes!(replace_extension))
        .routes(routes!(associate))
        .routes(routes!(lists::customer_services))
        .routes(routes!(lists::active_customer_services))
        .routes(routes!(lists::completed_customer_services))
        .routes(routes!(lists::anonymous_services))
        .routes(routes!(lists::active_anonymous_services))
        .routes(routes!(lists::completed_anonymous_services))
        .routes(routes!(super::timeline::journey));
    secured(router, Caller::Tenant, "journeys")
}

/// Starts a service for a customer (`customer_id`) or an anonymous contact (`contact_key`).
#[utoipa::path(post, path = "/services/start", params(WriteHeaders), request_body = body::EventBody,
    responses(
        (status = 200, description = "Started", body = body::ServiceId, headers(("ETag" = String, description = "The service stream's version"))),
        JourneysWrite,
    ))]
async fn start(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::ServiceStart)?;
    let service_id = uuid::Uuid::new_v4().to_string();
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::Start { body }).await?;
    let service_id = outcome.created.clone().unwrap_or(service_id);
    Ok(done(&outcome, Some(json!({ "service_id": service_id }))))
}

/// Ends a service; its open states and tasks are ended first.
#[utoipa::path(post, path = "/services/{service_id}/end", params(ServicePath, WriteHeaders),
    request_body(content = Option<body::EventBody>, description = "The end's fields (optional)"),
    responses(
        Done,
        (status = 404, description = "No such service", body = JourneysError),
        JourneysWrite,
    ))]
async fn end(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let body = event_body(write.body.0, BodyKind::ServiceEnd)?;
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::End { body }).await?;
    Ok(done(&outcome, None))
}

/// Deletes a service, its states and tasks.
#[utoipa::path(delete, path = "/services/{service_id}", params(ServicePath, WriteHeaders), responses(
    Done,
    (status = 404, description = "No such service", body = JourneysError),
    JourneysWrite,
))]
async fn delete_service(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let outcome =
        submit_service(&state, &account, write.context, &service_id, ServiceCommand::Delete).await?;
    Ok(done(&outcome, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryBody {
    ttl: Option<u64>,
    expiration_time: Option<String>,
}

/// Sets when a service expires.
#[utoipa::path(put, path = "/services/{service_id}", params(ServicePath, WriteHeaders), request_body = body::ExpiryBody,
    responses(
        Done,
        (status = 404, description = "No such service", body = JourneysError),
        JourneysWrite,
    ))]
async fn set_expiry(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    write: Write<JsonBody<ExpiryBody>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    let ttl = body.ttl.map(|ttl| crate::domain::ttl::check("ttl", ttl)).transpose()?;
    let expiration_time =
        body.expiration_time.map(|time| parse_time("expiration_time", &time)).transpose()?;
    let command = ServiceCommand::SetExpiry { expiry: Expiry { ttl, expiration_time } };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

/// Gives a service to a customer.
#[utoipa::path(post, path = "/customers/{customer_id}/services/{service_id}", params(AssociatePath, WriteHeaders),
    request_body(content = Option<body::EventBody>, description = "The association's fields (optional)"),
    responses(
        Done,
        (status = 404, description = "No such service", body = JourneysError),
        JourneysWrite,
    ))]
async fn associate(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(AssociatePath { customer_id, service_id }): P<AssociatePath>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    check_name("customer_id", &customer_id)?;
    let body = event_body(write.body.0, BodyKind::Associate)?;
    let command = ServiceCommand::Associate { customer_id, body };
    let outcome = submit_service(&state, &account, write.context, &service_id, command).await?;
    Ok(done(&outcome, None))
}

/// The value of an extension: an object, or an array (a multi-valued extension).
pub fn extension_value(value: &Value) -> Result<crate::domain::events::JsonText, ApiError> {
    if !(value.is_object() || value.is_array()) {
        return Err(ApiError::bad_request("an extension is a JSON object or an array"));
    }
    Ok(crate::domain::events::JsonText::from_value(value))
}

/// Replaces one extension of the service, one of its states or one of its tasks.
pub async fn replace(
    state: &AppState,
    account: &crate::http::extract::Account,
    write: Write<JsonBody<Value>>,
    service_id: &str,
    item: Item,
    name: String,
) -> Result<Response, ApiError> {
    check_extension_name(&name)?;
    let JsonBody(value) = write.body;
    let command = ServiceCommand::ReplaceExtension { item, name, value: extension_value(&value)? };
    let outcome = submit_service(state, account, write.context, service_id, command).await?;
    Ok(done(&outcome, None))
}

/// Replaces one extension of a service.
#[utoipa::path(put, path = "/services/{service_id}/extensions/{name}", params(ServiceExtensionPath, WriteHeaders),
    request_body(content = Object, description = "A JSON object, or an array (a multi-valued extension)"),
    responses(
        Done,
        (status = 404, description = "No such service", body = JourneysError),
        JourneysWrite,
    ))]
async fn replace_extension(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServiceExtensionPath { service_id, name }): P<ServiceExtensionPath>,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    replace(&state, &account, write, &service_id, Item::Service, name).await
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceQuery {
    /// Embed the active states.
    active_states: Option<bool>,
    /// Embed the completed states.
    completed_states: Option<bool>,
    /// Embed the active tasks.
    active_tasks: Option<bool>,
    /// Embed the completed tasks.
    completed_tasks: Option<bool>,
    /// The extensions shown: `a,b`, `*`, `State.a`, `State.*`, `Task.a`, `Task.*` (default none).
    pub(super) extensions: Option<String>,
    /// Lists only: services started at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub(super) started_from: Option<String>,
    /// Lists only: services started at or before this time (RFC 3339).
    #[param(format = DateTime)]
    pub(super) started_to: Option<String>,
    /// Lists only: these service types, comma-separated.
    pub(super) service_types: Option<String>,
    /// `as_of` and `as_of_seq` are read by the `AsOf` extractor.
    #[serde(rename = "as_of")]
    #[param(ignore)]
    _as_of: Option<IgnoredAny>,
    #[serde(rename = "as_of_seq")]
    #[param(ignore)]
    _as_of_seq: Option<IgnoredAny>,
}

impl ServiceQuery {
    pub(super) fn embed(&self) -> Embed {
        Embed {
            active_states: self.active_states.unwrap_or(false),
            completed_states: self.completed_states.unwrap_or(false),
            active_tasks: self.active_tasks.unwrap_or(false),
            completed_tasks: self.completed_tasks.unwrap_or(false),
        }
    }
}

/// A service of the account at `at`, or 404.
pub async fn load(
    state: &AppState,
    at: AsOf,
    account: &str,
    service_id: &str,
) -> Result<crate::domain::journeys::service::ServiceDoc, ApiError> {
    let (account, id) = (account.to_string(), service_id.to_string());
    let streams = Streams::one(&account, service_stream(&account, &id));
    at.read(state, streams, move |conn, _| read::load_service(conn, &account, &id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no service {service_id}")))
}

/// A service, with the children and extensions asked for.
#[utoipa::path(get, path = "/services/{service_id}", params(ServicePath, ServiceQuery, AsOfQuery), responses(
    (status = 200, description = "The service", body = body::Service, headers(("ETag" = String, description = "The service stream's version"))),
    (status = 404, description = "No such service", body = JourneysError),
    JourneysRead,
))]
async fn get_service(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ServicePath { service_id }): P<ServicePath>,
    at: AsOf,
    Q(query): Q<ServiceQuery>,
) -> Result<Response, ApiError> {
    if query.started_from.is_some() || query.started_to.is_some() || query.service_types.is_some() {
        return Err(ApiError::bad_request(
            "started_from, started_to and service_types filter lists of services",
        ));
    }
    let (stream, id) = (service_stream(&account.id, &service_id), service_id.clone());
    let (doc, version) = at
        .read(&state, Streams::one(&account.id, stream.clone()), move |conn, _| {
            Ok((read::load_service(conn, &account.id, &id)?, log::stream_version(conn, &stream)?))
        })
        .await?;
    let doc = doc.ok_or_else(|| ApiError::not_found(format!("There is no service {service_id}")))?;
    let picked = Extensions::parse(query.extensions.as_deref());
    let headers = [(axum::http::header::ETAG, etag(version))];
    Ok((headers, axum::Json(render::service(&doc, query.embed(), &picked))).into_response())
}

/// A comma-separated list parameter.
pub fn list(param: Option<&str>) -> Vec<String> {
    param
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}
