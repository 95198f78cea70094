//! Each account its own log: positions 1, 2, 3 … per account whatever the others write, a hash
//! chain per account, signed heads, and a store from the release before migrated on open.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_in};

/// Every seq of `account`'s feed, paged through.
async fn feed_seqs(app: &TestApp, key: &str, account: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page =
            app.call(key, "GET", &format!("/v1/account/{account}/events?after={after}&limit=1000"), "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        seqs.extend(page["events"].as_array().unwrap().iter().map(|event| event["seq"].as_u64().unwrap()));
        after = page["next_after"].as_u64().unwrap();
        if page["has_more"] != true {
            return seqs;
        }
    }
}

async fn verify(app: &TestApp, key: &str, account: &str) -> Value {
    let reply = app.call(key, "GET", &format!("/v1/account/{account}/audit/verify"), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn interleaved_writes_number_each_account_from_1_and_refused_commands_leave_no_gap() {
    let app = Arc::new(spawn_app().await);
    let accounts = ["acme", "globex", "initech"];
    let mut keys = Vec::new();
    for account in accounts {
        keys.push(app.account(account).await);
    }
    // Every account at once, so that the writer's groups mix accounts; every third write
    // carries an If-Match that cannot hold, so that groups mix refused and accepted commands.
    let mut writes = Vec::new();
    for round in 0..30 {
        for (account, key) in accounts.iter().zip(&keys) {
            let (app, key, account) = (app.clone(), key.clone(), account.to_string());
            writes.push(tokio::spawn(async move {
                let path = format!("/v1/account/{account}/bots/s{}/properties", round % 4);
                let stale = round % 3 == 2;
                let headers: &[(&str, &str)] = if stale { &[("if-match", "\"999\"")] } else { &[] };
                let body = json!({ "round": round }).to_string();
                let reply = app
                    .call_with(
                        &key,
                        "PATCH",
                        &path,
                        &[headers, &[("content-type", "application/json")]].concat(),
                        &body,
                    )
                    .await;
                assert_eq!(reply.status, if stale { 412 } else { 204 }, "{}", reply.body);
                stale
            }));
        }
    }
    let mut refused = 0;
    for write in writes {
        refused += usize::from(write.await.unwrap());
    }
    assert_eq!(refused, 30);
    let mut total = 0;
    for (account, key) in accounts.iter().zip(&keys) {
        let seqs = feed_seqs(&app, key, account).await;
        // The account, its key, a namespace, 20 patches.
        assert_eq!(seqs, (1..=23).collect::<Vec<u64>>(), "{account}");
        let report = verify(&app, key, account).await;
        assert_eq!(
            (report["intact"].clone(), report["events"].clone(), report["last_seq"].clone()),
            (json!(true), json!(23), json!(23))
        );
        total += seqs.len();
    }
    assert_eq!(app.event_count(), total, "every event is in exactly one account's log");
}

#[tokio::test]
async fn the_signed_head_verifies_with_the_public_key_and_only_for_its_own_account() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let other = app.account("globex").await;
    for round in 0..3 {
        let reply = app
            .call(&key, "PATCH", "/v1/account/acme/bots/s/properties", &json!({"r": round}).to_string())
            .await;
        assert_eq!(reply.status, 204);
    }
    let head = app.call(&key, "GET", "/v1/account/acme/audit/head", "").await;
    assert_eq!(head.status, 200, "{}", head.body);
    let head = head.json();
    let fields: Vec<&str> = head.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 7, "{head}");
    let report = verify(&app, &key, "acme").await;
    assert_eq!(
        (&head["account"], &head["seq"], &head["hash"]),
        (&json!("acme"), &report["last_seq"], &report["head"])
    );
    let signed = head["signed"].as_str().unwrap();
    for part in [
        "account: acme\n",
        &format!("seq: {}\n", head["seq"]),
        &format!("hash: {}\n", report["head"].as_str().unwrap()),
    ] {
        assert!(signed.contains(part), "{signed:?} names {part:?}");
    }
    assert!(signed.contains(&format!("recorded_at: {}\n", head["recorded_at"].as_str().unwrap())));

    // The public key, without any API key, is the one in the head; the signature verifies over
    // the signed text's bytes, and not over a text that names another seq.
    let public = app.request("GET", "/audit/public-key", &[], "").await;
    assert_eq!(public.status, 200, "{}", public.body);
    assert_eq!(public.json()["public_key"], head["public_key"]);
    let public: [u8; 32] = STANDARD.decode(head["public_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    let signature: [u8; 64] =
        STANDARD.decode(head["signature"].as_str().unwrap()).unwrap().try_into().unwrap();
    let (public, signature) = (VerifyingKey::from_bytes(&public).unwrap(), Signature::from_bytes(&signature));
    public.verify(signed.as_bytes(), &signature).expect("the signature verifies");
    let earlier = signed.replace(&format!("seq: {}", head["seq"]), "seq: 1");
    assert!(public.verify(earlier.as_bytes(), &signature).is_err());

    // Another account's key, or none, sees neither acme's head nor its chain.
    for path in ["/v1/account/acme/audit/head", "/v1/account/acme/audit/verify", "/v1/account/acme/events"] {
        app.call(&other, "GET", path, "").await.assert_error(403);
        app.call("not-a-key", "GET", path, "").await.assert_error(403);
    }
    // globex's own head is its own: its log has its account and key events only.
    let globex = app.call(&other, "GET", "/v1/account/globex/audit/head", "").await.json();
    assert_eq!((&globex["account"], &globex["seq"]), (&json!("globex"), &json!(2)));

    // The same key signs after a restart: it is kept with the store's secrets, mode 0600.
    let app = app.restart().await;
    let again = app.call(&key, "GET", "/v1/account/acme/audit/head", "").await.json();
    assert_eq!(again, head);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.data_dir.join("signing-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn a_row_edited_in_one_account_is_reported_there_and_not_in_another() {
    let app = spawn_app().await;
    let acme = app.account("acme").await;
    let globex = app.account("globex").await;
    for round in 0..4 {
        for (account, key) in [("acme", &acme), ("globex", &globex)] {
            let path = format!("/v1/account/{account}/bots/s/properties");
            assert_eq!(app.call(key, "PATCH", &path, &json!({"round": round}).to_string()).await.status, 204);
        }
    }
    let conn = crate::helpers::raw_connection(&app.data_dir);
    crate::helpers::allow_editing_events(&conn);
    crate::helpers::edit_payload(&conn, "acme", 6, r#""round":2"#, r#""round":20"#);
    let report = verify(&app, &acme, "acme").await;
    assert_eq!(
        (report["intact"].clone(), report["first_bad_seq"].clone()),
        (json!(false), json!(6)),
        "{report}"
    );
    assert_eq!(verify(&app, &globex, "globex").await["intact"], true);
}

/// The store the release before per-account logs wrote (tests/fixtures/store-schema-6/make.sh):
/// acme and other written interleaved, a session of acme erased.
fn old_store(dir: &Path) -> (String, String) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-schema-6");
    std::fs::copy(fixture.join("ctxd.db"), dir.join("ctxd.db")).unwrap();
    let keys = std::fs::read_to_string(fixture.join("keys")).unwrap();
    let mut keys = keys.lines().map(str::to_string);
    (keys.next().unwrap(), keys.next().unwrap())
}

#[tokio::test]
async fn a_store_of_the_release_before_is_numbered_and_chained_per_account_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (acme, other) = old_store(dir.path());
    let old = rusqlite::Connection::open(dir.path().join("ctxd.db")).unwrap();
    let (old_last, old_head): (u64, Vec<u8>) = old
        .query_row("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    let acme_was: Vec<(u64, String)> = {
        let mut statement =
            old.prepare("SELECT seq, event_type FROM events WHERE account = 'acme' ORDER BY seq").unwrap();
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    drop(old);
    let clock = ctxd::clock::ManualClock::starting_at(chrono::Utc::now());
    let app = spawn_app_in(dir.path(), Arc::new(clock)).await;

    // Each account's events are numbered from 1 in their old order, and its chain verifies.
    for (account, key, events) in
        [("acme", &acme, acme_was.len() as u64), ("other", &other, old_last - acme_was.len() as u64)]
    {
        assert_eq!(feed_seqs(&app, key, account).await, (1..=events).collect::<Vec<_>>(), "{account}");
        let report = verify(&app, key, account).await;
        assert_eq!(
            (report["intact"].clone(), report["events"].clone()),
            (json!(true), json!(events)),
            "{report}"
        );
    }
    let feed = app.call(&acme, "GET", "/v1/account/acme/events?limit=1000", "").await.json();
    let types: Vec<&str> =
        feed["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    let was: Vec<&str> = acme_was.iter().map(|(_, kind)| kind.as_str()).collect();
    assert_eq!(types, was);

    // The erasure record names what it redacted by acme's positions: the redacted patch.
    let erased = feed["events"].as_array().unwrap().iter().find(|e| e["type"] == "SessionErased").unwrap();
    let redacted: Vec<u64> =
        erased["data"]["redacted"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(!redacted.is_empty());
    for seq in redacted {
        let event = &feed["events"][seq as usize - 1];
        assert_eq!(event["stream"], "ctx/acme/billing/conv-2", "{event}");
        assert_eq!(event["data"]["properties"]["secret"], "[erased]", "{event}");
    }

    // As-of reads by acme's positions: before and after the last patch of conv-1.
    let path = |seq: u64| format!("/v1/account/acme/billing/conv-1/properties?as_of_seq={seq}");
    let last = types.len() as u64;
    assert_eq!(app.call(&acme, "GET", &path(last), "").await.json()["invoice"], "INV-3");
    assert_eq!(app.call(&acme, "GET", &path(last - 1), "").await.json()["invoice"], "INV-2");
    // Writes go on from there, the keys still work, and the journey is where it was.
    let patch =
        app.call(&other, "PATCH", "/v1/account/other/billing/conv-9/properties", r#"{"lang":"en"}"#).await;
    assert_eq!(patch.status, 204);
    assert_eq!(feed_seqs(&app, &other, "other").await.last(), Some(&(old_last - last + 1)));
    let service = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-schema-6/service-id"),
    )
    .unwrap();
    let journey =
        app.call_with(&acme, "GET", &format!("/genesys/1/cs/services/{}", service.trim()), &[], "").await;
    assert_eq!(journey.status, 200, "{}", journey.body);
    assert!(app.verify().mismatch.is_none());

    // The old chain's head was kept for an auditor who kept it, until salted hashes (0014): this
    // log holds an erased payload, whose plain hash that head was computed over.
    let conn = rusqlite::Connection::open(dir.path().join("ctxd.db")).unwrap();
    let kept: (u64, Vec<u8>) = conn
        .query_row("SELECT last_seq, head FROM global_chain_heads", [], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap();
    assert_eq!(kept, (old_last, Vec::new()));
    assert_eq!(old_head.len(), 32);
}
