//! Carries commands too large for one step of the writer to their end: deletes of namespaces
//! and erasures of customers with more sessions, or services, than one step takes
//! (`domain::context::STEP`), and the deletion of archived events from the live log. Each step is an ordinary command of the account, queued fairly
//! with every other account's, so a big one never holds up the others. On start it resumes the
//! ones a stop interrupted.

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Command;
use crate::domain::context::ContextCommand;
use crate::domain::erasure::ErasureTarget;
use crate::projections::context::namespaces_being_deleted;
use crate::projections::journeys::customers_being_erased;
use crate::store::{EventMeta, Store, WriteError, WriteRequest};

/// The actors recorded on the events of a step.
pub const DELETE_ACTOR: &str = "system:namespace-delete";
pub const ERASE_ACTOR: &str = "system:customer-erasure";
pub const ARCHIVE_ACTOR: &str = "system:archive";

/// Wait after a step failed (the store unavailable, say) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `stop` changes: finishes what is pending, then waits to be woken.
pub async fn run(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = match finish(&store, &stop).await {
            Ok(_) => None,
            Err(error) => {
                crate::sweeper::warn_unless_said(&error, "a step of a long command failed; trying again");
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

/// Takes one step of each delete and erasure in progress, round after round, until none is
/// left or `stop` is set. Returns the number of steps taken.
pub async fn finish(store: &Store, stop: &watch::Receiver<bool>) -> Result<u64, WriteError> {
    let mut steps = 0;
    loop {
        let pending = store
            .read_large(|conn| {
                let deletes = namespaces_being_deleted(conn)?.into_iter().map(|(account, namespace)| {
                    let command = ContextCommand::DeleteNamespaceStep { namespace };
                    (Command::Context { account, command }, DELETE_ACTOR)
                });
                let erasures = customers_being_erased(conn)?.into_iter().map(|(account, customer_id)| {
                    let target = ErasureTarget::CustomerStep { customer_id };
                    (Command::Erase { account, target }, ERASE_ACTOR)
                });
                let archived = crate::store::archive::accounts_to_drop(conn)?
                    .into_iter()
                    .map(|account| (Command::DropArchived { account }, ARCHIVE_ACTOR));
                Ok(deletes.chain(erasures).chain(archived).collect::<Vec<_>>())
            })
            .await?;
        if pending.is_empty() {
            return Ok(steps);
        }
        for (command, actor) in pending {
            if *stop.borrow() {
                return Ok(steps);
            }
            let meta = EventMeta {
                request_id: uuid::Uuid::new_v4().to_string(),
                actor: actor.into(),
                ..Default::default()
            };
            store.submit(WriteRequest { command, meta, idempotency: None }).await?;
            steps += 1;
        }
    }
}
