//! `--workload neighbours`: what one account's load does to another account's requests. One
//! quiet client (one connection: a PATCH of its session, then a GET of it, back to back) is
//! timed three times in one run against the real server: alone; while `--clients` connections
//! of another account flood writes past that account's `writes_per_second`; and while that
//! account deletes a namespace of `--neighbours-sessions` sessions (filled in-process through
//! the live append + apply path before the server starts).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::Utc;
use ctxd::app::BoxError;
use ctxd::domain::Event;
use ctxd::projections::{self, tables::SqlTables};
use ctxd::store::log::{self, RecordedEvent};
use ctxd::store::{chain, database_path, lock_data_dir, open_writer_connection};
use hyper::{Method, StatusCode};

use crate::http_client::{Client, request};
use crate::report::thousands;
use crate::server::Server;

const QUIET: &str = "quiet";
const NOISY: &str = "noisy";

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub clients: u32,
    pub duration: Duration,
    /// The noisy account's `writes_per_second`; 0: none.
    pub noisy_limit: u32,
    /// Sessions of the namespace the noisy account deletes.
    pub sessions: u64,
    /// Properties of the one session the noisy account then writes to, one property at a time.
    pub properties: u64,
}

/// Latencies of the quiet client's round trips (PATCH + GET).
struct Quiet {
    round_trips: Vec<Duration>,
    errors: u64,
}

