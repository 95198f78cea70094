//! Faults of the machine, for real: a full disk (a small tmpfs mounted by the test, as root)
//! and a damaged store file. Every write acknowledged before the fault is there after it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::helpers::on_postgres;
use crate::process::{Http, Server, create_account, ctxd, send};

/// A tmpfs of `megabytes` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Tmpfs {
        Tmpfs::mount_with(&format!("size={megabytes}m,mode=0700"))
    }

    fn mount_with(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "this test mounts a tmpfs: run it as root");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system of `path` with a file at `path`, leaving `spare` bytes free.
fn fill(path: &Path, spare: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    let length = file.metadata().unwrap().len();
    file.set_len(length.saturating_sub(spare)).unwrap();
}

#[tokio::test]
async fn a_full_disk_answers_507_once_logged_and_writes_resume_when_space_returns() {
    if on_postgres() {
        // PostgreSQL's disk: a cluster of the test's own on a small tmpfs.
        let disk = Tmpfs::mount(96);
        let cluster = Cluster::start(disk.path(), 25434);
        fill_the_disk_and_free_it(&disk, Where::Postgres(&cluster.url)).await;
        return;
    }
    // Once with the server's own log elsewhere, to count its lines; once with it on the full
    // disk too, where a server must go on without being able to log.
    fill_the_disk_and_free_it(&Tmpfs::mount(16), Where::Sqlite { log_on_full_disk: false }).await;
    fill_the_disk_and_free_it(&Tmpfs::mount(16), Where::Sqlite { log_on_full_disk: true }).await;
}

/// Where the store whose disk fills lives.
enum Where<'a> {
    /// In the data dir on the full disk, the server's log there too or not.
    Sqlite { log_on_full_disk: bool },
    /// In a PostgreSQL cluster whose data directory is on the full disk.
    Postgres(&'a str),
}

/// A PostgreSQL cluster of a test's own (`.ci/postgres`), stopped when dropped.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn start(dir: &Path, port: u16) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres");
        let output = Command::new(&script).arg("start").arg(dir).arg(port.to_string()).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let url = String::from_utf8(output.stdout).unwrap().trim().to_string();
        Cluster { dir: dir.to_path_buf(), url }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
    }
}

