//! `ctxd export`, `ctxd import` and `ctxd verify --chain`, run as the real binary on stores
//! written over HTTP: a log moves to a fresh data dir byte for byte and verifies the same there,
//! a partial or altered export is refused, and an edited row breaks the chain where it was edited.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ctxd::clock::ManualClock;
use rusqlite::Connection;
use rusqlite::types::Value as Column;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::{TestApp, spawn_app_in};
use crate::journeys::Cs;

const BINARY: &str = env!("CARGO_BIN_EXE_ctxd");
const A: &str = "/v1/account/acme";
/// A number the store must keep digit for digit, through export and import.
const LONG_NUMBER: &str = "12345678901234567890.123456789012345678901234567890";

/// What a run of `ctxd` answered.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `ctxd ARGS` on `data_dir`, with stdin and stdout as given (stdout captured when piped).
fn ctxd_with(data_dir: &Path, args: &[&str], stdin: Stdio, stdout: Stdio) -> Run {
    let output = Command::new(BINARY)
        .env("CTXD_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .output()
        .expect("ctxd runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ctxd(data_dir: &Path, args: &[&str]) -> Run {
    ctxd_with(data_dir, args, Stdio::null(), Stdio::piped())
}

/// `ctxd export ARGS > file`, asserting that it succeeds.
fn export_to(data_dir: &Path, args: &[&str], file: &Path) {
    let all: Vec<&str> = ["export"].iter().chain(args).copied().collect();
    let run = ctxd_with(data_dir, &all, Stdio::null(), Stdio::from(File::create(file).unwrap()));
    assert_eq!(run.code, 0, "export {args:?}: {}", run.stderr);
}

/// `ctxd import file`.
fn import(data_dir: &Path, file: &Path) -> Run {
    ctxd(data_dir, &["import", file.to_str().unwrap()])
}

/// Every column of every event row, as stored, in seq order.
fn event_rows(data_dir: &Path) -> Vec<Vec<Column>> {
    let conn = Connection::open(data_dir.join("ctxd.db")).unwrap();
    let mut statement = conn.prepare("SELECT * FROM events ORDER BY seq").unwrap();
    let columns = statement.column_count();
    assert_eq!(columns, 11, "every column of events is compared");
    statement
        .query_map([], |row| (0..columns).map(|index| row.get(index)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Rows of a projection table, to see that a refused import left nothing behind.
fn count(data_dir: &Path, table: &str) -> i64 {
    let conn = Connection::open(data_dir.join("ctxd.db")).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

/// The hex of the last event's hash: the chain head.
fn head_hex(data_dir: &Path) -> String {
    let conn = Connection::open(data_dir.join("ctxd.db")).unwrap();
    let hash: Vec<u8> =
        conn.query_row("SELECT hash FROM events ORDER BY seq DESC LIMIT 1", [], |row| row.get(0)).unwrap();
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A server on a data dir that outlives it, so that the CLI can work on the store afterwards.
async fn serve(dir: &TempDir) -> TestApp {
    let clock = ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap());
    spawn_app_in(dir.path(), Arc::new(clock)).await
}

/// Stops the server and releases the data dir's lock.
async fn stop(mut app: TestApp) {
    app.shutdown().await;
}

/// Writes a context and journey history for account `acme` (patches, TTLs and their expiry,
/// deletes, a service with states and tasks, a customer, an erased session and an erased
/// customer, whose redacted payloads the chain accounts for) and a little for `globex`.
async fn write_history(app: &TestApp) {
    let cs = Cs::new(app, "acme").await;
    let key = cs.key.as_str();
    let call = |method: &'static str, path: String, body: String| async move {
        let reply = app.call(key, method, &path, &body).await;
        assert_eq!(reply.status, 204, "{method} {path}: {}", reply.body);
    };
    call("POST", format!("{A}?ttlSecond=60"), r#"{"name":"bots"}"#.into()).await;
    let first = format!(
        r#"{{"intent":"dispute","amount":{LONG_NUMBER},"note":"caf\u00e9 \"quoted\" \u2028","nested":{{"b":[1,2],"a":null}}}}"#
    );
    call("PATCH", format!("{A}/bots/conv-1/properties"), first).await;
    call("PATCH", format!("{A}/bots/conv-1/properties"), r#"{"intent":"refund"}"#.into()).await;
    call("DELETE", format!("{A}/bots/conv-1/properties/nested"), String::new()).await;
    call("POST", format!("{A}/namespace/bots/session?ttlSecond=10"), r#"{"sessionId":"conv-2"}"#.into())
        .await;
    call("PATCH", format!("{A}/bots/conv-2/properties"), r#"{"step":3}"#.into()).await;
    call("PUT", format!("{A}/support/properties/banner"), r#""closed today""#.into()).await;
    call("PATCH", format!("{A}/support/conv-3/properties"), r#"{"agent":"ann"}"#.into()).await;
    call("DELETE", format!("{A}/namespace/support/session/conv-3"), String::new()).await;
    app.clock.advance(Duration::seconds(61));
    assert!(ctxd::sweeper::sweep_once(&app.store).await.unwrap() > 0, "properties expired");

    call("PATCH", format!("{A}/bots/conv-5/properties"), r#"{"email":"bea@x.org"}"#.into()).await;
    let erased = app.call(key, "POST", &format!("{A}/namespace/bots/session/conv-5/erase"), "").await;
    assert_eq!(erased.status, 200, "{}", erased.body);

    let created = cs.post("/profiles", json!({"FirstName": "Ann", "EmailAddress": "ann@x.org"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let customer = created.json()["customer_id"].as_str().unwrap().to_string();
    let service = cs
        .start_service(json!({"customer_id": "c1", "service_type": "billing", "media_type": "voice"}))
        .await;
    let ivr = cs.start_state(&service, json!({"state_type": "ivr", "media_type": "voice"})).await;
    let task = cs.start_task(&service, json!({"state_id": ivr, "task_type": "identify"})).await;
    cs.ok(cs.post(&format!("/services/{service}/tasks/{task}/end"), json!({"disposition": "ok"})).await)
        .await;
    let queue = cs.transition(&service, ivr, "queue", json!({})).await;
    cs.transition(&service, queue, "agent", json!({"media_type": "chat"})).await;
    cs.ok(cs.post(&format!("/services/{service}/end"), json!({"disposition": "resolved"})).await).await;
    let open = cs.start_service(json!({"customer_id": "c1", "service_type": "sales"})).await;
    cs.start_state(&open, json!({"state_type": "ivr"})).await;

    let erased = cs.post(&format!("/profiles/{customer}/erase"), json!({})).await;
    assert_eq!(erased.status, 200, "{}", erased.body);

    let globex = app.account("globex").await;
    let reply = app.call(&globex, "PATCH", "/v1/account/globex/ns/s/properties", r#"{"a":1}"#).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let reply = app.call(key, "PATCH", &format!("{A}/bots/conv-4/properties"), r#"{"late":true}"#).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
}

/// A stopped store with the history above, and where to put files beside it.
struct Written {
    source: TempDir,
    scratch: TempDir,
}

impl Written {
    async fn new() -> Written {
        let source = tempfile::tempdir().unwrap();
        let app = serve(&source).await;
        write_history(&app).await;
        stop(app).await;
        Written { source, scratch: tempfile::tempdir().unwrap() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A data dir that does not exist yet.
    fn fresh_dir(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

#[tokio::test]
async fn an_imported_export_has_the_same_event_rows_byte_for_byte_and_the_same_checksums() {
    let source = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let app = serve(&source).await;
    write_history(&app).await;
    let live = scratch.path().join("live.ndjson");
    export_to(source.path(), &[], &live);
    stop(app).await;
    let stopped = scratch.path().join("stopped.ndjson");
    export_to(source.path(), &[], &stopped);
    let exported = std::fs::read_to_string(&stopped).unwrap();
    assert_eq!(std::fs::read_to_string(&live).unwrap(), exported, "an export beside the server is the same");
    assert!(exported.contains(LONG_NUMBER), "numbers keep every digit");
    assert!(exported.contains("[erased]") && !exported.contains("bea@x.org"), "payloads as erased");
    let source_rows = event_rows(source.path());
    assert_eq!(exported.lines().count(), source_rows.len());

    let target = scratch.path().join("target");
    let run =
        ctxd_with(&target, &["import", "-"], Stdio::from(File::open(&stopped).unwrap()), Stdio::piped());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events = source_rows.len();
    assert!(run.stdout.contains(&format!("imported {events} events")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("head {events} {}", head_hex(source.path()))), "{}", run.stdout);

    assert_eq!(event_rows(&target), source_rows, "the imported log is the source's, byte for byte");
    let (verified_source, verified_target) = (ctxd(source.path(), &["verify"]), ctxd(&target, &["verify"]));
    assert_eq!(verified_source.code, 0, "{}", verified_source.stdout);
    assert_eq!(verified_target.code, 0, "{}", verified_target.stdout);
    assert!(verified_target.stdout.contains("properties"), "{}", verified_target.stdout);
    assert_eq!(verified_target.stdout, verified_source.stdout, "the same checksums per table");
    let chain = ctxd(&target, &["verify", "--chain"]);
    assert_eq!(chain.code, 0, "the erasures' redacted payloads verify: {}", chain.stdout);
    assert!(chain.stdout.contains(&format!("chain intact: {events} events")), "{}", chain.stdout);
    let again = scratch.path().join("again.ndjson");
    export_to(&target, &[], &again);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), exported, "export, import, export is the identity");
}

#[tokio::test]
async fn an_import_into_a_store_that_holds_events_or_is_served_is_refused() {
    let written = Written::new().await;
    let file = written.file("all.ndjson");
    export_to(written.source.path(), &[], &file);
    let before = event_rows(written.source.path());

    let run = import(written.source.path(), &file);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("already holds events") && run.stderr.contains("empty store"),
        "{}",
        run.stderr
    );
    assert_eq!(event_rows(written.source.path()), before, "nothing was added");

    let served = tempfile::tempdir().unwrap();
    let app = serve(&served).await;
    let run = import(served.path(), &file);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("stop the server"), "{}", run.stderr);
    stop(app).await;
}

#[tokio::test]
async fn a_partial_or_altered_export_is_refused_and_leaves_the_store_empty() {
    let written = Written::new().await;
    let whole = written.file("whole.ndjson");
    export_to(written.source.path(), &[], &whole);
    let lines: Vec<String> = std::fs::read_to_string(&whole).unwrap().lines().map(String::from).collect();
    let target = written.fresh_dir("target");
    let refused = |name: &str, text: String, expected: &[&str]| {
        let file = written.file(name);
        std::fs::write(&file, text).unwrap();
        let run = import(&target, &file);
        assert_eq!(run.code, 2, "{name} is refused: {}", run.stdout);
        for part in expected {
            assert!(run.stderr.contains(part), "{name}: expected {part:?} in {}", run.stderr);
        }
        assert_eq!(count(&target, "events"), 0, "{name} left no event");
        assert_eq!(count(&target, "accounts"), 0, "{name} left no projection row");
    };

    let account = written.file("acme.ndjson");
    export_to(written.source.path(), &["--account", "acme"], &account);
    let acme = std::fs::read_to_string(&account).unwrap();
    refused("acme", acme, &["seq", "follows seq", "partial export", "--account"]);
    let after = written.file("after.ndjson");
    export_to(written.source.path(), &["--after", "3"], &after);
    refused(
        "after",
        std::fs::read_to_string(&after).unwrap(),
        &["line 1:", "seq 4, not 1", "partial export"],
    );

    let patched = lines.iter().position(|line| line.contains(r#""intent":"refund""#)).unwrap();
    let mut payload = lines.clone();
    payload[patched] = payload[patched].replace(r#""intent":"refund""#, r#""intent":"closed""#);
    let seq = patched + 1;
    refused("payload", payload.join("\n"), &[&format!("broken at seq {seq}"), "nothing was imported"]);

    let mut hash = lines.clone();
    let at = hash[4].find(r#""hash":""#).unwrap() + r#""hash":""#.len();
    let flipped = if &hash[4][at..at + 1] == "0" { "1" } else { "0" };
    hash[4].replace_range(at..at + 1, flipped);
    refused("hash", hash.join("\n"), &["broken at seq 5"]);

    let mut truncated = lines.clone();
    truncated[6].truncate(40);
    refused("truncated", truncated.join("\n"), &["line 7:", "not a well-formed event: EOF while parsing"]);
    let mut incomplete = lines.clone();
    incomplete[2] = incomplete[2].replace(r#","event_version":1"#, "");
    assert_ne!(incomplete[2], lines[2]);
    refused("incomplete", incomplete.join("\n"), &["line 3:", "missing field `event_version`"]);

    let run = import(&target, &whole);
    assert_eq!(run.code, 0, "the store a refused import left is still empty: {}", run.stderr);
    assert_eq!(event_rows(&target), event_rows(written.source.path()));
}

#[tokio::test]
async fn verify_chain_reports_the_head_then_the_first_row_edited_with_sql() {
    let written = Written::new().await;
    let dir = written.source.path();
    let run = ctxd(dir, &["verify", "--chain"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let events = event_rows(dir).len();
    let intact = format!("chain intact: {events} events, head {events} {}", head_hex(dir));
    assert!(run.stdout.contains(&intact), "{}", run.stdout);
    assert!(!ctxd(dir, &["verify"]).stdout.contains("chain"), "without --chain, no chain check");

    let conn = Connection::open(dir.join("ctxd.db")).unwrap();
    conn.execute_batch("DROP TRIGGER events_are_append_only_update").unwrap();
    let forged = r#"{"request_id":"forged","actor":"admin"}"#;
    conn.execute("UPDATE events SET meta = ?1 WHERE seq = ?2", rusqlite::params![forged, events]).unwrap();
    let run = ctxd(dir, &["verify"]);
    assert_eq!(run.code, 0, "the projections do not read meta: {}", run.stdout);
    let run = ctxd(dir, &["verify", "--chain"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("ok: the projections match"), "{}", run.stdout);
    let broken = format!("chain broken at seq {events}: its hash does not match");
    assert!(run.stdout.contains(&broken), "{}", run.stdout);

    let disputed: u64 =
        conn.query_row("SELECT seq FROM events WHERE data LIKE '%dispute%'", [], |row| row.get(0)).unwrap();
    conn.execute("UPDATE events SET data = replace(data, 'dispute', 'disputed') WHERE seq = ?1", [disputed])
        .unwrap();
    let run = ctxd(dir, &["verify", "--chain"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let broken = format!("chain broken at seq {disputed}: its payload was changed outside an erasure");
    assert!(run.stdout.contains(&broken), "the first bad seq: {}", run.stdout);
}

#[tokio::test]
async fn export_after_and_account_select_the_right_events_in_seq_order() {
    let written = Written::new().await;
    let conn = Connection::open(written.source.path().join("ctxd.db")).unwrap();
    let seqs = |condition: &str| -> Vec<u64> {
        let mut statement =
            conn.prepare(&format!("SELECT seq FROM events WHERE {condition} ORDER BY seq")).unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let exported = |args: &[&str]| -> Vec<u64> {
        let file = written.file("part.ndjson");
        export_to(written.source.path(), args, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].as_u64().unwrap())
            .collect()
    };
    let globex = seqs("account = 'globex'");
    assert!(!globex.is_empty() && globex.len() < seqs("1").len());
    assert_eq!(exported(&[]), seqs("1"));
    assert_eq!(exported(&["--after", "10"]), seqs("seq > 10"));
    assert_eq!(exported(&["--account", "globex"]), globex);
    assert_eq!(exported(&["--account", "acme", "--after", "20"]), seqs("account = 'acme' AND seq > 20"));
    assert_eq!(exported(&["--after", "100000"]), Vec::<u64>::new());
    assert_eq!(exported(&["--account", "nobody"]), Vec::<u64>::new());
}
