//! `ctxd import`: account logs into a store that holds none of those accounts, checked line by
//! line and chain by chain, in one transaction.

use std::collections::HashMap;
use std::io::BufRead;
use std::ops::Range;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use crate::store::db::{Connection, Dialect, params};
use chrono::DateTime;

use crate::domain::Event;
use crate::domain::names::check_name;
use crate::store::StoreError;
use crate::store::chain::{self, Hash, Salt};
use crate::store::log;

use super::{COLUMNS, Imported, Line, Phases, TransferError};

/// Loads an export into the store of `conn` (a writer connection; no server may run on the
/// store), checks the chain of each account it loaded and brings their projections up.
///
/// The input holds whole account logs: each account's events with seqs consecutive from 1 (a
/// store's export, or `ctxd export --account`), none of them an account the store holds. One
/// transaction for the whole import, not one per batch of lines: events can never be deleted
/// (the append-only triggers), so a failure after a first committed batch would leave rows that
/// nothing may remove. In one transaction a bad line, a broken chain or a failed rebuild leaves
/// the store exactly as it was.
pub fn import(conn: &mut Connection, input: impl BufRead + Send) -> Result<Imported, TransferError> {
    // That one transaction may write a whole store. In WAL mode each page would be written twice,
    // into the WAL (as large as the store) and again by the checkpoint after the commit; with a
    // rollback journal the pages of an empty store go straight into the file, since pages added
    // to a file need no journal (measured on 1,000,000 events: the commit's 2 s down to 0.4 s,
    // and no WAL as large as the store on disk). The data dir's lock keeps servers away; if a
    // reader (`ctxd verify`) has the file open, the mode cannot change and the import runs in
    // WAL mode, only slower. A larger page cache keeps the `(stream, stream_version)` index,
    // which grows in random order, in memory (measured: 9.4 s of inserts down to 6.8 s); the
    // connection keeps it, as it is meant for this import.
    if conn.dialect() == Dialect::Postgres {
        return import_in_one_transaction(conn, input);
    }
    let rollback_journal = set_journal_mode(conn, "delete");
    conn.execute_batch("PRAGMA cache_size = -262144;")?;
    let imported = import_in_one_transaction(conn, input);
    if rollback_journal && !set_journal_mode(conn, "wal") {
        tracing::warn!("the store stays in rollback-journal mode until it is next opened for writing");
    }
    imported
}

/// Account ids that read the same (`names::look_alike_form`) are refused at import as at
/// creation: among the imported accounts, and beside the store's own.
fn refuse_look_alikes(tx: &Connection, accounts: &[String]) -> Result<(), TransferError> {
    let mut forms: HashMap<String, &String> = HashMap::new();
    for account in accounts {
        if let Some(other) = forms.insert(crate::domain::names::look_alike_form(account), account) {
            return Err(TransferError::LookAlike(account.clone(), other.clone()));
        }
        if let Some(other) = crate::projections::accounts::look_alike_account(tx, account)? {
            return Err(TransferError::LookAlike(account.clone(), other));
        }
    }
    Ok(())
}

/// Sets the journal mode, unless another connection has the file open; answers whether it did.
fn set_journal_mode(conn: &Connection, mode: &str) -> bool {
    let now = conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |row| row.get::<String>(0));
    now.is_ok_and(|now| now.eq_ignore_ascii_case(mode))
}

