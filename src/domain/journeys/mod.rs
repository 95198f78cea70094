//! Customer journeys (Genesys Context Services compatible): a service holds states that hold
//! tasks. `decide_service` enforces the lifecycle rules of docs/JOURNEYS.md against the
//! service as its events left it; nothing here does I/O.

pub mod customers;
pub mod events;
pub mod fields;
pub mod service;

use chrono::{DateTime, Utc};

use super::events::{JsonText, Properties};
use super::{DomainError, Event};
use events::*;
use fields::{Body, Touch};
use service::ServiceDoc;

/// Most states, and most tasks, one service may hold: every lifecycle call rewrites the
/// service's document, so an unbounded service would make each call slower than the last.
pub const MAX_ITEMS_PER_SERVICE: usize = 1000;

/// What can be done to one service.
// Commands reach the writer boxed (`Box<WriteRequest>`), so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceCommand {
    Start {
        body: Body,
    },
    End {
        body: Body,
    },
    /// Gives the service to a customer: an anonymous one becomes identified, an identified one moves.
    Associate {
        customer_id: String,
        body: Body,
    },
    SetExpiry {
        expiry: Expiry,
    },
    ReplaceExtension {
        item: Item,
        name: String,
        value: JsonText,
    },
    Delete,
    StartState {
        body: Body,
    },
    EndState {
        state_id: u32,
        body: Body,
    },
    /// Ends `from_state_id` and starts the next state, in one command.
    Transition {
        from_state_id: u32,
        end: Body,
        start: Body,
    },
    StartTask {
        body: Body,
    },
    EndTask {
        task_id: u32,
        body: Body,
    },
    /// Sent by the sweeper: expire or auto-complete the service if it is due at `now`.
    Sweep,
}

/// Dispositions that make an ended service abandoned when the account lists none of its own.
pub const DEFAULT_ABANDON_DISPOSITIONS: &[&str] = &["abandoned", "customer_hangup", "timeout"];

/// An account's journey settings, as its `JourneySettingsSet` events left them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneySettings {
    /// The default `auto_complete_after`, for services that start without one.
    pub auto_complete_after: Option<u64>,
    /// The account's abandonment dispositions; none: `DEFAULT_ABANDON_DISPOSITIONS`.
    pub abandon_dispositions: Option<Vec<String>>,
}

