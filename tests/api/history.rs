//! Change history and as-of reads. A scripted history is written step by step; after every
//! step each covered GET's answer (status, `ETag`, body bytes) is recorded, and afterwards the
//! same GET with `as_of_seq` and with `as_of` for that step must answer exactly that.

use std::collections::BTreeMap;

use chrono::Duration;
use ctxd::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};
use crate::journeys::assert_cs_error;

const A: &str = "/v1/account/acme";
const CS: &str = "/genesys/1/cs";

/// What a GET answered, as compared byte for byte.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    etag: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer {
            status: reply.status,
            etag: reply.header("etag"),
            content_type: reply.header("content-type"),
            body: reply.body,
        }
    }
}

/// The state of the log after one step, and every covered GET's answer then.
struct Step {
    name: String,
    /// The log's last seq, when the step wrote something (a step that only lets time pass has
    /// no seq of its own: only `as_of` can address it).
    seq: Option<u64>,
    /// The server's time when the answers were recorded, as `recorded_at` writes times.
    at: String,
    /// (path template, answer); stand-in ids in the answer are listed in `stand_ins`.
    answers: Vec<(String, Answer)>,
    /// Ids not yet created at this step, and the stand-in used for them when recording.
    stand_ins: Vec<(String, String)>,
}

/// Drives a scripted history: `record` after each write, then `check` every step.
struct Script<'a> {
    app: &'a TestApp,
    key: String,
    /// GET paths, with `{name}` placeholders for ids the script creates.
    templates: Vec<String>,
    ids: BTreeMap<String, String>,
    steps: Vec<Step>,
    last_seq: u64,
}

