//! Parameters that many routes share: the path parameters of the context store (read by the
//! `Account` and `Target` extractors by name) and the headers of writes and of the journeys API.

#![allow(dead_code)] // these types describe parameters; the extractors read them

use utoipa::IntoParams;

/// `/v1/account/{account}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The account; the API key must be this account's.
    #[param(example = "acme")]
    account: String,
}

/// `/v1/account/{account}/{namespace}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePath {
    /// The account; the API key must be this account's.
    #[param(example = "acme")]
    account: String,
    /// A namespace: 1 to 256 bytes, no control characters, not a reserved name.
    #[param(example = "billing")]
    namespace: String,
}

/// A namespace property (session `__default__`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePropertyPath {
    /// The account; the API key must be this account's.
    #[param(example = "acme")]
    account: String,
    /// A namespace: 1 to 256 bytes, no control characters, not a reserved name.
    #[param(example = "billing")]
    namespace: String,
    /// A property name: 1 to 256 bytes, no control characters.
    #[param(example = "intent")]
    property: String,
}

/// A session of a namespace.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The account; the API key must be this account's.
    #[param(example = "acme")]
    account: String,
    /// A namespace: 1 to 256 bytes, no control characters, not a reserved name.
    #[param(example = "billing")]
    namespace: String,
    /// A session id: 1 to 256 bytes, no control characters (`__default__` is the namespace's own).
    #[param(example = "conv-42")]
    session: String,
}

/// A property of a session.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPropertyPath {
    /// The account; the API key must be this account's.
    #[param(example = "acme")]
    account: String,
    /// A namespace: 1 to 256 bytes, no control characters, not a reserved name.
    #[param(example = "billing")]
    namespace: String,
    /// A session id: 1 to 256 bytes, no control characters (`__default__` is the namespace's own).
    #[param(example = "conv-42")]
    session: String,
    /// A property name: 1 to 256 bytes, no control characters.
    #[param(example = "intent")]
    property: String,
}

/// The headers of a conditional write (context and journeys commands).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WriteHeaders {
    /// A retry with the same key and request returns the first result and writes nothing.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// `"<version>"`: write only if the addressed stream is at that version (`"0"`: no history).
    #[param(rename = "If-Match")]
    if_match: Option<String>,
    /// Whom the key's holder acts for, recorded as claimed in the events' meta.
    #[param(rename = "On-Behalf-Of", min_length = 1, max_length = 256)]
    on_behalf_of: Option<String>,
}

/// The headers of a write that takes no `If-Match` (erasure, admin).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct PlainWriteHeaders {
    /// A retry with the same key and request returns the first result and writes nothing.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// Whom the caller acts for, recorded as claimed in the events' meta.
    #[param(rename = "On-Behalf-Of", min_length = 1, max_length = 256)]
    on_behalf_of: Option<String>,
}

/// The journeys API's tenant header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TenantHeader {
    /// When given, must name the API key's account (else 403).
    #[param(rename = "ContactCenterId")]
    contact_center_id: Option<String>,
}

/// The point a GET reads at (docs/API.md, "As-of reads"); needs the `audit` role.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// An RFC 3339 time, not in the future: the answer the GET gave then.
    #[param(format = DateTime)]
    as_of: Option<String>,
    /// A seq of the account's log: the answer right after that event. Not with `as_of`.
    #[param(minimum = 0)]
    as_of_seq: Option<u64>,
}
