//! The 19 endpoints of the LivePerson v1 context API and their semantics.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

const A: &str = "/v1/account/acme";

#[tokio::test]
async fn patch_merges_properties_and_get_returns_the_whole_session() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let first = app
        .call(&key, "PATCH", &format!("{A}/bots/conv1/properties"), r#"{"a":1,"b":"hello","c":true}"#)
        .await;
    assert_eq!(first.status, 204, "{}", first.body);
    assert_eq!(first.etag(), "\"1\"");
    let second = app
        .call(&key, "PATCH", &format!("{A}/bots/conv1/properties"), r#"{"b":{"name":"x"},"d":[1,2,null]}"#)
        .await;
    assert_eq!(second.status, 204);
    assert_eq!(second.etag(), "\"2\"");

    let got = app.call(&key, "GET", &format!("{A}/bots/conv1/properties"), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"a": 1, "b": {"name": "x"}, "c": true, "d": [1, 2, null]}));
    assert_eq!(got.etag(), "\"2\"");
    let trailing_slash = app.call(&key, "GET", &format!("{A}/bots/conv1/properties/"), "").await;
    assert_eq!(trailing_slash.json(), got.json());
}

#[tokio::test]
async fn put_takes_a_raw_json_value_and_get_one_returns_it_bare() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let put = app
        .call(
            &key,
            "PUT",
            &format!("{A}/bots/conv1/properties/items"),
            r#"{"name":"value2","items":["A","B"]}"#,
        )
        .await;
    assert_eq!(put.status, 204, "{}", put.body);
    app.call(&key, "PUT", &format!("{A}/bots/conv1/properties/greeting"), r#""value4""#).await;

    let one = app.call(&key, "GET", &format!("{A}/bots/conv1/properties/items"), "").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), json!({"name": "value2", "items": ["A", "B"]}));
    assert_eq!(
        app.call(&key, "GET", &format!("{A}/bots/conv1/properties/greeting"), "").await.body,
        r#""value4""#
    );

    let missing = app.call(&key, "GET", &format!("{A}/bots/conv1/properties/nope"), "").await;
    missing.assert_error(404);
}

#[tokio::test]
async fn an_unknown_session_reads_as_an_empty_object() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let got = app.call(&key, "GET", &format!("{A}/nobody/nothing/properties"), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "{}");
    assert_eq!(got.etag(), "\"0\"");
}

#[tokio::test]
async fn include_keeps_only_the_named_properties() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"p1":1,"p2":2,"p3":3}"#).await;
    let got = app.call(&key, "GET", &format!("{A}/bots/s/properties?include=p1,p3,absent"), "").await;
    assert_eq!(got.json(), json!({"p1": 1, "p3": 3}));
    let namespace_level = app.call(&key, "GET", &format!("{A}/bots/properties?include=p1"), "").await;
    assert_eq!(namespace_level.json(), json!({}));
}

#[tokio::test]
async fn namespace_properties_are_the_default_session() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    assert_eq!(
        app.call(&key, "PATCH", &format!("{A}/bots/properties"), r#"{"global":"yes"}"#).await.status,
        204
    );
    assert_eq!(app.call(&key, "PUT", &format!("{A}/bots/properties/other"), "42").await.status, 204);
    let via_default = app.call(&key, "GET", &format!("{A}/bots/__default__/properties"), "").await;
    assert_eq!(via_default.json(), json!({"global": "yes", "other": 42}));
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/properties/other"), "").await.body, "42");
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots/properties/other"), "").await.status, 204);
    assert_eq!(
        app.call(&key, "GET", &format!("{A}/bots/properties"), "").await.json(),
        json!({"global": "yes"})
    );
}

#[tokio::test]
async fn deletes_are_idempotent_and_append_nothing_when_there_is_nothing_to_delete() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1,"b":2}"#).await;
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots/s/properties/a"), "").await.status, 204);
    let before = app.event_count();
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots/s/properties/a"), "").await.status, 204);
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/ghost/s/properties/a"), "").await.status, 204);
    assert_eq!(app.event_count(), before);
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.json(), json!({"b": 2}));
}

