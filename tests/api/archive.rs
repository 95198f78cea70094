//! Archives (docs/AUDIT.md, "Archives"): an account's events before a time move into a segment
//! file, its state stays as a snapshot; current reads do not change, reads of the archived
//! period answer 410, the segment verifies, and a retention archives on the sweeper's schedule.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use ctxd::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::journeys::{Cs, assert_cs_error};

const A: &str = "/v1/account/acme";

/// The reads whose answers an archive must not change.
const CONTEXT_READS: &[&str] = &[
    "/v1/account/acme/bots/s1/properties",
    "/v1/account/acme/bots/s2/properties",
    "/v1/account/acme/bots/properties",
    "/v1/account/acme/bots/s1/properties/a",
    "/v1/account/acme/analytics/dropoff",
    "/v1/account/acme/analytics/transitions",
    "/v1/account/acme/analytics/abandoned",
    "/v1/account/acme/analytics/funnel?steps=ivr,agent",
];

/// Every read's status, ETag and body.
async fn answers(
    app: &TestApp,
    key: &str,
    services: &[String],
) -> Vec<(String, u16, Option<String>, String)> {
    let mut paths: Vec<String> = CONTEXT_READS.iter().map(|path| path.to_string()).collect();
    let (customer, services) = services.split_last().expect("the customer comes last");
    for service in services {
        paths.push(format!("/genesys/1/cs/services/{service}?active_states=true&completed_states=true&active_tasks=true&completed_tasks=true"));
    }
    paths.push(format!("/genesys/1/cs/customers/{customer}/services"));
    paths.push(format!("/genesys/1/cs/profiles/{customer}"));
    let mut all = Vec::new();
    for path in paths {
        let reply = app.call(key, "GET", &path, "").await;
        all.push((path, reply.status, reply.header("etag"), reply.body));
    }
    all
}

async fn write(app: &TestApp, key: &str, method: &str, path: &str, body: &str) {
    let reply = app.call(key, method, path, body).await;
    assert!(reply.status < 300, "{method} {path}: {} {}", reply.status, reply.body);
}

/// The account's events still in the live table at or before `seq`.
fn live_at_or_before(app: &TestApp, account: &str, seq: u64) -> i64 {
    app.connection()
        .query_row("SELECT count(*) FROM events WHERE account = ?1 AND seq <= ?2", (account, seq), |row| {
            row.get(0)
        })
        .unwrap()
}

/// Waits until the writer's steps have deleted the archived events.
async fn dropped(app: &TestApp, account: &str, seq: u64) {
    for _ in 0..200 {
        if live_at_or_before(app, account, seq) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the archived events of {account} are still in the live log");
}

/// A segment's lines, decompressed.
fn segment_lines(path: &Path) -> Vec<String> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text.lines().map(str::to_string).collect()
}

