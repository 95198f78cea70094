//! Customer journeys over `/genesys/1/cs`: services, states, tasks, their lifecycle rules,
//! lists and filters, auto-complete and expiry with the injected clock, and restarts.

use chrono::Duration;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

const CS: &str = "/genesys/1/cs";

/// An account's view of the journeys API.
pub struct Cs<'a> {
    pub app: &'a TestApp,
    pub key: String,
}

impl<'a> Cs<'a> {
    pub async fn new(app: &'a TestApp, account: &str) -> Cs<'a> {
        Cs { app, key: app.account(account).await }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.app.call(&self.key, "POST", &format!("{CS}{path}"), &body.to_string()).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.app.call(&self.key, "PUT", &format!("{CS}{path}"), &body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.app.call(&self.key, "GET", &format!("{CS}{path}"), "").await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.app.call(&self.key, "DELETE", &format!("{CS}{path}"), "").await
    }

    /// A 200 JSON answer.
    pub async fn ok(&self, reply: Reply) -> Value {
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.body.is_empty() { Value::Null } else { reply.json() }
    }

    pub async fn start_service(&self, body: Value) -> String {
        let reply = self.post("/services/start", body).await;
        self.ok(reply).await["service_id"].as_str().unwrap().to_string()
    }

    pub async fn start_state(&self, service: &str, body: Value) -> u64 {
        let reply = self.post(&format!("/services/{service}/states/start"), body).await;
        self.ok(reply).await["state_id"].as_u64().unwrap()
    }

    pub async fn transition(&self, service: &str, from: u64, to: &str, extra: Value) -> u64 {
        let mut body = json!({"from": {"state_id": from, "disposition": "done"}, "to": {"state_type": to}});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let reply = self.post(&format!("/services/{service}/states/transition"), body).await;
        self.ok(reply).await["state_id"].as_u64().unwrap()
    }

    pub async fn start_task(&self, service: &str, body: Value) -> u64 {
        let reply = self.post(&format!("/services/{service}/tasks/start"), body).await;
        self.ok(reply).await["task_id"].as_u64().unwrap()
    }

    /// One field of every item a list returns.
    pub async fn list(&self, path: &str, field: &str) -> Vec<String> {
        let reply = self.get(path).await;
        types(&self.ok(reply).await, field)
    }

    pub async fn service(&self, service: &str, query: &str) -> Value {
        let reply = self.get(&format!("/services/{service}?{query}")).await;
        self.ok(reply).await
    }
}

/// Asserts a Genesys-shaped error: status, `message` and `exception`.
pub fn assert_cs_error(reply: &Reply, status: u16) -> String {
    let message = reply.assert_error(status);
    assert!(reply.json()["exception"].as_str().is_some_and(|e| e.ends_with("Exception")), "{}", reply.body);
    message
}

fn types(list: &Value, field: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|item| item[field].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn a_full_journey_ivr_queue_callback_agent_end_is_recorded_step_by_step() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let t0 = "2026-11-22T10:00:00.000Z";
    let service = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice",
                               "est_duration": 600, "timestamp": t0, "Reason": {"text": "double charge"}}))
        .await;
    let ivr = cs
        .start_state(
            &service,
            json!({"state_type": "ivr", "media_type": "voice", "timestamp": "2026-11-22T10:00:01.000Z"}),
        )
        .await;
    let task = cs.start_task(&service, json!({"state_id": ivr, "task_type": "identify"})).await;
    cs.ok(cs
        .post(&format!("/services/{service}/tasks/{task}/end"), json!({"disposition": "identified"}))
        .await)
        .await;
    let queue = cs.transition(&service, ivr, "queue", json!({"timestamp": "2026-11-22T10:01:00.000Z"})).await;
    let offer = cs
        .transition(&service, queue, "offering_callback", json!({"timestamp": "2026-11-22T10:03:00.000Z"}))
        .await;
    let agent = cs
        .transition(
            &service,
            offer,
            "agent",
            json!({"timestamp": "2026-11-22T10:04:00.000Z", "resource_id": 42}),
        )
        .await;
    let end = json!({"disposition": "resolved", "disposition_desc": "refund issued", "timestamp": "2026-11-22T10:10:00.000Z"});
    cs.ok(cs.post(&format!("/services/{service}/end"), end).await).await;

    let read = cs
        .service(&service, "completed_states=true&completed_tasks=true&active_states=true&extensions=*")
        .await;
    assert_eq!(read["customer_id"], "c1");
    assert_eq!(read["disposition"], "resolved");
    assert_eq!(read["disposition_desc"], "refund issued");
    assert_eq!(read["duration"], 600_000);
    assert_eq!(read["est_duration"], 600);
    assert_eq!(read["started"], json!({"timestamp": t0, "media_type": "voice"}));
    assert_eq!(read["Reason"], json!({"text": "double charge"}));
    assert_eq!(read["active_states"], json!([]));
    assert_eq!(
        types(&read["completed_states"], "state_type"),
        ["ivr", "queue", "offering_callback", "agent"]
    );
    let states = read["completed_states"].as_array().unwrap();
    assert_eq!(states[1]["previous_state_id"], ivr);
    assert_eq!(states[1]["duration"], 120_000, "queue: 10:01 to 10:03");
    assert_eq!(states[3]["state_id"], agent);
    assert_eq!(states[3]["started"]["resource_id"], 42);
    assert_eq!(states[3]["closed_by"], "service_ended", "the open agent state was closed by the end");
    assert!(states[0].get("closed_by").is_none(), "ivr ended by its own transition");
    assert_eq!(read["completed_tasks"][0]["disposition"], "identified");

    let stream: Vec<String> =
        app.events().into_iter().filter(|e| e.1.starts_with("svc/")).map(|e| e.3).collect();
    assert_eq!(
        stream,
        [
            "ServiceStarted",
            "StateStarted",
            "TaskStarted",
            "TaskEnded",
            "StateEnded",
            "StateStarted",
            "StateEnded",
            "StateStarted",
            "StateEnded",
            "StateStarted",
            "StateEnded",
            "ServiceEnded"
        ]
    );
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn an_anonymous_service_is_found_by_contact_key_until_associated_and_reassociation_moves_it() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let service = cs.start_service(json!({"contact_key": "408-555-0101", "service_type": "sales"})).await;
    let by_key = cs.ok(cs.get("/services/anonymous/408-555-0101/active").await).await;
    assert_eq!(types(&by_key, "service_id"), std::slice::from_ref(&service));

    let body = json!({"media_type": "chat", "Lead": {"score": 7}});
    cs.ok(cs.post(&format!("/customers/alice/services/{service}"), body).await).await;
    assert_eq!(cs.ok(cs.get("/services/anonymous/408-555-0101").await).await, json!([]));
    let alice = cs.ok(cs.get("/customers/alice/services?extensions=Lead").await).await;
    assert_eq!(alice[0]["service_id"], service.as_str());
    assert_eq!(alice[0]["started"]["media_type"], "chat");
    assert_eq!(alice[0]["Lead"], json!({"score": 7}));

    cs.ok(cs.post(&format!("/customers/bob/services/{service}"), json!({})).await).await;
    assert_eq!(cs.ok(cs.get("/customers/alice/services").await).await, json!([]));
    assert_eq!(types(&cs.ok(cs.get("/customers/bob/services/active").await).await, "service_id"), [service]);
    let moved = app.events().into_iter().rfind(|e| e.3 == "ServiceAssociated").unwrap();
    assert_eq!(moved.4["previous_customer_id"], "alice");
}

