//! The audit surface over real HTTP and a real SQLite file: the event feed (paged and live over
//! Server-Sent Events), the hash chain and its verification, and erasure of a customer or a
//! context session.

use std::time::Duration;

use ctxd::store::db::Connection;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::helpers::{TestApp, raw_connection, spawn_app, stored_text};
use crate::journeys::{Cs, assert_cs_error};

/// `(seq, data)` of every event of `account`, from the SQLite file.
fn account_events(app: &TestApp, account: &str) -> Vec<(u64, String)> {
    let conn = app.connection();
    let mut statement = conn.prepare("SELECT seq, data FROM events WHERE account = ?1 ORDER BY seq").unwrap();
    statement
        .query_map([account], |row| Ok((row.get(0)?, stored_text(row, 1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A read-write connection to the store's file beside the running server: what someone with
/// access to the disk could do.
fn raw(app: &TestApp) -> Connection {
    crate::helpers::raw_connection(&app.data_dir)
}

async fn patch(app: &TestApp, key: &str, account: &str, session: &str, body: Value) {
    let path = format!("/v1/account/{account}/ns/{session}/properties");
    let reply = app.call(key, "PATCH", &path, &body.to_string()).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
}

async fn feed(app: &TestApp, key: &str, query: &str) -> Value {
    let reply = app.call(key, "GET", &format!("/v1/account/acme/events?{query}"), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn seqs(events: &Value) -> Vec<u64> {
    events.as_array().unwrap().iter().map(|event| event["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn the_feed_pages_an_accounts_events_in_order_with_a_stable_cursor() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let other = app.account("other").await;
    for round in 0..5 {
        patch(&app, &key, "acme", &format!("s{}", round % 2), json!({"round": round})).await;
        patch(&app, &other, "other", "s", json!({"secret": round})).await;
    }
    let stored = account_events(&app, "acme");

    // Pages of two, each starting after the last seq of the one before, give exactly the log.
    let (mut after, mut seen) = (0, Vec::new());
    loop {
        let page = feed(&app, &key, &format!("after={after}&limit=2")).await;
        seen.extend(seqs(&page["events"]));
        after = page["next_after"].as_u64().unwrap();
        // A write between pages lands after the cursor: it is read once, on a later page.
        if seen.len() == 2 {
            patch(&app, &key, "acme", "late", json!({"late": true})).await;
        }
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    let stored_after = account_events(&app, "acme");
    assert_eq!(seen, stored_after.iter().map(|(seq, _)| *seq).collect::<Vec<_>>());
    assert_eq!(stored_after.len(), stored.len() + 1);

    // Every stored column comes through: payload and meta as JSON, the chain link in hex.
    let all = feed(&app, &key, "limit=1000").await;
    let first_patch =
        all["events"].as_array().unwrap().iter().find(|e| e["type"] == "PropertiesPatched").unwrap();
    let seq = first_patch["seq"].as_u64().unwrap();
    let (data, meta, hash): (String, String, Vec<u8>) = raw(&app)
        .query_row("SELECT data, meta, hash FROM events WHERE seq = ?1", [seq], |row| {
            Ok((stored_text(row, 0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    assert_eq!(first_patch["data"], serde_json::from_str::<Value>(&data).unwrap());
    assert_eq!(first_patch["meta"], serde_json::from_str::<Value>(&meta).unwrap());
    assert_eq!(first_patch["hash"], hex::encode(hash));
    assert_eq!(first_patch["stream"], "ctx/acme/ns/s0");
    assert!(first_patch["meta"]["actor"].as_str().unwrap().starts_with("key:"));
    assert!(!all.to_string().contains("secret"), "another account's events leak: {all}");

    // Filters by type and by stream.
    let patches = feed(&app, &key, "type=PropertiesPatched").await;
    assert_eq!(patches["events"].as_array().unwrap().len(), 6);
    let s1 = feed(&app, &key, "stream=ctx/acme/ns/s1").await;
    assert_eq!(seqs(&s1["events"]).len(), 2);
    assert!(s1["events"].as_array().unwrap().iter().all(|e| e["stream"] == "ctx/acme/ns/s1"));
    let foreign = feed(&app, &key, "stream=ctx/other/ns/s").await;
    assert_eq!(foreign["events"], json!([]));
    let past_the_end = feed(&app, &key, "after=18446744073709551615").await;
    assert_eq!(past_the_end["events"], json!([]));

    for bad in ["limit=0", "limit=1001", "type=Nope", "after=-1", "after=x", "color=red", "stream="] {
        let reply = app.call(&key, "GET", &format!("/v1/account/acme/events?{bad}"), "").await;
        reply.assert_error(400);
    }
    for path in ["/v1/account/acme/events", "/v1/account/acme/events/stream", "/v1/account/acme/audit/verify"]
    {
        app.call(&other, "GET", path, "").await.assert_error(403);
        app.request("GET", path, &[], "").await.assert_error(403);
    }
    let erase = "/v1/account/acme/namespace/ns/session/s0/erase";
    app.call(&other, "POST", erase, "").await.assert_error(403);
}

/// Reads Server-Sent Events from a response body.
pub(crate) struct SseReader {
    body: Incoming,
    buffer: String,
}

impl SseReader {
    pub(crate) async fn open(app: &TestApp, key: &str, query: &str, last_event_id: Option<u64>) -> SseReader {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request =
            hyper::Request::get(format!("http://{}/v1/account/acme/events/stream{query}", app.addr))
                .header("maven-api-key", key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = client.request(request.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader { body: response.into_body(), buffer: String::new() }
    }

    /// The next event's id and data; None when the server ends the stream.
    pub(crate) async fn next(&mut self) -> Option<(u64, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name).map(|rest| rest.trim_start().to_string()))
                };
                if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                    return Some((id.parse().unwrap(), serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn a_follower_sees_every_event_once_in_order_across_a_reconnect() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let other = app.account("other").await;
    let start = account_events(&app, "acme").last().unwrap().0;

    let mut stream = SseReader::open(&app, &key, &format!("?after={start}"), None).await;
    let writer = {
        let (app_addr, key, other) = (app.addr, key.clone(), other.clone());
        tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            for round in 0..40 {
                for (account, key) in [("acme", &key), ("other", &other)] {
                    let request = hyper::Request::patch(format!(
                        "http://{app_addr}/v1/account/{account}/ns/s{}/properties",
                        round % 3
                    ))
                    .header("maven-api-key", key.as_str())
                    .body(Full::new(Bytes::from(json!({ "round": round }).to_string())))
                    .unwrap();
                    let reply = client.request(request).await.unwrap();
                    assert_eq!(reply.status(), 204);
                    reply.into_body().collect().await.unwrap();
                }
            }
        })
    };
    let mut received = Vec::new();
    while received.len() < 15 {
        let (id, event) = stream.next().await.unwrap();
        assert_eq!(event["seq"].as_u64(), Some(id));
        assert!(event["stream"].as_str().unwrap().contains("/acme/"), "{event}");
        received.push(id);
    }
    drop(stream);
    let mut resumed = SseReader::open(&app, &key, "", Some(*received.last().unwrap())).await;
    writer.await.unwrap();
    let expected: Vec<u64> =
        account_events(&app, "acme").iter().map(|(seq, _)| *seq).filter(|seq| *seq > start).collect();
    assert!(expected.len() >= 40, "{expected:?}");
    while received.len() < expected.len() {
        received.push(resumed.next().await.unwrap().0);
    }
    assert_eq!(received, expected, "every event once, in order");

    // A filter applies live too; a bad Last-Event-ID is refused.
    let mut patches =
        SseReader::open(&app, &key, "?type=PropertiesPatched&stream=ctx/acme/ns/s1", None).await;
    let (_, first) = patches.next().await.unwrap();
    assert_eq!(first["stream"], "ctx/acme/ns/s1");
    let bad = app
        .call_with(&key, "GET", "/v1/account/acme/events/stream", &[("last-event-id", "yesterday")], "")
        .await;
    bad.assert_error(400);

    // An open follower does not hold up a graceful shutdown: the server ends its stream.
    let mut app = app;
    let mut open = SseReader::open(&app, &key, &format!("?after={}", expected.last().unwrap()), None).await;
    tokio::time::timeout(Duration::from_secs(10), app.shutdown()).await.expect("shutdown drains followers");
    assert!(open.next().await.is_none());
}

async fn verify_chain(app: &TestApp, key: &str) -> Value {
    let reply = app.call(key, "GET", "/v1/account/acme/audit/verify", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn the_chain_verifies_and_a_row_edited_with_plain_sql_is_reported() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for round in 0..6 {
        patch(&app, &key, "acme", "s", json!({"round": round})).await;
    }
    let report = verify_chain(&app, &key).await;
    let last = app.event_count() as u64;
    let head: Vec<u8> =
        raw(&app).query_row("SELECT hash FROM events WHERE seq = ?1", [last], |row| row.get(0)).unwrap();
    assert_eq!(report, json!({"intact": true, "events": last, "last_seq": last, "head": hex::encode(head)}));

    // The triggers refuse edits and deletes outside an erasure, of the payload as of any column.
    let conn = raw(&app);
    for sql in [
        "UPDATE events SET data = '{}' WHERE seq = 3",
        "UPDATE events SET hash = substr(hash, 1, 1) WHERE seq = 3",
        "DELETE FROM events WHERE seq = 3",
    ] {
        let error = conn.execute(sql, []).unwrap_err().to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }

    // Someone who drops the trigger can edit a row; the chain shows where.
    crate::helpers::allow_editing_events(&conn);
    let target = last - 2;
    crate::helpers::edit_payload(&conn, "acme", target, r#""round":3"#, r#""round":30"#);
    let report = verify_chain(&app, &key).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_bad_seq"], target, "{report}");
    assert!(report["reason"].as_str().unwrap().contains("payload"), "{report}");

    // Recomputing the payload hash does not help: the link no longer matches.
    let data: String = conn
        .query_row("SELECT data FROM events WHERE seq = ?1", [target], |row| stored_text(row, 0))
        .unwrap();
    let forged = ctxd::store::chain::payload_hash(&data);
    conn.execute("UPDATE events SET payload_hash = ?1 WHERE seq = ?2", (forged.as_slice(), target)).unwrap();
    let report = verify_chain(&app, &key).await;
    assert_eq!(report["first_bad_seq"], target, "{report}");
    assert!(report["reason"].as_str().unwrap().contains("hash"), "{report}");

    // An earlier row's meta (who did it) is covered as well.
    let changed =
        conn.execute("UPDATE events SET meta = replace(meta, 'admin', 'nobody') WHERE seq = 1", []).unwrap();
    assert_eq!(changed, 1);
    assert_eq!(verify_chain(&app, &key).await["first_bad_seq"], 1);
}

/// Every analytics answer of the account, to compare before and after an erasure.
async fn analytics(app: &TestApp, key: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for query in ["dropoff", "transitions", "funnel?steps=ivr,queue", "timeseries?interval=day"] {
        let reply = app.call(key, "GET", &format!("/v1/account/acme/analytics/{query}"), "").await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        answers.push(reply.json());
    }
    answers
}

#[tokio::test]
async fn erasing_a_customer_redacts_their_events_keeps_the_chain_and_the_counts() {
    let app = spawn_app().await;
    let cs = Cs::new(&app, "acme").await;
    let created = cs.post("/profiles", json!({"FirstName": "Ann", "EmailAddress": "ann@example.org"})).await;
    let ann = created.json()["customer_id"].as_str().unwrap().to_string();
    let bob = cs.post("/profiles", json!({"FirstName": "Bob"})).await.json()["customer_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Ann: a completed journey and an abandoned one, with personal extensions and notes.
    let first = cs
        .start_service(json!({"customer_id": ann, "service_type": "billing", "media_type": "voice", "Reason": {"text": "double charge"}}))
        .await;
    let ivr = cs.start_state(&first, json!({"state_type": "ivr", "Account": {"number": "123-456"}})).await;
    cs.transition(&first, ivr, "queue", json!({})).await;
    cs.ok(cs
        .post(
            &format!("/services/{first}/end"),
            json!({"disposition": "resolved", "disposition_desc": "refund to Ann"}),
        )
        .await)
        .await;
    let second = cs
        .start_service(
            json!({"contact_key": "408-555-0101", "service_type": "billing", "media_type": "chat"}),
        )
        .await;
    cs.ok(cs
        .post(&format!("/customers/{ann}/services/{second}"), json!({"Lead": {"phone": "555-0101"}}))
        .await)
        .await;
    cs.start_state(&second, json!({"state_type": "ivr"})).await;
    cs.ok(cs.post(&format!("/services/{second}/end"), json!({"disposition": "abandoned"})).await).await;
    // Bob's journey stays as it is.
    let bobs = cs
        .start_service(
            json!({"customer_id": bob, "service_type": "billing", "Reason": {"text": "bob's question"}}),
        )
        .await;

    let before = analytics(&app, &cs.key).await;
    let abandoned_before = app.call(&cs.key, "GET", "/v1/account/acme/analytics/abandoned", "").await.json();
    assert!(abandoned_before.to_string().contains("555-0101"), "{abandoned_before}");

    let etag_before = cs.get(&format!("/services/{first}")).await.etag();
    let reply = cs.post(&format!("/profiles/{ann}/erase"), json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let erased = reply.json();
    assert_eq!(erased["type"], "CustomerErased");
    assert_eq!(erased["stream"], format!("cust/acme/{ann}"));
    assert!(erased["meta"]["actor"].as_str().unwrap().starts_with("key:"));
    let mut services: Vec<String> = erased["data"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    services.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(services, expected);
    assert!(!erased["data"]["redacted"].as_array().unwrap().is_empty());

    // Nothing personal of Ann's is left in the log; Bob's is untouched.
    let log = account_events(&app, "acme").into_iter().map(|(_, data)| data).collect::<Vec<_>>().join("\n");
    for personal in
        ["Ann", "ann@example.org", "double charge", "123-456", "refund to Ann", "408-555-0101", "555-0101"]
    {
        assert!(!log.contains(personal), "{personal} is still in the log");
    }
    assert!(log.contains("bob's question") && log.contains("Bob"));
    assert!(log.contains("[erased]"));

    // Reads: the profile is gone, the services show the marker, the counts are as they were.
    assert_cs_error(&cs.get(&format!("/profiles/{ann}")).await, 404);
    let service = cs.service(&first, "extensions=*&completed_states=true").await;
    assert_eq!(service["Reason"], "[erased]", "{service}");
    assert_eq!(service["disposition_desc"], "[erased]", "{service}");
    assert_eq!(cs.service(&bobs, "extensions=*").await["Reason"], json!({"text": "bob's question"}));
    let started = erased["data"]["redacted"][0]["seq"].as_u64().unwrap();
    let journey = cs.get(&format!("/customers/{ann}/journey?as_of_seq={}", started + 3)).await;
    assert!(!journey.body.contains("double charge"), "{}", journey.body);
    let past_the_end = cs.get(&format!("/services/{first}/history?after=18446744073709551615")).await;
    assert_eq!(cs.ok(past_the_end).await["history"], json!([]));
    let service_history = cs.ok(cs.get(&format!("/services/{first}/history")).await).await;
    assert_eq!(service_history["history"][0]["change"]["opening"]["extensions"]["Reason"], "[erased]");
    // The service's own stream records its redaction: its ETag moves, so no cache or If-Match
    // takes the redacted document for the one it knew.
    let last = service_history["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "ServiceErased", "{last}");
    assert_eq!(last["change"], json!({"service_id": first, "customer_id": ann}));
    assert_ne!(cs.get(&format!("/services/{first}")).await.etag(), etag_before);
    assert_eq!(analytics(&app, &cs.key).await, before);
    let abandoned_after = app.call(&cs.key, "GET", "/v1/account/acme/analytics/abandoned", "").await.json();
    assert_eq!(abandoned_after.as_array().map(Vec::len), abandoned_before.as_array().map(Vec::len));
    assert!(!abandoned_after.to_string().contains("555-0101"), "{abandoned_after}");

    // The projections equal a replay of the redacted log, and the chain still verifies.
    assert!(app.verify().mismatch.is_none(), "{:?}", app.verify().mismatch);
    assert_eq!(verify_chain(&app, &cs.key).await["intact"], true);
    // The erasure did not open the log to other edits.
    let error = raw(&app).execute("UPDATE events SET data = '{}' WHERE seq = 1", []).unwrap_err();
    assert!(error.to_string().contains("append-only"));

    // Erasing again records the request and redacts nothing more; unknown customers are 404;
    // another account's key cannot reach Ann.
    let again = cs.post(&format!("/profiles/{ann}/erase"), json!({})).await;
    assert_eq!(again.json()["data"]["redacted"], json!([]), "{}", again.body);
    assert_cs_error(&cs.post("/profiles/nobody/erase", json!({})).await, 404);
    let stranger = Cs::new(&app, "other").await;
    assert_cs_error(&stranger.post(&format!("/profiles/{ann}/erase"), json!({})).await, 404);
    assert!(app.verify().mismatch.is_none());

    // Nor is anything of it left in SQLite's files: freed space is zeroed, the WAL was emptied.
    // (On PostgreSQL, old row versions stay in the table's pages until rewritten: docs/AUDIT.md.)
    if crate::helpers::on_postgres() {
        let app = app.restart().await;
        assert!(app.verify().mismatch.is_none());
        return;
    }
    let files = |app: &TestApp| {
        let db = app.store.path().expect("a SQLite store");
        let wal = db.with_extension("db-wal");
        [std::fs::read(&db).unwrap(), std::fs::read(&wal).unwrap_or_default()].concat()
    };
    let bytes = files(&app);
    for personal in ["ann@example.org", "double charge", "refund to Ann", "555-0101"] {
        let found = bytes.windows(personal.len()).any(|window| window == personal.as_bytes());
        assert!(!found, "{personal} is still in the database files");
    }

    // A restart replays nothing differently: the rebuilt projections still match.
    let app = app.restart().await;
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn an_erased_payloads_kept_hash_confirms_no_guess_of_it() {
    use ctxd::store::chain::{payload_hash, salted_payload_hash};
    let app = spawn_app().await;
    let key = app.account("acme").await;
    patch(&app, &key, "acme", "caller", json!({"ssn": "078-05-1120"})).await;
    let stored = || -> (String, Option<Vec<u8>>, Vec<u8>, Vec<u8>) {
        raw_connection(&app.data_dir)
            .query_row(
                "SELECT data, payload_salt, payload_hash, hash FROM events
                 WHERE account = 'acme' AND event_type = 'PropertiesPatched'",
                [],
                |row| Ok((stored_text(row, 0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .unwrap()
    };
    let (original, salt, hash_before, link_before) = stored();
    assert!(original.contains("078-05-1120"));
    let salt = salt.expect("a payload is hashed with a salt of its own");
    assert_eq!(hash_before, salted_payload_hash(&salt, &original));
    assert_ne!(hash_before, payload_hash(&original), "the plain hash of the payload is not stored");

    let reply = app.call(&key, "POST", "/v1/account/acme/namespace/ns/session/caller/erase", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (redacted, salt_after, hash_after, link_after) = stored();
    assert!(!redacted.contains("078-05-1120"));
    assert_eq!(salt_after, None, "the salt is erased with the payload");
    assert_eq!((&hash_after, &link_after), (&hash_before, &link_before), "the chain still links");
    // Someone who guesses the exact payload cannot confirm it: without the salt, its hash does
    // not match what is kept.
    assert_ne!(hash_after, payload_hash(&original));
    let (code, export, stderr) = crate::process::ctxd(&app.data_dir, &["export", "--account", "acme"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!export.contains("078-05-1120"));
    assert!(!export.contains(&hex::encode(payload_hash(&original))));
    assert_eq!(verify_chain(&app, &key).await["intact"], true);
}

#[tokio::test]
async fn erasing_a_session_redacts_its_values_and_leaves_it_empty() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    patch(&app, &key, "acme", "caller", json!({"phone": "555-0199", "intent": "refund"})).await;
    let put = app.call(&key, "PUT", "/v1/account/acme/ns/caller/properties/name", "\"Carol\"").await;
    assert_eq!(put.status, 204);
    patch(&app, &key, "acme", "neighbour", json!({"phone": "555-0111"})).await;

    let reply = app.call(&key, "POST", "/v1/account/acme/namespace/ns/session/caller/erase", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let erased = reply.json();
    assert_eq!(erased["type"], "SessionErased");
    assert_eq!(erased["data"]["redacted"].as_array().unwrap().len(), 2);

    let document = app.call(&key, "GET", "/v1/account/acme/ns/caller/properties", "").await;
    assert_eq!(document.json(), json!({}));
    let patches = feed(&app, &key, "type=PropertiesPatched&stream=ctx/acme/ns/caller").await;
    assert_eq!(
        patches["events"][0]["data"]["properties"],
        json!({"intent": "[erased]", "phone": "[erased]"})
    );
    assert_eq!(patches["events"][1]["data"]["properties"], json!({"name": "[erased]"}));
    // History and as-of reads fold the redacted log: they show the marker, never the data.
    let history = app.call(&key, "GET", "/v1/account/acme/ns/caller/history", "").await;
    assert_eq!(history.status, 200, "{}", history.body);
    let history = history.json();
    assert_eq!(history["history"][0]["properties"]["phone"], json!({"old": null, "new": "[erased]"}));
    assert_eq!(history["history"].as_array().unwrap().last().unwrap()["event_type"], "SessionErased");
    let first_patch = patches["events"][0]["seq"].as_u64().unwrap();
    let then = app
        .call(&key, "GET", &format!("/v1/account/acme/ns/caller/properties?as_of_seq={first_patch}"), "")
        .await;
    assert_eq!(then.json(), json!({"intent": "[erased]", "phone": "[erased]"}));
    assert!(!history.to_string().contains("555-0199") && !then.body.contains("555-0199"));
    let neighbour = app.call(&key, "GET", "/v1/account/acme/ns/neighbour/properties", "").await;
    assert_eq!(neighbour.json(), json!({"phone": "555-0111"}));
    assert!(app.verify().mismatch.is_none());
    assert_eq!(verify_chain(&app, &key).await["intact"], true);

    // The session can be written again afterwards; unknown sessions and bad names are refused.
    patch(&app, &key, "acme", "caller", json!({"intent": "new"})).await;
    let unknown = app.call(&key, "POST", "/v1/account/acme/namespace/ns/session/nobody/erase", "").await;
    unknown.assert_error(404);
    let bad = app.call(&key, "POST", "/v1/account/acme/namespace/events/session/x/erase", "").await;
    bad.assert_error(400);
}

#[tokio::test]
async fn a_projection_row_changed_with_sql_is_reported_by_verify_with_its_table_and_row() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    for session in ["a", "b", "c"] {
        patch(&app, &key, "acme", session, json!({"plan": "gold"})).await;
    }
    assert_eq!(app.verify().mismatch, None);
    raw_connection(&app.data_dir)
        .execute("UPDATE properties SET value = '\"platinum\"' WHERE session_id = 'b'", [])
        .unwrap();
    let mismatch = app.verify().mismatch.expect("the changed row is found");
    assert!(mismatch.starts_with("table properties, row 1:"), "{mismatch}");
    assert!(mismatch.contains("platinum") && mismatch.contains("gold"), "{mismatch}");
}

/// An auditor's questions of the feed: what did this key write, what did that request do, what
/// changed in that hour — the filters combine with `type` and `stream`, and the live stream
/// takes them too.
#[tokio::test]
async fn the_feed_filters_by_actor_request_and_recording_time() {
    use chrono::Duration;
    use ctxd::clock::Clock;
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let start = app.clock.now();
    for round in 0..3 {
        let id = format!("round-{round}");
        let body = json!({ "round": round }).to_string();
        let reply = app
            .call_with(&key, "PATCH", "/v1/account/acme/bots/s/properties", &[("x-request-id", &id)], &body)
            .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        app.clock.advance(Duration::hours(1));
    }
    let all = feed(&app, &key, "limit=1000").await;
    let of = async |query: &str| feed(&app, &key, query).await;
    // The admin created the account and its key; the key wrote the rest.
    let by_admin = of("actor=admin").await;
    let admin_types: Vec<&str> =
        by_admin["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(admin_types, ["AccountCreated", "ApiKeyIssued"], "{by_admin}");
    let by_key = of("actor=key:default").await;
    let everything = seqs(&all["events"]);
    assert_eq!(seqs(&by_admin["events"]).len() + seqs(&by_key["events"]).len(), everything.len());
    assert_eq!(of("actor=key:nobody").await["events"], json!([]));

    // One request's events: round 1 wrote one patch (its namespace existed already).
    let request = of("request_id=round-1").await;
    let events = request["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{request}");
    assert_eq!(events[0]["meta"]["request_id"], "round-1");
    assert_eq!(events[0]["data"]["properties"], json!({"round": 1}));

    // Recorded between one and two hours after the start: round 1 only; `to` is exclusive.
    let at =
        |hours: i64| (start + Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let window = of(&format!("from={}&to={}", at(1), at(2))).await;
    assert_eq!(seqs(&window["events"]), seqs(&request["events"]), "{window}");
    let since = of(&format!("from={}", at(1))).await;
    assert_eq!(since["events"].as_array().unwrap().len(), 2, "{since}");
    let before = of(&format!("to={}&type=PropertiesPatched", at(1))).await;
    assert_eq!(before["events"].as_array().unwrap().len(), 1, "{before}");
    let in_stream = of(&format!("stream=ctx/acme/bots/s&from={}&actor=key:default", at(2))).await;
    assert_eq!(in_stream["events"][0]["data"]["properties"], json!({"round": 2}), "{in_stream}");

    // The live stream takes the same filters.
    let mut follower = SseReader::open(&app, &key, "?request_id=round-2", None).await;
    let (seq, event) = follower.next().await.unwrap();
    assert_eq!(event["meta"]["request_id"], "round-2");
    assert_eq!(seq, *everything.last().unwrap());

    for (query, message) in [
        ("from=yesterday", "from must be an ISO 8601 time"),
        ("to=10000-01-01T00:00:00Z", "to must be an ISO 8601 time"),
        (&format!("from={}&to={}", at(2), at(1)), "from must not be later than to"),
        ("actor=", "actor must be 1 to 256 characters"),
        (&format!("request_id={}", "r".repeat(129)), "request_id must be 1 to 128 characters"),
    ] {
        let reply = app.call(&key, "GET", &format!("/v1/account/acme/events?{query}"), "").await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert!(reply.json()["message"].as_str().unwrap().contains(message), "{query}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_conversations_story_joins_its_sessions_and_services_in_order_and_exports_its_events() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let other = app.account("other").await;
    let patch = |key: &str, path: String, body: &'static str| {
        let (app, key) = (&app, key.to_string());
        async move {
            let reply = app.call(&key, "PATCH", &path, body).await;
            assert_eq!(reply.status, 204, "{path}: {}", reply.body);
        }
    };
    let cs = Cs { app: &app, key: key.clone() };
    patch(&key, "/v1/account/acme/bots/conv-1/properties".into(), r#"{"intent":"billing","step":1}"#).await;
    let by_session = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "chat", "session_id": "conv-1"}))
        .await;
    let ivr = cs.start_state(&by_session, json!({"state_type": "bot"})).await;
    patch(&key, "/v1/account/acme/agents/conv-1/properties".into(), r#"{"agent":"a7"}"#).await;
    cs.transition(&by_session, ivr, "agent", json!({})).await;
    let by_interaction = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice", "interaction_id": "conv-1"}))
        .await;
    patch(&key, "/v1/account/acme/bots/conv-1/properties".into(), r#"{"step":2}"#).await;
    // Not of the conversation: another session, another service, another account's namesakes.
    patch(&key, "/v1/account/acme/bots/conv-2/properties".into(), r#"{"step":9}"#).await;
    cs.start_service(json!({"customer_id": "c1", "service_type": "sales", "session_id": "conv-2"})).await;
    patch(&other, "/v1/account/other/bots/conv-1/properties".into(), r#"{"secret":"theirs"}"#).await;
    Cs { app: &app, key: other.clone() }
        .start_service(json!({"customer_id": "c9", "service_type": "billing", "session_id": "conv-1"}))
        .await;

    let path = "/v1/account/acme/audit/conversations/conv-1";
    let story = app.call(&key, "GET", path, "").await;
    assert_eq!(story.status, 200, "{}", story.body);
    let story = story.json();
    assert_eq!(
        story["sessions"],
        json!([{"namespace": "agents", "session_id": "conv-1"}, {"namespace": "bots", "session_id": "conv-1"}])
    );
    let mut services = vec![by_session.clone(), by_interaction.clone()];
    services.sort();
    assert_eq!(story["services"], json!(services));
    assert!(story.get("next_after").is_none(), "{story}");
    assert!(!story.to_string().contains("theirs") && !story.to_string().contains("conv-2"), "{story}");

    // Exactly the feed's events of those streams, in the account's order, with who and which
    // request wrote each.
    let feed = app.call(&key, "GET", "/v1/account/acme/events?limit=1000", "").await.json();
    let streams = [
        "ctx/acme/bots/conv-1".to_string(),
        "ctx/acme/agents/conv-1".to_string(),
        format!("svc/acme/{by_session}"),
        format!("svc/acme/{by_interaction}"),
    ];
    let expected: Vec<(u64, String, String, String)> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| streams.contains(&event["stream"].as_str().unwrap().to_string()))
        .map(|event| {
            let meta = &event["meta"];
            (
                event["seq"].as_u64().unwrap(),
                event["type"].as_str().unwrap().to_string(),
                meta["actor"].as_str().unwrap().to_string(),
                meta["request_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let entries = story["story"].as_array().unwrap();
    let told: Vec<(u64, String, String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry["seq"].as_u64().unwrap(),
                entry["event_type"].as_str().unwrap().to_string(),
                entry["actor"].as_str().unwrap().to_string(),
                entry["request_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(told, expected);
    assert!(expected.len() >= 8, "{expected:?}");
    // A session's entries show old and new values; a service's, what the event recorded.
    let second_step = entries
        .iter()
        .find(|entry| {
            entry["namespace"] == "bots" && entry["properties"].get("step").is_some_and(|c| c["new"] == 2)
        })
        .unwrap();
    assert_eq!(second_step["properties"]["step"]["old"], 1);
    assert_eq!(second_step["session_id"], "conv-1");
    let transition = entries
        .iter()
        .find(|entry| entry["event_type"] == "StateStarted" && entry["change"]["state_type"] == "agent")
        .unwrap();
    assert_eq!(transition["service_id"], by_session.as_str());

    // Pages of two make up the same story.
    let (mut paged, mut after) = (Vec::new(), 0);
    loop {
        let page = app.call(&key, "GET", &format!("{path}?limit=2&after={after}"), "").await.json();
        paged.extend(page["story"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(&paged, entries);

    // NDJSON: those events with their hashes, as `ctxd export` writes them.
    let export = app.call(&key, "GET", &format!("{path}?format=ndjson"), "").await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type").as_deref(), Some("application/x-ndjson"));
    let lines: Vec<Value> = export.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(
        lines.iter().map(|line| line["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        told.iter().map(|t| t.0).collect::<Vec<_>>()
    );
    for line in &lines {
        let seq = line["seq"].as_u64().unwrap();
        let hash: Vec<u8> = raw(&app)
            .query_row("SELECT hash FROM events WHERE account = 'acme' AND seq = ?1", [seq], |row| row.get(0))
            .unwrap();
        assert_eq!(line["hash"], hex::encode(hash), "seq {seq}");
    }

    // Another account's key sees nothing of it; bad requests are 4xx with a message.
    assert_eq!(app.call(&other, "GET", path, "").await.status, 403);
    let theirs = app.call(&other, "GET", "/v1/account/other/audit/conversations/conv-1", "").await.json();
    assert!(!theirs.to_string().contains(&by_session), "{theirs}");
    let unknown = app.call(&key, "GET", "/v1/account/acme/audit/conversations/nobody", "").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    for query in ["limit=0", "limit=1001", "format=xml", "after=-1", "color=red"] {
        let reply = app.call(&key, "GET", &format!("{path}?{query}"), "").await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert!(reply.json()["message"].is_string(), "{query}: {}", reply.body);
    }
    let long = "x".repeat(300);
    let reply = app.call(&key, "GET", &format!("/v1/account/acme/audit/conversations/{long}"), "").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}
