//! The `failover` workload: the proof that a highly available ctxd loses no acknowledged write.
//!
//! On a cluster started by `deploy/local-ha/up`, clients write through both nodes (each write a
//! property of its own, sent with an `Idempotency-Key` and retried with it on the other node
//! after a 503, a lost connection or a timeout) while an SSE follower reads one account's feed.
//! The run kills the PostgreSQL primary (`kill-primary`), waits for writes to come back, moves
//! the follower onto the node that runs the sweeper, kills that node (`kill-node`), and checks
//! on the surviving node:
//! - every acknowledged write is readable, with its value;
//! - each account's positions are gapless and unrepeated, and no write was applied twice;
//! - `audit/verify` finds each account's chain intact;
//! - the follower, moved to the other node with `Last-Event-ID`, saw every event once, in order;
//! - a TTL still expires after the sweeper's node died (the sweeper moved).
//!
//! It prints the writes acknowledged, the writes lost and the longest write outage; any failed
//! check makes the run fail.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ctxd::app::BoxError;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::http_client::{Client, fetch, request};
use crate::report::thousands;

const ACCOUNTS: usize = 4;
const NAMESPACE: &str = "ha";
/// How long a write may go unanswered before the client gives up on that node and retries on
/// the other (a commit waits while the primary has no synchronous standby).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write is retried before the run calls it never acknowledged.
const WRITE_DEADLINE: Duration = Duration::from_secs(90);
/// The pause before a retry, in place of the 503's `Retry-After: 1`, so that the outage is
/// measured to a finer grain.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Writes acknowledged after a kill before the run calls writing resumed.
const RESUMED_AFTER: u64 = 200;

/// A write the cluster acknowledged.
struct Ack {
    at: Instant,
    account: usize,
    session: String,
    key: String,
    value: String,
}

/// What the writers share with the run.
#[derive(Default)]
struct Progress {
    acks: AtomicU64,
    retries: AtomicU64,
    stop: AtomicBool,
}

pub fn run(cluster: &Cluster, clients: u32) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(cluster, clients))
}

