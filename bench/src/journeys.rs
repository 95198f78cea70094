//! The journey workload: a customer's call through the contact centre as the Genesys Context
//! Services API sees it. Each journey is 8 lifecycle calls, each chained to the ids the earlier
//! ones returned: start the service, start its "ivr" state, start and end an "identify" task in
//! it, transition ivr → queue → agent (switching from voice to chat) → wrapup, end the service.
//!
//! What the clients send (`Call::request`) and what the server records for each call
//! (`Call::events`, 12 events per journey) are both here, so that the HTTP clients and the raw
//! SQLite baseline (`raw_journeys.rs`) write the same journeys; a test checks the events
//! against the domain's own decisions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ctxd::domain::Event;
use ctxd::domain::events::{JsonText, Properties};
use ctxd::domain::journeys::events::{
    ClosedBy, Closing, Expiry, Opening, ServiceEnded, ServiceStarted, StateEnded, StateStarted, TaskEnded,
    TaskStarted,
};
use ctxd::domain::journeys::fields::Touch;
use ctxd::domain::journeys::service::ServiceDoc;
use hyper::Method;
use serde::Deserialize;

use crate::http_client::{Client, request};
use crate::load::{Tally, Window};

/// Where the journeys API lives.
const BASE: &str = "/genesys/1/cs";
/// Each client cycles over this many customers of its own.
const CUSTOMERS_PER_CLIENT: u64 = 200;

/// The customer of `client`'s `journey`-th journey.
pub fn customer_id(client: u32, journey: u64) -> String {
    format!("c{client}_{}", journey % CUSTOMERS_PER_CLIENT)
}

/// One lifecycle call of a journey, in journey order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    StartService,
    StartState,
    StartTask,
    EndTask,
    ToQueue,
    ToAgent,
    ToWrapup,
    EndService,
}

/// A transition's target: the new state's type, the media of both halves, and the numbers of
/// the state it ends and the one it starts (the journey's states are 1 ivr, 2 queue, 3 agent,
/// 4 wrapup).
struct Transition {
    to: &'static str,
    media: &'static str,
    from_state: u32,
}

