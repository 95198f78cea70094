//! Pure decisions: commands, the state they are decided against, and the events they produce.
//! Nothing in here does I/O; the writer loads state, calls `decide`, and appends the result.

pub mod accounts;
pub mod context;
pub mod erasure;
pub mod events;
pub mod journeys;
pub mod names;
pub mod ttl;

pub use events::{Event, NewEvent};

use serde::{Deserialize, Serialize};

/// Position of an event within its stream: 1 for the first event, 0 for "no stream yet".
pub type StreamVersion = u64;

/// What a writer expects a stream's version to be: the optimistic concurrency control of `If-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExpectedVersion {
    /// No precondition.
    #[default]
    Any,
    /// The stream must be at exactly this version (0: the stream must not exist yet).
    Exactly(StreamVersion),
}

impl ExpectedVersion {
    /// Fails with `VersionConflict` when the stream has moved on.
    pub fn check(self, current: StreamVersion) -> Result<(), DomainError> {
        match self {
            ExpectedVersion::Exactly(expected) if expected != current => {
                Err(DomainError::VersionConflict { current })
            }
            _ => Ok(()),
        }
    }
}

/// Why a command was refused. Each maps to one HTTP status in `http::error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the stream is at version {current}, not the one given in If-Match")]
    VersionConflict { current: StreamVersion },
    #[error("document too large")]
    DocumentTooLarge,
}

/// Everything the writer can be asked to do.
// Commands reach the writer boxed (`Box<WriteRequest>`), so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Account(accounts::AccountCommand),
    Context {
        account: String,
        command: context::ContextCommand,
    },
    /// Sent by the sweeper: record that properties whose TTL has passed are gone.
    ExpireProperties {
        limit: usize,
    },
    /// A command on one service of `account`, with its `If-Match`.
    Service {
        account: String,
        service_id: String,
        expected: ExpectedVersion,
        command: journeys::ServiceCommand,
    },
    /// A command on a customer profile, or on the account's identification keys or journey
    /// settings, with its `If-Match`.
    Customer {
        account: String,
        expected: ExpectedVersion,
        command: journeys::customers::CustomerCommand,
    },
    /// Sent by the sweeper: expire or auto-complete the services that are due.
    SweepServices {
        limit: usize,
    },
    /// Redact a customer's or a session's personal data from the log (the one change the log
    /// allows, docs/AUDIT.md) and record the erasure.
    Erase {
        account: String,
        target: erasure::ErasureTarget,
    },
    /// Sent by the sweeper: forget idempotency keys older than the retention. Appends nothing.
    PruneIdempotencyKeys {
        retention_seconds: u64,
    },
    /// Write the next part of a prepared archive's snapshot, where no read sees it yet
    /// (`store::archive`). Appends nothing.
    StageArchive {
        account: String,
        stage: Box<crate::store::archive::Stage>,
    },
    /// Commit an archive whose snapshot was staged (`store::archive`): appends `LogArchived`.
    Archive {
        account: String,
        prepared: Box<crate::store::archive::Prepared>,
    },
    /// Give up an archive being staged: its rows are deleted in steps. Appends nothing.
    AbandonArchive {
        account: String,
        through_seq: u64,
    },
    /// Delete the next archived events of the account still in the live log. Appends nothing.
    DropArchived {
        account: String,
    },
    /// Sent by each node: when its API keys were last used (key hash, Unix microseconds).
    /// Appends nothing: use is not a change of the account, and would flood its log.
    RecordKeyUse {
        uses: Vec<(String, i64)>,
    },
}

impl Command {
    /// The account whose log the command writes to; `None` for the sweeper's commands, which
    /// may touch any account.
    pub fn account(&self) -> Option<&str> {
        match self {
            Command::Account(command) => Some(command.account_id()),
            Command::Context { account, .. }
            | Command::Service { account, .. }
            | Command::Customer { account, .. }
            | Command::Erase { account, .. }
            | Command::StageArchive { account, .. }
            | Command::Archive { account, .. }
            | Command::AbandonArchive { account, .. }
            | Command::DropArchived { account } => Some(account),
            Command::ExpireProperties { .. }
            | Command::SweepServices { .. }
            | Command::PruneIdempotencyKeys { .. }
            | Command::RecordKeyUse { .. } => None,
        }
    }
}