async fn drive(cluster: &Cluster, clients: u32) -> Result<(), BoxError> {
    if cluster.nodes.len() < 2 {
        return Err("the failover run needs two ctxd nodes".into());
    }
    let stamp = std::process::id();
    let mut accounts = Vec::new();
    for index in 0..ACCOUNTS {
        let name = format!("ha-{stamp}-{index}");
        let key: Arc<str> = cluster.account_key(0, &name).await?.into();
        accounts.push((name, key));
    }
    let accounts = Arc::new(accounts);
    let nodes: Arc<[SocketAddr]> = cluster.nodes.clone().into();
    let progress = Arc::new(Progress::default());
    let started = Instant::now();

    let follower_target = Arc::new(AtomicU64::new(u64::MAX));
    let follower_node = Arc::new(FollowerNode::default());
    let follower = tokio::spawn(follow(
        nodes.clone(),
        accounts[0].clone(),
        follower_target.clone(),
        follower_node.clone(),
    ));
    let writers: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(write(nodes.clone(), accounts.clone(), client, progress.clone())))
        .collect();

    tokio::time::sleep(Duration::from_secs(5)).await;
    let primary_killed_at = Instant::now();
    let primary_killed_clock = chrono::Utc::now();
    let member = blocking_script(cluster, "kill-primary", &[]).await?;
    println!(
        "failover: killed the PostgreSQL primary ({member}) at {:.1} s",
        secs(started, primary_killed_at)
    );
    wait_resumed(&progress, "the primary was killed").await?;
    // The node to kill: the one that runs the sweeper since the failover; the follower is moved
    // onto it first, so that both have to move.
    let sweeper = sweeper_since(cluster, primary_killed_clock).await?;
    follower_node.prefer.store(sweeper, Ordering::Release);
    follower_node.switch.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node_killed_at = Instant::now();
    let node_killed_clock = chrono::Utc::now();
    let killed = (sweeper + 1).to_string();
    blocking_script(cluster, "kill-node", &[&killed]).await?;
    println!(
        "failover: killed ctxd node {killed}, the sweeper's and the follower's, at {:.1} s",
        secs(started, node_killed_at)
    );
    wait_resumed(&progress, "a node was killed").await?;
    let survivor_index = (sweeper + 1) % nodes.len();
    let survivor = nodes[survivor_index];
    let sweeper_after = expires_after_node_death(survivor, &accounts[0]).await;
    // The survivor took the lock after the kill (its TTL check alone would pass if it had swept
    // all along).
    let took_over = sweeper_since(cluster, node_killed_clock).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    progress.stop.store(true, Ordering::Relaxed);

    let mut acks = Vec::new();
    let mut failures = Vec::new();
    for writer in writers {
        let (mine, errors) = writer.await?;
        acks.extend(mine);
        failures.extend(errors);
    }
    failures.extend(sweeper_after.as_ref().err().map(|error| format!("sweeper: {error}")));
    match &took_over {
        Ok(node) if *node == survivor_index => {}
        Ok(node) => {
            failures.push(format!("after node {killed} was killed, node {} took the sweeper", node + 1))
        }
        Err(error) => failures.push(format!("sweeper: {error}")),
    }

    let mut checked = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        let mine: Vec<&Ack> = acks.iter().filter(|ack| ack.account == index).collect();
        checked.push(check_account(survivor, account, &mine).await?);
    }
    // The follower catches up to account 0's last position, then stops.
    follower_target.store(checked[0].last_seq, Ordering::Release);
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .map_err(|_| "the SSE follower did not reach the account's last position within 30 s")??;

    let lost: u64 = checked.iter().map(|account| account.lost).sum();
    let twice: u64 = checked.iter().map(|account| account.applied_twice).sum();
    acks.sort_by_key(|ack| ack.at);
    let (outage, outage_end) = longest_gap(&acks);
    println!(
        "failover: {clients} clients on {} nodes, {ACCOUNTS} accounts: writes acknowledged {}, lost {lost}, applied twice {twice}, retries {}",
        nodes.len(),
        thousands(acks.len() as u64),
        thousands(progress.retries.load(Ordering::Relaxed)),
    );
    println!(
        "  longest write outage {:.1} s (ended at {:.1} s); writes resumed {:.1} s after the primary was killed, {:.1} s after the node was killed",
        outage.as_secs_f64(),
        secs(started, outage_end),
        resumed_after(&acks, primary_killed_at),
        resumed_after(&acks, node_killed_at),
    );
    for (account, figures) in accounts.iter().zip(&checked) {
        println!(
            "  {}: positions 1..{} gapless and unrepeated: {}, chain intact: {}",
            account.0, figures.last_seq, figures.gapless, figures.intact
        );
        if !figures.gapless {
            failures.push(format!("{}: positions have gaps or repeats", account.0));
        }
        if !figures.intact {
            failures.push(format!("{}: audit/verify found the chain broken", account.0));
        }
    }
    let in_order = followed.seqs.iter().copied().eq(1..=checked[0].last_seq);
    let moved = followed.moved_off(sweeper, node_killed_at);
    println!(
        "  SSE follower: {} events over {} connection attempts, each once and in order: {in_order}; moved off the killed node with Last-Event-ID: {moved}",
        thousands(followed.seqs.len() as u64),
        followed.connections.len()
    );
    if !moved {
        failures
            .push(format!("the SSE follower did not follow from node {killed} and then from the survivor"));
    }
    if !in_order {
        failures.push(format!(
            "the SSE follower saw {} events for positions 1..{}, not each once in order",
            followed.seqs.len(),
            checked[0].last_seq
        ));
    }
    match &sweeper_after {
        Ok(took) => println!(
            "  sweeper: node {killed} held it and was killed; a 1 s TTL written then expired {:.1} s after the write (via node {})",
            took.as_secs_f64(),
            (sweeper + 1) % nodes.len() + 1
        ),
        Err(error) => println!("  sweeper: {error}"),
    }
    if lost > 0 {
        failures.push(format!("{lost} acknowledged writes are missing"));
    }
    if twice > 0 {
        failures.push(format!("{twice} writes were applied twice"));
    }
    if !failures.is_empty() {
        return Err(format!("failover checks failed:\n  {}", failures.join("\n  ")).into());
    }
    Ok(())
}

