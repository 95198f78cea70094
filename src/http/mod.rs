//! HTTP: one router per API family, merged here, with request ids, metrics and JSON errors
//! for unknown routes and methods.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod context;
pub mod error;
pub mod extract;
pub mod history;
pub mod journeys;
pub mod openapi;
pub mod ops;
pub mod serve;
pub mod slots;
pub mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;
use error::ApiError;

/// Largest request body accepted, in bytes: room for an 800,000-character document in UTF-8.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// sha256 of the admin token.
    pub admin_token_hash: String,
    /// Signs account heads.
    pub signer: Arc<crate::signing::HeadSigner>,
    /// Each account's live event streams.
    pub streams: Arc<slots::AccountSlots>,
    /// Each account's large reads in flight.
    pub large_reads: Arc<slots::AccountSlots>,
}

/// The request's id: the client's `X-Request-ID` when it is usable, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// `text` percent-encoded as one segment of a path (for `Location` headers); `.` too, so that a
/// name `.` or `..` is not taken for a relative path.
pub fn path_segment(text: &str) -> percent_encoding::PercentEncode<'_> {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT)
}

/// The whole HTTP API, and its OpenAPI description (`openapi`), made from the same routes; its
/// paths' names in NFC before a route is matched (`nfc_path`).
pub fn router(state: AppState) -> Router {
    let (router, description) = routes().split_for_parts();
    let description = openapi::Description::new(&openapi::finish(description));
    let served = router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(middleware::from_fn_with_state(state.clone(), slots::limit_large_reads))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(description))
        .layer(middleware::from_fn(limit_request_head))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    Router::new().fallback_service(tower::ServiceExt::map_request(served, nfc_path))
}

/// Every name in the request's path and query in NFC (`names::normal_form`): the account,
/// namespace, session and property a request names are compared in one form whatever form the
/// client sent. Only under `/v1/` and `/admin/`, whose names are kept in NFC; journeys' ids are
/// kept as given. A target over the 414 limit, as sent or once normalized, is left as sent.
fn nfc_path(mut request: Request) -> Request {
    let uri = request.uri();
    let (path, query) = (uri.path(), uri.query());
    let plain = |text: &str| !text.contains('%') && text.is_ascii();
    let target_length = uri.path_and_query().map_or(0, |target| target.as_str().len());
    if (plain(path) && query.is_none_or(plain))
        || !(path.starts_with("/v1/") || path.starts_with("/admin/"))
        || target_length > MAX_URI_BYTES
    {
        return request;
    }
    let segments: Vec<String> = path.split('/').map(nfc_segment).collect();
    let mut target = segments.join("/");
    if let Some(query) = query {
        target.push('?');
        target.push_str(&nfc_query(query));
    }
    if target.len() > MAX_URI_BYTES || uri.path_and_query().is_some_and(|sent| sent.as_str() == target) {
        return request;
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(target) = target.parse() {
        parts.path_and_query = Some(target);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// A path segment in NFC, re-encoded only if that changed it.
fn nfc_segment(segment: &str) -> String {
    match percent_encoding::percent_decode_str(segment).decode_utf8() {
        Ok(name) => match crate::domain::names::normal_form(name.to_string()) {
            normal if normal == name => segment.to_string(),
            normal => path_segment(&normal).to_string(),
        },
        Err(_) => segment.to_string(),
    }
}

/// A query whose names and values are in NFC, re-encoded only if that changed them.
fn nfc_query(query: &str) -> String {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let normal = |text: &String| crate::domain::names::normal_form(text.clone());
    if pairs.iter().all(|(name, value)| normal(name) == *name && normal(value) == *value) {
        return query.to_string();
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &pairs {
        serializer.append_pair(&normal(name), &normal(value));
    }
    serializer.finish()
}

/// Every route, each registered with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::frame())
        .merge(ops::router())
        .merge(admin::router())
        .merge(context::router())
        .merge(history::router())
        .merge(journeys::router())
        .merge(analytics::router())
        .merge(audit::router())
        .merge(ui::router())
        .merge(openapi::router())
}

/// Longest request target (path and query) answered; longer: 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header fields, and most bytes of them together, answered; more: 431.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// 414 and 431 with the JSON message every other error has. The HTTP parser lets more through
/// (`serve::MAX_PARSED_HEADERS`, its 400 KiB buffer) so that these limits, not its own empty
/// answers, decide; past the parser's limits its answer stays empty (API.md).
async fn limit_request_head(request: Request, next: Next) -> Response {
    match head_over_limits(&request) {
        // In the journeys family's shape on its routes, as every other error there.
        Some(refused) if request.uri().path().starts_with(journeys::BASE) => {
            journeys::error_shape(refused.into_response()).await
        }
        Some(refused) => refused.into_response(),
        None => next.run(request).await,
    }
}

/// The 414 or 431 a request's head earns, if any.
fn head_over_limits(request: &Request) -> Option<ApiError> {
    let uri = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if uri > MAX_URI_BYTES {
        let message = format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are answered");
        return Some(ApiError::new(StatusCode::URI_TOO_LONG, message));
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let message = format!(
            "the request has {} header fields of {bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are answered",
            headers.len()
        );
        return Some(ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message));
    }
    None
}

/// The dashboard's URL for a server listening on `addr` (`host:port`): an unspecified address
/// (`0.0.0.0`, `[::]`) is reached on the loopback address of its family.
pub fn dashboard_url(addr: &str) -> String {
    use std::net::SocketAddr;
    let host = match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(v4)) if v4.ip().is_unspecified() => format!("127.0.0.1:{}", v4.port()),
        Ok(SocketAddr::V6(v6)) if v6.ip().is_unspecified() => format!("[::1]:{}", v6.port()),
        Ok(parsed) => parsed.to_string(),
        Err(_) => addr.to_string(),
    };
    format!("http://{host}/ui/")
}

/// Gives each request an id (echoed in `X-Request-ID`), counts it by route and status, and logs
/// it at debug level under target `ctxd::requests` (opt in: `RUST_LOG=info,ctxd::requests=debug`).
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    // Unknown methods share one label, so clients cannot grow the metrics without bound.
    let method = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let mut response = next.run(request).await;
    state.metrics.record_request(&route, method, response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    // A full disk is said once per episode by the writer, not once per refused request.
    if response.status().is_server_error() && response.status() != StatusCode::INSUFFICIENT_STORAGE {
        tracing::warn!(%route, %method, status = %response.status(), %request_id, "server error");
    }
    tracing::debug!(
        target: "ctxd::requests",
        %method,
        %route,
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        %request_id,
        "request"
    );
    response.into_response()
}
