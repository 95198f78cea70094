//! The raw SQLite limit of the journey workload: the lifecycle calls of the HTTP clients'
//! journeys, in the order they would reach the writer, written straight into a fresh store
//! (WAL, `synchronous=FULL`, same schema) in transactions of B calls, with no HTTP, no domain
//! decision and no writer thread. Per call: its 1–2 event rows into `events`, and one read and
//! one rewrite of the service's `services` row, whose document is as large as the projection's
//! after that call. Optionally, the projection code instead (`projections::apply` per event,
//! as the writer does: parse the document, fold the event, serialize it, per event).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ctxd::app::BoxError;
use ctxd::clock::{Clock, SystemClock};
use ctxd::domain::events::service_stream;
use ctxd::projections;
use ctxd::store::StoreError;
use ctxd::store::chain;
use ctxd::store::db::{Connection, OptionalExtension, params};
use ctxd::store::log::{self, RecordedEvent, format_time};

use crate::journeys::{Call, customer_id, documents};
use crate::report::thousands;
use crate::workload::{ACCOUNT, meta};

/// One baseline's shape.
#[derive(Debug, Clone)]
pub struct RawJourneySettings {
    /// Lifecycle calls per transaction: the server's average group commit.
    pub batch: u64,
    pub duration: Duration,
    /// Clients of the HTTP workload, whose journeys the calls interleave.
    pub clients: u32,
    /// Apply the projection code to each event instead of the raw read and rewrite.
    pub projection_code: bool,
}

/// What one baseline measured.
pub struct RawJourneyReport {
    settings: RawJourneySettings,
    /// "SQLite" or "PostgreSQL".
    backend: &'static str,
    calls: u64,
    events: u64,
    elapsed: Duration,
}

impl RawJourneyReport {
    /// `raw SQLite journeys (…, batches of 24 calls, synchronous=FULL): 30,000 calls/s (45,000 event rows/s); server/raw = 0.50`
    pub fn line(&self, server_calls_per_second: Option<f64>) -> String {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let calls_per_second = self.calls as f64 / seconds;
        let what = if self.settings.projection_code {
            "journeys + projection code (same calls: event rows, projections::apply per event"
        } else {
            "journeys (same calls: event rows + read and rewrite of the services row"
        };
        let mut line = format!(
            "raw {} {what}, batches of {} calls, durable commits): {} calls/s ({} event rows/s)",
            self.backend,
            self.settings.batch,
            thousands(calls_per_second.round() as u64),
            thousands((self.events as f64 / seconds).round() as u64),
        );
        if let Some(server) = server_calls_per_second {
            line.push_str(&format!("; server/raw = {:.2}", server / calls_per_second));
        }
        line
    }
}

/// Runs one baseline on a fresh file in `dir` for `settings.duration`.
pub fn measure(
    dir: &Path,
    database: Option<&str>,
    settings: &RawJourneySettings,
) -> Result<RawJourneyReport, BoxError> {
    let name = if settings.projection_code { "raw-journeys-projections.db" } else { "raw-journeys.db" };
    let mut conn = crate::raw::open_baseline(&dir.join(name), database)?;
    let documents = documents(SystemClock.now());
    let mut calls = JourneyCalls::new(settings.clients);
    let started = Instant::now();
    let (mut written, mut events) = (0, 0);
    while started.elapsed() < settings.duration {
        events += commit_batch(&mut conn, &mut calls, &documents, settings)?;
        written += settings.batch;
    }
    let backend = if database.is_some() { "PostgreSQL" } else { "SQLite" };
    Ok(RawJourneyReport {
        settings: settings.clone(),
        backend,
        calls: written,
        events,
        elapsed: started.elapsed(),
    })
}

