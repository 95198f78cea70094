//! What auditors and integrations read from the log itself (docs/AUDIT.md): the account's event
//! feed, paged or followed live over Server-Sent Events, its hash chain's verification, its
//! signed head, and erasure of a context session or a customer (`erase.rs`).

mod erase;

pub use erase::journeys_router;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{Account, Q};
use super::openapi::params::AccountPath;
use super::openapi::responses::{ContextRead, Message};
use super::openapi::schemas as body;
use super::openapi::{Caller, secured, tagged};
use crate::domain::events::EVENT_TYPES;
use crate::domain::journeys::fields::parse_time;
use crate::signing::head_text;
use crate::store::log::{FeedEvent, FeedFilter, read_feed};
use crate::store::{FeedHead, Store, StoreError, chain};

/// Most events in one page of the feed.
const MAX_PAGE: usize = 1000;

/// Events a live follower reads from the log at a time: all it ever holds in memory.
const FOLLOW_PAGE: usize = 256;

/// Payload and meta bytes of one page of the feed, or of a follower's read (at least one event
/// each): events hold up to 800,000 characters, so a page of 1000 could otherwise be 800 MB.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The routes under `/v1/account/{account}`, and the public key.
pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(feed))
        .routes(routes!(follow))
        .routes(routes!(verify_chain))
        .routes(routes!(signed_head))
        .routes(routes!(conversation))
        .routes(routes!(erase::erase_session));
    secured(router, Caller::Tenant, "audit")
        .merge(tagged(OpenApiRouter::new().routes(routes!(public_key)), "audit"))
}

/// One event as the feed shows it.
#[derive(Serialize)]
struct Entry<'a> {
    seq: u64,
    stream: &'a str,
    stream_version: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    event_version: u32,
    recorded_at: &'a str,
    data: &'a RawValue,
    meta: &'a RawValue,
    /// The event's link in the hash chain, hex.
    hash: String,
}

fn json_text(seq: u64, text: &str) -> Result<&RawValue, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("event {seq}: {error}")))
}

/// The feed's JSON form of a stored event.
fn entry_json(event: &FeedEvent) -> Result<String, StoreError> {
    let entry = Entry {
        seq: event.seq,
        stream: &event.stream,
        stream_version: event.stream_version,
        event_type: &event.event_type,
        event_version: event.event_version,
        recorded_at: &event.recorded_at,
        data: json_text(event.seq, &event.data)?,
        meta: json_text(event.seq, &event.meta)?,
        hash: hex::encode(&event.hash),
    };
    Ok(serde_json::to_string(&entry).expect("an entry serializes"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    /// Events with a larger seq than this one (default 0).
    #[param(minimum = 0)]
    after: Option<u64>,
    /// Events a page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only this stream's events (1 to 4096 characters).
    #[param(min_length = 1, max_length = 4096)]
    stream: Option<String>,
    /// Only events of this type (docs/EVENTS.md).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events written by this actor (`meta.actor`: `key:<name>`, `admin`, `system:sweeper` …).
    #[param(min_length = 1, max_length = 256)]
    actor: Option<String>,
    /// Only the events of this request (`meta.request_id`, the `X-Request-ID` it was answered with).
    #[param(min_length = 1, max_length = 128)]
    request_id: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
}

/// An RFC 3339 time of a query, in the form `recorded_at` is stored in (which compares as text).
fn recorded_time(name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    let time = value.map(|text| parse_time(name, text)).transpose()?;
    Ok(time.map(crate::store::log::format_time))
}

/// A text filter of 1 to `longest` characters.
fn text_filter(name: &str, value: &Option<String>, longest: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(text) if text.is_empty() || text.chars().count() > longest => {
            Err(ApiError::bad_request(format!("{name} must be 1 to {longest} characters")))
        }
        other => Ok(other.clone()),
    }
}

impl FeedQuery {
    fn filter(&self) -> Result<FeedFilter, ApiError> {
        if let Some(event_type) = &self.event_type
            && !EVENT_TYPES.contains(&event_type.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "unknown event type '{event_type}'; docs/EVENTS.md lists them"
            )));
        }
        let (from, to) =
            (recorded_time("from", self.from.as_deref())?, recorded_time("to", self.to.as_deref())?);
        if let (Some(from), Some(to)) = (&from, &to)
            && from > to
        {
            return Err(ApiError::bad_request("from must not be later than to"));
        }
        Ok(FeedFilter {
            stream: text_filter("stream", &self.stream, 4096)?,
            event_type: self.event_type.clone(),
            actor: text_filter("actor", &self.actor, 256)?,
            request_id: text_filter("request_id", &self.request_id, 128)?,
            from,
            to,
        })
    }
}

