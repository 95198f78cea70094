//! The fields of the reference's start, end and associate bodies, checked once where a request
//! enters. Known fields have fixed types and limits; every other key is an extension.

use chrono::{DateTime, Datelike, Utc};

use crate::domain::ttl::MAX_TTL_SECONDS;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::DomainError;
use crate::domain::events::{JsonText, Properties};
use crate::domain::names::check_name;

/// The channel fields a start or end event may carry, kept in `Touch::channel`.
pub const CHANNEL_FIELDS: &[&str] = &[
    "session_id",
    "interaction_id",
    "application_type",
    "application_id",
    "resource_type",
    "resource_id",
    "media_type",
];

/// Longest `session_id`, `interaction_id` and `disposition_desc`, as the reference sets them.
const MAX_SESSION_ID: usize = 32;
const MAX_INTERACTION_ID: usize = 50;
const MAX_DISPOSITION_DESC: usize = 64;

/// Which request a body belongs to: it decides which known fields are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    ServiceStart,
    ServiceEnd,
    StateStart,
    StateEnd,
    TaskStart,
    TaskEnd,
    Associate,
}

impl BodyKind {
    fn allows(self, field: &str) -> bool {
        use BodyKind::*;
        match field {
            "timestamp" => self != Associate,
            "est_duration" => matches!(self, ServiceStart | StateStart | TaskStart),
            "disposition" | "disposition_desc" => matches!(self, ServiceEnd | StateEnd | TaskEnd),
            "ttl" | "expiration_time" => matches!(self, ServiceStart | ServiceEnd),
            "auto_complete_after" | "customer_id" | "contact_key" => self == ServiceStart,
            "service_type" => matches!(self, ServiceStart | Associate),
            "state_type" | "previous_state_id" => self == StateStart,
            "task_type" => self == TaskStart,
            "state_id" => matches!(self, TaskStart | TaskEnd),
            "service_id" => self == ServiceEnd,
            _ => CHANNEL_FIELDS.contains(&field),
        }
    }
}

/// Every field name with a meaning of its own; any other key of a body is an extension.
const KNOWN_FIELDS: &[&str] = &[
    "service_id",
    "timestamp",
    "est_duration",
    "disposition",
    "disposition_desc",
    "ttl",
    "expiration_time",
    "auto_complete_after",
    "customer_id",
    "contact_key",
    "service_type",
    "state_type",
    "task_type",
    "previous_state_id",
    "state_id",
];

/// Names the API's responses use for an item's own fields: never extension names.
const RESPONSE_FIELDS: &[&str] = &[
    "service_id",
    "task_id",
    "started",
    "completed",
    "duration",
    "closed_by",
    "active_states",
    "completed_states",
    "active_tasks",
    "completed_tasks",
];

/// Checks the name of an extension: a valid name that no field of an item uses.
pub fn check_extension_name(name: &str) -> Result<(), DomainError> {
    check_name("extension name", name)?;
    let taken = RESPONSE_FIELDS.iter().chain(KNOWN_FIELDS).chain(CHANNEL_FIELDS).any(|field| *field == name);
    if taken {
        return Err(invalid(format!("{name} is a field of the item and cannot name an extension")));
    }
    Ok(())
}

/// Where and how an event happened: client time (or server time) and the channel fields given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub timestamp: DateTime<Utc>,
    /// The `CHANNEL_FIELDS` that were given, with their values.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub channel: Properties,
}

/// A checked body. Fields its kind does not allow are refused, so every `Option` here is
/// `None` unless the kind allows that field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub timestamp: Option<DateTime<Utc>>,
    pub channel: Properties,
    pub est_duration: Option<u64>,
    pub disposition: Option<JsonText>,
    pub disposition_desc: Option<String>,
    pub ttl: Option<u64>,
    pub expiration_time: Option<DateTime<Utc>>,
    pub auto_complete_after: Option<u64>,
    pub customer_id: Option<String>,
    pub contact_key: Option<String>,
    /// `service_type`, `state_type` or `task_type`, whichever the kind takes.
    pub item_type: Option<JsonText>,
    /// `previous_state_id` of a state start, `state_id` of a task start.
    pub link: Option<u32>,
    pub extensions: Properties,
}

impl Body {
    /// The event's touch: its own timestamp, or `now` when the client sent none.
    pub fn touch(&self, now: DateTime<Utc>) -> Touch {
        Touch { timestamp: self.timestamp.unwrap_or(now), channel: self.channel.clone() }
    }
}

fn invalid(message: String) -> DomainError {
    DomainError::Invalid(message)
}

