//! Erasure: the one decision that writes (it redacts payloads inside the command's savepoint),
//! and a customer's in steps when it has more services than one step takes.

use crate::store::db::Connection;

use super::{Decision, tag_all};
use crate::domain::context::StepBound;
use crate::domain::erasure::{
    self, CustomerErased, CustomerErasureStarted, ErasureTarget, Redacted, Redaction, ServiceErased,
    SessionErased,
};
use crate::domain::events::{customer_stream, service_stream, session_stream};
use crate::domain::{DomainError, Event};
use crate::projections;
use crate::store::{StoreError, WriteError, chain, log};

/// Redacts the payloads an erasure covers, in place, and answers the event that records it.
/// Unlike other decisions this one writes (inside the command's savepoint): the redaction and
/// its record commit together or not at all. A customer with more services than one step takes
/// is erased in steps: the profile first (`CustomerErasureStarted`), then the services in id
/// order (`CustomerStep`), then `CustomerErased`.
pub(super) fn erase(
    conn: &Connection,
    account: &str,
    target: &ErasureTarget,
    step: StepBound,
) -> Result<Decision, WriteError> {
    let (namespace, session_id) = match target {
        ErasureTarget::Session { namespace, session_id } => (namespace, session_id),
        ErasureTarget::Customer { customer_id } | ErasureTarget::CustomerStep { customer_id } => {
            return erase_customer(conn, account, customer_id, target, step);
        }
    };
    let stream = session_stream(account, namespace, session_id);
    let version = log::stream_version(conn, &stream)?;
    if version == 0 {
        return Err(DomainError::NotFound(format!("session {session_id}")).into());
    }
    let redacted = redact_streams(conn, account, std::slice::from_ref(&stream))?;
    let events = vec![Event::SessionErased(SessionErased {
        namespace: namespace.clone(),
        session_id: session_id.clone(),
        redacted: redacted.payloads,
        snapshot_redacted: redacted.snapshot,
    })];
    Ok(Decision { events: tag_all(account, events), primary: Some((stream, version)), ..Decision::default() })
}

fn erase_customer(
    conn: &Connection,
    account: &str,
    customer_id: &str,
    target: &ErasureTarget,
    step: StepBound,
) -> Result<Decision, WriteError> {
    let stream = customer_stream(account, customer_id);
    let version = log::stream_version(conn, &stream)?;
    let progress = projections::journeys::erasure_progress(conn, account, customer_id)?;
    let primary = Some((stream.clone(), version));
    let starting = matches!(target, ErasureTarget::Customer { .. });
    let after = match (&progress, starting) {
        // Asked again while it proceeds: nothing more to start.
        (Some(_), true) => return Ok(Decision { primary, ..Decision::default() }),
        (None, false) => return Ok(Decision::default()),
        (Some(through), false) => through.as_deref(),
        (None, true) => None,
    };
    let (services, more) = next_services(conn, account, customer_id, after, step)?;
    if starting && version == 0 && services.is_empty() {
        return Err(DomainError::NotFound(format!("customer {customer_id}")).into());
    }
    let customer = customer_id.to_string();
    let erased = |service_id: &String, redacted: Redacted| {
        Event::ServiceErased(ServiceErased {
            service_id: service_id.clone(),
            customer_id: customer.clone(),
            redacted: redacted.payloads,
            snapshot_redacted: redacted.snapshot,
        })
    };
    let events = if starting && more {
        let redacted = redact_streams(conn, account, std::slice::from_ref(&stream))?;
        vec![Event::CustomerErasureStarted(CustomerErasureStarted {
            customer_id: customer.clone(),
            redacted: redacted.payloads,
            snapshot_redacted: redacted.snapshot,
        })]
    } else if starting {
        // It fits in one step: one list of redactions, on the customer's event.
        let mut streams = vec![stream.clone()];
        streams.extend(services.iter().map(|service_id| service_stream(account, service_id)));
        let redacted = redact_streams(conn, account, &streams)?;
        let mut events: Vec<Event> =
            services.iter().map(|service_id| erased(service_id, Redacted::default())).collect();
        events.push(Event::CustomerErased(CustomerErased {
            customer_id: customer.clone(),
            services,
            redacted: redacted.payloads,
            snapshot_redacted: redacted.snapshot,
        }));
        events
    } else {
        let mut events = Vec::with_capacity(services.len() + 1);
        for service_id in &services {
            let redacted = redact_streams(conn, account, &[service_stream(account, service_id)])?;
            events.push(erased(service_id, redacted));
        }
        if !more {
            let all =
                projections::journeys::services_ever_of(conn, account, customer_id, projections::Until::End)?;
            events.push(Event::CustomerErased(CustomerErased {
                customer_id: customer.clone(),
                services: all,
                redacted: Vec::new(),
                snapshot_redacted: Vec::new(),
            }));
        }
        events
    };
    Ok(Decision { events: tag_all(account, events), primary, ..Decision::default() })
}

