//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::openapi::{responses::Message, schemas::Status, tagged};
use crate::store::log;

pub fn router() -> OpenApiRouter<AppState> {
    let router =
        OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics));
    tagged(router, "operations")
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Status, example = json!({"status": "ok"}))))]
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Readiness: the writer accepts commands, holds a database connection, and the database
/// answers a read. It shows no figure of the log (it needs no key).
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Status, example = json!({"status": "ready"})),
    (status = 500, description = "A fault of the server (logged)", body = Message),
    (status = 503, description = "Not ready: the writer is not running or has lost the database", body = Message),
))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !state.store.is_writable() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the writer is not running"));
    }
    if !state.store.writer_connected() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the writer has lost the database and is reconnecting",
        ));
    }
    if state.store.disk_full() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store's disk is full: writes are refused until space is freed",
        ));
    }
    // No figure of the log: this route needs no key, and the log's length is every account's.
    state.store.read(log::last_id)?;
    Ok(axum::Json(json!({ "status": "ready" })))
}

/// Prometheus metrics (docs/API.md, "Operations"); keep it off the tenants' network.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
