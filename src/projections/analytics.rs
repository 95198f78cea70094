//! Journey analytics (docs/ANALYTICS.md): counters per cohort and state type, maintained as a
//! service's events are applied, so queries sum a few rows per state type and hour. The rules
//! that decide what counts (drop-off point, onward, channel switch) live here and only here.

use serde_json::{Value, json};

use super::tables::Tables;
use crate::domain::Event;
use crate::domain::erasure;
use crate::domain::journeys::events::ClosedBy;
use crate::domain::journeys::fields::STEP_MARKERS;
use crate::domain::journeys::service::{ServiceDoc, StateDoc, label_key, media_key};
use crate::store::StoreError;

/// The step before a service's first state, and the two ends of a service.
/// (No state may take these names: `fields::STEP_MARKERS`.)
pub const START: &str = STEP_MARKERS[0];
pub const COMPLETED: &str = STEP_MARKERS[1];
pub const ABANDONED: &str = STEP_MARKERS[2];
/// The drop-off point of a service abandoned before it entered any state.
pub const BEFORE_FIRST_STATE: &str = STEP_MARKERS[3];

/// Upper bounds, in seconds, of the buckets of the time-in-state histogram; a last bucket holds
/// everything longer. Medians and p90s are reported as the bound of the bucket they fall in.
pub const DURATION_BOUNDS_S: &[u64] = &[
    1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 7200,
    14400, 28800, 86400,
];

/// The histogram bucket of a time in state or to reach a step.
pub fn duration_bucket(duration_ms: i64) -> usize {
    DURATION_BOUNDS_S
        .iter()
        .position(|bound| duration_ms <= (*bound as i64) * 1000)
        .unwrap_or(DURATION_BOUNDS_S.len())
}

/// The counter tables, their key columns (after `account_id`) and their counter columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Counter {
    Services,
    States,
    Transitions,
    Paths,
}

impl Counter {
    pub const ALL: [Counter; 4] = [Counter::Services, Counter::States, Counter::Transitions, Counter::Paths];

    /// The table of this counter's rows at `grain`.
    pub fn table(self, grain: Grain) -> &'static str {
        match (self, grain) {
            (Counter::Services, Grain::Hour) => "analytics_services",
            (Counter::States, Grain::Hour) => "analytics_states",
            (Counter::Transitions, Grain::Hour) => "analytics_transitions",
            (Counter::Paths, Grain::Hour) => "analytics_paths",
            (Counter::Services, Grain::Day) => "analytics_services_days",
            (Counter::States, Grain::Day) => "analytics_states_days",
            (Counter::Transitions, Grain::Day) => "analytics_transitions_days",
            (Counter::Paths, Grain::Day) => "analytics_paths_days",
        }
    }

    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Counter::Services => &["service_type", "hour", "media_type"],
            Counter::States => &["service_type", "hour", "media_type", "state_type"],
            Counter::Transitions => &["service_type", "hour", "media_type", "from_type", "to_type"],
            Counter::Paths => &["service_type", "hour", "media_type", "path"],
        }
    }

    pub fn values(self) -> &'static [&'static str] {
        match self {
            Counter::Services => &["started", "completed", "abandoned"],
            // The histogram's columns last, on lines of their own.
            #[rustfmt::skip]
            Counter::States => &[
                "entered", "onward", "abandoned", "timed", "duration_ms", "estimated", "est_duration_s",
                "est_actual_ms",
                "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12", "d13",
                "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25",
            ],
            Counter::Transitions => &["count", "channel_switches"],
            Counter::Paths => &[
                "reached", "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
                "r13", "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23", "r24", "r25",
            ],
        }
    }

    /// The counter columns of a histogram with one column per bucket of `duration_bucket`:
    /// time in state for `States`, time from the service's start for `Paths`.
    pub fn histogram(self) -> &'static [&'static str] {
        let values = self.values();
        &values[values.len() - HISTOGRAM_BUCKETS..]
    }
}

