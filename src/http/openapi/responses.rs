//! The error answers of the description: one reusable response per status and API family
//! shape (`components.responses`), and the sets of them that each kind of route declares
//! (`responses(ContextWrite)` in a route's `#[utoipa::path]`).

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// The error body of the context store, analytics, audit, admin and operations routes.
#[derive(ToSchema)]
#[allow(dead_code)] // describes a body built by `ApiError`
pub struct Message {
    /// What went wrong, for a person to read.
    pub message: String,
}

/// A 412 of the context store: the stream's version is also sent as `ETag`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(title = "VersionConflict")]
pub struct VersionConflict {
    pub message: String,
    /// The addressed stream's version now.
    #[schema(rename = "currentVersion", minimum = 0)]
    pub current_version: u64,
}

/// The error body of the journeys API (Genesys Context Services).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JourneysError {
    pub message: String,
    /// The kind of error, e.g. `BadRequestException`, `NotFoundException`.
    pub exception: String,
    /// On 412: the stream's version now.
    #[schema(rename = "currentVersion", minimum = 0)]
    pub current_version: Option<u64>,
}

/// The body shape an API family answers errors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"message"}` (context store, analytics, audit, admin, operations).
    Message,
    /// `{"message", "exception"}` (journeys).
    Journeys,
}

/// Every error status a family-wide set may name: status, component name, description.
const ERRORS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "Malformed JSON, a body or parameter of the wrong shape, an unknown query parameter, a bad name, or a bad `Idempotency-Key`, `If-Match` or `On-Behalf-Of`",
    ),
    (
        403,
        "Forbidden",
        "Missing, wrong or revoked key, another account's key, or a key whose role is too low; nothing was read or written",
    ),
    (
        409,
        "Conflict",
        "The write conflicts with what is in progress: its namespace is being deleted, its customer erased, or (journeys) the item's state forbids it",
    ),
    (
        410,
        "Gone",
        "The point asked for (`as_of`, `as_of_seq`, a feed or history `after`) is before the account's last archive: its events are in the segment the message names",
    ),
    (412, "PreconditionFailed", "`If-Match` does not match the stream's version; nothing was written"),
    (
        413,
        "PayloadTooLarge",
        "The request body is over 4 MiB, or the document it would make is over 800,000 characters; nothing was written",
    ),
    (422, "IdempotencyKeyReused", "The `Idempotency-Key` was used before with a different request"),
    (
        429,
        "TooManyRequests",
        "The account is past its writes per second (or its live event streams); nothing was written",
    ),
    (414, "UriTooLong", "The request target (path and query) is over 16 KiB"),
    (431, "HeadersTooLarge", "More than 100 header fields, or more than 64 KiB of them"),
    (500, "InternalError", "A fault of the server (logged); nothing was acknowledged"),
    (
        503,
        "Unavailable",
        "The writer is offline or shutting down, or the store cannot be reached; nothing was written unless stated. Retry after `Retry-After`",
    ),
    (507, "InsufficientStorage", "The disk is full; nothing was written. Writes resume when space returns"),
];

/// The component name of `status`'s error in `shape`.
fn name(status: u16, shape: Shape) -> String {
    let (_, base, _) = ERRORS.iter().find(|(code, _, _)| *code == status).expect("a known error status");
    match shape {
        Shape::Message => (*base).to_string(),
        Shape::Journeys => format!("Journeys{base}"),
    }
}

/// References to the errors `statuses` in `shape`, keyed by status.
pub fn refs(shape: Shape, statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| (status.to_string(), RefOr::Ref(Ref::from_response_name(name(*status, shape)))))
        .collect()
}

/// Adds every error response, in both shapes, and the headers they send, to `components`.
pub fn register(components: &mut Components) {
    let retry_after = HeaderBuilder::new()
        .schema(Some(u64::schema()))
        .description(Some("Whole seconds after which a retry may succeed"))
        .build();
    components.headers.insert("Retry-After".into(), retry_after.into());
    for (status, _, description) in ERRORS {
        for shape in [Shape::Message, Shape::Journeys] {
            let body = match (status, shape) {
                (412, Shape::Message) => "VersionConflict",
                (_, Shape::Message) => "Message",
                (_, Shape::Journeys) => "JourneysError",
            };
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(body))).build();
            let mut response =
                ResponseBuilder::new().description(*description).content("application/json", content);
            if matches!(status, 429 | 503) {
                response = response.header_ref("Retry-After", Ref::new("#/components/headers/Retry-After"));
            }
            if *status == 412 {
                response = response.header(
                    "ETag",
                    HeaderBuilder::new()
                        .schema(Some(String::schema()))
                        .description(Some("The stream's version now"))
                        .build(),
                );
            }
            components.responses.insert(name(*status, shape), response.build().into());
        }
    }
    for (name, schema) in [
        ("Message", Message::schema()),
        ("VersionConflict", VersionConflict::schema()),
        ("JourneysError", JourneysError::schema()),
    ] {
        components.schemas.insert(name.into(), schema);
    }
}

/// The answer of a write that returns no body: its status, and the `ETag` of the stream it wrote.
fn written(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let etag = HeaderBuilder::new()
        .schema(Some(String::schema()))
        .description(Some("The version of the stream written, for `If-Match`"))
        .build();
    let response = ResponseBuilder::new().description(description).header("ETag", etag).build();
    BTreeMap::from([(status.to_string(), response.into())])
}

/// A context write's 204 (no body), with the `ETag` of the session or namespace written.
pub struct Written;

impl IntoResponses for Written {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        written(204, "Written")
    }
}

/// A journeys write's 200 with no body, with the `ETag` of the stream written.
pub struct Done;

impl IntoResponses for Done {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        written(200, "Done")
    }
}

/// Declares a set of error responses for one kind of route.
macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident, $shape:expr, [$($status:literal),*]) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                refs($shape, &[$($status),*])
            }
        }
    };
}

error_set!(
    /// A read of the context store, the audit surface or analytics.
    ContextRead, Shape::Message, [400, 403, 410, 500, 503]
);
error_set!(
    /// A write of the context store: conditional (`If-Match`), rate-limited.
    ContextWrite, Shape::Message, [400, 403, 409, 412, 413, 422, 429, 500, 503, 507]
);
error_set!(
    /// A session's erasure: rate-limited, not conditional.
    ContextErase, Shape::Message, [400, 403, 413, 422, 429, 500, 503, 507]
);
error_set!(
    /// A read of the journeys API.
    JourneysRead, Shape::Journeys, [400, 403, 410, 500, 503]
);
error_set!(
    /// A write of the journeys API: conditional (`If-Match`), rate-limited.
    JourneysWrite, Shape::Journeys, [400, 403, 409, 412, 413, 422, 429, 500, 503, 507]
);
error_set!(
    /// A customer's erasure: rate-limited, not conditional.
    JourneysErase, Shape::Journeys, [400, 403, 413, 422, 429, 500, 503, 507]
);
error_set!(
    /// A read of the admin API.
    AdminRead, Shape::Message, [400, 403, 500, 503]
);
error_set!(
    /// A write of the admin API: not rate-limited, not conditional.
    AdminWrite, Shape::Message, [400, 403, 413, 422, 500, 503, 507]
);
