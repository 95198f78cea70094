//! Applies the numbered `.sql` files of `migrations/sqlite/` (or `migrations/postgres/`) in order,
//! in one transaction, and records each in `schema_version`. A database written by a newer
//! binary is refused. On PostgreSQL, nodes that start together take turns (an advisory lock).

use super::db::{Connection, Dialect};

use super::StoreError;

/// Work a migration does in Rust, inside its transaction.
pub type Step = fn(&Connection) -> Result<(), StoreError>;

/// One migration file, embedded in the binary.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
    /// It changes how projections derive from the log: a store that existed before it has
    /// every projection rebuilt from its log right after migrating.
    pub rebuilds_projections: bool,
    /// A step that SQL cannot do, run in the same transaction right after `sql`.
    pub then: Option<Step>,
}

/// Every migration, in order. `migrations_dir_matches_this_list` keeps it in step with the folder.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 2,
        name: "0002_journeys.sql",
        sql: include_str!("../../migrations/sqlite/0002_journeys.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 3,
        name: "0003_analytics.sql",
        sql: include_str!("../../migrations/sqlite/0003_analytics.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 4,
        name: "0004_funnels.sql",
        sql: include_str!("../../migrations/sqlite/0004_funnels.sql"),
        rebuilds_projections: true,
        then: None,
    },
    Migration {
        version: 5,
        name: "0005_chain.sql",
        sql: include_str!("../../migrations/sqlite/0005_chain.sql"),
        rebuilds_projections: false,
        // Hashed by 0007, which chains each account's events anew.
        then: None,
    },
    Migration {
        version: 6,
        name: "0006_append_only.sql",
        sql: include_str!("../../migrations/sqlite/0006_append_only.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 7,
        name: "0007_account_logs.sql",
        sql: include_str!("../../migrations/sqlite/0007_account_logs.sql"),
        rebuilds_projections: false,
        then: Some(super::chain::split_per_account),
    },
    Migration {
        version: 8,
        name: "0008_account_logs_in_place.sql",
        sql: include_str!("../../migrations/sqlite/0008_account_logs_in_place.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 9,
        name: "0009_account_limits.sql",
        sql: include_str!("../../migrations/sqlite/0009_account_limits.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 10,
        name: "0010_session_sizes.sql",
        sql: include_str!("../../migrations/sqlite/0010_session_sizes.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 11,
        name: "0011_namespace_deletions.sql",
        sql: include_str!("../../migrations/sqlite/0011_namespace_deletions.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 12,
        name: "0012_customer_erasures.sql",
        sql: include_str!("../../migrations/sqlite/0012_customer_erasures.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 13,
        name: "0013_named_keys.sql",
        sql: include_str!("../../migrations/sqlite/0013_named_keys.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 14,
        name: "0014_salted_payloads.sql",
        sql: include_str!("../../migrations/sqlite/0014_salted_payloads.sql"),
        rebuilds_projections: false,
        then: Some(super::salting::salt_every_account),
    },
    Migration {
        version: 15,
        name: "0015_salted_payloads_append_only.sql",
        sql: include_str!("../../migrations/sqlite/0015_salted_payloads_append_only.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 16,
        name: "0016_archives.sql",
        sql: include_str!("../../migrations/sqlite/0016_archives.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 17,
        name: "0017_compressed_payloads.sql",
        sql: include_str!("../../migrations/sqlite/0017_compressed_payloads.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 18,
        name: "0018_staged_snapshots.sql",
        sql: include_str!("../../migrations/sqlite/0018_staged_snapshots.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 19,
        name: "0019_conversations.sql",
        sql: include_str!("../../migrations/sqlite/0019_conversations.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 20,
        name: "0020_abandoned_when_left.sql",
        sql: include_str!("../../migrations/sqlite/0020_abandoned_when_left.sql"),
        rebuilds_projections: true,
        then: None,
    },
    Migration {
        version: 21,
        name: "0021_daily_rollups.sql",
        sql: include_str!("../../migrations/sqlite/0021_daily_rollups.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 22,
        name: "0022_abandoned_by_end.sql",
        sql: include_str!("../../migrations/sqlite/0022_abandoned_by_end.sql"),
        rebuilds_projections: false,
        then: None,
    },
];

/// The PostgreSQL backend's migrations: its history starts with the schema SQLite's reached.
pub const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 2,
        name: "0002_named_keys.sql",
        sql: include_str!("../../migrations/postgres/0002_named_keys.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 3,
        name: "0003_salted_payloads.sql",
        sql: include_str!("../../migrations/postgres/0003_salted_payloads.sql"),
        rebuilds_projections: false,
        then: Some(super::salting::salt_every_account),
    },
    Migration {
        version: 4,
        name: "0004_salted_payloads_append_only.sql",
        sql: include_str!("../../migrations/postgres/0004_salted_payloads_append_only.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 5,
        name: "0005_archives.sql",
        sql: include_str!("../../migrations/postgres/0005_archives.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 6,
        name: "0006_staged_snapshots.sql",
        sql: include_str!("../../migrations/postgres/0006_staged_snapshots.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 7,
        name: "0007_conversations.sql",
        sql: include_str!("../../migrations/postgres/0007_conversations.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 8,
        name: "0008_abandoned_when_left.sql",
        sql: include_str!("../../migrations/postgres/0008_abandoned_when_left.sql"),
        rebuilds_projections: true,
        then: None,
    },
    Migration {
        version: 9,
        name: "0009_daily_rollups.sql",
        sql: include_str!("../../migrations/postgres/0009_daily_rollups.sql"),
        rebuilds_projections: false,
        then: None,
    },
    Migration {
        version: 10,
        name: "0010_abandoned_by_end.sql",
        sql: include_str!("../../migrations/postgres/0010_abandoned_by_end.sql"),
        rebuilds_projections: false,
        then: None,
    },
];

/// The advisory lock that nodes migrating one PostgreSQL database take turns on.
const MIGRATION_LOCK: i64 = 0x6374_7864_6d69_6772; // "ctxdmigr"

fn migrations_of(dialect: Dialect) -> &'static [Migration] {
    match dialect {
        Dialect::Sqlite => MIGRATIONS,
        Dialect::Postgres => POSTGRES_MIGRATIONS,
    }
}

/// The schema version this binary writes on `conn`'s backend.
pub fn latest_version(conn: &Connection) -> u32 {
    migrations_of(conn.dialect()).last().map_or(0, |m| m.version)
}

/// The schema version of the database (0 for one that no ctxd wrote).
pub fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    let exists: bool = conn.query_row(
        conn.sql(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
            "SELECT to_regclass('schema_version') IS NOT NULL",
        ),
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    Ok(conn.query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |row| row.get(0))?)
}

/// Brings `conn` up to the latest schema; refuses a database newer than this binary.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_then_rebuild(conn, |_| Ok(()))
}

/// `migrate`, and when a migration applied to an existing store changes how projections derive
/// from the log (`Migration::rebuilds_projections`), `rebuild` in the same transaction: a crash
/// leaves the store either as it was or migrated and rebuilt, never migrated with projections
/// still to rebuild.
pub fn migrate_then_rebuild(
    conn: &mut Connection,
    rebuild: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if conn.dialect() == Dialect::Postgres {
        conn.execute("SELECT pg_advisory_lock(?1)", [MIGRATION_LOCK])?;
        let migrated = migrate_in_turn(conn, rebuild);
        conn.execute("SELECT pg_advisory_unlock(?1)", [MIGRATION_LOCK])?;
        return migrated;
    }
    migrate_in_turn(conn, rebuild)
}

fn migrate_in_turn(
    conn: &Connection,
    rebuild: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let migrations = migrations_of(conn.dialect());
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TEXT NOT NULL
        )",
    )?;
    let current: u32 =
        conn.query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |row| row.get(0))?;
    if current > latest_version(conn) {
        return Err(StoreError::Schema(format!(
            "the database is at schema version {current}, newer than this binary's {}; run a newer ctxd",
            latest_version(conn)
        )));
    }
    let tx = conn.write_transaction()?;
    let mut must_rebuild = false;
    for migration in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(migration.sql)?;
        if let Some(step) = migration.then {
            step(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (migration.version, migration.name, chrono::Utc::now().to_rfc3339()),
        )?;
        // Said when an existing store is upgraded; a new one (a scratch store included) is quiet.
        if current > 0 {
            tracing::info!(version = migration.version, name = migration.name, "applied migration");
        } else {
            tracing::debug!(version = migration.version, name = migration.name, "applied migration");
        }
        must_rebuild |= migration.rebuilds_projections && current > 0;
    }
    if must_rebuild {
        rebuild(&tx)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_dir_matches_this_list() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)));
        }
    }

    #[test]
    fn postgres_migrations_dir_matches_its_list() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let listed: Vec<&str> = POSTGRES_MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn a_database_newer_than_the_binary_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (999, 'future.sql', 'now')", []).unwrap();
        let error = migrate(&mut conn).unwrap_err();
        assert!(error.to_string().contains("newer than this binary"), "{error}");
    }
}
