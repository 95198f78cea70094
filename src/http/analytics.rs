//! Where customers abandon: `/v1/account/{account}/analytics/…` (docs/ANALYTICS.md). Every
//! figure is a sum over the counter rows of `projections::analytics`, so a query's cost depends
//! on the number of state types and hours in range, not on the number of services.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Timelike, Utc};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Account, Q};
use crate::domain::journeys::fields::parse_time;
use crate::projections::analytics::{BEFORE_FIRST_STATE, DURATION_BOUNDS_S};
use crate::store::StoreError;

const BASE: &str = "/v1/account/{account}/analytics";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{BASE}/dropoff"), get(dropoff))
        .route(&format!("{BASE}/transitions"), get(transitions))
        .route(&format!("{BASE}/timeseries"), get(timeseries))
        .route(&format!("{BASE}/abandoned"), get(abandoned))
}

/// The filters every analytics query takes; echoed back as `query`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    /// Services started at or after this hour (RFC 3339, on the hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// Services started before this hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

/// The filter as SQL parameters: service type, media type, first hour, hour after the last.
struct Bounds {
    service_type: Option<String>,
    media_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `YYYY-MM-DDTHH` of a time on the hour, the key the counters use.
fn hour_of(name: &str, text: &str) -> Result<String, ApiError> {
    let time: DateTime<Utc> = parse_time(name, text)?;
    if time.minute() != 0 || time.second() != 0 || time.nanosecond() != 0 {
        return Err(ApiError::bad_request(format!(
            "{name} must be on the hour (e.g. 2026-11-22T10:00:00Z): analytics count by the hour"
        )));
    }
    Ok(time.format("%Y-%m-%dT%H").to_string())
}

impl Filter {
    fn bounds(&self) -> Result<Bounds, ApiError> {
        let from = self.from.as_deref().map(|t| hour_of("from", t)).transpose()?;
        let to = self.to.as_deref().map(|t| hour_of("to", t)).transpose()?;
        if let (Some(from), Some(to)) = (&from, &to)
            && from >= to
        {
            return Err(ApiError::bad_request("from must be before to"));
        }
        Ok(Bounds { service_type: self.service_type.clone(), media_type: self.media_type.clone(), from, to })
    }
}

/// The `WHERE` of a counter query: account ?1, service type ?2, media type ?3, hours [?4, ?5).
const WHERE: &str =
    "account_id = ?1 AND (?2 IS NULL OR service_type = ?2) AND (?3 IS NULL OR media_type = ?3)
    AND (?4 IS NULL OR hour >= ?4) AND (?5 IS NULL OR hour < ?5)";

fn rate(part: i64, whole: i64) -> Value {
    if whole == 0 { Value::Null } else { json!((part as f64) / (whole as f64)) }
}

/// The bound, in seconds, of the histogram bucket holding the `quantile` of `counts`
/// (`null` when there is no data, or when it lies beyond the last bound).
fn quantile(counts: &[i64], quantile: f64) -> Value {
    let total: i64 = counts.iter().sum();
    if total == 0 {
        return Value::Null;
    }
    let rank = ((total as f64) * quantile).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (bucket, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return DURATION_BOUNDS_S.get(bucket).map_or(Value::Null, |bound| json!(bound));
        }
    }
    Value::Null
}

async fn dropoff(
    State(state): State<AppState>,
    account: Account,
    Q(filter): Q<Filter>,
) -> Result<Response, ApiError> {
    let bounds = filter.bounds()?;
    let account_id = account.id.clone();
    let body = state.store.read_large(move |conn| dropoff_query(conn, &account_id, &bounds)).await?;
    Ok(axum::Json(json!({ "query": filter, "totals": body.0, "states": body.1 })).into_response())
}

