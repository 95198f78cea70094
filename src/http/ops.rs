//! Liveness, readiness and metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::store::log;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Ready when the writer accepts commands, holds a database connection, and the database
/// answers a read.
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
