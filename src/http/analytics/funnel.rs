//! `GET …/analytics/funnel`: how many journeys reached each step, in order, within a window.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Account, Q};
use crate::http::openapi::analytics as body;
use crate::http::openapi::params::AccountPath;
use crate::http::openapi::responses::ContextRead;
use crate::projections::analytics::{Counter, DURATION_BOUNDS_S, FUNNEL_DEPTH, HISTOGRAM_BUCKETS};
use crate::projections::analytics_queries as queries;
use crate::store::StoreError;

use super::{Filter, quantile, rate};

#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct FunnelQuery {
    #[serde(flatten)]
    #[param(ignore)]
    filter: Filter,
    /// State types, comma-separated, in funnel order (or a JSON array of strings): 1 to 12; required.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(required = true)]
    steps: Option<String>,
    /// How long after the service's start a step still counts as reached: seconds, or with a
    /// unit (`90s`, `15m`, `1h`, `1d`), one of the histogram's bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<String>,
    /// `media_type`: the funnel of each channel too.
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<String>,
    /// `previous` (with `from` and `to`): the funnel of the period of the same length just
    /// before, under `previous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<String>,
}

/// One step of a funnel: a state type, or alternatives any of which reaches it (`ivr|bot`: the
/// first step of a voice journey and of a chat one).
#[derive(Debug, Clone)]
struct Step {
    /// As the answer names it: the state type, or the alternatives joined by `|`.
    name: String,
    any_of: Vec<String>,
}

/// Most alternatives one step may have: each is looked up apart (`queries::never_seen`), so a
/// step of thousands would make one request cost thousands of lookups.
const MAX_ALTERNATIVES: usize = 16;

/// A step as sent in the JSON array form: a state type, or an array of alternatives.
#[derive(Deserialize)]
#[serde(untagged)]
enum SentStep {
    One(String),
    AnyOf(Vec<String>),
}

/// The funnel's steps, validated: comma-separated, alternatives joined by `|`; or a JSON array
/// whose elements are state types (which may hold commas and bars) or arrays of alternatives.
fn funnel_steps(steps: Option<&str>) -> Result<Vec<Step>, ApiError> {
    let text = steps.ok_or_else(|| {
        ApiError::bad_request(
            "steps is required: the funnel's state types in order, e.g. steps=ivr,queue,agent",
        )
    })?;
    let steps: Option<Vec<Vec<String>>> = if text.starts_with('[') {
        serde_json::from_str::<Vec<SentStep>>(text).ok().map(|sent| {
            sent.into_iter()
                .map(|step| match step {
                    SentStep::One(state_type) => vec![state_type],
                    SentStep::AnyOf(alternatives) => alternatives,
                })
                .collect()
        })
    } else {
        Some(text.split(',').map(|step| step.split('|').map(str::to_string).collect()).collect())
    };
    let well_formed = |steps: &Vec<Vec<String>>| {
        (1..=FUNNEL_DEPTH).contains(&steps.len())
            && steps.iter().all(|any_of| {
                (1..=MAX_ALTERNATIVES).contains(&any_of.len()) && !any_of.iter().any(String::is_empty)
            })
    };
    let steps = steps.filter(well_formed).ok_or_else(|| {
        ApiError::bad_request(format!(
            "steps must be 1 to {FUNNEL_DEPTH} state types, none empty: comma-separated (up to \
             {MAX_ALTERNATIVES} alternatives joined by |, e.g. steps=ivr|bot,queue,agent), or a JSON array of \
             state types and arrays of alternatives"
        ))
    })?;
    Ok(steps.into_iter().map(|any_of| Step { name: any_of.join("|"), any_of }).collect())
}

/// The histogram bucket a window ends with: the window must be one of its bounds, so that
/// "reached within the window" is an exact count.
fn window_bucket(window: Option<&str>) -> Result<Option<usize>, ApiError> {
    let Some(text) = window else { return Ok(None) };
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let scale = match unit {
        "" | "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86400),
        _ => None,
    };
    let seconds = digits.parse::<u64>().ok().zip(scale).and_then(|(n, scale)| n.checked_mul(scale));
    seconds.and_then(|s| DURATION_BOUNDS_S.iter().position(|bound| *bound == s)).map(Some).ok_or_else(|| {
        let bounds: Vec<String> = DURATION_BOUNDS_S.iter().map(u64::to_string).collect();
        ApiError::bad_request(format!(
            "window must be one of these numbers of seconds (optionally as m, h or d): {}",
            bounds.join(", ")
        ))
    })
}

/// The step of `steps` that a path's last state reaches, matching the steps in order, each at
/// its first occurrence after the previous one; `None` when the last state matches no step.
fn reached_step(path: &[String], steps: &[Step]) -> Option<usize> {
    let mut next = 0;
    for (index, state_type) in path.iter().enumerate() {
        if steps.get(next).is_some_and(|step| step.any_of.contains(state_type)) {
            if index + 1 == path.len() {
                return Some(next);
            }
            next += 1;
        }
    }
    None
}

/// Per step, the histogram of the time from the service's start to reaching it.
type StepHistograms = Vec<Vec<i64>>;

