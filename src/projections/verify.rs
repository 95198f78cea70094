//! `ctxd verify`: rebuilds the projections from the log into a scratch database and compares
//! them, table by table, with the live ones, inside one read snapshot of the live store.

use crate::store::db::Connection;
use crate::store::db::Value;

use super::{TABLES, checksums, fold_into};
use crate::store::{StoreError, migrations};

/// What `verify` found.
#[derive(Debug)]
pub struct Report {
    pub events: u64,
    /// `(table, checksum)` of the live projections.
    pub tables: Vec<(String, String)>,
    /// The first difference, if any: table and the first row that differs.
    pub mismatch: Option<String>,
}

/// Verifies the store whose read-only connection is `live`.
pub fn verify(live: &Connection) -> Result<Report, StoreError> {
    let snapshot = live.snapshot()?;
    let result = verify_in_snapshot(live);
    snapshot.commit()?;
    result
}

fn verify_in_snapshot(live: &Connection) -> Result<Report, StoreError> {
    let scratch_file = ScratchFile::new()?;
    let mut scratch = scratch_file.open()?;
    migrations::migrate(&mut scratch)?;
    scratch.execute_batch("BEGIN")?;
    let events = fold_into(live, &scratch, None)?;
    scratch.execute_batch("COMMIT")?;
    let tables = checksums(live)?;
    let rebuilt = checksums(&scratch)?;
    let mismatch = tables
        .iter()
        .zip(&rebuilt)
        .zip(TABLES)
        .find(|((a, b), _)| a.1 != b.1)
        .map(|(_, (table, order_by))| first_difference(live, &scratch, table, order_by))
        .transpose()?;
    Ok(Report { events, tables, mismatch })
}

/// The scratch store a verify rebuilds into: a file in the temp dir rather than memory, so that
/// the rebuilt projections cost page cache, not a second copy of them in the process's memory
/// beside the folded tables (measured in docs/PERFORMANCE.md). Removed when dropped.
struct ScratchFile(std::path::PathBuf);

impl ScratchFile {
    fn new() -> Result<ScratchFile, StoreError> {
        let name = format!("ctxd-verify-{}.db", uuid::Uuid::new_v4().simple());
        Ok(ScratchFile(std::env::temp_dir().join(name)))
    }

    /// A connection that keeps no journal and never syncs: the file is thrown away. The file is
    /// its owner's alone, as the store's are: it holds the tenants' data.
    fn open(&self) -> Result<Connection, StoreError> {
        let mut options = std::fs::File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&self.0).map_err(|error| crate::store::named(&self.0, error))?;
        let conn =
            rusqlite::Connection::open(&self.0).map_err(|error| StoreError::from(error).naming(&self.0))?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;",
        )?;
        Ok(conn.into())
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The first row of `table` that differs between the two stores, reading both in key order a
/// row at a time (a table may be larger than memory).
fn first_difference(
    live: &Connection,
    rebuilt: &Connection,
    table: &str,
    order_by: &str,
) -> Result<String, StoreError> {
    let sql = format!("SELECT * FROM {table} ORDER BY {order_by}");
    let (mut a, mut b) = (live.prepare(&sql)?, rebuilt.prepare(&sql)?);
    let columns = a.column_count();
    let (mut a, mut b) = (a.query_streamed([])?, b.query_streamed([])?);
    let next = |rows: &mut crate::store::db::QueryRows<'_>| -> Result<Option<Vec<Value>>, StoreError> {
        Ok(match rows.next()? {
            Some(row) => {
                Some((0..columns).map(|index| readable(row.get::<Value>(index)?)).collect::<Result<_, _>>()?)
            }
            None => None,
        })
    };
    for index in 0.. {
        let (a, b) = (next(&mut a)?, next(&mut b)?);
        if a != b {
            return Ok(format!("table {table}, row {index}: live {a:?}, rebuilt from the log {b:?}"));
        }
        if a.is_none() {
            break;
        }
    }
    Ok(format!("table {table}: checksums differ"))
}

/// A projection's value as compared and shown: a compressed text (its only blobs) as its text.
fn readable(value: Value) -> Result<Value, StoreError> {
    Ok(match value {
        Value::Blob(bytes) => Value::Text(crate::store::payload::decompress(&bytes)?),
        value => value,
    })
}

/// Names stored in a form other than NFC (`names::normal_form`): written before names were kept
/// in NFC, they are not reached through `/v1/` paths, which take names in NFC. Answers how many,
/// and the first `shown` of them as `account/namespace/session/property` paths.
pub fn names_not_in_nfc(conn: &Connection, shown: usize) -> Result<(u64, Vec<String>), StoreError> {
    let snapshot = conn.snapshot()?;
    let found = names_not_in_nfc_in_snapshot(conn, shown);
    snapshot.commit()?;
    found
}

fn names_not_in_nfc_in_snapshot(conn: &Connection, shown: usize) -> Result<(u64, Vec<String>), StoreError> {
    let normal = |name: &str| crate::domain::names::normal_form(name.to_string()) == name;
    let mut found = (0, Vec::new());
    let queries = [
        "SELECT account_id, '', '', '' FROM accounts",
        "SELECT account_id, namespace, '', '' FROM namespaces",
        "SELECT account_id, namespace, session_id, key FROM properties",
    ];
    for sql in queries {
        let mut statement = conn.prepare(sql)?;
        let mut rows = statement.query_streamed([])?;
        while let Some(row) = rows.next()? {
            let names: [String; 4] = [row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?];
            if names.iter().all(|name| normal(name)) {
                continue;
            }
            found.0 += 1;
            if found.1.len() < shown {
                found.1.push(
                    names.iter().filter(|name| !name.is_empty()).cloned().collect::<Vec<_>>().join("/"),
                );
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stored_outside_nfc_are_found() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (account_id, created_at) VALUES ('acme', 't'), ('zoe\u{0308}', 't');
             INSERT INTO namespaces (account_id, namespace, created_at) VALUES ('acme', 'caf\u{00e9}', 't');
             INSERT INTO properties (account_id, namespace, session_id, key, value)
             VALUES ('acme', 'caf\u{00e9}', 'rene\u{0301}e', 'k', '1'), ('acme', 'caf\u{00e9}', 's', 'k', '1');",
        )
        .unwrap();
        let (count, first) = names_not_in_nfc(&conn, 5).unwrap();
        assert_eq!(count, 2);
        assert_eq!(first, ["zoe\u{0308}", "acme/caf\u{00e9}/rene\u{0301}e/k"]);
    }
}
