//! Customer profiles, their attribute index and identification keys: what identifying a
//! customer and enforcing unique keys read.

use crate::store::db::{Connection, OptionalExtension};

use crate::domain::events::Properties;
use crate::domain::journeys::customers::{attribute_values, key_index_names};
use crate::domain::journeys::events::IdentificationKeyDefined;
use crate::store::StoreError;

/// One profile of `account`.
pub fn load_profile(
    conn: &Connection,
    account: &str,
    customer_id: &str,
) -> Result<Option<Properties>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT profile FROM customers WHERE account_id = ?1 AND customer_id = ?2")?
        .query_row((account, customer_id), |row| row.get(0))
        .optional()?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|error| StoreError::Corrupt(format!("profile: {error}")))
    })
    .transpose()
}

/// The account's identification keys, in definition order.
pub fn identification_keys(
    conn: &Connection,
    account: &str,
) -> Result<Vec<IdentificationKeyDefined>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT name, source, attributes, is_unique FROM identification_keys WHERE account_id = ?1 ORDER BY position",
    )?;
    let rows = statement.query_map([account], |row| {
        let attributes: String = row.get(2)?;
        Ok(IdentificationKeyDefined {
            name: row.get(0)?,
            source: row.get(1)?,
            attributes: serde_json::from_str(&attributes).unwrap_or_default(),
            unique: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Customers that have, for every (index name, values) pair, at least one of the values.
pub fn customers_matching(
    conn: &Connection,
    account: &str,
    criteria: &[(String, Vec<String>)],
) -> Result<Vec<String>, StoreError> {
    let mut matching: Option<Vec<String>> = None;
    let mut statement = conn.prepare_cached(
        "SELECT customer_id FROM customer_attributes WHERE account_id = ?1 AND name = ?2 AND value = ?3",
    )?;
    for (name, values) in criteria {
        let mut found = Vec::new();
        for value in values {
            let rows = statement.query_map((account, name, value), |row| row.get::<String>(0))?;
            for row in rows {
                found.push(row?);
            }
        }
        found.sort();
        found.dedup();
        matching = Some(match matching {
            None => found,
            Some(before) => before.into_iter().filter(|id| found.binary_search(id).is_ok()).collect(),
        });
    }
    Ok(matching.unwrap_or_default())
}

/// The first unique key whose values in `profile` another customer than `customer_id` holds.
pub fn unique_conflict(
    conn: &Connection,
    account: &str,
    keys: &[IdentificationKeyDefined],
    profile: &Properties,
    customer_id: &str,
) -> Result<Option<String>, StoreError> {
    let values = attribute_values(profile);
    for key in keys.iter().filter(|key| key.unique) {
        let criteria: Vec<(String, Vec<String>)> = key_index_names(key)
            .into_iter()
            .map(|name| {
                let given = values.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect();
                (name, given)
            })
            .collect();
        if criteria.iter().any(|(_, given)| given.is_empty()) {
            continue;
        }
        if customers_matching(conn, account, &criteria)?.iter().any(|other| other != customer_id) {
            return Ok(Some(key.name.clone()));
        }
    }
    Ok(None)
}

/// Whether two customers already share the values of `key`: a unique key cannot be defined then.
pub fn has_duplicates(
    conn: &Connection,
    account: &str,
    key: &IdentificationKeyDefined,
) -> Result<bool, StoreError> {
    let mut statement = conn.prepare("SELECT customer_id, profile FROM customers WHERE account_id = ?1")?;
    let mut rows = statement.query([account])?;
    let unique = IdentificationKeyDefined { unique: true, ..key.clone() };
    while let Some(row) = rows.next()? {
        let customer_id: String = row.get(0)?;
        let profile: Properties = serde_json::from_str(&row.get::<String>(1)?)
            .map_err(|error| StoreError::Corrupt(format!("profile: {error}")))?;
        if unique_conflict(conn, account, std::slice::from_ref(&unique), &profile, &customer_id)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