/// Checks a JSON object as a body of `kind`.
pub fn parse_body(object: Map<String, Value>, kind: BodyKind) -> Result<Body, DomainError> {
    let mut body = Body::default();
    for (name, value) in object {
        let known = KNOWN_FIELDS.contains(&name.as_str()) || CHANNEL_FIELDS.contains(&name.as_str());
        if !known {
            check_extension_name(&name)?;
            body.extensions.insert(name, JsonText::from_value(&value));
            continue;
        }
        if !kind.allows(&name) {
            return Err(invalid(format!("{name} is not a field of this request")));
        }
        if value.is_null() {
            continue;
        }
        match name.as_str() {
            // The reference's end event repeats the service id; the path decides which service.
            "service_id" => {}
            "timestamp" => body.timestamp = Some(time(&name, &value)?),
            "expiration_time" => body.expiration_time = Some(time(&name, &value)?),
            "est_duration" => body.est_duration = Some(est_duration(&value)?),
            "ttl" => body.ttl = Some(crate::domain::ttl::check(&name, count(&name, &value)?)?),
            "auto_complete_after" => body.auto_complete_after = Some(auto_complete_after(&value)?),
            "disposition" => body.disposition = Some(label(&name, &value)?),
            "disposition_desc" => body.disposition_desc = Some(text(&name, &value, MAX_DISPOSITION_DESC)?),
            "customer_id" => body.customer_id = Some(identifier(&name, &value)?),
            "contact_key" => body.contact_key = Some(identifier(&name, &value)?),
            "state_type" => body.item_type = Some(state_type(&name, &value)?),
            "service_type" | "task_type" => body.item_type = Some(label(&name, &value)?),
            "previous_state_id" | "state_id" => body.link = Some(item_id(&name, &value)?),
            "session_id" => {
                text(&name, &value, MAX_SESSION_ID)?;
                body.channel.insert(name, JsonText::from_value(&value));
            }
            "interaction_id" => {
                text(&name, &value, MAX_INTERACTION_ID)?;
                body.channel.insert(name, JsonText::from_value(&value));
            }
            _ => {
                let checked = label(&name, &value)?;
                body.channel.insert(name, checked);
            }
        }
    }
    Ok(body)
}

/// Checks a transition body: `from` {`state_id`, `disposition`, `disposition_desc`}, `to`
/// {`state_type`, `est_duration`}, shared channel fields and `timestamp` for both halves, and
/// any other key as an extension of the new state. Returns the state to end and both bodies.
pub fn parse_transition(mut object: Map<String, Value>) -> Result<(u32, Body, Body), DomainError> {
    let mut half = |name: &str| match object.remove(name) {
        Some(Value::Object(half)) => Ok(half),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(_) => Err(invalid(format!("{name} must be an object"))),
    };
    let (mut from, to) = (half("from")?, half("to")?);
    let from_state_id = match from.remove("state_id") {
        Some(value) => item_id("from.state_id", &value)?,
        None => return Err(invalid("from.state_id is required".into())),
    };
    let pick = |half: &Map<String, Value>,
                allowed: &[&str],
                name: &str|
     -> Result<Map<String, Value>, DomainError> {
        match half.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(invalid(format!("{name}.{key} is not a field of a transition"))),
            None => Ok(half.clone()),
        }
    };
    let from = pick(&from, &["disposition", "disposition_desc"], "from")?;
    let to = pick(&to, &["state_type", "est_duration"], "to")?;
    let shared: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| CHANNEL_FIELDS.contains(&key.as_str()) || *key == "timestamp")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut end = shared.clone();
    end.extend(from);
    let mut start = object;
    start.extend(to);
    Ok((from_state_id, parse_body(end, BodyKind::StateEnd)?, parse_body(start, BodyKind::StateStart)?))
}

/// A string or an integer naming a type, channel, application, resource or disposition.
pub fn label(name: &str, value: &Value) -> Result<JsonText, DomainError> {
    match value {
        Value::String(text) => {
            check_name(name, text)?;
            Ok(JsonText::from_value(value))
        }
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(JsonText::from_value(value)),
        _ => Err(invalid(format!("{name} must be a string or an integer"))),
    }
}

/// The names analytics give the ends of a journey (docs/ANALYTICS.md); no state may take one.
pub const STEP_MARKERS: [&str; 4] = ["(start)", "(completed)", "(abandoned)", "(before first state)"];

/// A state type: a label that is not one of the `STEP_MARKERS`.
fn state_type(name: &str, value: &Value) -> Result<JsonText, DomainError> {
    let label = label(name, value)?;
    let text = label_text(&label);
    if STEP_MARKERS.contains(&text.as_str()) {
        return Err(invalid(format!("{name} {text} is reserved: analytics name the ends of a journey so")));
    }
    Ok(label)
}

