//! Test harness: a real server on port 0 with a temp data dir and a manual clock, and a small
//! HTTP client that talks to it over loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ctxd::app::{Application, ServeConfig};
use ctxd::clock::ManualClock;
use ctxd::store::{Store, WriterConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    pub data_dir: PathBuf,
    /// Keeps the temp dir alive for the test's duration (None when the caller owns the dir).
    _temp: Option<Arc<tempfile::TempDir>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|value| value.to_str().unwrap().to_string())
    }

    pub fn etag(&self) -> String {
        self.header("etag").expect("an ETag header")
    }

    /// Asserts a status and a JSON error body with a message, returning the message.
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        let message = self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {}", self.body))
            .to_string();
        assert!(!message.is_empty());
        message
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server on a fresh data dir whose configuration `configure` may change first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let temp = Arc::new(tempfile::tempdir().unwrap());
    let dir = temp.path().to_path_buf();
    let clock = Arc::new(ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap()));
    let mut app = spawn_configured(&dir, clock, configure).await;
    app._temp = Some(temp);
    app
}

/// The file that keeps a test's data dir on SQLite whatever `CTXD_TEST_DATABASE_URL` says.
const SQLITE_ONLY: &str = "sqlite-only";

/// A server on SQLite, for the tests of SQLite's own files and migrations.
pub async fn spawn_sqlite_app() -> TestApp {
    let temp = Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(temp.path().join(SQLITE_ONLY), "").unwrap();
    let clock = Arc::new(ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap()));
    let mut app = spawn_configured(temp.path(), clock, |_| {}).await;
    app._temp = Some(temp);
    app
}

/// Starts a server on an existing data dir (for restarts) with the given clock.
pub async fn spawn_app_in(data_dir: &Path, clock: Arc<ManualClock>) -> TestApp {
    spawn_configured(data_dir, clock, |_| {}).await
}

/// Builds the server; when the data dir is still locked, tries again for up to 5 s. A restart
/// in the same process releases the lock (`Store::shutdown`), but the lock is the open file's,
/// and a child process that another test spawns at that moment holds a copy of every open file
/// until its `exec` closes them: under load, long enough for the next build to find it locked
/// (seen twice in CI). A process that exits cannot meet this.
async fn build_when_unlocked(config: &ServeConfig, clock: Arc<ManualClock>) -> Application {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Application::build(config, clock.clone()).await {
            Err(error)
                if error.to_string().contains("in use by another ctxd process")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            built => return built.expect("server builds"),
        }
    }
}

async fn spawn_configured(
    data_dir: &Path,
    clock: Arc<ManualClock>,
    configure: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let mut config = ServeConfig {
        addr: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        database_url: test_database(data_dir),
        admin_token: Some(ADMIN_TOKEN.into()),
        // On PostgreSQL a node archives only where it is told (a directory the nodes share).
        writer: WriterConfig { archive_dir: Some(data_dir.join("archive")), ..WriterConfig::default() },
        // Tests run the sweeper by hand; the background one stays out of their way.
        sweep_interval: Duration::from_secs(3600),
        idempotency_retention: Duration::from_secs(24 * 3600),
        signing_key: Default::default(),
        connections: Default::default(),
    };
    configure(&mut config);
    // The server's log, when RUST_LOG asks for it (shown for failing tests).
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let app = build_when_unlocked(&config, clock.clone()).await;
    let addr = app.local_addr();
    let store = app.store();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        addr,
        clock,
        store,
        data_dir: data_dir.to_path_buf(),
        _temp: None,
        stop: Some(stop),
        server: Some(server),
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

/// With `CTXD_TEST_DATABASE_URL` (a PostgreSQL server's URL), every data dir gets a database of
/// its own on that server, created on first use and found again on a restart; without it,
/// tests run on SQLite in the data dir.
pub fn test_database(data_dir: &Path) -> Option<String> {
    let server = std::env::var("CTXD_TEST_DATABASE_URL").ok().filter(|url| !url.is_empty())?;
    // A data dir that holds a SQLite store (an old release's, in the migration tests) runs on it.
    if data_dir.join("ctxd.db").exists() || data_dir.join(SQLITE_ONLY).exists() {
        return None;
    }
    let kept = data_dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&kept) {
        return Some(url);
    }
    let name = format!("ctxd_test_{}", uuid::Uuid::new_v4().simple());
    let admin = ctxd::store::db::PgConnection::connect(&server).expect("the test PostgreSQL server answers");
    ctxd::store::db::Connection::Postgres(admin)
        .execute_batch(&format!("CREATE DATABASE {name}"))
        .expect("a test database is created");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database name");
    let url = format!("{base}/{name}");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&kept, &url).unwrap();
    Some(url)
}

