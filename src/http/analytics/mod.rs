//! Where customers abandon: `/v1/account/{account}/analytics/…` (docs/ANALYTICS.md). Every
//! figure is worked out from sums of the counter rows of `projections::analytics`
//! (`analytics_queries`), so a query's cost depends on the number of state types, paths and
//! hours in range, not on the number of services.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{Account, Q};
use super::openapi::analytics as body;
use super::openapi::params::AccountPath;
use super::openapi::responses::ContextRead;
use super::openapi::{Caller, secured};
use crate::domain::journeys::fields::parse_time;
use crate::projections::analytics::{BEFORE_FIRST_STATE, Counter, DURATION_BOUNDS_S};
use crate::projections::analytics_queries::{self as queries, Cohorts, ServiceTotals, Sums};
use crate::store::StoreError;

mod csv;
mod funnel;

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(dropoff))
        .routes(routes!(funnel::funnel))
        .routes(routes!(transitions))
        .routes(routes!(timeseries))
        .routes(routes!(abandoned))
        .routes(routes!(dimensions));
    secured(router, Caller::Tenant, "analytics")
}

/// The filters every analytics query takes; echoed back as `query`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// Only services of this type.
    #[serde(skip_serializing_if = "Option::is_none")]
    service_type: Option<String>,
    /// Only services started on this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    /// Services started at or after this hour (RFC 3339, on the hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    from: Option<String>,
    /// Services started before this hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    to: Option<String>,
    /// `json` (default) or `csv` (docs/ANALYTICS.md, "CSV").
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
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
    /// The names this filter gives, to be checked against those the account has held.
    fn names(&self) -> Vec<(&'static str, String)> {
        let given = [("service_type", &self.service_type), ("media_type", &self.media_type)];
        given.into_iter().filter_map(|(parameter, name)| Some((parameter, name.clone()?))).collect()
    }

    /// With `compare=previous`: the cohorts of the period of the same length just before
    /// `[from, to)`, and that period's bounds (RFC 3339) to show beside its figures.
    fn previous(
        &self,
        account: &Account,
        compare: Option<&str>,
    ) -> Result<Option<(Cohorts, Value)>, ApiError> {
        match compare {
            None => return Ok(None),
            Some("previous") => {}
            Some(_) => return Err(ApiError::bad_request("compare must be previous")),
        }
        let (Some(from), Some(to)) = (&self.from, &self.to) else {
            return Err(ApiError::bad_request(
                "compare=previous needs from and to: it compares them with the period of the same length just before",
            ));
        };
        self.cohorts(account)?; // from and to are whole hours, from before to
        let (from, to): (DateTime<Utc>, DateTime<Utc>) = (parse_time("from", from)?, parse_time("to", to)?);
        let start = from - (to - from);
        let hour = |time: DateTime<Utc>| time.format("%Y-%m-%dT%H").to_string();
        let cohorts =
            Cohorts { from_hour: Some(hour(start)), to_hour: Some(hour(from)), ..self.cohorts(account)? };
        let rfc3339 = |time: DateTime<Utc>| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(Some((cohorts, json!({ "from": rfc3339(start), "to": rfc3339(from) }))))
    }

    /// Whether the answer is asked for as CSV.
    fn csv(&self) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("format must be json or csv, not '{other}'"))),
        }
    }

    /// The account's cohorts this filter selects.
    fn cohorts(&self, account: &Account) -> Result<Cohorts, ApiError> {
        self.csv()?;
        let from_hour = self.from.as_deref().map(|t| hour_of("from", t)).transpose()?;
        let to_hour = self.to.as_deref().map(|t| hour_of("to", t)).transpose()?;
        if let (Some(from), Some(to)) = (&from_hour, &to_hour)
            && from >= to
        {
            return Err(ApiError::bad_request("from must be before to"));
        }
        Ok(Cohorts {
            account_id: account.id.clone(),
            service_type: self.service_type.clone(),
            media_type: self.media_type.clone(),
            from_hour,
            to_hour,
        })
    }
}