/// The log's last seq and the time of its event, read from the SQLite file.
fn last_event(app: &TestApp) -> (u64, String) {
    let conn = app.connection();
    // The last event of acme's log: its seq is acme's position.
    conn.query_row(
        "SELECT seq, recorded_at FROM events WHERE account = 'acme' ORDER BY seq DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .unwrap()
}

fn with_param(path: &str, param: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{param}")
}

impl<'a> Script<'a> {
    fn new(app: &'a TestApp, key: &str, templates: &[&str]) -> Self {
        Script {
            app,
            key: key.to_string(),
            templates: templates.iter().map(|t| t.to_string()).collect(),
            ids: BTreeMap::new(),
            steps: Vec::new(),
            last_seq: last_event(app).0,
        }
    }

    fn id(&mut self, name: &str, id: &str) {
        self.ids.insert(name.to_string(), id.to_string());
    }

    /// `template` with every known id, and stand-ins for the others.
    fn path(&self, template: &str, stand_ins: &[(String, String)]) -> String {
        let mut path = template.to_string();
        for (name, id) in &self.ids {
            path = path.replace(&format!("{{{name}}}"), id);
        }
        for (name, stand_in) in stand_ins {
            path = path.replace(&format!("{{{name}}}"), stand_in);
        }
        path
    }

    async fn get(&self, path: &str) -> Answer {
        self.app.call(&self.key, "GET", path, "").await.into()
    }

    /// Records every GET's answer after a step, then lets a second pass, so that the next
    /// step's events have a later `recorded_at`.
    async fn record(&mut self, name: &str) {
        let (seq, _) = last_event(self.app);
        let wrote = (seq != self.last_seq).then_some(seq);
        self.last_seq = seq;
        let stand_ins: Vec<(String, String)> = ["s1", "s2", "customer"]
            .iter()
            .filter(|name| !self.ids.contains_key(**name))
            .map(|name| (name.to_string(), format!("not-yet-{name}")))
            .collect();
        let mut answers = Vec::new();
        for template in &self.templates {
            let answer = self.get(&self.path(template, &stand_ins)).await;
            answers.push((template.clone(), answer));
        }
        let at = ctxd::store::log::format_time(self.app.clock.now());
        self.steps.push(Step { name: name.to_string(), seq: wrote, at, answers, stand_ins });
        self.app.clock.advance(Duration::seconds(1));
    }

    /// Every step's answers, asked again with `as_of_seq` and `as_of`; returns the number of
    /// as-of GETs compared.
    async fn check(&self) -> usize {
        let mut compared = 0;
        let mut mismatches = Vec::new();
        for step in &self.steps {
            for (template, recorded) in &step.answers {
                let path = self.path(template, &[]);
                let mut expected_body = recorded.body.clone();
                for (name, stand_in) in &step.stand_ins {
                    if let Some(id) = self.ids.get(name) {
                        expected_body = expected_body.replace(stand_in.as_str(), id);
                    }
                }
                let expected = Answer { body: expected_body, ..recorded.clone() };
                let mut points = vec![format!("as_of={}", step.at)];
                if let Some(seq) = step.seq {
                    points.push(format!("as_of_seq={seq}"));
                }
                for point in points {
                    let answer = self.get(&with_param(&path, &point)).await;
                    compared += 1;
                    if answer != expected {
                        mismatches.push(format!(
                            "after {}: GET {path} {point}\n  then: {expected:?}\n  as of: {answer:?}",
                            step.name
                        ));
                    }
                }
            }
        }
        assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
        compared
    }
}

#[tokio::test]
async fn as_of_context_reads_answer_what_the_read_answered_then_byte_for_byte() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let templates = [
        "/v1/account/acme/bots/s1/properties",
        "/v1/account/acme/bots/s1/properties/",
        "/v1/account/acme/bots/s1/properties?include=a,c",
        "/v1/account/acme/bots/s1/properties/a",
        "/v1/account/acme/bots/s1/properties/b",
        "/v1/account/acme/bots/s1/properties/c",
        "/v1/account/acme/bots/s1/properties/t",
        "/v1/account/acme/bots/s2/properties",
        "/v1/account/acme/bots/properties",
        "/v1/account/acme/bots/properties/n",
        "/v1/account/acme/bots/__default__/properties",
    ];
    let mut script = Script::new(&app, &key, &templates);
    script.record("nothing yet").await;
    let write = |method: &'static str, path: String, body: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let reply = app.call(key, method, &path, body).await;
            assert!(reply.status < 300, "{method} {path}: {}", reply.body);
        }
    };

    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"a":1,"b":"x"}"#).await;
    script.record("patch").await;
    write("PUT", format!("{A}/bots/s1/properties/c"), "[1, 2.50, {\"z\": null}]").await;
    script.record("put").await;
    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"a":2}"#).await;
    script.record("patch again").await;
    write("DELETE", format!("{A}/bots/s1/properties/b"), "").await;
    script.record("delete property").await;
    write("PATCH", format!("{A}/bots/properties"), r#"{"n":true}"#).await;
    write("PATCH", format!("{A}/bots/s2/properties"), r#"{"other":"session"}"#).await;
    script.record("namespace property and another session").await;
    write("DELETE", format!("{A}/bots/s1/properties"), "").await;
    script.record("clear").await;
    write("POST", format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"sessionId":"s1"}"#).await;
    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"t":"temporary"}"#).await;
    script.record("ttl and a property that expires").await;
    app.clock.advance(Duration::seconds(5));
    script.record("expired, not yet swept").await;
    assert_eq!(ctxd::sweeper::sweep_once(&app.store).await.unwrap(), 1);
    script.record("sweeper recorded the expiry").await;
    write("POST", format!("{A}/namespace/bots/session?ttlSecond=0"), r#"{"sessionId":"s1"}"#).await;
    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"a":3,"c":"again"}"#).await;
    script.record("written again").await;
    write("DELETE", format!("{A}/namespace/bots/session/s1"), "").await;
    script.record("session deleted").await;
    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"a":4}"#).await;
    script.record("written after the session delete").await;
    write("DELETE", format!("{A}/bots"), "").await;
    script.record("namespace deleted").await;
    write("PATCH", format!("{A}/bots/s1/properties"), r#"{"a":5}"#).await;
    script.record("written in the namespace created again").await;

    let compared = script.check().await;
    assert!(compared > 300, "{compared}");
    // The expired property was absent as of the time it had expired, before the sweeper ran.
    let expired = &script.steps.iter().find(|step| step.name == "expired, not yet swept").unwrap();
    let t = &expired.answers.iter().find(|(path, _)| path.ends_with("/properties/t")).unwrap().1;
    assert_eq!(t.status, 404);
    assert_eq!(expired.seq, None);
}