fn write_segment(path: &Path, lines: &[String]) {
    let mut out =
        flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    for line in lines {
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.finish().unwrap();
}

/// A snapshot state's JSON, as stored deflated.
fn inflate(stored: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(stored).read_to_string(&mut text).unwrap();
    text
}

fn deflate(text: &str) -> Vec<u8> {
    let mut out = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    out.write_all(text.as_bytes()).unwrap();
    out.finish().unwrap()
}

struct Written {
    key: String,
    services: Vec<String>,
    /// A time between the old writes and the new.
    cut: DateTime<Utc>,
}

/// Context and journeys written over two days: the first day's to be archived.
async fn two_days(app: &TestApp) -> Written {
    let key = app.account("acme").await;
    let cs = Cs { app, key: key.clone() };
    write(app, &key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":1,"b":"x"}"#).await;
    write(app, &key, "PATCH", &format!("{A}/bots/s2/properties"), r#"{"gone":true}"#).await;
    write(app, &key, "DELETE", &format!("{A}/namespace/bots/session/s2"), "").await;
    write(app, &key, "PATCH", &format!("{A}/bots/properties"), r#"{"n":1}"#).await;
    let profile = cs.post("/profiles", json!({"EmailAddress": "c1@x.org"})).await;
    assert!(profile.status < 300, "{}", profile.body);
    let c1 = profile.json()["customer_id"].as_str().unwrap().to_string();
    let done =
        cs.start_service(json!({"customer_id": c1, "service_type": "billing", "media_type": "voice"})).await;
    let ivr = cs.start_state(&done, json!({"state_type": "ivr"})).await;
    cs.transition(&done, ivr, "agent", json!({})).await;
    cs.ok(cs.post(&format!("/services/{done}/end"), json!({"disposition": "resolved"})).await).await;
    let open =
        cs.start_service(json!({"customer_id": c1, "service_type": "sales", "media_type": "chat"})).await;
    let first = cs.start_state(&open, json!({"state_type": "ivr"})).await;

    app.clock.advance(Duration::days(1));
    let cut = app.clock.now();
    app.clock.advance(Duration::days(1));

    write(app, &key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":2}"#).await;
    cs.transition(&open, first, "agent", json!({})).await;
    Written { key, services: vec![done, open, c1], cut }
}

fn archive_body(before: DateTime<Utc>) -> String {
    json!({"before": before.to_rfc3339()}).to_string()
}

#[tokio::test]
async fn an_archive_moves_old_events_into_a_segment_and_current_reads_stay_byte_for_byte() {
    let app = spawn_app().await;
    let other = app.account("other").await;
    write(&app, &other, "PATCH", "/v1/account/other/bots/s1/properties", r#"{"mine":1}"#).await;
    let Written { key, services, cut } = two_days(&app).await;
    let others_events = app.events().iter().filter(|event| event.1.contains("/other/")).count();
    let before = answers(&app, &key, &services).await;
    let live_before = app.event_count();

    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let archived = reply.json();
    let through = archived["last_seq"].as_u64().unwrap();
    assert_eq!(archived["first_seq"], 1);
    assert_eq!(archived["archived_events"].as_u64().unwrap(), through);
    assert!(archived["snapshot_streams"].as_u64().unwrap() >= 5, "{archived}");
    let segment = app.data_dir.join("archive").join(archived["segment"].as_str().unwrap());
    assert!(segment.exists(), "{}", segment.display());
    dropped(&app, "acme", through).await;
    assert_eq!(
        app.event_count(),
        live_before - through as usize + 1,
        "the archived events left, LogArchived came"
    );

    // Nothing a client reads now changed.
    assert_eq!(answers(&app, &key, &services).await, before);
    assert_eq!(app.verify().mismatch, None);
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await;
    assert_eq!(chain.status, 200, "{}", chain.body);
    assert_eq!(chain.json()["intact"], true, "{}", chain.body);
    // The other account's log is untouched.
    assert_eq!(app.events().iter().filter(|event| event.1.contains("/other/")).count(), others_events);
    assert_eq!(
        app.call(&other, "GET", "/v1/account/other/bots/s1/properties", "").await.body,
        r#"{"mine":1}"#
    );

    // The archived period: 410 naming the segment; the feed starts after it.
    let name = archived["segment"].as_str().unwrap();
    for path in [
        format!("{A}/bots/s1/properties?as_of_seq=1"),
        format!("{A}/bots/s1/properties?as_of_seq={}", through - 1),
        format!(
            "{A}/bots/s1/properties?as_of={}",
            (cut - Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        format!("{A}/bots/s1/history?after=1"),
    ] {
        let gone = app.call(&key, "GET", &path, "").await;
        assert_eq!(gone.status, 410, "{path}: {}", gone.body);
        assert!(gone.json()["message"].as_str().unwrap().contains(name), "{}", gone.body);
    }
    // History goes on after the cut, its old values from the snapshot.
    let history = app.call(&key, "GET", &format!("{A}/bots/s1/history"), "").await.json();
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{history}");
    assert!(entries[0]["seq"].as_u64().unwrap() > through);
    assert_eq!(entries[0]["properties"]["a"], json!({"old": 1, "new": 2}));
    let cs = Cs { app: &app, key: key.clone() };
    assert_cs_error(&cs.get(&format!("/services/{}/history?after=1", services[0])).await, 410);
    let feed = app.call(&key, "GET", &format!("{A}/events?after=0"), "").await.json();
    assert_eq!(feed["events"][0]["seq"].as_u64().unwrap(), through + 1);
    assert_eq!(feed["events"].as_array().unwrap().last().unwrap()["type"], "LogArchived");
    // As of the cut itself and of a point after it, as the log said then.
    let now = app.call(&key, "GET", &format!("{A}/bots/properties"), "").await;
    for seq in [through, through + 1] {
        let as_of = app.call(&key, "GET", &format!("{A}/bots/properties?as_of_seq={seq}"), "").await;
        assert_eq!((as_of.status, &as_of.body), (200, &now.body), "as of {seq}");
    }
    let at_cut = app.call(&key, "GET", &format!("{A}/bots/s1/properties?as_of_seq={through}"), "").await;
    assert_eq!(at_cut.body, r#"{"a":1,"b":"x"}"#);
    let feed_before = app.call(&key, "GET", &format!("{A}/events?after=1"), "").await;
    assert_eq!(feed_before.status, 410, "{}", feed_before.body);

    // Streams go on counting: a write to an archived session and to the deleted one.
    let version = |stream: &str| -> u64 {
        app.connection()
            .query_row("SELECT max(stream_version) FROM events WHERE stream = ?1", [stream], |row| row.get(0))
            .unwrap()
    };
    write(&app, &key, "PATCH", &format!("{A}/bots/s2/properties"), r#"{"back":true}"#).await;
    assert_eq!(version("ctx/acme/bots/s2"), 3, "PATCH and delete archived, then this PATCH");
    let props = app.call(&key, "GET", &format!("{A}/bots/s2/properties"), "").await;
    assert_eq!(props.body, r#"{"back":true}"#);

    // A restart, a rebuild and a verify start from the snapshot.
    let after_writes = answers(&app, &key, &services).await;
    let app = app.restart().await;
    assert_eq!(answers(&app, &key, &services).await, after_writes);
    let mut conn = crate::helpers::raw_connection(&app.data_dir);
    ctxd::projections::rebuild(&mut conn).unwrap();
    assert_eq!(answers(&app, &key, &services).await, after_writes);
    assert_eq!(app.verify().mismatch, None);

    // The segment verifies; a changed one does not, at the changed position.
    let report = ctxd::store::archive::segment::verify(&segment, &Default::default()).unwrap();
    assert_eq!(report.first_bad, None);
    assert_eq!(report.events, through);
    let mut lines = segment_lines(&segment);
    assert!(lines[0].starts_with(r#"{"ctxd_segment":"#), "{}", lines[0]);
    let at = lines.iter().position(|line| line.contains(r#""a":1,"#)).expect("the first PATCH is archived");
    lines[at] = lines[at].replace(r#""a":1,"#, r#""a":9,"#);
    let changed = segment.with_extension("changed.gz");
    write_segment(&changed, &lines);
    let report = ctxd::store::archive::segment::verify(&changed, &Default::default()).unwrap();
    assert_eq!(report.first_bad.map(|(seq, _)| seq), Some(at as u64), "line {} holds seq {at}", at + 1);
}

#[tokio::test]
async fn nothing_old_enough_archives_nothing_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    write(&app, &key, "PATCH", &format!("{A}/bots/s1/properties"), r#"{"a":1}"#).await;
    let old = app.clock.now() - Duration::days(1);
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(old)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["archived_events"], 0);
    assert_eq!(reply.json()["segment"], Value::Null);
    for (path, body, status) in [
        ("/admin/accounts/nobody/archive", archive_body(old), 404),
        ("/admin/accounts/acme/archive", r#"{"before":"yesterday"}"#.to_string(), 400),
        ("/admin/accounts/acme/archive", r#"{}"#.to_string(), 400),
        ("/admin/accounts/acme/archive", archive_body(app.clock.now() + Duration::days(1)), 400),
        ("/admin/accounts/acme/retention", r#"{"days":0}"#.to_string(), 400),
        ("/admin/accounts/acme/retention", r#"{}"#.to_string(), 400),
        ("/admin/accounts/nobody/retention", r#"{"days":3}"#.to_string(), 404),
    ] {
        let method = if path.ends_with("retention") { "PUT" } else { "POST" };
        let reply = app.admin(method, path, &body).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        assert!(reply.json()["message"].is_string(), "{}", reply.body);
    }
    // A tenant's key cannot archive.
    let tenant = app.call(&key, "POST", "/admin/accounts/acme/archive", &archive_body(old)).await;
    assert!(tenant.status == 401 || tenant.status == 403, "{}", tenant.status);
}

#[tokio::test]
async fn a_retention_archives_old_events_on_the_sweepers_schedule() {
    let app = spawn_app().await;
    let Written { key, services, .. } = two_days(&app).await;
    let other = app.account("other").await;
    write(&app, &other, "PATCH", "/v1/account/other/bots/s1/properties", r#"{"mine":1}"#).await;
    let reply = app.admin("GET", "/admin/accounts/acme/retention", "").await;
    assert_eq!(
        reply.json(),
        json!({"account_id": "acme", "days": null, "archived_through_seq": 0, "segments": []})
    );
    let set = app.admin("PUT", "/admin/accounts/acme/retention", r#"{"days":1}"#).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["days"], 1);
    let before = answers(&app, &key, &services).await;

    // The sweeper's tick (the manual clock says two days passed since the first writes).
    let account = ctxd::sweeper::archive_one_due(&app.store, app.clock.now()).await.unwrap();
    assert_eq!(account.as_deref(), Some("acme"));
    let retention = app.admin("GET", "/admin/accounts/acme/retention", "").await.json();
    let through = retention["archived_through_seq"].as_u64().unwrap();
    assert!(through > 5, "{retention}");
    assert_eq!(retention["segments"].as_array().unwrap().len(), 1);
    dropped(&app, "acme", through).await;
    assert_eq!(answers(&app, &key, &services).await, before);
    // Nothing more is due until another day passes; the other account keeps everything.
    assert_eq!(ctxd::sweeper::archive_one_due(&app.store, app.clock.now()).await.unwrap(), None);
    assert_eq!(live_at_or_before(&app, "other", 1), 1);
    // A second archive goes on from the first: its segment connects to it, and it rewrites only
    // the snapshot streams its events changed.
    let digest = |stream: &str| -> Vec<u8> {
        app.connection()
            .query_row("SELECT digest FROM live_snapshot_streams WHERE stream = ?1", [stream], |row| {
                row.get(0)
            })
            .unwrap()
    };
    let (namespace, session) = (digest("ns/acme/bots"), digest("ctx/acme/bots/s1"));
    app.clock.advance(Duration::days(3));
    assert_eq!(
        ctxd::sweeper::archive_one_due(&app.store, app.clock.now()).await.unwrap().as_deref(),
        Some("acme")
    );
    let retention = app.admin("GET", "/admin/accounts/acme/retention", "").await.json();
    let segments = retention["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1]["first_seq"].as_u64().unwrap(), through + 1);
    dropped(&app, "acme", segments[1]["last_seq"].as_u64().unwrap()).await;
    assert_eq!(digest("ns/acme/bots"), namespace, "untouched since the first archive");
    assert_ne!(digest("ctx/acme/bots/s1"), session, "patched on the second day");
    // The rows the second archive superseded are deleted in steps: one row per stream is left.
    superseded_deleted(&app, "acme").await;
    assert_eq!(answers(&app, &key, &services).await, before);
    assert_eq!(app.verify().mismatch, None);
    let paths: Vec<PathBuf> = segments
        .iter()
        .map(|segment| app.data_dir.join("archive").join(segment["segment"].as_str().unwrap()))
        .collect();
    let first = ctxd::store::archive::segment::verify(&paths[0], &Default::default()).unwrap();
    let second = ctxd::store::archive::segment::verify(&paths[1], &Default::default()).unwrap();
    assert_eq!((first.first_bad, second.first_bad.clone()), (None, None));
    assert_eq!(second.header.previous_hash, first.header.through_hash);
}

/// Waits until `account`'s snapshot holds one row per stream, the one reads see: superseded
/// rows and those of archives that did not commit deleted.
async fn superseded_deleted(app: &TestApp, account: &str) {
    let count = |table: &str| -> i64 {
        app.connection()
            .query_row(&format!("SELECT count(*) FROM {table} WHERE account_id = ?1"), [account], |row| {
                row.get(0)
            })
            .unwrap()
    };
    for _ in 0..200 {
        if count("snapshot_streams") == count("live_snapshot_streams") && count("archive_stages") == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "{account}'s snapshot holds {} rows, {} of them seen, {} archives staged",
        count("snapshot_streams"),
        count("live_snapshot_streams"),
        count("archive_stages")
    );
}

/// A command of the archive's own, sent to the writer as `archive` sends it.
async fn submit(app: &TestApp, command: ctxd::domain::Command) -> Result<(), ctxd::store::WriteError> {
    let meta = ctxd::store::EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: "system:archive".into(),
        ..Default::default()
    };
    app.store.submit(ctxd::store::WriteRequest { command, meta, idempotency: None }).await.map(|_| ())
}

#[tokio::test]
async fn an_archive_is_staged_in_steps_no_read_sees_and_an_erasure_meanwhile_refuses_its_commit() {
    use ctxd::domain::Command;
    use ctxd::store::archive::{self, STAGE_STREAMS};
    let app = spawn_app().await;
    let key = app.account("acme").await;
    // More sessions than one step stages.
    for n in 0..STAGE_STREAMS + 50 {
        write(
            &app,
            &key,
            "PATCH",
            &format!("{A}/bots/m{n}/properties"),
            &format!(r#"{{"n":{n},"pii":"p{n}"}}"#),
        )
        .await;
    }
    app.clock.advance(Duration::days(1));
    let cut = app.clock.now();
    app.clock.advance(Duration::days(1));
    write(&app, &key, "PATCH", &format!("{A}/bots/m1/properties"), r#"{"later":true}"#).await;
    let reads =
        ["/bots/m1/properties", "/bots/m5/properties", "/bots/m900/properties", "/bots/properties?limit=5"];
    let read_all = || async {
        let mut all = Vec::new();
        for path in reads {
            let reply = app.call(&key, "GET", &format!("{A}{path}"), "").await;
            all.push((reply.status, reply.header("etag"), reply.body));
        }
        all
    };
    let before = read_all().await;

    // Prepared and staged as `archive` does, one step at a time.
    let (dir, now) = (app.data_dir.join("archive"), app.clock.now());
    let (prepared, stages) = app
        .store
        .read(move |conn| {
            let mut stages = Vec::new();
            let prepared = archive::prepare(conn, "acme", cut, &dir, now, &mut |stage| {
                stages.push(stage);
                Ok(())
            });
            Ok((prepared, stages))
        })
        .unwrap();
    let prepared = prepared.unwrap().expect("old events to archive");
    let through = prepared.event.through_seq;
    assert!(stages.len() >= 2, "{} steps", stages.len());
    assert!(stages.iter().all(|stage| stage.streams.len() <= STAGE_STREAMS));
    let mut stages = stages.into_iter();
    let first = stages.next().unwrap();
    let staged = first.streams.len() as i64;
    submit(&app, Command::StageArchive { account: "acme".into(), stage: Box::new(first) }).await.unwrap();
    let count = |sql: &str| -> i64 { app.connection().query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM snapshot_streams WHERE account_id = 'acme'"), staged);
    assert_eq!(count("SELECT count(*) FROM live_snapshot_streams WHERE account_id = 'acme'"), 0);
    assert_eq!(read_all().await, before, "a staged snapshot is seen by no read");
    // Another archive of the account waits for this one.
    let refused = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("in progress"), "{}", refused.body);
    // Writes of the account and of others go on between the steps.
    let other = app.account("other").await;
    write(&app, &other, "PATCH", "/v1/account/other/bots/s1/properties", r#"{"mine":1}"#).await;

    // An erasure between two steps: the erased session's staged row goes with it, and the
    // archive can take no further step.
    assert_eq!(count("SELECT count(*) FROM snapshot_streams WHERE stream = 'ctx/acme/bots/m5'"), 1);
    let erased = app.call(&key, "POST", &format!("{A}/namespace/bots/session/m5/erase"), "").await;
    assert!(erased.status < 300, "{}", erased.body);
    assert_eq!(count("SELECT count(*) FROM snapshot_streams WHERE stream = 'ctx/acme/bots/m5'"), 0);
    let next = stages.next().unwrap();
    let error = submit(&app, Command::StageArchive { account: "acme".into(), stage: Box::new(next) }).await;
    assert!(
        matches!(&error, Err(ctxd::store::WriteError::Domain(e)) if e.to_string().contains("an erasure was recorded")),
        "{error:?}"
    );
    let error =
        submit(&app, Command::Archive { account: "acme".into(), prepared: Box::new(prepared.clone()) }).await;
    assert!(matches!(error, Err(ctxd::store::WriteError::Domain(_))), "{error:?}");
    assert_eq!(count("SELECT count(*) FROM archives"), 0, "nothing committed");

    // Given up, its rows are deleted in steps; then an archive of the account goes through.
    submit(&app, Command::AbandonArchive { account: "acme".into(), through_seq: through }).await.unwrap();
    app.store.wake_steps();
    superseded_deleted(&app, "acme").await;
    assert_eq!(count("SELECT count(*) FROM snapshot_streams"), 0);
    let _ = std::fs::remove_file(&prepared.path);
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let archived = reply.json();
    assert_eq!(
        archived["snapshot_streams"],
        count("SELECT count(*) FROM live_snapshot_streams WHERE account_id = 'acme'")
    );
    dropped(&app, "acme", archived["last_seq"].as_u64().unwrap()).await;
    let after = read_all().await;
    assert_eq!((&after[0], &after[2], &after[3]), (&before[0], &before[2], &before[3]));
    assert!(!after[1].2.contains("p5"), "{:?}", after[1]);
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
    assert_eq!(app.verify().mismatch, None);
}

#[tokio::test]
async fn an_interrupted_archives_staged_rows_are_deleted_before_the_next_archive() {
    let app = spawn_app().await;
    let Written { key, services, cut } = two_days(&app).await;
    let before = answers(&app, &key, &services).await;
    // What a process stopped while it staged an archive leaves: its turn, and rows no read sees
    // (one of a stream that has live events, one of a stream that has none).
    let raw = crate::helpers::raw_connection(&app.data_dir);
    let touched = ctxd::store::log::format_time(Utc::now());
    raw.execute(
        "INSERT INTO archive_stages (account_id, through_seq, owner, touched_at) VALUES ('acme', 4, 'a stopped process', ?1)",
        [touched],
    )
    .unwrap();
    for stream in ["ctx/acme/bots/s1", "ctx/acme/bots/never"] {
        raw.execute(
            "INSERT INTO snapshot_streams (stream, through_seq, account_id, version, digest, state)
             VALUES (?1, 4, 'acme', 99, ?2, ?3)",
            (stream, vec![0u8; 32], deflate(r#"{"version":99}"#)),
        )
        .unwrap();
    }
    assert_eq!(
        answers(&app, &key, &services).await,
        before,
        "rows above the account's cut are seen by no read"
    );
    let session = app.call(&key, "GET", &format!("{A}/bots/s1/properties"), "").await;
    let written = app.call(&key, "PATCH", &format!("{A}/bots/never/properties"), r#"{"new":1}"#).await;
    assert_eq!(written.status, 204, "{}", written.body);

    // The next archive is refused until the steps have deleted them, then goes on.
    let refused = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("interrupted archive"), "{}", refused.body);
    superseded_deleted(&app, "acme").await;
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    dropped(&app, "acme", reply.json()["last_seq"].as_u64().unwrap()).await;
    assert_eq!(answers(&app, &key, &services).await, before);
    assert_eq!(app.call(&key, "GET", &format!("{A}/bots/s1/properties"), "").await.body, session.body);
    assert_eq!(app.verify().mismatch, None);
}

/// The archive's segment files of `account` under `data_dir`, in name (position) order.
fn segment_files(data_dir: &Path, account: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("archive").join(account))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_cli_archives_offline_and_an_auditor_imports_the_segments_with_the_live_log() {
    use crate::process::ctxd;
    let dir = tempfile::tempdir().unwrap();
    let start = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 10, 0, 0).unwrap();
    let clock = std::sync::Arc::new(ctxd::clock::ManualClock::starting_at(start));
    let mut app = crate::helpers::spawn_app_in(dir.path(), clock.clone()).await;
    let Written { key, cut, .. } = two_days(&app).await;
    let archived_period = format!("{A}/bots/s1/properties?as_of_seq=5");
    let then = app.call(&key, "GET", &archived_period, "").await;
    assert_eq!(then.status, 200, "{}", then.body);
    app.shutdown().await;
    drop(app);

    let before = cut.to_rfc3339();
    let (code, out, err) = ctxd(dir.path(), &["archive", "--account", "acme", "--before", &before]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("archived "), "{out}");
    let segments = segment_files(dir.path(), "acme");
    assert_eq!(segments.len(), 1);
    let segment = segments[0].to_str().unwrap();
    let (code, out, err) = ctxd(dir.path(), &["verify", "--archive", segment]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact") && out.contains("connect to the live log"), "{out}");
    let (code, out, err) = ctxd(dir.path(), &["verify", "--chain"]);
    assert_eq!(code, 0, "{out}{err}");
    // Nothing left to archive before that time.
    let (code, out, _) = ctxd(dir.path(), &["archive", "--account", "acme", "--before", &before]);
    assert_eq!(code, 0);
    assert!(out.contains("no event of acme"), "{out}");

    // A changed copy of the segment is reported, with the position.
    let mut lines = segment_lines(&segments[0]);
    let at = lines.iter().position(|line| line.contains(r#""b":"x""#)).expect("the first PATCH is archived");
    lines[at] = lines[at].replace(r#""b":"x""#, r#""b":"y""#);
    let changed = dir.path().join("changed.ndjson.gz");
    write_segment(&changed, &lines);
    let (code, out, _) = ctxd(dir.path(), &["verify", "--archive", changed.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("BROKEN: seq {at}:")), "{out}");

    // The auditor's scratch store: the segment, then the live log's export.
    let (code, live, err) = ctxd(dir.path(), &["export", "--account", "acme"]);
    assert_eq!(code, 0, "{err}");
    let live_file = dir.path().join("live.ndjson");
    std::fs::write(&live_file, live).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (code, out, err) = ctxd(scratch.path(), &["import", segment, live_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let alone = tempfile::tempdir().unwrap();
    let (code, _, err) = ctxd(alone.path(), &["import", live_file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("its segments, in order, then its export"), "{err}");
    let auditor = crate::helpers::spawn_app_in(scratch.path(), clock).await;
    let there = auditor.call(&key, "GET", &archived_period, "").await;
    assert_eq!((there.status, there.body), (200, then.body));
}

#[tokio::test]
async fn a_kill_during_an_archive_leaves_the_old_state_or_the_new_and_loses_nothing() {
    use crate::process::{Http, Server, create_account, ctxd, send};
    let dir = tempfile::tempdir().unwrap();
    let client: Http =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut server = Server::start(dir.path());
    let key = create_account(&client, &server.addr).await;
    let admin = [("authorization", "Bearer process-test-admin"), ("content-type", "application/json")];
    // Kills at several moments of the archive: before, during and after its commit.
    let mut archived_through = 0;
    for (round, delay) in [0u64, 15, 60, 250].into_iter().enumerate() {
        for n in 0..300 {
            let path = format!("/v1/account/acme/crash/s{}/properties", n % 40);
            let body = format!(r#"{{"r{round}":{n}}}"#);
            let (status, _) =
                send(&client, &server.addr, "PATCH", &path, &[("maven-api-key", &key)], &body).await.unwrap();
            assert_eq!(status, 204);
        }
        let mut before = Vec::new();
        for session in 0..40 {
            let path = format!("/v1/account/acme/crash/s{session}/properties");
            before.push(
                send(&client, &server.addr, "GET", &path, &[("maven-api-key", &key)], "").await.unwrap(),
            );
        }
        let body = json!({"before": Utc::now().to_rfc3339()}).to_string();
        let (client2, addr) = (client.clone(), server.addr.clone());
        let archiving = tokio::spawn(async move {
            send(&client2, &addr, "POST", "/admin/accounts/acme/archive", &admin, &body).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        server.signal("-KILL");
        let _ = server.child.wait();
        let answered = archiving.await.unwrap();
        drop(server);

        server = Server::start(dir.path());
        for (session, then) in before.iter().enumerate() {
            let path = format!("/v1/account/acme/crash/s{session}/properties");
            let now =
                send(&client, &server.addr, "GET", &path, &[("maven-api-key", &key)], "").await.unwrap();
            assert_eq!(&now, then, "round {round}: session s{session} changed");
        }
        let (status, retention) =
            send(&client, &server.addr, "GET", "/admin/accounts/acme/retention", &admin, "").await.unwrap();
        assert_eq!(status, 200);
        let retention: Value = serde_json::from_str(&retention).unwrap();
        if let Ok((200, archived)) = &answered {
            let archived: Value = serde_json::from_str(archived).unwrap();
            assert_eq!(
                retention["archived_through_seq"], archived["last_seq"],
                "an acknowledged archive stays"
            );
        }
        let (code, out, err) = ctxd(dir.path(), &["verify", "--chain"]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        archived_through = retention["archived_through_seq"].as_u64().unwrap();
    }
    // Some kill came after a commit; the restarted writer deleted what that archive moved.
    assert!(archived_through > 0);
    // The next archive of the account removes any segment file a kill left uncommitted, once it
    // is a minute old and no process holds its lock (the kills' files are aged here); a file
    // another process is writing (locked) stays. A kill while it staged leaves rows that the
    // restarted node deletes first (409 meanwhile).
    let folder = dir.path().join("archive/acme");
    let being_written = folder.join("000000000001-000000000002-0a0b0c0d.ndjson.gz.partial");
    let writer = std::fs::File::create(&being_written).unwrap();
    writer.lock().unwrap();
    let minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for entry in std::fs::read_dir(&folder).unwrap() {
        let file = std::fs::File::options().append(true).open(entry.unwrap().path()).unwrap();
        file.set_modified(minutes_ago).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = r#"{"before":"2000-01-01T00:00:00Z"}"#;
        let (status, answer) =
            send(&client, &server.addr, "POST", "/admin/accounts/acme/archive", &admin, body).await.unwrap();
        if status == 409 && answer.contains("interrupted archive") && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, 200, "{answer}");
        break;
    }
    let (_, retention) =
        send(&client, &server.addr, "GET", "/admin/accounts/acme/retention", &admin, "").await.unwrap();
    let retention: Value = serde_json::from_str(&retention).unwrap();
    let mut recorded: Vec<String> = retention["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["segment"].as_str().unwrap().to_string())
        .collect();
    recorded.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path().join("archive/acme"))
        .unwrap()
        .map(|entry| format!("acme/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let held = format!("acme/{}", being_written.file_name().unwrap().to_string_lossy());
    assert!(on_disk.contains(&held), "a locked file stays: {on_disk:?}");
    on_disk.retain(|name| *name != held);
    assert_eq!(on_disk, recorded, "the files left by the kills are removed, the recorded segments kept");
    drop(writer);
    let conn = crate::helpers::raw_connection(dir.path());
    for _ in 0..200 {
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE account = 'acme' AND seq <= ?1",
                [archived_through],
                |row| row.get(0),
            )
            .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the archived events are still in the live log after the restart");
}

#[tokio::test]
async fn an_erasure_reaches_the_archive_and_a_changed_snapshot_is_reported() {
    let app = spawn_app().await;
    let Written { key, services, cut } = two_days(&app).await;
    let customer = services.last().unwrap().clone();
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let archived = reply.json();
    let through = archived["last_seq"].as_u64().unwrap();
    let segment = app.data_dir.join("archive").join(archived["segment"].as_str().unwrap());
    dropped(&app, "acme", through).await;
    assert!(segment_lines(&segment).iter().any(|line| line.contains("c1@x.org")));
    assert!(segment_lines(&segment).iter().any(|line| line.contains(r#""b":"x""#)));

    // Erase the session and the customer: their archived payloads, their snapshot states.
    let erased = app.call(&key, "POST", &format!("{A}/namespace/bots/session/s1/erase"), "").await;
    assert!(erased.status < 300, "{}", erased.body);
    let cs = Cs { app: &app, key: key.clone() };
    let erased = cs.post(&format!("/profiles/{customer}/erase"), json!({})).await;
    assert!(erased.status < 300, "{}", erased.body);
    let lines = segment_lines(&segment);
    assert!(!lines.iter().any(|line| line.contains("c1@x.org")), "the profile is in the segment still");
    assert!(
        !lines.iter().any(|line| line.contains(r#""b":"x""#)),
        "the session's value is in the segment still"
    );
    let conn = app.connection();
    let states: Vec<String> = {
        let mut statement = conn.prepare("SELECT state FROM snapshot_streams").unwrap();
        statement
            .query_map([], |row| row.get::<Vec<u8>>(0))
            .unwrap()
            .map(|state| inflate(&state.unwrap()))
            .collect()
    };
    assert!(
        !states.iter().any(|state| state.contains("c1@x.org") || state.contains(r#"\"x\""#)),
        "{states:?}"
    );
    // Everything still verifies: the chain with its snapshot, the segment with the live log's
    // redactions, the projections against a rebuild.
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
    let redactions = ctxd::store::archive::live_redactions(&conn, "acme").unwrap();
    assert_eq!(ctxd::store::archive::segment::verify(&segment, &redactions).unwrap().first_bad, None);
    assert_eq!(app.verify().mismatch, None);

    // A snapshot state changed with SQL is reported at the LogArchived event (here the analytics
    // counters, kept with the account's stream).
    let raw = crate::helpers::raw_connection(&app.data_dir);
    let state: Vec<u8> = raw
        .query_row("SELECT state FROM snapshot_streams WHERE stream = 'account/acme'", [], |row| row.get(0))
        .unwrap();
    let state = inflate(&state);
    assert!(state.contains("billing"), "{state}");
    let changed = deflate(&state.replace("billing", "billinG"));
    let original = raw
        .query_row("SELECT state FROM snapshot_streams WHERE stream = 'account/acme'", [], |row| {
            row.get::<Vec<u8>>(0)
        })
        .unwrap();
    raw.execute("UPDATE snapshot_streams SET state = ?1 WHERE stream = 'account/acme'", [changed]).unwrap();
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], false, "{chain}");
    assert!(chain.to_string().contains("changed outside an erasure"), "{chain}");
    raw.execute("UPDATE snapshot_streams SET state = ?1 WHERE stream = 'account/acme'", [original]).unwrap();
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");

    // An erased state (its salt gone) is held to the sha256 its erasure recorded: changed
    // afterwards, it is reported too.
    let erased: (String, Vec<u8>) = raw
        .query_row(
            "SELECT stream, state FROM snapshot_streams WHERE salt IS NULL AND stream LIKE 'ctx/%'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let state = inflate(&erased.1);
    assert!(!state.contains("session"), "an erased session keeps no rows: {state}");
    let changed = deflate(&state.replacen(
        '{',
        r#"{"session":{"namespace":"bots","session_id":"s1","properties":{"b":["\"x\"",null]}},"#,
        1,
    ));
    raw.execute("UPDATE snapshot_streams SET state = ?1 WHERE stream = ?2", ctxd::params![changed, erased.0])
        .unwrap();
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], false, "{chain}");
    assert!(
        chain.to_string().contains(&format!("stream {} was changed outside an erasure", erased.0)),
        "{chain}"
    );
}

#[tokio::test]
async fn a_store_archived_before_snapshots_were_staged_keeps_its_snapshot_when_it_opens() {
    let app = crate::helpers::spawn_sqlite_app().await;
    let Written { key, services, cut } = two_days(&app).await;
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let through = reply.json()["last_seq"].as_u64().unwrap();
    dropped(&app, "acme", through).await;
    let before = answers(&app, &key, &services).await;
    // Back to schema version 17: one snapshot row per stream, keyed by the stream alone.
    let app = app
        .restart_with(|dir| {
            let conn = rusqlite::Connection::open(dir.join("ctxd.db")).unwrap();
            conn.execute_batch(crate::helpers::BEFORE_ROLLUPS).unwrap();
            conn.execute_batch(
                "DELETE FROM schema_version WHERE version >= 18;
                 DROP INDEX events_services_of_sessions; DROP INDEX events_services_of_interactions;
                 DROP VIEW live_snapshot_streams; DROP TABLE archive_stages;
                 ALTER TABLE archives DROP COLUMN superseded_after;
                 CREATE TABLE snapshot_streams_17 (stream TEXT PRIMARY KEY, account_id TEXT NOT NULL,
                     version INTEGER NOT NULL, salt BLOB, digest BLOB NOT NULL, state BLOB NOT NULL, contact_key TEXT);
                 INSERT INTO snapshot_streams_17
                     SELECT stream, account_id, version, salt, digest, state, contact_key FROM snapshot_streams;
                 DROP TABLE snapshot_streams; ALTER TABLE snapshot_streams_17 RENAME TO snapshot_streams;
                 CREATE INDEX snapshot_streams_of_accounts ON snapshot_streams (account_id, stream);
                 CREATE INDEX snapshot_streams_by_contact_key ON snapshot_streams (account_id, contact_key)
                     WHERE contact_key IS NOT NULL;",
            )
            .unwrap();
        })
        .await;
    // Each row is taken at the account's archive, and everything reads and verifies as before.
    let conn = app.connection();
    let cuts: Vec<u64> = {
        let mut statement = conn.prepare("SELECT DISTINCT through_seq FROM snapshot_streams").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(cuts, vec![through]);
    assert_eq!(answers(&app, &key, &services).await, before);
    let chain = app.call(&key, "GET", &format!("{A}/audit/verify"), "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
    assert_eq!(app.verify().mismatch, None);
    // The next archive goes on from it and supersedes its rows.
    app.clock.advance(Duration::days(1));
    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(app.clock.now())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    dropped(&app, "acme", reply.json()["last_seq"].as_u64().unwrap()).await;
    superseded_deleted(&app, "acme").await;
    assert_eq!(answers(&app, &key, &services).await, before);
    assert_eq!(app.verify().mismatch, None);
}

/// A customer's erasure in progress at the cut: later services' events advance it, so the
/// customer's snapshot stream is folded after every other; it holds the erasure as far as the
/// archived events took it, and the snapshot's digest still takes the streams in order.
#[tokio::test]
async fn an_archive_cut_in_the_middle_of_a_customers_erasure_keeps_how_far_it_went() {
    let app = crate::helpers::spawn_app_with(|config| {
        config.writer.step = ctxd::domain::context::StepBound { items: 1, rows: 1000 }
    })
    .await;
    let key = app.account("acme").await;
    let cs = Cs { app: &app, key: key.clone() };
    let ann = cs.post("/profiles", json!({"FirstName": "Ann"})).await.json()["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    const SERVICES: u64 = 200;
    for i in 0..SERVICES {
        cs.start_service(json!({"customer_id": ann, "service_type": "billing", "Reason": {"text": i}})).await;
    }
    app.clock.advance(Duration::hours(1));
    let reply = cs.post(&format!("/profiles/{ann}/erase"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    // Once a service is erased (a step each), the next steps are recorded after the cut.
    let path = format!("/genesys/1/cs/profiles/{ann}/erasure");
    let status = || app.call(&key, "GET", &path, "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status().await.json()["services_left"] == SERVICES {
        assert!(std::time::Instant::now() < deadline, "the erasure did not start");
    }
    app.clock.advance(Duration::hours(1));
    let cut = app.clock.now();
    while status().await.json()["erasing"] == true {
        assert!(std::time::Instant::now() < deadline, "the erasure did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let reply = app.admin("POST", "/admin/accounts/acme/archive", &archive_body(cut)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let through = reply.json()["last_seq"].as_u64().unwrap();
    let erased: Vec<(u64, String)> = app
        .events()
        .into_iter()
        .filter(|event| event.3 == "ServiceErased")
        .map(|event| (event.0, event.4["service_id"].as_str().unwrap().to_string()))
        .collect();
    let archived: Vec<&(u64, String)> = erased.iter().filter(|(seq, _)| *seq <= through).collect();
    assert!(
        !archived.is_empty() && archived.len() < erased.len(),
        "the cut falls inside the erasure: {} of {} services erased before it",
        archived.len(),
        erased.len()
    );
    let conn = app.connection();
    let stream = ctxd::domain::events::customer_stream("acme", &ann);
    let state = ctxd::store::archive::stream_state(&conn, &stream).unwrap().expect("the customer's stream");
    let (_, erased_through) =
        state.customer.and_then(|customer| customer.erasure).expect("erasing at the cut");
    assert_eq!(erased_through.as_deref(), Some(archived.last().unwrap().1.as_str()));
    assert_eq!(ctxd::store::archive::snapshot_problem(&conn, "acme").unwrap(), None);
    dropped(&app, "acme", through).await;
    assert_eq!(app.verify().mismatch, None);
    let chain = app.call(&key, "GET", "/v1/account/acme/audit/verify", "").await.json();
    assert_eq!(chain["intact"], true, "{chain}");
}