fn secs(from: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(from).as_secs_f64()
}

async fn blocking_script(cluster: &Cluster, script: &str, args: &[&str]) -> Result<String, BoxError> {
    let cluster = cluster.clone();
    let script = script.to_string();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.script(&script, &args)
    })
    .await?
}

/// Waits until `RESUMED_AFTER` more writes were acknowledged; fails after 60 s.
async fn wait_resumed(progress: &Progress, after: &str) -> Result<(), BoxError> {
    let from = progress.acks.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.acks.load(Ordering::Relaxed) < from + RESUMED_AFTER {
        if Instant::now() > deadline {
            return Err(format!("writes did not resume within 60 s after {after}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The longest time without an acknowledged write between the first and the last, and when it
/// ended.
fn longest_gap(acks: &[Ack]) -> (Duration, Instant) {
    let mut longest = (Duration::ZERO, acks.first().map_or_else(Instant::now, |ack| ack.at));
    for pair in acks.windows(2) {
        let gap = pair[1].at - pair[0].at;
        if gap > longest.0 {
            longest = (gap, pair[1].at);
        }
    }
    longest
}

/// Seconds from `at` to the first write sent after it that was acknowledged (an answer to a
/// write sent before `at` may have been committed before it).
fn resumed_after(acks: &[Ack], at: Instant) -> f64 {
    acks.iter().find(|ack| ack.at > at + RETRY_PAUSE * 2).map_or(f64::NAN, |ack| secs(at, ack.at))
}

/// One client: writes property `w<n>` of session `c<client>` in its account, one after another,
/// each retried with its `Idempotency-Key` on the other node until acknowledged.
async fn write(
    nodes: Arc<[SocketAddr]>,
    accounts: Arc<Vec<(String, Arc<str>)>>,
    client: u32,
    progress: Arc<Progress>,
) -> (Vec<Ack>, Vec<String>) {
    let account = client as usize % accounts.len();
    let (name, api_key) = &accounts[account];
    let session = format!("c{client}");
    let path = format!("/v1/account/{name}/{NAMESPACE}/{session}/properties");
    let mut connections: Vec<Client> = nodes.iter().map(|&addr| Client::new(addr)).collect();
    let mut node = client as usize % nodes.len();
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    for n in 0u64.. {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let (key, value) = (format!("w{n}"), format!("c{client}-{n}"));
        let body = serde_json::to_vec(&json!({ &key: &value })).expect("a JSON object");
        let idempotency_key = format!("{session}-{n}");
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let headers = [("maven-api-key", &**api_key), ("idempotency-key", idempotency_key.as_str())];
            let patch = request(Method::PATCH, nodes[node], &path, &headers, body.clone());
            match tokio::time::timeout(REQUEST_TIMEOUT, connections[node].send(patch)).await {
                Ok(Ok((StatusCode::NO_CONTENT, _))) => {
                    let at = Instant::now();
                    acks.push(Ack { at, account, session: session.clone(), key, value });
                    progress.acks.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) | Ok(Err(_)) | Err(_) => {
                    progress.retries.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() > deadline {
                        errors.push(format!("PATCH {path} ({idempotency_key}) was never acknowledged"));
                        return (acks, errors);
                    }
                    connections[node] = Client::new(nodes[node]);
                    node = (node + 1) % nodes.len();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Ok((status, body))) => {
                    let body = String::from_utf8_lossy(&body);
                    errors.push(format!("PATCH {path} ({idempotency_key}): {status}: {body}"));
                    return (acks, errors);
                }
            }
        }
    }
    (acks, errors)
}

/// What the surviving node says about one account.
struct Checked {
    last_seq: u64,
    gapless: bool,
    intact: bool,
    lost: u64,
    applied_twice: u64,
}

/// Reads the account's whole feed, its sessions and its chain's verification through `node`.
async fn check_account(
    node: SocketAddr,
    account: &(String, Arc<str>),
    acks: &[&Ack],
) -> Result<Checked, BoxError> {
    let (name, api_key) = account;
    let headers = [("maven-api-key", &**api_key)];
    let mut seqs = Vec::new();
    // How many events wrote each (session, property) of the workload's namespace.
    let mut writes: HashMap<(String, String), u64> = HashMap::new();
    let mut after = 0u64;
    loop {
        let path = format!("/v1/account/{name}/events?after={after}&limit=1000");
        let page: Value = serde_json::from_slice(&fetch(Method::GET, node, &path, &headers, vec![]).await?)?;
        for event in page["events"].as_array().into_iter().flatten() {
            seqs.push(event["seq"].as_u64().unwrap_or(0));
            let data = &event["data"];
            if event["type"] == "PropertiesPatched" && data["namespace"] == NAMESPACE {
                let session = data["session_id"].as_str().unwrap_or_default();
                for key in data["properties"].as_object().into_iter().flat_map(|properties| properties.keys())
                {
                    *writes.entry((session.to_string(), key.clone())).or_default() += 1;
                }
            }
        }
        after = page["next_after"].as_u64().ok_or("the feed's page has no next_after")?;
        if page["has_more"] != true {
            break;
        }
    }
    let last_seq = seqs.last().copied().unwrap_or(0);
    let gapless = seqs.iter().copied().eq(1..=last_seq);
    let applied_twice = writes.values().filter(|&&count| count > 1).count() as u64;

    let mut by_session: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for ack in acks {
        by_session.entry(&ack.session).or_default().push(ack);
    }
    let mut lost = 0;
    for (session, acks) in by_session {
        let path = format!("/v1/account/{name}/{NAMESPACE}/{session}/properties");
        let properties: Value =
            serde_json::from_slice(&fetch(Method::GET, node, &path, &headers, vec![]).await?)?;
        lost += acks.iter().filter(|ack| properties[&ack.key] != ack.value.as_str()).count() as u64;
    }
    let path = format!("/v1/account/{name}/audit/verify");
    let verified: Value = serde_json::from_slice(&fetch(Method::GET, node, &path, &headers, vec![]).await?)?;
    let intact = verified["intact"] == true && verified["last_seq"].as_u64() == Some(last_seq);
    Ok(Checked { last_seq, gapless, intact, lost, applied_twice })
}

/// The node (0-based) whose log says it became the sweeper after `since`, waiting up to 20 s.
async fn sweeper_since(cluster: &Cluster, since: chrono::DateTime<chrono::Utc>) -> Result<usize, BoxError> {
    let since = since.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut latest: Option<(String, usize)> = None;
        for node in 0..cluster.nodes.len() {
            let log = std::fs::read_to_string(cluster.dir.join(format!("ctxd{}.log", node + 1)))
                .unwrap_or_default();
            let took = log.lines().filter(|line| line.contains("this node is the sweeper now"));
            if let Some(at) =
                took.filter_map(|line| line.split_whitespace().next()).filter(|at| **at > *since).max()
                && latest.as_ref().is_none_or(|(time, _)| at > time.as_str())
            {
                latest = Some((at.to_string(), node));
            }
        }
        if let Some((_, node)) = latest {
            return Ok(node);
        }
        if Instant::now() > deadline {
            return Err("no node took the sweeper's lock within 20 s of the failover".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a property with a 1 s TTL through `node` and waits for the sweeper to expire it.
async fn expires_after_node_death(
    node: SocketAddr,
    account: &(String, Arc<str>),
) -> Result<Duration, BoxError> {
    let (name, api_key) = account;
    let headers = [("maven-api-key", &**api_key)];
    let session = "ttl-after-node-death";
    let path = format!("/v1/account/{name}/namespace/sweep/session?ttlSecond=1");
    fetch(Method::POST, node, &path, &headers, serde_json::to_vec(&json!({ "sessionId": session }))?).await?;
    let path = format!("/v1/account/{name}/sweep/{session}/properties");
    fetch(Method::PATCH, node, &path, &headers, serde_json::to_vec(&json!({ "x": 1 }))?).await?;
    let written = Instant::now();
    let stream = format!("ctx/{name}/sweep/{session}");
    let path = format!("/v1/account/{name}/events?stream={stream}&type=PropertiesExpired");
    while written.elapsed() < Duration::from_secs(30) {
        let page: Value = serde_json::from_slice(&fetch(Method::GET, node, &path, &headers, vec![]).await?)?;
        if page["events"].as_array().is_some_and(|events| !events.is_empty()) {
            return Ok(written.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("a property with a 1 s TTL had not expired 30 s later: no node sweeps".into())
}

/// What the follower saw.
struct Followed {
    seqs: Vec<u64>,
    /// Each connection made: its node, when it was opened, how many events it delivered.
    connections: Vec<(usize, Instant, usize)>,
}

impl Followed {
    /// True if events came on `killed` before `at` and on another node from a connection opened
    /// after `at`: the follower was on the killed node and moved.
    fn moved_off(&self, killed: usize, at: Instant) -> bool {
        let on_killed = self
            .connections
            .iter()
            .any(|&(node, opened, events)| node == killed && opened < at && events > 0);
        let after = self
            .connections
            .iter()
            .any(|&(node, opened, events)| node != killed && opened > at && events > 0);
        on_killed && after
    }
}

/// Where the run wants the follower: `prefer` is the node it connects to first; `switch` asks it
/// to leave its current connection for that node.
#[derive(Default)]
struct FollowerNode {
    prefer: std::sync::atomic::AtomicUsize,
    switch: AtomicBool,
}

/// Follows `account`'s feed over SSE from its start, on the preferred node first; when a
/// connection ends or fails, goes on from the next node with `Last-Event-ID`. Stops once it saw
/// position `target`.
async fn follow(
    nodes: Arc<[SocketAddr]>,
    account: (String, Arc<str>),
    target: Arc<AtomicU64>,
    wanted: Arc<FollowerNode>,
) -> Followed {
    let mut followed = Followed { seqs: Vec::new(), connections: Vec::new() };
    let mut node = wanted.prefer.load(Ordering::Acquire);
    while followed.seqs.last().copied().unwrap_or(0) < target.load(Ordering::Acquire) {
        let (opened, before) = (Instant::now(), followed.seqs.len());
        let ended = stream_once(nodes[node], &account, &target, &wanted.switch, &mut followed.seqs).await;
        followed.connections.push((node, opened, followed.seqs.len() - before));
        node = if wanted.switch.swap(false, Ordering::AcqRel) {
            wanted.prefer.load(Ordering::Acquire)
        } else {
            if ended.is_err() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            (node + 1) % nodes.len()
        };
    }
    followed
}

/// One SSE connection: appends the `id:` of every event to `seqs` until the stream ends, fails,
/// reached `target`, or `switch` is set.
async fn stream_once(
    addr: SocketAddr,
    (name, api_key): &(String, Arc<str>),
    target: &AtomicU64,
    switch: &AtomicBool,
    seqs: &mut Vec<u64>,
) -> Result<(), BoxError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await??;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let last = seqs.last().copied().unwrap_or(0).to_string();
    let request = Request::builder()
        .uri(format!("/v1/account/{name}/events/stream"))
        .header(HOST, addr.to_string())
        .header("maven-api-key", &**api_key)
        .header("last-event-id", last)
        .body(Empty::<Bytes>::new())?;
    let result = async {
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("the event stream answered {}", response.status()).into());
        }
        let mut body = response.into_body();
        let mut partial = Vec::new();
        while seqs.last().copied().unwrap_or(0) < target.load(Ordering::Relaxed)
            && !switch.load(Ordering::Relaxed)
        {
            let Ok(frame) = tokio::time::timeout(Duration::from_secs(1), body.frame()).await else {
                continue;
            };
            let Some(frame) = frame else { return Ok(()) };
            let Some(data) = frame?.data_ref().cloned() else { continue };
            partial.extend_from_slice(&data);
            while let Some(end) = partial.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                if let Some(id) = line.strip_prefix(b"id:") {
                    let id = std::str::from_utf8(id)?.trim().parse()?;
                    seqs.push(id);
                }
            }
        }
        Ok::<(), BoxError>(())
    }
    .await;
    driver.abort();
    result
}
