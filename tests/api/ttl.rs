//! TTLs stamped at write time, expiry on read, and the sweeper's `PropertiesExpired` events,
//! driven by the injected clock.

use chrono::Duration;
use serde_json::json;

use crate::helpers::spawn_app;

const A: &str = "/v1/account/acme";

#[tokio::test]
async fn a_namespace_ttl_expires_properties_and_the_sweeper_records_it() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "POST", &format!("{A}?ttlSecond=60"), r#"{"name":"bots"}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1,"b":2}"#).await;

    app.clock.advance(Duration::seconds(59));
    assert_eq!(
        app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.json(),
        json!({"a": 1, "b": 2})
    );
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"b":3}"#).await;

    app.clock.advance(Duration::seconds(2));
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.json(), json!({"b": 3}));
    app.call(&key, "GET", &format!("{A}/bots/s/properties/a"), "").await.assert_error(404);

    assert_eq!(ctxd::sweeper::sweep_once(&app.store).await.unwrap(), 1);
    let expired = app.events().into_iter().rfind(|event| event.3 == "PropertiesExpired").unwrap();
    assert_eq!(expired.4, json!({"namespace": "bots", "session_id": "s", "properties": ["a"]}));
    assert_eq!(expired.5["actor"], "system:sweeper");
    assert_eq!(ctxd::sweeper::sweep_once(&app.store).await.unwrap(), 0, "nothing left to expire");

    app.clock.advance(Duration::seconds(60));
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/session-ids"), "").await.json(), json!([]));
    ctxd::sweeper::sweep_once(&app.store).await.unwrap();
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_session_ttl_wins_over_the_namespace_ttl_and_zero_means_forever() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "POST", &format!("{A}?ttlSecond=60"), r#"{"name":"bots"}"#).await;
    app.call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=10"), r#"{"sessionId":"short"}"#)
        .await;
    app.call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=0"), r#"{"sessionId":"forever"}"#)
        .await;
    for session in ["short", "forever", "plain"] {
        app.call(&key, "PATCH", &format!("{A}/bots/{session}/properties"), r#"{"v":1}"#).await;
    }
    app.clock.advance(Duration::seconds(11));
    let read = |session: &'static str| {
        let (app, key) = (&app, &key);
        async move { app.call(key, "GET", &format!("{A}/bots/{session}/properties"), "").await.json() }
    };
    assert_eq!(read("short").await, json!({}));
    assert_eq!(read("plain").await, json!({"v": 1}));
    app.clock.advance(Duration::days(365));
    assert_eq!(read("plain").await, json!({}));
    assert_eq!(read("forever").await, json!({"v": 1}));
}

#[tokio::test]
async fn a_ttl_set_later_applies_only_to_properties_written_after_it() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"old":1}"#).await;
    app.call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"sessionId":"s"}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"new":1}"#).await;
    app.clock.advance(Duration::seconds(6));
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.json(), json!({"old": 1}));
}

#[tokio::test]
async fn expiry_survives_a_restart_because_it_is_stamped_in_the_event() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "POST", &format!("{A}?ttlSecond=30"), r#"{"name":"bots"}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1}"#).await;
    let app = app.restart().await;
    app.clock.advance(Duration::seconds(31));
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.json(), json!({}));
}
