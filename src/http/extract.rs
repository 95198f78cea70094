//! Extractors that turn a request into checked values or a JSON 4xx: path, query and body
//! parsing, account and admin authentication, and the metadata of a write.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::{AppState, RequestId};
use crate::auth::hash_secret;
use crate::domain::events::Role;
use crate::domain::names::DEFAULT_SESSION;
use crate::domain::{Command, ExpectedVersion};
use crate::store::{EventMeta, Idempotency, WriteRequest};

/// Query parameters, with a JSON 400 on malformed ones.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(Q(value))
    }
}

/// One named path parameter, percent-decoded.
fn path_param(params: &RawPathParams, name: &str) -> Option<String> {
    params.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
}

async fn raw_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// The account a request is for, authenticated by its API key.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    /// The key's name: the actor of what it writes.
    pub key_name: String,
    /// The key's sha256, to check that it is still active (a live stream outlasts requests).
    pub key_hash: String,
}

impl Account {
    /// The actor recorded in the meta of this account's writes: `key:<name>`.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_name)
    }

    /// Where this account's idempotency keys live; never equal to `ADMIN_SCOPE`.
    pub fn idempotency_scope(&self) -> String {
        format!("account/{}", self.id)
    }
}

/// The key presented in `maven-api-key`, or else as `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("maven-api-key") {
        return key.to_str().ok();
    }
    bearer_token(headers)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let account = path_param(&params, "account").ok_or_else(ApiError::forbidden)?;
        let (owner, role) = authenticate(parts, state).await?;
        if owner.id != account {
            return Err(ApiError::forbidden());
        }
        allowed(parts, &owner, role)?;
        Ok(owner)
    }
}

/// The account of the API key a request presents, if it is one (for layers that run before
/// the handler's own check).
pub(super) fn request_account(headers: &axum::http::HeaderMap, state: &AppState) -> Option<String> {
    let key = presented_key(headers)?;
    state.store.known_key(&hash_secret(key)).map(|owner| owner.account)
}

/// The account whose API key the request presents, and the key's role.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<(Account, Role), ApiError> {
    let key = presented_key(&parts.headers).ok_or_else(ApiError::forbidden)?;
    let key_hash = hash_secret(key);
    let owner = state.store.key_owner(&key_hash).await?.ok_or_else(ApiError::forbidden)?;
    state.store.note_key_use(&key_hash, state.clock.now());
    let account = Account { id: owner.account, key_name: owner.name, key_hash };
    Ok((account, owner.role))
}

/// Refuses the request unless `role` may make it (`required_role`); checked once the key is
/// known to be the addressed account's, so that another account's key learns nothing more.
fn allowed(parts: &Parts, account: &Account, role: Role) -> Result<(), ApiError> {
    let route = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str);
    let needed = required_role(&parts.method, route, parts.uri.query());
    if role < needed {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "the key '{}' has the role '{}'; this request needs '{}'",
                account.key_name,
                role.as_str(),
                needed.as_str()
            ),
        ));
    }
    Ok(())
}

/// The least role a request needs, from its method, its route (the matched template, so that a
/// session or property named `history` is not mistaken for the audit surface) and its query:
/// every write needs `write`; the audit surface — history, the event feed and its stream, the
/// chain's verification and signed head, erasure status, and any read `as_of` a time or a
/// position — needs `audit`; any other read, `read`.
pub fn required_role(method: &axum::http::Method, route: &str, query: Option<&str>) -> Role {
    if !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD) {
        return Role::Write;
    }
    let audit_route = route.ends_with("/history")
        || route.ends_with("/events")
        || route.ends_with("/events/stream")
        || route.contains("/audit/")
        || route.ends_with("/erasure");
    if audit_route || asks_as_of(query) { Role::Audit } else { Role::Read }
}

/// True if the query names `as_of` or `as_of_seq`, decoded as the handlers decode it (so that
/// `as%5Fof_seq` is the same parameter to this rule as to them).
pub fn asks_as_of(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "as_of" || name == "as_of_seq")
    })
}

/// The account of a Genesys-style request: the key decides it, and the optional
/// `ContactCenterId` header must name that same account.
pub struct TenantAccount(pub Account);

impl FromRequestParts<AppState> for TenantAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (account, role) = authenticate(parts, state).await?;
        if let Some(tenant) = parts.headers.get("contactcenterid")
            && tenant.to_str().ok() != Some(account.id.as_str())
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "Invalid tenant specified: the ContactCenterId header must name the API key's account",
            ));
        }
        allowed(parts, &account, role)?;
        Ok(TenantAccount(account))
    }
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer_token(&parts.headers) {
            Some(token) if hash_secret(token) == state.admin_token_hash => Ok(Admin),
            _ => Err(ApiError::new(axum::http::StatusCode::FORBIDDEN, "admin token missing or wrong")),
        }
    }
}

