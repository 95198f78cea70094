//! Drop-off analytics: random journeys written over HTTP, every figure of every endpoint
//! compared with a naive recomputation from what the test itself did.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::journeys::{Cs, assert_cs_error};
use crate::model::Rng;

/// Random journeys the figures are checked on.
const JOURNEYS: usize = 2000;
const STATE_TYPES: [&str; 4] = ["ivr", "queue", "callback", "agent"];
const BOUNDS_S: [i64; 25] = [
    1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 7200,
    14400, 28800, 86400,
];

/// One state as the test drove it.
struct Step {
    kind: &'static str,
    media: &'static str,
    est: Option<i64>,
    /// Time in state, when it ended by a transition or by its own end call.
    timed_ms: Option<i64>,
    /// Seconds from the service's start to this state's start.
    since_start: i64,
}

#[derive(PartialEq, Clone, Copy, Debug)]
enum Outcome {
    Completed,
    Abandoned,
    Active,
}

/// One service as the test drove it.
struct Journey {
    id: String,
    customer: String,
    /// How an abandoned journey ended, as `abandoned` tells it.
    how: &'static str,
    kind: &'static str,
    media: &'static str,
    hour: u32,
    steps: Vec<Step>,
    outcome: Outcome,
}

/// `hour` hours and `seconds` seconds after 2026-11-20T00:00:00Z.
fn at(hour: u32, seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
        + Duration::hours(hour.into())
        + Duration::seconds(seconds)
}

fn stamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Drives one random journey and returns what it was, and whether it waits for the sweeper
/// to auto-complete it (it is left active here, with `auto_complete_after`).
async fn drive(cs: &Cs<'_>, rng: &mut Rng) -> (Journey, bool) {
    let kind = ["billing", "sales"][rng.below(2) as usize];
    // Some services start with no media type: their channel is "".
    let media = ["voice", "chat", "", "voice", "chat"][rng.below(5) as usize];
    // Hours of three days, so that ranges cut days at either end (the daily rollups).
    let hour = [9, 10, 11, 22, 23, 24, 30, 47, 50][rng.below(9) as usize];
    let mut clock = rng.below(1800) as i64;
    let started = clock;
    let ending = rng.below(10);
    let auto_complete = (6..8).contains(&ending);
    let customer = format!("c{}", rng.below(20));
    let mut start =
        json!({"customer_id": customer, "service_type": kind, "timestamp": stamp(at(hour, clock))});
    if !media.is_empty() {
        start["media_type"] = json!(media);
    }
    if auto_complete {
        start["auto_complete_after"] = json!(60);
    }
    let id = cs.start_service(start).await;
    let (mut steps, mut starts): (Vec<Step>, Vec<i64>) = (Vec::new(), Vec::new());
    // Mostly short journeys; some longer than the 12 states funnels follow.
    let states = if rng.below(20) == 0 { 10 + rng.below(6) } else { rng.below(5) };
    for _ in 0..states {
        let kind = STATE_TYPES[rng.below(4) as usize];
        let step_media = if rng.below(10) < 3 { ["voice", "chat"][rng.below(2) as usize] } else { media };
        let est = [None, Some(30), Some(120)][rng.below(3) as usize];
        clock += 1 + rng.below(400) as i64;
        let mut fields = json!({"timestamp": stamp(at(hour, clock))});
        if !step_media.is_empty() {
            fields["media_type"] = json!(step_media);
        }
        if let Some(est) = est {
            fields["est_duration"] = json!(est);
        }
        if steps.is_empty() {
            fields["state_type"] = json!(kind);
            cs.start_state(&id, fields).await;
        } else {
            let last = steps.len() - 1;
            cs.transition(&id, steps.len() as u64, kind, fields).await;
            steps[last].timed_ms = Some((clock - starts[last]) * 1000);
        }
        starts.push(clock);
        steps.push(Step { kind, media: step_media, est, timed_ms: None, since_start: clock - started });
    }
    let mut outcome = Outcome::Active;
    if ending < 6 {
        clock += 1 + rng.below(100) as i64;
        // Sometimes the last state ends by its own call first: it is then the last completed one.
        if rng.below(3) == 0 && !steps.is_empty() {
            let last = steps.len() - 1;
            let body = json!({"timestamp": stamp(at(hour, clock))});
            cs.ok(cs.post(&format!("/services/{id}/states/{}/end", last + 1), body).await).await;
            steps[last].timed_ms = Some((clock - starts[last]) * 1000);
            clock += 1;
        }
        let (disposition, ended) = if ending < 4 {
            ("resolved", Outcome::Completed)
        } else {
            ("customer_hangup", Outcome::Abandoned)
        };
        let body = json!({"disposition": disposition, "timestamp": stamp(at(hour, clock))});
        cs.ok(cs.post(&format!("/services/{id}/end"), body).await).await;
        outcome = ended;
    }
    let how = "ended with an abandonment disposition";
    (Journey { id, customer, how, kind, media, hour, steps, outcome }, auto_complete)
}

/// The bound of the histogram bucket holding the `q` quantile of `durations` (ms).
fn quantile(durations: &[i64], q: f64) -> Value {
    if durations.is_empty() {
        return Value::Null;
    }
    let mut sorted = durations.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    let value = sorted[rank - 1];
    BOUNDS_S.iter().find(|bound| value <= **bound * 1000).map_or(Value::Null, |bound| json!(bound))
}

fn average(sum: i64, count: i64) -> Value {
    if count == 0 { Value::Null } else { json!((sum as f64) / (count as f64)) }
}

/// Per state type: entered, onward, abandoned here, times in state (ms), estimated, their
/// summed estimate (s) and their summed actual time (ms).
type StateFigures = (i64, i64, i64, Vec<i64>, i64, i64, i64);

