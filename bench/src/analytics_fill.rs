//! The analytics store: N customer journeys through a contact centre, decided by the domain's own
//! `decide_service` and written through the live code path (`log::append` + `projections::apply`
//! on `SqlTables`, the analytics counters included), in large transactions, as the writer
//! would record them over HTTP.
//!
//! The journeys are simulated in server-time order (a queue of each journey's next call), so the
//! log interleaves them as a live contact centre would and `recorded_at` never goes back. Each
//! journey starts at a client time in a 30-day window, more of them in the daytime, as one of
//! 3 service types on voice or chat, and follows one of ten paths of 2–6 states over 8 state
//! types (some switching media at the agent). Its outcome: ~60% resolved, ~15% ended by the
//! customer (`customer_hangup`, an abandonment disposition), ~15% auto-completed by the sweeper
//! (`auto_complete_after`, then a `Sweep` past it), ~10% left active (never due for the server's
//! sweeper: no `auto_complete_after`, no TTL). The non-resolved ones stop at a drop-off state
//! drawn mostly from `queue` and `offering_callback`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use ctxd::app::BoxError;
use ctxd::domain::Event;
use ctxd::domain::events::{JsonText, Properties};
use ctxd::domain::journeys::fields::Body;
use ctxd::domain::journeys::service::ServiceDoc;
use ctxd::domain::journeys::{Circumstances, JourneySettings, ServiceCommand, decide_service};
use ctxd::projections;
use ctxd::projections::tables::{PendingCounts, SqlTables};
use ctxd::store::EventMeta;
use ctxd::store::chain;
use ctxd::store::db::Connection;
use ctxd::store::log::{self, RecordedEvent};
use serde_json::Value;

use crate::rebuild::SplitMix64;
use crate::workload::{ACCOUNT, meta};

/// Events per transaction of the fill (a transaction ends between two commands).
pub const FILL_TRANSACTION: u64 = 50_000;
/// Days of client time the journeys start in.
pub const DAYS: i64 = 30;
/// Distinct customers the services are spread over.
const CUSTOMERS: u64 = 400_000;
/// `auto_complete_after` of the services that carry one: 30 minutes of inactivity.
const AUTO_COMPLETE_AFTER_S: u64 = 1800;

/// Service types and their weights.
pub const SERVICE_TYPES: &[(&str, u64)] = &[("billing", 45), ("tech_support", 35), ("sales", 20)];
/// What the customer called about, kept as a service extension on half of the services.
const INTENTS: &[&str] = &["payment", "dispute", "outage", "upgrade", "cancel", "address_change"];

/// Start media and their weights.
const MEDIA: &[(&str, u64)] = &[("voice", 62), ("chat", 38)];

/// The full paths of journeys started on voice, with their weights.
const VOICE_PATHS: &[(&[&str], u64)] = &[
    (&["ivr", "identification", "queue", "agent"], 30),
    (&["ivr", "queue", "agent"], 22),
    (&["ivr", "identification", "queue", "offering_callback", "callback_pending", "agent"], 10),
    (&["ivr", "queue", "offering_callback", "queue", "agent", "survey"], 8),
    (&["ivr", "identification", "queue", "agent", "wrapup"], 10),
    // Self-service: resolved in the IVR.
    (&["ivr", "identification"], 20),
];
/// The full paths of journeys started on chat, with their weights.
const CHAT_PATHS: &[(&[&str], u64)] = &[
    (&["queue", "agent"], 45),
    (&["identification", "queue", "agent"], 25),
    (&["queue", "agent", "survey"], 15),
    // The agent calls the customer back: the journey moves to voice.
    (&["queue", "offering_callback", "callback_pending", "agent"], 15),
];

/// Where a journey that does not finish stops, by state type: mostly waiting.
const DROPOFF_WEIGHTS: &[(&str, u64)] = &[
    ("queue", 45),
    ("offering_callback", 50),
    ("ivr", 8),
    ("identification", 7),
    ("callback_pending", 6),
    ("agent", 6),
    ("survey", 2),
    ("wrapup", 1),
];
/// Where a journey still in progress is, by state type.
const CURRENT_WEIGHTS: &[(&str, u64)] = &[
    ("queue", 30),
    ("agent", 30),
    ("ivr", 10),
    ("identification", 10),
    ("callback_pending", 10),
    ("offering_callback", 5),
    ("survey", 3),
    ("wrapup", 2),
];

