//! Deciding commands: for each command, load the state it is decided against from the
//! projections, call the pure decision in `domain`, and answer the events to append. The writer
//! (`store::writer`) owns everything around it: the group's transaction, positions and links,
//! appending, applying, committing and replying.

mod customers;
mod erase;

use crate::store::db::Connection;
use chrono::{DateTime, Utc};

use crate::domain::context::{ContextCommand, StepBound};
use crate::domain::events::{account_stream, namespace_stream, service_stream, session_stream};
use crate::domain::journeys::service::ServiceDoc;
use crate::domain::journeys::{self, JourneySettings, ServiceCommand};
use crate::domain::{Command, DomainError, Event, NewEvent, StreamVersion, accounts, context};
use crate::projections;
use crate::projections::context::Prefetched;
use crate::store::WriteError;
use crate::store::log;

/// The events a command appends, and the stream whose version the reply reports, with the
/// version it had before them.
#[derive(Default)]
pub(crate) struct Decision {
    pub events: Vec<NewEvent>,
    pub primary: Option<(String, StreamVersion)>,
    pub created: Option<String>,
    /// The service the decision loaded, as (account, service): the projection starts from it.
    pub service: Option<(String, ServiceDoc)>,
}

/// When a group is decided, and the bounds of the steps of long commands.
#[derive(Clone, Copy)]
pub(crate) struct At {
    pub now: DateTime<Utc>,
    pub step: StepBound,
}

/// The reads of a group's session commands made at once, before deciding (PostgreSQL): one
/// round trip for the group rather than one per command. `None` for a command that is not a
/// session command.
pub(crate) fn prefetch<'a>(
    conn: &Connection,
    commands: impl Iterator<Item = &'a Command>,
    now: DateTime<Utc>,
) -> Result<Vec<Option<Prefetched>>, crate::store::StoreError> {
    let streams: Vec<Option<(&str, &str, &str, String)>> = commands
        .map(|command| match command {
            Command::Context { account, command } => command.session().map(|session| {
                let stream = session_stream(account, &session.namespace, &session.session_id);
                (account.as_str(), session.namespace.as_str(), session.session_id.as_str(), stream)
            }),
            _ => None,
        })
        .collect();
    let asked: Vec<(&str, &str, &str, &str)> =
        streams.iter().flatten().map(|(a, n, s, stream)| (*a, *n, *s, stream.as_str())).collect();
    let mut read = projections::context::prefetch_sessions(conn, &asked, now)?.into_iter();
    Ok(streams.iter().map(|asked| asked.as_ref().and_then(|_| read.next())).collect())
}

