//! Customer profiles, identification keys, identifying customers by attributes, and the
//! account's journey settings.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ObjectBody;
use super::paths::CustomerPath;
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
use crate::http::openapi::journeys as body;
use crate::http::openapi::params::WriteHeaders;
use crate::http::openapi::responses::{Done, JourneysError, JourneysRead, JourneysWrite};
use crate::http::openapi::{Caller, secured};
use crate::projections::customers as read;
use crate::projections::journeys::journey_settings;
use crate::store::Outcome;

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(create_profile, identify))
        .routes(routes!(get_profile, replace_profile))
        .routes(routes!(define_key, list_keys))
        .routes(routes!(get_settings, set_settings));
    secured(router, Caller::Tenant, "journeys")
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

/// Creates a customer profile from its attributes and extensions.
#[utoipa::path(post, path = "/profiles", params(WriteHeaders),
    request_body(content = Object, description = "Attributes, and extensions (objects or arrays)"),
    responses(
        (status = 201, description = "Created", body = body::Profile,
            headers(("Location" = String, description = "/genesys/1/cs/profiles/{customer_id}"), ("ETag" = String))),
        JourneysWrite,
    ))]
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

/// Replaces a profile's attributes and the named extensions; others are kept.
#[utoipa::path(put, path = "/profiles/{customer_id}", params(CustomerPath, WriteHeaders),
    request_body(content = Object, description = "Attributes, and extensions (objects or arrays)"),
    responses(
        Done,
        (status = 404, description = "No such customer", body = JourneysError),
        JourneysWrite,
    ))]
async fn replace_profile(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ProfileQuery {
    /// The extensions shown: names, comma-separated, or `*` (default none).
    extensions: Option<String>,
}

/// A customer's profile: its attributes and the extensions asked for.
#[utoipa::path(get, path = "/profiles/{customer_id}", params(CustomerPath, ProfileQuery), responses(
    (status = 200, description = "The profile", body = body::Profile),
    (status = 404, description = "No such customer", body = JourneysError),
    JourneysRead,
))]
async fn get_profile(
    State(state): State<AppState>,
    TenantAccount(account): TenantAccount,
    P(CustomerPath { customer_id }): P<CustomerPath>,
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
#[utoipa::path(get, path = "/profiles",
    params(
        ("id_key" = Option<String>, Query, description = "The identification key to use"),
        ("include_profile" = Option<String>, Query, description = "`yes` or `no` (default): the profiles, or their ids"),
        ("include_extensions" = Option<String>, Query, description = "`always` or `unique`"),
        ("extensions" = Option<String>, Query, description = "The extensions shown: names, comma-separated, or `*`"),
        ("attributes" = Object, Query, style = Form, explode, description = "`<attribute>=<value>` for each attribute given (`Extension.Attribute=value` for extension keys)"),
    ),
    responses(
        (status = 200, description = "The customers found", body = Vec<body::Profile>),
        JourneysRead,
    ))]
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

/// Declares an identification key: the attributes that identify a customer.
#[utoipa::path(post, path = "/metadata/identification-keys", params(WriteHeaders),
    request_body = body::NewIdentificationKey,
    responses(
        (status = 201, description = "Declared", body = body::KeyName),
        JourneysWrite,
    ))]
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

/// The account's identification keys, in declaration order.
#[utoipa::path(get, path = "/metadata/identification-keys", operation_id = "list_identification_keys", responses(
    (status = 200, description = "The keys", body = Vec<body::IdentificationKey>),
    JourneysRead,
))]
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

/// The account's journey settings in force.
#[utoipa::path(get, path = "/settings", responses(
    (status = 200, description = "The settings", body = body::Settings),
    JourneysRead,
))]
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
#[utoipa::path(put, path = "/settings", params(WriteHeaders), request_body = body::NewSettings,
    responses(
        (status = 200, description = "The settings now", body = body::Settings),
        JourneysWrite,
    ))]
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
