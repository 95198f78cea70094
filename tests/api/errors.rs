//! Bad input of every kind gets a JSON 4xx and writes nothing.

use crate::helpers::spawn_app;

const A: &str = "/v1/account/acme";

#[tokio::test]
async fn malformed_bodies_are_400_and_write_nothing() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let before = app.event_count();
    let cases = [
        ("PATCH", format!("{A}/bots/s/properties"), "{not json"),
        ("PATCH", format!("{A}/bots/s/properties"), "[1,2,3]"),
        ("PATCH", format!("{A}/bots/s/properties"), "\"a string\""),
        ("PATCH", format!("{A}/bots/s/properties"), ""),
        ("PUT", format!("{A}/bots/s/properties/p"), "{\"unterminated\":"),
        ("PUT", format!("{A}/bots/s/properties/p"), ""),
        ("POST", A.to_string(), "{}"),
        ("POST", A.to_string(), r#"{"name":42}"#),
        ("POST", A.to_string(), r#"{"name":"x","extra":1}"#),
        ("POST", format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"session":"s"}"#),
        ("POST", format!("{A}/namespace/bots/session"), r#"{"sessionId":"s"}"#),
    ];
    for (method, path, body) in cases {
        app.call(&key, method, &path, body).await.assert_error(400);
    }
    assert_eq!(app.event_count(), before);
}

#[tokio::test]
async fn bad_names_are_400_and_write_nothing() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let before = app.event_count();
    let long = "n".repeat(257);
    let cases = [
        format!("{A}/{long}/s/properties"),
        format!("{A}/bots/{long}/properties"),
        format!("{A}/bots/s/properties/{long}"),
        format!("{A}/bots%01/s/properties"),
        format!("{A}/bots/s%0A/properties"),
        format!("{A}/bots/s/properties/p%7F"),
    ];
    for path in &cases {
        let method = if path.ends_with("/properties") { "PATCH" } else { "PUT" };
        let body = if method == "PATCH" { r#"{"a":1}"# } else { "1" };
        app.call(&key, method, path, body).await.assert_error(400);
        app.call(&key, "GET", path, "").await.assert_error(400);
    }
    for body in [format!(r#"{{"{long}":1}}"#), r#"{"":1}"#.to_string(), r#"{"a\u0000b":1}"#.to_string()] {
        app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), &body).await.assert_error(400);
    }
    app.call(&key, "POST", A, r#"{"name":""}"#).await.assert_error(400);
    app.call(&key, "POST", A, &format!(r#"{{"name":"{long}"}}"#)).await.assert_error(400);
    app.call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"sessionId":""}"#)
        .await
        .assert_error(400);
    assert_eq!(app.event_count(), before);
}

#[tokio::test]
async fn bad_ttls_and_headers_are_400() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for ttl in ["-1", "abc", "1.5", "99999999999999999999"] {
        app.call(&key, "POST", &format!("{A}?ttlSecond={ttl}"), r#"{"name":"n"}"#).await.assert_error(400);
    }
    app.call(&key, "POST", &format!("{A}?ttlSecond=999999999999"), r#"{"name":"n"}"#).await.assert_error(400);
    let path = format!("{A}/bots/s/properties");
    app.call_with(&key, "PATCH", &path, &[("if-match", "\"abc\"")], r#"{"a":1}"#).await.assert_error(400);
    let long_key = "k".repeat(300);
    app.call_with(&key, "PATCH", &path, &[("idempotency-key", &long_key)], r#"{"a":1}"#)
        .await
        .assert_error(400);
}

#[tokio::test]
async fn a_huge_body_is_413_with_a_json_message() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(5 * 1024 * 1024));
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), &huge).await.assert_error(413);
    assert_eq!(app.event_count(), 2);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "GET", "/nothing/here", "").await.assert_error(404);
    app.call(&key, "GET", &format!("{A}/bots/s/properties/p/extra"), "").await.assert_error(404);
    app.call(&key, "POST", &format!("{A}/bots/s/properties"), "{}").await.assert_error(405);
    app.call(&key, "PATCH", A, "{}").await.assert_error(405);
}

#[tokio::test]
async fn keys_that_are_missing_wrong_revoked_or_for_another_account_get_403() {
    let app = spawn_app().await;
    let old_key = app.account("acme").await;
    let key = app.issue_key("acme").await;
    let other_key = app.account("globex").await;
    let path = format!("{A}/bots/s/properties");
    assert_eq!(app.call(&key, "PATCH", &path, r#"{"secret":1}"#).await.status, 204);
    let before = app.event_count();

    app.request("GET", &path, &[], "").await.assert_error(403);
    app.call("ctxd_wrong", "GET", &path, "").await.assert_error(403);
    app.call(&old_key, "GET", &path, "").await.assert_error(403);
    for (method, body) in [("GET", ""), ("PATCH", r#"{"x":1}"#), ("DELETE", "")] {
        app.call(&other_key, method, &path, body).await.assert_error(403);
    }
    app.call(&other_key, "GET", A, "").await.assert_error(403);
    app.call(&other_key, "DELETE", &format!("{A}/bots"), "").await.assert_error(403);
    app.call(&key, "GET", "/v1/account/unknown/bots/s/properties", "").await.assert_error(403);
    assert_eq!(app.event_count(), before);

    // The other account sees nothing of acme's under its own path either.
    let own = app.call(&other_key, "GET", "/v1/account/globex/bots/s/properties", "").await;
    assert_eq!(own.body, "{}");
    assert_eq!(app.call(&other_key, "GET", "/v1/account/globex", "").await.body, "[]");

    // Bearer works as well as maven-api-key.
    let bearer = format!("Bearer {key}");
    let got = app.request("GET", &path, &[("authorization", &bearer)], "").await;
    assert_eq!(got.body, r#"{"secret":1}"#);
}

#[tokio::test]
async fn a_huge_uri_is_414_and_too_many_or_too_large_headers_are_431_with_json_messages() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let long = format!("/v1/account/acme/bots/{}/properties", "s".repeat(20 * 1024));
    let reply = app.call(&key, "GET", &long, "").await;
    assert!(reply.assert_error(414).contains("request target"), "{}", reply.body);
    assert!(reply.headers.contains_key("x-request-id"), "a 414 is observed like any answer");
    // On the journeys API, in its shape.
    let long = format!("/genesys/1/cs/services/{}", "s".repeat(20 * 1024));
    let reply = app.call_with(&key, "GET", &long, &[], "").await;
    assert_eq!(reply.status, 414);
    assert_eq!(reply.json()["exception"], "UriTooLongException", "{}", reply.body);
    // A target that NFC would grow past the limit is judged as sent: its name is too long.
    let growing = format!("/v1/account/acme/bots/{}/properties", "%F0%9D%85%A0".repeat(1300));
    app.call(&key, "GET", &growing, "").await.assert_error(400);

    let names: Vec<String> = (0..150).map(|i| format!("x-extra-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let reply = app.call_with(&key, "GET", "/v1/account/acme/bots/s/properties", &many, "").await;
    assert!(reply.assert_error(431).contains("header fields"), "{}", reply.body);

    let big = "v".repeat(70 * 1024);
    let reply = app
        .call_with(&key, "GET", "/v1/account/acme/bots/s/properties", &[("x-big", big.as_str())], "")
        .await;
    reply.assert_error(431);

    // Within the limits, the same request is answered.
    let fine = app.call_with(&key, "GET", "/v1/account/acme/bots/s/properties", &many[..50], "").await;
    assert_eq!(fine.status, 200, "{}", fine.body);
}

#[tokio::test]
async fn look_alike_names_cannot_reach_reserved_namespaces_nor_become_a_second_account() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    // Fullwidth letters spell a reserved namespace as much as ASCII does.
    // And so do invisible characters, spaces around it and letters of another script.
    for name in [
        "ｃｏｎｓｕｍｅｒ",
        "ＣＯＮＳＵＭＥＲ",
        "Faas",
        "con\u{00ad}sumer",
        "au\u{200d}dit",
        " audit",
        "\u{0441}onsumer",
    ] {
        let body = serde_json::json!({ "name": name }).to_string();
        let reply = app.call(&key, "POST", "/v1/account/acme", &body).await;
        assert!(reply.assert_error(400).contains("reserved"), "{name}: {}", reply.body);
    }
    let encoded = "/v1/account/acme/%EF%BD%83%EF%BD%8F%EF%BD%8E%EF%BD%93%EF%BD%95%EF%BD%8D%EF%BD%85%EF%BD%92/s/properties";
    let reply = app.call(&key, "PATCH", encoded, r#"{"a": 1}"#).await;
    reply.assert_error(400);

    // Account ids that differ only in case or character width are one account: a second is 409.
    for id in ["ACME", "ａｃｍｅ", "Ａcme", "acme ", "ac\u{200b}me", "\u{0430}cme"] {
        let body = serde_json::json!({ "account_id": id }).to_string();
        let reply = app.admin("POST", "/admin/accounts", &body).await;
        assert!(reply.assert_error(409).contains("look like"), "{id}: {}", reply.body);
    }
    let accounts = app.admin("GET", "/admin/accounts", "").await.json();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "{accounts}");
    assert_eq!(app.admin("POST", "/admin/accounts", r#"{"account_id": "acme-2"}"#).await.status, 201);
    // Names that display other than they read, or show nothing, are refused outright.
    for id in ["   ", "acme\u{202e}x"] {
        let body = serde_json::json!({ "account_id": id }).to_string();
        app.admin("POST", "/admin/accounts", &body).await.assert_error(400);
    }
}
