//! `format=csv` on the analytics endpoints (docs/ANALYTICS.md, "CSV"): the JSON answer as a
//! table. Figures come one per row, named by where they are in the answer; the abandoned list
//! comes one service per row.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The figures of an analytics answer, one per row: `section` (the path of the list or object
/// holding it: `totals`, `states`, `previous.states`, `by_media_type.states` …), one column
/// per name that labels it (`media_type`, `state_type`, `from`, `to`, `start` … — the text
/// fields of the objects on its way, in the order first met; an object's fields go in name
/// order), then `figure` and `value`.
/// The echoed `query`, `warnings` and the list cursor are not figures.
pub fn figures(answer: &Value) -> String {
    let mut rows: Vec<FigureRow> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    walk(answer, "", &[], &mut rows, &mut labels);
    let mut out = String::new();
    let header: Vec<&str> = std::iter::once("section")
        .chain(labels.iter().map(String::as_str))
        .chain(["figure", "value"])
        .collect();
    line(&mut out, header.iter().copied());
    for (section, named, figure, value) in &rows {
        let cells = labels.iter().map(|label| {
            named.iter().find(|(name, _)| name == label).map_or("", |(_, value)| value.as_str())
        });
        line(
            &mut out,
            std::iter::once(section.as_str()).chain(cells).chain([figure.as_str(), value.as_str()]),
        );
    }
    out
}

/// One figure: its section, the names labelling it, its name and its value.
type FigureRow = (String, Vec<(String, String)>, String, String);

fn walk(
    value: &Value,
    section: &str,
    named: &[(String, String)],
    rows: &mut Vec<FigureRow>,
    labels: &mut Vec<String>,
) {
    match value {
        Value::Array(items) => {
            for item in items {
                walk(item, section, named, rows, labels);
            }
        }
        Value::Object(fields) => {
            let skip = |name: &str| section.is_empty() && matches!(name, "query" | "warnings" | "next");
            // The object's text fields (and lists of texts, such as a step's alternatives) name
            // the figures below it.
            let mut named = named.to_vec();
            for (name, field) in fields.iter().filter(|(name, _)| !skip(name)) {
                let text = match field {
                    Value::String(text) => text.clone(),
                    Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                        items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|")
                    }
                    _ => continue,
                };
                if !labels.contains(name) {
                    labels.push(name.clone());
                }
                named.push((name.clone(), text));
            }
            for (name, field) in fields.iter().filter(|(name, _)| !skip(name)) {
                match field {
                    Value::Number(_) | Value::Bool(_) | Value::Null => {
                        let value = if field.is_null() { String::new() } else { field.to_string() };
                        rows.push((section.to_string(), named.clone(), name.clone(), value));
                    }
                    Value::Object(_) | Value::Array(_)
                        if !field.as_array().is_some_and(|a| a.iter().all(Value::is_string)) =>
                    {
                        let inner =
                            if section.is_empty() { name.clone() } else { format!("{section}.{name}") };
                        walk(field, &inner, &named, rows, labels);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The columns of the abandoned list's CSV, in order: the service's fields, then the
/// drop-off's, then JSON texts of its extensions and context.
pub const ABANDONED_COLUMNS: &[&str] = &[
    "service_id",
    "ended_at",
    "service_type",
    "media_type",
    "dropoff_state_type",
    "dropoff_media_type",
    "time_in_step_ms",
    "how",
    "disposition",
    "started",
    "recorded_at",
    "customer_id",
    "contact_key",
    "conversation_id",
    "extensions",
    "state_extensions",
    "context",
];

/// A table: a header of `columns`, then `rows`.
pub fn table(columns: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = String::new();
    line(&mut out, columns.iter().copied());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str));
    }
    out
}

/// The abandoned services, one per row (`ABANDONED_COLUMNS`).
pub fn abandoned(services: &[Value]) -> String {
    table(ABANDONED_COLUMNS, services.iter().map(abandoned_row))
}

fn abandoned_row(service: &Value) -> Vec<String> {
    {
        let empty = Map::new();
        let dropoff = service["dropoff"].as_object().unwrap_or(&empty);
        let cell = |column: &str| -> String {
            let value = match column {
                "dropoff_media_type" => dropoff.get("media_type"),
                "time_in_step_ms" => dropoff.get("time_in_step_ms"),
                _ => service.get(column),
            };
            match value {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            }
        };
        ABANDONED_COLUMNS.iter().map(|column| cell(column)).collect()
    }
}

/// One CSV line (RFC 4180): a cell with a comma, quote or line break is quoted, its quotes
/// doubled. A text that a spreadsheet would take for a formula (`=`, `+`, `-`, `@` first, and
/// not a number) is prefixed with `'`, so that opening an export runs nothing a tenant wrote.
fn line<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (index, cell) in cells.enumerate() {
        if index > 0 {
            out.push(',');
        }
        let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err();
        let cell = if formula { format!("'{cell}") } else { cell.to_string() };
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
}

/// A CSV answer, with the list's cursor (if any) in `X-Next`.
pub fn response(text: String, next: Option<&str>) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CONTENT_DISPOSITION, "attachment")],
        text,
    )
        .into_response();
    if let Some(next) = next.and_then(|next| header::HeaderValue::from_str(next).ok()) {
        response.headers_mut().insert("x-next", next);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_come_one_per_row_named_by_their_labels() {
        let answer = json!({
            "query": {"media_type": "chat"},
            "totals": {"started": 3, "completion_rate": null},
            "states": [{"state_type": "agent, \"live\"", "entered": 2}],
            "previous": {"from": "2026-11-01T00:00:00Z", "states": [{"state_type": "=cmd()", "entered": 1}]},
            "warnings": ["x"],
        });
        let text = figures(&answer);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines,
            // An answer's fields in name order.
            [
                "section,from,state_type,figure,value",
                "previous.states,2026-11-01T00:00:00Z,'=cmd(),entered,1",
                "states,,\"agent, \"\"live\"\"\",entered,2",
                "totals,,,completion_rate,",
                "totals,,,started,3",
                "",
            ]
        );
    }

    #[test]
    fn abandoned_services_come_one_per_row() {
        let services = [json!({
            "service_id": "s1", "ended_at": "2026-11-20T10:05:00.000000Z", "media_type": "voice",
            "dropoff": {"media_type": "chat", "time_in_step_ms": 180000}, "context": {"bots": {"n": -1}},
            "disposition": "-5",
        })];
        let text = abandoned(&services);
        let row = text.split("\r\n").nth(1).unwrap();
        assert_eq!(
            row,
            "s1,2026-11-20T10:05:00.000000Z,,voice,,chat,180000,,-5,,,,,,,,\"{\"\"bots\"\":{\"\"n\"\":-1}}\""
        );
    }
}