#[tokio::test]
async fn as_of_journey_reads_answer_what_the_read_answered_then_byte_for_byte() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let everything = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true";
    let templates = [
        "/genesys/1/cs/services/{s1}".to_string(),
        format!("/genesys/1/cs/services/{{s1}}?{everything}&extensions=*,State.*,Task.*"),
        "/genesys/1/cs/services/{s1}/states".to_string(),
        "/genesys/1/cs/services/{s1}/states/active?active_tasks=true".to_string(),
        "/genesys/1/cs/services/{s1}/states/completed?extensions=*".to_string(),
        "/genesys/1/cs/services/{s1}/states/1?active_tasks=true&completed_tasks=true".to_string(),
        "/genesys/1/cs/services/{s1}/states/2?extensions=*".to_string(),
        "/genesys/1/cs/services/{s1}/tasks".to_string(),
        "/genesys/1/cs/services/{s1}/tasks/active".to_string(),
        "/genesys/1/cs/services/{s1}/tasks/completed?extensions=*".to_string(),
        "/genesys/1/cs/services/{s1}/tasks/1?extensions=*".to_string(),
        format!("/genesys/1/cs/services/{{s2}}?{everything}"),
        "/genesys/1/cs/services/{s2}/states".to_string(),
        "/genesys/1/cs/customers/{customer}/services".to_string(),
        format!("/genesys/1/cs/customers/{{customer}}/services/active?{everything}&extensions=*"),
        "/genesys/1/cs/customers/{customer}/services/completed".to_string(),
        "/genesys/1/cs/customers/{customer}/journey".to_string(),
        "/genesys/1/cs/services/anonymous/408-555-0101".to_string(),
        "/genesys/1/cs/services/anonymous/408-555-0101/active".to_string(),
    ];
    let templates: Vec<&str> = templates.iter().map(String::as_str).collect();
    let mut script = Script::new(&app, &key, &templates);
    let post = |path: String, body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let reply = app.call(key, "POST", &format!("{CS}{path}"), &body.to_string()).await;
            assert!(reply.status < 300, "POST {path}: {}", reply.body);
            if reply.body.is_empty() { Value::Null } else { reply.json() }
        }
    };
    let put = |path: String, body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let reply = app.call(key, "PUT", &format!("{CS}{path}"), &body.to_string()).await;
            assert!(reply.status < 300, "PUT {path}: {}", reply.body);
        }
    };
    script.record("nothing yet").await;

    let customer = post("/profiles".into(), json!({"EmailAddress": "ann@x.org"})).await;
    script.id("customer", customer["customer_id"].as_str().unwrap());
    script.record("profile").await;
    let start = json!({"contact_key": "408-555-0101", "service_type": "billing", "media_type": "voice",
                       "Cart": {"items": 1}});
    let s1 = post("/services/start".into(), start).await["service_id"].as_str().unwrap().to_string();
    script.id("s1", &s1);
    script.record("anonymous service started").await;
    post(format!("/services/{s1}/states/start"), json!({"state_type": "ivr", "media_type": "voice"})).await;
    script.record("state started").await;
    post(format!("/services/{s1}/tasks/start"), json!({"task_type": "verify", "state_id": 1})).await;
    script.record("task started").await;
    let transition = json!({"from": {"state_id": 1, "disposition": "identified"},
                            "to": {"state_type": "queue"}, "media_type": "voice"});
    post(format!("/services/{s1}/states/transition"), transition).await;
    script.record("transition: the task ends with its state").await;
    put(format!("/services/{s1}/extensions/Cart"), json!({"items": 2})).await;
    put(format!("/services/{s1}/states/2/extensions/Notes"), json!([{"n": 1}])).await;
    script.record("extensions replaced").await;
    let customer_id = script.ids["customer"].clone();
    post(format!("/customers/{customer_id}/services/{s1}"), json!({"media_type": "chat"})).await;
    script.record("associated with the customer").await;
    post(format!("/services/{s1}/tasks/start"), json!({"task_type": "callback", "state_id": 2})).await;
    post(format!("/services/{s1}/tasks/2/end"), json!({"disposition": "done"})).await;
    script.record("a second task, ended").await;
    post(format!("/services/{s1}/end"), json!({"disposition": "resolved"})).await;
    script.record("service ended").await;
    let start = json!({"customer_id": customer_id, "service_type": "sales", "media_type": "chat"});
    let s2 = post("/services/start".into(), start).await["service_id"].as_str().unwrap().to_string();
    script.id("s2", &s2);
    script.record("second service").await;
    post(format!("/services/{s2}/states/start"), json!({"state_type": "agent", "media_type": "chat"})).await;
    put(format!("/profiles/{customer_id}"), json!({"EmailAddress": "ann@y.org"})).await;
    script.record("second service's state, profile replaced").await;
    let deleted = app.call(&key, "DELETE", &format!("{CS}/services/{s2}"), "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    script.record("second service deleted").await;

    let compared = script.check().await;
    assert!(compared > 400, "{compared}");
}