fn dropoff_query(conn: &Connection, account: &str, b: &Bounds) -> Result<(Value, Vec<Value>), StoreError> {
    let p = params![account, b.service_type, b.media_type, b.from, b.to];
    let (started, completed, abandoned): (i64, i64, i64) = conn.query_row(
        &format!(
            "SELECT coalesce(sum(started), 0), coalesce(sum(completed), 0), coalesce(sum(abandoned), 0)
             FROM analytics_services WHERE {WHERE}"
        ),
        p,
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let mut statement = conn.prepare(&format!(
        "SELECT state_type, sum(entered), sum(onward), sum(abandoned), sum(timed), sum(duration_ms),
                sum(estimated), sum(est_duration_s), sum(est_actual_ms)
         FROM analytics_states WHERE {WHERE} GROUP BY state_type"
    ))?;
    let rows = statement.query_map(p, |row| {
        let mut counts = [0i64; 8];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = row.get(i + 1)?;
        }
        Ok((row.get::<_, String>(0)?, counts))
    })?;
    let mut states: Vec<(String, [i64; 8])> = rows.collect::<Result<_, _>>()?;
    let mut histogram = conn.prepare(&format!(
        "SELECT state_type, bucket, sum(count) FROM analytics_state_durations WHERE {WHERE}
         GROUP BY state_type, bucket"
    ))?;
    let buckets = histogram
        .query_map(p, |row| Ok((row.get::<_, String>(0)?, row.get::<_, usize>(1)?, row.get::<_, i64>(2)?)))?;
    let mut histograms: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for bucket in buckets {
        let (state_type, index, count) = bucket?;
        let counts = histograms.entry(state_type).or_insert_with(|| vec![0; DURATION_BOUNDS_S.len() + 1]);
        if let Some(slot) = counts.get_mut(index) {
            *slot += count;
        }
    }
    states.sort_by(|a, b| b.1[2].cmp(&a.1[2]).then_with(|| a.0.cmp(&b.0)));
    let in_states: i64 = states.iter().map(|(_, c)| c[2]).sum();
    let states: Vec<Value> = states
        .iter()
        .map(
            |(
                state_type,
                [entered, onward, abandoned_here, timed, duration_ms, estimated, est_s, est_actual_ms],
            )| {
                let counts = histograms.get(state_type).cloned().unwrap_or_default();
                let average =
                    |sum: i64, n: i64| if n == 0 { Value::Null } else { json!((sum as f64) / (n as f64)) };
                json!({
                    "state_type": state_type,
                    "entered": entered,
                    "left_onward": onward,
                    "abandoned_here": abandoned_here,
                    "dropoff_rate": rate(*abandoned_here, *entered),
                    "timed": timed,
                    "median_time_in_state_s": quantile(&counts, 0.5),
                    "p90_time_in_state_s": quantile(&counts, 0.9),
                    "avg_time_in_state_s": average(*duration_ms, *timed * 1000),
                    "estimated": estimated,
                    "avg_est_duration_s": average(*est_s, *estimated),
                    "avg_actual_duration_s": average(*est_actual_ms, *estimated * 1000),
                })
            },
        )
        .collect();
    let totals = json!({
        "started": started,
        "completed": completed,
        "abandoned": abandoned,
        "active": started - completed - abandoned,
        "completion_rate": rate(completed, started),
        "abandoned_before_first_state": abandoned - in_states,
        "before_first_state_label": BEFORE_FIRST_STATE,
    });
    Ok((totals, states))
}

async fn transitions(
    State(state): State<AppState>,
    account: Account,
    Q(filter): Q<Filter>,
) -> Result<Response, ApiError> {
    let b = filter.bounds()?;
    let account_id = account.id.clone();
    let moves = state
        .store
        .read_large(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT from_type, to_type, sum(count), sum(channel_switches) FROM analytics_transitions
                 WHERE {WHERE} GROUP BY from_type, to_type ORDER BY sum(count) DESC, from_type, to_type"
            ))?;
            let rows = statement.query_map(
                params![account_id, b.service_type, b.media_type, b.from, b.to],
                |row| {
                    Ok(json!({
                        "from": row.get::<_, String>(0)?,
                        "to": row.get::<_, String>(1)?,
                        "count": row.get::<_, i64>(2)?,
                        "channel_switches": row.get::<_, i64>(3)?,
                    }))
                },
            )?;
            Ok(rows.collect::<Result<Vec<Value>, _>>()?)
        })
        .await?;
    Ok(axum::Json(json!({ "query": filter, "transitions": moves })).into_response())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    #[serde(flatten)]
    filter: Filter,
    interval: Option<String>,
}