/// The namespace, session and property a context request addresses. Namespace routes have no
/// `session` parameter and address the namespace's own session, `__default__`.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub session_id: String,
    pub property: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        Ok(Target {
            namespace: path_param(&params, "namespace").unwrap_or_default(),
            session_id: path_param(&params, "session").unwrap_or_else(|| DEFAULT_SESSION.to_string()),
            property: path_param(&params, "property"),
        })
    }
}

/// How a body is read: not at all, or as JSON of some type.
pub trait FromBody: Sized {
    fn from_body(bytes: &[u8]) -> Result<Self, ApiError>;
}

/// The body of a write that takes none; whatever was sent is ignored.
pub struct NoBody;

impl FromBody for NoBody {
    fn from_body(_: &[u8]) -> Result<Self, ApiError> {
        Ok(NoBody)
    }
}

/// A JSON body, with a JSON 400 when it is malformed or of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromBody for JsonBody<T> {
    fn from_body(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
    }
}

/// A write request's body and everything recorded about it: request id, `Idempotency-Key`,
/// `If-Match`, client address.
pub struct Write<B> {
    pub body: B,
    pub context: WriteContext,
}

pub struct WriteContext {
    request_id: String,
    idempotency: Option<(String, String)>,
    pub expected: ExpectedVersion,
    client_addr: Option<String>,
    on_behalf_of: Option<String>,
}

impl WriteContext {
    /// The command wrapped with its metadata, for `Store::submit`. The admin's writes land in
    /// tenants' logs: they record no client address (the operator's, not the tenant's).
    pub fn request(self, actor: String, scope: &str, command: Command) -> WriteRequest {
        let idempotency_key = self.idempotency.as_ref().map(|(key, _)| key.clone());
        let client_addr = if scope == ADMIN_SCOPE { None } else { self.client_addr };
        WriteRequest {
            command,
            meta: EventMeta {
                request_id: self.request_id,
                idempotency_key,
                actor,
                on_behalf_of: self.on_behalf_of,
                client_addr,
            },
            idempotency: self.idempotency.map(|(key, fingerprint)| Idempotency {
                scope: scope.to_string(),
                key,
                fingerprint,
            }),
        }
    }
}

/// Longest accepted `On-Behalf-Of`.
const MAX_ON_BEHALF_OF: usize = 256;

/// The `On-Behalf-Of` header: 1 to 256 characters, none of them a control character.
fn on_behalf_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("on-behalf-of") else { return Ok(None) };
    let text = std::str::from_utf8(value.as_bytes()).ok().map(str::trim);
    match text {
        Some(text)
            if !text.is_empty()
                && text.chars().count() <= MAX_ON_BEHALF_OF
                && !text.chars().any(char::is_control) =>
        {
            Ok(Some(text.to_string()))
        }
        _ => Err(ApiError::bad_request(format!(
            "On-Behalf-Of must be 1 to {MAX_ON_BEHALF_OF} characters of UTF-8 text without control characters"
        ))),
    }
}

/// Where the admin API's idempotency keys live.
pub const ADMIN_SCOPE: &str = "admin";

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

impl<S: Send + Sync, B: FromBody> FromRequest<S> for Write<B> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
        let client_addr =
            parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.to_string());
        let expected = parse_if_match(&parts.headers)?;
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let key =
                    value.to_str().ok().filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY);
                Some(key.ok_or_else(|| {
                    ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters")
                })?)
            }
        };
        let on_behalf_of = on_behalf_of(&parts.headers)?;
        let fingerprint_prefix =
            format!("{} {}\n", parts.method, parts.uri.path_and_query().map_or("", |p| p.as_str()));
        let idempotency_key = idempotency_key.map(str::to_string);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        let idempotency = idempotency_key.map(|key| {
            let mut hasher = Sha256::new();
            hasher.update(fingerprint_prefix.as_bytes());
            hasher.update(&bytes);
            (key, hex::encode(hasher.finalize()))
        });
        Ok(Write {
            body: B::from_body(&bytes)?,
            context: WriteContext { request_id, idempotency, expected, client_addr, on_behalf_of },
        })
    }
}

/// `If-Match: "5"` (also `5`, `W/"5"`); `*` or absent: no precondition.
fn parse_if_match(headers: &HeaderMap) -> Result<ExpectedVersion, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(ExpectedVersion::Any);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(ExpectedVersion::Any);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(ExpectedVersion::Exactly)
        .map_err(|_| ApiError::bad_request("If-Match must be an ETag this API returned, such as \"3\""))
}

/// Path parameters, with a JSON 400 when they cannot be decoded.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(P(value))
    }
}