/// A query string and the journeys it selects.
type Selection = (&'static str, Box<dyn Fn(&Journey) -> bool>);

/// What `dropoff` must answer for the journeys `selected`, computed the naive way.
fn expected_dropoff(journeys: &[&Journey]) -> (Value, Vec<Value>) {
    let count = |outcome| journeys.iter().filter(|j| j.outcome == outcome).count() as i64;
    let (completed, abandoned, active) =
        (count(Outcome::Completed), count(Outcome::Abandoned), count(Outcome::Active));
    let started = journeys.len() as i64;
    let before_first =
        journeys.iter().filter(|j| j.outcome == Outcome::Abandoned && j.steps.is_empty()).count();
    let totals = json!({
        "started": started, "completed": completed, "abandoned": abandoned, "active": active,
        "completion_rate": if started == 0 { Value::Null } else { json!((completed as f64) / (started as f64)) },
        "abandoned_before_first_state": before_first, "before_first_state_label": "(before first state)",
    });
    let mut per_type: BTreeMap<&str, StateFigures> = BTreeMap::new();
    for journey in journeys {
        for (i, step) in journey.steps.iter().enumerate() {
            let row = per_type.entry(step.kind).or_default();
            row.0 += 1;
            let last = i + 1 == journey.steps.len();
            if !last || journey.outcome == Outcome::Completed {
                row.1 += 1;
            }
            if last && journey.outcome == Outcome::Abandoned {
                row.2 += 1;
            }
            if let Some(ms) = step.timed_ms {
                row.3.push(ms);
                if let Some(est) = step.est {
                    row.4 += 1;
                    row.5 += est;
                    row.6 += ms;
                }
            }
        }
    }
    let mut states: Vec<(&str, Value)> = per_type
        .into_iter()
        .map(|(kind, (entered, onward, abandoned_here, durations, estimated, est_s, actual_ms))| {
            let timed = durations.len() as i64;
            let value = json!({
                "state_type": kind, "entered": entered, "left_onward": onward, "abandoned_here": abandoned_here,
                "dropoff_rate": if entered == 0 { Value::Null } else { json!((abandoned_here as f64) / (entered as f64)) },
                "timed": timed,
                "median_time_in_state_s": quantile(&durations, 0.5), "p90_time_in_state_s": quantile(&durations, 0.9),
                "avg_time_in_state_s": average(durations.iter().sum(), timed * 1000),
                "estimated": estimated, "avg_est_duration_s": average(est_s, estimated),
                "avg_actual_duration_s": average(actual_ms, estimated * 1000),
            });
            (kind, value)
        })
        .collect();
    states.sort_by(|a, b| {
        b.1["abandoned_here"].as_i64().cmp(&a.1["abandoned_here"].as_i64()).then(a.0.cmp(b.0))
    });
    (totals, states.into_iter().map(|(_, v)| v).collect())
}

/// What `funnel` must answer for `steps` and an optional window (s), overall and per media type:
/// a journey reaches a step when its states, in the order they started, hold the steps in order
/// (each at its first occurrence after the previous one, among its first 12 states), within the
/// window from the service's start.
fn expected_funnel(journeys: &[&Journey], steps: &[&str], window: Option<i64>) -> Value {
    let figures = |journeys: &[&Journey]| {
        let mut times: Vec<Vec<i64>> = vec![vec![]; steps.len()];
        for journey in journeys {
            let mut next = 0;
            for state in journey.steps.iter().take(12) {
                if next < steps.len() && state.kind == steps[next] {
                    if window.is_none_or(|w| state.since_start <= w) {
                        times[next].push(state.since_start * 1000);
                    }
                    next += 1;
                }
            }
        }
        let reached: Vec<i64> = times.iter().map(|t| t.len() as i64).collect();
        let rate = |part: i64, whole: i64| {
            if whole == 0 { Value::Null } else { json!((part as f64) / (whole as f64)) }
        };
        let started = journeys.len() as i64;
        let steps: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(k, step)| {
                json!({
                    "state_type": step, "reached": reached[k],
                    "conversion_from_previous": rate(reached[k], if k == 0 { started } else { reached[k - 1] }),
                    "conversion_from_first": rate(reached[k], reached[0]),
                    "dropped": reached.get(k + 1).map(|next| reached[k] - next),
                    "median_time_to_reach_s": quantile(&times[k], 0.5),
                })
            })
            .collect();
        json!({"started": started, "steps": steps})
    };
    let mut expected = figures(journeys);
    let media: std::collections::BTreeSet<&str> = journeys.iter().map(|j| j.media).collect();
    let split: Vec<Value> = media
        .into_iter()
        .map(|m| {
            let mut one = figures(&journeys.iter().copied().filter(|j| j.media == m).collect::<Vec<_>>());
            one["media_type"] = json!(m);
            one
        })
        .collect();
    expected["by_media_type"] = json!(split);
    expected
}

/// What `transitions` must answer: (from, to) → (count, channel switches).
fn expected_transitions(journeys: &[&Journey]) -> BTreeMap<(String, String), (i64, i64)> {
    let mut moves: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut add = |from: &str, to: &str, switched: bool| {
        let entry = moves.entry((from.to_string(), to.to_string())).or_default();
        entry.0 += 1;
        entry.1 += i64::from(switched);
    };
    for journey in journeys {
        let (mut from, mut media) = ("(start)", journey.media);
        for step in &journey.steps {
            // A switch needs a media type on both sides.
            add(from, step.kind, !step.media.is_empty() && !media.is_empty() && step.media != media);
            (from, media) = (step.kind, step.media);
        }
        match journey.outcome {
            Outcome::Completed => add(from, "(completed)", false),
            Outcome::Abandoned => add(from, "(abandoned)", false),
            Outcome::Active => {}
        }
    }
    moves
}

