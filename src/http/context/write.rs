//! The context store's writes: namespaces, properties, sessions and their TTLs.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use super::{session_ref, submit};
use crate::domain::Command;
use crate::domain::context::{ContextCommand, SessionRef};
use crate::domain::events::{JsonText, Properties};
use crate::domain::names::normal_form;
use crate::http::AppState;
use crate::http::error::{ApiError, etag};
use crate::http::extract::{Account, JsonBody, NoBody, Q, Target, Write, WriteContext};
use crate::http::openapi::params::{
    AccountPath, NamespacePath, NamespacePropertyPath, SessionPath, SessionPropertyPath, WriteHeaders,
};
use crate::http::openapi::responses::{ContextWrite, Written};
use crate::http::openapi::schemas as body;
use crate::projections::context as read;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TtlQuery {
    /// Sets or replaces the namespace TTL, in seconds (0 … 100 years).
    #[serde(rename = "ttlSecond")]
    #[param(minimum = 0, maximum = 3_162_240_000_u64)]
    ttl_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NamespaceName {
    name: String,
}

/// Creates a namespace (idempotent); with `ttlSecond`, sets or replaces its TTL.
#[utoipa::path(post, path = "/v1/account/{account}", params(AccountPath, TtlQuery, WriteHeaders),
    request_body = body::NewNamespace,
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn create_namespace(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<TtlQuery>,
    write: Write<JsonBody<NamespaceName>>,
) -> Result<Response, ApiError> {
    let JsonBody(NamespaceName { name }) = write.body;
    let command = ContextCommand::CreateNamespace {
        namespace: normal_form(name),
        ttl_second: query.ttl_second,
        expected: write.context.expected,
    };
    submit(&state, &account, write.context, command).await
}

/// Removes a namespace, every session's properties and TTL settings; a large one in steps (202).
#[utoipa::path(delete, path = "/v1/account/{account}/{namespace}", params(NamespacePath, WriteHeaders),
    responses(
        Written,
        (status = 202, description = "Too large for one step: the delete proceeds in steps", body = body::DeletionStatus,
            headers(("Location" = String, description = "…/namespace/{namespace}/deletion, where it stands"), ("ETag" = String))),
        ContextWrite,
    ))]
pub(super) async fn delete_namespace(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let namespace = target.namespace;
    let command =
        ContextCommand::DeleteNamespace { namespace: namespace.clone(), expected: write.context.expected };
    let command = Command::Context { account: account.id.clone(), command };
    let outcome = state
        .store
        .submit(write.context.request(account.actor(), &account.idempotency_scope(), command))
        .await?;
    let location = deletion_location(&account.id, &namespace);
    let status = state.store.read(|conn| read::deletion_status(conn, &account.id, &namespace))?;
    // A replay of a request that started a delete in steps answers 202 again, with where the
    // delete stands now.
    if !status.deleting && !outcome.accepted {
        return Ok((StatusCode::NO_CONTENT, [(header::ETAG, etag(outcome.version))]).into_response());
    }
    state.store.wake_steps();
    let headers = [(header::ETAG, etag(outcome.version)), (header::LOCATION, location)];
    Ok((StatusCode::ACCEPTED, headers, axum::Json(status)).into_response())
}

/// Where to follow a namespace delete.
fn deletion_location(account: &str, namespace: &str) -> header::HeaderValue {
    let (account, namespace) = (crate::http::path_segment(account), crate::http::path_segment(namespace));
    header::HeaderValue::try_from(format!("/v1/account/{account}/namespace/{namespace}/deletion"))
        .expect("percent-encoded text is a valid header value")
}

/// Merges properties into a session: listed keys replaced whole, others kept; `{}` is a no-op.
#[utoipa::path(patch, path = "/v1/account/{account}/{namespace}/{session}/properties",
    params(SessionPath, WriteHeaders),
    request_body(content = Object, description = "The properties to set, any JSON each"),
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn patch_properties(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<JsonBody<Map<String, Value>>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    let mut properties = Properties::new();
    for (key, value) in &body {
        let key = normal_form(key.clone());
        if properties.insert(key.clone(), JsonText::from_value(value)).is_some() {
            let message = format!("property '{key}' is given twice, in two Unicode forms of one name");
            return Err(ApiError::bad_request(message));
        }
    }
    merge(&state, &account, &target, write.context, properties).await
}

/// Merges properties into the namespace's own (session `__default__`).
#[utoipa::path(patch, path = "/v1/account/{account}/{namespace}/properties",
    params(NamespacePath, WriteHeaders),
    request_body(content = Object, description = "The properties to set, any JSON each"),
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn patch_namespace_properties(
    state: State<AppState>,
    account: Account,
    target: Target,
    write: Write<JsonBody<Map<String, Value>>>,
) -> Result<Response, ApiError> {
    patch_properties(state, account, target, write).await
}

