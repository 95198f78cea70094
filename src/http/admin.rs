//! The admin API: accounts and their API keys, behind the admin token.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, JsonBody, NoBody, P, Write};
use crate::auth::generate_api_key;
use crate::domain::Command;
use crate::domain::accounts::AccountCommand;
use crate::projections::accounts;

/// Idempotency scope of admin calls.
const ADMIN_SCOPE: &str = "#admin";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(list_accounts).post(create_account))
        .route("/admin/accounts/{account_id}/api-key", post(issue_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    account_id: String,
}

async fn create_account(
    State(state): State<AppState>,
    _: Admin,
    write: Write<JsonBody<NewAccount>>,
) -> Result<Response, ApiError> {
    let JsonBody(NewAccount { account_id }) = write.body;
    let command = Command::Account(AccountCommand::CreateAccount {
        account_id: account_id.clone(),
    });
    state
        .store
        .submit(write.context.request("admin".into(), ADMIN_SCOPE, command))
        .await?;
    let location = format!("/admin/accounts/{account_id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(json!({ "account_id": account_id })),
    )
        .into_response())
}

async fn list_accounts(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let accounts = state.store.read(accounts::list)?;
    Ok(axum::Json(accounts).into_response())
}

async fn issue_key(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let key = generate_api_key();
    let command = Command::Account(AccountCommand::IssueApiKey {
        account_id: account_id.clone(),
        key_id: key.key_id.clone(),
        key_hash: key.key_hash,
    });
    let outcome = state
        .store
        .submit(write.context.request("admin".into(), ADMIN_SCOPE, command))
        .await?;
    if outcome.replayed {
        // The key of the first request was shown once and is not stored.
        return Ok(axum::Json(json!({
            "account_id": account_id,
            "replayed": true,
            "message": "a key was already issued for this Idempotency-Key; it is shown only once",
        }))
        .into_response());
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "account_id": account_id, "key_id": key.key_id, "api_key": key.key })),
    )
        .into_response())
}
