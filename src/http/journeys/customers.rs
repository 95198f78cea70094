//! Customer profiles, identification keys, identifying customers by attributes, and the
//! account's journey settings.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ObjectBody;
use super::services::list;
use crate::domain::Command;
use crate::domain::events::Properties;
use crate::domain::journeys::JourneySettings;
use crate::domain::journeys::customers::{CustomerCommand, is_extension, key_index_names, parse_profile};
use crate::domain::journeys::events::{IdentificationKeyDefined, JourneySettingsSet};
use crate::http::AppState;
use crate::http::error::{ApiError, etag};
use crate::http::extract::{Account, JsonBody, P, Q, TenantAccount, Write, WriteContext};
use crate::http::history::Live;
use crate::projections::customers as read;
use crate::projections::journeys::journey_settings;
use crate::store::Outcome;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/profiles", post(create_profile).get(identify))
        .route("/profiles/{customer_id}", get(get_profile).put(replace_profile))
        .route("/metadata/identification-keys", post(define_key).get(list_keys))
        .route("/settings", get(get_settings).put(set_settings))
}

async fn submit(
    state: &AppState,
    account: &Account,
    context: WriteContext,
    command: CustomerCommand,
) -> Result<Outcome, ApiError> {
    let command = Command::Customer { account: account.id.clone(), expected: context.expected, command };
    Ok(state.store.submit(context.request(account.actor(), &account.idempotency_scope(), command)).await?)
}

/// A new customer id: 16 hex characters, the reference's longest.
fn new_customer_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

async fn create_profile(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let profile = parse_profile(write.body.0)?;
    let command = CustomerCommand::Create { customer_id: new_customer_id(), profile };
    let outcome = submit(&state, &account, write.context, command).await?;
    let customer_id = outcome.created.clone().unwrap_or_default();
    let location = format!("{}/profiles/{customer_id}", super::BASE);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        [(header::ETAG, etag(outcome.version))],
        axum::Json(json!({ "customer_id": customer_id })),
    )
        .into_response())
}

async fn replace_profile(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(customer_id): P<String>,
    write: Write<ObjectBody>,
) -> Result<Response, ApiError> {
    let profile = parse_profile(write.body.0)?;
    let outcome =
        submit(&state, &account, write.context, CustomerCommand::Replace { customer_id, profile }).await?;
    Ok((StatusCode::OK, [(header::ETAG, etag(outcome.version))]).into_response())
}