/// An analytics answer, with a `warnings` list when the query named a service type, channel or
/// state type the account has never recorded (the answer's zeros are then most likely a typo's).
fn answer(filter: &Filter, mut body: Value, never_seen: Vec<(&'static str, String)>) -> Response {
    if !never_seen.is_empty() {
        let warnings: Vec<String> = never_seen
            .into_iter()
            .map(|(parameter, name)| {
                format!("{parameter} {name:?} was never recorded in this account (analytics/dimensions lists the names seen)")
            })
            .collect();
        body["warnings"] = json!(warnings);
    }
    if filter.csv().unwrap_or(false) {
        return csv::response(csv::figures(&body), None);
    }
    axum::Json(body).into_response()
}

fn rate(part: i64, whole: i64) -> Value {
    if whole == 0 { Value::Null } else { json!((part as f64) / (whole as f64)) }
}

fn average(sum: i64, count: i64) -> Value {
    if count == 0 { Value::Null } else { json!((sum as f64) / (count as f64)) }
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

#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DropoffQuery {
    #[serde(flatten)]
    #[param(ignore)]
    filter: Filter,
    /// `media_type`: the drop-off of each channel too, under `by_media_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<String>,
    /// `previous` (with `from` and `to`): the same figures for the period of the same length
    /// just before, under `previous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<String>,
}

/// `figures` of the previous period, with its bounds, as an answer's `previous`.
fn previous_figures(
    previous: Option<(Cohorts, Value)>,
    figures: impl Fn(&Cohorts) -> Result<Value, StoreError>,
) -> Result<Option<Value>, StoreError> {
    let Some((cohorts, mut bounds)) = previous else { return Ok(None) };
    if let (Some(bounds), Value::Object(figures)) = (bounds.as_object_mut(), figures(&cohorts)?) {
        bounds.extend(figures);
    }
    Ok(Some(bounds))
}

/// Whether a query's `breakdown` asks for one answer per channel.
pub(super) fn by_media_type(breakdown: Option<&str>) -> Result<bool, ApiError> {
    match breakdown {
        None => Ok(false),
        Some("media_type") => Ok(true),
        Some(_) => Err(ApiError::bad_request("breakdown must be media_type")),
    }
}

/// `figures` of each channel of `cohorts`, each with its `media_type`.
fn per_channel(
    conn: &crate::store::db::Connection,
    cohorts: &Cohorts,
    figures: impl Fn(&Cohorts) -> Result<Value, StoreError>,
) -> Result<Value, StoreError> {
    let mut split = Vec::new();
    for media in queries::media_types(conn, cohorts)? {
        let mut channel = figures(&cohorts.on(&media))?;
        channel["media_type"] = json!(media);
        split.push(channel);
    }
    Ok(json!(split))
}

/// Where services are abandoned: totals, and per state type the services that entered it, left
/// onward or were abandoned there, most abandoned first; with `breakdown=media_type`, the same
/// for each channel.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/dropoff", params(AccountPath, Filter, DropoffQuery),
    responses(
        (status = 200, description = "The drop-off (with format=csv, as CSV)", content(
        (body::Dropoff = "application/json"),
        (String = "text/csv"),
    )),
        ContextRead,
    ))]