/// `GET …/events`: a page of the account's events after a seq.
#[utoipa::path(get, path = "/v1/account/{account}/events", params(AccountPath, FeedQuery), responses(
    (status = 200, description = "A page of events; follow `next_after` while `has_more`", body = body::FeedPage),
    ContextRead,
))]
async fn feed(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<FeedQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let after = query.after.unwrap_or(0);
    crate::http::history::refuse_archived(&state, &account.id, after)?;
    let body = state
        .store
        .read_large(move |conn| {
            let page = read_feed(conn, &account.id, after, limit, MAX_PAGE_BYTES, &filter)?;
            let (next_after, has_more) = (page.next_after, page.has_more);
            let entries = page.events.iter().map(entry_json).collect::<Result<Vec<_>, _>>()?;
            Ok(format!(
                r#"{{"events":[{}],"next_after":{next_after},"has_more":{has_more}}}"#,
                entries.join(",")
            ))
        })
        .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    /// Events with a larger seq than this one (default 0); `Last-Event-ID` wins over it.
    #[param(minimum = 0)]
    after: Option<u64>,
    /// Only this stream's events.
    #[param(min_length = 1, max_length = 4096)]
    stream: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events written by this actor.
    #[param(min_length = 1, max_length = 256)]
    actor: Option<String>,
    /// Only the events of this request.
    #[param(min_length = 1, max_length = 128)]
    request_id: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
}

/// `GET …/events/stream`: Server-Sent Events from `Last-Event-ID` (else `after`, else the
/// start), then live. Each event's SSE id is its seq, so a reconnect resumes exactly.
#[utoipa::path(get, path = "/v1/account/{account}/events/stream",
    params(AccountPath, FollowQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The seq of the last event received: resume after it")),
    responses(
        (status = 200, description = "One SSE event per log event (`id` its seq, `data` the feed's JSON object); a comment every 15 s of silence", content_type = "text/event-stream", body = String),
        (status = 429, description = "The account has all the live streams it may open", body = Message,
            headers(("Retry-After" = u64, description = "Seconds"))),
        ContextRead,
    ))]
async fn follow(
    State(state): State<AppState>,
    account: Account,
    headers: HeaderMap,
    Q(query): Q<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let FollowQuery { after, stream, event_type, actor, request_id, from, to } = query;
    let filter =
        FeedQuery { after: None, limit: None, stream, event_type, actor, request_id, from, to }.filter()?;
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be the seq of an event"))?,
        None => after.unwrap_or(0),
    };
    crate::http::history::refuse_archived(&state, &account.id, after)?;
    let slot = state.streams.try_take(&account.id).ok_or_else(|| ApiError {
        retry_after: Some(5),
        ..ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this account has {} live event streams open, the most it may; close one (or follow with fewer)",
                state.streams.per_account
            ),
        )
    })?;
    let follower = Follower {
        _slot: slot,
        head: state.store.watch_feed(),
        store: state.store,
        account: account.id,
        key_hash: account.key_hash,
        filter,
        after,
        read_after: after,
        read_up_to: 0,
        page: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(follower, Follower::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One live subscriber. It holds at most one page of events: a slow client slows only itself
/// (its socket fills and its stream stops being polled), and the writer never waits for it.
struct Follower {
    /// The account's stream slot, given back when the stream ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    store: Store,
    account: String,
    /// The key the stream was opened with: a revoked key's stream ends before its next read.
    key_hash: String,
    filter: FeedFilter,
    /// The seq of the last event sent (or the cursor it started from).
    after: u64,
    /// Where the next read starts: past the last event sent and past what the filter skipped.
    read_after: u64,
    /// The log's head (store-wide id) when this follower last found nothing more to read.
    read_up_to: u64,
    head: watch::Receiver<FeedHead>,
    page: VecDeque<FeedEvent>,
}

impl Follower {
    /// The next SSE event; `None` ends the stream (server stopping, or a read failed: the
    /// client reconnects with `Last-Event-ID` and loses nothing).
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Follower)> {
        loop {
            if let Some(event) = self.page.pop_front() {
                self.after = event.seq;
                let data = entry_json(&event).ok()?;
                return Some((Ok(SseEvent::default().id(event.seq.to_string()).data(data)), self));
            }
            let head = self.head.borrow_and_update().clone();
            if head.closed {
                return None;
            }
            let only_others = self.read_up_to >= head.commit_after && !head.accounts.contains(&self.account);
            if head.last_id > self.read_up_to && only_others {
                // The one commit not yet looked at wrote to other accounts only.
                self.read_up_to = head.last_id;
            } else if head.last_id > self.read_up_to {
                // The key may have been revoked since the stream opened: it reads nothing more.
                self.store.key_owner(&self.key_hash).await.ok()??;
                let (account, filter) = (self.account.clone(), self.filter.clone());
                let after = self.read_after.max(self.after);
                let page = self
                    .store
                    .read_large(move |conn| {
                        read_feed(conn, &account, after, FOLLOW_PAGE, MAX_PAGE_BYTES, &filter)
                    })
                    .await
                    .ok()?;
                if !page.has_more {
                    self.read_up_to = head.last_id;
                }
                self.read_after = page.next_after;
                self.page = page.events.into();
                continue;
            }
            self.head.changed().await.ok()?;
        }
    }
}

/// A conversation's story, a page at a time, or all its events as NDJSON.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StoryQuery {
    /// Entries with a larger seq than this one (default 0).
    #[param(minimum = 0)]
    after: Option<u64>,
    /// Entries a page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `json` (default), or `ndjson`: every event of the conversation in the live log, one per
    /// line with its hashes, as `ctxd export` writes them.
    format: Option<String>,
}