impl JourneySettings {
    /// The abandonment dispositions in force.
    pub fn abandon_dispositions(&self) -> Vec<String> {
        match &self.abandon_dispositions {
            Some(list) => list.clone(),
            None => DEFAULT_ABANDON_DISPOSITIONS.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// Whether ending a service with `disposition` abandons it.
    pub fn abandons(&self, disposition: Option<&JsonText>) -> bool {
        let Some(disposition) = disposition else { return false };
        let text = fields::label_text(disposition);
        match &self.abandon_dispositions {
            Some(list) => list.contains(&text),
            None => DEFAULT_ABANDON_DISPOSITIONS.contains(&text.as_str()),
        }
    }
}

/// What a service command is decided against, besides the service itself.
#[derive(Debug, Clone, Copy)]
pub struct Circumstances<'a> {
    pub now: DateTime<Utc>,
    pub settings: &'a JourneySettings,
}

fn invalid(message: String) -> DomainError {
    DomainError::Invalid(message)
}

/// Decides a command on service `service_id`, whose current state is `doc` (none: no such service).
pub fn decide_service(
    doc: Option<&ServiceDoc>,
    service_id: &str,
    command: &ServiceCommand,
    at: Circumstances<'_>,
) -> Result<Vec<Event>, DomainError> {
    let now = at.now;
    let doc = match (doc, command) {
        (None, ServiceCommand::Start { body }) => return Ok(vec![start_service(service_id, body, at)?]),
        (Some(_), ServiceCommand::Start { .. }) => {
            return Err(DomainError::Conflict(format!("service {service_id} already exists")));
        }
        (None, ServiceCommand::Sweep) => return Ok(vec![]),
        (None, _) => return Err(DomainError::NotFound(format!("service {service_id}"))),
        (Some(doc), _) => doc,
    };
    check_document_size(doc, command)?;
    let service_id = service_id.to_string();
    Ok(match command {
        ServiceCommand::Start { .. } => unreachable!("handled above"),
        ServiceCommand::End { body } => {
            require_active(doc)?;
            check_end_time(&doc.life.started, body, "the service")?;
            let closing = closing(body, now, None);
            let mut events = close_children(doc, &closing.completed, ClosedBy::ServiceEnded, None);
            let expiry = Expiry { ttl: body.ttl, expiration_time: body.expiration_time };
            let abandoned = at.settings.abandons(closing.disposition.as_ref());
            events.push(Event::ServiceEnded(ServiceEnded {
                service_id,
                closing,
                abandoned,
                expiry: expiry.is_set().then_some(expiry),
            }));
            events
        }
        ServiceCommand::Associate { customer_id, body } => {
            vec![Event::ServiceAssociated(ServiceAssociated {
                service_id,
                customer_id: customer_id.clone(),
                previous_customer_id: doc.customer_id.clone(),
                service_type: body.item_type.clone(),
                channel: body.channel.clone(),
                extensions: body.extensions.clone(),
            })]
        }
        ServiceCommand::SetExpiry { expiry } => {
            if !expiry.is_set() {
                return Err(invalid("give ttl (seconds) or expiration_time".into()));
            }
            vec![Event::ServiceExpirySet(ServiceExpirySet { service_id, expiry: expiry.clone() })]
        }
        ServiceCommand::ReplaceExtension { item, name, value } => {
            let exists = match *item {
                Item::Service => true,
                Item::State(id) => doc.state(id).is_some(),
                Item::Task(id) => doc.task(id).is_some(),
            };
            if !exists {
                return Err(DomainError::NotFound(item_name(*item)));
            }
            vec![Event::ExtensionReplaced(ExtensionReplaced {
                service_id,
                item: *item,
                name: name.clone(),
                value: value.clone(),
            })]
        }
        ServiceCommand::Delete => vec![Event::ServiceDeleted(ServiceDeleted { service_id })],
        ServiceCommand::StartState { body } => vec![start_state(doc, body, now)?],
        ServiceCommand::EndState { state_id, body } => end_state(doc, *state_id, body, now)?,
        ServiceCommand::Transition { from_state_id, end, start } => {
            let mut events = end_state(doc, *from_state_id, end, now)?;
            let mut start = start.clone();
            start.link = Some(*from_state_id);
            events.push(start_state(doc, &start, now)?);
            events
        }
        ServiceCommand::StartTask { body } => vec![start_task(doc, body, now)?],
        ServiceCommand::EndTask { task_id, body } => {
            let task =
                doc.task(*task_id).ok_or_else(|| DomainError::NotFound(item_name(Item::Task(*task_id))))?;
            if !task.life.is_active() {
                return Err(invalid(format!("task {task_id} is already completed")));
            }
            if body.link.is_some_and(|state_id| task.state_id != Some(state_id)) {
                return Err(invalid(format!("task {task_id} is not in that state_id")));
            }
            check_end_time(&task.life.started, body, &format!("task {task_id}"))?;
            vec![Event::TaskEnded(TaskEnded {
                service_id,
                task_id: *task_id,
                closing: closing(body, now, None),
            })]
        }
        ServiceCommand::Sweep => sweep(doc, now),
    })
}

/// Refuses a command that would take the extensions held by the service beyond
/// `MAX_DOCUMENT_CHARS` (every other part of a service is bounded by the field limits).
fn check_document_size(doc: &ServiceDoc, command: &ServiceCommand) -> Result<(), DomainError> {
    let chars =
        |extensions: &Properties| extensions.iter().map(|(n, v)| n.len() + v.as_str().len()).sum::<usize>();
    let added = match command {
        ServiceCommand::End { body }
        | ServiceCommand::Associate { body, .. }
        | ServiceCommand::StartState { body }
        | ServiceCommand::EndState { body, .. }
        | ServiceCommand::StartTask { body }
        | ServiceCommand::EndTask { body, .. } => chars(&body.extensions),
        ServiceCommand::Transition { end, start, .. } => chars(&end.extensions) + chars(&start.extensions),
        ServiceCommand::ReplaceExtension { name, value, .. } => name.len() + value.as_str().len(),
        _ => 0,
    };
    if added == 0 {
        return Ok(());
    }
    let held = chars(&doc.life.extensions)
        + doc.states.iter().map(|s| chars(&s.life.extensions)).sum::<usize>()
        + doc.tasks.iter().map(|t| chars(&t.life.extensions)).sum::<usize>();
    if held + added > customers::MAX_DOCUMENT_CHARS {
        return Err(DomainError::DocumentTooLarge);
    }
    Ok(())
}

/// Refuses an end whose time is before the item's start: it would make a negative duration.
fn check_end_time(started: &Touch, body: &Body, what: &str) -> Result<(), DomainError> {
    match body.timestamp {
        Some(end) if end < started.timestamp => {
            Err(invalid(format!("the end timestamp of {what} is before its start")))
        }
        _ => Ok(()),
    }
}

fn item_name(item: Item) -> String {
    match item {
        Item::Service => "service".into(),
        Item::State(id) => format!("state {id}"),
        Item::Task(id) => format!("task {id}"),
    }
}

fn require_active(doc: &ServiceDoc) -> Result<(), DomainError> {
    if doc.is_active() {
        Ok(())
    } else {
        Err(invalid(format!("service {} is already completed", doc.service_id)))
    }
}

fn opening(body: &Body, now: DateTime<Utc>) -> Opening {
    Opening { est_duration: body.est_duration, started: body.touch(now), extensions: body.extensions.clone() }
}

fn closing(body: &Body, now: DateTime<Utc>, closed_by: Option<ClosedBy>) -> Closing {
    Closing {
        completed: body.touch(now),
        disposition: body.disposition.clone(),
        disposition_desc: body.disposition_desc.clone(),
        extensions: body.extensions.clone(),
        closed_by,
    }
}

fn start_service(service_id: &str, body: &Body, at: Circumstances<'_>) -> Result<Event, DomainError> {
    if body.customer_id.is_none() && body.contact_key.is_none() {
        return Err(invalid("customer_id or contact_key is required".into()));
    }
    Ok(Event::ServiceStarted(ServiceStarted {
        service_id: service_id.to_string(),
        service_type: body.item_type.clone(),
        customer_id: body.customer_id.clone(),
        contact_key: body.contact_key.clone(),
        opening: opening(body, at.now),
        auto_complete_after: body.auto_complete_after.or(at.settings.auto_complete_after),
        expiry: Expiry { ttl: body.ttl, expiration_time: body.expiration_time },
    }))
}

fn start_state(doc: &ServiceDoc, body: &Body, now: DateTime<Utc>) -> Result<Event, DomainError> {
    require_active(doc)?;
    if doc.states.len() >= MAX_ITEMS_PER_SERVICE {
        return Err(invalid(format!("a service holds at most {MAX_ITEMS_PER_SERVICE} states")));
    }
    if let Some(previous) = body.link.filter(|id| doc.state(*id).is_none()) {
        return Err(invalid(format!("previous_state_id {previous} is not a state of this service")));
    }
    Ok(Event::StateStarted(StateStarted {
        service_id: doc.service_id.clone(),
        state_id: next_id(doc.states.len()),
        state_type: body.item_type.clone(),
        previous_state_id: body.link,
        opening: opening(body, now),
    }))
}

fn end_state(
    doc: &ServiceDoc,
    state_id: u32,
    body: &Body,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, DomainError> {
    let state = doc.state(state_id).ok_or_else(|| DomainError::NotFound(item_name(Item::State(state_id))))?;
    if !state.life.is_active() {
        return Err(invalid(format!("state {state_id} is not active")));
    }
    check_end_time(&state.life.started, body, &format!("state {state_id}"))?;
    let closing = closing(body, now, None);
    let mut events = close_children(doc, &closing.completed, ClosedBy::StateEnded, Some(state_id));
    events.push(Event::StateEnded(StateEnded { service_id: doc.service_id.clone(), state_id, closing }));
    Ok(events)
}

fn start_task(doc: &ServiceDoc, body: &Body, now: DateTime<Utc>) -> Result<Event, DomainError> {
    require_active(doc)?;
    if doc.tasks.len() >= MAX_ITEMS_PER_SERVICE {
        return Err(invalid(format!("a service holds at most {MAX_ITEMS_PER_SERVICE} tasks")));
    }
    if let Some(state_id) = body.link {
        match doc.state(state_id) {
            None => return Err(invalid(format!("state_id {state_id} is not a state of this service"))),
            Some(state) if !state.life.is_active() => {
                return Err(invalid(format!(
                    "state {state_id} is completed; start the task in an active state"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Event::TaskStarted(TaskStarted {
        service_id: doc.service_id.clone(),
        task_id: next_id(doc.tasks.len()),
        state_id: body.link,
        task_type: body.item_type.clone(),
        opening: opening(body, now),
    }))
}

fn next_id(existing: usize) -> u32 {
    u32::try_from(existing + 1).expect("bounded by MAX_ITEMS_PER_SERVICE")
}

/// The events that close what is still open under a closing parent: the active tasks (of
/// `state`, or all of them), then, when the whole service closes, its active states.
fn close_children(doc: &ServiceDoc, at: &Touch, by: ClosedBy, state: Option<u32>) -> Vec<Event> {
    let closing = Closing {
        completed: Touch { timestamp: at.timestamp, channel: Properties::new() },
        disposition: None,
        disposition_desc: None,
        extensions: Properties::new(),
        closed_by: Some(by),
    };
    let tasks =
        doc.tasks.iter().filter(|task| task.life.is_active() && (state.is_none() || task.state_id == state));
    let mut events: Vec<Event> = tasks
        .map(|task| {
            Event::TaskEnded(TaskEnded {
                service_id: doc.service_id.clone(),
                task_id: task.task_id,
                closing: closing.clone(),
            })
        })
        .collect();
    if state.is_none() {
        events.extend(doc.states.iter().filter(|s| s.life.is_active()).map(|s| {
            Event::StateEnded(StateEnded {
                service_id: doc.service_id.clone(),
                state_id: s.state_id,
                closing: closing.clone(),
            })
        }));
    }
    events
}

/// Expires the service, or completes it for inactivity, if either is due at `now`.
fn sweep(doc: &ServiceDoc, now: DateTime<Utc>) -> Vec<Event> {
    let service_id = doc.service_id.clone();
    if doc.expires_at().is_some_and(|at| at <= now) {
        return vec![Event::ServiceExpired(ServiceExpired { service_id, expired_at: now })];
    }
    if doc.auto_complete_at().is_some_and(|at| at <= now) {
        let at = Touch { timestamp: now, channel: Properties::new() };
        let mut events = close_children(doc, &at, ClosedBy::ServiceAutoCompleted, None);
        events.push(Event::ServiceAutoCompleted(ServiceAutoCompleted {
            service_id,
            completed_at: now,
            idle_since: doc.updated_at,
        }));
        return events;
    }
    vec![]
}

#[cfg(test)]
mod tests;