async fn timeseries(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<SeriesQuery>,
) -> Result<Response, ApiError> {
    let b = query.filter.bounds()?;
    // `YYYY-MM-DDTHH` cut to the day or kept to the hour.
    let (width, suffix) = match query.interval.as_deref() {
        None | Some("hour") => (13, ":00:00Z"),
        Some("day") => (10, "T00:00:00Z"),
        Some(_) => return Err(ApiError::bad_request("interval must be hour or day")),
    };
    let account_id = account.id.clone();
    let buckets = state
        .store
        .read_large(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT substr(hour, 1, {width}), sum(started), sum(completed), sum(abandoned)
                 FROM analytics_services WHERE {WHERE} GROUP BY 1 ORDER BY 1"
            ))?;
            let rows = statement.query_map(
                params![account_id, b.service_type, b.media_type, b.from, b.to],
                |row| {
                    Ok(json!({
                        "start": format!("{}{suffix}", row.get::<_, String>(0)?),
                        "started": row.get::<_, i64>(1)?,
                        "completed": row.get::<_, i64>(2)?,
                        "abandoned": row.get::<_, i64>(3)?,
                    }))
                },
            )?;
            Ok(rows.collect::<Result<Vec<Value>, _>>()?)
        })
        .await?;
    Ok(axum::Json(json!({ "query": query, "buckets": buckets })).into_response())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AbandonedQuery {
    #[serde(flatten)]
    filter: Filter,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

/// Most abandoned services one page returns, and the default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

async fn abandoned(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<AbandonedQuery>,
) -> Result<Response, ApiError> {
    let b = query.filter.bounds()?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")))?,
    };
    // The cursor is the last row's `ended_at|service_id`, as `next` gave it.
    let after = match query.after.as_deref() {
        None => None,
        Some(cursor) => {
            Some(cursor.split_once('|').map(|(at, id)| (at.to_string(), id.to_string())).ok_or_else(
                || ApiError::bad_request("after must be a `next` cursor this endpoint returned"),
            )?)
        }
    };
    let (account_id, state_type) = (account.id.clone(), query.state_type.clone());
    let rows = state
        .store
        .read_large(move |conn| {
            let (after_at, after_id) = after.unzip();
            let mut statement = conn.prepare(&format!(
                "SELECT ended_at, service_id, service_type, media_type, state_type, detail FROM analytics_abandoned
                 WHERE {WHERE} AND (?6 IS NULL OR state_type = ?6) AND (?7 IS NULL OR (ended_at, service_id) > (?7, ?8))
                 ORDER BY ended_at, service_id LIMIT ?9"
            ))?;
            let p = params![account_id, b.service_type, b.media_type, b.from, b.to, state_type, after_at, after_id, limit as i64];
            let rows = statement.query_map(p, |row| {
                let detail: String = row.get(5)?;
                let mut item: serde_json::Map<String, Value> = serde_json::from_str(&detail).unwrap_or_default();
                item.insert("ended_at".into(), json!(row.get::<_, String>(0)?));
                item.insert("service_id".into(), json!(row.get::<_, String>(1)?));
                item.insert("service_type".into(), json!(row.get::<_, String>(2)?));
                item.insert("media_type".into(), json!(row.get::<_, String>(3)?));
                item.insert("dropoff_state_type".into(), json!(row.get::<_, String>(4)?));
                Ok(Value::Object(item))
            })?;
            Ok(rows.collect::<Result<Vec<Value>, _>>()?)
        })
        .await?;
    let next = (rows.len() == limit)
        .then(|| {
            rows.last().map(|row| {
                format!(
                    "{}|{}",
                    row["ended_at"].as_str().unwrap_or(""),
                    row["service_id"].as_str().unwrap_or("")
                )
            })
        })
        .flatten();
    Ok(axum::Json(json!({ "query": query, "services": rows, "next": next })).into_response())
}
