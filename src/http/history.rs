//! History and as-of reads. `AsOf` is the `as_of` / `as_of_seq` of a GET: its `read` runs the
//! GET's query on today's projections, or on a snapshot folded from the log at that point
//! (`projections::as_of`). The change history routes of the context store live here; the
//! service history route is in the journeys router, so that its errors take that family's shape.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::context::check_target;
use super::error::ApiError;
use super::extract::{Account, P, Q, Target, TenantAccount};
use super::openapi::params::{NamespacePath, NamespacePropertyPath, SessionPath, SessionPropertyPath};
use super::openapi::responses::{ContextRead, JourneysError, JourneysRead, Message};
use super::openapi::schemas::History;
use super::openapi::{Caller, secured};
use crate::domain::events::{service_stream, session_stream};
use crate::projections::as_of::{self, AsOfError, Point, Streams};
use crate::projections::history::{self, Page};
use crate::store::StoreError;
use crate::store::db::Connection;

/// The point a GET reads at: today, or `as_of=<RFC 3339 time>` / `as_of_seq=<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Now,
    At(Point),
}

#[derive(Deserialize)]
struct AsOfParams {
    as_of: Option<String>,
    as_of_seq: Option<String>,
}

impl FromRequestParts<AppState> for AsOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(params) = Query::<AsOfParams>::try_from_uri(&parts.uri)
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        match (params.as_of, params.as_of_seq) {
            (None, None) => Ok(AsOf::Now),
            (Some(_), Some(_)) => Err(ApiError::bad_request("give as_of or as_of_seq, not both")),
            (Some(time), None) => {
                let time = DateTime::parse_from_rfc3339(&time).map_err(|_| {
                    ApiError::bad_request("as_of must be an RFC 3339 time, such as 2026-01-01T10:42:00Z")
                })?;
                let time = time.with_timezone(&Utc);
                if time > state.clock.now() {
                    return Err(ApiError::bad_request("as_of is in the future: the log has no answer yet"));
                }
                Ok(AsOf::At(Point::Time(time)))
            }
            (None, Some(seq)) => seq
                .parse()
                .map(|seq| AsOf::At(Point::Seq(seq)))
                .map_err(|_| ApiError::bad_request("as_of_seq must be a seq of the log: 0, 1, 2, …")),
        }
    }
}

/// A GET that answers from today's projections only: `as_of` or `as_of_seq` there is a 400,
/// not today's answer passed off as the past's.
pub struct Live;

impl FromRequestParts<AppState> for Live {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match AsOf::from_request_parts(parts, state).await? {
            AsOf::Now => Ok(Live),
            AsOf::At(_) => Err(ApiError::bad_request("this route does not answer as_of or as_of_seq")),
        }
    }
}

impl AsOf {
    /// Runs `query` with the time that expiries are compared with: today, inline on a pooled
    /// connection as any point read; at a point, on a snapshot of `streams`, on the blocking pool.
    pub async fn read<T: Send + 'static>(
        self,
        state: &AppState,
        streams: Streams,
        query: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.answer(state, streams, false, query).await
    }

    /// `read` for listings, which today already run on the blocking pool.
    pub async fn read_large<T: Send + 'static>(
        self,
        state: &AppState,
        streams: Streams,
        query: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.answer(state, streams, true, query).await
    }

    async fn answer<T: Send + 'static>(
        self,
        state: &AppState,
        streams: Streams,
        large: bool,
        query: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let now = state.clock.now();
        Ok(match self {
            AsOf::Now if large => state.store.read_large(move |conn| query(conn, now)).await?,
            AsOf::Now => state.store.read(|conn| query(conn, now))?,
            AsOf::At(point) => at(state, point, streams, query).await?,
        })
    }
}

async fn at<T: Send + 'static>(
    state: &AppState,
    point: Point,
    streams: Streams,
    query: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let answer = state
        .store
        .read_large(move |conn| match as_of::snapshot(conn, point, &streams) {
            Ok(snapshot) => query(&snapshot.conn, snapshot.now).map(Ok),
            Err(AsOfError::Store(error)) => Err(error),
            Err(refused) => Ok(Err(refused)),
        })
        .await?;
    answer.map_err(|refused| match refused {
        AsOfError::Archived { .. } => ApiError::gone(refused.to_string()),
        refused => ApiError::bad_request(refused.to_string()),
    })
}

