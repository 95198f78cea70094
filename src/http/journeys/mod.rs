//! Customer journeys, Genesys Context Services compatible, under `/genesys/1/cs`: services,
//! states and tasks (`services.rs`, `items.rs`), customer profiles and identification
//! (`customers.rs`). The API key decides the account; errors answer `{"message", "exception"}`.

mod customers;
mod items;
mod lists;
pub mod paths;
mod render;
mod services;
mod timeline;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;
use utoipa::openapi::OpenApiBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::{ApiError, ErrorMessage, etag};
use super::extract::{Account, FromBody, WriteContext};
use super::openapi::operations_mut;
use super::openapi::params::TenantHeader;
use crate::domain::journeys::ServiceCommand;
use crate::domain::journeys::fields::{BodyKind, parse_body};
use crate::domain::{Command, DomainError};
use crate::projections::journeys::Status;
use crate::store::Outcome;

/// Where the journeys API lives.
pub const BASE: &str = "/genesys/1/cs";

pub fn router() -> OpenApiRouter<AppState> {
    let (inner, description) = services::router()
        .merge(items::router())
        .merge(customers::router())
        .merge(super::audit::journeys_router())
        .split_for_parts();
    let inner = inner
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(middleware::map_response(error_shape));
    // `BASE/` itself lies outside the nested router, and is no route: it answers a 404 in this
    // family's shape too.
    let base = Router::new()
        .route(&format!("{BASE}/"), any(|| async { ApiError::not_found("no such route") }))
        .layer(middleware::map_response(error_shape));
    let mut router = OpenApiRouter::from(Router::new().nest(BASE, inner).merge(base));
    let mut description = OpenApiBuilder::new().build().nest(BASE, description);
    // Every route of the family reads the key's account, and `ContactCenterId` when given.
    for item in description.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let tenant = TenantHeader::into_params(|| Some(ParameterIn::Header));
            operation.parameters.get_or_insert_with(Vec::new).extend(tenant.into_iter().map(Into::into));
        }
    }
    *router.get_openapi_mut() = description;
    router
}

/// Renders every error of this family as `{"message": ..., "exception": ...}`.
pub(super) async fn error_shape(response: Response) -> Response {
    let Some(ErrorMessage(message)) = response.extensions().get::<ErrorMessage>().cloned() else {
        return response;
    };
    let exception = match response.status() {
        StatusCode::BAD_REQUEST => "BadRequestException",
        StatusCode::FORBIDDEN => "ForbiddenException",
        StatusCode::NOT_FOUND => "NotFoundException",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowedException",
        StatusCode::CONFLICT => "ConflictException",
        StatusCode::GONE => "GoneException",
        StatusCode::PRECONDITION_FAILED => "PreconditionFailedException",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLargeException",
        StatusCode::URI_TOO_LONG => "UriTooLongException",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "RequestHeaderFieldsTooLargeException",
        StatusCode::INSUFFICIENT_STORAGE => "InsufficientStorageException",
        StatusCode::UNPROCESSABLE_ENTITY => "IdempotencyKeyReusedException",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsException",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailableException",
        _ => "InternalException",
    };
    let current_version =
        response.headers().get(header::ETAG).filter(|_| response.status() == StatusCode::PRECONDITION_FAILED);
    let current_version = current_version
        .and_then(|etag| etag.to_str().ok())
        .and_then(|etag| etag.trim_matches('"').parse::<u64>().ok());
    let (mut parts, _) = response.into_parts();
    let body = match current_version {
        Some(current) => json!({ "message": message, "exception": exception, "currentVersion": current }),
        None => json!({ "message": message, "exception": exception }),
    }
    .to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A JSON object body; an empty body is an empty object (end, associate and the like take
/// optional bodies).
pub struct ObjectBody(pub Map<String, Value>);

impl FromBody for ObjectBody {
    fn from_body(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ObjectBody(Map::new()));
        }
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(object)) => Ok(ObjectBody(object)),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
            Err(error) => Err(ApiError::bad_request(format!("invalid JSON body: {error}"))),
        }
    }
}

/// Checks a body as the reference's event of `kind`.
fn event_body(
    object: Map<String, Value>,
    kind: BodyKind,
) -> Result<crate::domain::journeys::fields::Body, ApiError> {
    Ok(parse_body(object, kind)?)
}

/// Sends a command on one service and returns its outcome.
async fn submit_service(
    state: &AppState,
    account: &Account,
    context: WriteContext,
    service_id: &str,
    command: ServiceCommand,
) -> Result<Outcome, ApiError> {
    let command = Command::Service {
        account: account.id.clone(),
        service_id: service_id.to_string(),
        expected: context.expected,
        command,
    };
    Ok(state.store.submit(context.request(account.actor(), &account.idempotency_scope(), command)).await?)
}

/// 200 with the service stream's `ETag` and an optional JSON body.
fn done(outcome: &Outcome, body: Option<Value>) -> Response {
    let headers = [(header::ETAG, etag(outcome.version))];
    match body {
        Some(body) => (StatusCode::OK, headers, axum::Json(body)).into_response(),
        None => (StatusCode::OK, headers).into_response(),
    }
}

/// Which items a list route asks for: its route (not the request's path, where a contact key
/// may be called `active`) ends in `/active`, `/completed`, or neither.
fn status_of(route: &axum::extract::MatchedPath) -> Status {
    let path = route.as_str();
    if path.ends_with("/active") {
        Status::Active
    } else if path.ends_with("/completed") {
        Status::Completed
    } else {
        Status::All
    }
}

/// The id a start command created, as a number for states and tasks.
fn created_number(outcome: &Outcome) -> Result<u32, ApiError> {
    outcome
        .created
        .as_deref()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::from(DomainError::Invalid("the command created nothing".into())))
}