fn import_in_one_transaction(
    conn: &mut Connection,
    input: impl BufRead + Send,
) -> Result<Imported, TransferError> {
    let tx = conn.write_transaction()?;
    let first_id = log::last_id(&tx)? + 1;
    let mut lap = Instant::now();
    let mut took = || std::mem::replace(&mut lap, Instant::now()).elapsed();
    let (events, mut accounts, mut unsalted) = insert_lines(&tx, input, first_id)?;
    if events == 0 {
        return Err(TransferError::NoEvents);
    }
    let insert = took();
    accounts.sort();
    refuse_look_alikes(&tx, &accounts)?;
    unsalted.sort();
    unsalted.dedup();
    let mut reports = Vec::with_capacity(accounts.len());
    for account in &accounts {
        // An account exported before salted hashes is verified as it came, then salted anew.
        let report = match unsalted.binary_search(account) {
            Ok(_) => crate::store::salting::salt_account(&tx, account)?,
            Err(_) => chain::verify(&tx, account)?,
        };
        if let Some((seq, reason)) = report.first_bad {
            return Err(TransferError::ChainBroken { account: account.clone(), seq, reason });
        }
        reports.push(report);
    }
    if tx.dialect() == Dialect::Postgres {
        // Where each account's next event goes (`account_heads`: the writer's per-account lock).
        let mut heads = tx.prepare_cached(
            "INSERT INTO account_heads AS head (account, last_seq, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (account) DO UPDATE SET last_seq = excluded.last_seq, hash = excluded.hash",
        )?;
        for report in &reports {
            heads.execute((&report.account, report.last_seq, report.head))?;
        }
    }
    let chain = took();
    let built = if first_id == 1 {
        crate::projections::rebuild_within(&tx).map(drop)
    } else {
        // The store's other accounts keep their projections; the new ones start from none.
        crate::projections::fold_into(&tx, &tx, Some(&accounts)).map(drop)
    };
    built.map_err(|error| match error {
        StoreError::Database(error) if error.is_constraint_violation() => TransferError::Clash,
        other => other.into(),
    })?;
    let rebuild = took();
    tx.commit()?;
    let phases = Phases { insert, chain, rebuild, commit: took() };
    Ok(Imported { events, accounts: reports, phases })
}

/// Lines parsed per batch handed from the parsing thread to the inserting one.
const BATCH_LINES: usize = 1024;

/// Lines parsed and checked, on their way to the inserting thread: their texts in one string
/// (one allocation per batch rather than six per event, which the other thread would free).
#[derive(Default)]
struct Batch {
    texts: String,
    rows: Vec<Row>,
    /// Accounts with payloads hashed without salt (duplicates possible across batches).
    unsalted: Vec<String>,
}

/// One event of a batch.
struct Row {
    /// The line it was read from.
    line: u64,
    seq: u64,
    stream_version: u64,
    event_version: u32,
    payload_hash: Hash,
    salt: Option<Salt>,
    hash: Hash,
    /// `account`, `stream`, `event_type`, `data`, `meta` and `recorded_at`, in `Batch::texts`.
    texts: [Range<usize>; 6],
}

impl Batch {
    fn push(&mut self, line: u64, event: &Line<'_>, (payload_hash, salt): (Hash, Option<Salt>), hash: Hash) {
        let texts = [
            &event.account,
            &event.stream,
            &event.event_type,
            event.data.get(),
            event.meta.get(),
            &event.recorded_at,
        ]
        .map(|text| {
            let start = self.texts.len();
            self.texts.push_str(text);
            start..self.texts.len()
        });
        let (seq, stream_version, event_version) = (event.seq, event.stream_version, event.event_version);
        self.rows.push(Row { line, seq, stream_version, event_version, payload_hash, salt, hash, texts });
    }
}