/// The services a step of a customer erasure takes after `after`, in id order, as many as
/// `bound` allows (at least one; their events count as its rows), and whether more remain.
fn next_services(
    conn: &Connection,
    account: &str,
    customer_id: &str,
    after: Option<&str>,
    bound: StepBound,
) -> Result<(Vec<String>, bool), StoreError> {
    let candidates =
        projections::journeys::services_of_after(conn, account, customer_id, after, bound.items + 1)?;
    // A service's events are its rows: its stream's version counts them.
    bound.take(candidates.into_iter().map(|service_id| {
        let events = log::stream_version(conn, &service_stream(account, &service_id))?;
        Ok((service_id, events))
    }))
}

/// Redacts every event of `streams` that holds personal data, in the live log and in the
/// account's archive (its segments and its snapshot); answers what it redacted.
fn redact_streams(conn: &Connection, account: &str, streams: &[String]) -> Result<Redacted, WriteError> {
    let erasures: Vec<(String, Event)> =
        streams.iter().filter_map(|stream| Some((stream.clone(), erasure_of(stream)?))).collect();
    let mut redacted = crate::store::archive::erase_streams(conn, account, &erasures)?;
    for (seq, event_type, data) in log::stream_payloads(conn, streams)? {
        let event = Event::decode(&event_type, &data)
            .map_err(|error| StoreError::Corrupt(format!("event {seq}: {error}")))?;
        let redacted_data = erasure::redact(&event).data_json();
        if redacted_data != data {
            log::redact_payload(conn, account, seq, &redacted_data)?;
            let redacted_sha256 = hex::encode(chain::payload_hash(&redacted_data));
            redacted.payloads.push(Redaction { seq, redacted_sha256 });
        }
    }
    Ok(redacted)
}

/// What an erasure of `stream` does to the projections, as an event to apply to its snapshot
/// state: the stream's kind is its id's first segment (`domain::events`).
fn erasure_of(stream: &str) -> Option<Event> {
    let parts: Vec<String> = stream
        .split('/')
        .skip(2)
        .map(|part| percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned())
        .collect();
    match (stream.split('/').next()?, parts.as_slice()) {
        ("ctx", [namespace, session_id]) => Some(Event::SessionErased(SessionErased {
            namespace: namespace.clone(),
            session_id: session_id.clone(),
            redacted: Vec::new(),
            snapshot_redacted: Vec::new(),
        })),
        ("svc", [service_id]) => Some(Event::ServiceErased(ServiceErased {
            service_id: service_id.clone(),
            customer_id: String::new(),
            redacted: Vec::new(),
            snapshot_redacted: Vec::new(),
        })),
        ("cust", [customer_id]) => Some(Event::CustomerErased(CustomerErased {
            customer_id: customer_id.clone(),
            services: Vec::new(),
            redacted: Vec::new(),
            snapshot_redacted: Vec::new(),
        })),
        _ => None,
    }
}
