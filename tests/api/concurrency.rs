//! Idempotent retries and optimistic concurrency.

use serde_json::json;

use crate::helpers::spawn_app;

const PATH: &str = "/v1/account/acme/bots/s/properties";

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_appends_nothing_even_after_a_restart() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let retry = [("idempotency-key", "order-7")];
    let first = app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await;
    assert_eq!(first.status, 204);
    app.call(&key, "PATCH", PATH, r#"{"n":2}"#).await;
    let count = app.event_count();

    let again = app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await;
    assert_eq!(again.status, 204);
    assert_eq!(again.etag(), first.etag(), "the first result is returned");
    assert_eq!(app.event_count(), count);
    assert_eq!(app.call(&key, "GET", PATH, "").await.json(), json!({"n": 2}));

    let app = app.restart().await;
    let after_restart = app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await;
    assert_eq!(after_restart.status, 204);
    assert_eq!(after_restart.etag(), first.etag());
    assert_eq!(app.event_count(), count);

    let reused = app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":3}"#).await;
    assert!(reused.assert_error(422).contains("Idempotency-Key"));
    assert_eq!(app.event_count(), count);
}

#[tokio::test]
async fn idempotency_keys_of_different_accounts_do_not_collide() {
    let app = spawn_app().await;
    let acme = app.account("acme").await;
    let globex = app.account("globex").await;
    let retry = [("idempotency-key", "same")];
    assert_eq!(app.call_with(&acme, "PATCH", PATH, &retry, r#"{"n":1}"#).await.status, 204);
    let other =
        app.call_with(&globex, "PATCH", "/v1/account/globex/bots/s/properties", &retry, r#"{"n":1}"#).await;
    assert_eq!(other.status, 204);
    assert_eq!(
        app.call(&globex, "GET", "/v1/account/globex/bots/s/properties", "").await.json(),
        json!({"n": 1})
    );
}

#[tokio::test]
async fn a_stale_if_match_gets_412_with_the_current_version_and_writes_nothing() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", PATH, r#"{"n":1}"#).await;
    let read = app.call(&key, "GET", PATH, "").await;
    let etag = read.etag();
    assert_eq!(etag, "\"1\"");

    let ok = app.call_with(&key, "PATCH", PATH, &[("if-match", &etag)], r#"{"n":2}"#).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.etag(), "\"2\"");
    let count = app.event_count();

    for (method, path, body) in [
        ("PATCH", PATH.to_string(), r#"{"n":3}"#),
        ("PUT", format!("{PATH}/n"), "3"),
        ("DELETE", format!("{PATH}/n"), ""),
        ("DELETE", PATH.to_string(), ""),
    ] {
        let stale = app.call_with(&key, method, &path, &[("if-match", &etag)], body).await;
        stale.assert_error(412);
        assert_eq!(stale.json()["currentVersion"], 2);
        assert_eq!(stale.etag(), "\"2\"");
    }
    assert_eq!(app.event_count(), count);
    assert_eq!(app.call(&key, "GET", PATH, "").await.json(), json!({"n": 2}));

    let new_session = "/v1/account/acme/bots/fresh/properties";
    assert_eq!(
        app.call_with(&key, "PATCH", new_session, &[("if-match", "\"0\"")], r#"{"a":1}"#).await.status,
        204
    );
    app.call_with(&key, "PATCH", new_session, &[("if-match", "\"0\"")], r#"{"a":1}"#).await.assert_error(412);
}

#[tokio::test]
async fn concurrent_writers_to_one_session_each_get_a_distinct_version() {
    let app = std::sync::Arc::new(spawn_app().await);
    let key = app.account("acme").await;
    let mut tasks = Vec::new();
    for writer in 0..32 {
        let (app, key) = (app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let reply = app.call(&key, "PATCH", PATH, &format!(r#"{{"w{writer}":{writer}}}"#)).await;
            assert_eq!(reply.status, 204);
            reply.etag()
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 32, "every write got its own stream version");
    assert_eq!(app.call(&key, "GET", PATH, "").await.json().as_object().unwrap().len(), 32);
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_read_never_pairs_a_document_with_another_versions_etag() {
    let app = std::sync::Arc::new(spawn_app().await);
    let key = app.account("acme").await;
    let writer = {
        let (app, key) = (app.clone(), key.clone());
        tokio::spawn(async move {
            for n in 1..=300 {
                assert_eq!(app.call(&key, "PATCH", PATH, &format!(r#"{{"n":{n}}}"#)).await.status, 204);
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (app, key) = (app.clone(), key.clone());
        readers.push(tokio::spawn(async move {
            let mut checked = 0;
            loop {
                let read = app.call(&key, "GET", PATH, "").await;
                let version: u64 = read.etag().trim_matches('"').parse().unwrap();
                let body = read.json();
                assert_eq!(body["n"].as_u64().unwrap_or(0), version, "document and ETag of one snapshot");
                checked += 1;
                if version == 300 {
                    return checked;
                }
            }
        }));
    }
    writer.await.unwrap();
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn namespace_writes_honour_if_match_against_the_namespace_etag() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let created = app.call(&key, "POST", "/v1/account/acme?ttlSecond=60", r#"{"name":"bots"}"#).await;
    assert_eq!(created.etag(), "\"1\"");
    let stale = app
        .call_with(
            &key,
            "POST",
            "/v1/account/acme?ttlSecond=90",
            &[("if-match", "\"0\"")],
            r#"{"name":"bots"}"#,
        )
        .await;
    stale.assert_error(412);
    assert_eq!(stale.json()["currentVersion"], 1);
    app.call_with(&key, "DELETE", "/v1/account/acme/bots", &[("if-match", "\"7\"")], "")
        .await
        .assert_error(412);
    assert_eq!(app.call(&key, "GET", "/v1/account/acme", "").await.json()[0]["ttlSecond"], 60);
    let deleted = app.call_with(&key, "DELETE", "/v1/account/acme/bots", &[("if-match", "\"1\"")], "").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.call(&key, "GET", "/v1/account/acme", "").await.json(), json!([]));
}

#[tokio::test]
async fn an_account_named_admin_does_not_share_the_admin_idempotency_keys() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", crate::helpers::ADMIN_TOKEN);
    let created = app
        .request(
            "POST",
            "/admin/accounts",
            &[("authorization", &auth), ("idempotency-key", "k1")],
            r#"{"account_id":"admin"}"#,
        )
        .await;
    assert_eq!(created.status, 201);
    let key = app.issue_key("admin").await;
    let patched = app
        .call_with(
            &key,
            "PATCH",
            "/v1/account/admin/bots/s/properties",
            &[("idempotency-key", "k1")],
            r#"{"a":1}"#,
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
}

#[tokio::test]
async fn an_idempotency_key_is_remembered_for_the_retention_then_forgotten() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let retry = [("idempotency-key", "daily")];
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await.etag(), "\"1\"");

    app.clock.advance(chrono::Duration::hours(23));
    ctxd::sweeper::prune_idempotency_keys(&app.store, day).await.unwrap();
    assert_eq!(app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await.etag(), "\"1\"", "replayed");

    app.clock.advance(chrono::Duration::hours(2));
    ctxd::sweeper::prune_idempotency_keys(&app.store, day).await.unwrap();
    let after = app.call_with(&key, "PATCH", PATH, &retry, r#"{"n":1}"#).await;
    assert_eq!(after.etag(), "\"2\"", "past the retention the key is new again");
}