/// Relative weight of each hour of the day (UTC) for journey starts: a contact centre's day.
const HOUR_WEIGHTS: [u64; 24] =
    [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 12, 13, 14, 13, 12, 10, 8, 6, 4, 3, 2, 1];

/// How a journey ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Through its whole path, then ended with disposition `resolved`.
    Resolved,
    /// Ended by the customer at its drop-off state: disposition `customer_hangup`.
    Hangup,
    /// Idle at its drop-off state until the sweeper completed it.
    AutoCompleted,
    /// Still in progress.
    Active,
}

const OUTCOMES: &[(Outcome, u64)] =
    &[(Outcome::Resolved, 60), (Outcome::Hangup, 15), (Outcome::AutoCompleted, 15), (Outcome::Active, 10)];

/// What the fill wrote.
#[derive(Debug, Clone, Default)]
pub struct FillStats {
    pub services: u64,
    pub events: u64,
    pub commands: u64,
    pub resolved: u64,
    pub hangups: u64,
    pub auto_completed: u64,
    pub active: u64,
    /// States started, over all services.
    pub states: u64,
    /// Services whose media changed during the journey.
    pub switched_media: u64,
}

/// One step of a journey's path.
#[derive(Debug, Clone)]
struct Step {
    state_type: &'static str,
    media: &'static str,
}

/// A journey in flight: its service as its events left it, and its calls still to come in
/// server time order (last first).
struct Journey {
    service_id: String,
    doc: Option<ServiceDoc>,
    version: u64,
    calls: Vec<(i64, ServiceCommand)>,
}

/// Millisecond timestamps as times.
fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("bench times are in range")
}

pub fn label(text: &str) -> JsonText {
    JsonText::from_value(&Value::from(text))
}

fn channel(media: Option<&str>) -> Properties {
    media.map(|media| Properties::from([("media_type".to_string(), label(media))])).unwrap_or_default()
}

/// A body as the HTTP layer parses it from `{"timestamp": …, "media_type": …}`.
fn body(client_ms: i64, media: Option<&str>) -> Body {
    Body { timestamp: Some(time(client_ms)), channel: channel(media), ..Body::default() }
}

/// The generator: start times, paths and outcomes, and the queue of calls due.
pub struct Simulation {
    random: SplitMix64,
    /// Client start times (ms) of the journeys not started yet, latest first.
    starts: Vec<i64>,
    /// Journeys in flight by number, and (server ms of their next call, number), soonest first.
    journeys: HashMap<u64, Journey>,
    due: BinaryHeap<Reverse<(i64, u64)>>,
    started: u64,
    pub stats: FillStats,
}

impl Simulation {
    /// `services` journeys starting in the `DAYS` days from `window_start`.
    pub fn new(services: u64, window_start: DateTime<Utc>) -> Simulation {
        let mut random = SplitMix64(0xa7a1_7105);
        let day_ms = 86_400_000;
        let hour_total: u64 = HOUR_WEIGHTS.iter().sum();
        let base = window_start.timestamp_millis();
        let mut starts: Vec<i64> = (0..services)
            .map(|_| {
                let day = random.below(DAYS as u64) as i64;
                let mut pick = random.below(hour_total);
                let hour = HOUR_WEIGHTS
                    .iter()
                    .position(|weight| {
                        let inside = pick < *weight;
                        pick = pick.saturating_sub(*weight);
                        inside
                    })
                    .unwrap_or(0) as i64;
                base + day * day_ms + hour * 3_600_000 + random.below(3_600_000) as i64
            })
            .collect();
        starts.sort_unstable_by(|a, b| b.cmp(a));
        Simulation {
            random,
            starts,
            journeys: HashMap::new(),
            due: BinaryHeap::new(),
            started: 0,
            stats: FillStats::default(),
        }
    }

    fn pick<T: Copy>(&mut self, weighted: &[(T, u64)]) -> T {
        let total: u64 = weighted.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.random.below(total);
        for (item, weight) in weighted {
            if pick < *weight {
                return *item;
            }
            pick -= weight;
        }
        unreachable!("pick is below the total")
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.random.below(100) < percent
    }