/// A label as text, for filters: a string's content, or an integer's digits.
pub fn label_text(label: &JsonText) -> String {
    serde_json::from_str::<String>(label.as_str()).unwrap_or_else(|_| label.as_str().to_string())
}

fn text(name: &str, value: &Value, max_chars: usize) -> Result<String, DomainError> {
    match value.as_str() {
        Some(text) if text.chars().count() <= max_chars && !text.chars().any(char::is_control) => {
            Ok(text.to_string())
        }
        _ => Err(invalid(format!("{name} must be a string of at most {max_chars} characters"))),
    }
}

fn identifier(name: &str, value: &Value) -> Result<String, DomainError> {
    let text = value.as_str().ok_or_else(|| invalid(format!("{name} must be a string")))?;
    check_name(name, text)?;
    Ok(text.to_string())
}

fn count(name: &str, value: &Value) -> Result<u64, DomainError> {
    value.as_u64().ok_or_else(|| invalid(format!("{name} must be a non-negative integer")))
}

/// An estimated duration in seconds: at most `MAX_TTL_SECONDS`, as long as anything lives here,
/// which also keeps the analytics' sums of estimates far from overflowing.
fn est_duration(value: &Value) -> Result<u64, DomainError> {
    value
        .as_u64()
        .filter(|seconds| *seconds <= MAX_TTL_SECONDS)
        .ok_or_else(|| invalid(format!("est_duration must be 0 to {MAX_TTL_SECONDS} seconds")))
}

/// Seconds of inactivity before auto-completion: positive and at most `MAX_TTL_SECONDS`.
pub fn check_auto_complete_after(seconds: u64) -> Result<u64, DomainError> {
    if seconds == 0 || seconds > MAX_TTL_SECONDS {
        return Err(invalid(format!("auto_complete_after must be 1 to {MAX_TTL_SECONDS} seconds")));
    }
    Ok(seconds)
}

fn auto_complete_after(value: &Value) -> Result<u64, DomainError> {
    check_auto_complete_after(count("auto_complete_after", value)?)
}

fn item_id(name: &str, value: &Value) -> Result<u32, DomainError> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid(format!("{name} must be a positive integer")))
}

/// An RFC 3339 time such as `2026-11-22T10:42:00.000Z`, within the years 0000–9999 in UTC (so
/// that stored times sort as text).
pub fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, DomainError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .filter(|time| (0..=9999).contains(&time.year()))
        .ok_or_else(|| invalid(format!("{name} must be an ISO 8601 time such as 2026-11-22T10:42:00.000Z")))
}

fn time(name: &str, value: &Value) -> Result<DateTime<Utc>, DomainError> {
    let text = value.as_str().ok_or_else(|| invalid(format!("{name} must be a string")))?;
    parse_time(name, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value, kind: BodyKind) -> Result<Body, DomainError> {
        parse_body(value.as_object().unwrap().clone(), kind)
    }

    #[test]
    fn unknown_keys_are_extensions_and_known_ones_are_typed() {
        let body = parse(
            json!({"media_type": "voice", "est_duration": 60, "Offer": {"id": 7}, "service_type": 3}),
            BodyKind::ServiceStart,
        )
        .unwrap();
        assert_eq!(body.channel["media_type"].as_str(), "\"voice\"");
        assert_eq!(body.est_duration, Some(60));
        assert_eq!(body.item_type.as_ref().map(label_text), Some("3".to_string()));
        assert_eq!(body.extensions["Offer"].as_str(), r#"{"id":7}"#);
    }

    #[test]
    fn fields_of_another_request_and_wrong_types_are_refused() {
        assert!(parse(json!({"disposition": "ok"}), BodyKind::StateStart).is_err());
        assert!(parse(json!({"session_id": "x".repeat(33)}), BodyKind::TaskEnd).is_err());
        assert!(parse(json!({"est_duration": -1}), BodyKind::TaskStart).is_err());
        assert!(parse(json!({"est_duration": MAX_TTL_SECONDS + 1}), BodyKind::StateStart).is_err());
        assert!(parse(json!({"est_duration": MAX_TTL_SECONDS}), BodyKind::StateStart).is_ok());
        for marker in STEP_MARKERS {
            assert!(parse(json!({"state_type": marker}), BodyKind::StateStart).is_err(), "{marker}");
        }
        assert!(parse(json!({"state_type": "(start"}), BodyKind::StateStart).is_ok());
        assert!(parse(json!({"timestamp": "yesterday"}), BodyKind::ServiceEnd).is_err());
        assert!(parse(json!({"media_type": {"a": 1}}), BodyKind::ServiceEnd).is_err());
        assert!(parse(json!({"state_id": 0}), BodyKind::TaskStart).is_err());
    }
}
