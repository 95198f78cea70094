//! One tenant cannot starve the others: per-account write limits (429 + Retry-After), set by
//! the admin, kept in the log, counted in /metrics.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn limits(app: &TestApp, method: &str, account: &str, body: &str) -> (u16, Value) {
    let reply = app.admin(method, &format!("/admin/accounts/{account}/limits"), body).await;
    let status = reply.status;
    (status, reply.json())
}

#[tokio::test]
async fn the_admin_sets_reads_and_clears_an_accounts_write_limit() {
    let app = spawn_app().await;
    app.account("acme").await;
    let none = json!({"account_id": "acme", "writes_per_second": null, "effective_writes_per_second": null});
    assert_eq!(limits(&app, "GET", "acme", "").await, (200, none.clone()));
    let five = json!({"account_id": "acme", "writes_per_second": 5, "effective_writes_per_second": 5});
    assert_eq!(limits(&app, "PUT", "acme", r#"{"writes_per_second": 5}"#).await, (200, five.clone()));
    assert_eq!(limits(&app, "GET", "acme", "").await, (200, five.clone()));
    for bad in [
        r#"{"writes_per_second": 0}"#,
        r#"{"writes_per_second": -1}"#,
        r#"{"writes_per_second": 1000001}"#,
        r#"{"writes_per_second": "5"}"#,
        r#"{"writes_per_second": 5, "reads": 1}"#,
        r#"{}"#,
        r#"[]"#,
        "not json",
    ] {
        let reply = app.admin("PUT", "/admin/accounts/acme/limits", bad).await;
        reply.assert_error(400);
    }
    assert_eq!(limits(&app, "GET", "acme", "").await.1, five, "a refused change changes nothing");
    app.admin("PUT", "/admin/accounts/ghost/limits", r#"{"writes_per_second": 5}"#).await.assert_error(404);
    app.admin("GET", "/admin/accounts/ghost/limits", "").await.assert_error(404);
    let key = app.issue_key("acme").await;
    app.call(&key, "PUT", "/admin/accounts/acme/limits", r#"{"writes_per_second": 1000}"#)
        .await
        .assert_error(403);

    // The limit is an event of the account's log, so it is there after a restart.
    let app = app.restart().await;
    assert_eq!(limits(&app, "GET", "acme", "").await.1, five);
    let types: Vec<String> = app.events().into_iter().map(|event| event.3).collect();
    assert!(types.contains(&"AccountLimitsSet".to_string()), "{types:?}");
    assert_eq!(limits(&app, "PUT", "acme", r#"{"writes_per_second": null}"#).await, (200, none));
    assert!(app.verify().mismatch.is_none());
}

#[tokio::test]
async fn a_flood_past_the_limit_gets_429_with_retry_after_and_never_holds_up_another_account() {
    let app = Arc::new(spawn_app().await);
    let acme = app.account("acme").await;
    let globex = app.account("globex").await;
    assert_eq!(limits(&app, "PUT", "acme", r#"{"writes_per_second": 5}"#).await.0, 200);

    let mut flood = Vec::new();
    for round in 0..60 {
        let (app, key) = (app.clone(), acme.clone());
        flood.push(tokio::spawn(async move {
            let body = json!({ "round": round }).to_string();
            app.call(&key, "PATCH", "/v1/account/acme/bots/s/properties", &body).await
        }));
    }
    let (mut accepted, mut limited) = (0, 0);
    for reply in flood {
        let reply = reply.await.unwrap();
        match reply.status {
            204 => accepted += 1,
            429 => {
                limited += 1;
                let retry: u64 = reply.header("retry-after").expect("Retry-After").parse().unwrap();
                assert_eq!(retry, 1, "whole seconds, at least 1");
                assert!(reply.assert_error(429).contains("writes_per_second"));
            }
            other => panic!("{other}: {}", reply.body),
        }
    }
    // A bucket of one second's worth: 5, and at most a few more refilled while the flood ran.
    assert!((5..=8).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + limited, 60);
    // globex has no limit and is not held by acme's.
    for round in 0..20 {
        let body = json!({ "round": round }).to_string();
        let reply = app.call(&globex, "PATCH", "/v1/account/globex/bots/s/properties", &body).await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    // The journeys family answers in its own shape.
    let start = json!({"customer_id": "c1"}).to_string();
    let mut refused = None;
    for _ in 0..20 {
        let reply = app.call(&acme, "POST", "/genesys/1/cs/services/start", &start).await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let refused = refused.expect("the journeys API is limited too");
    assert_eq!(refused.json()["exception"], "TooManyRequestsException");
    assert!(refused.header("retry-after").is_some());
    let metrics = app.request("GET", "/metrics", &[], "").await.body;
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"ctxd_writes_limited_total{account="acme"} "#))
        .map(|count| count.parse::<u64>().unwrap());
    assert_eq!(counted, Some(limited + 1), "{metrics}");
    assert!(!metrics.contains(r#"ctxd_writes_limited_total{account="globex"}"#));
    // Reads are not limited.
    let read = app.call(&acme, "GET", "/v1/account/acme/bots/s/properties", "").await;
    assert_eq!(read.status, 200);
}

/// Every entry of a paged answer, following `next_after`; and the number of pages.
async fn all_pages(app: &TestApp, key: &str, path: &str, field: &str) -> (Vec<u64>, usize) {
    let (mut seqs, mut pages, mut after) = (Vec::new(), 0, 0);
    loop {
        let reply = app.call(key, "GET", &format!("{path}?after={after}&limit=1000"), "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply.body.len() < 12 * 1024 * 1024,
            "a page stays near its byte budget: {}",
            reply.body.len()
        );
        let page = reply.json();
        pages += 1;
        seqs.extend(page[field].as_array().unwrap().iter().map(|entry| entry["seq"].as_u64().unwrap()));
        match page["next_after"].as_u64() {
            Some(next) if next > after && page["has_more"] != false => after = next,
            _ => return (seqs, pages),
        }
    }
}

#[tokio::test]
async fn feed_and_history_pages_stop_at_their_byte_budget_and_go_on_from_there() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    // Sixteen changes of about 700 KB each: 11 MB of feed, twice that of history (old and new).
    for round in 0..16 {
        let value = format!("{round}-{}", "x".repeat(700_000));
        let reply = app
            .call(&key, "PATCH", "/v1/account/acme/bots/s/properties", &json!({ "big": value }).to_string())
            .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    let (feed, pages) = all_pages(&app, &key, "/v1/account/acme/events", "events").await;
    assert_eq!(feed, (1..=19).collect::<Vec<u64>>(), "every event once, in order");
    assert!(pages > 1, "the feed was paged by bytes: {pages}");
    let (history, pages) = all_pages(&app, &key, "/v1/account/acme/bots/s/history", "history").await;
    assert_eq!(history.len(), 16);
    assert!(pages > 2, "the history was paged by bytes: {pages}");
}

mod connections {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::helpers::{TestApp, spawn_app_with};

    async fn app_with(max_connections: usize, header_timeout: Duration) -> TestApp {
        spawn_app_with(|config| {
            config.connections.max_connections = max_connections;
            config.connections.header_timeout = header_timeout;
            config.connections.body_timeout = Duration::from_secs(1);
            config.connections.drain_timeout = Duration::from_secs(2);
        })
        .await
    }

    /// Reads until the server closes the connection (or 10 s pass); answers what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server closed the connection: {}", String::from_utf8_lossy(&answer));
        String::from_utf8_lossy(&answer).into_owned()
    }

    const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn a_half_sent_header_an_idle_keep_alive_and_a_stalled_body_are_closed() {
        let app = app_with(64, Duration::from_secs(1)).await;
        let started = Instant::now();
        let mut half = TcpStream::connect(app.addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut idle = TcpStream::connect(app.addr).await.unwrap();
        idle.write_all(HEALTH).await.unwrap();
        let mut stalled = TcpStream::connect(app.addr).await.unwrap();
        let patch = b"PATCH /v1/account/acme/bots/s/properties HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"a\":";
        stalled.write_all(patch).await.unwrap();
        assert_eq!(until_closed(&mut half).await, "", "no answer to half a header");
        assert!(until_closed(&mut idle).await.starts_with("HTTP/1.1 200"), "answered, then closed when idle");
        let answer = until_closed(&mut stalled).await;
        assert!(!answer.starts_with("HTTP/1.1 2") && !answer.starts_with("HTTP/1.1 5"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
        // The server still answers everyone else.
        assert_eq!(app.request("GET", "/healthz", &[], "").await.status, 200);
    }

    #[tokio::test]
    async fn a_body_dripped_a_byte_at_a_time_is_cut_at_the_body_timeout() {
        let app = app_with(64, Duration::from_secs(5)).await;
        let key = app.account("acme").await;
        let mut drip = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "PATCH /v1/account/acme/bots/s/properties HTTP/1.1\r\nhost: x\r\nmaven-api-key: {key}\r\ncontent-length: 1000\r\n\r\n"
        );
        drip.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // A byte every 200 ms: never a pause of a second, but the body is not whole after one.
        while started.elapsed() < Duration::from_secs(4) {
            if drip.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer = until_closed(&mut drip).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
        let nothing = app.call(&key, "GET", "/v1/account/acme/bots/s/properties", "").await;
        assert_eq!(nothing.body, "{}", "nothing was written");
    }

    /// Opens `account`'s live event stream on a connection of its own; answers the connection
    /// and the status line.
    async fn stream(app: &TestApp, account: &str, key: &str) -> (TcpStream, String) {
        let mut connection = TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET /v1/account/{account}/events/stream HTTP/1.1\r\nhost: x\r\nmaven-api-key: {key}\r\n\r\n"
        );
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 512];
        let read =
            tokio::time::timeout(Duration::from_secs(5), connection.read(&mut head)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&head[..read]).into_owned();
        (connection, head)
    }

    #[tokio::test]
    async fn an_account_holds_at_most_its_share_of_live_event_streams() {
        let app = spawn_app_with(|config| config.connections.streams_per_account = 2).await;
        let acme = app.account("acme").await;
        let globex = app.account("globex").await;
        let first = stream(&app, "acme", &acme).await;
        let second = stream(&app, "acme", &acme).await;
        for (_, head) in [&first, &second] {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        let (_, refused) = stream(&app, "acme", &acme).await;
        assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
        assert!(refused.to_lowercase().contains("retry-after: 5"), "{refused}");
        let (_, theirs) = stream(&app, "globex", &globex).await;
        assert!(theirs.starts_with("HTTP/1.1 200"), "another account's streams are its own: {theirs}");
        drop(first);
        // The slot comes back when the stream ends (the server sees the closed connection when it
        // next writes to it: after the next event of acme at the latest).
        app.call(&acme, "PATCH", "/v1/account/acme/bots/s/properties", r#"{"a":1}"#).await;
        let mut reopened = String::new();
        for _ in 0..50 {
            reopened = stream(&app, "acme", &acme).await.1;
            if reopened.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reopened.starts_with("HTTP/1.1 200"), "{reopened}");
        drop(second);
    }

    #[tokio::test]
    async fn an_accounts_large_reads_wait_for_its_own_slow_reader_and_nobody_elses() {
        let app = spawn_app_with(|config| config.connections.large_reads_per_account = 1).await;
        let acme = app.account("acme").await;
        let globex = app.account("globex").await;
        for round in 0..16 {
            let value = format!("{round}-{}", "x".repeat(700_000));
            let body = serde_json::json!({ "big": value }).to_string();
            assert_eq!(
                app.call(&acme, "PATCH", "/v1/account/acme/bots/s/properties", &body).await.status,
                204
            );
        }
        // A reader of an 8 MiB page that reads its first bytes, then stops: its answer cannot be
        // sent whole (a small receive buffer), so it keeps acme's one large-read slot.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut slow = socket.connect(app.addr).await.unwrap();
        let request = format!(
            "GET /v1/account/acme/events?limit=1000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nmaven-api-key: {acme}\r\n\r\n"
        );
        slow.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        slow.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");

        let history = app.call(&acme, "GET", "/v1/account/acme/bots/s/history", "");
        tokio::pin!(history);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut history).await.is_err(),
            "acme's next large read waits for its slow one"
        );
        let theirs = app.call(&globex, "GET", "/v1/account/globex/events", "").await;
        assert_eq!(theirs.status, 200, "another account's large reads do not wait");
        let small = app.call(&acme, "GET", "/v1/account/acme/bots/s/properties/big", "").await;
        assert_eq!(small.status, 200, "acme's small reads do not wait either");
        let mut rest = Vec::new();
        slow.read_to_end(&mut rest).await.ok();
        drop(slow);
        let history =
            tokio::time::timeout(Duration::from_secs(10), history).await.expect("then it is answered");
        assert_eq!(history.status, 200);
    }

    #[tokio::test]
    async fn past_the_connection_cap_a_new_connection_waits_for_a_free_one() {
        let app = app_with(2, Duration::from_secs(2)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(app.addr).await.unwrap();
            stream.write_all(HEALTH).await.unwrap();
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            held.push(stream);
        }
        let mut third = TcpStream::connect(app.addr).await.unwrap();
        third.write_all(HEALTH).await.unwrap();
        let mut first = [0u8; 12];
        let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut first)).await;
        assert!(early.is_err(), "two connections are open: the third waits");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut first)).await.unwrap().unwrap();
        assert_eq!(&first, b"HTTP/1.1 200", "answered once one of the two closed");
    }

    #[tokio::test]
    async fn shutdown_ends_within_its_drain_timeout_with_a_half_sent_request_open() {
        let mut app = app_with(64, Duration::from_secs(60)).await;
        let mut half = TcpStream::connect(app.addr).await.unwrap();
        half.write_all(b"PATCH /v1/account/acme/bots/s/properties HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(8), app.shutdown()).await.expect("shutdown ends");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