    /// `low..high` seconds, skewed towards `low`, in milliseconds.
    fn seconds(&mut self, low: u64, high: u64) -> i64 {
        let unit = self.random.below(1_000_000) as f64 / 1_000_000.0;
        ((low as f64 + (high - low) as f64 * unit * unit) * 1000.0) as i64
    }

    /// Time spent in a state of `state_type` before the next call.
    fn dwell(&mut self, state_type: &str) -> i64 {
        let (low, high) = match state_type {
            "ivr" => (20, 120),
            "identification" => (10, 90),
            "queue" => (5, 900),
            "offering_callback" => (8, 45),
            "callback_pending" => (180, 1500),
            "agent" => (60, 1200),
            "survey" => (15, 120),
            _ => (20, 180),
        };
        self.seconds(low, high)
    }

    /// The estimated duration a state may announce.
    fn est_duration(&mut self, state_type: &str) -> Option<u64> {
        let (percent, seconds) = match state_type {
            "ivr" => (70, 45),
            "queue" => (75, 30 + self.random.below(570)),
            "offering_callback" => (50, 20),
            "callback_pending" => (60, 900),
            "agent" => (30, 300),
            _ => (0, 0),
        };
        self.chance(percent).then_some(seconds)
    }

    /// Network and queueing time between the client's timestamp and the server's clock.
    fn latency(&mut self) -> i64 {
        10 + self.random.below(140) as i64
    }

    /// A path for a journey started on `media`, with the media of each state.
    fn path(&mut self, media: &'static str) -> Vec<Step> {
        let (paths, other) = if media == "voice" { (VOICE_PATHS, "chat") } else { (CHAT_PATHS, "voice") };
        let types = self.pick(paths);
        // The callback path of a chat is a phone call; otherwise some customers move channel
        // when an agent takes them (voice to chat more often than chat to voice).
        let switch = (media == "chat" && types.contains(&"callback_pending"))
            || self.chance(if media == "voice" { 12 } else { 4 });
        let mut current = media;
        types
            .iter()
            .map(|&state_type| {
                if state_type == "agent" && switch {
                    current = other;
                }
                Step { state_type, media: current }
            })
            .collect()
    }

    /// The index of the path's state where a journey that does not finish stops.
    fn stop(&mut self, path: &[Step], weights: &[(&str, u64)]) -> usize {
        let weight = |step: &Step| weights.iter().find(|(t, _)| *t == step.state_type).map_or(1, |(_, w)| *w);
        let total: u64 = path.iter().map(weight).sum();
        let mut pick = self.random.below(total);
        for (index, step) in path.iter().enumerate() {
            if pick < weight(step) {
                return index;
            }
            pick -= weight(step);
        }
        unreachable!("pick is below the total")
    }

    /// Plans a journey starting at client time `start_ms`: its calls, each with its server time.
    fn plan(&mut self, start_ms: i64) -> Journey {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.random.next().to_le_bytes());
        id[8..].copy_from_slice(&self.random.next().to_le_bytes());
        let service_id = uuid::Builder::from_random_bytes(id).into_uuid().to_string();
        let service_type = self.pick(SERVICE_TYPES);
        let media = self.pick(MEDIA);
        let outcome = self.pick(OUTCOMES);
        let mut path = self.path(media);
        match outcome {
            Outcome::Resolved => {}
            // A few customers hang up before the first state.
            Outcome::Hangup if self.chance(2) => path.clear(),
            Outcome::Hangup | Outcome::AutoCompleted => {
                let stop = self.stop(&path, DROPOFF_WEIGHTS);
                path.truncate(stop + 1);
            }
            Outcome::Active => {
                let stop = self.stop(&path, CURRENT_WEIGHTS);
                path.truncate(stop + 1);
            }
        }
        let stats = &mut self.stats;
        match outcome {
            Outcome::Resolved => stats.resolved += 1,
            Outcome::Hangup => stats.hangups += 1,
            Outcome::AutoCompleted => stats.auto_completed += 1,
            Outcome::Active => stats.active += 1,
        }
        stats.states += path.len() as u64;
        stats.switched_media += u64::from(path.iter().any(|step| step.media != media));