/// One funnel's figures: its services started, and per step reached, conversions, dropped and
/// the median time to reach it.
fn funnel_figures(started: i64, steps: &[Step], histograms: &StepHistograms, window: Option<usize>) -> Value {
    let within = |counts: &[i64]| counts[..window.map_or(counts.len(), |bucket| bucket + 1)].to_vec();
    let reached: Vec<i64> = histograms.iter().map(|h| within(h).iter().sum()).collect();
    let figures: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(k, step)| {
            let mut figures = json!({
                "state_type": step.name,
                "reached": reached[k],
                "conversion_from_previous": rate(reached[k], if k == 0 { started } else { reached[k - 1] }),
                "conversion_from_first": rate(reached[k], reached[0]),
                "dropped": reached.get(k + 1).map(|next| reached[k] - next),
                "median_time_to_reach_s": quantile(&within(&histograms[k]), 0.5),
            });
            if step.any_of.len() > 1 {
                figures["any_of"] = json!(step.any_of);
            }
            figures
        })
        .collect();
    json!({ "started": started, "steps": figures })
}

/// Services started per channel, and the paths' histograms per channel: what a funnel sums.
type FunnelSums = (Vec<queries::Sums>, Vec<queries::Sums>);

/// A funnel's figures from its sums: `started`, `steps`, and with `by_media` each channel's.
fn funnel_answer(
    (started, paths): &FunnelSums,
    steps: &[Step],
    window: Option<usize>,
    by_media: bool,
) -> Result<Value, StoreError> {
    // Per media type (None for all of them; "" is the channel of services started without one):
    // services started and the steps' histograms.
    let mut groups: BTreeMap<Option<&str>, (i64, StepHistograms)> = BTreeMap::new();
    let empty = || (0, vec![vec![0; HISTOGRAM_BUCKETS]; steps.len()]);
    for sums in started {
        for group in [None, Some(sums.key[0].as_str())] {
            groups.entry(group).or_insert_with(empty).0 += sums.get(Counter::Services, "started");
        }
    }
    for sums in paths {
        let path: Vec<String> = serde_json::from_str(&sums.key[1])
            .map_err(|error| StoreError::Corrupt(format!("an analytics path: {error}")))?;
        let Some(step) = reached_step(&path, steps) else { continue };
        for group in [None, Some(sums.key[0].as_str())] {
            let counts = &mut groups.entry(group).or_insert_with(empty).1[step];
            for (count, add) in counts.iter_mut().zip(sums.histogram()) {
                *count += add;
            }
        }
    }
    let (started, all) = groups.remove(&None).unwrap_or_else(empty);
    let mut body = funnel_figures(started, steps, &all, window);
    if by_media {
        let split: Vec<Value> = groups
            .iter()
            .map(|(media, (started, histograms))| {
                let mut figures = funnel_figures(*started, steps, histograms, window);
                figures["media_type"] = json!(media);
                figures
            })
            .collect();
        body["by_media_type"] = json!(split);
    }
    Ok(body)
}

/// How many journeys reached each step, in order, within a window.
#[utoipa::path(get, path = "/v1/account/{account}/analytics/funnel", params(AccountPath, Filter, FunnelQuery),
    responses(
        (status = 200, description = "The funnel (with format=csv, as CSV)", content(
        (body::Funnel = "application/json"),
        (String = "text/csv"),
    )),
        ContextRead,
    ))]
pub(super) async fn funnel(
    State(state): State<AppState>,
    account: Account,
    Q(query): Q<FunnelQuery>,
) -> Result<Response, ApiError> {
    let cohorts = query.filter.cohorts(&account)?;
    let steps = funnel_steps(query.steps.as_deref())?;
    let window = window_bucket(query.window.as_deref())?;
    let by_media = super::by_media_type(query.breakdown.as_deref())?;
    let previous = query.filter.previous(&account, query.compare.as_deref())?;
    let mut names = query.filter.names();
    names.extend(
        steps.iter().flat_map(|step| step.any_of.iter().map(|state_type| ("step", state_type.clone()))),
    );
    let (sums, previous, never_seen) = state
        .store
        .read_large(move |conn| {
            let sums = |cohorts: &queries::Cohorts| -> Result<FunnelSums, StoreError> {
                let started = queries::sums(conn, cohorts, Counter::Services, &["media_type"])?;
                Ok((started, queries::sums(conn, cohorts, Counter::Paths, &["media_type", "path"])?))
            };
            let previous = previous
                .map(|(cohorts, bounds)| Ok::<_, StoreError>((sums(&cohorts)?, bounds)))
                .transpose()?;
            Ok((sums(&cohorts)?, previous, queries::never_seen(conn, &cohorts.account_id, &names)?))
        })
        .await?;
    let mut body = funnel_answer(&sums, &steps, window, by_media)?;
    body["query"] = json!(query);
    if let Some((sums, mut bounds)) = previous {
        for (name, value) in funnel_answer(&sums, &steps, window, by_media)?.as_object().into_iter().flatten()
        {
            bounds[name] = value.clone();
        }
        body["previous"] = bounds;
    }
    Ok(super::answer(&query.filter, body, never_seen))
}
