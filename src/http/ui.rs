//! The dashboard at `/ui/`: one page, embedded in the binary, that reads the analytics and
//! journeys endpoints like any client (docs/ANALYTICS.md). Nothing is fetched from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::tagged;

const INDEX: &str = include_str!("ui/index.html");

pub fn router() -> OpenApiRouter<AppState> {
    tagged(
        OpenApiRouter::new().routes(routes!(root)).routes(routes!(redirect)).routes(routes!(index)),
        "operations",
    )
}

/// The server's root: to the dashboard (temporarily, so that browsers keep asking).
#[utoipa::path(get, path = "/", responses((status = 307, description = "To `/ui/`", headers(("Location" = String)))))]
async fn root() -> Redirect {
    Redirect::temporary("/ui/")
}

/// The dashboard's address without its slash.
#[utoipa::path(get, path = "/ui", responses((status = 308, description = "To `/ui/`", headers(("Location" = String)))))]
async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// The dashboard: one page that reads the analytics and journeys endpoints with a key it asks for.
#[utoipa::path(get, path = "/ui/", responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
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
