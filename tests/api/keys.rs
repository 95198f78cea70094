//! Named API keys with roles: issue, list, revoke; what each role may do on every route family;
//! actors by key name and `On-Behalf-Of` in history.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Issues a key named `name` with `role` in `account`; returns the secret.
async fn named_key(app: &TestApp, account: &str, name: &str, role: &str) -> String {
    let body = json!({ "name": name, "role": role }).to_string();
    let issued = app.admin("POST", &format!("/admin/accounts/{account}/keys"), &body).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let issued = issued.json();
    assert_eq!((issued["name"].as_str(), issued["role"].as_str()), (Some(name), Some(role)));
    issued["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn several_named_keys_are_active_at_once_listed_without_secrets_and_revoked_one_by_one() {
    let app = spawn_app().await;
    let default = app.account("acme").await;
    let bot = named_key(&app, "acme", "bot-7", "write").await;
    let dashboard = named_key(&app, "acme", "dashboard", "read").await;
    let path = "/v1/account/acme/bots/s/properties";
    for key in [&default, &bot] {
        assert_eq!(app.call(key, "PATCH", path, r#"{"a": 1}"#).await.status, 204);
    }
    assert_eq!(app.call(&dashboard, "GET", path, "").await.status, 200);

    let listed = app.admin("GET", "/admin/accounts/acme/keys", "").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    let names: Vec<_> =
        listed["keys"].as_array().unwrap().iter().map(|key| key["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bot-7", "dashboard", "default"]);
    let text = listed.to_string();
    for secret in [&default, &bot, &dashboard] {
        assert!(!text.contains(secret.as_str()), "a secret in the list: {text}");
    }
    assert!(!text.contains("hash"), "{text}");
    let roles: Vec<_> =
        listed["keys"].as_array().unwrap().iter().map(|key| key["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["write", "read", "write"]);

    // One name, one active key; a bad role or name is a 400; an unknown account a 404.
    let again = app.admin("POST", "/admin/accounts/acme/keys", r#"{"name": "bot-7", "role": "read"}"#).await;
    assert_eq!(again.status, 409, "{}", again.body);
    again.assert_error(409);
    for body in
        [r#"{"name": "x", "role": "admin"}"#, r#"{"name": "bot 7", "role": "read"}"#, r#"{"name": "x"}"#]
    {
        let refused = app.admin("POST", "/admin/accounts/acme/keys", body).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        refused.assert_error(400);
    }
    let unknown = app.admin("POST", "/admin/accounts/nobody/keys", r#"{"name": "x", "role": "read"}"#).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(app.admin("GET", "/admin/accounts/nobody/keys", "").await.status, 404);

    // Revoking one key leaves the others working.
    assert_eq!(app.admin("DELETE", "/admin/accounts/acme/keys/bot-7", "").await.status, 204);
    assert_eq!(app.call(&bot, "PATCH", path, r#"{"b": 1}"#).await.status, 403);
    assert_eq!(app.call(&default, "PATCH", path, r#"{"b": 1}"#).await.status, 204);
    assert_eq!(app.call(&dashboard, "GET", path, "").await.status, 200);
    let twice = app.admin("DELETE", "/admin/accounts/acme/keys/bot-7", "").await;
    assert_eq!(twice.status, 404, "{}", twice.body);
    // The name is free again.
    let bot_again = named_key(&app, "acme", "bot-7", "read").await;
    assert_eq!(app.call(&bot_again, "GET", path, "").await.status, 200);

    // The LivePerson-compatible call replaces the default key only.
    let replaced = app.admin("POST", "/admin/accounts/acme/api-key", "").await;
    assert_eq!(replaced.status, 201, "{}", replaced.body);
    assert_eq!(app.call(&default, "GET", path, "").await.status, 403);
    assert_eq!(app.call(&dashboard, "GET", path, "").await.status, 200);
    let account = app.admin("GET", "/admin/accounts/acme", "").await.json();
    assert_eq!(account["active_key_id"], replaced.json()["key_id"]);

    // Key issues and revocations are events of the account's log, with names and roles.
    let new_default = replaced.json()["api_key"].as_str().unwrap().to_string();
    let feed = app.call(&new_default, "GET", "/v1/account/acme/events?type=ApiKeyRevoked", "").await;
    let revoked: Vec<_> =
        feed.json()["events"].as_array().unwrap().iter().map(|event| event["data"]["name"].clone()).collect();
    assert_eq!(revoked, [json!("bot-7"), json!("default")]);
    // The admin's writes in the tenant's log carry no client address (the operator's); the
    // tenant's own writes do.
    let all = app.call(&new_default, "GET", "/v1/account/acme/events?limit=1000", "").await.json();
    for event in all["events"].as_array().unwrap() {
        let admin = event["meta"]["actor"] == "admin";
        assert_eq!(event["meta"]["client_addr"].is_null(), admin, "{event}");
    }
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn each_role_does_its_job_on_every_route_family_and_no_more() {
    let app = spawn_app().await;
    let writer = app.account("acme").await;
    let reader = named_key(&app, "acme", "dashboard", "read").await;
    let auditor = named_key(&app, "acme", "auditor", "audit").await;
    let session = "/v1/account/acme/bots/s/properties";
    assert_eq!(
        app.call(&writer, "PATCH", session, r#"{"intent": "billing", "history": 1}"#).await.status,
        204
    );
    let body = json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice"}).to_string();
    let started = app.call(&writer, "POST", "/genesys/1/cs/services/start", &body).await;
    assert!(started.status < 300, "{}", started.body);

    let reads = [
        session.to_string(),
        // A property named "history" is a plain read, not the history route.
        format!("{session}/history"),
        "/v1/account/acme".to_string(),
        "/genesys/1/cs/customers/c1/services".to_string(),
        "/v1/account/acme/analytics/dropoff".to_string(),
    ];
    let audits = [
        "/v1/account/acme/bots/s/history".to_string(),
        "/v1/account/acme/bots/s/properties/intent/history".to_string(),
        "/v1/account/acme/events".to_string(),
        "/v1/account/acme/audit/verify".to_string(),
        "/v1/account/acme/audit/head".to_string(),
        format!("{session}?as_of_seq=2"),
        // The parameter's name percent-encoded is the same parameter to the handler.
        format!("{session}?as%5Fof_seq=2"),
        format!("{session}?%61s_of=2026-01-01T10:00:00Z"),
    ];
    let writes = [
        ("PATCH", session.to_string(), r#"{"x": 1}"#.to_string()),
        ("POST", "/genesys/1/cs/services/start".to_string(), body.clone()),
        ("POST", "/v1/account/acme/namespace/bots/session/s/erase".to_string(), String::new()),
        ("DELETE", "/v1/account/acme/bots/s/properties/intent".to_string(), String::new()),
    ];
    for path in &reads {
        for key in [&reader, &auditor] {
            let answer = app.call(key, "GET", path, "").await;
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        }
    }
    for path in &audits {
        let refused = app.call(&reader, "GET", path, "").await;
        assert_eq!(refused.status, 403, "GET {path} with a read key: {}", refused.body);
        assert!(refused.body.contains("'read'") && refused.body.contains("'audit'"), "{}", refused.body);
        let answer = app.call(&auditor, "GET", path, "").await;
        assert_eq!(answer.status, 200, "GET {path} with an audit key: {}", answer.body);
    }
    let stream = app.call(&reader, "GET", "/v1/account/acme/events/stream?after=999999", "").await;
    assert_eq!(stream.status, 403, "{}", stream.body);
    for (method, path, body) in &writes {
        for key in [&reader, &auditor] {
            let refused = app.call(key, method, path, body).await;
            assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
            refused.assert_error(403);
        }
    }
    // Refused writes wrote nothing; the write key does them all.
    assert_eq!(
        app.call(&writer, "GET", session, "").await.json(),
        json!({"intent": "billing", "history": 1})
    );
    for (method, path, body) in &writes {
        let answer = app.call(&writer, method, path, body).await;
        assert!(answer.status < 300, "{method} {path}: {}", answer.body);
    }
    // A key of one account opens nothing of another, whatever its role.
    let other = app.account("globex").await;
    assert_eq!(app.call(&other, "GET", session, "").await.status, 403);
}

#[tokio::test]
async fn history_names_each_key_and_whom_it_acted_for() {
    let app = spawn_app().await;
    app.account("acme").await;
    let bot = named_key(&app, "acme", "bot-7", "write").await;
    let desk = named_key(&app, "acme", "agent-desktop", "write").await;
    let path = "/v1/account/acme/care/conv-1/properties";
    assert_eq!(app.call(&bot, "PATCH", path, r#"{"intent": "billing"}"#).await.status, 204);
    let on_behalf = [("on-behalf-of", "agent:maria")];
    assert_eq!(app.call_with(&desk, "PATCH", path, &on_behalf, r#"{"intent": "dispute"}"#).await.status, 204);

    let history = app.call(&bot, "GET", "/v1/account/acme/care/conv-1/history", "").await.json();
    let entries = history["history"].as_array().unwrap();
    let who: Vec<_> =
        entries.iter().map(|entry| (entry["actor"].clone(), entry["on_behalf_of"].clone())).collect();
    assert_eq!(who, [(json!("key:bot-7"), Value::Null), (json!("key:agent-desktop"), json!("agent:maria"))]);

    let too_long = "a".repeat(257);
    let bad =
        app.call_with(&desk, "PATCH", path, &[("on-behalf-of", too_long.as_str())], r#"{"a": 1}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    bad.assert_error(400);
}

#[tokio::test]
async fn the_key_list_says_when_each_key_was_last_used_and_a_restart_keeps_it() {
    let app = spawn_app().await;
    app.account("acme").await;
    let used = named_key(&app, "acme", "bot-7", "write").await;
    named_key(&app, "acme", "idle", "read").await;
    assert_eq!(app.call(&used, "GET", "/v1/account/acme/bots/s/properties", "").await.status, 200);
    let last_used = |listed: serde_json::Value| -> Vec<(String, bool)> {
        let keys = listed["keys"].as_array().unwrap().clone();
        keys.iter()
            .map(|key| (key["name"].as_str().unwrap().to_string(), key["last_used_at"].is_string()))
            .collect()
    };
    let expected = [("bot-7".to_string(), true), ("default".to_string(), false), ("idle".to_string(), false)];
    assert_eq!(last_used(app.admin("GET", "/admin/accounts/acme/keys", "").await.json()), expected);
    // Recorded in the store (at the node's next tick, or as it stops), not only in its memory.
    let app = app.restart().await;
    assert_eq!(last_used(app.admin("GET", "/admin/accounts/acme/keys", "").await.json()), expected);
}

#[tokio::test]
async fn a_revoked_key_s_open_event_stream_ends_before_it_delivers_anything_more() {
    let app = spawn_app().await;
    let writer = app.account("acme").await;
    let auditor = named_key(&app, "acme", "auditor", "audit").await;
    let path = "/v1/account/acme/bots/s/properties";
    assert_eq!(app.call(&writer, "PATCH", path, r#"{"before": 1}"#).await.status, 204);
    let mut stream = crate::audit::SseReader::open(&app, &auditor, "", None).await;
    let mut last = 0;
    while last < 3 {
        last = stream.next().await.expect("the events so far").0;
    }
    while let Ok(Some((seq, _))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await
    {
        last = seq;
    }
    assert_eq!(app.admin("DELETE", "/admin/accounts/acme/keys/auditor", "").await.status, 204);
    assert_eq!(app.call(&writer, "PATCH", path, r#"{"secret": "after the revocation"}"#).await.status, 204);
    // The stream ends; nothing written after the revocation reaches it.
    while let Some((seq, event)) = stream.next().await {
        assert!(seq <= last + 1, "an event after the revocation: {event}");
        assert_ne!(event["type"], "PropertiesPatched", "{event}");
    }
}
