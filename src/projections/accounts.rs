//! Accounts and API keys.

use std::collections::HashMap;

use crate::store::db::{Connection, OptionalExtension};

use super::EventRef;
use super::tables::Tables;
use crate::domain::Event;
use crate::domain::accounts::AccountState;
use crate::domain::events::Role;
use crate::store::{KeyOwner, StoreError};

/// Applies an account event to the accounts and API keys tables.
pub fn apply(tables: &mut impl Tables, recorded: &EventRef<'_>) -> Result<(), StoreError> {
    let at = recorded.recorded_at;
    match recorded.event {
        Event::AccountCreated(e) => tables.insert_account(&e.account_id, at),
        Event::ApiKeyIssued(e) => {
            tables.insert_api_key(&e.key_hash, &e.key_id, &e.account_id, at, &e.name, e.role)
        }
        Event::ApiKeyRevoked(e) => tables.revoke_api_key(&e.account_id, &e.key_id, at),
        Event::AccountLimitsSet(e) => tables.set_account_limits(&e.account_id, e.writes_per_second),
        Event::RetentionSet(e) => tables.set_account_retention(&e.account_id, e.days),
        _ => Ok(()),
    }
}

/// Every account's own write limit (`writes_per_second`), for the writer's admission.
pub fn write_limits(conn: &Connection) -> Result<HashMap<String, u32>, StoreError> {
    let mut statement = conn
        .prepare("SELECT account_id, writes_per_second FROM accounts WHERE writes_per_second IS NOT NULL")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An account's own write limit: `None` for an unknown account, `Some(None)` for one without
/// a limit of its own.
pub fn write_limit(conn: &Connection, account_id: &str) -> Result<Option<Option<u32>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT writes_per_second FROM accounts WHERE account_id = ?1")?
        .query_row([account_id], |row| row.get(0))
        .optional()?)
}

/// An account's retention in days: `None` for an unknown account, `Some(None)` for one that
/// keeps everything.
pub fn retention_days(conn: &Connection, account_id: &str) -> Result<Option<Option<u32>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT retention_days FROM accounts WHERE account_id = ?1")?
        .query_row([account_id], |row| row.get(0))
        .optional()?)
}

/// What `AccountCommand`s are decided against.
pub fn load_state(conn: &Connection, account_id: &str) -> Result<AccountState, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")?
        .query_row([account_id], |_| Ok(()))
        .optional()?
        .is_some();
    let mut statement = conn
        .prepare_cached("SELECT name, key_id FROM api_keys WHERE account_id = ?1 AND revoked_at IS NULL")?;
    let active_keys = statement.query_map([account_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(AccountState { exists, active_keys: active_keys.collect::<Result<_, _>>()?, look_alike: None })
}

/// An existing account whose id has `account_id`'s look-alike form, other than itself. Reads
/// every account id: for account creation only, which is rare.
pub fn look_alike_account(conn: &Connection, account_id: &str) -> Result<Option<String>, StoreError> {
    let form = crate::domain::names::look_alike_form(account_id);
    let mut statement = conn.prepare_cached("SELECT account_id FROM accounts")?;
    let ids = statement.query_map([], |row| row.get::<String>(0))?;
    for id in ids {
        let id = id?;
        if id != account_id && crate::domain::names::look_alike_form(&id) == form {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

const KEY_OWNER: &str = "SELECT key_hash, account_id, name, role FROM api_keys WHERE revoked_at IS NULL";

fn key_owner(row: &crate::store::db::Row<'_>) -> crate::store::db::Result<(String, KeyOwner)> {
    let role: String = row.get(3)?;
    let role = Role::parse(&role).ok_or_else(|| crate::store::db::Error::Column {
        column: 3,
        message: format!("unknown role '{role}'"),
    })?;
    Ok((row.get(0)?, KeyOwner { account: row.get(1)?, name: row.get(2)?, role }))
}

/// Every unrevoked key, by hash.
pub fn active_keys(conn: &Connection) -> Result<HashMap<String, KeyOwner>, StoreError> {
    let mut statement = conn.prepare(KEY_OWNER)?;
    let rows = statement.query_map([], key_owner)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The owner of one active key, by its hash.
pub fn active_key(conn: &Connection, key_hash: &str) -> Result<Option<KeyOwner>, StoreError> {
    let mut statement = conn.prepare_cached(&format!("{KEY_OWNER} AND key_hash = ?1"))?;
    let owner = statement.query_row([key_hash], key_owner).optional()?;
    Ok(owner.map(|(_, owner)| owner))
}

/// One key of an account as the admin API lists it: never its secret nor its hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeySummary {
    pub name: String,
    pub role: String,
    pub key_id: String,
    pub created_at: String,
    /// Unix microseconds of the latest use the nodes have recorded (to the minute), if any.
    #[serde(skip)]
    pub last_used: Option<i64>,
    #[serde(skip)]
    pub key_hash: String,
}

/// An account's active keys, by name.
pub fn keys(conn: &Connection, account_id: &str) -> Result<Vec<KeySummary>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT k.name, k.role, k.key_id, k.issued_at, u.last_used_at, k.key_hash FROM api_keys k
         LEFT JOIN api_key_usage u ON u.key_hash = k.key_hash
         WHERE k.account_id = ?1 AND k.revoked_at IS NULL ORDER BY k.name",
    )?;
    let rows = statement.query_map([account_id], |row| {
        Ok(KeySummary {
            name: row.get(0)?,
            role: row.get(1)?,
            key_id: row.get(2)?,
            created_at: row.get(3)?,
            last_used: row.get(4)?,
            key_hash: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records when keys were last used (`Command::RecordKeyUse`): a later time replaces an earlier
/// one, never the reverse (nodes report in any order).
pub fn record_key_use(conn: &Connection, uses: &[(String, i64)]) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO api_key_usage (key_hash, last_used_at) VALUES (?1, ?2)
         ON CONFLICT (key_hash) DO UPDATE SET last_used_at = excluded.last_used_at
         WHERE excluded.last_used_at > api_key_usage.last_used_at",
    )?;
    for (key_hash, at) in uses {
        statement.execute((key_hash, at))?;
    }
    Ok(())
}

/// One account as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSummary {
    pub account_id: String,
    pub created_at: String,
    pub active_key_id: Option<String>,
}

/// `active_key_id`: the account's `default` key (the one `POST …/api-key` replaces).
const SUMMARY: &str = "SELECT a.account_id, a.created_at, k.key_id FROM accounts a
     LEFT JOIN api_keys k ON k.account_id = a.account_id AND k.revoked_at IS NULL AND k.name = 'default'";

pub fn list(conn: &Connection) -> Result<Vec<AccountSummary>, StoreError> {
    let mut statement = conn.prepare_cached(&format!("{SUMMARY} ORDER BY a.account_id"))?;
    let rows = statement.query_map([], summary)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
    let mut statement = conn.prepare_cached(&format!("{SUMMARY} WHERE a.account_id = ?1"))?;
    Ok(statement.query_row([account_id], summary).optional()?)
}

fn summary(row: &crate::store::db::Row<'_>) -> crate::store::db::Result<AccountSummary> {
    Ok(AccountSummary { account_id: row.get(0)?, created_at: row.get(1)?, active_key_id: row.get(2)? })
}
