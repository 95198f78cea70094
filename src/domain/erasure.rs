//! Erasure ("right to be forgotten"): which parts of an event are personal, and their redacted
//! form. The one place that decides what an erasure removes; `store::log::redact_payload` is
//! the one place that writes it (docs/AUDIT.md).
//!
//! Personal: context property values, customer profile values, extension values, a service's
//! contact key and free-text disposition descriptions. Kept: ids, names, types, channels,
//! dispositions and times — what the analytics count, so erasure leaves every count as it was.

use serde::{Deserialize, Serialize};

use super::Event;
use super::events::{JsonText, Properties};
use super::journeys::events::{Closing, Opening};
use super::journeys::service::{Lifecycle, ServiceDoc};

/// What a redacted value reads as, wherever a personal value stood.
pub const MARKER: &str = "[erased]";

/// One redacted payload: the event's seq and the sha256 (hex) of its payload after redaction,
/// so that `chain::verify` can tell an erasure from tampering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redaction {
    pub seq: u64,
    pub redacted_sha256: String,
}

/// One redacted state of an archive's snapshot (docs/AUDIT.md, "Archives"): its stream and the
/// sha256 (hex) of its JSON text after redaction, so that the snapshot's check tells the
/// erasure's change from any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRedaction {
    pub stream: String,
    pub redacted_sha256: String,
}

/// What an erasure redacted: payloads of the live log and of archive segments, and snapshot
/// states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redacted {
    pub payloads: Vec<Redaction>,
    pub snapshot: Vec<SnapshotRedaction>,
}

/// A customer's personal data was erased from their profile's events and from every event of
/// the services that were ever theirs. Appended to the customer's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerErased {
    pub customer_id: String,
    /// The services whose events were redacted.
    pub services: Vec<String>,
    pub redacted: Vec<Redaction>,
    /// The archive snapshot's states it redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_redacted: Vec<SnapshotRedaction>,
}

/// A service's events were redacted by the erasure of a customer it was ever given to; the
/// service's own stream records it (so its version, the `ETag`, moves), before the customer's
/// `CustomerErased`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceErased {
    pub service_id: String,
    /// The customer whose erasure it was.
    pub customer_id: String,
    /// In an erasure that proceeds in steps, the service's own redactions (else the customer's
    /// `CustomerErased` lists them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<Redaction>,
    /// The archive snapshot's states it redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_redacted: Vec<SnapshotRedaction>,
}

/// The erasure of a customer with more services than one step takes has begun: the profile's
/// events are redacted and the profile is gone; each service's `ServiceErased` follows in
/// steps, then `CustomerErased`. Appended to the customer's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerErasureStarted {
    pub customer_id: String,
    /// The profile's redactions.
    pub redacted: Vec<Redaction>,
    /// The archive snapshot's states it redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_redacted: Vec<SnapshotRedaction>,
}

/// A context session's property values were erased from its events. Appended to the session's
/// stream; the session is left empty, as `SessionDeleted` leaves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionErased {
    pub namespace: String,
    pub session_id: String,
    pub redacted: Vec<Redaction>,
    /// The archive snapshot's states it redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_redacted: Vec<SnapshotRedaction>,
}

/// The snapshot states an erasure event records as redacted (none for any other event).
pub fn snapshot_redactions(event: &Event) -> &[SnapshotRedaction] {
    match event {
        Event::CustomerErased(erased) => &erased.snapshot_redacted,
        Event::CustomerErasureStarted(erased) => &erased.snapshot_redacted,
        Event::ServiceErased(erased) => &erased.snapshot_redacted,
        Event::SessionErased(erased) => &erased.snapshot_redacted,
        _ => &[],
    }
}

/// Whose personal data an erasure removes.
#[derive(Debug, Clone, PartialEq)]
pub enum ErasureTarget {
    /// A customer profile and every service that was ever theirs.
    Customer { customer_id: String },
    /// The next step of a customer erasure that was started (sent by ctxd itself).
    CustomerStep { customer_id: String },
    /// A context session (namespace properties are session `__default__`).
    Session { namespace: String, session_id: String },
}

fn marker() -> JsonText {
    JsonText::from_value(&serde_json::Value::String(MARKER.into()))
}

fn redact_values(values: &mut Properties) {
    for value in values.values_mut() {
        *value = marker();
    }
}

fn redact_text(text: &mut Option<String>) {
    if text.is_some() {
        *text = Some(MARKER.into());
    }
}

fn redact_opening(opening: &mut Opening) {
    redact_values(&mut opening.extensions);
}

fn redact_closing(closing: &mut Closing) {
    redact_values(&mut closing.extensions);
    redact_text(&mut closing.disposition_desc);
}

/// The event with its personal values replaced by `MARKER`. Redacting twice changes nothing.
pub fn redact(event: &Event) -> Event {
    let mut event = event.clone();
    match &mut event {
        Event::PropertiesPatched(e) => redact_values(&mut e.properties),
        Event::CustomerCreated(e) => redact_values(&mut e.profile),
        Event::CustomerReplaced(e) => redact_values(&mut e.profile),
        Event::ServiceStarted(e) => {
            redact_text(&mut e.contact_key);
            redact_opening(&mut e.opening);
        }
        Event::StateStarted(e) => redact_opening(&mut e.opening),
        Event::TaskStarted(e) => redact_opening(&mut e.opening),
        Event::ServiceEnded(e) => redact_closing(&mut e.closing),
        Event::StateEnded(e) => redact_closing(&mut e.closing),
        Event::TaskEnded(e) => redact_closing(&mut e.closing),
        Event::ServiceAssociated(e) => redact_values(&mut e.extensions),
        Event::ExtensionReplaced(e) => e.value = marker(),
        _ => {}
    }
    event
}

fn redact_life(life: &mut Lifecycle) {
    redact_values(&mut life.extensions);
    redact_text(&mut life.disposition_desc);
}

/// A service document as its redacted events would have built it: `redact` applied to the fold
/// equals the fold of `redact`, which keeps the live projection equal to a rebuild.
pub fn redact_service(doc: &mut ServiceDoc) {
    redact_text(&mut doc.contact_key);
    redact_life(&mut doc.life);
    for state in &mut doc.states {
        redact_life(&mut state.life);
    }
    for task in &mut doc.tasks {
        redact_life(&mut task.life);
    }
}
