//! Admission of an account's writes before they reach the writer, so that one account cannot
//! starve the others (docs/ARCHITECTURE.md, "One tenant cannot starve the others"):
//! - its rate: a token bucket of `writes_per_second` — the account's own limit
//!   (`PUT /admin/accounts/{id}/limits`), else the server's default, else none — holding one
//!   second's worth; past it, `WriteError::RateLimited` says when a write would be admitted;
//! - its backlog: at most `pending_per_account` of its commands wait for the writer at once; the
//!   others wait here, behind their own account only, so that one account's flood never fills
//!   the writer's queue ahead of everyone else's commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WriteError;
use crate::metrics::Metrics;

/// Accounts' own `writes_per_second`, refreshed by the writer after it commits account events.
pub type WriteLimits = RwLock<HashMap<String, u32>>;

pub struct Admission {
    default_rate: Option<u32>,
    pending_per_account: usize,
    limits: Arc<WriteLimits>,
    gates: Mutex<HashMap<String, Gate>>,
    metrics: Arc<Metrics>,
}

/// One account's bucket and backlog.
struct Gate {
    tokens: f64,
    refilled: Instant,
    pending: Arc<Semaphore>,
}

impl Admission {
    pub fn new(
        default_rate: Option<u32>,
        pending_per_account: usize,
        limits: Arc<WriteLimits>,
        metrics: Arc<Metrics>,
    ) -> Admission {
        let pending_per_account = pending_per_account.max(1);
        Admission { default_rate, pending_per_account, limits, gates: Mutex::default(), metrics }
    }

    /// The rate `account`'s writes are held to: its own, else the default; `None`: unlimited.
    pub fn rate_of(&self, account: &str) -> Option<u32> {
        let own = self.limits.read().expect("write limits lock").get(account).copied();
        own.or(self.default_rate)
    }

    /// Takes one write of `account` from its bucket, then waits for a place among its pending
    /// writes; the permit is that place, held until the writer answers.
    pub async fn admit(&self, account: &str, now: Instant) -> Result<OwnedSemaphorePermit, WriteError> {
        let rate = self.rate_of(account);
        let pending = {
            let mut gates = self.gates.lock().expect("admission lock");
            let gate = match gates.get_mut(account) {
                Some(gate) => gate,
                None => gates.entry(account.to_string()).or_insert(Gate {
                    tokens: f64::INFINITY,
                    refilled: now,
                    pending: Arc::new(Semaphore::new(self.pending_per_account)),
                }),
            };
            if let Some(rate) = rate.map(f64::from) {
                let elapsed = now.saturating_duration_since(gate.refilled).as_secs_f64();
                gate.tokens = (gate.tokens + elapsed * rate).min(rate);
                gate.refilled = now;
                if gate.tokens < 1.0 {
                    self.metrics.record_limited(account);
                    let retry_after = Duration::from_secs_f64((1.0 - gate.tokens) / rate);
                    return Err(WriteError::RateLimited { retry_after });
                }
                gate.tokens -= 1.0;
            }
            gate.pending.clone()
        };
        Ok(pending.acquire_owned().await.expect("a gate's semaphore is never closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(default_rate: Option<u32>, own: &[(&str, u32)], pending: usize) -> Admission {
        let limits = own.iter().map(|(account, rate)| (account.to_string(), *rate)).collect();
        Admission::new(default_rate, pending, Arc::new(RwLock::new(limits)), Arc::new(Metrics::default()))
    }

    fn retry_after(result: Result<OwnedSemaphorePermit, WriteError>) -> Option<Duration> {
        match result {
            Ok(_) => None,
            Err(WriteError::RateLimited { retry_after }) => Some(retry_after),
            Err(other) => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn an_account_past_its_rate_is_told_when_to_retry_and_others_are_not_held_by_it() {
        let gate = admission(Some(100), &[("slow", 2)], 1024);
        let start = Instant::now();
        for _ in 0..2 {
            assert_eq!(retry_after(gate.admit("slow", start).await), None);
        }
        let wait =
            retry_after(gate.admit("slow", start).await).expect("the third write in a second is refused");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Another account has the default rate, and a bucket of its own.
        for _ in 0..100 {
            assert_eq!(retry_after(gate.admit("busy", start).await), None);
        }
        assert!(retry_after(gate.admit("busy", start).await).is_some());
        // Half a second later, one more write of `slow` is admitted.
        assert_eq!(retry_after(gate.admit("slow", start + Duration::from_millis(500)).await), None);
        assert_eq!(gate.metrics.render().matches("ctxd_writes_limited_total{account=").count(), 2);
    }

    #[tokio::test]
    async fn without_a_limit_writes_are_admitted_and_only_the_backlog_is_bounded() {
        let gate = admission(None, &[], 2);
        let now = Instant::now();
        let first = gate.admit("acme", now).await.unwrap();
        let _second = gate.admit("acme", now).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), gate.admit("acme", now)).await;
        assert!(third.is_err(), "a third pending write of acme waits");
        assert!(gate.admit("globex", now).await.is_ok(), "another account does not wait for acme's");
        drop(first);
        assert!(tokio::time::timeout(Duration::from_secs(1), gate.admit("acme", now)).await.is_ok());
    }
}
