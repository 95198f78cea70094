//! Salted payload hashes for logs written before them: migration 0014, and `ctxd import` of an
//! export from such a store (docs/AUDIT.md, "Erasure that guessing cannot undo").
//!
//! Before, `payload_hash` was the plain sha256 of a payload and stayed after an erasure, so
//! hashing guesses (a phone number, an SSN) against it, or against the event's link, confirmed
//! an erased value. Each account's chain is therefore written anew, once: every payload that is
//! still there gets a salt and its salted hash; every payload already erased gets the sha256 of
//! a fresh salt and its old hash, the salt thrown away, so nothing can confirm a guess of it;
//! every link is computed again. The chain is verified first, and its old head and any break are
//! kept in `chain_rewrites`: an auditor holding an old signed head can see it was this
//! rewrite's starting point, and a break found then is reported by `verify` from then on.

use super::StoreError;
use super::chain::{self, ChainReport, GENESIS, Hash, link, new_salt, payload_hash, salted_payload_hash};
use super::db::{Connection, Dialect, OptionalExtension, params};

/// Rows rewritten per read, so that memory stays bounded whatever an account's length.
const WINDOW: u64 = 1024;

/// Migration 0014: salts every account's log.
pub fn salt_every_account(conn: &Connection) -> Result<(), StoreError> {
    let accounts = chain::accounts(conn)?;
    let mut events = 0;
    for account in &accounts {
        events += salt_account(conn, account)?.events;
    }
    let erased: bool =
        conn.query_row("SELECT count(*) > 0 FROM chain_rewrites WHERE old_head IS NULL", [], |row| {
            row.get(0)
        })?;
    if erased {
        // The store-wide head of migration 0007 was computed over erased payloads' plain hashes too.
        conn.execute("UPDATE global_chain_heads SET head = ?1", [Vec::<u8>::new()])?;
    }
    if events > 0 {
        tracing::info!(
            accounts = accounts.len(),
            events,
            "salted every payload hash and chained each account anew; the old heads are kept in chain_rewrites"
        );
    }
    Ok(())
}

/// Verifies `account`'s chain as it stands, then salts its payloads and links it anew; answers
/// the report of the new chain, with any break the old one had.
pub fn salt_account(conn: &Connection, account: &str) -> Result<ChainReport, StoreError> {
    // PostgreSQL: the updates go out together ahead of the next read, not a round trip each.
    conn.set_deferred(true);
    let salted = salt_account_deferred(conn, account);
    conn.set_deferred(false);
    salted
}

fn salt_account_deferred(conn: &Connection, account: &str) -> Result<ChainReport, StoreError> {
    let old = chain::verify_salted(conn, account, (0, chain::GENESIS), false)?;
    let mut select = conn.prepare(&format!(
        "{} WHERE account = ?1 AND seq > ?2 ORDER BY seq LIMIT {WINDOW}",
        chain::SELECT_ROWS
    ))?;
    let mut update = conn.prepare(
        "UPDATE events SET payload_salt = ?3, payload_hash = ?4, hash = ?5 WHERE account = ?1 AND seq = ?2",
    )?;
    let mut head = GENESIS;
    let mut last_seq = 0;
    let mut sealed = false;
    loop {
        let mut rewritten = Vec::with_capacity(WINDOW as usize);
        let mut rows = select.query(params![account, last_seq])?;
        while let Some(row) = rows.next()? {
            let (columns, data) = chain::read_row(&row)?;
            let data = data?;
            let data = &*data;
            let stored: Vec<u8> = row.get(9)?;
            let salt: Option<Vec<u8>> = row.get(11)?;
            let (salt, payload) = match salt {
                Some(salt) => {
                    (Some(salt), stored.as_slice().try_into().unwrap_or_else(|_| payload_hash(data)))
                }
                None if stored == payload_hash(data) => {
                    let salt = new_salt();
                    (Some(salt.to_vec()), salted_payload_hash(&salt, data))
                }
                // Erased (or changed, which `old` reports): the old hash sealed under a salt
                // nobody keeps.
                None => {
                    sealed = true;
                    (None, salted_payload_hash(&new_salt(), &hex::encode(&stored)))
                }
            };
            head = link(&head, &columns, &payload);
            last_seq = columns.seq;
            rewritten.push((columns.seq, salt, payload, head));
        }
        drop(rows);
        if rewritten.is_empty() {
            break;
        }
        for (seq, salt, payload, hash) in rewritten {
            update.execute_later(params![account, seq, salt, payload.as_slice(), hash.as_slice()])?;
        }
    }
    if last_seq == 0 {
        return Ok(old);
    }
    record(conn, &old, &head, sealed)?;
    Ok(ChainReport { head, ..old })
}