async fn fill_the_disk_and_free_it(disk: &Tmpfs, store: Where<'_>) {
    let elsewhere = tempfile::tempdir().unwrap();
    let (data_dir, log_file, log_on_full_disk) = match store {
        Where::Sqlite { log_on_full_disk: true } => {
            (disk.path().join("data"), disk.path().join("ctxd.log"), true)
        }
        Where::Sqlite { log_on_full_disk: false } => {
            (disk.path().join("data"), elsewhere.path().join("ctxd.log"), false)
        }
        Where::Postgres(url) => {
            // The test helpers take the store's URL from this file in the data dir.
            let data_dir = elsewhere.path().join("data");
            std::fs::create_dir_all(&data_dir).unwrap();
            std::fs::write(data_dir.join("test-database-url"), url).unwrap();
            (data_dir, elsewhere.path().join("ctxd.log"), false)
        }
    };
    let server = Server::start_logging_to(&data_dir, Some(&log_file));
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let (addr, key) = (server.addr.clone(), create_account(&client, &server.addr).await);
    let auth = [("maven-api-key", key.as_str())];
    // Random, so that the log's compression keeps the size of every write the same.
    let random: String = (0..512).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let value = format!("\"{random}\"");
    let write = |n: usize| {
        let (client, addr, value) = (client.clone(), addr.clone(), value.clone());
        let key = key.clone();
        async move {
            let path = format!("/v1/account/acme/disk/s{n}/properties/v");
            let sent = send(&client, &addr, "PUT", &path, &[("maven-api-key", key.as_str())], &value).await;
            sent.unwrap_or_else(|error| panic!("write {n}: {error}"))
        }
    };

    fill(&disk.path().join("ballast"), 2 << 20);
    let mut acknowledged = Vec::new();
    let refused = loop {
        let n = acknowledged.len();
        assert!(n < 5000, "5000 writes of 16 KiB fit in 2 MiB");
        match write(n).await {
            (204, _) => acknowledged.push(n),
            (status, body) => break (status, body),
        }
    };
    assert_eq!(refused.0, 507, "{}", refused.1);
    let message: serde_json::Value = serde_json::from_str(&refused.1).unwrap();
    assert!(message["message"].as_str().unwrap().contains("disk is full"), "{message}");
    // Every write meets the same answer, quickly, and the server stays ready for reads.
    for n in 0..20 {
        let started = Instant::now();
        assert_eq!(write(10_000 + n).await.0, 507);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let (status, body) = send(&client, &addr, "GET", "/readyz", &[], "").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    let read = send(&client, &addr, "GET", "/v1/account/acme/disk/s0/properties", &auth, "").await.unwrap();
    assert_eq!(read.0, 200, "{}", read.1);

    std::fs::remove_file(disk.path().join("ballast")).unwrap();
    let started = Instant::now();
    while send(&client, &addr, "GET", "/readyz", &[], "").await.unwrap().0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "ready again once space returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 20_000..20_010 {
        assert_eq!(write(n).await.0, 204);
        acknowledged.push(n);
    }
    if !log_on_full_disk {
        let log = std::fs::read_to_string(&log_file).unwrap();
        let said = |what: &str| log.lines().filter(|line| line.contains(what)).count();
        assert_eq!(said("the disk is full"), 1, "one line per episode:\n{log}");
        assert_eq!(said("space has returned"), 1, "{log}");
    }
    server.signal("-TERM");
    let mut server = server;
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    drop(server);

    let server = Server::start(&data_dir);
    for n in acknowledged {
        let path = format!("/v1/account/acme/disk/s{n}/properties/v");
        let (status, body) = send(&client, &server.addr, "GET", &path, &auth, "").await.unwrap();
        assert_eq!((status, body.len()), (200, value.len()), "acknowledged write {n} is there");
    }
    drop(server);
    let (code, stdout, stderr) = ctxd(&data_dir, &["verify", "--chain"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A store with one account and a few writes, stopped (its WAL checkpointed into the file).
async fn stopped_store_with_writes(data_dir: &Path) {
    let mut server = Server::start(data_dir);
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let key = create_account(&client, &server.addr).await;
    for n in 0..50 {
        let path = format!("/v1/account/acme/ns/s{n}/properties");
        let body = format!(r#"{{"note":"canary-{n:04}"}}"#);
        let (status, _) =
            send(&client, &server.addr, "PATCH", &path, &[("maven-api-key", &key)], &body).await.unwrap();
        assert_eq!(status, 204);
    }
    server.signal("-TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

/// Where `needle` starts in `haystack`, each time.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect()
}

/// `ctxd serve` on `data_dir`, which must exit by itself within 10 s: its exit code and log.
fn serve_until_it_exits(data_dir: &Path) -> (Option<i32>, String) {
    let log_file = tempfile::NamedTempFile::new().unwrap();
    let log = log_file.path();
    let mut child = Command::new(crate::process::BINARY)
        .env("CTXD_DATA_DIR", data_dir)
        .env("CTXD_ADDR", "127.0.0.1:0")
        .env("CTXD_ADMIN_TOKEN", "faults-test-admin")
        .stderr(log_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("ctxd served a damaged store: {}", std::fs::read_to_string(log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), std::fs::read_to_string(log).unwrap())
}

/// The page size and the root page of `index` in the SQLite file at `path`.
fn page_of(path: &Path, index: &str) -> (u64, u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let size: u64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0)).unwrap();
    let root: u64 = conn
        .query_row("SELECT rootpage FROM sqlite_master WHERE name = ?1", [index], |row| row.get(0))
        .unwrap();
    (size, root)
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_damaged_store_is_refused_at_start_and_by_verify_naming_the_file() {
    if on_postgres() {
        return; // the file under test is SQLite's
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    stopped_store_with_writes(&data_dir).await;
    let file = data_dir.join("ctxd.db");
    // A zeroed index page: before, the server started, said ready and failed every write.
    let indexes: Vec<String> = {
        let conn = rusqlite::Connection::open(&file).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name",
            )
            .unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let (size, root) = page_of(&file, &indexes[0]);
    overwrite(&file, (root - 1) * size, &vec![0; size as usize]);

    let (code, log) = serve_until_it_exits(&data_dir);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("is damaged") && log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains(".recover"), "it says what to do: {log}");
    let (code, stdout, _) = ctxd(&data_dir, &["verify", "--chain"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("DAMAGED") && stdout.contains(&file.display().to_string()), "{stdout}");

    // `--integrity-check off` (for a large store on a slow disk) starts without the check, and
    // says so.
    let mut child = Command::new(crate::process::BINARY)
        .env("CTXD_DATA_DIR", &data_dir)
        .env("CTXD_ADDR", "127.0.0.1:0")
        .env("CTXD_ADMIN_TOKEN", "faults-test-admin")
        .env("CTXD_INTEGRITY_CHECK", "off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let log: Vec<String> =
        lines.map_while(Result::ok).take_while(|line| !line.contains("ctxd listening")).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.iter().any(|line| line.contains("without SQLite's quick check")), "{log:?}");
}

#[tokio::test]
async fn flipped_bytes_in_a_page_header_or_in_a_value_are_found() {
    if on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    stopped_store_with_writes(&data_dir).await;
    let file = data_dir.join("ctxd.db");
    let bytes = std::fs::read(&file).unwrap();
    // In a value, in the log and in the projection: the file's structure is sound, so SQLite's
    // checks pass, but the chain breaks where the payload changed, and `verify --chain` says so.
    // The projection keeps the value as text; the log keeps the payload compressed, so its
    // stored bytes are sought in the file and the one in their middle flipped.
    let in_projection = find_all(&bytes, b"canary-0007");
    assert_eq!(in_projection.len(), 1, "the value is in the projection");
    overwrite(&file, in_projection[0] as u64 + 7, b"9");
    let stored: Vec<u8> = {
        let conn = crate::helpers::raw_connection(&data_dir);
        let seq = crate::helpers::seq_of_payload_with(&conn, "acme", "canary-0007");
        conn.query_row("SELECT data FROM events WHERE account = 'acme' AND seq = ?1", [seq], |row| row.get(0))
            .unwrap()
    };
    let in_log = find_all(&bytes, &stored);
    assert_eq!(in_log.len(), 1, "the payload is in the log, compressed");
    overwrite(&file, (in_log[0] + stored.len() / 2) as u64, &[bytes[in_log[0] + stored.len() / 2] ^ 0x55]);
    let (code, stdout, _) = ctxd(&data_dir, &["verify", "--chain"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("chain broken at seq") && stdout.contains("changed outside an erasure"),
        "{stdout}"
    );

    // In the header of the log's table page: the start refuses the store.
    let (size, root) = page_of(&file, "events");
    let header = if root == 1 { 100 } else { (root - 1) * size };
    overwrite(&file, header, &[0xff, 0xff, 0xff]);
    let (code, log) = serve_until_it_exits(&data_dir);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("is damaged"), "{log}");
}

#[tokio::test]
async fn errors_of_the_machine_name_the_path_or_address_they_concern() {
    if on_postgres() {
        return;
    }
    // A data dir on a read-only file system.
    let dir = tempfile::tempdir().unwrap();
    let read_only = Tmpfs::mount_with("ro,size=1m");
    let (code, log) = serve_until_it_exits(&read_only.path().join("data"));
    assert_ne!(code, Some(0));
    let named = log.contains(&read_only.path().join("data").display().to_string());
    assert!(named && log.contains("Read-only"), "{log}");
    drop(read_only);

    // A file that is not a database: each command names it.
    let data_dir = dir.path().join("garbage");
    std::fs::create_dir(&data_dir).unwrap();
    let file = data_dir.join("ctxd.db");
    std::fs::write(&file, "not a database ".repeat(40)).unwrap();
    let (code, log) = serve_until_it_exits(&data_dir);
    assert_ne!(code, Some(0));
    assert!(log.contains(&format!("the store {} is damaged", file.display())), "{log}");
    let (code, stdout, _) = ctxd(&data_dir, &["verify"]);
    assert_eq!(code, 1);
    assert!(stdout.contains(&format!("DAMAGED: the store {}", file.display())), "{stdout}");
    let (code, _, stderr) = ctxd(&data_dir, &["export"]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");

    // An address in use: named, and nothing is created before the bind fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let fresh = dir.path().join("fresh");
    let output = Command::new(crate::process::BINARY)
        .env("CTXD_DATA_DIR", &fresh)
        .env("CTXD_ADDR", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains(&format!("cannot listen on {addr} (the address is in use")), "{stderr}");
    assert!(
        stderr.contains("--addr") && stderr.contains("CTXD_ADDR"),
        "it says how to choose another: {stderr}"
    );
    assert!(!fresh.exists(), "no data dir, store or token was created");
}