/// A profile as the API shows it: `customer_id`, every attribute, and the extensions picked
/// by `extensions` (`*`: all).
fn render_profile(customer_id: &str, profile: &Properties, extensions: &[String]) -> Value {
    let mut object = Map::new();
    object.insert("customer_id".into(), customer_id.into());
    for (name, value) in profile {
        let value: Value = serde_json::from_str(value.as_str()).expect("stored JSON parses");
        let wanted = !is_extension(&value) || extensions.iter().any(|e| e == "*" || e == name);
        if wanted {
            object.insert(name.clone(), value);
        }
    }
    Value::Object(object)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileQuery {
    extensions: Option<String>,
}

async fn get_profile(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(customer_id): P<String>,
    _: Live,
    Q(query): Q<ProfileQuery>,
) -> Result<Response, ApiError> {
    let profile = state
        .store
        .read(|conn| read::load_profile(conn, &account.id, &customer_id))?
        .ok_or_else(|| ApiError::not_found(format!("There is no customer {customer_id}")))?;
    let extensions = list(query.extensions.as_deref());
    Ok(axum::Json(render_profile(&customer_id, &profile, &extensions)).into_response())
}

/// Parameters of identification that are not attributes.
const IDENTIFY_OPTIONS: &[&str] = &["id_key", "include_profile", "extensions", "include_extensions"];

/// Finds customers by the attributes of an identification key: `id_key`'s, or else the first
/// key (in definition order) whose attributes the query all gives, or else the key with the
/// longest given prefix of attributes. Several customers may match.
async fn identify(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    _: Live,
    Q(query): Q<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let include_profile = match query.get("include_profile").map(String::as_str) {
        None | Some("no") => false,
        Some("yes") => true,
        Some(_) => return Err(ApiError::bad_request("include_profile must be yes or no")),
    };
    if query.get("include_extensions").is_some_and(|v| v != "always" && v != "unique") {
        return Err(ApiError::bad_request("include_extensions must be always or unique"));
    }
    let extensions = list(query.get("extensions").map(String::as_str));
    let given: HashMap<&str, &str> = query
        .iter()
        .filter(|(name, _)| !IDENTIFY_OPTIONS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if given.is_empty() {
        return Err(ApiError::bad_request(
            "give the attributes of an identification key, e.g. ?EmailAddress=...",
        ));
    }
    let id_key = query.get("id_key").cloned();
    let account_id = account.id.clone();
    let found = state
        .store
        .read(|conn| {
            let keys = read::identification_keys(conn, &account_id)?;
            let Some(criteria) = choose_key(&keys, id_key.as_deref(), &given) else {
                return Ok(None);
            };
            let ids = read::customers_matching(conn, &account_id, &criteria)?;
            let mut found = Vec::new();
            for id in ids {
                let profile =
                    if include_profile { read::load_profile(conn, &account_id, &id)? } else { None };
                found.push((id, profile));
            }
            Ok(Some(found))
        })?
        .ok_or_else(|| {
            ApiError::bad_request("no identification key of this account covers the given attributes")
        })?;
    let body: Vec<Value> = found
        .iter()
        .map(|(id, profile)| match profile {
            Some(profile) => render_profile(id, profile, &extensions),
            None => json!({ "customer_id": id }),
        })
        .collect();
    Ok(axum::Json(body).into_response())
}

/// The criteria of the identification key chosen for `given`, as (index name, values).
fn choose_key(
    keys: &[IdentificationKeyDefined],
    id_key: Option<&str>,
    given: &HashMap<&str, &str>,
) -> Option<Vec<(String, Vec<String>)>> {
    let covered = |key: &IdentificationKeyDefined| -> Vec<(String, Vec<String>)> {
        key_index_names(key)
            .into_iter()
            .map_while(|name| given.get(name.as_str()).map(|value| (name.clone(), vec![value.to_string()])))
            .collect()
    };
    if let Some(name) = id_key {
        let key = keys.iter().find(|key| key.name.eq_ignore_ascii_case(name))?;
        let criteria = covered(key);
        return (criteria.len() == key.attributes.len()).then_some(criteria);
    }
    if let Some(key) = keys.iter().find(|key| covered(key).len() == key.attributes.len()) {
        return Some(covered(key));
    }
    // The longest covered prefix; on a tie, the key defined first.
    let mut best: Option<Vec<(String, Vec<String>)>> = None;
    for criteria in keys.iter().map(covered) {
        if criteria.len() > best.as_ref().map_or(0, Vec::len) {
            best = Some(criteria);
        }
    }
    best
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: String,
    #[serde(default)]
    source: Option<String>,
    attributes: Vec<String>,
    #[serde(default)]
    unique: bool,
}

async fn define_key(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    write: Write<JsonBody<KeyBody>>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = write.body;
    let key = IdentificationKeyDefined {
        name: body.name.clone(),
        source: body.source.unwrap_or_else(|| "profile".into()),
        attributes: body.attributes,
        unique: body.unique,
    };
    submit(&state, &account, write.context, CustomerCommand::DefineIdentificationKey(key)).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "name": body.name }))).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    _: Live,
) -> Result<Response, ApiError> {
    let keys = state.store.read(|conn| read::identification_keys(conn, &account.id))?;
    let body: Vec<Value> = keys
        .iter()
        .map(|key| json!({ "name": key.name, "source": key.source, "attributes": key.attributes, "unique": key.unique }))
        .collect();
    Ok(axum::Json(body).into_response())
}

async fn get_settings(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    _: Live,
) -> Result<Response, ApiError> {
    let settings = state.store.read(|conn| journey_settings(conn, &account.id))?;
    Ok(axum::Json(settings_json(&settings)).into_response())
}

fn settings_json(settings: &JourneySettings) -> Value {
    json!({
        "auto_complete_after": settings.auto_complete_after,
        "abandon_dispositions": settings.abandon_dispositions(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    auto_complete_after: Option<u64>,
    abandon_dispositions: Option<Vec<String>>,
}

/// Replaces the settings: a field left out returns to its default.
async fn set_settings(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    write: Write<JsonBody<SettingsBody>>,
) -> Result<Response, ApiError> {
    let JsonBody(SettingsBody { auto_complete_after, abandon_dispositions }) = write.body;
    for disposition in abandon_dispositions.iter().flatten() {
        crate::domain::names::check_name("a disposition", disposition)?;
    }
    let settings = JourneySettingsSet { auto_complete_after, abandon_dispositions };
    submit(&state, &account, write.context, CustomerCommand::SetJourneySettings(settings.clone())).await?;
    let settings = JourneySettings {
        auto_complete_after: settings.auto_complete_after,
        abandon_dispositions: settings.abandon_dispositions,
    };
    Ok(axum::Json(settings_json(&settings)).into_response())
}