#[tokio::test]
async fn as_of_before_anything_existed_answers_as_for_something_that_never_existed() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let (before, _) = last_event(&app);
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1}"#).await;
    let empty = app.call(&key, "GET", &format!("{A}/bots/s/properties?as_of_seq={before}"), "").await;
    assert_eq!((empty.status, empty.body.as_str(), empty.etag()), (200, "{}", "\"0\"".to_string()));
    let absent = app.call(&key, "GET", &format!("{A}/bots/s/properties/a?as_of_seq=0"), "").await;
    assert_eq!(absent.assert_error(404), "property 'a' not found");
    let start = json!({"customer_id": "c1", "service_type": "billing"}).to_string();
    let started = app.call(&key, "POST", &format!("{CS}/services/start"), &start).await;
    let service = started.json()["service_id"].as_str().unwrap().to_string();
    let (seq, _) = last_event(&app);
    let early = app.call(&key, "GET", &format!("{CS}/services/{service}?as_of_seq={}", seq - 1), "").await;
    assert_cs_error(&early, 404);
    let journey =
        app.call(&key, "GET", &format!("{CS}/customers/c1/journey?as_of_seq={}", seq - 1), "").await;
    assert_cs_error(&journey, 404);
    let now = app.call(&key, "GET", &format!("{CS}/customers/c1/journey?as_of_seq={seq}"), "").await;
    assert_eq!(now.status, 200, "{}", now.body);
}

