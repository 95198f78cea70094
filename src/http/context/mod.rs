//! The context store, LivePerson Conversation Context Service v1 compatible, under
//! `/v1/account/{account}`: its writes (`write.rs`) and reads (`read.rs`). Namespace routes
//! address the namespace's session `__default__`, so one function serves both the namespace and
//! the session form of each endpoint; each form has its own route, described where it is
//! declared.

mod read;
mod write;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, etag};
use super::extract::{Account, Target, WriteContext};
use super::openapi::{Caller, secured};
use crate::domain::Command;
use crate::domain::context::{ContextCommand, SessionRef};
use crate::domain::names::{check_name, check_namespace};

pub fn router() -> OpenApiRouter<AppState> {
    use read::*;
    use write::*;
    let router = OpenApiRouter::new()
        .routes(routes!(create_namespace, list_namespaces))
        .routes(routes!(delete_namespace))
        .routes(routes!(patch_namespace_properties, get_namespace_document))
        .routes(routes!(put_namespace_property, get_namespace_property, delete_namespace_property))
        .routes(routes!(patch_properties, get_document, clear_session))
        .routes(routes!(get_document_slash, clear_session_slash))
        .routes(routes!(put_property, get_property, delete_property))
        .routes(routes!(set_session_ttl, list_session_ttls))
        .routes(routes!(delete_session))
        .routes(routes!(deletion_status))
        .routes(routes!(session_ids))
        .routes(routes!(session_properties));
    secured(router, Caller::Tenant, "context")
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

/// Checks the names a read addresses, as writes do, so that bad names are a 400 everywhere.
pub(super) fn check_target(target: &Target) -> Result<(), ApiError> {
    check_namespace(&target.namespace)?;
    check_name("session id", &target.session_id)?;
    if let Some(property) = &target.property {
        check_name("property name", property)?;
    }
    Ok(())
}