impl Call {
    pub const ALL: [Call; 8] = [
        Call::StartService,
        Call::StartState,
        Call::StartTask,
        Call::EndTask,
        Call::ToQueue,
        Call::ToAgent,
        Call::ToWrapup,
        Call::EndService,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Call::StartService => "start service",
            Call::StartState => "start state",
            Call::StartTask => "start task",
            Call::EndTask => "end task",
            Call::ToQueue => "to queue",
            Call::ToAgent => "to agent",
            Call::ToWrapup => "to wrapup",
            Call::EndService => "end service",
        }
    }

    fn transition(self) -> Option<Transition> {
        let (to, media, from_state) = match self {
            Call::ToQueue => ("queue", "voice", 1),
            Call::ToAgent => ("agent", "chat", 2),
            Call::ToWrapup => ("wrapup", "chat", 3),
            _ => return None,
        };
        Some(Transition { to, media, from_state })
    }

    /// The path and JSON body of this call, with the ids the server gave so far.
    pub fn request(self, customer: &str, ids: &Ids) -> (String, String) {
        let service = format!("{BASE}/services/{}", ids.service_id);
        match self {
            Call::StartService => (
                format!("{BASE}/services/start"),
                format!(r#"{{"customer_id":"{customer}","service_type":"billing","media_type":"voice"}}"#),
            ),
            Call::StartState => (
                format!("{service}/states/start"),
                r#"{"state_type":"ivr","media_type":"voice","est_duration":30}"#.to_string(),
            ),
            Call::StartTask => (
                format!("{service}/tasks/start"),
                format!(r#"{{"state_id":{},"task_type":"identify"}}"#, ids.state_id),
            ),
            Call::EndTask => (format!("{service}/tasks/{}/end", ids.task_id), "{}".to_string()),
            Call::ToQueue | Call::ToAgent | Call::ToWrapup => {
                let Transition { to, media, .. } = self.transition().expect("a transition");
                (
                    format!("{service}/states/transition"),
                    format!(
                        r#"{{"from":{{"state_id":{},"disposition":"ok"}},"to":{{"state_type":"{to}"}},"media_type":"{media}"}}"#,
                        ids.state_id
                    ),
                )
            }
            Call::EndService => (format!("{service}/end"), r#"{"disposition":"resolved"}"#.to_string()),
        }
    }

    /// The events the server records for this call of a journey on `service_id`, at `now`.
    pub fn events(self, service_id: &str, customer: &str, now: DateTime<Utc>) -> Vec<Event> {
        let service_id = service_id.to_string();
        let touch = |media: Option<&str>| Touch {
            timestamp: now,
            channel: media
                .map(|media| Properties::from([("media_type".to_string(), label(media))]))
                .unwrap_or_default(),
        };
        let opening = |est_duration: Option<u64>, media: Option<&str>| Opening {
            est_duration,
            started: touch(media),
            extensions: Properties::new(),
        };
        let closing = |media: Option<&str>, disposition: Option<&str>, closed_by: Option<ClosedBy>| Closing {
            completed: touch(media),
            disposition: disposition.map(label),
            disposition_desc: None,
            extensions: Properties::new(),
            closed_by,
        };
        match self {
            Call::StartService => vec![Event::ServiceStarted(ServiceStarted {
                service_id,
                service_type: Some(label("billing")),
                customer_id: Some(customer.to_string()),
                contact_key: None,
                opening: opening(None, Some("voice")),
                auto_complete_after: None,
                expiry: Expiry::default(),
            })],
            Call::StartState => vec![Event::StateStarted(StateStarted {
                service_id,
                state_id: 1,
                state_type: Some(label("ivr")),
                previous_state_id: None,
                opening: opening(Some(30), Some("voice")),
            })],
            Call::StartTask => vec![Event::TaskStarted(TaskStarted {
                service_id,
                task_id: 1,
                state_id: Some(1),
                task_type: Some(label("identify")),
                opening: opening(None, None),
            })],
            Call::EndTask => {
                vec![Event::TaskEnded(TaskEnded {
                    service_id,
                    task_id: 1,
                    closing: closing(None, None, None),
                })]
            }
            Call::ToQueue | Call::ToAgent | Call::ToWrapup => {
                let Transition { to, media, from_state } = self.transition().expect("a transition");
                vec![
                    Event::StateEnded(StateEnded {
                        service_id: service_id.clone(),
                        state_id: from_state,
                        closing: closing(Some(media), Some("ok"), None),
                    }),
                    Event::StateStarted(StateStarted {
                        service_id,
                        state_id: from_state + 1,
                        state_type: Some(label(to)),
                        previous_state_id: Some(from_state),
                        opening: opening(None, Some(media)),
                    }),
                ]
            }
            // Ending the service closes its open state (wrapup) first.
            Call::EndService => vec![
                Event::StateEnded(StateEnded {
                    service_id: service_id.clone(),
                    state_id: 4,
                    closing: closing(None, None, Some(ClosedBy::ServiceEnded)),
                }),
                Event::ServiceEnded(ServiceEnded {
                    service_id,
                    closing: closing(None, Some("resolved"), None),
                    abandoned: false,
                    expiry: None,
                }),
            ],
        }
    }
}

fn label(text: &str) -> JsonText {
    JsonText::from_value(&serde_json::Value::from(text))
}

/// The `services` document of a journey after each of its calls, in call order, as the
/// projection stores it (the size the raw baseline reads and rewrites).
pub fn documents(now: DateTime<Utc>) -> Vec<String> {
    let service_id = uuid::Uuid::new_v4().to_string();
    let customer = customer_id(0, 0);
    let mut doc: Option<ServiceDoc> = None;
    Call::ALL
        .iter()
        .map(|call| {
            for event in call.events(&service_id, &customer, now) {
                match (&mut doc, &event) {
                    (Some(doc), event) => doc.apply(event, now),
                    (None, Event::ServiceStarted(started)) => doc = Some(ServiceDoc::start(started, now)),
                    (None, _) => unreachable!("a journey starts with its service"),
                }
            }
            let doc = doc.as_ref().expect("the journey has started");
            serde_json::to_string(doc).expect("a service document serializes")
        })
        .collect()
}

/// The ids a journey has been given by the server so far.
#[derive(Debug, Default)]
pub struct Ids {
    service_id: String,
    /// The current state.
    state_id: u32,
    task_id: u32,
}

/// The fields of a lifecycle call's answer.
#[derive(Deserialize)]
struct Answer {
    service_id: Option<String>,
    state_id: Option<u32>,
    task_id: Option<u32>,
    previous_state_id: Option<u32>,
}

impl Ids {
    /// Takes the id `call` created from its answer `body`; fails when it is missing.
    fn take(&mut self, call: Call, body: &[u8]) -> Result<(), String> {
        if matches!(call, Call::EndTask | Call::EndService) {
            return Ok(());
        }
        let answer: Answer =
            serde_json::from_slice(body).map_err(|error| format!("unexpected answer: {error}"))?;
        let missing = |field: &str| format!("no {field} in the answer");
        match call {
            Call::StartService => self.service_id = answer.service_id.ok_or_else(|| missing("service_id"))?,
            Call::StartState => self.state_id = answer.state_id.ok_or_else(|| missing("state_id"))?,
            Call::StartTask => self.task_id = answer.task_id.ok_or_else(|| missing("task_id"))?,
            _ => {
                if answer.previous_state_id != Some(self.state_id) {
                    return Err(format!(
                        "previous_state_id {:?}, expected {}",
                        answer.previous_state_id, self.state_id
                    ));
                }
                self.state_id = answer.state_id.ok_or_else(|| missing("state_id"))?;
            }
        }
        Ok(())
    }
}

/// Client `client`'s loop: journey after journey, each call sent when the previous one
/// answered, until the window closes. A failed call is counted and abandons its journey.
pub async fn drive(addr: SocketAddr, api_key: Arc<str>, client: u32, window: Window) -> Tally {
    let mut connection = Client::new(addr);
    let mut tally = Tally::new(Call::ALL.len());
    let headers = [("maven-api-key", &*api_key)];
    'journeys: for journey in 0u64.. {
        let customer = customer_id(client, journey);
        let mut ids = Ids::default();
        for call in Call::ALL {
            let started = Instant::now();
            if started >= window.until {
                break 'journeys;
            }
            let (path, body) = call.request(&customer, &ids);
            let outcome = match connection
                .send(request(Method::POST, addr, &path, &headers, body.into()))
                .await
            {
                Ok((status, answer)) if status.is_success() => ids.take(call, &answer),
                Ok((status, answer)) => Err(format!("status {status}: {}", String::from_utf8_lossy(&answer))),
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(()) => tally.success(call.index(), &window, started, Instant::now()),
                Err(error) => {
                    tally.error(format!("{} (POST {path}): {error}", call.label()));
                    continue 'journeys;
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxd::domain::journeys::fields::{BodyKind, parse_body, parse_transition};
    use ctxd::domain::journeys::{Circumstances, ServiceCommand, decide_service};
    use serde_json::{Map, Value};

    fn command(call: Call, body: &str) -> ServiceCommand {
        let object: Map<String, Value> = serde_json::from_str(body).unwrap();
        let parse = |kind| parse_body(object.clone(), kind).unwrap();
        match call {
            Call::StartService => ServiceCommand::Start { body: parse(BodyKind::ServiceStart) },
            Call::StartState => ServiceCommand::StartState { body: parse(BodyKind::StateStart) },
            Call::StartTask => ServiceCommand::StartTask { body: parse(BodyKind::TaskStart) },
            Call::EndTask => ServiceCommand::EndTask { task_id: 1, body: parse(BodyKind::TaskEnd) },
            Call::ToQueue | Call::ToAgent | Call::ToWrapup => {
                let (from_state_id, end, start) = parse_transition(object.clone()).unwrap();
                ServiceCommand::Transition { from_state_id, end, start }
            }
            Call::EndService => ServiceCommand::End { body: parse(BodyKind::ServiceEnd) },
        }
    }

    /// The events the raw baseline writes are the ones the domain decides for the bodies the
    /// HTTP clients send.
    #[test]
    fn the_events_are_those_the_domain_decides_for_the_requests() {
        let now = Utc::now();
        let (service_id, customer) = ("0b7f0c8e-5d2a-4f7e-9a51-3c2d1e0f9a8b", customer_id(3, 7));
        let mut doc: Option<ServiceDoc> = None;
        let mut ids = Ids { service_id: service_id.to_string(), ..Ids::default() };
        let settings = ctxd::domain::journeys::JourneySettings::default();
        let at = Circumstances { now, settings: &settings };
        let mut total = 0;
        for call in Call::ALL {
            let (_, body) = call.request(&customer, &ids);
            let decided = decide_service(doc.as_ref(), service_id, &command(call, &body), at).unwrap();
            assert_eq!(decided, call.events(service_id, &customer, now), "{}", call.label());
            for event in &decided {
                match (&mut doc, event) {
                    (Some(doc), event) => doc.apply(event, now),
                    (None, Event::ServiceStarted(started)) => doc = Some(ServiceDoc::start(started, now)),
                    (None, _) => panic!("no service"),
                }
                match event {
                    Event::StateStarted(started) => ids.state_id = started.state_id,
                    Event::TaskStarted(started) => ids.task_id = started.task_id,
                    _ => {}
                }
            }
            total += decided.len();
        }
        assert_eq!(total, 12);
        assert!(!doc.unwrap().is_active());
    }

    #[test]
    fn documents_grow_with_the_journey() {
        let documents = documents(Utc::now());
        assert_eq!(documents.len(), Call::ALL.len());
        assert!(documents.windows(2).all(|pair| pair[0].len() <= pair[1].len()));
    }
}
