//! Reads of the analytics counters (`analytics.rs` writes them). Each query sums the rows of the
//! cohorts a `Cohorts` selects, so its cost depends on the number of hours, state types and
//! paths in range, never on the number of services. Rates, quantiles and funnels are worked out
//! from these sums by the HTTP layer.

use crate::store::db::Connection;
use crate::store::db::Value as SqlValue;

use super::analytics::{AbandonedRow, Counter, HISTOGRAM_BUCKETS};
use crate::store::StoreError;

/// Which cohorts a query sums: an account's services, optionally of one service type, started
/// on one media type, in the hours `[from, to)` (`YYYY-MM-DDTHH`).
#[derive(Debug, Clone, Default)]
pub struct Cohorts {
    pub account_id: String,
    pub service_type: Option<String>,
    pub media_type: Option<String>,
    pub from_hour: Option<String>,
    pub to_hour: Option<String>,
}

/// A `WHERE` clause and its parameters, with only the conditions that apply: SQLite plans a
/// condition such as `(? IS NULL OR hour >= ?)` as a test of every row, never as a key range.
struct Where {
    conditions: Vec<&'static str>,
    params: Vec<SqlValue>,
}

impl Where {
    fn and(self, condition: &'static str, value: Option<impl Into<SqlValue>>) -> Where {
        self.and_all(condition, value.map(|v| vec![v.into()]))
    }

    /// A condition with several parameters.
    fn and_all(mut self, condition: &'static str, values: Option<Vec<SqlValue>>) -> Where {
        if let Some(values) = values {
            self.conditions.push(condition);
            self.params.extend(values);
        }
        self
    }

    fn sql(&self) -> String {
        self.conditions.join(" AND ")
    }
}

impl Cohorts {
    /// The same cohorts on channel `media_type` only.
    pub fn on(&self, media_type: &str) -> Cohorts {
        Cohorts { media_type: Some(media_type.to_string()), ..self.clone() }
    }

    fn filter(&self) -> Where {
        Where { conditions: vec![], params: vec![] }
            .and("account_id = ?", Some(self.account_id.clone()))
            .and("service_type = ?", self.service_type.clone())
            .and("media_type = ?", self.media_type.clone())
            .and("hour >= ?", self.from_hour.clone())
            .and("hour < ?", self.to_hour.clone())
    }
}

/// Services started, completed and abandoned.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceTotals {
    pub started: i64,
    pub completed: i64,
    pub abandoned: i64,
}

pub fn service_totals(conn: &Connection, cohorts: &Cohorts) -> Result<ServiceTotals, StoreError> {
    let filter = cohorts.filter();
    let sql = format!(
        "SELECT coalesce(sum(started), 0), coalesce(sum(completed), 0), coalesce(sum(abandoned), 0)
         FROM analytics_services WHERE {}",
        filter.sql()
    );
    Ok(conn.query_row(&sql, crate::store::db::params_from_iter(filter.params), |row| {
        Ok(ServiceTotals { started: row.get(0)?, completed: row.get(1)?, abandoned: row.get(2)? })
    })?)
}

/// One group of summed counter rows: its key, and its counters in `Counter::values` order.
#[derive(Debug, Clone)]
pub struct Sums {
    pub key: Vec<String>,
    pub values: Vec<i64>,
}

impl Sums {
    /// A counter by its column name.
    pub fn get(&self, counter: Counter, column: &str) -> i64 {
        let index = counter.values().iter().position(|c| *c == column).expect("a counter column");
        self.values[index]
    }

    /// The histogram's buckets.
    pub fn histogram(&self) -> &[i64] {
        &self.values[self.values.len() - HISTOGRAM_BUCKETS..]
    }
}

