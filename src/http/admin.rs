//! The admin API: accounts and their API keys, behind the admin token.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{ADMIN_SCOPE, Admin, JsonBody, NoBody, P, Write};
use super::openapi::params::PlainWriteHeaders;
use super::openapi::responses::{AdminRead, AdminWrite, Message};
use super::openapi::schemas as body;
use super::openapi::{Caller, secured};
use crate::auth::generate_api_key;
use crate::domain::Command;
use crate::domain::accounts::AccountCommand;
use crate::domain::events::Role;
use crate::projections::accounts;

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account))
        .routes(routes!(issue_key))
        .routes(routes!(list_keys, issue_named_key))
        .routes(routes!(revoke_key))
        .routes(routes!(get_limits, set_limits))
        .routes(routes!(get_retention, set_retention))
        .routes(routes!(archive));
    secured(router, Caller::Admin, "admin")
}

/// `/admin/accounts/{account_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AccountPath {
    /// The account.
    #[param(example = "acme")]
    account_id: String,
}

/// `/admin/accounts/{account_id}/keys/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct KeyPath {
    #[param(example = "acme")]
    account_id: String,
    /// The key's name.
    #[param(example = "bot-7")]
    name: String,
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

/// An account's limits.
#[utoipa::path(get, path = "/admin/accounts/{account_id}/limits", params(AccountPath), responses(
    (status = 200, description = "Its own limit and the one applied", body = body::Limits),
    (status = 404, description = "Unknown account", body = Message),
    AdminRead,
))]
async fn get_limits(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
) -> Result<Response, ApiError> {
    let own = state.store.read(|conn| accounts::write_limit(conn, &account_id))?;
    let own = own.ok_or_else(|| unknown_account(&account_id))?;
    Ok(limits_json(&state, &account_id, own))
}

/// Sets or clears an account's writes per second (`AccountLimitsSet` in its log).
#[utoipa::path(put, path = "/admin/accounts/{account_id}/limits", params(AccountPath, PlainWriteHeaders),
    request_body = body::NewLimits,
    responses(
        (status = 200, description = "The limits now", body = body::Limits),
        (status = 404, description = "Unknown account", body = Message),
        AdminWrite,
    ))]
async fn set_limits(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
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

/// An account's retention and its segments, or 404.
fn retention_json(state: &AppState, account_id: &str) -> Result<Response, ApiError> {
    let read = state.store.read(|conn| {
        let days = accounts::retention_days(conn, account_id)?;
        let segments = crate::store::archive::segments(conn, account_id)?;
        Ok((days, segments))
    })?;
    let (Some(days), segments) = read else {
        return Err(unknown_account(account_id));
    };
    let through = segments.last().map_or(0, |segment| segment.last_seq);
    Ok(axum::Json(json!({
        "account_id": account_id,
        "days": days,
        "archived_through_seq": through,
        "segments": segments,
    }))
    .into_response())
}

/// An account's retention, and the segments its archived log is in.
#[utoipa::path(get, path = "/admin/accounts/{account_id}/retention", params(AccountPath), responses(
    (status = 200, description = "Its retention and segments", body = body::Retention),
    (status = 404, description = "Unknown account", body = Message),
    AdminRead,
))]
async fn get_retention(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
) -> Result<Response, ApiError> {
    retention_json(&state, &account_id)
}

/// Sets or clears how many days of an account's log stay live (`RetentionSet` in its log):
/// the sweeper archives older events (docs/AUDIT.md, "Archives").
#[utoipa::path(put, path = "/admin/accounts/{account_id}/retention", params(AccountPath, PlainWriteHeaders),
    request_body = body::NewRetention,
    responses(
        (status = 200, description = "The retention now", body = body::Retention),
        (status = 404, description = "Unknown account", body = Message),
        AdminWrite,
    ))]
async fn set_retention(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
    write: Write<JsonBody<serde_json::Value>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Retention {
        days: Option<u32>,
    }
    if !body.is_object() || body.get("days").is_none() {
        return Err(ApiError::bad_request("give days: a number of days, or null to keep everything"));
    }
    let Retention { days } = serde_json::from_value(body)
        .map_err(|error| ApiError::bad_request(format!("invalid retention: {error}")))?;
    let command = Command::Account(AccountCommand::SetRetention { account_id: account_id.clone(), days });
    state.store.submit(write.context.request("admin".into(), ADMIN_SCOPE, command)).await?;
    retention_json(&state, &account_id)
}

