//! Commands too large for one step of the writer proceed in bounded steps between other
//! accounts' writes: a namespace delete reads as done at once, refuses writes until it is, and
//! resumes after a stop; a customer erasure removes the profile at once and the services in
//! steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ctxd::domain::context::StepBound;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::journeys::{Cs, assert_cs_error};

const A: &str = "/v1/account/acme";

/// `sessions` sessions of two properties each in namespace `big`.
async fn fill(app: &TestApp, key: &str, sessions: usize) {
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(32) {
        let writes = chunk.iter().map(|i| {
            let path = format!("{A}/big/s{i:04}/properties");
            async move { app.call(key, "PATCH", &path, r#"{"a":1,"b":"two"}"#).await.status }
        });
        assert!(join_all(writes).await.into_iter().all(|status| status == 204));
    }
}

/// Polls the delete's `Location` until it says the delete is done.
async fn wait_until_deleted(app: &TestApp, key: &str, location: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = app.call(key, "GET", location, "").await.json();
        if status["deleting"] == false {
            assert_eq!(status["sessionsLeft"], 0, "{status}");
            return;
        }
        assert!(Instant::now() < deadline, "the delete did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Account `other`, writing one property after another until stopped.
struct Neighbour {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<()>,
}

impl Neighbour {
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.writer.await.unwrap();
    }
}

async fn keep_writing(app: &Arc<TestApp>) -> Neighbour {
    let other = app.account("other").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/v1/account/other/ns/s{}/properties", i % 10);
                assert_eq!(app.call(&other, "PATCH", &path, &format!(r#"{{"n":{i}}}"#)).await.status, 204);
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    Neighbour { stop, writer }
}

/// Asserts that some of account `other`'s events were committed between the two ids.
fn other_wrote_between(app: &TestApp, first: u64, last: u64) {
    let between = events_of(app, "other").iter().filter(|e| e.0 > first && e.0 < last).count();
    assert!(between > 0, "no write of the other account between the first and the last step");
}

/// Events of `account` as (store-wide id, seq, type, data, meta), in commit order.
fn events_of(app: &TestApp, account: &str) -> Vec<(u64, u64, String, Value, Value)> {
    let conn = app.connection();
    let mut statement = conn
        .prepare("SELECT id, seq, event_type, data, meta FROM events WHERE account = ?1 ORDER BY id")
        .unwrap();
    statement
        .query_map([account], |row| {
            let json = |index: usize| -> ctxd::store::db::Result<Value> {
                Ok(serde_json::from_str(&crate::helpers::stored_text(row, index)?).unwrap())
            };
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, json(3)?, json(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_large_namespace_delete_reads_as_done_at_once_and_ends_in_steps_between_other_writes() {
    let step = StepBound { items: 7, rows: 20 };
    let app = Arc::new(spawn_app_with(|config| config.writer.step = step).await);
    let key = app.account("acme").await;
    fill(&app, &key, 150).await;
    // A session of more properties than a step's bound goes in a step of its own, and sessions
    // with only a TTL setting are deleted too.
    let wide: serde_json::Map<String, Value> = (0..50).map(|i| (format!("p{i}"), json!(i))).collect();
    let wide = Value::Object(wide).to_string();
    assert_eq!(app.call(&key, "PATCH", &format!("{A}/big/wide/properties"), &wide).await.status, 204);
    for i in 0..5 {
        let body = format!(r#"{{"sessionId":"timed{i}"}}"#);
        let reply = app.call(&key, "POST", &format!("{A}/namespace/big/session?ttlSecond=600"), &body).await;
        assert!(reply.status < 300, "{}", reply.body);
    }
    let before = events_of(&app, "acme").last().unwrap().1;

    let other = keep_writing(&app).await;

    let reply = app.call(&key, "DELETE", &format!("{A}/big"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").expect("a 202 says where to follow the delete");
    assert_eq!(location, "/v1/account/acme/namespace/big/deletion");
    let status = reply.json();
    assert_eq!(status["namespace"], "big");
    assert_eq!(status["deleting"], true);
    assert!(status["sessionsLeft"].as_u64().unwrap() <= 156, "{status}");

    // From the first step, the namespace and every session in it read as deleted…
    assert_eq!(app.call(&key, "GET", &format!("{A}/big/s0001/properties"), "").await.body, "{}");
    assert!(app.call(&key, "GET", &format!("{A}/big/s0149/properties/a"), "").await.status == 404);
    assert_eq!(app.call(&key, "GET", &format!("{A}/big/session-ids"), "").await.json(), json!([]));
    assert_eq!(app.call(&key, "GET", &format!("{A}/namespace/big/session"), "").await.json(), json!([]));
    let listed = app.call(&key, "GET", A, "").await.json();
    assert!(listed.as_array().unwrap().iter().all(|ns| ns["name"] != "big"), "{listed}");
    // …also when read as of the delete's start; just before it, the session was there.
    let as_of = |seq: u64| format!("{A}/big/s0001/properties?as_of_seq={seq}");
    assert_eq!(app.call(&key, "GET", &as_of(before + 1), "").await.body, "{}");
    assert_eq!(app.call(&key, "GET", &as_of(before), "").await.json(), json!({"a": 1, "b": "two"}));
    // …and nothing may be written to it until the delete is done.
    let refused = app.call(&key, "PATCH", &format!("{A}/big/s0001/properties"), r#"{"c":3}"#).await;
    assert!(refused.assert_error(409).contains("being deleted"));
    app.call(&key, "POST", A, r#"{"name":"big"}"#).await.assert_error(409);
    // Asking again answers where it stands.
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/big"), "").await.status, 202);

    wait_until_deleted(&app, &key, &location).await;
    other.stop().await;

    let events = events_of(&app, "acme");
    let started = events.iter().position(|e| e.2 == "NamespaceDeletionStarted").unwrap();
    assert_eq!(events.iter().filter(|e| e.2 == "NamespaceDeletionStarted").count(), 1);
    let steps = &events[started + 1..];
    assert_eq!(steps.last().unwrap().2, "NamespaceDeleted");
    let deleted: Vec<&str> = steps
        .iter()
        .filter(|e| e.2 == "SessionDeleted")
        .map(|e| e.3["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 156, "each session once");
    assert!(deleted.windows(2).all(|pair| pair[0] < pair[1]), "in id order, none twice");
    // Each step (one request id) within the bound; the wide session in a step of its own.
    let mut by_step: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for event in steps.iter().filter(|e| e.2 == "SessionDeleted") {
        assert_eq!(event.4["actor"], "system:namespace-delete");
        by_step
            .entry(event.4["request_id"].as_str().unwrap())
            .or_default()
            .push(event.3["session_id"].as_str().unwrap());
    }
    assert!(by_step.len() >= 156 / 7, "{} steps", by_step.len());
    assert!(by_step.values().all(|sessions| sessions.len() <= 7));
    assert!(by_step.values().any(|sessions| sessions == &["wide"]));
    // The other account's writes were committed between the steps.
    let (first, last) = (events[started].0, events.last().unwrap().0);
    other_wrote_between(&app, first, last);

    assert!(app.verify().mismatch.is_none(), "{:?}", app.verify().mismatch);
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/big"), "").await.status, 204);
    assert_eq!(app.call(&key, "PATCH", &format!("{A}/big/s0001/properties"), r#"{"c":3}"#).await.status, 204);
    assert_eq!(app.call(&key, "GET", &format!("{A}/big/s0001/properties"), "").await.json(), json!({"c": 3}));
}

#[tokio::test]
async fn a_namespace_delete_that_a_stop_interrupts_resumes_on_start() {
    let app = spawn_app_with(|config| config.writer.step = StepBound { items: 1, rows: 1 }).await;
    let key = app.account("acme").await;
    fill(&app, &key, 1000).await;
    let reply = app.call(&key, "DELETE", &format!("{A}/big"), "").await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap();
    let mut done_before_restart = 0;
    let app = app
        .restart_with(|dir| {
            let conn = crate::helpers::raw_connection(dir);
            done_before_restart = conn
                .query_row("SELECT count(*) FROM events WHERE event_type = 'SessionDeleted'", [], |row| {
                    row.get(0)
                })
                .unwrap();
        })
        .await;
    assert!(done_before_restart < 1000, "the delete ended before the stop: nothing to resume");
    wait_until_deleted(&app, &key, &location).await;
    let events = events_of(&app, "acme");
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e.2 == "SessionDeleted")
        .map(|e| e.3["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 1000, "each session once, {done_before_restart} of them before the stop");
    assert!(deleted.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(events.last().unwrap().2, "NamespaceDeleted");
    assert!(app.verify().mismatch.is_none(), "{:?}", app.verify().mismatch);
}

#[tokio::test]
async fn a_customer_with_many_services_is_erased_in_steps_between_other_writes() {
    let app =
        Arc::new(spawn_app_with(|config| config.writer.step = StepBound { items: 3, rows: 1000 }).await);
    let cs = Cs::new(&app, "acme").await;
    let created = cs.post("/profiles", json!({"FirstName": "Ann", "EmailAddress": "ann@example.org"})).await;
    let ann = created.json()["customer_id"].as_str().unwrap().to_string();
    let mut services = Vec::new();
    for i in 0..10 {
        let body = json!({"customer_id": ann, "service_type": "billing", "Reason": {"text": format!("ann's secret {i}")}});
        services.push(cs.start_service(body).await);
    }
    services.sort();
    let bobs = cs
        .start_service(
            json!({"contact_key": "bob", "service_type": "billing", "Reason": {"text": "bob's question"}}),
        )
        .await;
    let other = keep_writing(&app).await;

    let reply = cs.post(&format!("/profiles/{ann}/erase"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap();
    assert_eq!(location, format!("/genesys/1/cs/profiles/{ann}/erasure"));
    assert_eq!(reply.json()["erasing"], true);
    // The profile is gone from the first step.
    assert_cs_error(&cs.get(&format!("/profiles/{ann}")).await, 404);
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.call(&cs.key, "GET", &location, "").await.json()["erasing"] == true {
        assert!(Instant::now() < deadline, "the erasure did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.stop().await;

    let events = events_of(&app, "acme");
    let log: String = events.iter().map(|e| e.3.to_string()).collect();
    assert!(!log.contains("ann's secret") && !log.contains("ann@example.org"), "personal data left");
    assert!(log.contains("bob's question"));
    let started = events.iter().position(|e| e.2 == "CustomerErasureStarted").unwrap();
    assert!(!events[started].3["redacted"].as_array().unwrap().is_empty(), "the profile's redactions");
    let steps = &events[started + 1..];
    let erased: Vec<&Value> = steps.iter().filter(|e| e.2 == "ServiceErased").map(|e| &e.3).collect();
    let ids: Vec<&str> = erased.iter().map(|e| e["service_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        services.iter().map(String::as_str).collect::<Vec<_>>(),
        "each service once, in id order"
    );
    assert!(
        erased.iter().all(|e| !e["redacted"].as_array().unwrap().is_empty()),
        "each records its redactions"
    );
    let mut by_step: std::collections::BTreeMap<&str, usize> = Default::default();
    for event in steps.iter().filter(|e| e.2 == "ServiceErased") {
        assert_eq!(event.4["actor"], "system:customer-erasure");
        *by_step.entry(event.4["request_id"].as_str().unwrap()).or_default() += 1;
    }
    assert!(by_step.values().all(|services| *services <= 3), "{by_step:?}");
    let last = steps.last().unwrap();
    assert_eq!(last.2, "CustomerErased");
    assert_eq!(last.3["services"], json!(services));
    other_wrote_between(&app, events[started].0, last.0);

    let service = cs.service(&services[0], "extensions=*").await;
    assert_eq!(service["Reason"], "[erased]", "{service}");
    assert_eq!(cs.service(&bobs, "extensions=*").await["Reason"], json!({"text": "bob's question"}));
    let chain = app.call(&cs.key, "GET", "/v1/account/acme/audit/verify", "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
    assert!(app.verify().mismatch.is_none(), "{:?}", app.verify().mismatch);
}

#[tokio::test]
async fn nothing_is_given_to_a_customer_while_their_erasure_proceeds() {
    let app =
        Arc::new(spawn_app_with(|config| config.writer.step = StepBound { items: 1, rows: 1000 }).await);
    let cs = Cs::new(&app, "acme").await;
    let created = cs.post("/profiles", json!({"FirstName": "Ann"})).await;
    let ann = created.json()["customer_id"].as_str().unwrap().to_string();
    for i in 0..40 {
        cs.start_service(
            json!({"customer_id": ann, "service_type": "billing", "Reason": {"text": format!("old {i}")}}),
        )
        .await;
    }
    let anonymous = cs.start_service(json!({"contact_key": "k", "service_type": "billing"})).await;
    let reply = cs.post(&format!("/profiles/{ann}/erase"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    // During the erasure: a new service for Ann, a service moved to Ann and her profile written
    // again are refused, in the journeys family's error shape.
    let started = cs.post("/services/start", json!({"customer_id": ann, "service_type": "billing"})).await;
    let associated =
        cs.post(&format!("/customers/{ann}/services/{anonymous}"), json!({"Note": {"text": "late"}})).await;
    let replaced = cs.put(&format!("/profiles/{ann}"), json!({"FirstName": "Ann again"})).await;
    let erasing = app.call(&cs.key, "GET", &format!("/genesys/1/cs/profiles/{ann}/erasure"), "").await.json();
    if erasing["erasing"] == true {
        for refused in [&started, &associated, &replaced] {
            assert!(assert_cs_error(refused, 409).contains("being erased"), "{}", refused.body);
        }
    }
    // Whatever the timing: once it is done, every service Ann was ever given before the end of
    // the erasure is redacted, and anything given to her later comes after `CustomerErased`.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.call(&cs.key, "GET", &format!("/genesys/1/cs/profiles/{ann}/erasure"), "").await.json()["erasing"]
        == true
    {
        assert!(Instant::now() < deadline, "the erasure did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = events_of(&app, "acme");
    let erased_at = events.iter().position(|e| e.2 == "CustomerErased").unwrap();
    for (index, event) in events.iter().enumerate() {
        let given = matches!(event.2.as_str(), "ServiceStarted" | "ServiceAssociated")
            && event.3["customer_id"] == ann.as_str();
        if given && index < erased_at {
            let service = event.3["service_id"].as_str().unwrap();
            let redacted =
                events[..=erased_at].iter().any(|e| e.2 == "ServiceErased" && e.3["service_id"] == service);
            assert!(
                redacted,
                "service {service} was given to Ann before the erasure ended and kept its data"
            );
        }
    }
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_retry_of_a_request_that_started_steps_answers_202_again() {
    let app = spawn_app_with(|config| config.writer.step = StepBound { items: 5, rows: 100 }).await;
    let key = app.account("acme").await;
    fill(&app, &key, 40).await;
    let path = format!("{A}/big");
    let delete = || app.call_with(&key, "DELETE", &path, &[("idempotency-key", "k1")], "");
    let first = delete().await;
    assert_eq!(first.status, 202, "{}", first.body);
    let location = first.header("location").unwrap();
    wait_until_deleted(&app, &key, &location).await;
    let again = delete().await;
    assert_eq!(again.status, 202, "the first answer, not a 204: {}", again.body);
    assert_eq!(again.header("location").as_deref(), Some(location.as_str()));
    assert_eq!(again.json()["deleting"], false, "where it stands now");
    // A name that reads as a relative path is percent-encoded in the `Location`.
    fill_namespace(&app, &key, "..", 6).await;
    let dots = app.call(&key, "DELETE", &format!("{A}/%2E%2E"), "").await;
    assert_eq!(dots.status, 202, "{}", dots.body);
    assert_eq!(dots.header("location").as_deref(), Some("/v1/account/acme/namespace/%2E%2E/deletion"));
}

/// `sessions` sessions of one property each in namespace `namespace` (percent-encoded in paths).
async fn fill_namespace(app: &TestApp, key: &str, namespace: &str, sessions: usize) {
    let encoded: String = namespace.bytes().map(|b| format!("%{b:02X}")).collect();
    for i in 0..sessions {
        let path = format!("{A}/{encoded}/s{i}/properties");
        assert_eq!(app.call(key, "PATCH", &path, r#"{"a":1}"#).await.status, 204);
    }
}