/// How finely a counter table cuts time: by the hour its cohort started (the rows the
/// projection counts into), or by the day (their sums, which the writer keeps beside them so
/// that a query over whole days reads a row per day instead of 24). The key column is `hour`
/// at both grains: `YYYY-MM-DDTHH`, or the day `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Grain; 2] = [Grain::Hour, Grain::Day];
}

/// The day an hour key falls in: `2026-11-22T10` → `2026-11-22` (its text up to the `T`, as
/// migration 0021 computes it in SQL).
pub fn day_of(hour: &str) -> &str {
    hour.split_once('T').map_or(hour, |(day, _)| day)
}

/// Buckets of a histogram: one per bound, and one for everything longer.
pub const HISTOGRAM_BUCKETS: usize = DURATION_BOUNDS_S.len() + 1;

/// The longest time in state the sums count: 100 years. Client timestamps may lie 10,000 years
/// apart; counting such a state whole would let a few thousand of them overflow a sum.
const MAX_COUNTED_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// How many of a journey's first states funnels follow.
pub const FUNNEL_DEPTH: usize = 12;

/// An abandoned service as the `abandoned` list shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AbandonedRow {
    pub ended_at: String,
    pub service_id: String,
    pub service_type: String,
    pub hour: String,
    pub media_type: String,
    pub state_type: String,
    /// JSON.
    pub detail: String,
}

/// Named deltas for one counter row, in `Counter::values` order.
fn deltas(counter: Counter, named: &[(&str, i64)]) -> Vec<i64> {
    counter.values().iter().map(|v| named.iter().find(|(n, _)| n == v).map_or(0, |(_, d)| *d)).collect()
}

fn add(
    tables: &mut impl Tables,
    account: &str,
    doc: &ServiceDoc,
    counter: Counter,
    extra_keys: &[&str],
    named: &[(&str, i64)],
) -> Result<(), StoreError> {
    let c = &doc.cohort;
    let mut keys = vec![c.service_type.as_str(), c.hour.as_str(), c.media_type.as_str()];
    keys.extend_from_slice(extra_keys);
    tables.add_counts(account, counter, &keys, &deltas(counter, named))
}

/// A new service: counted as started in its cohort.
pub fn service_started(tables: &mut impl Tables, account: &str, doc: &ServiceDoc) -> Result<(), StoreError> {
    add(tables, account, doc, Counter::Services, &[], &[("started", 1)])
}

/// The state a state follows: its `previous_state_id`, else the one started before it.
fn predecessor(doc: &ServiceDoc, index: usize) -> Option<&StateDoc> {
    match doc.states[index].previous_state_id {
        Some(id) => doc.state(id),
        None => index.checked_sub(1).map(|i| &doc.states[i]),
    }
}

fn has_successor(doc: &ServiceDoc, state_id: u32) -> bool {
    (0..doc.states.len()).any(|i| predecessor(doc, i).is_some_and(|p| p.state_id == state_id))
}

fn state_type(state: &StateDoc) -> String {
    label_key(state.state_type.as_ref())
}

