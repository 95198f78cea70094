//! The real `ctxd` binary: the CLI, signals, and a crash under load with `kill -9`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_ctxd");
const ADMIN: &str = "process-test-admin";

/// A `ctxd serve` child process on a random port.
pub(crate) struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_logging_to(data_dir, None)
    }

    /// Starts a server whose log (stderr) goes to `log_file`, or else to a pipe read and dropped.
    pub fn start_logging_to(data_dir: &Path, log_file: Option<&Path>) -> Server {
        Server::start_with_log_filter(data_dir, log_file, "info")
    }

    /// `start_logging_to` with `RUST_LOG` set to `filter`.
    pub fn start_with_log_filter(data_dir: &Path, log_file: Option<&Path>, filter: &str) -> Server {
        let mut command = Command::new(BINARY);
        if let Some(url) = crate::helpers::test_database(data_dir) {
            command.env("CTXD_DATABASE_URL", url);
        }
        let stderr = match log_file {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::piped(),
        };
        let mut child = command
            .env("CTXD_DATA_DIR", data_dir)
            .env("CTXD_ADDR", "127.0.0.1:0")
            .env("CTXD_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", filter)
            .stderr(stderr)
            .spawn()
            .expect("ctxd starts");
        let listening = |line: &str| {
            line.split("ctxd listening addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        };
        let addr = match log_file {
            Some(path) => {
                let started = std::time::Instant::now();
                loop {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    if let Some(addr) = text.lines().find_map(listening) {
                        break addr;
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "ctxd did not start: {text}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => {
                let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
                let addr = loop {
                    let line = lines.next().expect("ctxd logs that it listens").unwrap();
                    if let Some(addr) = listening(&line) {
                        break addr;
                    }
                };
                std::thread::spawn(move || for _ in lines {});
                addr
            }
        };
        Server { child, addr }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub(crate) async fn send(
    client: &Http,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut request = hyper::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub(crate) async fn create_account(client: &Http, addr: &str) -> String {
    let admin = format!("Bearer {ADMIN}");
    let auth = [("authorization", admin.as_str())];
    let (status, _) =
        send(client, addr, "POST", "/admin/accounts", &auth, r#"{"account_id":"acme"}"#).await.unwrap();
    assert_eq!(status, 201);
    let (status, body) = send(client, addr, "POST", "/admin/accounts/acme/api-key", &auth, "").await.unwrap();
    assert_eq!(status, 201);
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["api_key"].as_str().unwrap().to_string()
}

pub(crate) fn ctxd(data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    if let Some(url) = crate::helpers::test_database(data_dir) {
        command.env("CTXD_DATABASE_URL", url);
    }
    let output = command.env("CTXD_DATA_DIR", data_dir).env("RUST_LOG", "warn").args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9_and_verify_passes() {
    acknowledged_writes_survive("-KILL").await;
}

#[tokio::test]
async fn sigterm_under_load_loses_no_acknowledged_write() {
    acknowledged_writes_survive("-TERM").await;
}

/// Drives 16 concurrent writers, stops the server with `signal` mid-load, restarts it, and checks
/// that every write answered 204 is there and that `ctxd verify` passes.
async fn acknowledged_writes_survive(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let key = create_account(&client, &server.addr).await;

    let acknowledged: Arc<Mutex<HashMap<usize, Vec<usize>>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..16 {
        let (client, addr, key, acknowledged) =
            (client.clone(), server.addr.clone(), key.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let path = format!("/v1/account/acme/crash/w{writer}/properties");
                let body = format!(r#"{{"k{n}":{n}}}"#);
                match send(&client, &addr, "PATCH", &path, &[("maven-api-key", &key)], &body).await {
                    Ok((204, _)) => acknowledged.lock().unwrap().entry(writer).or_default().push(n),
                    // Refused while shutting down: not acknowledged, so not promised.
                    Ok((503, _)) => return,
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => return,
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().values().map(Vec::len).sum::<usize>() < 2000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(signal);
    for writer in writers {
        writer.await.unwrap();
    }
    if signal == "-TERM" {
        assert_eq!(server.child.wait().unwrap().code(), Some(0));
    }
    drop(server);

    let server = Server::start(dir.path());
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut total = 0;
    for (writer, keys) in &acknowledged {
        let path = format!("/v1/account/acme/crash/w{writer}/properties");
        let (status, body) =
            send(&client, &server.addr, "GET", &path, &[("maven-api-key", &key)], "").await.unwrap();
        assert_eq!(status, 200);
        let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
        for n in keys {
            assert_eq!(stored[format!("k{n}")], *n, "acknowledged write k{n} of writer {writer} is lost");
        }
        total += keys.len();
    }
    assert!(total >= 2000);
    let (code, stdout, _) = ctxd(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test]
async fn sigterm_and_sigint_drain_and_exit_0_with_the_wal_checkpointed() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path());
        let client: Http = Client::builder(TokioExecutor::new()).build_http();
        let key = create_account(&client, &server.addr).await;
        let path = "/v1/account/acme/n/s/properties";
        let (status, _) =
            send(&client, &server.addr, "PATCH", path, &[("maven-api-key", &key)], r#"{"a":1}"#)
                .await
                .unwrap();
        assert_eq!(status, 204);
        server.signal(signal);
        let status = server.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "exit status after {signal}");
        let wal = dir.path().join("ctxd.db-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "the WAL was checkpointed after {signal}"
        );
        let (code, stdout, _) = ctxd(dir.path(), &["verify"]);
        assert_eq!(code, 0, "{stdout}");
    }
}

#[tokio::test]
async fn the_cli_creates_accounts_issues_keys_rebuilds_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ctxd(dir.path(), &["admin", "create-account", "acme"]).0, 0);
    let (code, key, _) = ctxd(dir.path(), &["admin", "issue-key", "acme"]);
    assert_eq!(code, 0);
    let key = key.trim().to_string();
    let (code, _, stderr) = ctxd(dir.path(), &["admin", "issue-key", "ghost"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not found"), "{stderr}");

    let server = Server::start(dir.path());
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    for n in 0..20 {
        let body = format!(r#"{{"n":{n}}}"#);
        let (status, _) = send(
            &client,
            &server.addr,
            "PATCH",
            &format!("/v1/account/acme/ns/s{}/properties", n % 3),
            &[("maven-api-key", &key)],
            &body,
        )
        .await
        .unwrap();
        assert_eq!(status, 204);
    }
    let (code, _, stderr) = ctxd(dir.path(), &["admin", "create-account", "other"]);
    if crate::helpers::on_postgres() {
        // Nodes share a PostgreSQL store: the CLI is one more of its writers.
        assert_eq!(code, 0, "{stderr}");
    } else {
        assert_ne!(code, 0);
        assert!(
            stderr.contains("/admin/accounts"),
            "points to the admin API while the server runs: {stderr}"
        );
    }
    let (code, stdout, _) = ctxd(dir.path(), &["verify"]);
    assert_eq!(code, 0, "verify runs beside a live server: {stdout}");
    drop(server);

    let (code, stdout, _) = ctxd(dir.path(), &["rebuild"]);
    assert_eq!(code, 0);
    let events = if crate::helpers::on_postgres() { 24 } else { 23 };
    assert!(stdout.contains(&format!("from {events} events")), "{stdout}");
    assert_eq!(ctxd(dir.path(), &["verify"]).0, 0);

    let conn = crate::helpers::raw_connection(dir.path());
    conn.execute("UPDATE properties SET value = '999' WHERE session_id = 's1'", []).unwrap();
    drop(conn);
    let (code, stdout, _) = ctxd(dir.path(), &["verify"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("MISMATCH: table properties"), "{stdout}");

    let conn = crate::helpers::raw_connection(dir.path());
    let error = conn.execute("DELETE FROM events WHERE seq = 1", []).unwrap_err();
    assert!(error.to_string().contains("append-only"));
}

#[tokio::test]
async fn a_database_from_a_newer_binary_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ctxd(dir.path(), &["admin", "create-account", "acme"]).0, 0);
    let conn = crate::helpers::raw_connection(dir.path());
    conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 'later')", []).unwrap();
    drop(conn);
    let (code, _, stderr) = ctxd(dir.path(), &["admin", "create-account", "other"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("newer than this binary"), "{stderr}");
}

#[test]
fn under_a_low_open_file_limit_the_server_takes_fewer_connections_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // A hard limit of 700 files: the default 4096 connections would leave reads none.
    let mut child = Command::new("bash")
        .args(["-c", &format!("ulimit -Sn 300 && ulimit -Hn 700 && exec {BINARY}")])
        .env("CTXD_DATA_DIR", dir.path())
        .env("CTXD_ADDR", "127.0.0.1:0")
        .env("CTXD_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctxd starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("fewer connections than asked") {
            warned = Some(line.clone());
        }
        if line.contains("ctxd listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warned = warned.expect("the server says it takes fewer connections");
    // The soft limit was raised to the hard one, and 512 files are kept for the store.
    assert!(warned.contains("open_files=700") && warned.contains("fits=188"), "{warned}");
}

#[test]
fn an_empty_admin_token_file_is_refused_with_its_path_and_the_store_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The admin CLI opens (creates) the store: its files and directory are the owner's alone.
    assert_eq!(ctxd(&data_dir, &["admin", "create-account", "acme"]).0, 0);
    if crate::helpers::test_database(&data_dir).is_none() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        for file in ["ctxd.db", "ctxd.lock"] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
    }

    // A 0-byte admin token (as a start on a full disk could leave) stops the server at once,
    // naming the file, instead of serving an admin API nobody can use.
    let token = data_dir.join("admin-token");
    std::fs::write(&token, "").unwrap();
    let mut command = Command::new(BINARY);
    if let Some(url) = crate::helpers::test_database(&data_dir) {
        command.env("CTXD_DATABASE_URL", url);
    }
    let mut child = command
        .env("CTXD_DATA_DIR", &data_dir)
        .env_remove("CTXD_ADMIN_TOKEN")
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server started on an empty admin token");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&token.display().to_string()) && stderr.contains("empty"), "{stderr}");
}