#[tokio::test]
async fn a_customer_who_switches_from_voice_to_chat_resumes_the_open_service_where_they_left() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let service = cs
        .start_service(json!({"customer_id": "c9", "service_type": "billing", "media_type": "voice"}))
        .await;
    app.clock.advance(Duration::seconds(5));
    let ivr = cs.start_state(&service, json!({"state_type": "ivr", "media_type": "voice"})).await;
    app.clock.advance(Duration::seconds(40));
    let waiting = cs.transition(&service, ivr, "waiting_for_agent", json!({"media_type": "voice"})).await;
    app.clock.advance(Duration::seconds(90));
    // The call drops. The customer opens a chat; the bot looks them up.
    let open = cs.ok(cs.get("/customers/c9/services/active?active_states=true").await).await;
    assert_eq!(open[0]["service_id"], service.as_str());
    assert_eq!(open[0]["active_states"][0]["state_type"], "waiting_for_agent");
    let journey = cs.ok(cs.get("/customers/c9/journey").await).await;
    assert_eq!(journey["current"][0]["current_state"]["state_id"], waiting);
    assert_eq!(journey["current"][0]["media_type"], "voice");

    let agent = cs
        .transition(&service, waiting, "agent", json!({"media_type": "chat", "interaction_id": "chat-1"}))
        .await;
    let journey = cs.ok(cs.get("/customers/c9/journey").await).await;
    assert_eq!(journey["channels"], json!(["voice", "chat"]));
    assert_eq!(journey["current"][0]["current_state"]["state_type"], "agent");
    assert_eq!(journey["current"][0]["media_type"], "chat");
    let events: Vec<String> =
        journey["timeline"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().into()).collect();
    assert_eq!(
        events,
        [
            "service_started",
            "state_started",
            "state_completed",
            "state_started",
            "state_completed",
            "state_started"
        ]
    );
    assert_eq!(journey["timeline"][5]["state_id"], agent);
    cs.get("/customers/nobody/journey").await.assert_error(404);
}