#[tokio::test]
async fn bad_as_of_parameters_are_400_in_each_api_family_shape() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1}"#).await;
    let start = json!({"customer_id": "c1"}).to_string();
    let service = app.call(&key, "POST", &format!("{CS}/services/start"), &start).await.json()["service_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (last, at) = last_event(&app);
    let future = ctxd::store::log::format_time(app.clock.now() + Duration::seconds(1));
    let bad = [
        format!("as_of={at}&as_of_seq={last}"),
        "as_of=yesterday".to_string(),
        "as_of=2026-01-01".to_string(),
        "as_of_seq=-1".to_string(),
        "as_of_seq=one".to_string(),
        format!("as_of_seq={}", last + 1),
        format!("as_of={future}"),
    ];
    for params in &bad {
        for path in [format!("{A}/bots/s/properties"), format!("{A}/bots/s/properties/a")] {
            let message = app.call(&key, "GET", &format!("{path}?{params}"), "").await.assert_error(400);
            assert!(message.contains("as_of"), "{message}");
        }
        for path in [
            format!("{CS}/services/{service}"),
            format!("{CS}/services/{service}/states"),
            format!("{CS}/services/{service}/tasks/1"),
            format!("{CS}/customers/c1/services/active"),
            format!("{CS}/customers/c1/journey"),
        ] {
            let reply = app.call(&key, "GET", &with_param(&path, params), "").await;
            assert!(assert_cs_error(&reply, 400).contains("as_of"), "{}", reply.body);
        }
    }
    // Reads that answer from today's projections only refuse a point rather than ignore it.
    for path in [format!("{A}?as_of_seq=1"), format!("{A}/bots/session-ids?as_of={at}")] {
        let message = app.call(&key, "GET", &path, "").await.assert_error(400);
        assert!(message.contains("does not answer as_of"), "{message}");
    }
    for path in [format!("{CS}/settings?as_of_seq=1"), format!("{CS}/profiles/p1?as_of_seq=1")] {
        assert_cs_error(&app.call(&key, "GET", &path, "").await, 400);
    }
    let beyond = app.call(&key, "GET", &format!("{A}/bots/s/properties?as_of_seq={}", last + 5), "").await;
    assert!(beyond.assert_error(400).contains("beyond the end of the account's log"));
}

