//! The dashboard at `/ui/`: one page, embedded in the binary, that reads the analytics and
//! journeys endpoints like any client (docs/ANALYTICS.md). Nothing is fetched from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::tagged;

const INDEX: &str = include_str!("ui/index.html");

/// The page's policy: it talks to this server only, loads nothing from elsewhere, and runs no
/// script but its own — named by its SHA-256, so that text an answer slipped into the page as
/// markup could not run. Styles may be inline (the bars' widths are set as attributes).
static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    use sha2::Digest;
    let start = INDEX.find("<script>").expect("the page has its script") + "<script>".len();
    let end = INDEX.find("</script>").expect("the page's script ends");
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&INDEX[start..end]));
    format!(
        "default-src 'self'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
});

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
            (header::CONTENT_SECURITY_POLICY, POLICY.as_str()),
        ],
        INDEX,
    )
}
