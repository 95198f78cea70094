//! Reads of the analytics counters (`analytics.rs` writes them). Each query sums the rows of the
//! cohorts a `Cohorts` selects, so its cost depends on the number of hours, state types and
//! paths in range, never on the number of services. Rates, quantiles and funnels are worked out
//! from these sums by the HTTP layer.

use crate::store::db::Connection;
use crate::store::db::Value as SqlValue;

use std::collections::{BTreeMap, BTreeSet};

use super::analytics::{AbandonedRow, Counter, Grain, HISTOGRAM_BUCKETS, day_of};
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

    /// The rows a query sums, table by table: the whole days in range from the daily rollups,
    /// the hours before the first whole day and from the last day's start on from the hourly
    /// rows. A range within one day (or a bound that does not parse as an hour) reads hours only.
    fn parts(&self) -> Vec<(Grain, Where)> {
        let hours = |from: Option<String>, to: Option<String>| (Grain::Hour, self.filter(from, to));
        let (from, to) = (self.from_hour.as_deref(), self.to_hour.as_deref());
        // The first whole day: `None` for no lower bound, `Some(None)` when it cannot be told.
        let first = match from {
            None => None,
            Some(hour) if hour.ends_with("T00") => Some(Some(day_of(hour).to_string())),
            Some(hour) => Some(day_after(day_of(hour))),
        };
        let last = to.map(|hour| day_of(hour).to_string());
        let first = match first {
            Some(None) => return vec![hours(self.from_hour.clone(), self.to_hour.clone())],
            Some(Some(first)) if last.as_ref().is_some_and(|last| &first >= last) => {
                return vec![hours(self.from_hour.clone(), self.to_hour.clone())];
            }
            first => first.flatten(),
        };
        let mut parts = vec![(Grain::Day, self.filter(first.clone(), last.clone()))];
        let start_of = |day: &String| format!("{day}T00");
        if let Some(first) = first.as_ref().map(start_of).filter(|start| Some(start.as_str()) != from) {
            parts.push(hours(self.from_hour.clone(), Some(first)));
        }
        if let Some(last) = last.as_ref().map(start_of).filter(|start| Some(start.as_str()) != to) {
            parts.push(hours(Some(last), self.to_hour.clone()));
        }
        parts
    }

    /// The conditions on the selected cohorts with the key column `hour` in `[from, to)`.
    fn filter(&self, from: Option<String>, to: Option<String>) -> Where {
        Where { conditions: vec![], params: vec![] }
            .and("account_id = ?", Some(self.account_id.clone()))
            .and("service_type = ?", self.service_type.clone())
            .and("media_type = ?", self.media_type.clone())
            .and("hour >= ?", from)
            .and("hour < ?", to)
    }

    /// The conditions on the selected cohorts, hour by hour (the abandoned list's).
    fn hourly_filter(&self) -> Where {
        self.filter(self.from_hour.clone(), self.to_hour.clone())
    }
}

/// The day after `day` (`YYYY-MM-DD`), if it is one.
fn day_after(day: &str) -> Option<String> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some(date.succ_opt()?.format("%Y-%m-%d").to_string())
}

/// Services started, completed and abandoned.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceTotals {
    pub started: i64,
    pub completed: i64,
    pub abandoned: i64,
}

pub fn service_totals(conn: &Connection, cohorts: &Cohorts) -> Result<ServiceTotals, StoreError> {
    let mut totals = ServiceTotals::default();
    for (grain, filter) in cohorts.parts() {
        let sql = format!(
            "SELECT coalesce(sum(started), 0), coalesce(sum(completed), 0), coalesce(sum(abandoned), 0)
             FROM {} WHERE {}",
            Counter::Services.table(grain),
            filter.sql()
        );
        let part = conn.query_row(&sql, crate::store::db::params_from_iter(filter.params), |row| {
            Ok(ServiceTotals { started: row.get(0)?, completed: row.get(1)?, abandoned: row.get(2)? })
        })?;
        totals.add(part);
    }
    Ok(totals)
}