/// The sums of `counter`'s columns over the selected cohorts, grouped by the key columns `by`.
pub fn sums(
    conn: &Connection,
    cohorts: &Cohorts,
    counter: Counter,
    by: &[&str],
) -> Result<Vec<Sums>, StoreError> {
    let filter = cohorts.filter();
    let totals: Vec<String> = counter.values().iter().map(|v| format!("sum({v})")).collect();
    let sql = format!(
        "SELECT {group}, {totals} FROM {table} WHERE {filter} GROUP BY {group}",
        group = by.join(", "),
        totals = totals.join(", "),
        table = counter.table(),
        filter = filter.sql(),
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(crate::store::db::params_from_iter(filter.params), |row| {
        let key = (0..by.len()).map(|i| row.get(i)).collect::<Result<_, _>>()?;
        let values =
            (by.len()..by.len() + counter.values().len()).map(|i| row.get(i)).collect::<Result<_, _>>()?;
        Ok(Sums { key, values })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Services started, completed and abandoned per hour or day (`YYYY-MM-DDTHH` or `YYYY-MM-DD`).
pub fn series(
    conn: &Connection,
    cohorts: &Cohorts,
    by_day: bool,
) -> Result<Vec<(String, ServiceTotals)>, StoreError> {
    let filter = cohorts.filter();
    let width = if by_day { 10 } else { 13 };
    let sql = format!(
        "SELECT substr(hour, 1, {width}), sum(started), sum(completed), sum(abandoned)
         FROM analytics_services WHERE {} GROUP BY 1 ORDER BY 1",
        filter.sql()
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(crate::store::db::params_from_iter(filter.params), |row| {
        let totals = ServiceTotals { started: row.get(1)?, completed: row.get(2)?, abandoned: row.get(3)? };
        Ok((row.get(0)?, totals))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A page of abandoned services, the latest abandoned first, after (older than) the cursor
/// `(ended_at, service_id)`, optionally only those that dropped off at `state_type`.
pub fn abandoned(
    conn: &Connection,
    cohorts: &Cohorts,
    state_type: Option<String>,
    after: Option<(String, String)>,
    limit: usize,
) -> Result<Vec<AbandonedRow>, StoreError> {
    let after = after.map(|(at, id)| vec![at.into(), id.into()]);
    let mut filter =
        cohorts.filter().and("state_type = ?", state_type).and_all("(ended_at, service_id) < (?, ?)", after);
    filter.params.push(SqlValue::Integer(limit as i64));
    let sql = format!(
        "SELECT ended_at, service_id, service_type, hour, media_type, state_type, detail FROM analytics_abandoned
         WHERE {} ORDER BY ended_at DESC, service_id DESC LIMIT ?",
        filter.sql()
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(crate::store::db::params_from_iter(filter.params), |row| {
        Ok(AbandonedRow {
            ended_at: row.get(0)?,
            service_id: row.get(1)?,
            service_type: row.get(2)?,
            hour: row.get(3)?,
            media_type: row.get(4)?,
            state_type: row.get(5)?,
            detail: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The names the selected cohorts hold, each list sorted: what an analyst can filter on.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Dimensions {
    pub service_types: Vec<String>,
    pub media_types: Vec<String>,
    pub state_types: Vec<String>,
}

pub fn dimensions(conn: &Connection, cohorts: &Cohorts) -> Result<Dimensions, StoreError> {
    Ok(Dimensions {
        service_types: distinct(conn, cohorts, "service_type", "analytics_services")?,
        media_types: media_types(conn, cohorts)?,
        state_types: distinct(conn, cohorts, "state_type", "analytics_states")?,
    })
}

/// The channels of the selected cohorts, sorted: what a breakdown by channel splits into.
pub fn media_types(conn: &Connection, cohorts: &Cohorts) -> Result<Vec<String>, StoreError> {
    distinct(conn, cohorts, "media_type", "analytics_services")
}

/// The values of `column` in `table` over the selected cohorts, sorted.
fn distinct(
    conn: &Connection,
    cohorts: &Cohorts,
    column: &str,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    let filter = cohorts.filter();
    let sql = format!("SELECT DISTINCT {column} FROM {table} WHERE {} ORDER BY 1", filter.sql());
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(crate::store::db::params_from_iter(filter.params), |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A name a query gives (a filter's value, a funnel's step) that the account's counters have
/// never held, whatever the time: most likely a typo, which would otherwise answer zeros.
/// `(parameter, name)` pairs in, the unknown ones out, in the order given.
pub fn never_seen(
    conn: &Connection,
    account_id: &str,
    names: &[(&'static str, String)],
) -> Result<Vec<(&'static str, String)>, StoreError> {
    let mut unknown = Vec::new();
    for (parameter, name) in names {
        let (column, table) = match *parameter {
            "service_type" => ("service_type", "analytics_services"),
            "media_type" => ("media_type", "analytics_services"),
            _ => ("state_type", "analytics_states"),
        };
        let sql = format!("SELECT 1 FROM {table} WHERE account_id = ?1 AND {column} = ?2 LIMIT 1");
        if !conn.prepare_cached(&sql)?.exists(crate::params![account_id, name])? {
            unknown.push((*parameter, name.clone()));
        }
    }
    Ok(unknown)
}

/// The live context of the conversation `id`: the properties of the sessions named `id` in each
/// of `namespaces` (those not expired at `now_micros`), by namespace; namespaces without such a
/// session are left out. Answers the context and the bytes of its values.
pub fn conversation_context(
    conn: &Connection,
    account: &str,
    namespaces: &[String],
    id: &str,
    now_micros: i64,
) -> Result<(serde_json::Map<String, serde_json::Value>, usize), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT key, value FROM properties WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3
           AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key",
    )?;
    let (mut context, mut bytes) = (serde_json::Map::new(), 0);
    for namespace in namespaces {
        let mut properties = serde_json::Map::new();
        let rows = statement.query_map(crate::params![account, namespace, id, now_micros], |row| {
            Ok((row.get::<String>(0)?, row.get::<String>(1)?))
        })?;
        for row in rows {
            let (key, value) = row?;
            bytes += key.len() + value.len();
            let value = serde_json::from_str(&value)
                .map_err(|error| StoreError::Corrupt(format!("property {key}: {error}")))?;
            properties.insert(key, value);
        }
        if !properties.is_empty() {
            context.insert(namespace.clone(), serde_json::Value::Object(properties));
        }
    }
    Ok((context, bytes))
}

/// The account's namespaces, in name order.
pub fn namespaces(conn: &Connection, account: &str) -> Result<Vec<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT namespace FROM namespaces WHERE account_id = ?1 ORDER BY namespace")?;
    let rows = statement.query_map([account], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