#[tokio::test]
async fn lifecycle_violations_are_refused_with_400_and_write_nothing() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let service = cs.start_service(json!({"customer_id": "c1"})).await;
    let state = cs.start_state(&service, json!({"state_type": "ivr"})).await;
    let done_state = cs.transition(&service, state, "queue", json!({})).await;
    cs.ok(cs.post(&format!("/services/{service}/states/{done_state}/end"), json!({})).await).await;
    let task = cs.start_task(&service, json!({"task_type": "t"})).await;
    cs.ok(cs.post(&format!("/services/{service}/tasks/{task}/end"), json!({})).await).await;
    let ended = cs.start_service(json!({"customer_id": "c1"})).await;
    cs.ok(cs.post(&format!("/services/{ended}/end"), json!({})).await).await;
    let before = app.event_count();

    let s = &service;
    let refused = [
        cs.post(&format!("/services/{s}/states/{state}/end"), json!({})).await,
        cs.post(&format!("/services/{s}/tasks/{task}/end"), json!({})).await,
        cs.post(
            &format!("/services/{s}/states/transition"),
            json!({"from": {"state_id": state}, "to": {"state_type": "x"}}),
        )
        .await,
        cs.post(&format!("/services/{s}/states/start"), json!({"previous_state_id": 99})).await,
        cs.post(&format!("/services/{s}/tasks/start"), json!({"state_id": state})).await,
        cs.post(&format!("/services/{s}/tasks/start"), json!({"state_id": 77})).await,
        cs.post(&format!("/services/{ended}/end"), json!({})).await,
        cs.post(&format!("/services/{ended}/states/start"), json!({"state_type": "late"})).await,
        cs.post(&format!("/services/{ended}/tasks/start"), json!({})).await,
        cs.post("/services/start", json!({"service_type": "no owner"})).await,
        cs.post("/services/start", json!({"customer_id": "c", "session_id": "x".repeat(33)})).await,
        cs.post("/services/start", json!({"customer_id": "c", "timestamp": "10:42"})).await,
        cs.post("/services/start", json!({"customer_id": "c", "disposition": "early"})).await,
        cs.post("/services/start", json!({"customer_id": "c", "started": {"a": 1}})).await,
        cs.post("/services/start", json!([1])).await,
        cs.post(&format!("/services/{s}/states/transition"), json!({"to": {"state_type": "x"}})).await,
        cs.post(&format!("/services/{s}/end"), json!({"disposition_desc": "d".repeat(65)})).await,
        cs.put(&format!("/services/{s}"), json!({})).await,
        cs.put(&format!("/services/{s}/extensions/Notes"), json!(5)).await,
        cs.get(&format!("/services/{s}?active_states=maybe")).await,
        cs.get(&format!("/services/{s}?bogus=1")).await,
        cs.get("/customers/c1/services?started_from=yesterday").await,
    ];
    for reply in refused {
        assert_cs_error(&reply, 400);
    }
    for reply in [
        cs.post("/services/no-such/end", json!({})).await,
        cs.get("/services/no-such").await,
        cs.get(&format!("/services/{s}/states/42")).await,
        cs.get(&format!("/services/{s}/tasks/42")).await,
        cs.post(&format!("/services/{s}/states/42/end"), json!({})).await,
        cs.delete("/services/no-such").await,
        cs.get("/no/such/route").await,
    ] {
        assert_cs_error(&reply, 404);
    }
    assert_cs_error(&cs.app.call(&cs.key, "PATCH", &format!("{CS}/services/start"), "{}").await, 405);
    assert_eq!(app.event_count(), before, "a refused command writes nothing");
}