        let mut calls: Vec<(i64, i64, ServiceCommand)> = Vec::new();
        let mut start = body(start_ms, Some(media));
        start.item_type = Some(label(service_type));
        start.customer_id = Some(format!("cust-{:07}", self.random.below(CUSTOMERS)));
        start.auto_complete_after = match outcome {
            Outcome::AutoCompleted => Some(AUTO_COMPLETE_AFTER_S),
            Outcome::Resolved | Outcome::Hangup if self.chance(40) => Some(AUTO_COMPLETE_AFTER_S),
            _ => None,
        };
        if self.chance(50) {
            let intent = INTENTS[self.random.below(INTENTS.len() as u64) as usize];
            start.extensions.insert("intent".to_string(), label(intent));
        }
        calls.push((start_ms, self.latency(), ServiceCommand::Start { body: start }));
        let mut at = start_ms;
        let mut previous: Option<&Step> = None;
        for (index, step) in path.iter().enumerate() {
            let mut begin = body(0, Some(step.media));
            begin.item_type = Some(label(step.state_type));
            begin.est_duration = self.est_duration(step.state_type);
            let command = match previous {
                None => {
                    at += self.seconds(1, 4);
                    begin.timestamp = Some(time(at));
                    ServiceCommand::StartState { body: begin }
                }
                Some(from) => {
                    at += self.dwell(from.state_type);
                    begin.timestamp = Some(time(at));
                    let mut end = body(at, Some(step.media));
                    end.disposition = Some(label(disposition(from.state_type, step.state_type)));
                    ServiceCommand::Transition { from_state_id: index as u32, end, start: begin }
                }
            };
            calls.push((at, self.latency(), command));
            previous = Some(step);
        }
        let last_state = path.len() as u32;
        match outcome {
            Outcome::Resolved => {
                at += path.last().map_or(0, |step| self.dwell(step.state_type));
                if self.chance(50) {
                    let mut end = body(at, None);
                    end.disposition = Some(label("done"));
                    calls.push((
                        at,
                        self.latency(),
                        ServiceCommand::EndState { state_id: last_state, body: end },
                    ));
                    at += self.seconds(1, 5);
                }
                let mut end = body(at, None);
                end.disposition = Some(label("resolved"));
                calls.push((at, self.latency(), ServiceCommand::End { body: end }));
            }
            Outcome::Hangup => {
                at += match path.last() {
                    Some(step) => self.dwell(step.state_type),
                    None => self.seconds(2, 20),
                };
                let mut end = body(at, None);
                end.disposition = Some(label("customer_hangup"));
                calls.push((at, self.latency(), ServiceCommand::End { body: end }));
            }
            Outcome::AutoCompleted | Outcome::Active => {}
        }
        // Server times: each client call plus its latency, then the sweeper's pass, which comes
        // after `auto_complete_after` of inactivity (counted from the last server time) and
        // within its interval.
        let mut timed: Vec<(i64, ServiceCommand)> =
            calls.into_iter().map(|(client, latency, command)| (client + latency, command)).collect();
        if outcome == Outcome::AutoCompleted {
            let last = timed.last().map_or(start_ms, |(server, _)| *server);
            let sweep = last + AUTO_COMPLETE_AFTER_S as i64 * 1000 + self.seconds(0, 60);
            timed.push((sweep, ServiceCommand::Sweep));
        }
        timed.reverse();
        Journey { service_id, doc: None, version: 0, calls: timed }
    }

    /// The next call due, in server time order: the journey's number, its server time and the
    /// command. `None` when every journey has made its last call.
    fn next_call(&mut self) -> Option<(u64, i64, ServiceCommand)> {
        // Starting a journey plans it and queues its first call (at its start time plus latency),
        // which sorts it among the calls of the journeys in flight.
        while let Some(&start) = self.starts.last()
            && self.due.peek().is_none_or(|Reverse((server, _))| start <= *server)
        {
            self.starts.pop();
            let number = self.started;
            self.started += 1;
            self.stats.services += 1;
            let journey = self.plan(start);
            let first = journey.calls.last().map(|(server, _)| *server).expect("a journey starts");
            self.journeys.insert(number, journey);
            self.due.push(Reverse((first, number)));
        }
        let Reverse((server, number)) = self.due.pop()?;
        let journey = self.journeys.get_mut(&number).expect("a due journey is in flight");
        let (_, command) = journey.calls.pop().expect("a due journey has a call");
        if let Some((next, _)) = journey.calls.last() {
            self.due.push(Reverse((*next, number)));
        }
        Some((number, server, command))
    }
}