/// Writes one batch of calls in one transaction, as one group commit of the writer would;
/// returns the events appended.
fn commit_batch(
    conn: &mut Connection,
    calls: &mut JourneyCalls,
    documents: &[String],
    settings: &RawJourneySettings,
) -> Result<u64, StoreError> {
    let tx = conn.write_transaction()?;
    // The server's clock (microseconds), so that timestamps take as many bytes as the server's.
    let now = SystemClock.now();
    let mut appended = 0;
    let mut previous = chain::head(&tx, ACCOUNT)?.map_or(chain::GENESIS, |head| head.hash);
    // As the writer does: the counter deltas of the batch, written once per row before the commit.
    let mut counts = projections::tables::PendingCounts::default();
    for _ in 0..settings.batch {
        let call = calls.next(now);
        if settings.projection_code {
            // One `SqlTables` per call, as the server's writer keeps one per command.
            let mut tables = projections::tables::SqlTables::new(&tx);
            for recorded in &call.events {
                previous = log::append(&tx, recorded, &previous)?;
                projections::apply(&mut tables, recorded)?;
            }
            counts.merge(tables.finish()?);
        } else {
            let _document: Option<String> = tx
                .prepare_cached("SELECT document FROM services WHERE account_id = ?1 AND service_id = ?2")?
                .query_row((ACCOUNT, &call.service_id), |row| row.get(0))
                .optional()?;
            for recorded in &call.events {
                previous = log::append(&tx, recorded, &previous)?;
            }
            tx.prepare_cached(
                "INSERT INTO services (account_id, service_id, customer_id, contact_key, started_at, active,
                                       auto_complete_at, expires_at, document)
                     VALUES (?1, ?2, ?3, NULL, ?4, ?5, NULL, NULL, ?6)
                     ON CONFLICT (account_id, service_id) DO UPDATE SET customer_id = excluded.customer_id, active = excluded.active,
                       auto_complete_at = excluded.auto_complete_at, expires_at = excluded.expires_at,
                       document = excluded.document",
            )?
            .execute(params![
                ACCOUNT,
                call.service_id,
                call.customer,
                call.started_at,
                call.call != Call::EndService,
                documents[call.call.index()],
            ])?;
        }
        appended += call.events.len() as u64;
    }
    counts.write(&tx)?;
    tx.commit()?;
    Ok(appended)
}

/// One lifecycle call with the rows it writes.
struct CallRows {
    call: Call,
    service_id: String,
    customer: String,
    /// When the service started, as the `services` row stores it.
    started_at: String,
    events: Vec<RecordedEvent>,
}

/// Where one client is in its current journey.
#[derive(Default)]
struct Journey {
    /// Journeys this client started.
    started: u64,
    /// The next call, by index in `Call::ALL`.
    next: usize,
    service_id: String,
    customer: String,
    started_at: String,
    version: u64,
}

/// The calls the HTTP workload's clients send, interleaved as they would reach the writer:
/// round robin over the clients, each advancing its own journey by one call.
struct JourneyCalls {
    journeys: Vec<Journey>,
    turn: usize,
    next_seq: u64,
}

impl JourneyCalls {
    fn new(clients: u32) -> Self {
        JourneyCalls { journeys: (0..clients).map(|_| Journey::default()).collect(), turn: 0, next_seq: 1 }
    }

    fn next(&mut self, now: DateTime<Utc>) -> CallRows {
        let client = self.turn;
        self.turn = (self.turn + 1) % self.journeys.len();
        let journey = &mut self.journeys[client];
        let call = Call::ALL[journey.next];
        if call == Call::StartService {
            journey.service_id = uuid::Uuid::new_v4().to_string();
            journey.customer = customer_id(client as u32, journey.started);
            journey.started_at = format_time(now);
            journey.version = 0;
            journey.started += 1;
        }
        journey.next = (journey.next + 1) % Call::ALL.len();
        let stream = service_stream(ACCOUNT, &journey.service_id);
        let meta = meta();
        let events = call
            .events(&journey.service_id, &journey.customer, now)
            .into_iter()
            .map(|event| {
                journey.version += 1;
                self.next_seq += 1;
                // One account in a fresh store: its positions are the store-wide ids.
                RecordedEvent {
                    id: self.next_seq - 1,
                    seq: self.next_seq - 1,
                    account: ACCOUNT.to_string(),
                    stream: stream.clone(),
                    stream_version: journey.version,
                    event,
                    meta: meta.clone(),
                    recorded_at: now,
                }
            })
            .collect();
        CallRows {
            call,
            service_id: journey.service_id.clone(),
            customer: journey.customer.clone(),
            started_at: journey.started_at.clone(),
            events,
        }
    }
}
