//! What the context workload writes, in one place, so that the HTTP clients and the raw
//! SQLite baseline write the same sessions, the same properties and rows of the same size.

use ctxd::domain::Event;
use ctxd::domain::events::{JsonText, PropertiesPatched};
use ctxd::store::EventMeta;
use serde_json::{Map, Value, json};

/// The account every write goes to.
pub const ACCOUNT: &str = "bench";
/// The namespace of the HTTP workload's sessions.
pub const NAMESPACE: &str = "ns";
/// Each client cycles over this many sessions of its own.
const SESSIONS_PER_CLIENT: u64 = 200;

/// The session of `client`'s `request`-th write.
pub fn session_id(client: u32, request: u64) -> String {
    format!("s{client}_{}", request % SESSIONS_PER_CLIENT)
}

/// The properties one PATCH writes: a small document, as a contact-centre bot would keep.
pub fn properties(step: u64) -> Map<String, Value> {
    let document = json!({
        "intent": "billing_dispute",
        "step": step,
        "agent": "a17",
        "channel": "voice",
    });
    match document {
        Value::Object(properties) => properties,
        _ => unreachable!("a JSON object literal is an object"),
    }
}

/// The event the server records for `client`'s `request`-th PATCH (in a namespace without TTL).
pub fn patched(client: u32, request: u64) -> Event {
    Event::PropertiesPatched(PropertiesPatched {
        namespace: NAMESPACE.to_string(),
        session_id: session_id(client, request),
        properties: properties(request)
            .iter()
            .map(|(key, value)| (key.clone(), JsonText::from_value(value)))
            .collect(),
        expires_at: None,
    })
}

/// A meta the size of the server's for a PATCH by an API key from a local client.
pub fn meta() -> String {
    let meta = EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        idempotency_key: None,
        actor: "key:default".to_string(),
        on_behalf_of: None,
        client_addr: Some("127.0.0.1:50000".to_string()),
    };
    serde_json::to_string(&meta).expect("meta serializes")
}
