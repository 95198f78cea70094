//! Analytics counter deltas: summed per row over a whole group, written once per row.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::store::db::{Connection, ToSql};

use crate::projections::analytics::Counter;
use crate::store::StoreError;

/// The upsert that adds to one counter row, built once per counter table.
fn counter_sql(counter: Counter) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        Counter::ALL
            .iter()
            .map(|c| {
                let columns: Vec<&str> = std::iter::once("account_id")
                    .chain(c.keys().iter().copied())
                    .chain(c.values().iter().copied())
                    .collect();
                let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let table = c.table();
                let updates: Vec<String> =
                    c.values().iter().map(|v| format!("{v} = {table}.{v} + excluded.{v}")).collect();
                let keys: Vec<&str> = std::iter::once("account_id").chain(c.keys().iter().copied()).collect();
                format!(
                    "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                    columns.join(", "),
                    placeholders.join(", "),
                    keys.join(", "),
                    updates.join(", ")
                )
            })
            .collect()
    });
    &all[Counter::ALL.iter().position(|c| *c == counter).expect("every counter is in ALL")]
}

/// Counter deltas not yet written, summed per row: (counter, account and keys) → deltas in
/// `Counter::values` order. The writer gathers those of a whole group commit and writes each
/// row once before the commit (services of one cohort share rows); rebuild gathers the whole log.
#[derive(Debug, Default)]
#[must_use = "counter deltas are lost unless written (`PendingCounts::write`) or merged"]
pub struct PendingCounts(HashMap<(Counter, Vec<String>), Vec<i64>>);

impl PendingCounts {
    pub fn add(&mut self, account_id: &str, counter: Counter, keys: &[&str], deltas: &[i64]) {
        let key = std::iter::once(account_id).chain(keys.iter().copied()).map(str::to_string).collect();
        let counts = self.0.entry((counter, key)).or_insert_with(|| vec![0; deltas.len()]);
        for (count, delta) in counts.iter_mut().zip(deltas) {
            *count = count.saturating_add(*delta);
        }
    }

    /// Every row, in key order: counter, account and keys, values.
    pub fn into_rows(self) -> Vec<(Counter, Vec<String>, Vec<i64>)> {
        let mut rows: Vec<_> =
            self.0.into_iter().map(|((counter, key), values)| (counter, key, values)).collect();
        rows.sort_unstable();
        rows
    }

    /// Adds `other`'s deltas to these.
    pub fn merge(&mut self, other: PendingCounts) {
        for (row, deltas) in other.0 {
            match self.0.entry(row) {
                Entry::Occupied(mut counts) => {
                    for (count, delta) in counts.get_mut().iter_mut().zip(deltas) {
                        *count = count.saturating_add(delta);
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(deltas);
                }
            }
        }
    }

    /// Adds every row's deltas to its counter row in `conn`, in key order.
    pub fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut rows: Vec<_> = self.0.iter().collect();
        rows.sort_unstable();
        for ((counter, key), deltas) in rows {
            let keys = key.iter().map(|key| key as &dyn ToSql);
            let params: Vec<&dyn ToSql> =
                keys.chain(deltas.iter().map(|delta| delta as &dyn ToSql)).collect();
            conn.prepare_cached(counter_sql(*counter))?.execute_later(params.as_slice())?;
        }
        Ok(())
    }
}
