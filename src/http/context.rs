//! The context store, LivePerson Conversation Context Service v1 compatible, under
//! `/v1/account/{account}`. Namespace routes address the namespace's session `__default__`,
//! so one handler serves both the namespace and the session form of each endpoint.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AppState;
use super::error::{ApiError, etag};
use super::extract::{Account, JsonBody, NoBody, Q, Target, Write, WriteContext};
use super::history::{AsOf, Live};
use crate::domain::Command;
use crate::domain::context::{ContextCommand, SessionRef};
use crate::domain::events::{JsonText, Properties, session_stream};
use crate::domain::names::{check_name, check_namespace, normal_form};
use crate::projections::as_of::Streams;
use crate::projections::context as read;
use crate::store::log;

const ACCOUNT: &str = "/v1/account/{account}";

pub fn router() -> Router<AppState> {
    let route = |suffix: &str| format!("{ACCOUNT}{suffix}");
    Router::new()
        .route(ACCOUNT, post(create_namespace).get(list_namespaces))
        .route(&route("/{namespace}"), delete(delete_namespace))
        .route(&route("/{namespace}/properties"), patch(patch_properties).get(get_document))
        .route(
            &route("/{namespace}/properties/{property}"),
            put(put_property).get(get_property).delete(delete_property),
        )
        .route(
            &route("/{namespace}/{session}/properties"),
            patch(patch_properties).get(get_document).delete(clear_session),
        )
        .route(&route("/{namespace}/{session}/properties/"), get(get_document).delete(clear_session))
        .route(
            &route("/{namespace}/{session}/properties/{property}"),
            put(put_property).get(get_property).delete(delete_property),
        )
        .route(&route("/namespace/{namespace}/session"), post(set_session_ttl).get(list_session_ttls))
        .route(&route("/namespace/{namespace}/session/{session}"), delete(delete_session))
        .route(&route("/namespace/{namespace}/deletion"), get(deletion_status))
        .route(&route("/{namespace}/session-ids"), get(session_ids))
        .route(&route("/{namespace}/session-properties"), get(session_properties))
}

/// Sends a context command for `account` and answers 204 with the stream's new `ETag`.
async fn submit(
    state: &AppState,
    account: &Account,
    context: WriteContext,
    command: ContextCommand,
) -> Result<Response, ApiError> {
    let command = Command::Context { account: account.id.clone(), command };
    let outcome =
        state.store.submit(context.request(account.actor(), &account.idempotency_scope(), command)).await?;
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, etag(outcome.version))]).into_response())
}

fn session_ref(target: &Target, context: &WriteContext) -> SessionRef {
    SessionRef {
        namespace: target.namespace.clone(),
        session_id: target.session_id.clone(),
        expected: context.expected,
    }
}