fn assert_close(actual: &Value, expected: &Value, context: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) if a.as_f64().is_some() && e.as_f64().is_some() => {
            let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
            assert!((a - e).abs() < 1e-9, "{context}: {a} != {e}");
        }
        (Value::Object(a), Value::Object(e)) => {
            assert_eq!(a.keys().collect::<Vec<_>>(), e.keys().collect::<Vec<_>>(), "{context}");
            for (key, value) in e {
                assert_close(&a[key], value, &format!("{context}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{context}: {actual} vs {expected}");
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_close(a, e, &format!("{context}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{context}"),
    }
}

/// A time series' buckets: start → (started, completed, abandoned).
fn buckets(body: &Value) -> BTreeMap<String, (i64, i64, i64)> {
    let figure = |bucket: &Value, name: &str| bucket[name].as_i64().unwrap();
    let buckets = body["buckets"].as_array().unwrap().iter();
    buckets
        .map(|b| {
            let counts = (figure(b, "started"), figure(b, "completed"), figure(b, "abandoned"));
            (b["start"].as_str().unwrap().to_string(), counts)
        })
        .collect()
}

#[tokio::test]
async fn every_figure_matches_a_naive_recomputation_of_random_journeys() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut journeys = Vec::new();
    for _ in 0..JOURNEYS {
        journeys.push(drive(&cs, &mut rng).await);
    }
    // The sweeper auto-completes the inactive ones: abandoned at their open step.
    app.clock.advance(Duration::seconds(61));
    ctxd::sweeper::sweep_once(&app.store).await.unwrap();
    let journeys: Vec<Journey> = journeys
        .into_iter()
        .map(|(mut journey, auto)| {
            if auto {
                journey.outcome = Outcome::Abandoned;
                journey.how = "auto_completed";
            }
            journey
        })
        .collect();

    let filters: [Selection; 9] = [
        ("", Box::new(|_| true)),
        ("service_type=billing", Box::new(|j| j.kind == "billing")),
        ("media_type=chat", Box::new(|j| j.media == "chat")),
        ("from=2026-11-20T10:00:00Z&to=2026-11-20T11:00:00Z", Box::new(|j| j.hour == 10)),
        ("from=2026-11-20T23:00:00Z&to=2026-11-22T03:00:00Z", Box::new(|j| (23..51).contains(&j.hour))),
        ("from=2026-11-21T00:00:00Z&to=2026-11-22T00:00:00Z", Box::new(|j| (24..48).contains(&j.hour))),
        ("from=2026-11-20T11:00:00Z", Box::new(|j| j.hour >= 11)),
        ("media_type=voice&to=2026-11-21T07:00:00Z", Box::new(|j| j.media == "voice" && j.hour < 31)),
        (
            "service_type=sales&media_type=voice&from=2026-11-20T10:00:00Z",
            Box::new(|j| j.kind == "sales" && j.media == "voice" && j.hour >= 10),
        ),
    ];
    let base = "/v1/account/acme/analytics";
    for (query, selected) in &filters {
        let selected: Vec<&Journey> = journeys.iter().filter(|j| selected(j)).collect();
        let reply = app.call(&cs.key, "GET", &format!("{base}/dropoff?{query}"), "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        let (totals, states) = expected_dropoff(&selected);
        assert_close(&body["totals"], &totals, &format!("dropoff?{query} totals"));
        assert_close(&body["states"], &Value::Array(states), &format!("dropoff?{query} states"));

        let body = app.call(&cs.key, "GET", &format!("{base}/transitions?{query}"), "").await.json();
        let actual: BTreeMap<(String, String), (i64, i64)> = body["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let key = (t["from"].as_str().unwrap().to_string(), t["to"].as_str().unwrap().to_string());
                (key, (t["count"].as_i64().unwrap(), t["channel_switches"].as_i64().unwrap()))
            })
            .collect();
        assert_eq!(actual, expected_transitions(&selected), "transitions?{query}");

        for (funnel, steps, window) in [
            ("steps=ivr,queue,agent", &["ivr", "queue", "agent"][..], None),
            ("steps=queue,queue&window=300", &["queue", "queue"][..], Some(300)),
            ("steps=agent&window=15m&breakdown=media_type", &["agent"][..], Some(900)),
            (
                "steps=queue,agent,callback,ivr&window=1h&breakdown=media_type",
                &["queue", "agent", "callback", "ivr"][..],
                Some(3600),
            ),
        ] {
            let reply = app.call(&cs.key, "GET", &format!("{base}/funnel?{funnel}&{query}"), "").await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let mut body = reply.json();
            let mut expected = expected_funnel(&selected, steps, window);
            if !funnel.contains("breakdown") {
                expected.as_object_mut().unwrap().remove("by_media_type");
            }
            body.as_object_mut().unwrap().remove("query");
            assert_close(&body, &expected, &format!("funnel?{funnel}&{query}"));
        }

        let body = app.call(&cs.key, "GET", &format!("{base}/timeseries?{query}"), "").await.json();
        let mut hours: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        for journey in &selected {
            let row = hours.entry(at(journey.hour, 0).format("%Y-%m-%dT%H:00:00Z").to_string()).or_default();
            row.0 += 1;
            row.1 += i64::from(journey.outcome == Outcome::Completed);
            row.2 += i64::from(journey.outcome == Outcome::Abandoned);
        }
        assert_eq!(buckets(&body), hours, "timeseries?{query}");
        let mut days: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        for (hour, (started, completed, abandoned)) in hours {
            let day = days.entry(format!("{}T00:00:00Z", &hour[..10])).or_default();
            *day = (day.0 + started, day.1 + completed, day.2 + abandoned);
        }
        let body =
            app.call(&cs.key, "GET", &format!("{base}/timeseries?interval=day&{query}"), "").await.json();
        assert_eq!(buckets(&body), days, "timeseries?interval=day&{query}");

        let mut listed = std::collections::BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let cursor = after
                .as_ref()
                .map(|a| format!("&after={}", a.replace('|', "%7C").replace('+', "%2B")))
                .unwrap_or_default();
            let body = app
                .call(&cs.key, "GET", &format!("{base}/abandoned?limit=7&{query}{cursor}"), "")
                .await
                .json();
            for service in body["services"].as_array().unwrap() {
                let figures =
                    ["service_id", "dropoff_state_type", "customer_id", "how", "service_type", "media_type"]
                        .map(|f| service[f].as_str().unwrap().to_string());
                assert!(listed.insert(figures), "listed once: {service}");
            }
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        let abandoned: std::collections::BTreeSet<[String; 6]> = selected
            .iter()
            .filter(|j| j.outcome == Outcome::Abandoned)
            .map(|j| {
                let dropoff = j.steps.last().map_or("(before first state)", |s| s.kind);
                [&j.id, dropoff, &j.customer, j.how, j.kind, j.media].map(str::to_string)
            })
            .collect();
        assert_eq!(listed, abandoned, "abandoned?{query}");
    }
    let all = app.call(&cs.key, "GET", &format!("{base}/dropoff"), "").await.json();
    for figure in ["started", "completed", "abandoned", "active", "abandoned_before_first_state"] {
        assert!(
            all["totals"][figure].as_i64().unwrap() > 0,
            "the random journeys reach every outcome: {figure}"
        );
    }
    assert!(all["states"].as_array().unwrap().iter().all(|s| s["abandoned_here"].as_i64().unwrap() > 0));
    // The funnels above are not empty, and their windows cut some journeys off.
    let funnel = |query: &str| format!("{base}/funnel?{query}");
    let three = app.call(&cs.key, "GET", &funnel("steps=ivr,queue,agent"), "").await.json();
    assert!(three["steps"][2]["reached"].as_i64().unwrap() > 0, "{three}");
    let all = app.call(&cs.key, "GET", &funnel("steps=queue,queue"), "").await.json();
    let windowed = app.call(&cs.key, "GET", &funnel("steps=queue,queue&window=300"), "").await.json();
    assert!(windowed["steps"][1]["reached"].as_i64().unwrap() > 0, "{windowed}");
    assert!(
        windowed["steps"][1]["reached"].as_i64() < all["steps"][1]["reached"].as_i64(),
        "{all} {windowed}"
    );
    let by_day = app.call(&cs.key, "GET", &format!("{base}/timeseries?interval=day"), "").await.json();
    let started: Vec<i64> = buckets(&by_day).values().map(|(started, _, _)| *started).collect();
    assert_eq!(started.len(), 3, "{by_day}");
    assert_eq!(started.iter().sum::<i64>(), journeys.len() as i64);
    let queue =
        app.call(&cs.key, "GET", &format!("{base}/abandoned?state_type=queue&limit=1000"), "").await.json();
    let expected = journeys
        .iter()
        .filter(|j| j.outcome == Outcome::Abandoned && j.steps.last().is_some_and(|s| s.kind == "queue"))
        .count();
    assert_eq!(queue["services"].as_array().unwrap().len(), expected);
    assert!(
        queue["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["dropoff_state_type"] == "queue" && s["dropoff"]["state_type"] == "queue")
    );
    assert!(app.verify().mismatch.is_none(), "the analytics tables rebuild from the log");
}

#[tokio::test]
async fn analytics_refuse_bad_parameters_and_other_accounts() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let other = app.account("globex").await;
    let base = "/v1/account/acme/analytics";
    for query in [
        "dropoff?bogus=1",
        "dropoff?from=yesterday",
        "dropoff?from=2026-11-20T10:30:00Z",
        "dropoff?from=2026-11-20T11:00:00Z&to=2026-11-20T10:00:00Z",
        "timeseries?interval=week",
        "abandoned?limit=0",
        "abandoned?after=nonsense",
        "transitions?steps=a",
        "funnel",
        "funnel?steps=ivr,,agent",
        "funnel?steps=%5B%22ivr%22",
        "funnel?steps=%5B%5D",
        "funnel?steps=%5B1%2C2%5D",
        "funnel?steps=a,b,c,d,e,f,g,h,i,j,k,l,m",
        "funnel?steps=ivr&window=7m",
        "funnel?steps=ivr&window=soon",
        "funnel?steps=ivr&window=-5",
        "funnel?steps=ivr&breakdown=channel",
        "funnel?steps=ivr&from=2026-11-20T10:15:00Z",
    ] {
        app.call(&cs.key, "GET", &format!("{base}/{query}"), "").await.assert_error(400);
    }
    app.call(&other, "GET", &format!("{base}/dropoff"), "").await.assert_error(403);
    let reply = app.call(&cs.key, "GET", &format!("{base}/dropoff?service_type=billing"), "").await;
    assert_eq!(reply.json()["query"], json!({"service_type": "billing"}));
    assert_eq!(reply.json()["totals"]["started"], 0);
    // The names these routes take are not namespaces.
    let namespace = app.call(&cs.key, "POST", "/v1/account/acme", r#"{"name": "analytics"}"#).await;
    namespace.assert_error(400);
    let _ = assert_cs_error;
}

#[tokio::test]
async fn a_store_from_before_the_funnels_has_its_analytics_rebuilt_when_it_opens() {
    let app = crate::helpers::spawn_sqlite_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice"}))
        .await;
    let ivr = cs.start_state(&s, json!({"state_type": "ivr"})).await;
    cs.transition(&s, ivr, "queue", json!({})).await;
    let key = cs.key.clone();
    let funnel = "/v1/account/acme/analytics/funnel?steps=ivr,queue";
    let before = app.call(&key, "GET", funnel, "").await.json();
    assert_eq!(before["steps"][1]["reached"], 1);
    // Back to schema version 3: no paths, the histogram in its own table, counters as they were,
    // and a log with one store-wide seq and without its hash chain (0005 to 0008), which must be
    // numbered and chained per account on the way up.
    let app = app
        .restart_with(|dir| {
            let conn = rusqlite::Connection::open(dir.join("ctxd.db")).unwrap();
            conn.execute_batch(crate::helpers::BEFORE_ROLLUPS).unwrap();
            conn.execute_batch(
                "DELETE FROM schema_version WHERE version >= 4; DROP TABLE analytics_paths;
                 DELETE FROM analytics_states; DELETE FROM analytics_transitions;
                 CREATE TABLE analytics_state_durations (account_id TEXT);
                 CREATE TABLE events_v3 (seq INTEGER PRIMARY KEY, account TEXT NOT NULL, stream TEXT NOT NULL,
                     stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, event_version INTEGER NOT NULL,
                     data TEXT NOT NULL, meta TEXT NOT NULL, recorded_at TEXT NOT NULL, UNIQUE (stream, stream_version));
                 INSERT INTO events_v3 SELECT id, account, stream, stream_version, event_type, event_version, data,
                     meta, recorded_at FROM events;
                 DROP TABLE events; ALTER TABLE events_v3 RENAME TO events;
                 DROP TABLE erasure_in_progress; DROP TABLE global_chain_heads;
                 ALTER TABLE accounts DROP COLUMN writes_per_second;
                 DROP TRIGGER session_size_on_insert; DROP TRIGGER session_size_on_update;
                 DROP TRIGGER session_size_on_delete; DROP TABLE session_sizes;
                 DROP INDEX namespaces_being_deleted; ALTER TABLE namespaces DROP COLUMN deleting_since;
                 DROP TABLE customer_erasures; DROP TABLE chain_rewrites;
                 DROP INDEX api_keys_active_name; ALTER TABLE api_keys DROP COLUMN name;
                 ALTER TABLE api_keys DROP COLUMN role; DROP TABLE api_key_usage;
                 DROP VIEW live_snapshot_streams; DROP TABLE archive_stages;
                 DROP TABLE archives; DROP TABLE snapshot_streams; DROP TABLE snapshot_customer_services;
                 DROP TABLE archive_in_progress; ALTER TABLE accounts DROP COLUMN retention_days;
                 CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
                 BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
                 CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
                 BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;",
            )
            .unwrap();
        })
        .await;
    let chain = app.call(&key, "GET", "/v1/account/acme/audit/verify", "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
    assert_eq!(chain["events"], app.event_count());
    assert_eq!(app.call(&key, "GET", funnel, "").await.json(), before);
    let transitions = app.call(&key, "GET", "/v1/account/acme/analytics/transitions", "").await.json();
    assert_eq!(transitions["transitions"].as_array().unwrap().len(), 2, "{transitions}");
    assert!(app.verify().mismatch.is_none());
}

/// The answers of analytics `queries` (paths after `analytics/`), each asserted 200.
async fn answers(app: &TestApp, key: &str, queries: &[&str]) -> Vec<Value> {
    let mut answers = Vec::new();
    for query in queries {
        let reply = app.call(key, "GET", &format!("/v1/account/acme/analytics/{query}"), "").await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        answers.push(reply.json());
    }
    answers
}

#[tokio::test]
async fn a_store_from_before_the_daily_rollups_sums_them_from_its_hourly_counters_when_it_opens() {
    let app = crate::helpers::spawn_sqlite_app().await;
    let cs = Cs::new(&app, "acme").await;
    for (hour, state) in [(1, "ivr"), (23, "queue"), (25, "ivr"), (47, "agent"), (49, "queue")] {
        let start = json!({"customer_id": "c1", "service_type": "billing", "timestamp": stamp(at(hour, 0))});
        let s = cs.start_service(start).await;
        cs.start_state(&s, json!({"state_type": state, "timestamp": stamp(at(hour, 5))})).await;
        if hour % 2 == 1 {
            let body = json!({"disposition": "customer_hangup", "timestamp": stamp(at(hour, 90))});
            cs.ok(cs.post(&format!("/services/{s}/end"), body).await).await;
        }
    }
    let queries = [
        "dropoff",
        "dropoff?from=2026-11-20T22:00:00Z&to=2026-11-22T02:00:00Z",
        "transitions?from=2026-11-21T00:00:00Z",
        "funnel?steps=ivr|queue&to=2026-11-22T00:00:00Z",
        "timeseries?interval=day",
        "dimensions?from=2026-11-21T00:00:00Z&to=2026-11-22T00:00:00Z",
    ];
    let key = cs.key.clone();
    let before = answers(&app, &key, &queries).await;
    assert_eq!(before[1]["totals"]["started"], 4, "{}", before[1]);
    assert_eq!(before[4]["buckets"].as_array().unwrap().len(), 3, "{}", before[4]);
    let app = app
        .restart_with(|dir| {
            let conn = rusqlite::Connection::open(dir.join("ctxd.db")).unwrap();
            conn.execute_batch(crate::helpers::BEFORE_ROLLUPS).unwrap();
        })
        .await;
    assert_eq!(answers(&app, &key, &queries).await, before);
    assert!(app.verify().mismatch.is_none(), "the rollups summed in SQL are those the fold writes");
}

#[tokio::test]
async fn journeys_written_at_once_are_counted_once_each() {
    let app = std::sync::Arc::new(spawn_app().await);
    let key = Cs::new(&app, "acme").await.key;
    // 48 journeys at once: the writer groups their calls into shared commits, whose counter
    // rows it sums before writing; one call in each journey is refused, inside the same commits.
    let mut tasks = Vec::new();
    for i in 0..48 {
        let (app, key) = (app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let cs = Cs { app: &app, key };
            let start =
                json!({"customer_id": format!("c{i}"), "service_type": "billing", "media_type": "voice"});
            let id = cs.start_service(start).await;
            let ivr = cs.start_state(&id, json!({"state_type": "ivr"})).await;
            cs.transition(&id, ivr, "queue", json!({})).await;
            let refused = cs.post(&format!("/services/{id}/states/{ivr}/end"), json!({})).await;
            assert_eq!(refused.status, 400, "ivr has ended already");
            let disposition = if i % 4 == 0 { "customer_hangup" } else { "resolved" };
            cs.ok(cs.post(&format!("/services/{id}/end"), json!({"disposition": disposition})).await).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let base = "/v1/account/acme/analytics";
    let dropoff = app.call(&key, "GET", &format!("{base}/dropoff"), "").await.json();
    assert_eq!(dropoff["totals"]["started"], 48);
    assert_eq!(dropoff["totals"]["completed"], 36);
    assert_eq!(dropoff["totals"]["abandoned"], 12);
    let funnel = app.call(&key, "GET", &format!("{base}/funnel?steps=ivr,queue"), "").await.json();
    assert_eq!(funnel["steps"][1]["reached"], 48, "{funnel}");
    let transitions = app.call(&key, "GET", &format!("{base}/transitions"), "").await.json();
    let count = |from: &str, to: &str| {
        transitions["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["from"] == from && t["to"] == to)
            .unwrap()["count"]
            .clone()
    };
    assert_eq!(count("ivr", "queue"), 48);
    assert_eq!(count("queue", "(abandoned)"), 12);
    assert!(app.verify().mismatch.is_none(), "the summed counters equal a replay of the log");
}

#[tokio::test]
async fn a_funnel_step_with_a_comma_is_named_in_a_json_array() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let key = cs.key.clone();
    // A state type with a comma is named in a JSON array.
    let s = cs.start_service(json!({"customer_id": "c1", "service_type": "billing"})).await;
    cs.start_state(&s, json!({"state_type": "billing, disputes"})).await;
    let steps = "%5B%22billing%2C%20disputes%22%5D"; // ["billing, disputes"]
    let funnel =
        app.call(&key, "GET", &format!("/v1/account/acme/analytics/funnel?steps={steps}"), "").await.json();
    assert_eq!(funnel["steps"][0]["state_type"], "billing, disputes");
    assert_eq!(funnel["steps"][0]["reached"], 1, "{funnel}");
}

#[tokio::test]
async fn what_analytics_count_stays_well_formed() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let base = "/v1/account/acme/analytics";
    // An estimate beyond a century is refused; one of a century is counted without overflow.
    let s = cs.start_service(json!({"customer_id": "c1", "service_type": "billing"})).await;
    let century = 100 * 366 * 24 * 3600_u64;
    let refused = cs
        .post(
            &format!("/services/{s}/states/start"),
            json!({"state_type": "ivr", "est_duration": century + 1}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    for _ in 0..3 {
        let s = cs.start_service(json!({"customer_id": "c1", "service_type": "billing"})).await;
        let ivr = cs.start_state(&s, json!({"state_type": "ivr", "est_duration": century})).await;
        cs.ok(cs
            .post(&format!("/services/{s}/states/{ivr}/end"), json!({"timestamp": "9999-01-01T00:00:00Z"}))
            .await)
            .await;
    }
    let dropoff = app.call(&cs.key, "GET", &format!("{base}/dropoff"), "").await;
    assert_eq!(dropoff.status, 200, "{}", dropoff.body);
    assert_eq!(dropoff.json()["states"][0]["avg_est_duration_s"], century as f64);
    // The names analytics give the ends of a journey are no state's.
    for marker in ["(start)", "(completed)", "(abandoned)", "(before first state)"] {
        let refused = cs.post(&format!("/services/{s}/states/start"), json!({"state_type": marker})).await;
        assert_eq!(refused.status, 400, "{marker}: {}", refused.body);
    }
    let ivr = cs.start_state(&s, json!({"state_type": "ivr"})).await;
    let body = json!({"from": {"state_id": ivr}, "to": {"state_type": "(completed)"}});
    assert_eq!(cs.post(&format!("/services/{s}/states/transition"), body).await.status, 400);
    // The first step's channel switch is judged against the channel the service started on,
    // even when an association adds one later.
    let voice =
        cs.start_service(json!({"contact_key": "k1", "service_type": "sales", "media_type": "voice"})).await;
    cs.ok(cs.post(&format!("/customers/c2/services/{voice}"), json!({"media_type": "chat"})).await).await;
    cs.start_state(&voice, json!({"state_type": "bot", "media_type": "chat"})).await;
    let moves = app.call(&cs.key, "GET", &format!("{base}/transitions?service_type=sales"), "").await.json();
    assert_eq!(moves["transitions"][0]["from"], "(start)");
    assert_eq!(moves["transitions"][0]["channel_switches"], 1, "{moves}");
    assert!(app.verify().mismatch.is_none());
}

/// The names an analyst can filter on come from what was recorded; a name never recorded (a
/// typo) is warned about instead of answering zeros silently; abandoned services come latest
/// first.
#[tokio::test]
async fn dimensions_list_what_was_recorded_and_names_never_recorded_are_warned_about() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let base = "/v1/account/acme/analytics";
    let mut abandoned = Vec::new();
    for (n, (kind, media, first)) in
        [("billing", "voice", "ivr"), ("sales", "chat", "bot"), ("billing", "chat", "bot")]
            .into_iter()
            .enumerate()
    {
        let started = stamp(at(n as u32 + 1, 0));
        let opening = json!({"customer_id": format!("c{n}"), "service_type": kind, "timestamp": started, "media_type": media});
        let id = cs.start_service(opening).await;
        cs.start_state(&id, json!({"state_type": first, "timestamp": started, "media_type": media})).await;
        let ended = json!({"disposition": "customer_hangup", "timestamp": stamp(at(n as u32 + 1, 30))});
        cs.ok(cs.post(&format!("/services/{id}/end"), ended).await).await;
        abandoned.push(id);
        app.clock.advance(Duration::seconds(1)); // the list's order is the server's recording time
    }
    let get = async |path: &str| {
        let reply = app.call(&cs.key, "GET", &format!("{base}/{path}"), "").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    };
    let all = get("dimensions").await;
    assert_eq!(all["service_types"], json!(["billing", "sales"]), "{all}");
    assert_eq!(all["media_types"], json!(["chat", "voice"]));
    assert_eq!(all["state_types"], json!(["bot", "ivr"]));
    let later = get(&format!("dimensions?from={}", stamp(at(2, 0)))).await;
    assert_eq!(later["service_types"], json!(["billing", "sales"]), "{later}");
    assert_eq!(later["media_types"], json!(["chat"]));
    assert_eq!(get("dimensions?media_type=voice").await["state_types"], json!(["ivr"]));

    // Known names: no warnings. A typo: the same zeros as before, and a warning naming it.
    for path in
        ["dropoff?service_type=billing", "funnel?steps=ivr,bot", "transitions", "timeseries", "abandoned"]
    {
        assert!(get(path).await.get("warnings").is_none(), "{path}");
    }
    let typo = get("dropoff?service_type=biling").await;
    assert_eq!(typo["totals"]["started"], 0);
    assert_eq!(
        typo["warnings"],
        json!([
            r#"service_type "biling" was never recorded in this account (analytics/dimensions lists the names seen)"#
        ])
    );
    let funnel = get("funnel?steps=ivr,qeue&media_type=fax").await;
    let warnings: Vec<&str> =
        funnel["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 2, "{funnel}");
    assert!(
        warnings[0].starts_with(r#"media_type "fax""#) && warnings[1].starts_with(r#"step "qeue""#),
        "{funnel}"
    );
    for path in ["transitions?media_type=fax", "timeseries?service_type=x", "abandoned?state_type=qeue"] {
        assert_eq!(get(path).await["warnings"].as_array().map(Vec::len), Some(1), "{path}");
    }

    // Split by channel: each channel's figures, adding up to the whole.
    let split = get("dropoff?breakdown=media_type").await;
    let channels: Vec<(&str, i64)> = split["by_media_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["media_type"].as_str().unwrap(), c["totals"]["started"].as_i64().unwrap()))
        .collect();
    assert_eq!(channels, [("chat", 2), ("voice", 1)], "{split}");
    assert_eq!(split["totals"]["started"], 3);
    assert_eq!(split["by_media_type"][1]["states"][0]["state_type"], "ivr");
    assert_eq!(split["by_media_type"][0]["states"][0]["abandoned_here"], 2, "chat's bot: {split}");
    let series = get("timeseries?interval=day&breakdown=media_type").await;
    assert_eq!(series["buckets"][0]["started"], 3);
    assert_eq!(series["by_media_type"][0]["buckets"][0]["started"], 2, "{series}");
    assert_eq!(series["by_media_type"][1]["media_type"], "voice");
    assert_eq!(series["by_media_type"][1]["buckets"][0]["abandoned"], 1);
    assert!(get("dropoff").await.get("by_media_type").is_none());
    let bad = app.call(&cs.key, "GET", &format!("{base}/timeseries?breakdown=channel"), "").await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // A step may be alternatives: the voice journeys start in the IVR, the chat ones with a bot.
    let either = get("funnel?steps=ivr|bot").await;
    assert_eq!(either["steps"][0]["state_type"], "ivr|bot");
    assert_eq!(either["steps"][0]["any_of"], json!(["ivr", "bot"]));
    assert_eq!(either["steps"][0]["reached"], 3, "{either}");
    assert_eq!(get("funnel?steps=ivr").await["steps"][0]["reached"], 1);
    assert!(get("funnel?steps=ivr").await["steps"][0].get("any_of").is_none());
    let as_json = get("funnel?steps=%5B%5B%22ivr%22%2C%22bot%22%5D%5D").await; // [["ivr","bot"]]
    assert_eq!(as_json["steps"], either["steps"]);
    let typo = get("funnel?steps=ivr|bto").await;
    assert_eq!(typo["warnings"].as_array().unwrap().len(), 1, "{typo}");
    assert!(typo["warnings"][0].as_str().unwrap().starts_with(r#"step "bto""#), "{typo}");
    let seventeen = vec!["ivr"; 17].join("|");
    for steps in ["ivr|", "|bot", "%5B%5B%5D%5D", &seventeen] {
        let bad = app.call(&cs.key, "GET", &format!("{base}/funnel?steps={steps}"), "").await;
        assert_eq!(bad.status, 400, "{steps}: {}", bad.body);
    }

    // This period beside the one of the same length just before it.
    let (from, to) = (stamp(at(2, 0)), stamp(at(4, 0)));
    let compared = get(&format!("dropoff?from={from}&to={to}&compare=previous")).await;
    assert_eq!(compared["totals"]["started"], 2, "{compared}");
    assert_eq!(compared["previous"]["from"], "2026-11-20T00:00:00Z");
    assert_eq!(compared["previous"]["to"], "2026-11-20T02:00:00Z");
    assert_eq!(compared["previous"]["totals"]["started"], 1, "{compared}");
    assert_eq!(compared["previous"]["states"][0]["state_type"], "ivr");
    let funnel = get(&format!("funnel?steps=bot&from={from}&to={to}&compare=previous")).await;
    assert_eq!(
        (funnel["steps"][0]["reached"].clone(), funnel["previous"]["steps"][0]["reached"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(funnel["previous"]["started"], 1, "{funnel}");
    let series = get(&format!("timeseries?from={from}&to={to}&compare=previous")).await;
    assert_eq!(series["buckets"].as_array().unwrap().len(), 2, "{series}");
    assert_eq!(series["previous"]["buckets"][0]["start"], "2026-11-20T01:00:00Z", "{series}");
    assert!(get("dropoff").await.get("previous").is_none());
    for query in [
        "dropoff?compare=previous",
        &format!("funnel?steps=bot&from={from}&compare=previous"),
        &format!("timeseries?from={from}&to={to}&compare=next"),
    ] {
        let bad = app.call(&cs.key, "GET", &format!("{base}/{query}"), "").await;
        assert_eq!(bad.status, 400, "{query}: {}", bad.body);
    }

    // Latest abandoned first, and the cursor goes on to older ones.
    let first = get("abandoned?limit=2").await;
    let ids = crate::ui::ids;
    let next = first["next"].as_str().unwrap().to_string();
    let rest = get(&format!("abandoned?limit=2&after={next}")).await;
    let listed: Vec<String> = ids(&first).into_iter().chain(ids(&rest)).collect();
    abandoned.reverse();
    assert_eq!(listed, abandoned);
    assert!(rest["next"].is_null());
}

/// An abandoned journey says when the customer left (the client's time, which orders the list),
/// where and on which channel, how long they spent there, and what the conversation's context
/// held; a page of big contexts stops early and goes on with its cursor.
#[tokio::test]
async fn abandoned_journeys_tell_when_and_where_the_customer_left_with_the_conversations_context() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let key = cs.key.clone();
    let patch = async |path: &str, body: String| {
        let reply = app.call(&key, "PATCH", path, &body).await;
        assert_eq!(reply.status, 204, "{path}: {}", reply.body);
    };
    // Recorded first, left last: voice IVR, then chat with an agent, gone after three minutes.
    let a = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice",
                               "session_id": "conv-a", "timestamp": stamp(at(10, 0))}))
        .await;
    let ivr = cs.start_state(&a, json!({"state_type": "ivr", "timestamp": stamp(at(10, 0))})).await;
    cs.transition(&a, ivr, "agent", json!({"timestamp": stamp(at(10, 120)), "media_type": "chat"})).await;
    patch("/v1/account/acme/bots/conv-a/properties", r#"{"intent":"refund"}"#.into()).await;
    patch("/v1/account/acme/agents/conv-a/properties", r#"{"agent":"a1"}"#.into()).await;
    let ended = json!({"disposition": "customer_hangup", "timestamp": stamp(at(10, 300))});
    cs.ok(cs.post(&format!("/services/{a}/end"), ended).await).await;
    app.clock.advance(Duration::seconds(5));
    // Recorded later, left earlier (a client sending late); its conversation has no context.
    let b = cs
        .start_service(json!({"customer_id": "c2", "service_type": "billing", "media_type": "voice",
                               "interaction_id": "conv-b", "timestamp": stamp(at(9, 0))}))
        .await;
    let ended = json!({"disposition": "customer_hangup", "timestamp": stamp(at(9, 30))});
    cs.ok(cs.post(&format!("/services/{b}/end"), ended).await).await;

    let list = app.call(&key, "GET", "/v1/account/acme/analytics/abandoned", "").await.json();
    let services = list["services"].as_array().unwrap();
    assert_eq!(services.iter().map(|s| s["service_id"].as_str().unwrap()).collect::<Vec<_>>(), [&a, &b]);
    let left = &services[0];
    assert_eq!(left["ended_at"], ctxd::store::log::format_time(at(10, 300)), "{left}");
    assert_eq!(left["dropoff_state_type"], "agent");
    assert_eq!(left["media_type"], "voice", "the service's channel");
    assert_eq!(left["dropoff"]["media_type"], "chat", "the channel at the drop-off");
    assert_eq!(left["dropoff"]["time_in_step_ms"], 180_000);
    assert_eq!(left["conversation_id"], "conv-a");
    assert_eq!(left["context"], json!({"agents": {"agent": "a1"}, "bots": {"intent": "refund"}}));
    assert!(left["recorded_at"].is_string(), "{left}");
    assert_eq!(services[1]["conversation_id"], "conv-b");
    assert_eq!(services[1]["context"], json!({}));
    assert_eq!(services[1]["dropoff"], Value::Null);

    // Conversations with big contexts: a page holds about 4 MiB of them, then a cursor.
    let mut big = Vec::new();
    for n in 0..7 {
        let id = cs
            .start_service(json!({"customer_id": format!("b{n}"), "service_type": "sales",
                                   "session_id": format!("big-{n}"), "timestamp": stamp(at(11, n))}))
            .await;
        let value = "x".repeat(780_000);
        patch(&format!("/v1/account/acme/bots/big-{n}/properties"), json!({ "notes": value }).to_string())
            .await;
        let ended = json!({"disposition": "customer_hangup", "timestamp": stamp(at(11, 60 + n))});
        cs.ok(cs.post(&format!("/services/{id}/end"), ended).await).await;
        big.push(id);
    }
    let (mut listed, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = app
            .call(
                &key,
                "GET",
                &format!("/v1/account/acme/analytics/abandoned?service_type=sales&limit=100{cursor}"),
                "",
            )
            .await;
        assert_eq!(page.status, 200);
        assert!(page.body.len() < 6 * 1024 * 1024, "{} bytes", page.body.len());
        let page = page.json();
        pages += 1;
        listed.extend(
            page["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["service_id"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => cursor = format!("&after={}", next.replace('|', "%7C").replace('+', "%2B")),
            None => break,
        }
    }
    big.reverse();
    assert_eq!(listed, big, "each once, latest first");
    assert!(pages >= 2, "{pages} pages");
}

/// `format=csv`: every analytics endpoint answers a table whose figures are the JSON answer's.
#[tokio::test]
async fn every_analytics_answer_comes_as_csv_with_the_same_figures() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    for (n, (media, end)) in
        [("voice", "resolved"), ("chat", "customer_hangup"), ("voice", "customer_hangup")]
            .into_iter()
            .enumerate()
    {
        let opening = json!({"customer_id": format!("c{n}"), "service_type": "billing", "media_type": media,
                             "session_id": format!("=conv-{n}"), "timestamp": stamp(at(10, n as i64))});
        let id = cs.start_service(opening).await;
        let first = cs.start_state(&id, json!({"state_type": "ivr", "timestamp": stamp(at(10, 10))})).await;
        cs.transition(&id, first, "agent", json!({"timestamp": stamp(at(10, 20))})).await;
        let ended = json!({"disposition": end, "timestamp": stamp(at(10, 60))});
        cs.ok(cs.post(&format!("/services/{id}/end"), ended).await).await;
    }
    let base = "/v1/account/acme/analytics";
    let range = "from=2026-11-20T10:00:00Z&to=2026-11-20T11:00:00Z";
    for path in [
        format!("dropoff?{range}&compare=previous&breakdown=media_type"),
        format!("funnel?steps=ivr|bot,agent&{range}&compare=previous"),
        "transitions?service_type=billing".to_string(),
        format!("timeseries?interval=day&{range}&compare=previous"),
    ] {
        let json = app.call(&cs.key, "GET", &format!("{base}/{path}"), "").await.json();
        let reply = app.call(&cs.key, "GET", &format!("{base}/{path}&format=csv"), "").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type").as_deref(), Some("text/csv; charset=utf-8"));
        let mut lines = reply.body.split("\r\n").filter(|line| !line.is_empty());
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(
            (header[0], header[header.len() - 2], header[header.len() - 1]),
            ("section", "figure", "value")
        );
        // Every number of the JSON answer (the echoed query aside) is one row's value, in order.
        fn numbers(value: &Value, top: bool, out: &mut Vec<String>) {
            match value {
                Value::Object(fields) => {
                    for (name, field) in fields {
                        if !(top && (name == "query" || name == "warnings")) {
                            numbers(field, false, out);
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|item| numbers(item, false, out)),
                Value::Number(number) => out.push(number.to_string()),
                Value::Null => out.push(String::new()),
                _ => {}
            }
        }
        let mut expected = Vec::new();
        numbers(&json, true, &mut expected);
        let values: Vec<String> = lines.map(|line| line.rsplit(',').next().unwrap().to_string()).collect();
        let mut expected_sorted = expected.clone();
        let mut values_sorted = values.clone();
        expected_sorted.sort();
        values_sorted.sort();
        assert_eq!(values_sorted, expected_sorted, "{path}");
        assert!(!values.is_empty(), "{path}");
    }
    // A state's figures are labelled by its name.
    let dropoff = app.call(&cs.key, "GET", &format!("{base}/dropoff?format=csv"), "").await.body;
    assert!(dropoff.contains("states,agent,,entered,3\r\n"), "{dropoff}");
    assert!(dropoff.contains("totals,,(before first state),abandoned,2\r\n"), "{dropoff}");

    // The abandoned list: one service a row; the cursor in X-Next; a formula-like id quoted off.
    let json = app.call(&cs.key, "GET", &format!("{base}/abandoned?limit=1"), "").await.json();
    let reply = app.call(&cs.key, "GET", &format!("{base}/abandoned?limit=1&format=csv"), "").await;
    assert_eq!(reply.status, 200);
    let rows: Vec<&str> = reply.body.split("\r\n").filter(|line| !line.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{}", reply.body);
    assert!(rows[0].starts_with(
        "service_id,ended_at,service_type,media_type,dropoff_state_type,dropoff_media_type,time_in_step_ms"
    ));
    let service = &json["services"][0];
    assert!(
        rows[1].starts_with(&format!(
            "{},{},billing,",
            service["service_id"].as_str().unwrap(),
            service["ended_at"].as_str().unwrap()
        )),
        "{}",
        rows[1]
    );
    assert!(rows[1].contains(",'=conv-"), "{}", rows[1]);
    assert_eq!(reply.header("x-next").as_deref(), json["next"].as_str());
    let names = app.call(&cs.key, "GET", &format!("{base}/dimensions?format=csv"), "").await.body;
    assert_eq!(
        names,
        "dimension,name\r\nservice_type,billing\r\nmedia_type,chat\r\nmedia_type,voice\r\nstate_type,agent\r\nstate_type,ivr\r\n"
    );
    for bad in ["dropoff?format=xml", "abandoned?format=CSV", "dimensions?format="] {
        let reply = app.call(&cs.key, "GET", &format!("{base}/{bad}"), "").await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.json()["message"].as_str().unwrap().contains("format"), "{}", reply.body);
    }
}