/// The context script of the history tests: (request id, method, path, body).
async fn write_context_history(app: &TestApp, key: &str) {
    let steps = [
        ("r1", "PATCH", format!("{A}/bots/s1/properties"), r#"{"a":1,"b":"x"}"#),
        ("r2", "PUT", format!("{A}/bots/s1/properties/a"), "2"),
        ("r3", "DELETE", format!("{A}/bots/s1/properties/b"), ""),
        ("r4", "POST", format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"sessionId":"s1"}"#),
        ("r5", "PATCH", format!("{A}/bots/s1/properties"), r#"{"t":true,"a":3}"#),
        ("r6", "PATCH", format!("{A}/bots/properties"), r#"{"n":"namespace"}"#),
    ];
    for (request_id, method, path, body) in &steps {
        let headers = [("x-request-id", *request_id), ("content-type", "application/json")];
        let reply = app.call_with(key, method, path, &headers, body).await;
        assert!(reply.status < 300, "{}", reply.body);
        app.clock.advance(Duration::seconds(1));
    }
    app.clock.advance(Duration::seconds(10));
    assert_eq!(ctxd::sweeper::sweep_once(&app.store).await.unwrap(), 1);
    let headers = [("x-request-id", "r7")];
    app.call_with(key, "DELETE", &format!("{A}/bots/s1/properties"), &headers, "").await;
    app.call_with(key, "DELETE", &format!("{A}/bots"), &[("x-request-id", "r8")], "").await;
}

#[tokio::test]
async fn session_history_lists_every_change_with_old_and_new_values_actor_and_request_id() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    write_context_history(&app, &key).await;
    let events = app.events();
    let actor = events.iter().find(|event| event.3 == "PropertiesPatched").unwrap().5["actor"].clone();
    assert!(actor.as_str().unwrap().starts_with("key:"));
    let patch = events.iter().find(|event| event.4["properties"]["t"] == json!(true)).unwrap();
    let t_expiry: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(patch.4["expires_at"].clone()).unwrap();
    // History writes times as `recorded_at` is written.
    let t_expiry = ctxd::store::log::format_time(t_expiry);

    let reply = app.call(&key, "GET", &format!("{A}/bots/s1/history"), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let history = reply.json();
    let entries = history["history"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value, Value)> = entries
        .iter()
        .map(|e| {
            (e["event_type"].clone(), e["actor"].clone(), e["request_id"].clone(), e["properties"].clone())
        })
        .collect();
    let expected = [
        (
            json!("PropertiesPatched"),
            actor.clone(),
            json!("r1"),
            json!({"a": {"old": null, "new": 1}, "b": {"old": null, "new": "x"}}),
        ),
        (json!("PropertiesPatched"), actor.clone(), json!("r2"), json!({"a": {"old": 1, "new": 2}})),
        (json!("PropertyDeleted"), actor.clone(), json!("r3"), json!({"b": {"old": "x", "new": null}})),
        (json!("SessionTtlSet"), actor.clone(), json!("r4"), json!({})),
        (
            json!("PropertiesPatched"),
            actor.clone(),
            json!("r5"),
            json!({"a": {"old": 2, "new": 3, "expires_at": t_expiry},
                   "t": {"old": null, "new": true, "expires_at": t_expiry}}),
        ),
        (
            json!("PropertiesExpired"),
            json!("system:sweeper"),
            entries[5]["request_id"].clone(),
            json!({"a": {"old": 3, "new": null}, "t": {"old": true, "new": null}}),
        ),
    ];
    assert_eq!(summary[..6], expected[..], "{history:#}");
    assert_eq!(entries[3]["ttl_second"], 5);
    // Clearing an already empty session records nothing; the namespace delete deletes the session.
    assert_eq!(entries.len(), 7, "{history:#}");
    assert_eq!(entries[6]["event_type"], "SessionDeleted");
    assert_eq!(entries[6]["cause"], "namespace_deleted");
    assert_eq!(entries[6]["request_id"], "r8");
    assert_eq!(entries[6]["properties"], json!({}));
    assert!(history.get("next_after").is_none());
    for (entry, event) in entries.iter().zip(events.iter().filter(|event| event.1 == "ctx/acme/bots/s1")) {
        assert_eq!(entry["seq"], event.0);
        assert_eq!(entry["event_type"], event.3.as_str());
        assert!(entry["recorded_at"].as_str().unwrap().ends_with('Z'));
    }

    let one = app.call(&key, "GET", &format!("{A}/bots/s1/properties/a/history"), "").await.json();
    let changes: Vec<Value> =
        one["history"].as_array().unwrap().iter().map(|e| e["properties"].clone()).collect();
    assert_eq!(
        changes,
        vec![
            json!({"a": {"old": null, "new": 1}}),
            json!({"a": {"old": 1, "new": 2}}),
            json!({"a": {"old": 2, "new": 3, "expires_at": t_expiry}}),
            json!({"a": {"old": 3, "new": null}}),
        ]
    );

    let namespace = app.call(&key, "GET", &format!("{A}/bots/history"), "").await.json();
    let types: Vec<&str> =
        namespace["history"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["PropertiesPatched", "SessionDeleted"]);
    assert_eq!(namespace["history"][0]["request_id"], "r6");
    assert_eq!(namespace["history"][1]["properties"], json!({"n": {"old": "namespace", "new": null}}));
    let same = app.call(&key, "GET", &format!("{A}/bots/__default__/history"), "").await.json();
    assert_eq!(same, namespace);
    let n = app.call(&key, "GET", &format!("{A}/bots/properties/n/history"), "").await.json();
    assert_eq!(n["history"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn history_pages_follow_next_after_to_the_end() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for value in 0..7 {
        app.call(&key, "PUT", &format!("{A}/bots/s/properties/p"), &value.to_string()).await;
        app.call(&key, "PUT", &format!("{A}/bots/s/properties/q"), &value.to_string()).await;
    }
    for path in [format!("{A}/bots/s/history"), format!("{A}/bots/s/properties/p/history")] {
        let whole = app.call(&key, "GET", &path, "").await.json();
        let whole = whole["history"].as_array().unwrap().clone();
        let mut pages = Vec::new();
        let mut after = 0;
        loop {
            let page = app.call(&key, "GET", &format!("{path}?limit=3&after={after}"), "").await.json();
            let entries = page["history"].as_array().unwrap();
            assert!(entries.len() <= 3);
            pages.extend(entries.iter().cloned());
            match page.get("next_after") {
                Some(next) => {
                    assert_eq!(next, &entries.last().unwrap()["seq"]);
                    after = next.as_u64().unwrap();
                }
                None => break,
            }
        }
        assert_eq!(pages, whole, "{path}");
    }
    let p = app.call(&key, "GET", &format!("{A}/bots/s/properties/p/history?limit=2"), "").await.json();
    assert_eq!(p["history"][1]["properties"]["p"], json!({"old": 0, "new": 1}));
    for bad in ["limit=0", "limit=1001", "after=-1", "after=x", "as_of_seq=1", "page=1"] {
        app.call(&key, "GET", &format!("{A}/bots/s/history?{bad}"), "").await.assert_error(400);
    }
    app.call(&key, "GET", &format!("{A}/bots/nobody/history"), "").await.assert_error(404);
    app.call(&key, "GET", &format!("{A}/bots/s/properties/never/history"), "").await.assert_error(404);
    app.call(&key, "GET", &format!("{A}/bots/s%01/history"), "").await.assert_error(400);
}

#[tokio::test]
async fn service_history_lists_the_service_its_states_and_tasks_with_their_payloads() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let start = json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice"}).to_string();
    let headers = [("x-request-id", "start-1")];
    let started = app.call_with(&key, "POST", &format!("{CS}/services/start"), &headers, &start).await;
    let service = started.json()["service_id"].as_str().unwrap().to_string();
    let calls = [
        ("POST", format!("{CS}/services/{service}/states/start"), json!({"state_type": "ivr"})),
        ("POST", format!("{CS}/services/{service}/tasks/start"), json!({"task_type": "t", "state_id": 1})),
        ("PUT", format!("{CS}/services/{service}/extensions/Cart"), json!({"items": 1})),
        ("POST", format!("{CS}/customers/c2/services/{service}"), json!({})),
        ("POST", format!("{CS}/services/{service}/end"), json!({"disposition": "done"})),
    ];
    for (method, path, body) in &calls {
        let reply = app.call(&key, method, path, &body.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let history = app.call(&key, "GET", &format!("{CS}/services/{service}/history"), "").await;
    assert_eq!(history.status, 200, "{}", history.body);
    let history = history.json();
    let entries = history["history"].as_array().unwrap();
    let stream = format!("svc/acme/{service}");
    let events: Vec<_> = app.events().into_iter().filter(|event| event.1 == stream).collect();
    assert_eq!(entries.len(), events.len());
    for (entry, event) in entries.iter().zip(&events) {
        assert_eq!(entry["seq"], event.0);
        assert_eq!(entry["event_type"], event.3.as_str());
        assert_eq!(entry["change"], event.4);
        assert_eq!(entry["actor"], event.5["actor"]);
        assert_eq!(entry["request_id"], event.5["request_id"]);
    }
    let types: Vec<&str> = entries.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ServiceStarted",
            "StateStarted",
            "TaskStarted",
            "ExtensionReplaced",
            "ServiceAssociated",
            "TaskEnded",
            "StateEnded",
            "ServiceEnded"
        ]
    );
    assert_eq!(entries[0]["request_id"], "start-1");
    assert_eq!(entries[4]["change"]["previous_customer_id"], "c1");

    let page = app.call(&key, "GET", &format!("{CS}/services/{service}/history?limit=5"), "").await.json();
    assert_eq!(page["history"].as_array().unwrap().len(), 5);
    let after = page["next_after"].as_u64().unwrap();
    let rest = app.call(&key, "GET", &format!("{CS}/services/{service}/history?after={after}"), "").await;
    assert_eq!(rest.json()["history"].as_array().unwrap().len(), 3);
    assert_cs_error(&app.call(&key, "GET", &format!("{CS}/services/nothing/history"), "").await, 404);
    let bad = app.call(&key, "GET", &format!("{CS}/services/{service}/history?limit=0"), "").await;
    assert_cs_error(&bad, 400);
}

#[tokio::test]
async fn another_accounts_key_is_refused_on_every_history_and_as_of_route() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let other = app.account("globex").await;
    // globex's own log is longer than acme's: its as-of reads below are not beyond its end.
    for round in 0..8 {
        let body = json!({ "round": round }).to_string();
        app.call(&other, "PATCH", "/v1/account/globex/bots/s/properties", &body).await;
    }
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/properties"), r#"{"a":1}"#).await;
    let start = json!({"customer_id": "c1"}).to_string();
    let service = app.call(&key, "POST", &format!("{CS}/services/start"), &start).await.json()["service_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (last, _) = last_event(&app);
    for path in [
        format!("{A}/bots/s/history"),
        format!("{A}/bots/s/properties/a/history"),
        format!("{A}/bots/history"),
        format!("{A}/bots/properties/a/history"),
        format!("{A}/bots/s/properties?as_of_seq={last}"),
        format!("{A}/bots/s/properties/a?as_of_seq={last}"),
    ] {
        assert_eq!(app.call(&key, "GET", &path, "").await.status, 200, "{path}");
        app.call(&other, "GET", &path, "").await.assert_error(403);
        app.call("not-a-key", "GET", &path, "").await.assert_error(403);
    }
    // The journeys API has no account in its paths: the key decides it, and naming another
    // account in ContactCenterId is refused; without it, another account's service is unknown.
    for path in [
        format!("{CS}/services/{service}/history"),
        format!("{CS}/services/{service}?as_of_seq={last}"),
        format!("{CS}/services/{service}/states?as_of_seq={last}"),
    ] {
        assert_eq!(app.call(&key, "GET", &path, "").await.status, 200, "{path}");
        let refused = app.call_with(&other, "GET", &path, &[("contactcenterid", "acme")], "").await;
        assert_cs_error(&refused, 403);
        assert_cs_error(&app.call("not-a-key", "GET", &path, "").await, 403);
        assert_cs_error(&app.call(&other, "GET", &path, "").await, 404);
    }
    let journey = format!("{CS}/customers/c1/journey?as_of_seq={last}");
    assert_eq!(app.call(&other, "GET", &journey, "").await.status, 404);
    let services = format!("{CS}/customers/c1/services?as_of_seq={last}");
    assert_eq!(app.call(&other, "GET", &services, "").await.body, "[]");
}

#[tokio::test]
async fn a_seq_inside_a_command_reads_as_after_the_whole_command() {
    let app = spawn_app().await;
    let cs = crate::journeys::Cs::new(&app, "acme").await;
    let service = cs.start_service(json!({"customer_id": "c1", "service_type": "billing"})).await;
    cs.start_state(&service, json!({"state_type": "ivr"})).await;
    cs.ok(cs.post(&format!("/services/{service}/end"), json!({})).await).await;
    // Ending the service appended the state's end, then the service's: two seqs of one command.
    let history = cs.ok(cs.get(&format!("/services/{service}/history")).await).await;
    let entries = history["history"].as_array().unwrap();
    let types: Vec<&str> = entries.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ServiceStarted", "StateStarted", "StateEnded", "ServiceEnded"]);
    let (inside, end) = (entries[2]["seq"].as_u64().unwrap(), entries[3]["seq"].as_u64().unwrap());
    let path = |seq: u64| format!("/services/{service}?completed_states=true&as_of_seq={seq}");
    let (at_inside, at_end) = (cs.get(&path(inside)).await, cs.get(&path(end)).await);
    assert_eq!((at_inside.status, at_inside.etag()), (200, "\"4\"".to_string()));
    assert_eq!(at_inside.body, at_end.body);
    assert_eq!(at_end.body, cs.get(&format!("/services/{service}?completed_states=true")).await.body);
}