/// Moves an account's events recorded before a time into a segment file, keeping its current
/// state as a snapshot (docs/AUDIT.md, "Archives").
#[utoipa::path(post, path = "/admin/accounts/{account_id}/archive", params(AccountPath, PlainWriteHeaders),
    request_body = body::NewArchive,
    responses(
        (status = 200, description = "What was archived (nothing when no event was that old)", body = body::Archived),
        (status = 404, description = "Unknown account", body = Message),
        (status = 409, description = "The log changed while the archive was prepared, its chain does not verify, or this node has no archive directory", body = Message),
        AdminWrite,
    ))]
async fn archive(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
    write: Write<JsonBody<serde_json::Value>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Archive {
        before: String,
    }
    let Archive { before } = serde_json::from_value(body)
        .map_err(|error| ApiError::bad_request(format!("give before, an RFC 3339 time: {error}")))?;
    let before = chrono::DateTime::parse_from_rfc3339(&before)
        .map_err(|error| ApiError::bad_request(format!("before is not an RFC 3339 time: {error}")))?
        .to_utc();
    let now = state.clock.now();
    if before > now {
        return Err(ApiError::bad_request("before is in the future: only past events are archived"));
    }
    if state.store.read(|conn| accounts::write_limit(conn, &account_id))?.is_none() {
        return Err(unknown_account(&account_id));
    }
    let request = |command| write.context.request("admin".into(), ADMIN_SCOPE, command);
    let archived = crate::store::archive::archive(&state.store, &account_id, before, request, now).await?;
    Ok(axum::Json(archived).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    account_id: String,
}

/// Creates an account.
#[utoipa::path(post, path = "/admin/accounts", params(PlainWriteHeaders), request_body = body::NewAccount,
    responses(
        (status = 201, description = "Created", body = body::AccountId,
            headers(("Location" = String, description = "/admin/accounts/{account_id}, percent-encoded"))),
        (status = 409, description = "It exists, or one differing only in case or character width does", body = Message),
        AdminWrite,
    ))]
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

/// An account.
#[utoipa::path(get, path = "/admin/accounts/{account_id}", params(AccountPath), responses(
    (status = 200, description = "The account", body = body::AccountSummary),
    (status = 404, description = "Unknown account", body = Message),
    AdminRead,
))]
async fn get_account(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
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

/// Every account, by id.
#[utoipa::path(get, path = "/admin/accounts", responses(
    (status = 200, description = "The accounts", body = Vec<body::AccountSummary>),
    AdminRead,
))]
async fn list_accounts(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let accounts = state.store.read(accounts::list)?;
    Ok(axum::Json(accounts).into_response())
}

/// `POST …/api-key`: LivePerson's call, on the account's `default` key (replaced if active).
#[utoipa::path(post, path = "/admin/accounts/{account_id}/api-key", params(AccountPath, PlainWriteHeaders),
    responses(
        (status = 201, description = "The key, shown this once", body = body::IssuedDefaultKey),
        (status = 200, description = "A retry with the same `Idempotency-Key`: no key shown, none issued", body = body::ReplayedKey),
        (status = 404, description = "Unknown account", body = Message),
        AdminWrite,
    ))]
async fn issue_key(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
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
#[utoipa::path(post, path = "/admin/accounts/{account_id}/keys", params(AccountPath, PlainWriteHeaders),
    request_body = body::NewKey,
    responses(
        (status = 201, description = "The key, shown this once", body = body::IssuedKey,
            headers(("Location" = String, description = "/admin/accounts/{account_id}/keys/{name}"))),
        (status = 200, description = "A retry with the same `Idempotency-Key`: no key shown, none issued", body = body::ReplayedKey),
        (status = 404, description = "Unknown account", body = Message),
        (status = 409, description = "The account has an active key of that name", body = Message),
        AdminWrite,
    ))]
async fn issue_named_key(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
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
#[utoipa::path(get, path = "/admin/accounts/{account_id}/keys", params(AccountPath), responses(
    (status = 200, description = "The keys, by name", body = body::KeyList),
    (status = 404, description = "Unknown account", body = Message),
    AdminRead,
))]
async fn list_keys(
    State(state): State<AppState>,
    _: Admin,
    P(AccountPath { account_id }): P<AccountPath>,
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
#[utoipa::path(delete, path = "/admin/accounts/{account_id}/keys/{name}", params(KeyPath, PlainWriteHeaders),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No active key has that name", body = Message),
        AdminWrite,
    ))]
async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    P(KeyPath { account_id, name }): P<KeyPath>,
    write: Write<NoBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::RevokeApiKey { account_id, name };
    state.store.submit(write.context.request("admin".into(), ADMIN_SCOPE, Command::Account(command))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