#[tokio::test]
async fn another_accounts_key_sees_and_changes_nothing() {
    let app = spawn_app().await;
    let acme = Cs::new(&app, "acme").await;
    let other = Cs::new(&app, "globex").await;
    let service = acme.start_service(json!({"customer_id": "c1"})).await;
    assert_eq!(acme.post("/profiles", json!({"EmailAddress": "a@x.org"})).await.status, 201);
    assert_cs_error(&other.get(&format!("/services/{service}")).await, 404);
    assert_cs_error(&other.post(&format!("/services/{service}/end"), json!({})).await, 404);
    assert_cs_error(&other.delete(&format!("/services/{service}")).await, 404);
    assert_eq!(other.ok(other.get("/customers/c1/services").await).await, json!([]));
    let tenant = app
        .call_with(
            &acme.key,
            "GET",
            &format!("{CS}/services/{service}"),
            &[("ContactCenterId", "globex")],
            "",
        )
        .await;
    assert_cs_error(&tenant, 403);
    let own = app
        .call_with(&acme.key, "GET", &format!("{CS}/services/{service}"), &[("ContactCenterId", "acme")], "")
        .await;
    assert_eq!(own.status, 200);
    assert_cs_error(&app.call("wrong-key", "GET", &format!("{CS}/services/{service}"), "").await, 403);
    assert!(acme.service(&service, "").await.get("completed").is_none());
}

#[tokio::test]
async fn lists_filter_by_status_time_and_type() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let mut ids = Vec::new();
    for (hour, kind) in [(9, "billing"), (10, "sales"), (11, "billing")] {
        let timestamp = format!("2026-11-22T{hour:02}:00:00.000Z");
        ids.push(
            cs.start_service(json!({"customer_id": "c1", "service_type": kind, "timestamp": timestamp}))
                .await,
        );
    }
    cs.ok(cs.post(&format!("/services/{}/end", ids[0]), json!({})).await).await;
    assert_eq!(cs.list("/customers/c1/services", "service_id").await, ids);
    assert_eq!(cs.list("/customers/c1/services/active", "service_id").await, ids[1..]);
    assert_eq!(cs.list("/customers/c1/services/completed", "service_id").await, ids[..1]);
    assert_eq!(
        cs.list("/customers/c1/services?service_types=billing", "service_id").await,
        [ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(
        cs.list(
            "/customers/c1/services?service_types=sales,billing&started_from=2026-11-22T09:30:00.000Z",
            "service_id"
        )
        .await,
        ids[1..]
    );
    assert_eq!(
        cs.list(
            "/customers/c1/services/active?started_to=2026-11-22T10:30:00Z&service_types=sales",
            "service_id"
        )
        .await,
        ids[1..2]
    );

    let s = &ids[1];
    let ivr = cs.start_state(s, json!({"state_type": "ivr"})).await;
    let queue = cs.transition(s, ivr, "queue", json!({})).await;
    let t1 = cs.start_task(s, json!({"state_id": queue, "task_type": "survey", "Score": {"v": 1}})).await;
    let t2 = cs.start_task(s, json!({"task_type": "note"})).await;
    cs.ok(cs.post(&format!("/services/{s}/tasks/{t2}/end"), json!({})).await).await;
    assert_eq!(cs.list(&format!("/services/{s}/states"), "state_type").await, ["ivr", "queue"]);
    assert_eq!(cs.list(&format!("/services/{s}/states/active"), "state_type").await, ["queue"]);
    assert_eq!(
        cs.list(&format!("/services/{s}/states/completed?state_types=ivr,queue"), "state_type").await,
        ["ivr"]
    );
    assert_eq!(cs.list(&format!("/services/{s}/tasks"), "task_type").await, ["survey", "note"]);
    assert_eq!(cs.list(&format!("/services/{s}/tasks?state_id={queue}"), "task_type").await, ["survey"]);
    assert_eq!(cs.list(&format!("/services/{s}/tasks/active"), "task_type").await, ["survey"]);
    assert_eq!(
        cs.list(&format!("/services/{s}/tasks/completed?task_types=survey"), "task_type").await,
        Vec::<String>::new()
    );

    let active_state = cs
        .ok(cs.get(&format!("/services/{s}/states/{queue}?active_tasks=true&extensions=Task.Score")).await)
        .await;
    assert_eq!(active_state["service_id"], s.as_str());
    assert_eq!(active_state["active_tasks"][0]["task_id"], t1);
    assert_eq!(active_state["active_tasks"][0]["Score"], json!({"v": 1}));
    let task = cs.ok(cs.get(&format!("/services/{s}/tasks/{t1}")).await).await;
    assert!(task.get("Score").is_none(), "extensions only when asked for");
    assert_eq!(
        cs.ok(cs.get(&format!("/services/{s}/tasks/{t1}?extensions=Score")).await).await["Score"],
        json!({"v": 1})
    );
}

#[tokio::test]
async fn extensions_are_replaced_by_put_and_by_end_events() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"customer_id": "c1", "Cart": {"items": 1}, "Keep": {"k": 1}})).await;
    let state = cs.start_state(&s, json!({"state_type": "ivr"})).await;
    let task = cs.start_task(&s, json!({"state_id": state})).await;
    cs.ok(cs.put(&format!("/services/{s}/extensions/Cart"), json!({"items": 2})).await).await;
    cs.ok(cs
        .put(&format!("/services/{s}/states/{state}/extensions/Notes"), json!([{"n": 1}, {"n": 2}]))
        .await)
        .await;
    cs.ok(cs.put(&format!("/services/{s}/tasks/{task}/extensions/Form"), json!({"f": true})).await).await;
    assert_cs_error(&cs.put(&format!("/services/{s}/tasks/9/extensions/Form"), json!({})).await, 404);
    cs.ok(cs.post(&format!("/services/{s}/end"), json!({"Cart": {"items": 3}})).await).await;
    let read =
        cs.service(&s, "completed_states=true&completed_tasks=true&extensions=*,State.Notes,Task.*").await;
    assert_eq!(read["Cart"], json!({"items": 3}));
    assert_eq!(read["Keep"], json!({"k": 1}));
    assert_eq!(read["completed_states"][0]["Notes"], json!([{"n": 1}, {"n": 2}]));
    assert_eq!(read["completed_tasks"][0]["Form"], json!({"f": true}));
}