/// The disposition a state ends with when the journey moves on from `from` to `to`.
fn disposition(from: &str, to: &str) -> &'static str {
    match (from, to) {
        ("ivr", _) => "menu_selected",
        ("identification", _) => "identified",
        ("queue", "offering_callback") => "callback_offered",
        ("queue", _) => "answered",
        ("offering_callback", "callback_pending") => "accepted",
        ("offering_callback", _) => "declined",
        ("callback_pending", _) => "called_back",
        ("agent", _) => "handled",
        _ => "done",
    }
}

/// Fills the store behind `conn` with `services` journeys starting in the `DAYS` days from
/// `window_start`, the first event taking the next `seq`. Returns what it wrote.
pub fn fill(
    conn: &mut Connection,
    services: u64,
    window_start: DateTime<Utc>,
) -> Result<FillStats, BoxError> {
    let mut simulation = Simulation::new(services, window_start);
    let settings = projections::journeys::journey_settings(conn, ACCOUNT)?;
    let sweeper_settings = JourneySettings::default();
    let sweeper_meta = serde_json::to_string(&EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        idempotency_key: None,
        actor: "system:sweeper".to_string(),
        ..EventMeta::default()
    })?;
    let (mut next_id, mut next_seq) = (log::last_id(conn)? + 1, log::last_seq(conn, ACCOUNT)? + 1);
    let mut done = false;
    while !done {
        let tx = conn.transaction()?;
        let mut previous = chain::head(&tx, ACCOUNT)?.map_or(chain::GENESIS, |head| head.hash);
        let mut in_transaction = 0;
        // As the writer does: counter deltas written once per row before the commit.
        let mut counts = PendingCounts::default();
        while in_transaction < FILL_TRANSACTION {
            let Some((number, server_ms, command)) = simulation.next_call() else {
                done = true;
                break;
            };
            let journey = simulation.journeys.get_mut(&number).expect("the call's journey is in flight");
            let now = time(server_ms);
            let sweep = command == ServiceCommand::Sweep;
            // The writer decides a sweep with the default settings, a call with the account's.
            let at = Circumstances { now, settings: if sweep { &sweeper_settings } else { &settings } };
            let events = decide_service(journey.doc.as_ref(), &journey.service_id, &command, at)
                .map_err(|error| format!("service {}: {command:?} refused: {error}", journey.service_id))?;
            let meta = if sweep { sweeper_meta.clone() } else { meta() };
            // As the writer does: a call's projection starts from the service its decision
            // loaded; the sweeper's does not.
            let mut tables = match (&journey.doc, sweep) {
                (Some(doc), false) => SqlTables::with_service(&tx, ACCOUNT, doc.clone()),
                _ => SqlTables::new(&tx),
            };
            for event in events {
                journey.version += 1;
                let recorded = RecordedEvent {
                    id: next_id,
                    seq: next_seq,
                    account: ACCOUNT.to_string(),
                    stream: event.stream(ACCOUNT),
                    stream_version: journey.version,
                    event,
                    meta: meta.clone(),
                    recorded_at: now,
                };
                previous = log::append(&tx, &recorded, &previous)?;
                projections::apply(&mut tables, &recorded)?;
                match (&mut journey.doc, &recorded.event) {
                    (Some(doc), event) => doc.apply(event, now),
                    (None, Event::ServiceStarted(started)) => {
                        journey.doc = Some(ServiceDoc::start(started, now))
                    }
                    (None, event) => return Err(format!("{event:?} before its service started").into()),
                }
                (next_id, next_seq) = (next_id + 1, next_seq + 1);
                in_transaction += 1;
            }
            counts.merge(tables.finish()?);
            simulation.stats.commands += 1;
            if journey.calls.is_empty() {
                simulation.journeys.remove(&number);
            }
        }
        counts.write(&tx)?;
        tx.commit()?;
        simulation.stats.events += in_transaction;
    }
    Ok(simulation.stats)
}

