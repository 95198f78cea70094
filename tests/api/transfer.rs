//! `ctxd export`, `ctxd import` and `ctxd verify --chain`, run as the real binary on stores
//! written over HTTP: a log moves to a fresh data dir byte for byte and verifies the same there,
//! an account's log moves to a store that holds others, a partial or altered export is refused,
//! and an edited row breaks its account's chain where it was edited.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ctxd::clock::ManualClock;
use ctxd::store::db::Value as Column;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::{TestApp, raw_connection, spawn_app_in};
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
    let mut command = Command::new(BINARY);
    if let Some(url) = crate::helpers::test_database(data_dir) {
        command.env("CTXD_DATABASE_URL", url);
    }
    let output = command
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

/// Every column of every event row but the internal store-wide id (which a PostgreSQL store
/// draws from a sequence), as stored, in each account's order; the payload as its JSON text
/// (SQLite stores most payloads compressed, an erasure's redacted ones as text).
fn event_rows(data_dir: &Path) -> Vec<Vec<Column>> {
    let conn = raw_connection(data_dir);
    let mut statement = conn
        .prepare(
            "SELECT account, seq, stream, stream_version, event_type, event_version, data, meta, recorded_at,
                    payload_hash, hash, payload_salt
             FROM events ORDER BY account, seq",
        )
        .unwrap();
    let columns = statement.column_count();
    let all: i64 = conn
        .query_row(
            conn.sql(
                "SELECT count(*) FROM pragma_table_info('events')",
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events'",
            ),
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!((columns, all), (12, 13), "every column of events but the id is compared");
    statement
        .query_map([], |row| {
            let column = |index| match index {
                6 => Ok(Column::Text(crate::helpers::stored_text(row, index)?)),
                _ => row.get(index),
            };
            (0..columns).map(column).collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Rows of a projection table, to see that a refused import left nothing behind.
fn count(data_dir: &Path, table: &str) -> i64 {
    let conn = raw_connection(data_dir);
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

/// The seq and the hex of the hash of `account`'s last event: its chain's head.
fn head(data_dir: &Path, account: &str) -> (u64, String) {
    let conn = raw_connection(data_dir);
    let (seq, hash): (u64, Vec<u8>) = conn
        .query_row(
            "SELECT seq, hash FROM events WHERE account = ?1 ORDER BY seq DESC LIMIT 1",
            [account],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    (seq, hash.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// What `ctxd import` and `ctxd verify --chain` print for an account whose chain is intact.
fn intact_line(data_dir: &Path, account: &str) -> String {
    let (seq, hash) = head(data_dir, account);
    format!("account {account}: chain intact, {seq} events, head {seq} {hash}")
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
/// customer, whose redacted payloads the chain accounts for) and a little for `globex`; answers
/// acme's API key.
async fn write_history(app: &TestApp) -> String {
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
    cs.key.clone()
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
    assert!(run.stdout.contains(&format!("imported {events} events of 2 accounts")), "{}", run.stdout);
    for account in ["acme", "globex"] {
        let (seq, hash) = head(source.path(), account);
        let imported = format!("account {account}: {seq} events, chain intact, head {seq} {hash}");
        assert!(run.stdout.contains(&imported), "{}", run.stdout);
    }

    assert_eq!(event_rows(&target), source_rows, "the imported log is the source's, byte for byte");
    let (verified_source, verified_target) = (ctxd(source.path(), &["verify"]), ctxd(&target, &["verify"]));
    assert_eq!(verified_source.code, 0, "{}", verified_source.stdout);
    assert_eq!(verified_target.code, 0, "{}", verified_target.stdout);
    assert!(verified_target.stdout.contains("properties"), "{}", verified_target.stdout);
    assert_eq!(verified_target.stdout, verified_source.stdout, "the same checksums per table");
    let chain = ctxd(&target, &["verify", "--chain"]);
    assert_eq!(chain.code, 0, "the erasures' redacted payloads verify: {}", chain.stdout);
    let intact = format!("chains intact: 2 accounts, {events} events");
    assert!(chain.stdout.contains(&intact), "{}", chain.stdout);
    assert!(chain.stdout.contains(&intact_line(source.path(), "acme")), "{}", chain.stdout);
    let again = scratch.path().join("again.ndjson");
    export_to(&target, &[], &again);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), exported, "export, import, export is the identity");
}

#[tokio::test]
async fn an_import_of_an_account_the_store_holds_or_into_a_served_store_is_refused() {
    let written = Written::new().await;
    let file = written.file("all.ndjson");
    export_to(written.source.path(), &[], &file);
    let before = event_rows(written.source.path());

    let run = import(written.source.path(), &file);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("already holds account acme"), "{}", run.stderr);
    assert_eq!(event_rows(written.source.path()), before, "nothing was added");

    // Only globex is new to a store that holds acme: the import is refused whole all the same.
    let acme_only = written.fresh_dir("acme-only");
    let acme = written.file("acme.ndjson");
    export_to(written.source.path(), &["--account", "acme"], &acme);
    assert_eq!(import(&acme_only, &acme).code, 0);
    let run = import(&acme_only, &file);
    assert!(run.code == 2 && run.stderr.contains("already holds account acme"), "{}", run.stderr);
    assert_eq!(count(&acme_only, "accounts"), 1, "globex was not brought in");

    // An account whose id reads the same as one the store holds is refused as at creation.
    let look_alike = written.fresh_dir("look-alike");
    assert_eq!(ctxd(&look_alike, &["admin", "create-account", "ACME"]).code, 0);
    let run = import(&look_alike, &acme);
    assert!(run.code == 2 && run.stderr.contains("reads the same as account ACME"), "{}", run.stderr);
    assert_eq!(count(&look_alike, "accounts"), 1, "acme was not brought in");

    let served = tempfile::tempdir().unwrap();
    let app = serve(&served).await;
    let run = import(served.path(), &file);
    if crate::helpers::on_postgres() {
        // Nodes share a PostgreSQL store while they serve: an import of new accounts is one more
        // writer, and an account it brings is refused as above if it exists by then.
        assert_eq!(run.code, 0, "{}", run.stderr);
    } else {
        assert_eq!(run.code, 2);
        assert!(run.stderr.contains("stop the server"), "{}", run.stderr);
    }
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
        if crate::helpers::on_postgres() {
            assert_eq!(count(&target, "events"), 0, "{name} left no event");
            assert_eq!(count(&target, "accounts"), 0, "{name} left no projection row");
        } else {
            assert!(!target.exists(), "{name}: the data dir the import created is gone");
        }
    };

    let after = written.file("after.ndjson");
    export_to(written.source.path(), &["--account", "acme", "--after", "3"], &after);
    refused(
        "after",
        std::fs::read_to_string(&after).unwrap(),
        &["line 1:", "first event of account \"acme\" has seq 4, not 1", "--after"],
    );
    let mut gap = lines.clone();
    let dropped = gap.iter().position(|line| line.starts_with(r#"{"seq":5,"account":"acme""#)).unwrap();
    gap.remove(dropped);
    refused("gap", gap.join("\n"), &["of account \"acme\" follows its seq", "consecutive"]);

    let seq_of =
        |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].as_u64().unwrap();
    let patched = lines.iter().position(|line| line.contains(r#""intent":"refund""#)).unwrap();
    let mut payload = lines.clone();
    payload[patched] = payload[patched].replace(r#""intent":"refund""#, r#""intent":"closed""#);
    let seq = seq_of(&lines[patched]);
    let broken = format!("account acme: the imported hash chain is broken at seq {seq}");
    refused("payload", payload.join("\n"), &[&broken, "nothing was imported"]);

    let mut hash = lines.clone();
    let at = hash[4].find(r#""hash":""#).unwrap() + r#""hash":""#.len();
    let flipped = if &hash[4][at..at + 1] == "0" { "1" } else { "0" };
    hash[4].replace_range(at..at + 1, flipped);
    refused("hash", hash.join("\n"), &[&format!("broken at seq {}", seq_of(&lines[4]))]);

    // Every field is one that ctxd could have written: an account id it accepts, a time as it
    // writes times, stream versions 1, 2, 3 … (a head signed for an account id holding a line
    // break could pass for another text).
    let line_of = |account: &str, seq: u64| {
        lines
            .iter()
            .position(|line| line.starts_with(&format!(r#"{{"seq":{seq},"account":"{account}""#)))
            .unwrap()
    };
    let mut renamed = lines.clone();
    for line in renamed.iter_mut().filter(|line| line.contains(r#""account":"globex""#)) {
        *line = line.replace(r#""account":"globex""#, r#""account":"globex\nseq: 999""#);
    }
    refused("renamed", renamed.join("\n"), &["account must not contain control characters"]);
    let mut time = lines.clone();
    let at = line_of("acme", 3);
    let recorded_at = time[at].find(r#""recorded_at":""#).unwrap() + r#""recorded_at":""#.len();
    time[at].replace_range(recorded_at..recorded_at + 4, "99x9");
    refused("time", time.join("\n"), &[&format!("line {}:", at + 1), "is not a time as ctxd writes it"]);
    let mut version = lines.clone();
    let at = line_of("acme", 1);
    version[at] = version[at].replace(r#""stream_version":1"#, r#""stream_version":7"#);
    refused(
        "version",
        version.join("\n"),
        &["stream_version 7 of stream \"account/acme\" follows its version 0"],
    );

    // A log cannot reach into another account: a stream or an account event naming another
    // account is refused (an API key for acme from inside globex's log, say).
    let mut foreign = lines.clone();
    let last = foreign.len() - 1;
    foreign[last] = foreign[last].replace(r#""stream":"ctx/acme/"#, r#""stream":"ctx/globex/"#);
    assert_ne!(foreign[last], lines[last]);
    refused("foreign", foreign.join("\n"), &["is not one of account \"acme\"'s"]);
    let mut key = lines.clone();
    let issued = key
        .iter()
        .position(|line| line.contains("ApiKeyIssued") && line.contains(r#""account":"globex""#))
        .unwrap();
    key[issued] = key[issued].replace(r#""account_id":"globex""#, r#""account_id":"acme""#);
    refused("key", key.join("\n"), &[&format!("line {}:", issued + 1), "not one of account \"globex\"'s"]);

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
    for account in ["acme", "globex"] {
        assert!(run.stdout.contains(&intact_line(dir, account)), "{}", run.stdout);
    }
    assert!(!ctxd(dir, &["verify"]).stdout.contains("chain"), "without --chain, no chain check");

    let conn = raw_connection(dir);
    crate::helpers::allow_editing_events(&conn);
    let forged = r#"{"request_id":"forged","actor":"admin"}"#;
    let (last, _) = head(dir, "globex");
    conn.execute(
        "UPDATE events SET meta = ?1 WHERE account = 'globex' AND seq = ?2",
        ctxd::params![forged, last],
    )
    .unwrap();
    let run = ctxd(dir, &["verify"]);
    assert_eq!(run.code, 0, "the projections do not read meta: {}", run.stdout);
    let run = ctxd(dir, &["verify", "--chain"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("ok: the projections match"), "{}", run.stdout);
    let broken = format!("account globex: chain broken at seq {last}: its hash does not match");
    assert!(run.stdout.contains(&broken), "{}", run.stdout);
    assert!(run.stdout.contains(&intact_line(dir, "acme")), "acme's chain is not globex's: {}", run.stdout);

    let disputed = crate::helpers::seq_of_payload_with(&conn, "acme", "dispute");
    crate::helpers::edit_payload(&conn, "acme", disputed, "dispute", "disputed");
    let run = ctxd(dir, &["verify", "--chain"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let broken =
        format!("account acme: chain broken at seq {disputed}: its payload was changed outside an erasure");
    assert!(run.stdout.contains(&broken), "the first bad seq: {}", run.stdout);
}

#[tokio::test]
async fn export_after_and_account_select_the_right_events_in_seq_order() {
    let written = Written::new().await;
    let conn = raw_connection(written.source.path());
    let events = |condition: &str, order: &str| -> Vec<(String, u64)> {
        let sql = format!("SELECT account, seq FROM events WHERE {condition} ORDER BY {order}");
        let mut statement = conn.prepare(&sql).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let exported = |args: &[&str]| -> Vec<(String, u64)> {
        let file = written.file("part.ndjson");
        export_to(written.source.path(), args, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|line| (line["account"].as_str().unwrap().to_string(), line["seq"].as_u64().unwrap()))
            .collect()
    };
    let globex = events("account = 'globex'", "seq");
    let positions: Vec<u64> = globex.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(positions, (1..=globex.len() as u64).collect::<Vec<_>>(), "globex's own positions");
    assert_eq!(exported(&[]), events("true", "id"), "a store's export is in commit order");
    assert_eq!(exported(&["--account", "globex"]), globex);
    assert_eq!(
        exported(&["--account", "acme", "--after", "20"]),
        events("account = 'acme' AND seq > 20", "seq")
    );
    assert_eq!(exported(&["--account", "acme", "--after", "100000"]), Vec::new());
    assert_eq!(exported(&["--account", "nobody"]), Vec::new());
    let run = ctxd(written.source.path(), &["export", "--after", "3"]);
    assert_eq!(run.code, 2, "--after names a seq of an account's log: {}", run.stderr);
    assert!(run.stderr.contains("--account"), "{}", run.stderr);
}

#[test]
fn read_only_commands_refuse_a_store_that_is_not_migrated_yet() {
    if crate::helpers::on_postgres() {
        return; // an old SQLite file: nothing of it is on PostgreSQL
    }
    // A store of the release before per-account logs, as it wrote it: reading its columns as
    // this release's would label the old global seqs as account positions.
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-schema-6/ctxd.db");
    std::fs::copy(fixture, dir.path().join("ctxd.db")).unwrap();
    for args in [&["export", "--account", "acme"][..], &["verify", "--chain"]] {
        let run = ctxd(dir.path(), args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("schema version 6") && run.stderr.contains("migrate"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?} wrote nothing: {}", run.stdout);
    }
    assert_eq!(ctxd(dir.path(), &["rebuild"]).code, 0, "a writing command migrates it");
    assert_eq!(ctxd(dir.path(), &["verify", "--chain"]).code, 0);
}

#[tokio::test]
async fn an_account_moves_to_a_store_with_other_accounts_and_serves_there_with_its_own_key() {
    // The source store: acme's history beside globex's. acme's key is the one Cs made.
    let source = tempfile::tempdir().unwrap();
    let app = serve(&source).await;
    let key = write_history(&app).await;
    let service = app.call(&key, "GET", "/genesys/1/cs/customers/c1/services", "").await;
    let service = service.json()[0]["service_id"].as_str().unwrap().to_string();
    let (last, _) = head(source.path(), "acme");
    let history =
        app.call(&key, "GET", &format!("/genesys/1/cs/services/{service}/history"), "").await.json();
    let inside = history["history"][1]["seq"].as_u64().unwrap();
    let reads = [
        format!("{A}/bots/conv-1/properties"),
        format!("{A}/bots/conv-1/properties?as_of_seq=4"),
        format!("{A}/bots/conv-1/history"),
        format!("{A}/bots/conv-4/properties?as_of_seq={last}"),
        format!("/genesys/1/cs/services/{service}?completed_states=true"),
        format!("/genesys/1/cs/services/{service}?as_of_seq={inside}"),
        format!("/genesys/1/cs/services/{service}/history"),
        format!("{A}/events?after=3&limit=1000"),
        format!("{A}/audit/verify"),
    ];
    let mut answers = Vec::new();
    for path in &reads {
        let reply = app.call(&key, "GET", path, "").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        answers.push(reply.body);
    }
    let acme_head = app.call(&key, "GET", &format!("{A}/audit/head"), "").await.json();
    stop(app).await;
    let file = source.path().join("acme.ndjson");
    export_to(source.path(), &["--account", "acme"], &file);

    // The target store already serves another tenant, whose log goes on beside acme's.
    let target = tempfile::tempdir().unwrap();
    let app = serve(&target).await;
    let initech = app.account("initech").await;
    stop(app).await;
    let run = import(target.path(), &file);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&format!("account acme: {last} events, chain intact")), "{}", run.stdout);
    let chain = ctxd(target.path(), &["verify", "--chain"]);
    assert_eq!(chain.code, 0, "{}", chain.stdout);
    assert!(chain.stdout.contains("chains intact: 2 accounts"), "{}", chain.stdout);
    assert_eq!(ctxd(target.path(), &["verify"]).code, 0);

    let app = serve(&target).await;
    for (path, before) in reads.iter().zip(&answers) {
        let reply = app.call(&key, "GET", path, "").await;
        assert_eq!((reply.status, &reply.body), (200, before), "{path} answers as before the move");
    }
    let moved_head = app.call(&key, "GET", &format!("{A}/audit/head"), "").await.json();
    assert_eq!((&moved_head["seq"], &moved_head["hash"]), (&acme_head["seq"], &acme_head["hash"]));
    // acme writes on from its own position; initech's log is untouched by the move.
    let reply = app.call(&key, "PATCH", &format!("{A}/bots/conv-1/properties"), r#"{"moved":true}"#).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let feed = app.call(&key, "GET", &format!("{A}/events?after={last}"), "").await.json();
    assert_eq!(feed["events"][0]["seq"], last + 1, "{feed}");
    let theirs = app.call(&initech, "GET", "/v1/account/initech/events", "").await.json();
    let seqs: Vec<u64> =
        theirs["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    app.call(&initech, "GET", &reads[0], "").await.assert_error(403);
    stop(app).await;
}

#[tokio::test]
async fn a_store_moves_from_sqlite_to_postgresql_and_back_with_the_same_log_and_checksums() {
    if !crate::helpers::on_postgres() {
        return; // needs both backends: CTXD_TEST_DATABASE_URL, as .ci/run gives
    }
    let sqlite_only = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("sqlite-only"), "").unwrap();
    };
    let source = tempfile::tempdir().unwrap();
    sqlite_only(source.path());
    let app = serve(&source).await;
    write_history(&app).await;
    stop(app).await;
    assert!(source.path().join("ctxd.db").exists(), "the source is a SQLite store");
    let scratch = tempfile::tempdir().unwrap();
    let from_sqlite = scratch.path().join("from-sqlite.ndjson");
    export_to(source.path(), &[], &from_sqlite);

    let postgres = scratch.path().join("postgres");
    assert_eq!(import(&postgres, &from_sqlite).code, 0);
    assert!(!postgres.join("ctxd.db").exists(), "the target is a PostgreSQL store");
    let (on_sqlite, on_postgres) = (ctxd(source.path(), &["verify"]), ctxd(&postgres, &["verify"]));
    assert_eq!((on_sqlite.code, on_postgres.code), (0, 0), "{}\n{}", on_sqlite.stdout, on_postgres.stdout);
    assert_eq!(on_postgres.stdout, on_sqlite.stdout, "the same checksums per table on both backends");
    assert_eq!(ctxd(&postgres, &["verify", "--chain"]).code, 0);

    let from_postgres = scratch.path().join("from-postgres.ndjson");
    export_to(&postgres, &[], &from_postgres);
    let back = scratch.path().join("back");
    sqlite_only(&back);
    assert_eq!(import(&back, &from_postgres).code, 0);
    assert_eq!(event_rows(&back), event_rows(source.path()), "the log came back byte for byte");
    assert_eq!(ctxd(&back, &["verify"]).stdout, on_sqlite.stdout);
}

#[tokio::test]
async fn compact_returns_freed_space_and_the_store_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir).await;
    let key = app.account("acme").await;
    let value = format!("\"{}\"", "v".repeat(1000));
    for batch in 0..80 {
        let properties: Vec<String> = (0..20).map(|n| format!("\"p{batch}-{n}\":{value}")).collect();
        let body = format!("{{{}}}", properties.join(","));
        let path = format!("/v1/account/acme/ns/s{}/properties", batch % 4);
        assert_eq!(app.call(&key, "PATCH", &path, &body).await.status, 204);
    }
    let deleted = app.call(&key, "DELETE", "/v1/account/acme/ns", "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    stop(app).await;

    let run = ctxd(dir.path(), &["compact"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sizes: Vec<f64> = run.stdout.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    assert!(run.stdout.starts_with("compacted the store from"), "{}", run.stdout);
    if !crate::helpers::on_postgres() {
        // The namespace's 1,600 properties of 1 KB were freed pages; now they are gone from the file.
        assert!(sizes[0] - sizes[1] >= 1.5, "{}", run.stdout);
    }
    let verified = ctxd(dir.path(), &["verify", "--chain"]);
    assert_eq!(verified.code, 0, "{}", verified.stdout);
}

#[tokio::test]
async fn a_failed_import_into_a_new_data_dir_leaves_nothing_behind() {
    if crate::helpers::on_postgres() {
        return; // there, the data dir holds the test database's address before the import
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new");
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, "{\"seq\":1}\n").unwrap();
    let run = import(&target, &broken);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
    assert!(!target.exists(), "the store the import created is gone with its data dir");
    let run = import(&target, &dir.path().join("missing.ndjson"));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("missing.ndjson"), "{}", run.stderr);
    assert!(!target.exists());
}
