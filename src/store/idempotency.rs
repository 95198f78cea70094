//! The idempotency table: the first outcome of each `Idempotency-Key`, written in the same
//! transaction as the events it guards, and pruned after the retention.

use crate::store::db::{Connection, OptionalExtension};
use chrono::{DateTime, Utc};

use super::{Idempotency, Outcome, StoreError, WriteError};

/// The stored outcome of an earlier request with this key, marked as replayed; an error when the
/// key was used for a different request.
pub fn first_outcome(conn: &Connection, key: &Idempotency) -> Result<Option<Outcome>, WriteError> {
    let stored: Option<(String, String)> = conn
        .prepare_cached("SELECT fingerprint, outcome FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
        .query_row((&key.scope, &key.key), |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((fingerprint, outcome)) = stored else {
        return Ok(None);
    };
    if fingerprint != key.fingerprint {
        return Err(WriteError::IdempotencyMismatch);
    }
    let mut outcome: Outcome = serde_json::from_str(&outcome)
        .map_err(|error| StoreError::Corrupt(format!("idempotency record: {error}")))?;
    outcome.replayed = true;
    Ok(Some(outcome))
}

/// Remembers the outcome of the first request with this key.
pub fn record(
    conn: &Connection,
    key: &Idempotency,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute_later((
        &key.scope,
        &key.key,
        &key.fingerprint,
        serde_json::to_string(outcome).expect("outcome serializes"),
        now.timestamp_micros(),
    ))?;
    Ok(())
}

/// Forgets keys recorded more than `retention_seconds` before `now`.
pub fn prune(conn: &Connection, now: DateTime<Utc>, retention_seconds: u64) -> Result<(), StoreError> {
    let retention = i64::try_from(retention_seconds).unwrap_or(i64::MAX).saturating_mul(1_000_000);
    let cutoff = now.timestamp_micros().saturating_sub(retention);
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([cutoff])?;
    Ok(())
}