/// The accounts a command of no account (the sweeper's) would write now: the writer locks them
/// before deciding it (PostgreSQL), so that it decides under their locks.
pub(crate) fn accounts_written(
    conn: &Connection,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Vec<String>, crate::store::StoreError> {
    Ok(match command {
        Command::ExpireProperties { limit } => projections::context::expired_properties(conn, now, *limit)?
            .into_iter()
            .map(|p| p.account)
            .collect(),
        Command::SweepServices { limit } => projections::journeys::due_services(conn, now, *limit)?
            .into_iter()
            .map(|(account, _)| account)
            .collect(),
        _ => Vec::new(),
    })
}

/// True when a prefetched read of `command`'s session still holds: no command of the group
/// has appended to the session's stream or to its namespace's since (every change of what the
/// read holds is an event of one of the two).
pub(crate) fn still_holds(command: &Command, written: &std::collections::HashSet<String>) -> bool {
    let Command::Context { account, command } = command else { return false };
    command.session().is_some_and(|session| {
        !written.contains(&session_stream(account, &session.namespace, &session.session_id))
            && !written.contains(&namespace_stream(account, &session.namespace))
    })
}

/// Loads the state a command is decided against and decides it; `known`: what was prefetched
/// of its session and still holds.
pub(crate) fn decide(
    conn: &Connection,
    command: &Command,
    at: At,
    known: Option<Prefetched>,
) -> Result<Decision, WriteError> {
    let now = at.now;
    let tag = tag_all;
    let current = |stream: String| -> Result<Option<(String, StreamVersion)>, WriteError> {
        let version = log::stream_version(conn, &stream)?;
        Ok(Some((stream, version)))
    };
    Ok(match command {
        Command::Account(command) => {
            let account = command.account_id();
            let mut state = projections::accounts::load_state(conn, account)?;
            if let accounts::AccountCommand::CreateAccount { .. } = command {
                state.look_alike = projections::accounts::look_alike_account(conn, account)?;
            }
            let events = accounts::decide_account(&state, command)?;
            Decision {
                events: tag(account, events),
                primary: current(account_stream(account))?,
                ..Decision::default()
            }
        }
        Command::Context { account, command } => match command.session() {
            Some(session) => {
                let stream = session_stream(account, &session.namespace, &session.session_id);
                let keys = command.property_keys();
                let at_session = (session.namespace.as_str(), session.session_id.as_str());
                let (version, state) = match known {
                    Some(read) => {
                        projections::context::session_from(conn, account, at_session, &keys, now, read)?
                    }
                    None => {
                        projections::context::load_session(conn, account, at_session, &keys, &stream, now)?
                    }
                };
                let events = context::decide_session(&state, command, now)?;
                Decision {
                    events: tag(account, events),
                    primary: Some((stream, version)),
                    ..Decision::default()
                }
            }
            None => {
                let namespace = command.namespace();
                let stream = namespace_stream(account, namespace);
                let version = log::stream_version(conn, &stream)?;
                let with_sessions = matches!(
                    command,
                    ContextCommand::DeleteNamespace { .. } | ContextCommand::DeleteNamespaceStep { .. }
                )
                .then_some(at.step);
                let state = projections::context::load_namespace_state(
                    conn,
                    account,
                    namespace,
                    version,
                    with_sessions,
                )?;
                let events = context::decide_namespace(&state, command)?;
                Decision {
                    events: tag(account, events),
                    primary: Some((stream, version)),
                    ..Decision::default()
                }
            }
        },
        Command::PruneIdempotencyKeys { .. } | Command::RecordKeyUse { .. } => Decision::default(),
        Command::ExpireProperties { limit } => {
            let expired = projections::context::expired_properties(conn, now, *limit)?;
            Decision { events: context::decide_expiry(expired), ..Decision::default() }
        }
        Command::Service { account, service_id, expected, command } => {
            let stream = service_stream(account, service_id);
            let version = log::stream_version(conn, &stream)?;
            expected.check(version)?;
            let doc = projections::journeys::load_service(conn, account, service_id)?;
            let settings = match command {
                ServiceCommand::Start { .. } | ServiceCommand::End { .. } => {
                    projections::journeys::journey_settings(conn, account)?
                }
                _ => JourneySettings::default(),
            };
            let at = journeys::Circumstances { now, settings: &settings };
            let events = journeys::decide_service(doc.as_ref(), service_id, command, at)?;
            for customer_id in events.iter().filter_map(customer_given) {
                refuse_while_erased(conn, account, customer_id)?;
            }
            let created = events.iter().find_map(created_id);
            let service = doc.map(|doc| (account.clone(), doc));
            Decision { events: tag(account, events), primary: Some((stream, version)), created, service }
        }
        Command::Customer { account, expected, command } => {
            customers::decide(conn, account, *expected, command)?
        }
        Command::Erase { account, target } => erase::erase(conn, account, target, at.step)?,
        Command::Archive { account, prepared } => {
            let event = crate::store::archive::commit(conn, prepared, now)?;
            Decision {
                events: tag(account, vec![event]),
                primary: current(account_stream(account))?,
                ..Decision::default()
            }
        }
        Command::StageArchive { stage, .. } => {
            crate::store::archive::stage(conn, stage)?;
            Decision::default()
        }
        Command::AbandonArchive { account, through_seq } => {
            crate::store::archive::abandon(conn, account, *through_seq)?;
            Decision::default()
        }
        Command::DropArchived { account } => {
            crate::store::archive::drop_step(conn, account, crate::store::archive::DROP_STEP)?;
            Decision::default()
        }
        Command::SweepServices { limit } => {
            let mut events = Vec::new();
            for (account, service_id) in projections::journeys::due_services(conn, now, *limit)? {
                let doc = projections::journeys::load_service(conn, &account, &service_id)?;
                let at = journeys::Circumstances { now, settings: &JourneySettings::default() };
                let swept = journeys::decide_service(doc.as_ref(), &service_id, &ServiceCommand::Sweep, at)?;
                events.extend(tag(&account, swept));
            }
            Decision { events, ..Decision::default() }
        }
    })
}

/// The customer an event gives a service to, if any.
fn customer_given(event: &Event) -> Option<&str> {
    match event {
        Event::ServiceStarted(e) => e.customer_id.as_deref(),
        Event::ServiceAssociated(e) => Some(&e.customer_id),
        _ => None,
    }
}

/// Nothing may be given to a customer whose erasure proceeds in steps: a service given behind
/// the erasure's progress would keep its data, and a profile written now would be deleted by the
/// erasure's last step without being redacted.
pub(super) fn refuse_while_erased(
    conn: &Connection,
    account: &str,
    customer_id: &str,
) -> Result<(), WriteError> {
    if projections::journeys::erasure_progress(conn, account, customer_id)?.is_some() {
        let message =
            format!("customer {customer_id} is being erased; write to them again once the erasure is done");
        return Err(DomainError::Conflict(message).into());
    }
    Ok(())
}

/// The id an event gives what it creates, reported to the client.
pub(super) fn created_id(event: &Event) -> Option<String> {
    match event {
        Event::ServiceStarted(e) => Some(e.service_id.clone()),
        Event::StateStarted(e) => Some(e.state_id.to_string()),
        Event::TaskStarted(e) => Some(e.task_id.to_string()),
        Event::CustomerCreated(e) => Some(e.customer_id.clone()),
        _ => None,
    }
}

pub(super) fn tag_all(account: &str, events: Vec<Event>) -> Vec<NewEvent> {
    events.into_iter().map(|event| NewEvent { account: account.to_string(), event }).collect()
}
