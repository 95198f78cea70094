//! Per-account slots for what one account could otherwise take from all (docs/ARCHITECTURE.md,
//! "One tenant cannot starve the others"): its live event streams (refused past the limit) and
//! its large reads in flight (waiting past it).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Bytes, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;

/// At most `per_account` of something per account at once.
pub struct AccountSlots {
    pub per_account: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl AccountSlots {
    pub fn new(per_account: usize) -> AccountSlots {
        AccountSlots { per_account: per_account.max(1), slots: Mutex::default() }
    }

    fn semaphore(&self, account: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().expect("account slots lock");
        let slot =
            slots.entry(account.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_account)));
        slot.clone()
    }

    /// A slot of `account`, or `None` when it has all it may.
    pub fn try_take(&self, account: &str) -> Option<OwnedSemaphorePermit> {
        self.semaphore(account).try_acquire_owned().ok()
    }

    /// A slot of `account`, once one is free.
    pub async fn take(&self, account: &str) -> OwnedSemaphorePermit {
        self.semaphore(account).acquire_owned().await.expect("a slot semaphore is never closed")
    }
}

/// Whether a GET builds a large answer: a page of the feed or of a history, of sessions with
/// their properties, of analytics, a journey, or anything read as of a past point.
fn is_large(request: &Request) -> bool {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    request.method() == Method::GET
        && !path.ends_with("/events/stream")
        && (path.ends_with("/events")
            || path.ends_with("/history")
            || path.ends_with("/session-properties")
            || path.contains("/analytics/")
            || path.ends_with("/journey")
            || super::extract::asks_as_of(Some(query)))
}

/// Holds one of the account's large-read slots from the moment the request is read until its
/// answer has been sent (a slow reader holds its slot), so that one account's large reads never
/// hold more than `per_account` answers in memory at once, however many it asks for.
pub async fn limit_large_reads(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let account =
        is_large(&request).then(|| super::extract::request_account(request.headers(), &state)).flatten();
    let Some(account) = account else {
        return next.run(request).await;
    };
    let slot = state.large_reads.take(&account).await;
    let (parts, body) = next.run(request).await.into_parts();
    Response::from_parts(parts, Body::new(Held { body, rest: Bytes::new(), _slot: slot }))
}

/// A response body that gives its slot back when it has been sent, or dropped. It hands its
/// bytes to the connection 64 KiB at a time: the connection takes a next part only when it has
/// room for it, so a large answer that its reader does not read keeps the slot.
struct Held {
    body: Body,
    /// What is left of the last part the inner body gave.
    rest: Bytes,
    _slot: OwnedSemaphorePermit,
}

/// The most bytes handed to the connection at once.
const PART: usize = 64 * 1024;

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let part = this.rest.split_to(this.rest.len().min(PART));
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + self.rest.len() as u64);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + self.rest.len() as u64);
        }
        hint
    }
}