async fn dropoff(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<DropoffQuery>,
) -> Result<Response, ApiError> {
    let (cohorts, names) = (query.filter.cohorts(&account)?, query.filter.names());
    let split = by_media_type(query.breakdown.as_deref())?;
    let previous = query.filter.previous(&account, query.compare.as_deref())?;
    let (figures, by_media, previous, never_seen) = state
        .store
        .read_large(move |conn| {
            let figures = |cohorts: &Cohorts| -> Result<Value, StoreError> {
                let totals = queries::service_totals(conn, cohorts)?;
                let states = queries::sums(conn, cohorts, Counter::States, &["state_type"])?;
                Ok(json!({ "totals": dropoff_totals(totals, &states), "states": dropoff_states(states) }))
            };
            let by_media = split.then(|| per_channel(conn, &cohorts, figures)).transpose()?;
            let previous = previous_figures(previous, figures)?;
            Ok((
                figures(&cohorts)?,
                by_media,
                previous,
                queries::never_seen(conn, &cohorts.account_id, &names)?,
            ))
        })
        .await?;
    let mut body = json!({ "query": query, "totals": figures["totals"], "states": figures["states"] });
    if let Some(by_media) = by_media {
        body["by_media_type"] = by_media;
    }
    if let Some(previous) = previous {
        body["previous"] = previous;
    }
    Ok(answer(&query.filter, body, never_seen))
}

fn dropoff_totals(totals: ServiceTotals, states: &[Sums]) -> Value {
    let ServiceTotals { started, completed, abandoned } = totals;
    let in_states: i64 = states.iter().map(|s| s.get(Counter::States, "abandoned")).sum();
    json!({
        "started": started,
        "completed": completed,
        "abandoned": abandoned,
        "active": started - completed - abandoned,
        "completion_rate": rate(completed, started),
        "abandoned_before_first_state": abandoned - in_states,
        "before_first_state_label": BEFORE_FIRST_STATE,
    })
}

/// Per state type, most abandoned first.
fn dropoff_states(mut states: Vec<Sums>) -> Vec<Value> {
    let figure = |sums: &Sums, column: &str| sums.get(Counter::States, column);
    states
        .sort_by(|a, b| figure(b, "abandoned").cmp(&figure(a, "abandoned")).then_with(|| a.key.cmp(&b.key)));
    states
        .iter()
        .map(|s| {
            let (entered, abandoned_here, timed, estimated) =
                (figure(s, "entered"), figure(s, "abandoned"), figure(s, "timed"), figure(s, "estimated"));
            json!({
                "state_type": s.key[0],
                "entered": entered,
                "left_onward": figure(s, "onward"),
                "abandoned_here": abandoned_here,
                "dropoff_rate": rate(abandoned_here, entered),
                "timed": timed,
                "median_time_in_state_s": quantile(s.histogram(), 0.5),
                "p90_time_in_state_s": quantile(s.histogram(), 0.9),
                "avg_time_in_state_s": average(figure(s, "duration_ms"), timed * 1000),
                "estimated": estimated,
                "avg_est_duration_s": average(figure(s, "est_duration_s"), estimated),
                "avg_actual_duration_s": average(figure(s, "est_actual_ms"), estimated * 1000),
            })
        })
        .collect()
}

/// The moves between state types, most frequent first.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/transitions", params(AccountPath, Filter), responses(
    (status = 200, description = "The transitions (with format=csv, as CSV)", content(
        (body::Transitions = "application/json"),
        (String = "text/csv"),
    )),
    ContextRead,
))]
async fn transitions(
    State(state): State<AppState>,
    account: Account,
    Q(filter): Q<Filter>,
) -> Result<Response, ApiError> {
    let (cohorts, names) = (filter.cohorts(&account)?, filter.names());
    let (mut moves, never_seen) = state
        .store
        .read_large(move |conn| {
            let moves = queries::sums(conn, &cohorts, Counter::Transitions, &["from_type", "to_type"])?;
            Ok((moves, queries::never_seen(conn, &cohorts.account_id, &names)?))
        })
        .await?;
    let count = |sums: &Sums| sums.get(Counter::Transitions, "count");
    moves.sort_by(|a, b| count(b).cmp(&count(a)).then_with(|| a.key.cmp(&b.key)));
    let moves: Vec<Value> = moves
        .iter()
        .map(|m| {
            json!({
                "from": m.key[0],
                "to": m.key[1],
                "count": count(m),
                "channel_switches": m.get(Counter::Transitions, "channel_switches"),
            })
        })
        .collect();
    Ok(answer(&filter, json!({ "query": filter, "transitions": moves }), never_seen))
}

