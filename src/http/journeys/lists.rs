//! The lists of services: a customer's, and an anonymous contact key's, all of them or the
//! active or completed ones, today or as of a point of the log.

use axum::extract::{MatchedPath, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::paths::{ContactKeyPath, CustomerPath};
use super::render::{self, Extensions};
use super::services::{ServiceQuery, list};
use super::status_of;
use crate::domain::journeys::fields::parse_time;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{P, Q, TenantAccount};
use crate::http::history::AsOf;
use crate::http::openapi::journeys as body;
use crate::http::openapi::params::AsOfQuery;
use crate::http::openapi::responses::JourneysRead;
use crate::projections::as_of::Streams;
use crate::projections::journeys::{self as read, Owner, ServiceFilter, Status};

async fn list_services(
    state: AppState,
    at: AsOf,
    account: String,
    owner: (bool, String),
    status: Status,
    query: ServiceQuery,
) -> Result<Response, ApiError> {
    let filter = ServiceFilter {
        status,
        started_from: query.started_from.as_deref().map(|t| parse_time("started_from", t)).transpose()?,
        started_to: query.started_to.as_deref().map(|t| parse_time("started_to", t)).transpose()?,
        service_types: list(query.service_types.as_deref()),
    };
    let (embed, picked) = (query.embed(), Extensions::parse(query.extensions.as_deref()));
    let streams = match owner.0 {
        true => Streams::Customer { account: account.clone(), customer_id: owner.1.clone() },
        false => Streams::ContactKey { account: account.clone(), contact_key: owner.1.clone() },
    };
    let services = at
        .read_large(&state, streams, move |conn, _| {
            let owner = if owner.0 { Owner::Customer(&owner.1) } else { Owner::ContactKey(&owner.1) };
            read::list_services(conn, &account, owner, &filter)
        })
        .await?;
    let body: Vec<Value> = services.iter().map(|doc| render::service(doc, embed, &picked)).collect();
    Ok(axum::Json(body).into_response())
}

/// A customer's services, oldest first, at most 1,000.
#[utoipa::path(get, path = "/customers/{customer_id}/services", params(CustomerPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn customer_services(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
    at: AsOf,
    Q(query): Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_services(state, at, account.id, (true, customer_id), status_of(&route), query).await
}

/// A customer's active services.
#[utoipa::path(get, path = "/customers/{customer_id}/services/active", params(CustomerPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn active_customer_services(
    state: State<AppState>,
    account: TenantAccount,
    path: P<CustomerPath>,
    at: AsOf,
    query: Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    customer_services(state, account, path, at, query, route).await
}

/// A customer's completed services.
#[utoipa::path(get, path = "/customers/{customer_id}/services/completed", params(CustomerPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn completed_customer_services(
    state: State<AppState>,
    account: TenantAccount,
    path: P<CustomerPath>,
    at: AsOf,
    query: Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    customer_services(state, account, path, at, query, route).await
}

/// The services started with a contact key and not (or no longer) associated with a customer.
#[utoipa::path(get, path = "/services/anonymous/{contact_key}", params(ContactKeyPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn anonymous_services(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(ContactKeyPath { contact_key }): P<ContactKeyPath>,
    at: AsOf,
    Q(query): Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    list_services(state, at, account.id, (false, contact_key), status_of(&route), query).await
}

/// The active services of a contact key.
#[utoipa::path(get, path = "/services/anonymous/{contact_key}/active", params(ContactKeyPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn active_anonymous_services(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ContactKeyPath>,
    at: AsOf,
    query: Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    anonymous_services(state, account, path, at, query, route).await
}

/// The completed services of a contact key.
#[utoipa::path(get, path = "/services/anonymous/{contact_key}/completed", params(ContactKeyPath, ServiceQuery, AsOfQuery),
    responses((status = 200, description = "The services", body = Vec<body::Service>), JourneysRead))]
pub(super) async fn completed_anonymous_services(
    state: State<AppState>,
    account: TenantAccount,
    path: P<ContactKeyPath>,
    at: AsOf,
    query: Q<ServiceQuery>,
    route: MatchedPath,
) -> Result<Response, ApiError> {
    anonymous_services(state, account, path, at, query, route).await
}