/// Longest conversation id: the longest context session id or service `interaction_id`.
const MAX_CONVERSATION_ID: usize = 256;

/// `GET …/audit/conversations/{id}`: one conversation's story in the account's order — every
/// change of the context sessions named `id` (any namespace) and every event of the services
/// whose start carried `id` as `session_id` or `interaction_id`.
#[utoipa::path(get, path = "/v1/account/{account}/audit/conversations/{conversation_id}",
    params(AccountPath, ("conversation_id" = String, Path, description = "A context session id, or a service's session_id or interaction_id"), StoryQuery),
    responses(
        (status = 200, description = "A page of the story (or, with format=ndjson, its events)", content(
            (body::ConversationStory = "application/json"),
            (String = "application/x-ndjson"),
        )),
        (status = 404, description = "No session or service of the conversation has events in the live log", body = Message),
        ContextRead,
    ))]
async fn conversation(
    State(state): State<AppState>,
    account: Account,
    super::extract::P((_, id)): super::extract::P<(String, String)>,
    Q(query): Q<StoryQuery>,
) -> Result<Response, ApiError> {
    if id.len() > MAX_CONVERSATION_ID {
        return Err(ApiError::bad_request(format!(
            "a conversation id is at most {MAX_CONVERSATION_ID} bytes"
        )));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let ndjson = match query.format.as_deref() {
        None | Some("json") => false,
        Some("ndjson") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("format must be json or ndjson, not '{other}'")));
        }
    };
    let after = query.after.unwrap_or(0);
    super::history::refuse_archived(&state, &account.id, after)?;
    let page = crate::projections::history::Page::new(after, limit);
    let (owner, conversation_id) = (account.id.clone(), id.clone());
    let answer = state
        .store
        .read_large(move |conn| {
            let found = crate::projections::history::conversation(conn, &owner, &conversation_id)?;
            if found.sessions.is_empty() && found.services.is_empty() {
                return Ok(None);
            }
            if ndjson {
                let selection = crate::store::transfer::Selection {
                    account: Some(owner.clone()),
                    after,
                    streams: Some(found.streams().cloned().collect()),
                    ..Default::default()
                };
                let mut out = Vec::new();
                crate::store::transfer::export_within(conn, &selection, &mut out).map_err(|error| match error {
                    crate::store::transfer::TransferError::Store(error) => error,
                    other => StoreError::Corrupt(other.to_string()),
                })?;
                return Ok(Some(Err(out)));
            }
            let (story, next_after) =
                crate::projections::history::conversation_story(conn, &found, &conversation_id, page)?;
            let archived_through_seq = crate::store::archive::archived_through(conn, &owner)?;
            let sessions: Vec<serde_json::Value> = found
                .sessions
                .iter()
                .map(|(namespace, _)| serde_json::json!({"namespace": namespace, "session_id": conversation_id}))
                .collect();
            let services: Vec<&String> = found.services.iter().map(|(service_id, _)| service_id).collect();
            let mut body = serde_json::json!({
                "conversation_id": conversation_id,
                "sessions": sessions,
                "services": services,
                "story": story,
            });
            if let Some(next_after) = next_after {
                body["next_after"] = next_after.into();
            }
            if archived_through_seq > 0 {
                body["archived_through_seq"] = archived_through_seq.into();
            }
            Ok(Some(Ok(body)))
        })
        .await?;
    match answer {
        None => Err(ApiError::not_found(format!(
            "no context session named '{id}' and no service started with it as session_id or interaction_id has events in the live log"
        ))),
        Some(Ok(body)) => Ok(axum::Json(body).into_response()),
        Some(Err(lines)) => {
            Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response())
        }
    }
}

