//! The background sweeper: asks the writer to record the expiry of properties whose TTL passed,
//! to expire or auto-complete services that are due, so that the log tells when they left,
//! to forget idempotency keys past their retention, and to archive the log of accounts with a
//! retention (`store::archive`).

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Command;
use crate::store::{EventMeta, Store, WriteError, WriteRequest};

/// Most expired properties, or due services, handled per command.
const SWEEP_BATCH: usize = 1000;

/// Records every property expiry, service expiry and service auto-completion due now.
/// Returns the number of events appended.
pub async fn sweep_once(store: &Store) -> Result<usize, WriteError> {
    let properties = sweep_until_done(store, || Command::ExpireProperties { limit: SWEEP_BATCH }).await?;
    let services = sweep_until_done(store, || Command::SweepServices { limit: SWEEP_BATCH }).await?;
    Ok(properties + services)
}

/// Submits the sweep `command` until it appends nothing more.
async fn sweep_until_done(store: &Store, command: impl Fn() -> Command) -> Result<usize, WriteError> {
    let mut appended = 0;
    loop {
        let request = WriteRequest {
            command: command(),
            meta: EventMeta {
                request_id: uuid::Uuid::new_v4().to_string(),
                actor: "system:sweeper".into(),
                ..Default::default()
            },
            idempotency: None,
        };
        let outcome = store.submit(request).await?;
        appended += outcome.appended;
        if outcome.appended == 0 {
            return Ok(appended);
        }
    }
}

/// Forgets idempotency keys recorded more than `retention` ago.
pub async fn prune_idempotency_keys(store: &Store, retention: Duration) -> Result<(), WriteError> {
    let request = WriteRequest {
        command: Command::PruneIdempotencyKeys { retention_seconds: retention.as_secs() },
        meta: EventMeta { actor: "system:sweeper".into(), ..Default::default() },
        idempotency: None,
    };
    store.submit(request).await.map(|_| ())
}

/// Archives the events of one account whose retention they are past, if any (one per tick:
/// each archive is prepared off the writer and committed in one step, then the writer's
/// steps delete its events a step at a time, in that account's turn). Returns the account.
pub async fn archive_one_due(
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, WriteError> {
    if store.archive_dir().is_none() {
        return Ok(None);
    }
    let due = store.read_large(move |conn| crate::store::archive::due_for_retention(conn, now)).await?;
    // An account whose archive fails (its chain broken, say) does not hold up the others'.
    for (account, before) in due {
        let meta = EventMeta {
            request_id: uuid::Uuid::new_v4().to_string(),
            actor: "system:retention".into(),
            ..Default::default()
        };
        let request = |command| WriteRequest { command, meta, idempotency: None };
        match crate::store::archive::archive(store, &account, before, request, now).await {
            Ok(archived) => {
                tracing::info!(
                    account = %account,
                    events = archived.archived_events,
                    segment = archived.segment.as_deref().unwrap_or(""),
                    "archived events past the account's retention"
                );
                return Ok(Some(account));
            }
            Err(error) => {
                warn_unless_said(&error, &format!("archiving account {account} past its retention failed"))
            }
        }
    }
    Ok(None)
}

/// Logs a failed sweep, unless the writer has said why once for the whole episode (a full disk).
pub fn warn_unless_said(error: &WriteError, what: &str) {
    match error {
        WriteError::DiskFull => tracing::debug!(%error, "{what}"),
        _ => tracing::warn!(%error, "{what}"),
    }
}

/// Sweeps every `interval` until `stop` changes.
pub async fn run(
    store: Store,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    interval: Duration,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A retention archive (minutes for a large account) runs beside the sweeps, not in their way.
    let mut archiving: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // Every node records its own keys' use, sweeper or not.
                if let Err(error) = store.record_key_use().await {
                    warn_unless_said(&error, "recording API key use failed");
                }
                if !store.sweeper_turn().await {
                    continue; // another node sweeps
                }
                if let Err(error) = sweep_once(&store).await {
                    warn_unless_said(&error, "expiry sweep failed");
                }
                if let Err(error) = prune_idempotency_keys(&store, retention).await {
                    warn_unless_said(&error, "idempotency key pruning failed");
                }
                if archiving.as_ref().is_none_or(|task| task.is_finished()) {
                    let (store, now) = (store.clone(), clock.now());
                    archiving = Some(tokio::spawn(async move {
                        if let Err(error) = archive_one_due(&store, now).await {
                            warn_unless_said(&error, "archiving past an account's retention failed");
                        }
                    }));
                }
            }
            _ = stop.changed() => {
                // Uses noted since the last tick are not lost with the process.
                if let Err(error) = store.record_key_use().await {
                    tracing::warn!(%error, "recording API key use at shutdown failed");
                }
                return;
            }
        }
    }
}