#[tokio::test]
async fn clearing_a_session_keeps_its_ttl_and_deleting_it_removes_the_ttl() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let set = app
        .call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=100"), r#"{"sessionId":"s1"}"#)
        .await;
    assert_eq!(set.status, 204, "{}", set.body);
    app.call(&key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":1}"#).await;

    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots/s1/properties/"), "").await.status, 204);
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s1/properties"), "").await.body, "{}");
    let ttls = app.call(&key, "GET", &format!("{A}/namespace/bots/session"), "").await.json();
    assert_eq!(ttls[0]["sessionId"], "s1");
    assert_eq!(ttls[0]["ttlSecond"], 100);
    assert_eq!(ttls[0]["createdAt"], "2026-01-01T10:00:00.000Z");

    app.call(&key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":2}"#).await;
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/namespace/bots/session/s1"), "").await.status, 204);
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s1/properties"), "").await.body, "{}");
    assert_eq!(app.call(&key, "GET", &format!("{A}/namespace/bots/session"), "").await.json(), json!([]));
}

#[tokio::test]
async fn creating_a_namespace_is_idempotent_and_a_ttl_replaces_the_namespace_ttl() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for _ in 0..2 {
        assert_eq!(app.call(&key, "POST", A, r#"{"name":"orders"}"#).await.status, 204);
    }
    assert_eq!(
        app.call(&key, "POST", &format!("{A}?ttlSecond=100"), r#"{"name":"carts"}"#).await.status,
        204
    );
    assert_eq!(
        app.call(&key, "POST", &format!("{A}?ttlSecond=300"), r#"{"name":"carts"}"#).await.status,
        204
    );
    let list = app.call(&key, "GET", A, "").await;
    assert_eq!(
        list.json(),
        json!([
            {"name": "carts", "createdAt": "2026-01-01T10:00:00.000Z", "ttlSecond": 300},
            {"name": "orders", "createdAt": "2026-01-01T10:00:00.000Z"},
        ])
    );
    let types: Vec<String> = app.events().into_iter().map(|event| event.3).collect();
    assert_eq!(types.iter().filter(|t| *t == "NamespaceCreated").count(), 2);
    assert_eq!(types.iter().filter(|t| *t == "NamespaceTtlSet").count(), 1);
}

#[tokio::test]
async fn writing_to_an_unregistered_namespace_registers_it() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/implicit/s/properties"), r#"{"a":1}"#).await;
    let list = app.call(&key, "GET", A, "").await.json();
    assert_eq!(list[0]["name"], "implicit");
}

#[tokio::test]
async fn deleting_a_namespace_removes_every_session_in_it() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "POST", A, r#"{"name":"bots"}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":1}"#).await;
    app.call(&key, "PATCH", &format!("{A}/bots/properties"), r#"{"g":1}"#).await;
    app.call(&key, "POST", &format!("{A}/namespace/bots/session?ttlSecond=5"), r#"{"sessionId":"s2"}"#).await;
    app.call(&key, "PATCH", &format!("{A}/keep/s1/properties"), r#"{"k":1}"#).await;

    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots"), "").await.status, 204);
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s1/properties"), "").await.body, "{}");
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/properties"), "").await.body, "{}");
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/session-ids"), "").await.json(), json!([]));
    assert_eq!(app.call(&key, "GET", &format!("{A}/namespace/bots/session"), "").await.json(), json!([]));
    let names: Vec<_> = app
        .call(&key, "GET", A, "")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].clone())
        .collect();
    assert_eq!(names, [json!("keep")]);
    assert_eq!(app.call(&key, "GET", &format!("{A}/keep/s1/properties"), "").await.json(), json!({"k": 1}));
    // Each session's own stream records that it went with its namespace.
    let deleted: Vec<_> = app
        .events()
        .into_iter()
        .filter(|e| e.3 == "SessionDeleted")
        .map(|e| e.4["session_id"].clone())
        .collect();
    assert_eq!(deleted, [json!("__default__"), json!("s1"), json!("s2")]);
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn session_ids_and_session_properties_are_paged() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for index in 0..5 {
        app.call(&key, "PATCH", &format!("{A}/bots/s{index}/properties"), &format!(r#"{{"n":{index}}}"#))
            .await;
    }
    app.call(&key, "PATCH", &format!("{A}/bots/properties"), r#"{"g":true}"#).await;
    let all = app.call(&key, "GET", &format!("{A}/bots/session-ids"), "").await.json();
    assert_eq!(all, json!(["__default__", "s0", "s1", "s2", "s3", "s4"]));
    let page = app.call(&key, "GET", &format!("{A}/bots/session-ids?page=1&perPage=2"), "").await.json();
    assert_eq!(page, json!(["s1", "s2"]));
    let with_properties =
        app.call(&key, "GET", &format!("{A}/bots/session-properties?page=2&perPage=2"), "").await.json();
    assert_eq!(
        with_properties,
        json!([{"sessionId": "s3", "properties": {"n": 3}}, {"sessionId": "s4", "properties": {"n": 4}}])
    );
    for bad in ["perPage=0", "perPage=1001", "page=-1", "perPage=x"] {
        app.call(&key, "GET", &format!("{A}/bots/session-ids?{bad}"), "").await.assert_error(400);
        app.call(&key, "GET", &format!("{A}/bots/session-properties?{bad}"), "").await.assert_error(400);
    }
}

#[tokio::test]
async fn reserved_namespaces_are_refused_everywhere() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for reserved in ["consumer", "operational", "conversation", "custom", "sde", "faas"] {
        let message =
            app.call(&key, "POST", A, &format!(r#"{{"name":"{reserved}"}}"#)).await.assert_error(400);
        assert!(message.contains("reserved"), "{message}");
        app.call(&key, "PATCH", &format!("{A}/{reserved}/s/properties"), r#"{"a":1}"#)
            .await
            .assert_error(400);
        app.call(&key, "GET", &format!("{A}/{reserved}/s/properties"), "").await.assert_error(400);
        app.call(&key, "DELETE", &format!("{A}/{reserved}"), "").await.assert_error(400);
    }
    assert_eq!(app.event_count(), 2, "only the account and its key");
}

#[tokio::test]
async fn a_document_over_800000_characters_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let half = "x".repeat(450_000);
    assert_eq!(
        app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), &format!(r#"{{"a":"{half}"}}"#))
            .await
            .status,
        204
    );
    let before = app.event_count();
    let too_big =
        app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), &format!(r#"{{"b":"{half}"}}"#)).await;
    assert_eq!(too_big.assert_error(413), "document too large");
    assert_eq!(app.event_count(), before);
    // Replacing the big value instead of adding one fits.
    assert_eq!(
        app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), &format!(r#"{{"a":"{half}","b":1}}"#))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn the_800000_character_limit_is_exact_after_overwrites_deletes_and_clears() {
    // A write reads the session's kept size, not its properties: check that the kept size is
    // the document's length to the character, with keys JSON escapes lengthen.
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let session = format!("{A}/bots/s/properties");
    let keys = ["plain", "q\"uote", "back\\slash", "ünïcödé", "日本"];
    for round in 0..3 {
        let mut patch = serde_json::Map::new();
        for i in 0..200 {
            let name = format!("{}-{i}", keys[i % keys.len()]);
            patch.insert(name, json!("v".repeat((i * 7 + round * 13) % 90)));
        }
        patch.insert(format!("n{round}"), json!({"nested": [round, "ö"]}));
        assert_eq!(app.call(&key, "PATCH", &session, &Value::Object(patch).to_string()).await.status, 204);
    }
    for i in (0..200).step_by(3) {
        let name = format!("{}-{i}", keys[i % keys.len()]);
        let path = format!("{A}/bots/s/properties/{}", urlencoding(&name));
        assert_eq!(app.call(&key, "DELETE", &path, "").await.status, 204);
    }
    // A cleared session counts from nothing again.
    let other = format!("{A}/bots/t/properties");
    app.call(&key, "PATCH", &other, &format!(r#"{{"big":"{}"}}"#, "x".repeat(700_000))).await;
    assert_eq!(app.call(&key, "DELETE", &format!("{A}/bots/t/properties/"), "").await.status, 204);

    let document = app.call(&key, "GET", &session, "").await.body;
    let length = document.chars().count();
    // `,"zz":"…"` adds 8 characters and the value.
    let fits = 800_000 - length - 8;
    let filler = |n: usize| format!(r#"{{"zz":"{}"}}"#, "x".repeat(n));
    assert_eq!(
        app.call(&key, "PATCH", &session, &filler(fits + 1)).await.assert_error(413),
        "document too large"
    );
    assert_eq!(app.call(&key, "PATCH", &session, &filler(fits)).await.status, 204);
    assert_eq!(app.call(&key, "GET", &session, "").await.body.chars().count(), 800_000);
    assert_eq!(
        app.call(&key, "PATCH", &other, &format!(r#"{{"big":"{}"}}"#, "x".repeat(700_000))).await.status,
        204,
        "the cleared session holds nothing"
    );
    // The same to the character in a session small enough to be read whole.
    let small = format!("{A}/bots/small/properties");
    assert_eq!(
        app.call(&key, "PATCH", &small, r#"{"q\"uote":"ü","back\\slash":[1,{"a":"b"}]}"#).await.status,
        204
    );
    let length = app.call(&key, "GET", &small, "").await.body.chars().count();
    let fits = 800_000 - length - 8;
    assert_eq!(
        app.call(&key, "PATCH", &small, &filler(fits + 1)).await.assert_error(413),
        "document too large"
    );
    assert_eq!(app.call(&key, "PATCH", &small, &filler(fits)).await.status, 204);
    assert_eq!(app.call(&key, "GET", &small, "").await.body.chars().count(), 800_000);
}

fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn every_write_is_an_event_with_its_actor_and_request_id() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let reply = app
        .call_with(
            &key,
            "PATCH",
            &format!("{A}/bots/s/properties"),
            &[("x-request-id", "req-42")],
            r#"{"a":1}"#,
        )
        .await;
    assert_eq!(reply.header("x-request-id").as_deref(), Some("req-42"));
    let events = app.events();
    let (seq, stream, version, event_type, data, meta) = events.last().unwrap().clone();
    assert_eq!(seq as usize, events.len());
    assert_eq!(stream, "ctx/acme/bots/s");
    assert_eq!(version, 1);
    assert_eq!(event_type, "PropertiesPatched");
    assert_eq!(data["properties"], json!({"a": 1}));
    assert_eq!(meta["request_id"], "req-42");
    assert!(meta["actor"].as_str().unwrap().starts_with("key:"));
    assert!(meta["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "seq is gapless");
}

#[tokio::test]
async fn numbers_come_back_exactly_as_they_were_written() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    // No digit is lost; only the spelling of an exponent is normalized.
    let numbers = [
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("1E2", "1e+2"),
        ("-0", "-0"),
        ("0.1", "0.1"),
        ("1.5e-300", "1.5e-300"),
        ("18446744073709551616", "18446744073709551616"),
    ];
    for (written, read) in numbers {
        assert_eq!(app.call(&key, "PUT", &format!("{A}/bots/s/properties/n"), written).await.status, 204);
        assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s/properties/n"), "").await.body, read);
    }
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{ "spaced" : [ 1 , 2 ] }"#).await;
    let document = app.call(&key, "GET", &format!("{A}/bots/s/properties"), "").await.body;
    assert_eq!(document, r#"{"n":18446744073709551616,"spaced":[1,2]}"#, "stored compact");
}

#[tokio::test]
async fn an_empty_include_returns_the_whole_document() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", &format!("{A}/bots/s/properties"), r#"{"a":1,"b":2}"#).await;
    let got = app.call(&key, "GET", &format!("{A}/bots/s/properties?include="), "").await;
    assert_eq!(got.json(), json!({"a": 1, "b": 2}));
}

#[tokio::test]
async fn setting_the_same_session_ttl_twice_appends_one_event_and_registers_the_namespace() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for _ in 0..2 {
        let reply = app
            .call(&key, "POST", &format!("{A}/namespace/fresh/session?ttlSecond=30"), r#"{"sessionId":"s"}"#)
            .await;
        assert_eq!(reply.status, 204);
        assert_eq!(reply.etag(), "\"1\"");
    }
    let types: Vec<String> = app.events().into_iter().skip(2).map(|event| event.3).collect();
    assert_eq!(types, ["NamespaceCreated", "SessionTtlSet"]);
    assert_eq!(app.call(&key, "GET", A, "").await.json()[0]["name"], "fresh");
}

#[tokio::test]
async fn a_page_of_sessions_over_32_mib_is_refused_with_413() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let big = format!(r#"{{"v":"{}"}}"#, "x".repeat(790_000));
    for session in 0..43 {
        let reply = app.call(&key, "PATCH", &format!("{A}/big/s{session:02}/properties"), &big).await;
        assert_eq!(reply.status, 204);
    }
    let message =
        app.call(&key, "GET", &format!("{A}/big/session-properties?perPage=100"), "").await.assert_error(413);
    assert!(message.contains("perPage"), "{message}");
    let smaller = app.call(&key, "GET", &format!("{A}/big/session-properties?perPage=10"), "").await;
    assert_eq!(smaller.status, 200);
    assert_eq!(smaller.json().as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn names_sent_in_any_unicode_form_are_kept_and_compared_in_nfc() {
    let app = spawn_app().await;
    // The account id in decomposed form (o + combining diaeresis), then addressed composed.
    let key = app.account("zo\u{0065}\u{0308}").await;
    let composed = "/v1/account/zo%C3%AB";
    let decomposed = "/v1/account/zoe%CC%88";
    // A namespace, a session and a property, each written decomposed (NFD, as macOS writes).
    let created = app.call(&key, "POST", composed, r#"{"name":"cafe\u0301"}"#).await;
    assert_eq!(created.status, 204, "{}", created.body);
    let path = format!("{decomposed}/cafe%CC%81/rene%CC%81e/properties");
    let patched = app.call(&key, "PATCH", &path, r#"{"no\u0301m":"1"}"#).await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    // Read back composed: one namespace, one session, one property, all in NFC.
    let read = app.call(&key, "GET", &format!("{composed}/caf%C3%A9/ren%C3%A9e/properties"), "").await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json(), json!({"nóm": "1"}));
    let namespaces = app.call(&key, "GET", composed, "").await.json();
    let names: Vec<&str> =
        namespaces.as_array().unwrap().iter().map(|ns| ns["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["café"], "one namespace, named in NFC");
    // A second write in the other form lands in the same session.
    let again =
        app.call(&key, "PATCH", &format!("{composed}/caf%C3%A9/ren%C3%A9e/properties"), r#"{"x":2}"#).await;
    assert_eq!(again.status, 204);
    let read = app.call(&key, "GET", &format!("{decomposed}/cafe%CC%81/rene%CC%81e/properties"), "").await;
    assert_eq!(read.json(), json!({"nóm": "1", "x": 2}));
    // Names in a query too.
    let included = format!("{composed}/caf%C3%A9/ren%C3%A9e/properties?include=no%CC%81m");
    assert_eq!(app.call(&key, "GET", &included, "").await.json(), json!({"nóm": "1"}));
    // One name given twice, in two forms, is not silently one of them.
    let twice = app
        .call(&key, "PATCH", &format!("{composed}/caf%C3%A9/s2/properties"), r#"{"no\u0301m":1,"nóm":2}"#)
        .await;
    assert!(twice.assert_error(400).contains("twice"), "{}", twice.body);
}
