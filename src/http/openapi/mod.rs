//! The OpenAPI 3.1 description of the HTTP API, and the reference that shows it.
//!
//! Every route is registered with `routes!` from the handler's own `#[utoipa::path]`, so a route
//! and its description come from one place; this module adds what every route shares (the
//! request head limits, `X-Request-ID`, the security schemes and error responses), serves the
//! result at `GET /openapi.json`, and Swagger UI, embedded in the binary, at `/docs/`.

pub mod analytics;
pub mod journeys;
pub mod params;
pub mod responses;
pub mod schemas;

use std::sync::Arc;

use axum::Extension;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{InfoBuilder, OpenApi, Ref, RefOr, Tag};
use utoipa::{IntoParams, PartialSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::P;

/// Who a family's routes are for: the security requirement of each of their operations.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// An account's API key: `maven-api-key`, or `Authorization: Bearer`.
    Tenant,
    /// The admin token, as `Authorization: Bearer`.
    Admin,
}

/// The operations of a path, those it has.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// `router`'s routes, each requiring `caller`'s credentials, and tagged `tag`.
pub fn secured(mut router: OpenApiRouter<AppState>, caller: Caller, tag: &str) -> OpenApiRouter<AppState> {
    let requirements = match caller {
        Caller::Tenant => vec![
            SecurityRequirement::new("apiKey", Vec::<String>::new()),
            SecurityRequirement::new("bearerKey", Vec::<String>::new()),
        ],
        Caller::Admin => vec![SecurityRequirement::new("adminToken", Vec::<String>::new())],
    };
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.security = Some(requirements.clone());
        }
    }
    tagged(router, tag)
}

/// `router`'s routes, tagged `tag` (the reference groups operations by tag).
pub fn tagged(mut router: OpenApiRouter<AppState>, tag: &str) -> OpenApiRouter<AppState> {
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.tags = Some(vec![tag.to_string()]);
        }
    }
    router
}

/// The description's frame: what the API is, before its routes are added.
pub fn frame() -> OpenApi {
    let info = InfoBuilder::new()
        .title("ctxd")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "An event-sourced context store (LivePerson Conversation Context Service v1) and customer \
             journeys (Genesys Context Services), with analytics, an audit surface and an admin API. \
             Every response carries `X-Request-ID`. docs/API.md says what each call does.",
        ))
        .build();
    let mut api = OpenApi::new(info, utoipa::openapi::Paths::new());
    api.tags = Some(
        [
            ("context", "The context store (LivePerson Conversation Context Service v1)"),
            ("history", "Change history of sessions"),
            ("journeys", "Customer journeys (Genesys Context Services); errors add `exception`"),
            ("analytics", "Where customers abandon"),
            ("audit", "The event feed, chain verification, signed heads and erasure"),
            ("admin", "Accounts, their keys and limits (admin token)"),
            ("operations", "Liveness, readiness, metrics, the dashboard and this reference"),
        ]
        .into_iter()
        .map(|(name, description)| {
            let mut tag = Tag::new(name);
            tag.description = Some(description.to_string());
            tag
        })
        .collect(),
    );
    api
}