#[tokio::test]
async fn deleting_a_service_removes_it_with_its_states_and_tasks() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"customer_id": "c1"})).await;
    let state = cs.start_state(&s, json!({})).await;
    cs.start_task(&s, json!({"state_id": state})).await;
    cs.ok(cs.delete(&format!("/services/{s}")).await).await;
    assert_cs_error(&cs.get(&format!("/services/{s}")).await, 404);
    assert_cs_error(&cs.get(&format!("/services/{s}/states")).await, 404);
    assert_eq!(cs.ok(cs.get("/customers/c1/services").await).await, json!([]));
    assert_eq!(app.events().last().unwrap().3, "ServiceDeleted");
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn inactive_services_auto_complete_and_expired_ones_disappear_by_the_sweeper() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let sweep = || async { ctxd::sweeper::sweep_once(&app.store).await.unwrap() };
    let idle = cs.start_service(json!({"customer_id": "c1", "auto_complete_after": 60})).await;
    let state = cs.start_state(&idle, json!({"state_type": "callback_pending"})).await;
    cs.ok(cs.put("/settings", json!({"auto_complete_after": 300})).await).await;
    let by_default = cs.start_service(json!({"customer_id": "c1"})).await;
    let expiring = cs.start_service(json!({"customer_id": "c2", "ttl": 120})).await;

    app.clock.advance(Duration::seconds(50));
    cs.start_task(&idle, json!({"state_id": state})).await;
    app.clock.advance(Duration::seconds(50));
    assert_eq!(sweep().await, 0, "activity at 50 s postponed the auto-complete to 110 s");
    app.clock.advance(Duration::seconds(11));
    assert_eq!(sweep().await, 3, "auto-completed at 110 s: its task, its state, the service");
    let done = cs.service(&idle, "completed_states=true&completed_tasks=true").await;
    assert_eq!(done["closed_by"], "service_auto_completed");
    assert_eq!(done["completed_states"][0]["closed_by"], "service_auto_completed");
    assert_eq!(done["completed_tasks"][0]["closed_by"], "service_auto_completed");
    assert_cs_error(&cs.post(&format!("/services/{idle}/states/start"), json!({})).await, 400);
    assert!(cs.service(&expiring, "").await.get("completed").is_none());

    app.clock.advance(Duration::seconds(9));
    assert_eq!(sweep().await, 1, "expired at 120 s");
    assert_cs_error(&cs.get(&format!("/services/{expiring}")).await, 404);
    assert!(cs.service(&by_default, "").await.get("completed").is_none());

    app.clock.advance(Duration::seconds(180));
    assert_eq!(sweep().await, 1, "the account default of 300 s");
    assert_eq!(cs.service(&by_default, "").await["closed_by"], "service_auto_completed");

    cs.ok(cs
        .put(&format!("/services/{idle}"), json!({"expiration_time": "2020-01-01T00:00:00.000Z", "ttl": 30}))
        .await)
        .await;
    app.clock.advance(Duration::seconds(29));
    assert_eq!(sweep().await, 0, "ttl wins over expiration_time");
    app.clock.advance(Duration::seconds(1));
    assert_eq!(sweep().await, 1);
    assert_cs_error(&cs.get(&format!("/services/{idle}")).await, 404);
    let swept: Vec<String> = app
        .events()
        .into_iter()
        .map(|e| e.3)
        .filter(|t| t == "ServiceAutoCompleted" || t == "ServiceExpired")
        .collect();
    assert_eq!(swept, ["ServiceAutoCompleted", "ServiceExpired", "ServiceAutoCompleted", "ServiceExpired"]);
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_journey_continues_across_a_restart() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"customer_id": "c1", "media_type": "voice"})).await;
    let ivr = cs.start_state(&s, json!({"state_type": "ivr"})).await;
    let key = cs.key.clone();
    let app = app.restart().await;
    let cs = Cs { app: &app, key };
    let queue = cs.transition(&s, ivr, "queue", json!({})).await;
    assert_eq!(queue, 2, "ids continue after the restart");
    cs.ok(cs.post(&format!("/services/{s}/end"), json!({})).await).await;
    let read = cs.service(&s, "completed_states=true").await;
    assert_eq!(types(&read["completed_states"], "state_type"), ["ivr", "queue"]);
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_retried_start_with_the_same_idempotency_key_returns_the_same_service() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let body = r#"{"customer_id":"c1"}"#;
    let headers = [("idempotency-key", "start-1")];
    let path = format!("{CS}/services/start");
    let first = app.call_with(&cs.key, "POST", &path, &headers, body).await.json();
    let again = app.call_with(&cs.key, "POST", &path, &headers, body).await.json();
    assert_eq!(first, again);
    assert_eq!(app.events().iter().filter(|e| e.3 == "ServiceStarted").count(), 1);
}