/// A page (history, the feed) asked for after a position before the account's last archive:
/// 410, naming the segment (with no `after`, or 0, it starts after the archive).
pub(crate) fn refuse_archived(state: &AppState, account: &str, after: u64) -> Result<(), ApiError> {
    let cut = state.store.read(|conn| crate::store::archive::cut(conn, account))?;
    match cut {
        Some(cut) if after > 0 && after < cut.through_seq => Err(ApiError::gone(format!(
            "the account's log up to seq {} is archived (the last of it in segment {}); the log goes on \
             after it: ask with no after, or after={}",
            cut.through_seq, cut.segment, cut.through_seq
        ))),
        _ => Ok(()),
    }
}

/// The context store's history routes (the service's is in the journeys router).
pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(namespace_history))
        .routes(routes!(namespace_property_history))
        .routes(routes!(session_history))
        .routes(routes!(property_history));
    secured(router, Caller::Tenant, "history")
}

/// `after` and `limit` of a history page.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Entries with a larger seq than this one (default 0).
    #[param(minimum = 0)]
    after: Option<u64>,
    /// Entries a page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl PageQuery {
    /// `after` a seq (default 0), `limit` from 1 to 1000 (default 100).
    fn checked(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request("limit must be between 1 and 1000"));
        }
        Ok(Page::new(self.after.unwrap_or(0), limit))
    }
}

/// Every event of a session's stream, oldest first.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/{session}/history", params(SessionPath, PageQuery),
    responses(
        (status = 200, description = "A page of the history", body = History),
        (status = 404, description = "The session has no events", body = Message),
        ContextRead,
    ))]
async fn session_history(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    Q(query): Q<PageQuery>,
) -> Result<Response, ApiError> {
    check_target(&target)?;
    let page = query.checked()?;
    refuse_archived(&state, &account.id, page.after)?;
    let stream = session_stream(&account.id, &target.namespace, &target.session_id);
    let property = target.property.clone();
    let history = state
        .store
        .read_large(move |conn| history::session_history(conn, &stream, property.as_deref(), page))
        .await?;
    let history = history.ok_or_else(|| match &target.property {
        Some(property) => ApiError::not_found(format!("property '{property}' has no history")),
        None => ApiError::not_found(format!("session '{}' has no history", target.session_id)),
    })?;
    Ok(axum::Json(history).into_response())
}

/// The events of a session's stream that touched one property.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/{session}/properties/{property}/history",
    params(SessionPropertyPath, PageQuery),
    responses(
        (status = 200, description = "A page of the history", body = History),
        (status = 404, description = "No event ever touched the property", body = Message),
        ContextRead,
    ))]
async fn property_history(
    state: State<AppState>,
    account: Account,
    target: Target,
    query: Q<PageQuery>,
) -> Result<Response, ApiError> {
    session_history(state, account, target, query).await
}

/// Every event of the namespace's own properties (session `__default__`).
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/history", params(NamespacePath, PageQuery),
    responses(
        (status = 200, description = "A page of the history", body = History),
        (status = 404, description = "The namespace's properties have no events", body = Message),
        ContextRead,
    ))]
async fn namespace_history(
    state: State<AppState>,
    account: Account,
    target: Target,
    query: Q<PageQuery>,
) -> Result<Response, ApiError> {
    session_history(state, account, target, query).await
}

/// The events that touched one namespace property.
#[utoipa::path(get, path = "/v1/account/{account}/{namespace}/properties/{property}/history",
    params(NamespacePropertyPath, PageQuery),
    responses(
        (status = 200, description = "A page of the history", body = History),
        (status = 404, description = "No event ever touched the property", body = Message),
        ContextRead,
    ))]
async fn namespace_property_history(
    state: State<AppState>,
    account: Account,
    target: Target,
    query: Q<PageQuery>,
) -> Result<Response, ApiError> {
    session_history(state, account, target, query).await
}

/// `GET /genesys/1/cs/services/{service_id}/history`: the service's events, states and tasks
/// included, with their payloads. Its path is relative to the journeys API's base.
#[utoipa::path(get, path = "/services/{service_id}/history",
    params(("service_id" = String, Path, description = "The service"), PageQuery),
    responses(
        (status = 200, description = "A page of the history", body = History),
        (status = 404, description = "No such service", body = JourneysError),
        JourneysRead,
    ))]
pub async fn service_history(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(service_id): P<String>,
    Q(query): Q<PageQuery>,
) -> Result<Response, ApiError> {
    let page = query.checked()?;
    refuse_archived(&state, &account.id, page.after)?;
    let stream = service_stream(&account.id, &service_id);
    let history = state.store.read_large(move |conn| history::service_history(conn, &stream, page)).await?;
    let history = history.ok_or_else(|| ApiError::not_found(format!("There is no service {service_id}")))?;
    Ok(axum::Json(history).into_response())
}