/// Keeps the old chain's head and first break beside the new head. Not the old head of a chain
/// that held an erased payload: it was computed over that payload's plain hash, so recomputing
/// the old chain from a guess would confirm the guess against it.
fn record(conn: &Connection, old: &ChainReport, new_head: &Hash, sealed: bool) -> Result<(), StoreError> {
    let old_head = (!sealed).then_some(old.head.as_slice());
    let (position, reason) = old.first_bad.clone().unzip();
    conn.execute(
        "INSERT INTO chain_rewrites (account, last_seq, old_head, new_head, rewritten_at, first_bad_position, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            &old.account,
            old.last_seq,
            old_head,
            new_head.as_slice(),
            chrono::Utc::now().to_rfc3339(),
            position,
            reason
        ],
    )?;
    if conn.dialect() == Dialect::Postgres {
        // The writer's per-account lock row carries the head it chains to.
        conn.execute(
            "UPDATE account_heads SET hash = ?2 WHERE account = ?1",
            params![&old.account, new_head.as_slice()],
        )?;
    }
    Ok(())
}

/// Where `account`'s chain did not verify when its payloads were salted, and why.
pub fn break_before_salting(conn: &Connection, account: &str) -> Result<Option<(u64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT first_bad_position, reason FROM chain_rewrites
             WHERE account = ?1 AND first_bad_position IS NOT NULL",
            [account],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::tests::store_at;
    use crate::store::migrations::migrate;

    const SSN: &str = r#"{"ssn":"123-45-6789"}"#;
    const ERASED: &str = r#"{"ssn":"[erased]"}"#;

    /// Redacts the first payload of a store before migration 0014, as an erasure then did.
    fn redact_first_payload(conn: &Connection) {
        conn.execute_batch(&format!(
            "INSERT INTO erasure_in_progress VALUES (1);
             UPDATE events SET data = '{ERASED}' WHERE seq = 1;
             DELETE FROM erasure_in_progress;"
        ))
        .unwrap();
    }

    #[test]
    fn migrating_salts_live_payloads_and_seals_erased_ones_and_their_old_head() {
        let erasure = format!(
            r#"{{"namespace":"ns","session_id":"s","redacted":[{{"seq":1,"redacted_sha256":"{}"}}]}}"#,
            hex::encode(payload_hash(ERASED))
        );
        let mut conn = store_at(
            6,
            &[
                ("a", "ctx/a/ns/s", "PropertiesPatched", SSN),
                ("a", "ctx/a/ns/s", "PropertiesPatched", SSN),
                ("a", "ctx/a/ns/s", "SessionErased", &erasure),
            ],
        );
        redact_first_payload(&conn);
        migrate(&mut conn).unwrap();

        let row = |seq: u64| -> (Vec<u8>, Option<Vec<u8>>, String) {
            conn.query_row(
                "SELECT payload_hash, payload_salt, data FROM events WHERE account = 'a' AND seq = ?1",
                [seq],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap()
        };
        let (erased_hash, erased_salt, _) = row(1);
        assert_eq!(erased_salt, None, "an erased payload's salt is not kept");
        assert_ne!(erased_hash, payload_hash(SSN), "the old hash no longer confirms a guess");
        let (live_hash, live_salt, data) = row(2);
        let salt = live_salt.expect("a live payload is salted");
        assert_eq!(live_hash, salted_payload_hash(&salt, &data));
        assert_ne!(live_hash, payload_hash(SSN));

        let report = chain::verify(&conn, "a").unwrap();
        assert_eq!((report.events, report.first_bad), (3, None));
        let (old_head, new_head): (Option<Vec<u8>>, Vec<u8>) = conn
            .query_row("SELECT old_head, new_head FROM chain_rewrites WHERE account = 'a'", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(new_head, report.head);
        assert_eq!(old_head, None, "an old head computed over an erased payload's plain hash is not kept");

        // Append-only again: a salt cannot be set, only removed by an erasure.
        let error = conn.execute("UPDATE events SET payload_salt = x'00' WHERE seq = 2", []).unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
        crate::store::log::redact_payload(&conn, "a", 2, ERASED).unwrap();
        assert_eq!(row(2).1, None);
    }

    #[test]
    fn a_changed_payload_found_when_salting_stays_reported() {
        let mut conn = store_at(6, &[("a", "ctx/a/ns/s", "PropertiesPatched", SSN)]);
        redact_first_payload(&conn);
        migrate(&mut conn).unwrap();
        let (seq, _) = chain::verify(&conn, "a").unwrap().first_bad.expect("the rewrite does not launder it");
        assert_eq!(seq, 1);
        assert_eq!(break_before_salting(&conn, "a").unwrap().map(|(seq, _)| seq), Some(1));
    }
}