#[tokio::test]
async fn service_writes_answer_the_stream_version_and_honour_if_match() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let started = cs.post("/services/start", json!({"customer_id": "c1"})).await;
    assert_eq!(started.etag(), "\"1\"");
    let s = started.json()["service_id"].as_str().unwrap().to_string();
    let state = cs.post(&format!("/services/{s}/states/start"), json!({})).await;
    assert_eq!(state.etag(), "\"2\"");
    let path = format!("{CS}/services/{s}/end");
    let stale = app.call_with(&cs.key, "POST", &path, &[("if-match", "\"1\"")], "{}").await;
    assert_cs_error(&stale, 412);
    assert_eq!(stale.etag(), "\"2\"");
    let ended = app.call_with(&cs.key, "POST", &path, &[("if-match", "\"2\"")], "{}").await;
    assert_eq!(ended.etag(), "\"4\"", "the open state's StateEnded and the ServiceEnded");
    let versions: Vec<u64> =
        app.events().into_iter().filter(|e| e.1.starts_with("svc/")).map(|e| e.2).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn out_of_range_values_and_impossible_times_are_refused_with_400() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"customer_id": "c1", "timestamp": "2026-11-22T10:00:00.000Z"})).await;
    let before = app.event_count();
    for reply in [
        cs.put("/settings", json!({"auto_complete_after": 9_223_372_036_854_775_808u64})).await,
        cs.put("/settings", json!({"auto_complete_after": 0})).await,
        cs.post(
            "/services/start",
            json!({"customer_id": "c", "auto_complete_after": 18_446_744_073_709_551_615u64}),
        )
        .await,
        cs.post("/services/start", json!({"customer_id": "c", "timestamp": "9999-12-31T23:59:59-01:00"}))
            .await,
        cs.post("/services/start", json!({"customer_id": "c", "timestamp": "0000-01-01T00:00:00+01:00"}))
            .await,
        cs.post(&format!("/services/{s}/end"), json!({"timestamp": "2026-11-22T09:59:59.999Z"})).await,
        cs.post("/services/start", json!({"customer_id": "c", "service_id": "mine"})).await,
    ] {
        assert_cs_error(&reply, 400);
    }
    assert_eq!(app.event_count(), before);
    // The reference's end event repeats the service id, and a task's end its state id.
    let state = cs.start_state(&s, json!({})).await;
    let task = cs.start_task(&s, json!({"state_id": state})).await;
    assert_cs_error(
        &cs.post(&format!("/services/{s}/tasks/{task}/end"), json!({"state_id": state + 1})).await,
        400,
    );
    cs.ok(cs.post(&format!("/services/{s}/tasks/{task}/end"), json!({"state_id": state})).await).await;
    cs.ok(cs.post(&format!("/services/{s}/end"), json!({"service_id": s})).await).await;
}