/// `GET …/audit/verify`: walks the account's hash chain and reports the first bad seq.
#[utoipa::path(get, path = "/v1/account/{account}/audit/verify", params(AccountPath), responses(
    (status = 200, description = "The walk", body = body::ChainReport),
    ContextRead,
))]
async fn verify_chain(State(state): State<AppState>, account: Account) -> Result<Response, ApiError> {
    // One walk at a time per account (each reads the account's whole log); accounts do not
    // wait for each other.
    let _turn = walk_turn(&account.id).await;
    let report = state
        .store
        // A read runs in one snapshot: the walk sees one state of the log.
        .read_large(move |conn| chain::verify(conn, &account.id))
        .await?;
    let mut body = serde_json::json!({
        "intact": report.first_bad.is_none(),
        "events": report.events,
        "last_seq": report.last_seq,
        "head": hex::encode(report.head),
    });
    if let Some((seq, reason)) = report.first_bad {
        body["first_bad_seq"] = seq.into();
        body["reason"] = reason.into();
    }
    Ok(axum::Json(body).into_response())
}

/// Holds `account`'s turn to walk its chain until dropped.
async fn walk_turn(account: &str) -> tokio::sync::OwnedMutexGuard<()> {
    type Turns = std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>;
    static TURNS: std::sync::OnceLock<Turns> = std::sync::OnceLock::new();
    let turn = {
        let mut turns = TURNS.get_or_init(Turns::default).lock().expect("walk turns lock");
        // Forget the accounts no one walks now, so the map holds only walks in progress.
        turns.retain(|_, turn| std::sync::Arc::strong_count(turn) > 1);
        turns.entry(account.to_string()).or_default().clone()
    };
    turn.lock_owned().await
}

/// `GET …/audit/head`: the account's last position and hash, signed with the store's key.
#[utoipa::path(get, path = "/v1/account/{account}/audit/head", params(AccountPath), responses(
    (status = 200, description = "The signed head", body = body::SignedHead),
    (status = 404, description = "The account has no events", body = Message),
    ContextRead,
))]
async fn signed_head(State(state): State<AppState>, account: Account) -> Result<Response, ApiError> {
    let id = account.id.clone();
    let head = state
        .store
        .read(|conn| chain::head(conn, &id))?
        .ok_or_else(|| ApiError::not_found(format!("account {} has no events", account.id)))?;
    let hash = hex::encode(head.hash);
    let signed = head_text(&account.id, head.seq, &hash, &head.recorded_at);
    Ok(axum::Json(serde_json::json!({
        "account": account.id,
        "seq": head.seq,
        "hash": hash,
        "recorded_at": head.recorded_at,
        "signature": state.signer.sign(&signed),
        "signed": signed,
        "public_key": state.signer.public_key(),
    }))
    .into_response())
}

/// `GET /audit/public-key` (no key needed): the key that verifies signed heads.
#[utoipa::path(get, path = "/audit/public-key", responses(
    (status = 200, description = "The public key", body = body::PublicKey),
))]
async fn public_key(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "public_key": state.signer.public_key() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_chain_walk_waits_only_for_a_walk_of_its_own_account() {
        let acme = walk_turn("acme").await;
        let other = tokio::time::timeout(Duration::from_secs(1), walk_turn("globex")).await;
        assert!(other.is_ok(), "another account's walk does not wait");
        let again = tokio::time::timeout(Duration::from_millis(100), walk_turn("acme")).await;
        assert!(again.is_err(), "a second walk of acme waits for the first");
        drop(acme);
        let again = tokio::time::timeout(Duration::from_secs(1), walk_turn("acme")).await;
        assert!(again.is_ok(), "and runs once the first ends");
    }
}
