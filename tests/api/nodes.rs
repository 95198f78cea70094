//! Two ctxd servers on one PostgreSQL database, as two nodes of a cluster: what either writes
//! the other reads, one account's positions stay gapless and its chain intact whichever node
//! wrote, a retry on the other node answers the first outcome, a follower on one node sees the
//! other's writes, and a key revoked on one node stops working on the other. SQLite stores
//! belong to one process: these run on PostgreSQL only (`CTXD_TEST_DATABASE_URL`, as .ci/run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ctxd::clock::ManualClock;
use serde_json::{Value, json};

use crate::audit::SseReader;
use crate::helpers::{TestApp, on_postgres, spawn_app, spawn_app_in};

/// A second node on `first`'s database, with a data dir (and so an admin token file) of its own.
async fn second_node(first: &TestApp, dir: &tempfile::TempDir) -> TestApp {
    let url = std::fs::read_to_string(first.data_dir.join("test-database-url")).unwrap();
    std::fs::write(dir.path().join("test-database-url"), url).unwrap();
    let clock = ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap());
    spawn_app_in(dir.path(), Arc::new(clock)).await
}

/// Waits until `node` answers `key` with `status` (keys reach the other nodes through a notice),
/// for at most a second.
async fn until_key_answers(node: &TestApp, key: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let answer = node.call(key, "GET", "/v1/account/acme/events?limit=1", "").await.status;
        if answer == status {
            return;
        }
        assert!(Instant::now() < deadline, "the other node still answers {answer} after a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node whose account `acme` has one property written: the node, the key, the session's path.
async fn node_with_a_write() -> (TestApp, String, &'static str) {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let path = "/v1/account/acme/bots/s/properties";
    assert_eq!(app.call(&key, "PATCH", path, r#"{"before": 1}"#).await.status, 204);
    (app, key, path)
}

#[tokio::test]
async fn two_nodes_on_one_database_write_one_account_as_one_log() {
    if !on_postgres() {
        return; // a SQLite store has one writer process by design
    }
    let one = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let two = second_node(&one, &dir).await;
    let key = one.account("acme").await;
    until_key_answers(&two, &key, 200).await;
    let path = "/v1/account/acme/bots/s/properties";
    let start = one.call(&key, "GET", "/v1/account/acme/events?limit=1000", "").await.json()["events"]
        .as_array()
        .unwrap()
        .len() as u64;
    let mut follower = SseReader::open(&one, &key, &format!("?after={start}"), None).await;

    // Writes through both nodes at once, to the same session and to sessions of their own.
    let mut calls = Vec::new();
    for round in 0..20 {
        for (name, node) in [("one", &one), ("two", &two)] {
            calls.push((node, path.to_string(), json!({ format!("{name}-{round}"): round }).to_string()));
            let own = format!("/v1/account/acme/{name}/s{round}/properties");
            calls.push((node, own, json!({"round": round}).to_string()));
        }
    }
    let writes = calls.iter().map(|(node, path, body)| node.call(&key, "PATCH", path, body));
    for reply in futures_util::future::join_all(writes).await {
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    // The last write of all through node two alone: node one's follower learns of it only from
    // node two's notice.
    let last = two.call(&key, "PATCH", path, &json!({"last": true}).to_string()).await;
    assert_eq!(last.status, 204, "{}", last.body);

    // Each reads the other's writes: the shared session holds all 41 properties.
    for node in [&one, &two] {
        let session = node.call(&key, "GET", path, "").await.json();
        assert_eq!(session.as_object().unwrap().len(), 41, "{session}");
    }
    // One log: positions 1, 2, 3 … whichever node appended (81 patches and the three namespaces
    // they registered), and a chain that verifies on both.
    let end = start + 84;
    let feed = two.call(&key, "GET", "/v1/account/acme/events?limit=1000", "").await.json();
    let seqs: Vec<u64> =
        feed["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=end).collect::<Vec<_>>());
    for node in [&one, &two] {
        let report = node.call(&key, "GET", "/v1/account/acme/audit/verify", "").await.json();
        assert_eq!((report["intact"].clone(), report["events"].clone()), (json!(true), json!(end)));
    }
    // The follower on node one saw node two's writes too, each once, in order.
    let mut seen = Vec::new();
    while seen.len() < 84 {
        let (seq, _) = follower.next().await.expect("the stream goes on");
        seen.push(seq);
    }
    assert_eq!(seen, (start + 1..=end).collect::<Vec<_>>());
    assert!(one.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_retry_on_the_other_node_answers_the_first_outcome_and_a_revoked_key_stops_on_both() {
    if !on_postgres() {
        return;
    }
    let one = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let two = second_node(&one, &dir).await;
    let key = one.account("acme").await;
    until_key_answers(&two, &key, 200).await;
    let retry = [("idempotency-key", "start-1")];
    let body = json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice"}).to_string();
    let services = "/genesys/1/cs/services/start";
    let first = one.call_with(&key, "POST", services, &retry, &body).await;
    assert!(first.status < 300, "{}", first.body);
    let again = two.call_with(&key, "POST", services, &retry, &body).await;
    assert_eq!((again.status, again.json()), (first.status, first.json()));
    let started = one.call(&key, "GET", "/v1/account/acme/events?type=ServiceStarted", "").await.json();
    assert_eq!(started["events"].as_array().unwrap().len(), 1, "one service, not two");

    // A new key issued on node two replaces the old one on node one within a second.
    let reissued = two.admin("POST", "/admin/accounts/acme/api-key", "").await;
    assert!(reissued.status < 300, "{}", reissued.body);
    until_key_answers(&one, &key, 403).await;
    let new_key: Value = reissued.json();
    until_key_answers(&one, new_key["api_key"].as_str().unwrap(), 200).await;
}

#[tokio::test]
async fn a_key_issued_through_one_node_works_at_once_on_the_other() {
    if !on_postgres() {
        return;
    }
    let one = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let two = second_node(&one, &dir).await;
    // As a load balancer may send a client's first request anywhere: the key is used on node
    // two as soon as node one has answered, without waiting for node one's notice.
    for account in ["a1", "a2", "a3", "a4", "a5"] {
        let key = one.account(account).await;
        let path = format!("/v1/account/{account}/bots/s/properties");
        let written = two.call(&key, "PATCH", &path, r#"{"first": 1}"#).await;
        assert_eq!(written.status, 204, "{account}: {}", written.body);
        // A key of another account still opens nothing here.
        let other = two.call(&key, "GET", "/v1/account/acme/bots/s/properties", "").await;
        assert_eq!(other.status, 403, "{}", other.body);
    }
    // A key whose notice has not arrived at all (its row written without one): both nodes
    // find it in the database.
    let late = "ctxd_0123456789ab_the-notice-is-late";
    crate::helpers::raw_connection(&one.data_dir)
        .execute(
            "INSERT INTO api_keys (key_hash, key_id, account_id, issued_at, name) VALUES (?1, '0123456789ab', 'a1', ?2, 'late')",
            ctxd::params![ctxd::auth::hash_secret(late), "2026-01-01T10:00:00.000000Z"],
        )
        .unwrap();
    for node in [&one, &two] {
        let read = node.call(late, "GET", "/v1/account/a1/bots/s/properties", "").await;
        assert_eq!(read.status, 200, "{}", read.body);
    }
    // Nor does a key nobody issued (looked up in the database, found in no account).
    let forged = two.call("ctxd_000000000000_0000", "GET", "/v1/account/a1/bots/s/properties", "").await;
    assert_eq!(forged.status, 403, "{}", forged.body);
}

#[tokio::test]
async fn a_node_whose_connections_are_cut_answers_503_then_reconnects_by_itself() {
    if !on_postgres() {
        return;
    }
    let (app, key, path) = node_with_a_write().await;

    // What a failover does to a node: every connection of the database is closed under it.
    let url = std::fs::read_to_string(app.data_dir.join("test-database-url")).unwrap();
    let admin = crate::helpers::raw_connection(&app.data_dir);
    let cut: i64 = admin
        .query_row(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(cut >= 2, "the writer's and the listener's connections at least: {cut} ({url})");

    // Writes answer 503 with Retry-After (never 500) until the writer has reconnected; a retry
    // with the same Idempotency-Key is applied once.
    let retry = [("idempotency-key", "after-the-cut")];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = app.call_with(&key, "PATCH", path, &retry, r#"{"after": 1}"#).await;
        if reply.status == 204 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
        reply.assert_error(503);
        assert!(Instant::now() < deadline, "the node did not reconnect within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = app.call_with(&key, "PATCH", path, &retry, r#"{"after": 1}"#).await;
    assert_eq!(again.status, 204, "{}", again.body);
    let feed = app.call(&key, "GET", "/v1/account/acme/events?type=PropertiesPatched", "").await.json();
    assert_eq!(feed["events"].as_array().unwrap().len(), 2, "{feed}");
    assert_eq!(app.request("GET", "/readyz", &[], String::new()).await.status, 200);
    let session = app.call(&key, "GET", path, "").await.json();
    assert_eq!(session, json!({"before": 1, "after": 1}));
}

#[tokio::test]
async fn readyz_is_503_while_the_writer_has_lost_the_database_and_ready_again_once_it_reconnects() {
    if !on_postgres() {
        return;
    }
    let (app, key, path) = node_with_a_write().await;
    assert_eq!(app.call(&key, "GET", path, "").await.status, 200);
    assert_eq!(app.request("GET", "/readyz", &[], String::new()).await.status, 200);

    // The writer's connection ends and no new connection is allowed (as while no member of a
    // cluster accepts writes); the node's open read connections still answer.
    let admin = crate::helpers::raw_connection(&app.data_dir);
    let database: String = admin.query_row("SELECT current_database()", [], |row| row.get(0)).unwrap();
    // A database's connections are switched off from another database of the server.
    let server = std::env::var("CTXD_TEST_DATABASE_URL").unwrap();
    let server =
        ctxd::store::db::Connection::Postgres(ctxd::store::db::PgConnection::connect(&server).unwrap());
    let allow = |allowed: bool| {
        server.execute_batch(&format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allowed}")).unwrap()
    };
    allow(false);
    let cut: i64 = admin
        .query_row(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'ctxd writer %'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(cut, 1, "one writer connection");
    let refused = app.call(&key, "PATCH", path, r#"{"during": 1}"#).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let ready = app.request("GET", "/readyz", &[], String::new()).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.assert_error(503).contains("reconnecting"), "{}", ready.body);

    // Connections are allowed again: polling /readyz alone (no write) brings the writer back.
    allow(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.request("GET", "/readyz", &[], String::new()).await.status != 200 {
        assert!(Instant::now() < deadline, "/readyz did not become ready within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.call(&key, "PATCH", path, r#"{"after": 1}"#).await.status, 204);
    assert_eq!(app.call(&key, "GET", path, "").await.json(), json!({"before": 1, "after": 1}));
}

#[tokio::test]
async fn an_account_held_by_a_stuck_transaction_gets_503_while_other_accounts_write_on() {
    if !on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let acme = app.account("acme").await;
    let globex = app.account("globex").await;
    let path = |account: &str| format!("/v1/account/{account}/bots/s/properties");
    assert_eq!(app.call(&acme, "PATCH", &path("acme"), r#"{"before": 1}"#).await.status, 204);

    // A node that hangs inside a transaction holding acme's head row.
    let stuck = crate::helpers::raw_connection(&app.data_dir);
    stuck.execute_batch("BEGIN; SELECT * FROM account_heads WHERE account = 'acme' FOR UPDATE").unwrap();

    let started = Instant::now();
    let (acme_path, globex_path) = (path("acme"), path("globex"));
    let (held, free) = tokio::join!(
        app.call(&acme, "PATCH", &acme_path, r#"{"during": 1}"#),
        app.call(&globex, "PATCH", &globex_path, r#"{"during": 1}"#),
    );
    assert_eq!(held.status, 503, "{}", held.body);
    assert_eq!(held.header("retry-after").as_deref(), Some("1"));
    assert!(held.assert_error(503).contains("another node"));
    assert!(started.elapsed() < Duration::from_secs(10), "refused after the lock timeout, not hung");
    assert_eq!(free.status, 204, "another account writes on: {}", free.body);

    stuck.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.call(&acme, "PATCH", &path("acme"), r#"{"after": 1}"#).await.status, 204);
    let session = app.call(&acme, "GET", &path("acme"), "").await.json();
    assert_eq!(session, json!({"before": 1, "after": 1}), "the refused write left nothing");
}