#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    #[serde(flatten)]
    #[param(ignore)]
    filter: Filter,
    /// `hour` (default) or `day`.
    interval: Option<String>,
    /// `media_type`: the buckets of each channel too, under `by_media_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<String>,
    /// `previous` (with `from` and `to`): the buckets of the period of the same length just
    /// before, under `previous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<String>,
}

/// Services started, completed and abandoned per hour or day.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/timeseries", params(AccountPath, Filter, SeriesQuery),
    responses(
        (status = 200, description = "The buckets (with format=csv, as CSV)", content(
        (body::Timeseries = "application/json"),
        (String = "text/csv"),
    )),
        ContextRead,
    ))]
async fn timeseries(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<SeriesQuery>,
) -> Result<Response, ApiError> {
    let (cohorts, names) = (query.filter.cohorts(&account)?, query.filter.names());
    let (by_day, suffix) = match query.interval.as_deref() {
        None | Some("hour") => (false, ":00:00Z"),
        Some("day") => (true, "T00:00:00Z"),
        Some(_) => return Err(ApiError::bad_request("interval must be hour or day")),
    };
    let split = by_media_type(query.breakdown.as_deref())?;
    let previous = query.filter.previous(&account, query.compare.as_deref())?;
    let (series, by_media, previous, never_seen) = state
        .store
        .read_large(move |conn| {
            let buckets = |cohorts: &Cohorts| -> Result<Value, StoreError> {
                let buckets: Vec<Value> = queries::series(conn, cohorts, by_day)?
                    .iter()
                    .map(|(start, totals)| {
                        json!({
                            "start": format!("{start}{suffix}"),
                            "started": totals.started,
                            "completed": totals.completed,
                            "abandoned": totals.abandoned,
                        })
                    })
                    .collect();
                Ok(json!({ "buckets": buckets }))
            };
            let by_media = split.then(|| per_channel(conn, &cohorts, buckets)).transpose()?;
            let previous = previous_figures(previous, buckets)?;
            Ok((
                buckets(&cohorts)?,
                by_media,
                previous,
                queries::never_seen(conn, &cohorts.account_id, &names)?,
            ))
        })
        .await?;
    let mut body = json!({ "query": query, "buckets": series["buckets"] });
    if let Some(by_media) = by_media {
        body["by_media_type"] = by_media;
    }
    if let Some(previous) = previous {
        body["previous"] = previous;
    }
    Ok(answer(&query.filter, body, never_seen))
}

#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AbandonedQuery {
    #[serde(flatten)]
    #[param(ignore)]
    filter: Filter,
    /// Only services abandoned in this state type.
    #[serde(skip_serializing_if = "Option::is_none")]
    state_type: Option<String>,
    /// Services a page, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` cursor of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

/// Most abandoned services one page returns, and the default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// The abandoned services, latest first, a page at a time.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/abandoned", params(AccountPath, Filter, AbandonedQuery),
    responses(
        (status = 200, description = "A page of abandoned services (with format=csv, as CSV)", content(
        (body::Abandoned = "application/json"),
        (String = "text/csv"),
    )),
        ContextRead,
    ))]
async fn abandoned(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<AbandonedQuery>,
) -> Result<Response, ApiError> {
    let cohorts = query.filter.cohorts(&account)?;
    let mut names = query.filter.names();
    names.extend(query.state_type.clone().map(|name| ("state_type", name)));
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
    let state_type = query.state_type.clone();
    let now = state.clock.now().timestamp_micros();
    let (rows, short, never_seen) = state
        .store
        .read_large(move |conn| {
            let rows = queries::abandoned(conn, &cohorts, state_type, after, limit)?;
            let (rows, short) = with_context(conn, &cohorts.account_id, rows, now)?;
            Ok((rows, short, queries::never_seen(conn, &cohorts.account_id, &names)?))
        })
        .await?;
    let next = (rows.len() == limit || short)
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
    if query.filter.csv()? {
        return Ok(csv::response(csv::abandoned(&rows), next.as_deref()));
    }
    Ok(answer(&query.filter, json!({ "query": query, "services": rows, "next": next }), never_seen))
}