/// Counts what `event` does to the service `before` (the service as it was before the event).
pub fn apply(
    tables: &mut impl Tables,
    account: &str,
    before: &ServiceDoc,
    event: &Event,
    recorded_at: &str,
) -> Result<(), StoreError> {
    match event {
        Event::StateStarted(e) => {
            let to = label_key(e.state_type.as_ref());
            let predecessor = match e.previous_state_id {
                Some(id) => before.state(id),
                None => before.states.last(),
            };
            let (from, from_media) = match predecessor {
                Some(p) => (state_type(p), media_key(&p.life.started)),
                // The channel the service started on: an association may add one later.
                None => (START.to_string(), before.cohort.media_type.clone()),
            };
            let media = media_key(&e.opening.started);
            let switched = i64::from(!media.is_empty() && !from_media.is_empty() && media != from_media);
            add(tables, account, before, Counter::States, &[&to], &[("entered", 1)])?;
            add(
                tables,
                account,
                before,
                Counter::Transitions,
                &[&from, &to],
                &[("count", 1), ("channel_switches", switched)],
            )?;
            if let Some(p) = predecessor.filter(|p| !has_successor(before, p.state_id)) {
                add(tables, account, before, Counter::States, &[&state_type(p)], &[("onward", 1)])?;
            }
            if before.states.len() < FUNNEL_DEPTH {
                let mut path: Vec<String> = before.states.iter().map(state_type).collect();
                path.push(to);
                let path = serde_json::to_string(&path).expect("strings serialize");
                let since_start = e.opening.started.timestamp - before.life.started.timestamp;
                let bucket = Counter::Paths.histogram()[duration_bucket(since_start.num_milliseconds())];
                add(tables, account, before, Counter::Paths, &[&path], &[("reached", 1), (bucket, 1)])?;
            }
            Ok(())
        }
        Event::StateEnded(e) if e.closing.closed_by.is_none() => {
            let Some(state) = before.state(e.state_id) else { return Ok(()) };
            let ms = (e.closing.completed.timestamp - state.life.started.timestamp)
                .num_milliseconds()
                .clamp(0, MAX_COUNTED_MS);
            let kind = state_type(state);
            let (estimated, est_s, est_actual) = match state.life.est_duration {
                Some(est) => (1, i64::try_from(est).unwrap_or(i64::MAX).min(MAX_COUNTED_MS / 1000), ms),
                None => (0, 0, 0),
            };
            let named = [
                ("timed", 1),
                ("duration_ms", ms),
                ("estimated", estimated),
                ("est_duration_s", est_s),
                ("est_actual_ms", est_actual),
                (Counter::States.histogram()[duration_bucket(ms)], 1),
            ];
            add(tables, account, before, Counter::States, &[&kind], &named)
        }
        Event::ServiceEnded(e) => {
            let how = if e.abandoned { "ended with an abandonment disposition" } else { "ended" };
            let disposition = e.closing.disposition.as_ref().map(|d| label_key(Some(d)));
            let left = Left { how, disposition, at: e.closing.completed.timestamp, recorded_at };
            end(tables, account, before, e.abandoned, left)
        }
        // The customer left with the last activity; the sweeper noticed later.
        Event::ServiceAutoCompleted(e) => {
            let left = Left { how: "auto_completed", disposition: None, at: e.idle_since, recorded_at };
            end(tables, account, before, true, left)
        }
        Event::ServiceExpired(e) if before.is_active() => {
            let left = Left { how: "expired", disposition: None, at: e.expired_at, recorded_at };
            end(tables, account, before, true, left)
        }
        _ => Ok(()),
    }
}

/// The drop-off point of a service that ends now: the most recently started state that was
/// open (or closed by this very end), else the most recently completed state.
pub fn dropoff_point(before: &ServiceDoc) -> Option<&StateDoc> {
    let closed_by_end = |s: &&StateDoc| {
        s.life.is_active()
            || matches!(s.life.closed_by, Some(ClosedBy::ServiceEnded | ClosedBy::ServiceAutoCompleted))
    };
    let open =
        before.states.iter().filter(closed_by_end).max_by_key(|s| (s.life.started.timestamp, s.state_id));
    open.or_else(|| {
        let completed =
            before.states.iter().filter_map(|s| s.life.completed.as_ref().map(|c| (c.timestamp, s)));
        completed.max_by_key(|(at, s)| (*at, s.state_id)).map(|(_, s)| s)
    })
}

/// How and when a service ended.
struct Left<'a> {
    how: &'a str,
    disposition: Option<String>,
    /// When the customer left: the end's client time (the last activity for an auto-completion).
    at: chrono::DateTime<chrono::Utc>,
    /// When the store recorded it.
    recorded_at: &'a str,
}