impl ServiceTotals {
    fn add(&mut self, other: ServiceTotals) {
        self.started += other.started;
        self.completed += other.completed;
        self.abandoned += other.abandoned;
    }
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

/// The sums of `counter`'s columns over the selected cohorts, grouped by the key columns `by`,
/// in key order.
pub fn sums(
    conn: &Connection,
    cohorts: &Cohorts,
    counter: Counter,
    by: &[&str],
) -> Result<Vec<Sums>, StoreError> {
    let totals: Vec<String> = counter.values().iter().map(|v| format!("sum({v})")).collect();
    let mut groups: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
    for (grain, filter) in cohorts.parts() {
        let sql = format!(
            "SELECT {group}, {totals} FROM {table} WHERE {filter} GROUP BY {group}",
            group = by.join(", "),
            totals = totals.join(", "),
            table = counter.table(grain),
            filter = filter.sql(),
        );
        let mut statement = conn.prepare(&sql)?;
        let mut rows = statement.query(crate::store::db::params_from_iter(filter.params))?;
        while let Some(row) = rows.next()? {
            let key = (0..by.len()).map(|i| row.get(i)).collect::<Result<Vec<String>, _>>()?;
            let sums = groups.entry(key).or_insert_with(|| vec![0; counter.values().len()]);
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = sum.saturating_add(row.get::<i64>(by.len() + i)?);
            }
        }
    }
    Ok(groups.into_iter().map(|(key, values)| Sums { key, values }).collect())
}

/// Services started, completed and abandoned per hour or day (`YYYY-MM-DDTHH` or `YYYY-MM-DD`).
pub fn series(
    conn: &Connection,
    cohorts: &Cohorts,
    by_day: bool,
) -> Result<Vec<(String, ServiceTotals)>, StoreError> {
    let parts = if by_day { cohorts.parts() } else { vec![(Grain::Hour, cohorts.hourly_filter())] };
    let mut series: BTreeMap<String, ServiceTotals> = BTreeMap::new();
    for (grain, filter) in parts {
        let bucket = if by_day { "substr(hour, 1, 10)" } else { "hour" };
        let sql = format!(
            "SELECT {bucket}, sum(started), sum(completed), sum(abandoned) FROM {} WHERE {} GROUP BY 1",
            Counter::Services.table(grain),
            filter.sql()
        );
        let mut statement = conn.prepare(&sql)?;
        let mut rows = statement.query(crate::store::db::params_from_iter(filter.params))?;
        while let Some(row) = rows.next()? {
            let totals =
                ServiceTotals { started: row.get(1)?, completed: row.get(2)?, abandoned: row.get(3)? };
            series.entry(row.get(0)?).or_default().add(totals);
        }
    }
    Ok(series.into_iter().collect())
}

/// A page of abandoned services, the latest abandoned first, after (older than) the cursor
/// `(ended_at, service_id)`, optionally only those that dropped off at `state_type`. The page's
/// keys come from the index that holds every filtered column (`analytics_abandoned_by_end`), so
/// the rows skipped are never read; then the page's rows.
pub fn abandoned(
    conn: &Connection,
    cohorts: &Cohorts,
    state_type: Option<String>,
    after: Option<(String, String)>,
    limit: usize,
) -> Result<Vec<AbandonedRow>, StoreError> {
    let after = after.map(|(at, id)| vec![at.into(), id.into()]);
    let mut filter = cohorts
        .hourly_filter()
        .and("state_type = ?", state_type)
        .and_all("(ended_at, service_id) < (?, ?)", after);
    filter.params.push(SqlValue::Integer(limit as i64));
    filter.params.push(cohorts.account_id.clone().into());
    let sql = format!(
        "SELECT a.ended_at, a.service_id, a.service_type, a.hour, a.media_type, a.state_type, a.detail
         FROM (SELECT ended_at, service_id FROM analytics_abandoned
               WHERE {} ORDER BY ended_at DESC, service_id DESC LIMIT ?) AS page
         JOIN analytics_abandoned AS a
           ON a.account_id = ? AND a.ended_at = page.ended_at AND a.service_id = page.service_id
         ORDER BY a.ended_at DESC, a.service_id DESC",
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
        service_types: distinct(conn, cohorts, "service_type", Counter::Services)?,
        media_types: media_types(conn, cohorts)?,
        state_types: distinct(conn, cohorts, "state_type", Counter::States)?,
    })
}