/// Inserts every line of `input`, the first with id `first_id`. A second thread reads and
/// parses the lines while this one inserts them, so that the two costs overlap. Returns the
/// number of events inserted, the accounts they belong to and those with payloads hashed without
/// salt.
fn insert_lines(
    tx: &Connection,
    input: impl BufRead + Send,
    first_id: u64,
) -> Result<(u64, Vec<String>, Vec<String>), TransferError> {
    let (_, id) = log::new_id(tx, 0, "?13");
    let mut insert = tx.prepare(&format!(
        "INSERT INTO events ({COLUMNS}, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, {id})"
    ))?;
    let mut held = tx.prepare("SELECT 1 FROM events WHERE account = ?1 LIMIT 1")?;
    let (mut accounts, mut unsalted) = (Vec::new(), Vec::new());
    std::thread::scope(|scope| {
        let (batches, parsed) = std::sync::mpsc::sync_channel(4);
        scope.spawn(move || parse_lines(input, &batches));
        let mut inserted = 0;
        // An error returned here drops `parsed`, which stops the parsing thread at its next batch.
        for batch in parsed {
            let mut batch = batch?;
            unsalted.append(&mut batch.unsalted);
            for row in &batch.rows {
                let [account, stream, event_type, data, meta, recorded_at] =
                    row.texts.clone().map(|range| &batch.texts[range]);
                // Each account's first line has seq 1 (the parser checked): it is new here or refused.
                if row.seq == 1 {
                    if held.exists([account])? {
                        return Err(TransferError::AccountExists(account.to_string()));
                    }
                    accounts.push(account.to_string());
                }
                let values = params![
                    row.seq,
                    account,
                    stream,
                    row.stream_version,
                    event_type,
                    row.event_version,
                    log::stored_payload(tx, event_type, data),
                    meta,
                    recorded_at,
                    row.payload_hash.as_slice(),
                    row.hash.as_slice(),
                    row.salt.as_ref().map(|salt| salt.as_slice()),
                    log::new_id(tx, first_id + inserted, "?13").0,
                ];
                insert.execute(values).map_err(|error| TransferError::Line {
                    line: row.line,
                    reason: format!("it cannot be stored: {error}"),
                })?;
                inserted += 1;
            }
        }
        Ok((inserted, accounts, unsalted))
    })
}

