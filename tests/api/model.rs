//! A randomized test: thousands of context operations against the server and against a naive
//! in-test model of the LivePerson semantics, compared after every step; `verify` at the end.

use std::collections::BTreeMap;

use chrono::Duration;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// A session's properties: name → (value, expiry in seconds on the test clock).
type Properties = BTreeMap<String, (Value, Option<i64>)>;

/// The model: per (namespace, session), properties with their expiry.
#[derive(Default)]
struct Model {
    now: i64,
    namespace_ttl: BTreeMap<String, u64>,
    session_ttl: BTreeMap<(String, String), u64>,
    properties: BTreeMap<(String, String), Properties>,
}

impl Model {
    fn live(&self, namespace: &str, session: &str) -> BTreeMap<String, Value> {
        let key = (namespace.to_string(), session.to_string());
        self.properties
            .get(&key)
            .map(|properties| {
                properties
                    .iter()
                    .filter(|(_, (_, expiry))| expiry.is_none_or(|at| at > self.now))
                    .map(|(name, (value, _))| (name.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn patch(&mut self, namespace: &str, session: &str, values: &BTreeMap<String, Value>) {
        let key = (namespace.to_string(), session.to_string());
        let ttl = self.session_ttl.get(&key).or(self.namespace_ttl.get(namespace)).copied().unwrap_or(0);
        let expiry = (ttl > 0).then(|| self.now + ttl as i64);
        let properties = self.properties.entry(key).or_default();
        for (name, value) in values {
            properties.insert(name.clone(), (value.clone(), expiry));
        }
    }
}

/// A small deterministic generator, so a failure replays the same way.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

const NAMESPACES: [&str; 2] = ["bots", "agents"];
const SESSIONS: [&str; 3] = ["__default__", "s1", "s2"];
const KEYS: [&str; 4] = ["intent", "step", "agent", "notes"];

#[tokio::test]
async fn random_operations_match_a_naive_model_and_verify_passes() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let mut model = Model::default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for step in 0..1500 {
        let namespace = NAMESPACES[rng.below(2) as usize];
        let session = SESSIONS[rng.below(3) as usize];
        let base = format!("/v1/account/acme/{namespace}/{session}/properties");
        let property = KEYS[rng.below(4) as usize];
        match rng.below(100) {
            0..40 => {
                let values: BTreeMap<String, Value> = (0..1 + rng.below(3))
                    .map(|_| {
                        (KEYS[rng.below(4) as usize].to_string(), json!({"step": step, "n": rng.below(10)}))
                    })
                    .collect();
                let reply = app.call(&key, "PATCH", &base, &serde_json::to_string(&values).unwrap()).await;
                assert_eq!(reply.status, 204, "{}", reply.body);
                model.patch(namespace, session, &values);
            }
            40..50 => {
                let value = json!([step, "put"]);
                assert_eq!(
                    app.call(&key, "PUT", &format!("{base}/{property}"), &value.to_string()).await.status,
                    204
                );
                model.patch(namespace, session, &BTreeMap::from([(property.to_string(), value)]));
            }
            50..60 => {
                assert_eq!(app.call(&key, "DELETE", &format!("{base}/{property}"), "").await.status, 204);
                if let Some(properties) = model.properties.get_mut(&(namespace.into(), session.into())) {
                    properties.remove(property);
                }
            }
            60..64 => {
                assert_eq!(app.call(&key, "DELETE", &base, "").await.status, 204);
                model.properties.remove(&(namespace.into(), session.into()));
            }
            64..67 => {
                let path = format!("/v1/account/acme/namespace/{namespace}/session/{session}");
                assert_eq!(app.call(&key, "DELETE", &path, "").await.status, 204);
                model.properties.remove(&(namespace.into(), session.into()));
                model.session_ttl.remove(&(namespace.into(), session.into()));
            }
            67..72 => {
                let ttl = rng.below(4) * 30;
                let path = format!("/v1/account/acme/namespace/{namespace}/session?ttlSecond={ttl}");
                let reply = app.call(&key, "POST", &path, &json!({"sessionId": session}).to_string()).await;
                assert_eq!(reply.status, 204, "{}", reply.body);
                model.session_ttl.insert((namespace.into(), session.into()), ttl);
            }
            72..76 => {
                let ttl = rng.below(3) * 45;
                let path = format!("/v1/account/acme?ttlSecond={ttl}");
                assert_eq!(
                    app.call(&key, "POST", &path, &json!({"name": namespace}).to_string()).await.status,
                    204
                );
                model.namespace_ttl.insert(namespace.into(), ttl);
            }
            76..78 => {
                assert_eq!(
                    app.call(&key, "DELETE", &format!("/v1/account/acme/{namespace}"), "").await.status,
                    204
                );
                model.namespace_ttl.remove(namespace);
                model.session_ttl.retain(|(ns, _), _| ns != namespace);
                model.properties.retain(|(ns, _), _| ns != namespace);
            }
            78..88 => {
                let seconds = rng.below(40) as i64;
                app.clock.advance(Duration::seconds(seconds));
                model.now += seconds;
            }
            88..92 => {
                ctxd::sweeper::sweep_once(&app.store).await.unwrap();
            }
            _ => {
                let reply = app.call(&key, "GET", &format!("{base}/{property}"), "").await;
                match model.live(namespace, session).get(property) {
                    Some(value) => assert_eq!(reply.json(), *value, "step {step}: GET one"),
                    None => assert_eq!(reply.status, 404, "step {step}: GET one of an absent property"),
                }
            }
        }
        let document = app.call(&key, "GET", &base, "").await.json();
        let expected: serde_json::Map<String, Value> = model.live(namespace, session).into_iter().collect();
        assert_eq!(document, Value::Object(expected), "step {step}: {namespace}/{session}");
    }
    for namespace in NAMESPACES {
        let ids =
            app.call(&key, "GET", &format!("/v1/account/acme/{namespace}/session-ids"), "").await.json();
        let expected: Vec<&str> =
            SESSIONS.iter().copied().filter(|session| !model.live(namespace, session).is_empty()).collect();
        assert_eq!(ids, json!(expected), "session-ids of {namespace}");
    }
    ctxd::sweeper::sweep_once(&app.store).await.unwrap();
    let report = app.verify();
    assert!(report.mismatch.is_none(), "{:?}", report.mismatch);
    assert!(report.events > 500, "the run wrote a real history: {} events", report.events);
}