#[tokio::test]
async fn a_service_holds_at_most_800000_characters_of_extensions() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"customer_id": "c1"})).await;
    let big = json!({"text": "x".repeat(300_000)});
    cs.ok(cs.put(&format!("/services/{s}/extensions/A"), big.clone()).await).await;
    cs.ok(cs.put(&format!("/services/{s}/extensions/B"), big.clone()).await).await;
    assert_cs_error(&cs.put(&format!("/services/{s}/extensions/C"), big.clone()).await, 413);
    assert_cs_error(&cs.post(&format!("/services/{s}/states/start"), json!({"Notes": big})).await, 413);
    let profile = json!({"Notes": {"text": "x".repeat(800_001)}});
    assert_cs_error(&cs.post("/profiles", profile).await, 413);
}

#[tokio::test]
async fn reads_answer_what_filters_and_preconditions_need() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let s = cs.start_service(json!({"contact_key": "active"})).await;
    assert_eq!(cs.list("/services/anonymous/active", "service_id").await, std::slice::from_ref(&s));
    assert_eq!(cs.list("/services/anonymous/active/active", "service_id").await, std::slice::from_ref(&s));
    let read = cs.get(&format!("/services/{s}")).await;
    assert_eq!(read.etag(), "\"1\"");
    // A time the API showed finds the service it belongs to.
    let started = read.json()["started"]["timestamp"].as_str().unwrap().to_string();
    cs.ok(cs.post(&format!("/customers/c1/services/{s}"), json!({})).await).await;
    let path = format!("/customers/c1/services?started_from={started}&started_to={started}");
    assert_eq!(cs.list(&path, "service_id").await, std::slice::from_ref(&s));
    let stale =
        app.call_with(&cs.key, "POST", &format!("{CS}/services/{s}/end"), &[("if-match", "\"1\"")], "").await;
    assert_cs_error(&stale, 412);
    assert_eq!(stale.json()["currentVersion"], 2);
    assert_cs_error(&cs.get("/").await, 404);

    let created = cs.post("/profiles", json!({"Name": "Ann"})).await;
    let id = created.json()["customer_id"].as_str().unwrap().to_string();
    let stale =
        app.call_with(&cs.key, "PUT", &format!("{CS}/profiles/{id}"), &[("if-match", "\"5\"")], "{}").await;
    assert_cs_error(&stale, 412);
    let stale =
        app.call_with(&cs.key, "PUT", &format!("{CS}/settings"), &[("if-match", "\"3\"")], "{}").await;
    assert_cs_error(&stale, 412);
}

#[tokio::test]
async fn the_timeline_of_a_customer_with_many_services_shows_the_open_ones_and_the_newest() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    for _ in 0..1000 {
        let s = cs.start_service(json!({"customer_id": "many", "media_type": "voice"})).await;
        cs.ok(cs.post(&format!("/services/{s}/end"), json!({})).await).await;
        app.clock.advance(Duration::milliseconds(1));
    }
    let open = cs.start_service(json!({"customer_id": "many", "media_type": "chat"})).await;
    let journey = cs.ok(cs.get("/customers/many/journey").await).await;
    assert_eq!(journey["services"], 1001);
    assert_eq!(journey["shown_services"], 1000);
    assert_eq!(journey["current"][0]["service_id"], open.as_str());
    assert!(journey["channels"].as_array().unwrap().contains(&json!("chat")));
}