/// Sets one property of a session to any JSON value.
#[utoipa::path(put, path = "/v1/account/{account}/{namespace}/{session}/properties/{property}",
    params(SessionPropertyPath, WriteHeaders),
    request_body(content = body::AnyJson, description = "The value, any JSON"),
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn put_property(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    let JsonBody(value) = write.body;
    let property = target.property.clone().unwrap_or_default();
    let properties = Properties::from([(property, JsonText::from_value(&value))]);
    merge(&state, &account, &target, write.context, properties).await
}

/// Sets one namespace property to any JSON value.
#[utoipa::path(put, path = "/v1/account/{account}/{namespace}/properties/{property}",
    params(NamespacePropertyPath, WriteHeaders),
    request_body(content = body::AnyJson, description = "The value, any JSON"),
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn put_namespace_property(
    state: State<AppState>,
    account: Account,
    target: Target,
    write: Write<JsonBody<Value>>,
) -> Result<Response, ApiError> {
    put_property(state, account, target, write).await
}

/// PATCH and PUT alike: merge `properties` into the target session.
async fn merge(
    state: &AppState,
    account: &Account,
    target: &Target,
    context: WriteContext,
    properties: Properties,
) -> Result<Response, ApiError> {
    let session = session_ref(target, &context);
    submit(state, account, context, ContextCommand::PatchProperties { session, properties }).await
}

/// Deletes one property of a session (204 also when absent).
#[utoipa::path(
    delete,
    path = "/v1/account/{account}/{namespace}/{session}/properties/{property}",
    params(SessionPropertyPath, WriteHeaders),
    responses(Written, ContextWrite,)
)]
pub(super) async fn delete_property(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let property = target.property.clone().unwrap_or_default();
    let session = session_ref(&target, &write.context);
    submit(&state, &account, write.context, ContextCommand::DeleteProperty { session, property }).await
}

/// Deletes one namespace property (204 also when absent).
#[utoipa::path(
    delete,
    path = "/v1/account/{account}/{namespace}/properties/{property}",
    params(NamespacePropertyPath, WriteHeaders),
    responses(Written, ContextWrite,)
)]
pub(super) async fn delete_namespace_property(
    state: State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    delete_property(state, account, target, write).await
}

/// Removes all properties of a session; keeps its TTL setting.
#[utoipa::path(
    delete,
    path = "/v1/account/{account}/{namespace}/{session}/properties",
    params(SessionPath, WriteHeaders),
    responses(Written, ContextWrite,)
)]
pub(super) async fn clear_session(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let session = session_ref(&target, &write.context);
    submit(&state, &account, write.context, ContextCommand::ClearSession { session }).await
}

/// Removes all properties of a session (the form with a trailing slash).
#[utoipa::path(
    delete,
    path = "/v1/account/{account}/{namespace}/{session}/properties/",
    params(SessionPath, WriteHeaders),
    responses(Written, ContextWrite,)
)]
pub(super) async fn clear_session_slash(
    state: State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    clear_session(state, account, target, write).await
}

/// Removes all properties of a session and its TTL setting.
#[utoipa::path(
    delete,
    path = "/v1/account/{account}/namespace/{namespace}/session/{session}",
    params(SessionPath, WriteHeaders),
    responses(Written, ContextWrite,)
)]
pub(super) async fn delete_session(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let session = session_ref(&target, &write.context);
    submit(&state, &account, write.context, ContextCommand::DeleteSession { session }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionIdBody {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// Sets a session's TTL (0: forever, ignoring the namespace TTL).
#[utoipa::path(post, path = "/v1/account/{account}/namespace/{namespace}/session",
    params(
        NamespacePath,
        ("ttlSecond" = u64, Query, minimum = 0, maximum = 3_162_240_000_u64, description = "The session TTL, in seconds"),
        WriteHeaders,
    ),
    request_body = body::SessionIdBody,
    responses(
        Written,
        ContextWrite,
    ))]
pub(super) async fn set_session_ttl(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    Q(query): Q<TtlQuery>,
    write: Write<JsonBody<SessionIdBody>>,
) -> Result<Response, ApiError> {
    let ttl_second = query.ttl_second.ok_or_else(|| ApiError::bad_request("ttlSecond is required"))?;
    let JsonBody(SessionIdBody { session_id }) = write.body;
    let session_id = normal_form(session_id);
    let session = SessionRef { namespace: target.namespace, session_id, expected: write.context.expected };
    submit(&state, &account, write.context, ContextCommand::SetSessionTtl { session, ttl_second }).await
}