/// True when the suite runs on PostgreSQL: the tests of SQLite's own files and of migrations
/// from its older schemas have nothing to test there.
pub fn on_postgres() -> bool {
    std::env::var("CTXD_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty())
}

/// A read-write connection to the store of `data_dir` beside its server: what someone with
/// access to the database can do.
pub fn raw_connection(data_dir: &Path) -> ctxd::store::db::Connection {
    match std::fs::read_to_string(data_dir.join("test-database-url")) {
        Ok(url) => {
            ctxd::store::db::Connection::Postgres(ctxd::store::db::PgConnection::connect(&url).unwrap())
        }
        Err(_) => rusqlite::Connection::open(data_dir.join("ctxd.db")).unwrap().into(),
    }
}

/// Lets `conn` edit event rows, as the database's owner can: the append-only rule is a trigger.
pub fn allow_editing_events(conn: &ctxd::store::db::Connection) {
    conn.execute_batch(conn.sql(
        "DROP TRIGGER events_are_append_only_update",
        "ALTER TABLE events DISABLE TRIGGER events_are_append_only",
    ))
    .unwrap();
}

impl TestApp {
    /// A connection to the store for a test's own reads (a SQLite file opened read-only).
    pub fn connection(&self) -> ctxd::store::db::Connection {
        ctxd::store::read::open(self.store.location()).unwrap()
    }

    /// Stops the server gracefully and starts a new one on the same data dir and clock.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// Stops the server, lets `between` do what it will to the stopped store's data dir, and
    /// starts a new server on it.
    pub async fn restart_with(mut self, between: impl FnOnce(&Path)) -> TestApp {
        self.shutdown().await;
        // Dropping every handle on the old store releases the data dir's lock.
        let TestApp { data_dir, clock, _temp, store, .. } = self;
        drop(store);
        between(&data_dir);
        let mut next = spawn_app_in(&data_dir, clock).await;
        next._temp = _temp;
        next
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut builder =
            hyper::Request::builder().method(method).uri(format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response =
            self.client.request(builder.body(Full::new(body.into())).unwrap()).await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.request(method, path, &[("authorization", &auth)], body.to_string()).await
    }

    /// Creates an account and returns a fresh API key for it.
    pub async fn account(&self, account_id: &str) -> String {
        let created =
            self.admin("POST", "/admin/accounts", &format!(r#"{{"account_id":"{account_id}"}}"#)).await;
        assert_eq!(created.status, 201, "{}", created.body);
        self.issue_key(account_id).await
    }

    pub async fn issue_key(&self, account_id: &str) -> String {
        let issued = self.admin("POST", &format!("/admin/accounts/{account_id}/api-key"), "").await;
        assert_eq!(issued.status, 201, "{}", issued.body);
        issued.json()["api_key"].as_str().unwrap().to_string()
    }

    /// A call with an API key, for the context store.
    pub async fn call(&self, key: &str, method: &str, path: &str, body: &str) -> Reply {
        self.request(
            method,
            path,
            &[("maven-api-key", key), ("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn call_with(
        &self,
        key: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut all = vec![("maven-api-key", key)];
        all.extend_from_slice(headers);
        self.request(method, path, &all, body.to_string()).await
    }

    /// Rows of the event log in commit order, read straight from the SQLite file: (seq in its
    /// account, stream, version, type, data, meta).
    pub fn events(&self) -> Vec<(u64, String, u64, String, Value, Value)> {
        let conn = self.connection();
        let mut statement = conn
            .prepare("SELECT seq, stream, stream_version, event_type, data, meta FROM events ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    serde_json::from_str(&stored_text(row, 4)?).unwrap(),
                    serde_json::from_str(&row.get::<String>(5)?).unwrap(),
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn event_count(&self) -> usize {
        self.events().len()
    }

    /// `ctxd verify` run in-process against the live file.
    pub fn verify(&self) -> ctxd::projections::verify::Report {
        ctxd::projections::verify::verify(&self.connection()).unwrap()
    }
}

/// The JSON text of a compressible column (an event's `data`, a service's `document`) read
/// straight from the store: SQLite keeps most of them compressed (`ctxd::store::payload`).
pub fn stored_text(row: &ctxd::store::db::Row<'_>, index: usize) -> ctxd::store::db::Result<String> {
    Ok(ctxd::store::payload::text(row.get_ref(index)?)?.into_owned())
}

/// The seq of `account`'s first event whose payload contains `needle`.
pub fn seq_of_payload_with(conn: &ctxd::store::db::Connection, account: &str, needle: &str) -> u64 {
    let mut statement = conn.prepare("SELECT seq, data FROM events WHERE account = ?1 ORDER BY seq").unwrap();
    let rows = statement.query_map([account], |row| Ok((row.get::<u64>(0)?, stored_text(row, 1)?))).unwrap();
    let mut found = rows.map(Result::unwrap).filter(|(_, data)| data.contains(needle));
    found.next().unwrap_or_else(|| panic!("no payload of {account} contains {needle}")).0
}

/// Replaces `from` with `to` in the payload of `account`'s event `seq`, as the database's owner
/// can once `allow_editing_events`: written back as text, a form the store reads as it reads
/// its compressed one. Panics unless the payload held `from`.
pub fn edit_payload(conn: &ctxd::store::db::Connection, account: &str, seq: u64, from: &str, to: &str) {
    let data = conn
        .query_row("SELECT data FROM events WHERE account = ?1 AND seq = ?2", (account, seq), |row| {
            stored_text(row, 0)
        })
        .unwrap();
    assert!(data.contains(from), "{from} is not in {data}");
    let edited = conn
        .execute(
            "UPDATE events SET data = ?1 WHERE account = ?2 AND seq = ?3",
            (data.replace(from, to), account, seq),
        )
        .unwrap();
    assert_eq!(edited, 1);
}

/// SQL that takes a store's schema back from version 22 to 20: without the analytics counters'
/// daily rollups (0021) and the abandoned list's index (0022). Tests that take a store further
/// back run it before their own.
pub const BEFORE_ROLLUPS: &str = "DELETE FROM schema_version WHERE version >= 21;
    DROP INDEX analytics_abandoned_by_end; DROP TABLE analytics_services_days;
    DROP TABLE analytics_states_days; DROP TABLE analytics_transitions_days; DROP TABLE analytics_paths_days;";
