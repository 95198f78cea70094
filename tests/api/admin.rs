//! Accounts and keys through the admin API.

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, spawn_app};

#[tokio::test]
async fn accounts_are_created_listed_and_keyed_with_one_active_key_each() {
    let app = spawn_app().await;
    let created = app.admin("POST", "/admin/accounts", r#"{"account_id":"acme"}"#).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location").as_deref(), Some("/admin/accounts/acme"));
    app.admin("POST", "/admin/accounts", r#"{"account_id":"acme"}"#).await.assert_error(409);

    let first = app.issue_key("acme").await;
    let second = app.issue_key("acme").await;
    assert_ne!(first, second);
    let list = app.admin("GET", "/admin/accounts", "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["account_id"], "acme");
    let key_id = list[0]["active_key_id"].as_str().unwrap();
    assert!(second.contains(key_id), "the active key is the latest");

    let types: Vec<String> = app.events().into_iter().map(|event| event.3).collect();
    assert_eq!(types, ["AccountCreated", "ApiKeyIssued", "ApiKeyRevoked", "ApiKeyIssued"]);
    let stored = app.events().into_iter().map(|event| event.4.to_string()).collect::<String>();
    assert!(!stored.contains(&second), "the key itself is never stored");
}

#[tokio::test]
async fn admin_calls_need_the_admin_token_and_valid_input() {
    let app = spawn_app().await;
    for token in ["", "Bearer wrong", "Basic abc"] {
        let reply = app.request("GET", "/admin/accounts", &[("authorization", token)], "").await;
        reply.assert_error(403);
    }
    let with_key_header = app.request("GET", "/admin/accounts", &[("maven-api-key", ADMIN_TOKEN)], "").await;
    with_key_header.assert_error(403);
    app.admin("POST", "/admin/accounts/ghost/api-key", "").await.assert_error(404);
    app.admin("POST", "/admin/accounts", r#"{"account":"x"}"#).await.assert_error(400);
    app.admin("POST", "/admin/accounts", r#"{"account_id":""}"#).await.assert_error(400);
    app.admin("POST", "/admin/accounts", "nope").await.assert_error(400);
    assert_eq!(app.event_count(), 0);
    assert_eq!(app.admin("GET", "/admin/accounts", "").await.json(), json!([]));
}

#[tokio::test]
async fn a_retried_key_issue_does_not_issue_a_second_key() {
    let app = spawn_app().await;
    app.admin("POST", "/admin/accounts", r#"{"account_id":"acme"}"#).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "issue-1")];
    let first = app.request("POST", "/admin/accounts/acme/api-key", &headers, "").await;
    assert_eq!(first.status, 201);
    let retry = app.request("POST", "/admin/accounts/acme/api-key", &headers, "").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["replayed"], true);
    let key = first.json()["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        app.call(&key, "GET", "/v1/account/acme", "").await.status,
        200,
        "the first key is still active"
    );
}

#[tokio::test]
async fn the_location_of_a_new_account_can_be_read_back() {
    let app = spawn_app().await;
    let created = app.admin("POST", "/admin/accounts", r#"{"account_id":"acme corp/eu"}"#).await;
    let location = created.header("location").unwrap();
    assert_eq!(location, "/admin/accounts/acme%20corp%2Feu");
    let account = app.admin("GET", &location, "").await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert_eq!(account.json()["account_id"], "acme corp/eu");
    app.admin("GET", "/admin/accounts/nobody", "").await.assert_error(404);
}
