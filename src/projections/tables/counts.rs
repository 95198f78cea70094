//! Analytics counter deltas: summed per row over a whole group, written once per row.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::store::db::{Connection, ToSql};

use crate::projections::analytics::{Counter, Grain, day_of};
use crate::store::StoreError;

/// The upsert that adds to one counter row of `counter`'s table at `grain`, built once per table.
fn counter_sql(counter: Counter, grain: Grain) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<((Counter, Grain), String)>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let tables = Counter::ALL.iter().flat_map(|c| Grain::ALL.map(|g| (*c, g)));
        tables
            .map(|(c, grain)| {
                let columns: Vec<&str> = std::iter::once("account_id")
                    .chain(c.keys().iter().copied())
                    .chain(c.values().iter().copied())
                    .collect();
                let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let table = c.table(grain);
                let updates: Vec<String> =
                    c.values().iter().map(|v| format!("{v} = {table}.{v} + excluded.{v}")).collect();
                let keys: Vec<&str> = std::iter::once("account_id").chain(c.keys().iter().copied()).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                    columns.join(", "),
                    placeholders.join(", "),
                    keys.join(", "),
                    updates.join(", ")
                );
                ((c, grain), sql)
            })
            .collect()
    });
    let (_, sql) =
        all.iter().find(|(table, _)| *table == (counter, grain)).expect("every counter table is built");
    sql
}

/// Counter deltas not yet written, summed per row: for each counter, (account and keys) →
/// deltas in `Counter::values` order. The writer gathers those of a whole group commit and
/// writes each row once before the commit (services of one cohort share rows); a fold gathers
/// the whole log's. A row's key is its strings encoded as one (`encode`), so that adding to a
/// row that exists allocates nothing.
#[derive(Debug, Default)]
#[must_use = "counter deltas are lost unless written (`PendingCounts::write`) or merged"]
pub struct PendingCounts {
    rows: HashMap<Counter, HashMap<Vec<u8>, Vec<i64>>>,
    /// Reused to encode the key looked up.
    buffer: Vec<u8>,
}

/// The strings of a row's key as one byte string: each one's length (4 bytes) then its bytes,
/// so that no two keys encode alike.
fn encode<'a>(parts: impl Iterator<Item = &'a str>, into: &mut Vec<u8>) {
    into.clear();
    for part in parts {
        into.extend_from_slice(&(part.len() as u32).to_le_bytes());
        into.extend_from_slice(part.as_bytes());
    }
}

fn decode(mut key: &[u8]) -> Vec<String> {
    let mut parts = Vec::new();
    while let Some((length, rest)) = key.split_first_chunk::<4>() {
        let (part, rest) = rest.split_at(u32::from_le_bytes(*length) as usize);
        parts.push(String::from_utf8_lossy(part).into_owned());
        key = rest;
    }
    parts
}

impl PendingCounts {
    pub fn add(&mut self, account_id: &str, counter: Counter, keys: &[&str], deltas: &[i64]) {
        encode(std::iter::once(account_id).chain(keys.iter().copied()), &mut self.buffer);
        let rows = self.rows.entry(counter).or_default();
        let counts = match rows.get_mut(self.buffer.as_slice()) {
            Some(counts) => counts,
            None => rows.entry(self.buffer.clone()).or_insert_with(|| vec![0; deltas.len()]),
        };
        for (count, delta) in counts.iter_mut().zip(deltas) {
            *count = count.saturating_add(*delta);
        }
    }

    /// Every row, in key order: counter, account and keys, values.
    pub fn into_rows(self) -> Vec<(Counter, Vec<String>, Vec<i64>)> {
        let mut rows: Vec<_> = self
            .rows
            .into_iter()
            .flat_map(|(counter, rows)| {
                rows.into_iter().map(move |(key, values)| (counter, decode(&key), values))
            })
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Adds `other`'s deltas to these.
    pub fn merge(&mut self, other: PendingCounts) {
        for (counter, rows) in other.rows {
            let mine = self.rows.entry(counter).or_default();
            for (key, deltas) in rows {
                match mine.entry(key) {
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
    }

    /// Adds every row's deltas to its counter row in `conn`, and their sums by day to the daily
    /// rollups (`Grain::Day`), in table and key order.
    pub fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut days: HashMap<(Counter, Vec<String>), Vec<i64>> = HashMap::new();
        let mut rows = Vec::new();
        for (counter, rows_of) in &self.rows {
            let hour =
                1 + counter.keys().iter().position(|key| *key == "hour").expect("counters are by hour");
            for (key, values) in rows_of {
                let key = decode(key);
                let mut day = key.clone();
                day[hour] = day_of(&key[hour]).to_string();
                let sums = days.entry((*counter, day)).or_insert_with(|| vec![0; values.len()]);
                for (sum, value) in sums.iter_mut().zip(values) {
                    *sum = sum.saturating_add(*value);
                }
                rows.push(((*counter, Grain::Hour, key), values.clone()));
            }
        }
        rows.extend(days.into_iter().map(|((counter, key), values)| ((counter, Grain::Day, key), values)));
        rows.sort_unstable();
        for ((counter, grain, key), deltas) in rows {
            let keys = key.iter().map(|key| key as &dyn ToSql);
            let params: Vec<&dyn ToSql> =
                keys.chain(deltas.iter().map(|delta| delta as &dyn ToSql)).collect();
            conn.prepare_cached(counter_sql(counter, grain))?.execute_later(params.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_summed_by_their_whole_key_and_come_back_in_key_order() {
        let mut counts = PendingCounts::default();
        let counter = Counter::ALL[0];
        counts.add("acme", counter, &["ab", "c"], &[1, 2]);
        counts.add("acme", counter, &["a", "bc"], &[10, 20]);
        counts.add("acme", counter, &["ab", "c"], &[1, 2]);
        counts.add("acme", counter, &["a\0", "\u{e9}"], &[5, 5]);
        let mut other = PendingCounts::default();
        other.add("acme", counter, &["a", "bc"], &[100, 200]);
        counts.merge(other);
        let keys = |parts: &[&str]| parts.iter().map(|part| part.to_string()).collect::<Vec<_>>();
        assert_eq!(
            counts.into_rows(),
            [
                (counter, keys(&["acme", "a", "bc"]), vec![110, 220]),
                (counter, keys(&["acme", "a\0", "\u{e9}"]), vec![5, 5]),
                (counter, keys(&["acme", "ab", "c"]), vec![2, 4]),
            ]
        );
    }
}