/// Bytes of context values one page of abandoned services carries (at least one service's).
const CONTEXT_BYTES: usize = 4 * 1024 * 1024;

/// The abandoned services as the list shows them: each row's detail, with the conversation's
/// live context (the sessions named by its `session_id`, else its `interaction_id`, in every
/// namespace). A page stops early, before the service whose context would pass
/// `CONTEXT_BYTES`: answers whether it did.
fn with_context(
    conn: &crate::store::db::Connection,
    account: &str,
    rows: Vec<crate::projections::analytics::AbandonedRow>,
    now_micros: i64,
) -> Result<(Vec<Value>, bool), crate::store::StoreError> {
    let namespaces = queries::namespaces(conn, account)?;
    let (mut items, mut bytes) = (Vec::with_capacity(rows.len()), 0);
    let mut contexts: std::collections::HashMap<String, Value> = Default::default();
    for row in rows {
        let mut item: serde_json::Map<String, Value> = serde_json::from_str(&row.detail).unwrap_or_default();
        let conversation = ["session_id", "interaction_id"]
            .iter()
            .find_map(|field| item.get(*field)?.as_str().map(str::to_string));
        if let Some(id) = conversation {
            if !contexts.contains_key(&id) {
                let (context, size) =
                    queries::conversation_context(conn, account, &namespaces, &id, now_micros)?;
                if bytes + size > CONTEXT_BYTES && !items.is_empty() {
                    return Ok((items, true));
                }
                bytes += size;
                contexts.insert(id.clone(), Value::Object(context));
            }
            item.insert("context".into(), contexts[&id].clone());
            item.insert("conversation_id".into(), json!(id));
        }
        item.insert("ended_at".into(), json!(row.ended_at));
        item.insert("service_id".into(), json!(row.service_id));
        item.insert("service_type".into(), json!(row.service_type));
        item.insert("media_type".into(), json!(row.media_type));
        item.insert("dropoff_state_type".into(), json!(row.state_type));
        items.push(Value::Object(item));
    }
    Ok((items, false))
}

/// The service types, channels and state types the account's counters hold (within the
/// filters given): to fill a dashboard's menus, and to tell a typo from an empty result.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/dimensions", params(AccountPath, Filter), responses(
    (status = 200, description = "The names seen, each list sorted (with format=csv, as CSV)", content(
        (body::Dimensions = "application/json"),
        (String = "text/csv"),
    )),
    ContextRead,
))]
async fn dimensions(
    State(state): State<AppState>,
    account: Account,
    Q(filter): Q<Filter>,
) -> Result<Response, ApiError> {
    let cohorts = filter.cohorts(&account)?;
    let seen = state.store.read_large(move |conn| queries::dimensions(conn, &cohorts)).await?;
    if filter.csv()? {
        // Names, not figures: one row per name.
        let lists = [
            ("service_type", seen.service_types),
            ("media_type", seen.media_types),
            ("state_type", seen.state_types),
        ];
        let rows = lists.into_iter().flat_map(|(dimension, names)| {
            names.into_iter().map(move |name| vec![dimension.to_string(), name])
        });
        return Ok(csv::response(csv::table(&["dimension", "name"], rows), None));
    }
    Ok(axum::Json(json!({
        "query": filter,
        "service_types": seen.service_types,
        "media_types": seen.media_types,
        "state_types": seen.state_types,
    }))
    .into_response())
}