#[derive(Deserialize)]
struct TtlQuery {
    #[serde(rename = "ttlSecond")]
    ttl_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceName {
    name: String,
}

async fn create_namespace(
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

async fn list_namespaces(
    State(state): State<AppState>,
    account: Account,
    _: Live,
) -> Result<Response, ApiError> {
    let namespaces = state.store.read_large(move |conn| read::list_namespaces(conn, &account.id)).await?;
    Ok(axum::Json(namespaces).into_response())
}

async fn delete_namespace(
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
    let (account, namespace) = (super::path_segment(account), super::path_segment(namespace));
    header::HeaderValue::try_from(format!("/v1/account/{account}/namespace/{namespace}/deletion"))
        .expect("percent-encoded text is a valid header value")
}

/// `GET …/namespace/{namespace}/deletion`: where a delete that proceeds in steps stands.
async fn deletion_status(
    State(state): State<AppState>,
    account: Account,
    target: Target,
) -> Result<Response, ApiError> {
    let namespace = target.namespace;
    check_namespace(&namespace)?;
    let status =
        state.store.read_large(move |conn| read::deletion_status(conn, &account.id, &namespace)).await?;
    Ok(axum::Json(status).into_response())
}

async fn patch_properties(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<JsonBody<Map<String, Value>>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    let properties =
        body.iter().map(|(key, value)| (normal_form(key.clone()), JsonText::from_value(value))).collect();
    merge(&state, &account, &target, write.context, properties).await
}

async fn put_property(
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

async fn delete_property(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let property = target.property.clone().unwrap_or_default();
    let session = session_ref(&target, &write.context);
    submit(&state, &account, write.context, ContextCommand::DeleteProperty { session, property }).await
}

async fn clear_session(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let session = session_ref(&target, &write.context);
    submit(&state, &account, write.context, ContextCommand::ClearSession { session }).await
}

async fn delete_session(
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
struct SessionIdBody {
    #[serde(rename = "sessionId")]
    session_id: String,
}

async fn set_session_ttl(
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

async fn list_session_ttls(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    _: Live,
) -> Result<Response, ApiError> {
    check_namespace(&target.namespace)?;
    let sessions = state
        .store
        .read_large(move |conn| read::list_session_ttls(conn, &account.id, &target.namespace))
        .await?;
    Ok(axum::Json(sessions).into_response())
}

/// A JSON text body, sent as is, with the session's `ETag` when there is one.
fn json_text(body: String, version: Option<u64>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(version) = version {
        response.headers_mut().insert(header::ETAG, etag(version));
    }
    response
}

/// Checks the names a read addresses, as writes do, so that bad names are a 400 everywhere.
pub(super) fn check_target(target: &Target) -> Result<(), ApiError> {
    check_namespace(&target.namespace)?;
    check_name("session id", &target.session_id)?;
    if let Some(property) = &target.property {
        check_name("property name", property)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct IncludeQuery {
    include: Option<String>,
}

async fn get_document(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
    Q(query): Q<IncludeQuery>,
) -> Result<Response, ApiError> {
    check_target(&target)?;
    // `include=` with no names is treated as no filter.
    let include: Option<Vec<String>> = query
        .include
        .map(|list| list.split(',').map(|key| key.trim().to_string()).filter(|key| !key.is_empty()).collect())
        .filter(|keys: &Vec<String>| !keys.is_empty());
    let stream = session_stream(&account.id, &target.namespace, &target.session_id);
    let (document, version) = at
        .read(
            &state,
            Streams::session(&account.id, &target.namespace, &target.session_id),
            move |conn, now| {
                let document = read::session_document(
                    conn,
                    &account.id,
                    &target.namespace,
                    &target.session_id,
                    now,
                    include.as_deref(),
                )?;
                Ok((document, log::stream_version(conn, &stream)?))
            },
        )
        .await?;
    Ok(json_text(document, Some(version)))
}

async fn get_property(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
) -> Result<Response, ApiError> {
    check_target(&target)?;
    let property = target.property.clone().unwrap_or_default();
    let stream = session_stream(&account.id, &target.namespace, &target.session_id);
    let key = property.clone();
    let (value, version) = at
        .read(
            &state,
            Streams::session(&account.id, &target.namespace, &target.session_id),
            move |conn, now| {
                let value = read::property_value(
                    conn,
                    &account.id,
                    &target.namespace,
                    &target.session_id,
                    &key,
                    now,
                )?;
                Ok((value, log::stream_version(conn, &stream)?))
            },
        )
        .await?;
    let value = value.ok_or_else(|| ApiError::not_found(format!("property '{property}' not found")))?;
    Ok(json_text(value, Some(version)))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u64>,
    #[serde(rename = "perPage")]
    per_page: Option<u64>,
}

impl PageQuery {
    /// `page` from 0 (default 0) and `perPage` from 1 to 1000 (default 100).
    fn checked(&self) -> Result<(u64, u64), ApiError> {
        let per_page = self.per_page.unwrap_or(100);
        if !(1..=1000).contains(&per_page) {
            return Err(ApiError::bad_request("perPage must be between 1 and 1000"));
        }
        Ok((self.page.unwrap_or(0), per_page))
    }
}

async fn session_ids(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    _: Live,
    Q(query): Q<PageQuery>,
) -> Result<Response, ApiError> {
    check_namespace(&target.namespace)?;
    let (page, per_page) = query.checked()?;
    let now = state.clock.now();
    let ids = state
        .store
        .read_large(move |conn| read::session_ids(conn, &account.id, &target.namespace, now, page, per_page))
        .await?;
    Ok(axum::Json(ids).into_response())
}

async fn session_properties(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    _: Live,
    Q(query): Q<PageQuery>,
) -> Result<Response, ApiError> {
    check_namespace(&target.namespace)?;
    let (page, per_page) = query.checked()?;
    let now = state.clock.now();
    let body = state
        .store
        .read_large(move |conn| {
            let ids = read::session_ids(conn, &account.id, &target.namespace, now, page, per_page)?;
            let mut body = String::from("[");
            for (index, session_id) in ids.iter().enumerate() {
                let document =
                    read::session_document(conn, &account.id, &target.namespace, session_id, now, None)?;
                if index > 0 {
                    body.push(',');
                }
                let id = serde_json::to_string(session_id).expect("strings serialize");
                body.push_str(&format!("{{\"sessionId\":{id},\"properties\":{document}}}"));
                if body.len() > MAX_PAGE_BYTES {
                    return Ok(None);
                }
            }
            body.push(']');
            Ok(Some(body))
        })
        .await?;
    let body = body.ok_or_else(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "this page of sessions is larger than 32 MiB; ask for fewer with perPage",
        )
    })?;
    Ok(json_text(body, None))
}

/// Largest `session-properties` page built in memory (sessions hold up to 800,000 characters each).
const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