fn end(
    tables: &mut impl Tables,
    account: &str,
    before: &ServiceDoc,
    abandoned: bool,
    left: Left<'_>,
) -> Result<(), StoreError> {
    if !abandoned {
        add(tables, account, before, Counter::Services, &[], &[("completed", 1)])?;
        let last = before.states.iter().max_by_key(|s| (s.life.started.timestamp, s.state_id));
        let from = last.map_or_else(|| START.to_string(), state_type);
        add(tables, account, before, Counter::Transitions, &[&from, COMPLETED], &[("count", 1)])?;
        for state in before.states.iter().filter(|s| !has_successor(before, s.state_id)) {
            add(tables, account, before, Counter::States, &[&state_type(state)], &[("onward", 1)])?;
        }
        return Ok(());
    }
    add(tables, account, before, Counter::Services, &[], &[("abandoned", 1)])?;
    let dropoff = dropoff_point(before);
    let point = dropoff.map_or_else(|| BEFORE_FIRST_STATE.to_string(), state_type);
    if dropoff.is_some() {
        add(tables, account, before, Counter::States, &[&point], &[("abandoned", 1)])?;
    }
    let from = dropoff.map_or_else(|| START.to_string(), state_type);
    add(tables, account, before, Counter::Transitions, &[&from, ABANDONED], &[("count", 1)])?;
    let json_of = |text: &crate::domain::events::JsonText| -> Value {
        serde_json::from_str(text.as_str()).expect("stored JSON parses")
    };
    let extensions = |ext: &crate::domain::events::Properties| -> Value {
        Value::Object(ext.iter().map(|(n, v)| (n.clone(), json_of(v))).collect())
    };
    let millis = |time: chrono::DateTime<chrono::Utc>| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    // The channel at the drop-off: the step's own media type, else the service's.
    let channel = dropoff.map(|s| media_key(&s.life.started)).filter(|media| !media.is_empty());
    let channel_field = |name: &str| before.life.started.channel.get(name).map(json_of);
    let detail = json!({
        "customer_id": before.customer_id,
        "contact_key": before.contact_key,
        "session_id": channel_field("session_id"),
        "interaction_id": channel_field("interaction_id"),
        "how": left.how,
        "disposition": left.disposition,
        "started": millis(before.life.started.timestamp),
        "recorded_at": left.recorded_at,
        "dropoff": dropoff.map(|s| json!({
            "state_id": s.state_id,
            "state_type": state_type(s),
            "since": millis(s.life.started.timestamp),
            "media_type": channel.clone().unwrap_or_else(|| before.cohort.media_type.clone()),
            "time_in_step_ms": (left.at - s.life.started.timestamp).num_milliseconds().clamp(0, MAX_COUNTED_MS),
        })),
        "extensions": extensions(&before.life.extensions),
        "state_extensions": dropoff.map(|s| extensions(&s.life.extensions)),
    });
    tables.insert_abandoned(
        account,
        AbandonedRow {
            ended_at: crate::store::log::format_time(left.at),
            service_id: before.service_id.clone(),
            service_type: before.cohort.service_type.clone(),
            hour: before.cohort.hour.clone(),
            media_type: before.cohort.media_type.clone(),
            state_type: point,
            detail: detail.to_string(),
        },
    )
}

/// An abandoned journey's `detail` as the customer's redacted events would have built it: the
/// contact key and extension values read `erasure::MARKER`.
pub fn redacted_detail(detail: &str) -> Result<String, StoreError> {
    let mut value: Value = serde_json::from_str(detail)
        .map_err(|error| StoreError::Corrupt(format!("abandoned journey detail: {error}")))?;
    let marker = || Value::String(erasure::MARKER.into());
    if value["contact_key"].is_string() {
        value["contact_key"] = marker();
    }
    for field in ["extensions", "state_extensions"] {
        if let Some(extensions) = value.get_mut(field).and_then(Value::as_object_mut) {
            extensions.values_mut().for_each(|v| *v = marker());
        }
    }
    Ok(value.to_string())
}
