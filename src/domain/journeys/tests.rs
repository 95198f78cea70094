//! Given a service's events, when a command, then these events or this error.

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

use super::fields::{BodyKind, parse_body};
use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn body(value: serde_json::Value, kind: BodyKind) -> Body {
    parse_body(value.as_object().unwrap().clone(), kind).unwrap()
}

static NO_SETTINGS: JourneySettings =
    JourneySettings { auto_complete_after: None, abandon_dispositions: None };

fn at(now: DateTime<Utc>) -> Circumstances<'static> {
    Circumstances { now, settings: &NO_SETTINGS }
}

/// Folds `commands` into a service from nothing, as the writer and projection would.
fn given(commands: &[ServiceCommand]) -> ServiceDoc {
    let mut doc: Option<ServiceDoc> = None;
    for command in commands {
        for event in decide_service(doc.as_ref(), "s1", command, at(now())).unwrap() {
            match (&mut doc, &event) {
                (None, Event::ServiceStarted(started)) => doc = Some(ServiceDoc::start(started, now())),
                (Some(d), e) => d.apply(e, now()),
                _ => panic!("unexpected first event {event:?}"),
            }
        }
    }
    doc.unwrap()
}

fn start() -> ServiceCommand {
    ServiceCommand::Start {
        body: body(json!({"customer_id": "c1", "service_type": "billing"}), BodyKind::ServiceStart),
    }
}

fn start_state(kind: &str) -> ServiceCommand {
    ServiceCommand::StartState { body: body(json!({ "state_type": kind }), BodyKind::StateStart) }
}

fn start_task(state_id: u32) -> ServiceCommand {
    ServiceCommand::StartTask {
        body: body(json!({ "state_id": state_id, "task_type": "t" }), BodyKind::TaskStart),
    }
}

fn end() -> ServiceCommand {
    ServiceCommand::End { body: Body::default() }
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::event_type).collect()
}

#[test]
fn ending_a_service_closes_its_open_tasks_then_states_saying_the_parent_closed_them() {
    let doc = given(&[start(), start_state("ivr"), start_task(1)]);
    let events = decide_service(Some(&doc), "s1", &end(), at(now())).unwrap();
    assert_eq!(types(&events), ["TaskEnded", "StateEnded", "ServiceEnded"]);
    let Event::StateEnded(state) = &events[1] else { unreachable!() };
    assert_eq!(state.closing.closed_by, Some(ClosedBy::ServiceEnded));
}

#[test]
fn a_transition_ends_the_state_with_its_tasks_and_starts_the_next_linked_to_it() {
    let doc = given(&[start(), start_state("ivr"), start_task(1)]);
    let command = ServiceCommand::Transition {
        from_state_id: 1,
        end: Body::default(),
        start: body(json!({"state_type": "queue"}), BodyKind::StateStart),
    };
    let events = decide_service(Some(&doc), "s1", &command, at(now())).unwrap();
    assert_eq!(types(&events), ["TaskEnded", "StateEnded", "StateStarted"]);
    let Event::StateStarted(next) = &events[2] else { unreachable!() };
    assert_eq!((next.state_id, next.previous_state_id), (2, Some(1)));
}

#[test]
fn lifecycle_violations_are_refused() {
    let ended = given(&[start(), start_state("ivr"), end()]);
    let refused =
        |doc: &ServiceDoc, command: ServiceCommand| decide_service(Some(doc), "s1", &command, at(now()));
    assert!(matches!(refused(&ended, start_state("x")), Err(DomainError::Invalid(_))));
    assert!(matches!(refused(&ended, start_task(1)), Err(DomainError::Invalid(_))));
    assert!(matches!(refused(&ended, end()), Err(DomainError::Invalid(_))));
    let transition =
        ServiceCommand::Transition { from_state_id: 1, end: Body::default(), start: Body::default() };
    assert!(matches!(refused(&ended, transition), Err(DomainError::Invalid(_))));
    let open = given(&[start()]);
    let end_missing = ServiceCommand::EndState { state_id: 9, body: Body::default() };
    assert!(matches!(refused(&open, end_missing), Err(DomainError::NotFound(_))));
    assert!(matches!(decide_service(None, "s1", &end(), at(now())), Err(DomainError::NotFound(_))));
    let anonymous = ServiceCommand::Start { body: Body::default() };
    assert!(matches!(decide_service(None, "s1", &anonymous, at(now())), Err(DomainError::Invalid(_))));
}

#[test]
fn the_sweep_auto_completes_after_inactivity_and_expires_after_the_ttl() {
    let start = ServiceCommand::Start {
        body: body(
            json!({"contact_key": "555", "auto_complete_after": 60, "ttl": 3600}),
            BodyKind::ServiceStart,
        ),
    };
    let doc = given(&[start, start_state("queue")]);
    let sweep = |after: i64| {
        decide_service(Some(&doc), "s1", &ServiceCommand::Sweep, at(now() + Duration::seconds(after)))
    };
    assert!(sweep(59).unwrap().is_empty());
    assert_eq!(types(&sweep(60).unwrap()), ["StateEnded", "ServiceAutoCompleted"]);
    assert_eq!(types(&sweep(3600).unwrap()), ["ServiceExpired"]);
}

#[test]
fn the_account_default_applies_only_when_the_start_sets_no_auto_complete() {
    let settings = JourneySettings { auto_complete_after: Some(300), abandon_dispositions: None };
    let with_default = Circumstances { now: now(), settings: &settings };
    let events = decide_service(None, "s1", &start(), with_default).unwrap();
    let Event::ServiceStarted(started) = &events[0] else { unreachable!() };
    assert_eq!(started.auto_complete_after, Some(300));
}

#[test]
fn an_end_with_an_abandonment_disposition_is_decided_abandoned() {
    let doc = given(&[start()]);
    let end_with = |disposition: &str, settings: &JourneySettings| {
        let body = body(json!({ "disposition": disposition }), BodyKind::ServiceEnd);
        let events = decide_service(
            Some(&doc),
            "s1",
            &ServiceCommand::End { body },
            Circumstances { now: now(), settings },
        )
        .unwrap();
        let Event::ServiceEnded(ended) = events.last().unwrap() else { unreachable!() };
        ended.abandoned
    };
    assert!(end_with("customer_hangup", &NO_SETTINGS));
    assert!(!end_with("resolved", &NO_SETTINGS));
    let own =
        JourneySettings { auto_complete_after: None, abandon_dispositions: Some(vec!["gave_up".into()]) };
    assert!(end_with("gave_up", &own));
    assert!(!end_with("customer_hangup", &own));
}
