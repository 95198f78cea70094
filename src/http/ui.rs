//! The dashboard at `/ui/`: one page, embedded in the binary, that reads the analytics and
//! journeys endpoints like any client (docs/ANALYTICS.md). Nothing is fetched from elsewhere.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("ui/index.html");

pub fn router() -> Router<AppState> {
    Router::new().route("/ui", get(|| async { Redirect::permanent("/ui/") })).route("/ui/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page only talks to this server, and loads no script, style or font from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        INDEX,
    )
}