/// The first hour of the window: midnight UTC `DAYS + 1` days ago, so that every journey
/// (the longest last about two hours) ended before now.
pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    midnight - TimeDelta::days(DAYS + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxd::domain::journeys::fields::{BodyKind, parse_body, parse_transition};
    use serde_json::{Map, json};

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// The bodies the fill builds are those the HTTP layer parses from the equivalent requests.
    #[test]
    fn bodies_are_those_the_api_parses() {
        let at = "2026-11-20T10:00:00.250Z";
        let ms = DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis();
        let mut start = body(ms, Some("voice"));
        start.item_type = Some(label("billing"));
        start.customer_id = Some("cust-0000042".to_string());
        start.auto_complete_after = Some(AUTO_COMPLETE_AFTER_S);
        start.extensions.insert("intent".to_string(), label("payment"));
        let parsed = json!({"timestamp": at, "media_type": "voice", "service_type": "billing",
                            "customer_id": "cust-0000042", "auto_complete_after": 1800, "intent": "payment"});
        assert_eq!(start, parse_body(object(parsed), BodyKind::ServiceStart).unwrap());

        let mut state = body(ms, Some("chat"));
        state.item_type = Some(label("queue"));
        state.est_duration = Some(120);
        let mut end = body(ms, Some("chat"));
        end.disposition = Some(label("menu_selected"));
        let transition = json!({"from": {"state_id": 1, "disposition": "menu_selected"},
                                "to": {"state_type": "queue", "est_duration": 120},
                                "timestamp": at, "media_type": "chat"});
        assert_eq!((1, end, state), parse_transition(object(transition)).unwrap());

        let mut hangup = body(ms, None);
        hangup.disposition = Some(label("customer_hangup"));
        let parsed = json!({"timestamp": at, "disposition": "customer_hangup"});
        assert_eq!(hangup, parse_body(object(parsed), BodyKind::ServiceEnd).unwrap());
    }

    /// Every call of a few thousand journeys is accepted by the domain, in server time order,
    /// and the outcomes come out near the intended mix.
    #[test]
    fn journeys_are_accepted_and_end_as_planned() {
        let mut simulation = Simulation::new(5_000, window_start(Utc::now()));
        let settings = JourneySettings::default();
        let mut docs: HashMap<u64, Option<ServiceDoc>> = HashMap::new();
        let mut last_server = i64::MIN;
        let (mut ended, mut abandoned, mut auto_completed) = (0, 0, 0);
        while let Some((number, server, command)) = simulation.next_call() {
            assert!(server >= last_server, "calls come in server time order");
            last_server = server;
            let service_id = simulation.journeys[&number].service_id.clone();
            let doc = docs.entry(number).or_default();
            let now = time(server);
            let events = decide_service(
                doc.as_ref(),
                &service_id,
                &command,
                Circumstances { now, settings: &settings },
            )
            .unwrap();
            assert!(!events.is_empty(), "{command:?} records something");
            for event in &events {
                match event {
                    Event::ServiceStarted(started) => *doc = Some(ServiceDoc::start(started, now)),
                    Event::ServiceEnded(e) => {
                        ended += 1;
                        abandoned += u64::from(e.abandoned);
                    }
                    Event::ServiceAutoCompleted(_) => auto_completed += 1,
                    _ => {}
                }
                if !matches!(event, Event::ServiceStarted(_)) {
                    doc.as_mut().unwrap().apply(event, now);
                }
            }
            if simulation.journeys[&number].calls.is_empty() {
                simulation.journeys.remove(&number);
            }
        }
        let stats = &simulation.stats;
        assert_eq!(stats.services, 5_000);
        assert_eq!(ended, stats.resolved + stats.hangups);
        assert_eq!(abandoned, stats.hangups);
        assert_eq!(auto_completed, stats.auto_completed);
        let active = docs.values().filter(|doc| doc.as_ref().unwrap().is_active()).count() as u64;
        assert_eq!(active, stats.active);
        assert!((2_800..3_200).contains(&stats.resolved), "{stats:?}");
        assert!(simulation.journeys.values().all(|journey| journey.calls.is_empty()));
    }
}
