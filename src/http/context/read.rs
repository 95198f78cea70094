//! The context store's reads: sessions and their properties (today or as of a point of the
//! log), namespaces, sessions with TTLs, and where a namespace delete stands.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::check_target;
use crate::domain::events::session_stream;
use crate::domain::names::check_namespace;
use crate::http::AppState;
use crate::http::error::{ApiError, etag};
use crate::http::extract::{Account, Q, Target};
use crate::http::history::{AsOf, Live};
use crate::http::openapi::params::{
    AccountPath, AsOfQuery, NamespacePath, NamespacePropertyPath, SessionPath, SessionPropertyPath,
};
use crate::http::openapi::responses::{ContextRead, Message};
use crate::http::openapi::schemas as body;
use crate::projections::as_of::Streams;
use crate::projections::context as read;
use crate::store::log;

/// Every registered namespace (including those a first write created), by name.
#[utoipa::path(get, path = "/v1/account/{account}", params(AccountPath), responses(
    (status = 200, description = "The namespaces", body = Vec<body::NamespaceInfo>),
    ContextRead,
))]
pub(super) async fn list_namespaces(
    State(state): State<AppState>,
    account: Account,
    _: Live,
) -> Result<Response, ApiError> {
    let namespaces = state.store.read_large(move |conn| read::list_namespaces(conn, &account.id)).await?;
    Ok(axum::Json(namespaces).into_response())
}

/// Where a namespace delete that proceeds in steps stands.
#[utoipa::path(get, path = "/v1/account/{account}/namespace/{namespace}/deletion", params(NamespacePath),
    responses(
        (status = 200, description = "`deleting: false` when none is (done, or never asked)", body = body::DeletionStatus),
        ContextRead,
    ))]
pub(super) async fn deletion_status(
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

/// The sessions with a TTL setting.
#[utoipa::path(get, path = "/v1/account/{account}/namespace/{namespace}/session", params(NamespacePath),
    responses(
        (status = 200, description = "The sessions and their TTLs", body = Vec<body::SessionTtlInfo>),
        ContextRead,
    ))]
pub(super) async fn list_session_ttls(
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct IncludeQuery {
    /// Only these properties, comma-separated (`include=` with no names: all of them).
    include: Option<String>,
}

/// A session's unexpired properties (`{}` for an unknown session).
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/{session}/properties",
    params(SessionPath, IncludeQuery, AsOfQuery),
    responses(
        (status = 200, description = "The properties", body = Object, headers(("ETag" = String, description = "The session's version, of the same snapshot"))),
        ContextRead,
    ))]
pub(super) async fn get_document(
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
    let streams = Streams::session(&account.id, &target.namespace, &target.session_id);
    let (document, version) = at
        .read(&state, streams, move |conn, now| {
            let (namespace, session) = (&target.namespace, &target.session_id);
            let document =
                read::session_document(conn, &account.id, namespace, session, now, include.as_deref())?;
            Ok((document, log::stream_version(conn, &stream)?))
        })
        .await?;
    Ok(json_text(document, Some(version)))
}

/// A session's unexpired properties (the form with a trailing slash).
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/{session}/properties/",
    params(SessionPath, IncludeQuery, AsOfQuery),
    responses(
        (status = 200, description = "The properties", body = Object, headers(("ETag" = String, description = "The session's version, of the same snapshot"))),
        ContextRead,
    ))]
pub(super) async fn get_document_slash(
    state: State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
    query: Q<IncludeQuery>,
) -> Result<Response, ApiError> {
    get_document(state, account, target, at, query).await
}

/// The namespace's own properties (session `__default__`).
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/properties",
    params(NamespacePath, IncludeQuery, AsOfQuery),
    responses(
        (status = 200, description = "The properties", body = Object, headers(("ETag" = String, description = "The session's version, of the same snapshot"))),
        ContextRead,
    ))]
pub(super) async fn get_namespace_document(
    state: State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
    query: Q<IncludeQuery>,
) -> Result<Response, ApiError> {
    get_document(state, account, target, at, query).await
}

/// One property of a session: its bare JSON value.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/{session}/properties/{property}",
    params(SessionPropertyPath, AsOfQuery),
    responses(
        (status = 200, description = "The value", body = body::AnyJson, headers(("ETag" = String, description = "The session's version"))),
        (status = 404, description = "Absent or expired", body = Message),
        ContextRead,
    ))]
pub(super) async fn get_property(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
) -> Result<Response, ApiError> {
    check_target(&target)?;
    let property = target.property.clone().unwrap_or_default();
    let stream = session_stream(&account.id, &target.namespace, &target.session_id);
    let streams = Streams::session(&account.id, &target.namespace, &target.session_id);
    let key = property.clone();
    let (value, version) = at
        .read(&state, streams, move |conn, now| {
            let (namespace, session) = (&target.namespace, &target.session_id);
            let value = read::property_value(conn, &account.id, namespace, session, &key, now)?;
            Ok((value, log::stream_version(conn, &stream)?))
        })
        .await?;
    let value = value.ok_or_else(|| ApiError::not_found(format!("property '{property}' not found")))?;
    Ok(json_text(value, Some(version)))
}

/// One namespace property: its bare JSON value.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/properties/{property}",
    params(NamespacePropertyPath, AsOfQuery),
    responses(
        (status = 200, description = "The value", body = body::AnyJson, headers(("ETag" = String, description = "The session's version"))),
        (status = 404, description = "Absent or expired", body = Message),
        ContextRead,
    ))]
pub(super) async fn get_namespace_property(
    state: State<AppState>,
    account: Account,
    target: Target,
    at: AsOf,
) -> Result<Response, ApiError> {
    get_property(state, account, target, at).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// The page, from 0.
    #[param(minimum = 0)]
    page: Option<u64>,
    /// Sessions a page, 1 to 1000 (default 100).
    #[serde(rename = "perPage")]
    #[param(minimum = 1, maximum = 1000)]
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

/// The sessions with unexpired properties, by id.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/session-ids", params(NamespacePath, PageQuery),
    responses(
        (status = 200, description = "Session ids", body = Vec<String>),
        ContextRead,
    ))]
pub(super) async fn session_ids(
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

/// The sessions with unexpired properties, with their properties.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/session-properties",
    params(NamespacePath, PageQuery),
    responses(
        (status = 200, description = "Sessions and their properties", body = Vec<body::SessionProperties>),
        (status = 413, description = "The page would exceed 32 MiB: ask for a smaller `perPage`", body = Message),
        ContextRead,
    ))]
pub(super) async fn session_properties(
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