/// Reads, parses and checks the lines of `input`, sending them in batches, and an error as the
/// last batch if a line is wrong.
fn parse_lines(mut input: impl BufRead, batches: &SyncSender<Result<Batch, TransferError>>) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut batch = Batch::default();
    let (mut last_seqs, mut versions) = (HashMap::new(), HashMap::new());
    for line in 1.. {
        buffer.clear();
        let parsed = match input.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => parse_line(&buffer, line, (&mut last_seqs, &mut versions), &mut batch),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = parsed {
            let _ = batches.send(Err(error));
            return;
        }
        if batch.rows.len() == BATCH_LINES && batches.send(Ok(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
    let _ = batches.send(Ok(batch));
}

/// Parses line number `line` of the input into `batch`: the next event of its account's log
/// and of its stream, whose last seq and version so far `last_seqs` and `versions` hold.
fn parse_line(
    bytes: &[u8],
    line: u64,
    (last_seqs, versions): (&mut HashMap<String, u64>, &mut HashMap<String, u64>),
    batch: &mut Batch,
) -> Result<(), TransferError> {
    let at = |reason: String| TransferError::Line { line, reason };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|error| at(format!("it is not UTF-8: {error}")))?;
    if text.is_empty() {
        return Err(at("it is empty; every line must hold one event".into()));
    }
    // An archive segment's header: the events after it are checked like any others.
    if text.starts_with(r#"{"ctxd_segment":"#) {
        serde_json::from_str::<crate::store::archive::segment::HeaderLine>(text)
            .map_err(|error| at(format!("a segment header that does not read: {error}")))?;
        return Ok(());
    }
    let event: Line<'_> = serde_json::from_str(text).map_err(|error| at(not_an_event(&error)))?;
    check_name("account", &event.account).map_err(|error| at(error.to_string()))?;
    let last = last_seqs.get(event.account.as_ref()).copied().unwrap_or(0);
    if event.seq != last + 1 {
        return Err(at(out_of_sequence(&event.account, event.seq, last)));
    }
    let version = versions.get(event.stream.as_ref()).copied().unwrap_or(0);
    if event.stream_version != version + 1 {
        return Err(at(format!(
            "stream_version {} of stream {:?} follows its version {version}: versions must run 1, 2, 3, …",
            event.stream_version, event.stream
        )));
    }
    let written =
        DateTime::parse_from_rfc3339(&event.recorded_at).map(|time| log::format_time(time.to_utc()));
    if written.as_deref() != Ok(event.recorded_at.as_ref()) {
        return Err(at(format!(
            "recorded_at {:?} is not a time as ctxd writes it (RFC 3339, UTC, microseconds)",
            event.recorded_at
        )));
    }
    if !event.meta.get().starts_with('{') {
        return Err(at("meta is not a JSON object".into()));
    }
    match Event::decode(&event.event_type, event.data.get()) {
        Ok(decoded) if decoded.is_of(&event.account, &event.stream) => {}
        Ok(_) => {
            return Err(at(format!(
                "its stream {:?} or its payload is not one of account {:?}'s",
                event.stream, event.account
            )));
        }
        Err(error) => {
            return Err(at(format!("its payload does not read as a {}: {error}", event.event_type)));
        }
    }
    let payload_hash = parse_hash(&event.payload_hash).map_err(|why| at(format!("payload_hash {why}")))?;
    let hash = parse_hash(&event.hash).map_err(|why| at(format!("hash {why}")))?;
    let salt = match &event.payload_salt {
        Some(salt) => Some(parse_hash(salt).map_err(|why| at(format!("payload_salt {why}")))?),
        // A payload hashed without salt by a store before salted hashes, and not erased since:
        // its account is salted anew once imported.
        None if chain::payload_hash(event.data.get()) == payload_hash => {
            if batch.unsalted.last().map(String::as_str) != Some(&event.account) {
                batch.unsalted.push(event.account.to_string());
            }
            None
        }
        None => None,
    };
    match last {
        0 => last_seqs.insert(event.account.to_string(), 1),
        _ => last_seqs.get_mut(event.account.as_ref()).map(|seq| std::mem::replace(seq, event.seq)),
    };
    match version {
        0 => versions.insert(event.stream.to_string(), 1),
        _ => versions.get_mut(event.stream.as_ref()).map(|v| std::mem::replace(v, event.stream_version)),
    };
    batch.push(line, &event, (payload_hash, salt), hash);
    Ok(())
}

/// What serde_json found wrong with a line, by column: its own "line 1" would mislead.
fn not_an_event(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let what = message.strip_suffix(&position).unwrap_or(&message);
    format!("it is not a well-formed event: {what}, at column {}", error.column())
}

/// Why event `seq` of `account` cannot follow its event `last`: an import needs each account's
/// seqs 1, 2, 3 … in order.
fn out_of_sequence(account: &str, seq: u64, last: u64) -> String {
    let partial = "an export after a seq (`ctxd export --account … --after`) cannot be imported, \
                   only whole account logs (an archived account's: its segments, in order, then its export)";
    if last == 0 {
        format!("the first event of account {account:?} has seq {seq}, not 1: {partial}")
    } else {
        format!(
            "seq {seq} of account {account:?} follows its seq {last}: seqs must be consecutive; {partial}"
        )
    }
}

/// The 32 bytes of a hash written as 64 hex digits. By hand, with a table and no branch per
/// digit: `hex::decode_to_slice`, and a first version with a `match` per digit, cost about a
/// third of the parsing thread's time.
fn parse_hash<const N: usize>(hex: &str) -> Result<[u8; N], String> {
    let digits = hex.as_bytes();
    let mut hash = [0u8; N];
    let mut invalid = digits.len() != 2 * N;
    if !invalid {
        for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
            let (high, low) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
            invalid |= (high | low) & NOT_HEX != 0;
            *byte = high << 4 | low;
        }
    }
    if invalid { Err(format!("is not {} hex digits: {hex:?}", 2 * N)) } else { Ok(hash) }
}

/// Marks a byte that is not a hex digit in `HEX_VALUES` (no digit's value has this bit).
const NOT_HEX: u8 = 0x10;

/// The value of each byte as a hex digit, or `NOT_HEX`.
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut byte = 0;
    while byte < 256 {
        values[byte] = match byte as u8 {
            digit @ b'0'..=b'9' => digit - b'0',
            digit @ b'a'..=b'f' => digit - b'a' + 10,
            digit @ b'A'..=b'F' => digit - b'A' + 10,
            _ => NOT_HEX,
        };
        byte += 1;
    }
    values
};
