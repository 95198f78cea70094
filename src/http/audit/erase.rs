//! Erasure of a context session or a customer: the command, and the event that records it (or,
//! for a customer too large for one step, where the erasure stands).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_PAGE_BYTES, entry_json};
use crate::domain::Command;
use crate::domain::erasure::ErasureTarget;
use crate::domain::names::{check_name, check_namespace};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Account, NoBody, P, Target, TenantAccount, Write};
use crate::http::journeys::paths::CustomerPath;
use crate::http::openapi::params::{PlainWriteHeaders, SessionPath};
use crate::http::openapi::responses::{ContextErase, JourneysErase, JourneysError, JourneysRead, Message};
use crate::http::openapi::schemas as body;
use crate::http::openapi::{Caller, secured};
use crate::projections::journeys::erasure_status;
use crate::store::log::{FeedFilter, read_feed};

/// The routes of the journeys family, relative to its base.
pub fn journeys_router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new().routes(routes!(erase_customer)).routes(routes!(customer_erasure));
    secured(router, Caller::Tenant, "audit")
}

/// Sends an erasure and answers the event that records it.
async fn erase(
    state: &AppState,
    account: &Account,
    write: Write<NoBody>,
    target: ErasureTarget,
) -> Result<Response, ApiError> {
    let customer = match &target {
        ErasureTarget::Customer { customer_id } => Some(customer_id.clone()),
        _ => None,
    };
    let command = Command::Erase { account: account.id.clone(), target };
    let request = write.context.request(account.actor(), &account.idempotency_scope(), command);
    let outcome = state.store.submit(request).await?;
    if let Some(customer_id) = customer {
        let id = account.id.clone();
        let status = state.store.read_large(move |conn| erasure_status(conn, &id, &customer_id)).await?;
        // A replay of the request that started it answers 202 again, with where it stands now.
        if status.erasing || outcome.accepted {
            state.store.wake_steps();
            let location =
                format!("/genesys/1/cs/profiles/{}/erasure", crate::http::path_segment(&status.customer_id));
            let headers = [(axum::http::header::LOCATION, location)];
            return Ok((axum::http::StatusCode::ACCEPTED, headers, axum::Json(status)).into_response());
        }
    }
    let seq = outcome.last_seq.unwrap_or_default();
    let id = account.id.clone();
    let recorded = state.store.read(|conn| {
        read_feed(conn, &id, seq.saturating_sub(1), 1, MAX_PAGE_BYTES, &FeedFilter::default())
    })?;
    let entry = recorded.events.first().map(entry_json).transpose()?.unwrap_or_else(|| "null".into());
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], entry).into_response())
}

/// `POST /v1/account/{account}/namespace/{namespace}/session/{session}/erase`: erases a
/// session's payloads for good; the chain stays verifiable (docs/AUDIT.md). A body is ignored.
#[utoipa::path(post, path = "/v1/account/{account}/namespace/{namespace}/session/{session}/erase",
    params(SessionPath, PlainWriteHeaders),
    responses(
        (status = 200, description = "The `SessionErased` event, as in the feed", body = body::FeedEntry),
        (status = 404, description = "The session has no events", body = Message),
        ContextErase,
    ))]
pub(super) async fn erase_session(
    State(state): State<AppState>,
    account: Account,
    target: Target,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    check_namespace(&target.namespace)?;
    check_name("session id", &target.session_id)?;
    let target = ErasureTarget::Session { namespace: target.namespace, session_id: target.session_id };
    erase(&state, &account, write, target).await
}

/// `GET /genesys/1/cs/profiles/{customer_id}/erasure`: where an erasure that proceeds in steps
/// stands.
#[utoipa::path(get, path = "/profiles/{customer_id}/erasure", params(CustomerPath), responses(
    (status = 200, description = "`erasing: false` when none is (done, or never asked)", body = body::ErasureStatus),
    JourneysRead,
))]
async fn customer_erasure(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
) -> Result<Response, ApiError> {
    let status = state.store.read_large(move |conn| erasure_status(conn, &account.id, &customer_id)).await?;
    Ok(axum::Json(status).into_response())
}

/// `POST /genesys/1/cs/profiles/{customer_id}/erase`: erases a customer's profile and the
/// payloads of their services; a large erasure proceeds in steps (202).
#[utoipa::path(post, path = "/profiles/{customer_id}/erase", params(CustomerPath, PlainWriteHeaders),
    responses(
        (status = 200, description = "The `CustomerErased` event, as in the feed", body = body::FeedEntry),
        (status = 202, description = "Too large for one step: the erasure proceeds in steps", body = body::ErasureStatus,
            headers(("Location" = String, description = "…/profiles/{customer_id}/erasure, where it stands"))),
        (status = 404, description = "The customer has no events", body = JourneysError),
        JourneysErase,
    ))]
async fn erase_customer(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    erase(&state, &account, write, ErasureTarget::Customer { customer_id }).await
}
