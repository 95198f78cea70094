//! Carries commands too large for one step of the writer to their end: today, deletes of
//! namespaces with more sessions than one step takes (`domain::context::DELETE_STEP`). Each step
//! is an ordinary command of the account, queued fairly with every other account's, so a big
//! delete never holds up the others. On start it resumes the deletes a stop interrupted.

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Command;
use crate::domain::context::ContextCommand;
use crate::projections::context::namespaces_being_deleted;
use crate::store::{EventMeta, Store, WriteError, WriteRequest};

/// The actor recorded on the events of a step.
pub const ACTOR: &str = "system:namespace-delete";

/// Wait after a step failed (the store unavailable, say) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `stop` changes: finishes what is pending, then waits to be woken.
pub async fn run(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = match finish(&store, &stop).await {
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "a namespace delete step failed; trying again");
                Some(RETRY_AFTER)
            }
        };
        tokio::select! {
            _ = store.steps_wanted(), if wait.is_none() => {}
            _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Takes one step of each delete in progress, round after round, until none is left or `stop`
/// is set. Returns the number of steps taken.
pub async fn finish(store: &Store, stop: &watch::Receiver<bool>) -> Result<u64, WriteError> {
    let mut steps = 0;
    loop {
        let pending = store.read_large(namespaces_being_deleted).await?;
        if pending.is_empty() {
            return Ok(steps);
        }
        for (account, namespace) in pending {
            if *stop.borrow() {
                return Ok(steps);
            }
            let request = WriteRequest {
                command: Command::Context {
                    account,
                    command: ContextCommand::DeleteNamespaceStep { namespace },
                },
                meta: EventMeta {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    actor: ACTOR.into(),
                    ..Default::default()
                },
                idempotency: None,
            };
            store.submit(request).await?;
            steps += 1;
        }
    }
}
