//! `ctxd export`: the selected events as NDJSON, from one read snapshot.

use std::borrow::Cow;
use std::io::Write;

use crate::store::db::{Connection, params};
use serde_json::value::RawValue;

use crate::store::StoreError;

use super::{COLUMNS, Line, Selection, TransferError};

/// Writes the selected events to `out` in commit order, one JSON object per line, from one read
/// snapshot of `conn` (so it may run beside a live server), streaming rows: memory stays
/// constant whatever the size of the log. Returns the number of events written.
pub fn export(conn: &Connection, selection: &Selection, out: &mut impl Write) -> Result<u64, TransferError> {
    let snapshot = conn.snapshot()?;
    let result = export_within(conn, selection, out);
    snapshot.commit()?;
    result
}

/// `export` inside the caller's read transaction.
pub fn export_within(
    conn: &Connection,
    selection: &Selection,
    out: &mut impl Write,
) -> Result<u64, TransferError> {
    // Two statements rather than one with an optional filter: SQLite plans a statement once, and
    // only the one that names the account can use the `(account, seq)` index.
    let filter = match selection.account {
        // Archived accounts' live logs: their segments hold the rest (docs/AUDIT.md, "Archives").
        None => &format!(
            "?1 >= 0 AND CAST(?2 AS TEXT) IS NULL AND CAST(?3 AS BIGINT) >= 0 AND CAST(?4 AS TEXT) IS NULL AND {} ORDER BY id",
            crate::projections::LIVE
        ),
        Some(_) if selection.streams.is_some() => &format!(
            "account = ?2 AND seq > ?1 AND seq <= ?3 AND stream IN {} ORDER BY seq",
            crate::projections::json_array_elements(conn, "?4")
        ),
        Some(_) => "account = ?2 AND seq > ?1 AND seq <= ?3 AND CAST(?4 AS TEXT) IS NULL ORDER BY seq",
    };
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM events WHERE {filter}"))?;
    let bound = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    // The live log: after the account's last archive (an export of an archived account starts
    // there; its segments hold the rest).
    let after = match &selection.account {
        Some(account) => selection.after.max(crate::store::archive::archived_through(conn, account)?),
        None => selection.after,
    };
    let through = bound(selection.through.unwrap_or(u64::MAX));
    let streams =
        selection.streams.as_ref().map(|streams| serde_json::to_string(streams).expect("names serialize"));
    let mut rows = statement.query_streamed(params![bound(after), selection.account, through, streams])?;
    let mut written = 0;
    while let Some(row) = rows.next()? {
        let seq: u64 = row.get(0)?;
        let text = |index| row.get_ref(index).and_then(|value| value.as_str());
        let json = |index, column| stored_json(seq, column, text(index)?);
        let hex = |index, column| stored_hash_hex(seq, column, row.get_ref(index)?.as_blob()?);
        let (payload_hash, hash) = (hex(9, "payload_hash")?, hex(10, "hash")?);
        let salt: Option<Vec<u8>> = row.get(11)?;
        let data = crate::store::payload::text(row.get_ref(6)?)?;
        let line = Line {
            seq,
            account: Cow::Borrowed(text(1)?),
            stream: Cow::Borrowed(text(2)?),
            stream_version: row.get(3)?,
            event_type: Cow::Borrowed(text(4)?),
            event_version: row.get(5)?,
            data: stored_json(seq, "data", &data)?,
            meta: json(7, "meta")?,
            recorded_at: Cow::Borrowed(text(8)?),
            payload_hash: Cow::Borrowed(std::str::from_utf8(&payload_hash).expect("hex is ASCII")),
            hash: Cow::Borrowed(std::str::from_utf8(&hash).expect("hex is ASCII")),
            payload_salt: salt.map(|salt| Cow::Owned(hex::encode(salt))),
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

/// A stored JSON column as a raw value, refused unless it is valid JSON with nothing around
/// it: the exported text must be the stored text byte for byte.
fn stored_json<'a>(seq: u64, column: &str, stored: &'a str) -> Result<&'a RawValue, TransferError> {
    let corrupt = |why: String| StoreError::Corrupt(format!("event {seq}: its {column} {why}"));
    let raw: &RawValue =
        serde_json::from_str(stored).map_err(|error| corrupt(format!("is not JSON: {error}")))?;
    if raw.get().len() != stored.len() {
        return Err(corrupt("has whitespace around its JSON value".into()).into());
    }
    Ok(raw)
}

fn stored_hash_hex(seq: u64, column: &str, stored: &[u8]) -> Result<[u8; 64], TransferError> {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(stored, &mut hex)
        .map_err(|_| StoreError::Corrupt(format!("event {seq}: its {column} is not 32 bytes")))?;
    Ok(hex)
}