impl Quiet {
    fn line(&mut self) -> String {
        self.round_trips.sort();
        let at = |q: f64| {
            let index =
                ((self.round_trips.len() as f64 * q).ceil() as usize).clamp(1, self.round_trips.len().max(1));
            self.round_trips.get(index - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        format!(
            "{} round trips, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors",
            thousands(self.round_trips.len() as u64),
            at(0.5),
            at(0.99),
            at(1.0),
            self.errors
        )
    }

    fn p99_ms(&mut self) -> f64 {
        self.round_trips.sort();
        let index = ((self.round_trips.len() as f64 * 0.99).ceil() as usize).max(1);
        self.round_trips.get(index - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn max_ms(&self) -> f64 {
        self.round_trips.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// The quiet client's round trips until `stop` is set (or, with `stop` unset, for `duration`).
async fn quiet(
    addr: std::net::SocketAddr,
    key: Arc<str>,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Quiet {
    let mut client = Client::new(addr);
    let path = format!("/v1/account/{QUIET}/conversations/quiet-1/properties");
    let started = Instant::now();
    let mut result = Quiet { round_trips: Vec::new(), errors: 0 };
    let mut n = 0u64;
    while started.elapsed() < duration && !stop.load(Relaxed) {
        n += 1;
        let began = Instant::now();
        let body = format!(r#"{{"step":{n}}}"#).into_bytes();
        let patch = client.send(request(Method::PATCH, addr, &path, &[("maven-api-key", &key)], body)).await;
        let get = client.send(request(Method::GET, addr, &path, &[("maven-api-key", &key)], vec![])).await;
        match (patch, get) {
            (Ok((StatusCode::NO_CONTENT, _)), Ok((StatusCode::OK, _))) => {
                result.round_trips.push(began.elapsed())
            }
            _ => result.errors += 1,
        }
    }
    result
}

/// Fills `sessions` sessions of namespace `big` of the noisy account, in the live append + apply
/// path, with the account's own positions and chain.
fn fill(dir: &Path, sessions: u64, properties: u64) -> Result<(), BoxError> {
    let _lock = lock_data_dir(dir)?;
    let conn = open_writer_connection(&database_path(dir), true)?;
    let mut next_id = log::last_id(&conn)? + 1;
    let mut seq = log::last_seq(&conn, NOISY)?;
    let mut previous = chain::head(&conn, NOISY)?.map_or(chain::GENESIS, |head| head.hash);
    let meta = crate::workload::meta();
    let mut written = 0;
    while written < sessions + 1 {
        let tx = conn.transaction()?;
        let now = Utc::now();
        for _ in 0..10_000.min(sessions + 1 - written) {
            let (event, stream_version) = match written {
                0 => (Event::decode("NamespaceCreated", r#"{"namespace":"big","ttl_second":null}"#)?, 1),
                n => {
                    let data = format!(
                        r#"{{"namespace":"big","session_id":"s{n}","properties":{{"k":{n}}},"expires_at":null}}"#
                    );
                    (Event::decode("PropertiesPatched", &data)?, 1)
                }
            };
            seq += 1;
            let recorded = RecordedEvent {
                id: next_id,
                seq,
                account: NOISY.to_string(),
                stream: event.stream(NOISY),
                stream_version,
                event,
                meta: meta.clone(),
                recorded_at: now,
            };
            previous = log::append(&tx, &recorded, &previous)?;
            let mut tables = SqlTables::new(&tx);
            projections::apply(&mut tables, &recorded)?;
            tables.finish()?.write(&tx)?;
            (next_id, written) = (next_id + 1, written + 1);
        }
        tx.commit()?;
    }
    // One session of `properties` properties, in one event, as one PATCH would write them.
    let names: Vec<String> = (0..properties).map(|n| format!(r#""p{n}":{n}"#)).collect();
    let data = format!(
        r#"{{"namespace":"wide","session_id":"wide-1","properties":{{{}}},"expires_at":null}}"#,
        names.join(",")
    );
    let tx = conn.transaction()?;
    let event = Event::decode("PropertiesPatched", &data)?;
    let recorded = RecordedEvent {
        id: next_id,
        seq: seq + 1,
        account: NOISY.to_string(),
        stream: event.stream(NOISY),
        stream_version: 1,
        event,
        meta: meta.clone(),
        recorded_at: Utc::now(),
    };
    log::append(&tx, &recorded, &previous)?;
    let mut tables = SqlTables::new(&tx);
    projections::apply(&mut tables, &recorded)?;
    tables.finish()?.write(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Deletes namespace `big` of the noisy account and, when the answer is 202, polls the delete
/// until it is done. Answers the DELETE's status.
async fn follow_delete(addr: SocketAddr, key: &str) -> Result<StatusCode, BoxError> {
    let mut client = Client::new(addr);
    let headers = [("maven-api-key", key)];
    let path = format!("/v1/account/{NOISY}/big");
    // The phase before used the account's whole rate: wait for its turn.
    let status = loop {
        let (status, _) = client.send(request(Method::DELETE, addr, &path, &headers, vec![])).await?;
        if status != StatusCode::TOO_MANY_REQUESTS {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if status != StatusCode::ACCEPTED {
        return Ok(status);
    }
    let location = format!("/v1/account/{NOISY}/namespace/big/deletion");
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (polled, body) = client.send(request(Method::GET, addr, &location, &headers, vec![])).await?;
        let deletion: serde_json::Value = serde_json::from_slice(&body)?;
        if !polled.is_success() {
            return Err(format!("following the delete answered {polled}: {deletion}").into());
        }
        if deletion["deleting"] == false {
            return Ok(status);
        }
    }
}

/// Runs the three phases and prints them; answers failed requests of the quiet client.
pub fn run(dir: &Path, settings: &Settings) -> Result<Vec<String>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (quiet_key, noisy_key) = {
        let mut server = Server::start(dir)?;
        let keys = runtime.block_on(async {
            server.wait_ready().await?;
            let quiet = server.issue_api_key(QUIET).await?;
            let noisy = server.issue_api_key(NOISY).await?;
            // 0: no limit (and no call, so that a server from before limits can be measured too).
            if settings.noisy_limit > 0 {
                let limit = format!(r#"{{"writes_per_second":{}}}"#, settings.noisy_limit);
                server
                    .admin(Method::PUT, &format!("/admin/accounts/{NOISY}/limits"), limit.into_bytes())
                    .await?;
            }
            Ok::<_, BoxError>((quiet, noisy))
        })?;
        server.stop_warning()?;
        keys
    };
    eprintln!("neighbours: filling a namespace of {} sessions…", thousands(settings.sessions));
    let started = Instant::now();
    fill(dir, settings.sessions, settings.properties)?;
    println!(
        "neighbours fill: {} sessions in {:.1} s",
        thousands(settings.sessions),
        started.elapsed().as_secs_f64()
    );

    let mut server = Server::start(dir)?;
    runtime.block_on(server.wait_ready())?;
    let addr = server.addr;
    let (quiet_key, noisy_key): (Arc<str>, Arc<str>) = (quiet_key.into(), noisy_key.into());
    let never = Arc::new(AtomicBool::new(false));
    let mut failures = Vec::new();

    let mut alone = runtime.block_on(quiet(addr, quiet_key.clone(), settings.duration, never.clone()));

    // The flood: `clients` connections of the noisy account PATCHing as fast as answers come.
    let (accepted, limited, other) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = runtime.block_on(async {
        let mut floods = Vec::new();
        for client in 0..settings.clients {
            let (key, stop) = (noisy_key.clone(), stop.clone());
            let (accepted, limited, other) = (accepted.clone(), limited.clone(), other.clone());
            floods.push(tokio::spawn(async move {
                let mut connection = Client::new(addr);
                let path = format!("/v1/account/{NOISY}/flood/c{client}/properties");
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    n += 1;
                    let body = format!(r#"{{"n":{n}}}"#).into_bytes();
                    match connection
                        .send(request(Method::PATCH, addr, &path, &[("maven-api-key", &key)], body))
                        .await
                    {
                        Ok((StatusCode::NO_CONTENT, _)) => accepted.fetch_add(1, Relaxed),
                        Ok((StatusCode::TOO_MANY_REQUESTS, _)) => limited.fetch_add(1, Relaxed),
                        _ => other.fetch_add(1, Relaxed),
                    };
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (a0, l0) = (accepted.load(Relaxed), limited.load(Relaxed));
        let measured = quiet(addr, quiet_key.clone(), settings.duration, never.clone()).await;
        let (a1, l1) = (accepted.load(Relaxed), limited.load(Relaxed));
        stop.store(true, Relaxed);
        for flood in floods {
            let _ = flood.await;
        }
        let seconds = settings.duration.as_secs_f64();
        (measured, (a1 - a0) as f64 / seconds, (l1 - l0) as f64 / seconds)
    });
    if other.load(Relaxed) > 0 {
        failures.push(format!("neighbours flood: {} answers neither 204 nor 429", other.load(Relaxed)));
    }

    // One-property writes of the noisy account to its session of `properties` properties.
    let (mut beside_wide, wide_writes) = runtime.block_on(async {
        let (key, stop) = (noisy_key.clone(), Arc::new(AtomicBool::new(false)));
        let writes = Arc::new(AtomicU64::new(0));
        let (stop_writer, counted) = (stop.clone(), writes.clone());
        let writer = tokio::spawn(async move {
            let mut connection = Client::new(addr);
            let path = format!("/v1/account/{NOISY}/wide/wide-1/properties");
            let mut n = 0u64;
            while !stop_writer.load(Relaxed) {
                n += 1;
                let body = format!(r#"{{"p{}":{n}}}"#, n % 100).into_bytes();
                let sent = connection
                    .send(request(Method::PATCH, addr, &path, &[("maven-api-key", &key)], body))
                    .await;
                if matches!(sent, Ok((StatusCode::NO_CONTENT, _))) {
                    counted.fetch_add(1, Relaxed);
                }
            }
        });
        let measured = quiet(addr, quiet_key.clone(), settings.duration, never.clone()).await;
        stop.store(true, Relaxed);
        let _ = writer.await;
        (measured, writes.load(Relaxed) as f64 / settings.duration.as_secs_f64())
    });

    // The big delete, with the quiet client timed until it is done: answered 204, or answered
    // 202 and then followed until it says it is done.
    let done = Arc::new(AtomicBool::new(false));
    let (mut during_delete, delete) = runtime.block_on(async {
        let (key, done_flag) = (noisy_key.clone(), done.clone());
        let delete = tokio::spawn(async move {
            let began = Instant::now();
            let answer = follow_delete(addr, &key).await;
            done_flag.store(true, Relaxed);
            (answer, began.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let measured = quiet(addr, quiet_key.clone(), Duration::from_secs(600), done.clone()).await;
        (measured, delete.await)
    });
    let (status, took) = delete?;
    let status = status?;
    if !status.is_success() {
        failures.push(format!("neighbours: DELETE of the big namespace answered {status}"));
    }
    server.stop_warning()?;

    for (phase, quiet) in
        [("alone", &mut alone), ("during the flood", &mut flood.0), ("during the delete", &mut during_delete)]
    {
        if quiet.errors > 0 {
            failures.push(format!("neighbours {phase}: {} quiet round trips failed", quiet.errors));
        }
    }
    let flood_target = (3.0 * alone.p99_ms()).max(25.0);
    println!("| neighbours: the quiet account's PATCH + GET | quiet client | target |");
    println!("|---|---|---|");
    println!("| alone | {} | |", alone.line());
    println!(
        "| while {} connections of another account flood writes ({} accepted/s at its limit of {}/s, {} refused with 429/s) | {} | p99 ≤ {flood_target:.1} ms: {} |",
        settings.clients,
        thousands(flood.1 as u64),
        settings.noisy_limit,
        thousands(flood.2 as u64),
        flood.0.line(),
        if flood.0.p99_ms() <= flood_target { "met" } else { "MISSED" }
    );
    println!(
        "| while that account writes one property at a time to a session of {} properties ({:.0} writes/s) | {} | p99 ≤ {flood_target:.1} ms: {} |",
        thousands(settings.properties),
        wide_writes,
        beside_wide.line(),
        if beside_wide.p99_ms() <= flood_target { "met" } else { "MISSED" }
    );
    println!(
        "| while that account deletes a namespace of {} sessions (answered {status}, done after {:.2} s) | {} | no round trip > 250 ms: {} |",
        thousands(settings.sessions),
        took.as_secs_f64(),
        during_delete.line(),
        if during_delete.max_ms() <= 250.0 { "met" } else { "MISSED" }
    );
    Ok(failures)
}