/// The channels of the selected cohorts, sorted: what a breakdown by channel splits into.
pub fn media_types(conn: &Connection, cohorts: &Cohorts) -> Result<Vec<String>, StoreError> {
    distinct(conn, cohorts, "media_type", Counter::Services)
}

/// The values of `column` in `counter`'s rows over the selected cohorts, sorted.
fn distinct(
    conn: &Connection,
    cohorts: &Cohorts,
    column: &str,
    counter: Counter,
) -> Result<Vec<String>, StoreError> {
    let mut values = BTreeSet::new();
    for (grain, filter) in cohorts.parts() {
        let sql = format!("SELECT DISTINCT {column} FROM {} WHERE {}", counter.table(grain), filter.sql());
        let mut statement = conn.prepare(&sql)?;
        let mut rows = statement.query(crate::store::db::params_from_iter(filter.params))?;
        while let Some(row) = rows.next()? {
            values.insert(row.get(0)?);
        }
    }
    Ok(values.into_iter().collect())
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
        let (column, counter) = match *parameter {
            "service_type" => ("service_type", Counter::Services),
            "media_type" => ("media_type", Counter::Services),
            _ => ("state_type", Counter::States),
        };
        let table = counter.table(Grain::Day);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts a range reads: grain and `[from, to)` of the `hour` key.
    fn parts(from: Option<&str>, to: Option<&str>) -> Vec<(Grain, Vec<String>)> {
        let cohorts = Cohorts {
            account_id: "acme".into(),
            from_hour: from.map(str::to_string),
            to_hour: to.map(str::to_string),
            ..Cohorts::default()
        };
        let text = |value: &SqlValue| match value {
            SqlValue::Text(text) => text.clone(),
            other => panic!("a text parameter: {other:?}"),
        };
        let parts = cohorts.parts().into_iter();
        parts.map(|(grain, filter)| (grain, filter.params[1..].iter().map(text).collect())).collect()
    }

    fn bounds(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn whole_days_are_read_by_the_day_and_the_hours_at_either_end_by_the_hour() {
        use Grain::{Day, Hour};
        assert_eq!(parts(None, None), [(Day, bounds(&[]))]);
        assert_eq!(
            parts(Some("2026-11-20T22"), Some("2026-11-23T03")),
            [
                (Day, bounds(&["2026-11-21", "2026-11-23"])),
                (Hour, bounds(&["2026-11-20T22", "2026-11-21T00"])),
                (Hour, bounds(&["2026-11-23T00", "2026-11-23T03"])),
            ]
        );
        assert_eq!(
            parts(Some("2026-11-21T00"), Some("2026-11-23T00")),
            [(Day, bounds(&["2026-11-21", "2026-11-23"]))]
        );
        assert_eq!(
            parts(Some("2026-12-31T05"), None),
            [(Day, bounds(&["2027-01-01"])), (Hour, bounds(&["2026-12-31T05", "2027-01-01T00"]))]
        );
        assert_eq!(
            parts(None, Some("2026-11-23T03")),
            [(Day, bounds(&["2026-11-23"])), (Hour, bounds(&["2026-11-23T00", "2026-11-23T03"]))]
        );
        // Within one day, or up to the next day's start: no whole day.
        assert_eq!(
            parts(Some("2026-11-20T05"), Some("2026-11-20T09")),
            [(Hour, bounds(&["2026-11-20T05", "2026-11-20T09"]))]
        );
        assert_eq!(
            parts(Some("2026-11-20T05"), Some("2026-11-21T00")),
            [(Hour, bounds(&["2026-11-20T05", "2026-11-21T00"]))]
        );
    }
}
