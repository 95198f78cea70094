//! The admin API: accounts and their API keys, behind the admin token.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ADMIN_SCOPE, Admin, JsonBody, NoBody, P, Write};
use crate::auth::generate_api_key;
use crate::domain::Command;
use crate::domain::accounts::AccountCommand;
use crate::domain::events::Role;
use crate::projections::accounts;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(list_accounts).post(create_account))
        .route("/admin/accounts/{account_id}", get(get_account))
        .route("/admin/accounts/{account_id}/api-key", post(issue_key))
        .route("/admin/accounts/{account_id}/keys", get(list_keys).post(issue_named_key))
        .route("/admin/accounts/{account_id}/keys/{name}", delete(revoke_key))
        .route("/admin/accounts/{account_id}/limits", get(get_limits).put(set_limits))
}

/// An account's limits as `PUT …/limits` takes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    /// Required, so that a typo cannot clear a limit: a number, or null for the default.
    writes_per_second: Option<u32>,
}

/// `{"account_id", "writes_per_second" (its own, or null), "effective_writes_per_second"
/// (its own, else the server's default, else null: unlimited)}`.
fn limits_json(state: &AppState, account_id: &str, own: Option<u32>) -> Response {
    axum::Json(json!({
        "account_id": account_id,
        "writes_per_second": own,
        "effective_writes_per_second": state.store.write_rate(account_id),
    }))
    .into_response()
}

async fn get_limits(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
) -> Result<Response, ApiError> {
    let own = state.store.read(|conn| accounts::write_limit(conn, &account_id))?;
    let own = own.ok_or_else(|| unknown_account(&account_id))?;
    Ok(limits_json(&state, &account_id, own))
}

async fn set_limits(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
    write: Write<JsonBody<serde_json::Value>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    if body.get("writes_per_second").is_none() {
        return Err(ApiError::bad_request(
            "give writes_per_second: a number, or null for the server's default",
        ));
    }
    let Limits { writes_per_second } = serde_json::from_value(body)
        .map_err(|error| ApiError::bad_request(format!("invalid limits: {error}")))?;
    let command =
        Command::Account(AccountCommand::SetLimits { account_id: account_id.clone(), writes_per_second });
    state.store.submit(write.context.request("admin".into(), ADMIN_SCOPE, command)).await?;
    Ok(limits_json(&state, &account_id, writes_per_second))
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
    let account_id = crate::domain::names::normal_form(account_id);
    let command = Command::Account(AccountCommand::CreateAccount { account_id: account_id.clone() });
    state.store.submit(write.context.request("admin".into(), ADMIN_SCOPE, command)).await?;
    let location = format!("/admin/accounts/{}", percent_encode(&account_id));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(json!({ "account_id": account_id })))
        .into_response())
}

async fn get_account(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
) -> Result<Response, ApiError> {
    let account = state.store.read(|conn| accounts::get(conn, &account_id))?;
    let account = account.ok_or_else(|| unknown_account(&account_id))?;
    Ok(axum::Json(account).into_response())
}

fn unknown_account(account_id: &str) -> ApiError {
    ApiError::not_found(format!("account '{account_id}' not found"))
}

/// A path segment with everything but unreserved characters percent-encoded.
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn list_accounts(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let accounts = state.store.read(accounts::list)?;
    Ok(axum::Json(accounts).into_response())
}

/// `POST …/api-key`: LivePerson's call, on the account's `default` key (replaced if active).
async fn issue_key(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let key = generate_api_key();
    let command = AccountCommand::issue_default_key(&account_id, &key.key_id, &key.key_hash);
    let request = write.context.request("admin".into(), ADMIN_SCOPE, Command::Account(command));
    if state.store.submit(request).await?.replayed {
        return Ok(replayed_key(&account_id));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "account_id": account_id, "key_id": key.key_id, "api_key": key.key })),
    )
        .into_response())
}

/// The answer to a retried key issue: the key of the first request was shown once and is not
/// stored.
fn replayed_key(account_id: &str) -> Response {
    axum::Json(json!({
        "account_id": account_id,
        "replayed": true,
        "message": "a key was already issued for this Idempotency-Key; it is shown only once",
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: String,
}

/// `POST …/keys` `{"name", "role"}`: a named key beside the account's others.
async fn issue_named_key(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
    write: Write<JsonBody<NewKey>>,
) -> Result<Response, ApiError> {
    let JsonBody(NewKey { name, role }) = write.body;
    let role = Role::parse(&role)
        .ok_or_else(|| ApiError::bad_request(format!("unknown role '{role}': give read, audit or write")))?;
    let key = generate_api_key();
    let command = AccountCommand::IssueApiKey {
        account_id: account_id.clone(),
        key_id: key.key_id.clone(),
        key_hash: key.key_hash,
        name: name.clone(),
        role,
        replace: false,
    };
    let request = write.context.request("admin".into(), ADMIN_SCOPE, Command::Account(command));
    if state.store.submit(request).await?.replayed {
        return Ok(replayed_key(&account_id));
    }
    let location = format!("/admin/accounts/{}/keys/{}", percent_encode(&account_id), percent_encode(&name));
    let body = json!({ "name": name, "role": role.as_str(), "key_id": key.key_id, "key": key.key });
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(body)).into_response())
}

/// `GET …/keys`: the account's active keys — names, roles, ids, when issued; never secrets.
async fn list_keys(
    State(state): State<AppState>,
    _: Admin,
    P(account_id): P<String>,
) -> Result<Response, ApiError> {
    let found = state.store.read(|conn| {
        let exists = accounts::get(conn, &account_id)?.is_some();
        exists.then(|| accounts::keys(conn, &account_id)).transpose()
    })?;
    let keys = found.ok_or_else(|| unknown_account(&account_id))?;
    // What the nodes recorded, or what this node saw since, whichever is later.
    let keys: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let last_used = key.last_used.max(state.store.key_last_used_here(&key.key_hash));
            let last_used = last_used
                .and_then(chrono::DateTime::from_timestamp_micros)
                .map(crate::store::log::format_time);
            let mut listed = serde_json::to_value(&key).expect("a key serializes");
            listed["last_used_at"] = json!(last_used);
            listed
        })
        .collect();
    Ok(axum::Json(json!({ "account_id": account_id, "keys": keys })).into_response())
}

/// `DELETE …/keys/{name}`: revokes the active key of that name; the others keep working.
async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    P((account_id, name)): P<(String, String)>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::RevokeApiKey { account_id, name };
    state.store.submit(write.context.request("admin".into(), ADMIN_SCOPE, Command::Account(command))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