/// What every route shares, added to `api`: the security schemes, the error responses, and on
/// every operation `X-Request-ID` and the request head limits (414, 431), which the outermost
/// layer applies to every request.
pub fn finish(mut api: OpenApi) -> OpenApi {
    let components = api.components.get_or_insert_with(Default::default);
    responses::register(components);
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "maven-api-key",
            "An account's API key (POST /admin/accounts/{account_id}/keys)",
        ))),
    );
    let bearer = |description: &str| {
        SecurityScheme::Http(
            HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build(),
        )
    };
    components
        .add_security_scheme("bearerKey", bearer("An account's API key as `Authorization: Bearer <key>`"));
    components.add_security_scheme(
        "adminToken",
        bearer("The admin token (`CTXD_ADMIN_TOKEN`, or the file `<data dir>/admin-token`)"),
    );
    let request_id = ParameterBuilder::new()
        .name("X-Request-ID")
        .parameter_in(ParameterIn::Header)
        .description(Some("The request's id, echoed in the response and recorded with what it wrote; at most 128 characters are kept, else a new UUID is given"))
        .schema(Some(String::schema()))
        .build();
    components.parameters.insert("X-Request-ID".into(), request_id.into());
    for (path, item) in api.paths.paths.iter_mut() {
        let shape = match path.starts_with(crate::http::journeys::BASE) {
            true => responses::Shape::Journeys,
            false => responses::Shape::Message,
        };
        for operation in operations_mut(item) {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            parameters.push(RefOr::Ref(Ref::new("#/components/parameters/X-Request-ID")));
            let head_limits = responses::refs(shape, &[414, 431]);
            for (status, response) in head_limits {
                operation.responses.responses.entry(status).or_insert(response);
            }
            // OpenAPI 3.1 requires a description on every response: the status's reason at least.
            for (status, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    let reason = status.parse().ok().and_then(|code| StatusCode::from_u16(code).ok());
                    response.description =
                        reason.and_then(|code| code.canonical_reason()).unwrap_or("").to_string();
                }
            }
        }
    }
    api
}

/// The description, as served.
#[derive(Clone)]
pub struct Description(Arc<String>);

impl Description {
    pub fn new(api: &OpenApi) -> Description {
        Description(Arc::new(api.to_json().expect("the description serializes")))
    }
}

/// `/openapi.json` and the reference at `/docs/`.
pub fn router() -> OpenApiRouter<AppState> {
    tagged(
        OpenApiRouter::new()
            .routes(routes!(description))
            .routes(routes!(docs_redirect))
            .routes(routes!(docs_index))
            .routes(routes!(docs_file)),
        "operations",
    )
}

/// The OpenAPI 3.1 description of this API.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "This description", content_type = "application/json", body = Object),
))]
async fn description(Extension(description): Extension<Description>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], description.0.as_str().to_owned()).into_response()
}

/// The reference's address without its slash.
#[utoipa::path(get, path = "/docs", responses(
    (status = 308, description = "To `/docs/`", headers(("Location" = String))),
))]
async fn docs_redirect() -> Redirect {
    Redirect::permanent("/docs/")
}

/// The browsable reference (Swagger UI), reading `/openapi.json`; it loads nothing from elsewhere.
#[utoipa::path(get, path = "/docs/", responses(
    (status = 200, description = "The reference's page", content_type = "text/html", body = String),
))]
async fn docs_index() -> Result<Response, ApiError> {
    docs_asset("index.html")
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct DocsFile {
    /// A file of the reference, e.g. `swagger-ui.css`.
    #[param(example = "swagger-ui.css")]
    file: String,
}

/// A file of the reference: its scripts, styles and images.
#[utoipa::path(get, path = "/docs/{file}", params(DocsFile), responses(
    (status = 200, description = "The file", content_type = "*/*", body = String),
    (status = 404, description = "No such file", body = responses::Message),
))]
async fn docs_file(P(file): P<String>) -> Result<Response, ApiError> {
    docs_asset(&file)
}

/// A file of the embedded Swagger UI, its initializer pointed at `/openapi.json`.
fn docs_asset(file: &str) -> Result<Response, ApiError> {
    let config = Arc::new(utoipa_swagger_ui::Config::new(["/openapi.json"]).validator_url("none"));
    let found = utoipa_swagger_ui::serve(file, config).map_err(|error| {
        tracing::error!(%error, "the embedded reference failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let found = found.ok_or_else(|| ApiError::not_found(format!("the reference has no file '{file}'")))?;
    let headers = [
        (header::CONTENT_TYPE, found.content_type),
        // The reference loads its scripts, styles and the description from this server only.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:".to_string(),
        ),
    ];
    Ok((headers, found.bytes.into_owned()).into_response())
}
