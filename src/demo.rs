//! `ctxd demo`: a synthetic contact center's journeys, written through the normal write path
//! (commands to the writer, decided and projected like any client's), so that a new user sees
//! the journeys, the analytics and the dashboard with data at once.
//!
//! Voice calls enter an IVR, chats a bot; both identify the customer and queue for an agent.
//! Long waits are offered a callback. Customers hang up mostly in the queue and at the callback
//! offer, a few in the IVR; some chats switch to voice with the agent; recent ones are still open.
//! Each journey is a conversation (`session_id` for a chat, `interaction_id` for a call) whose
//! bot or IVR keeps what it learnt in the context session of that name (namespace `bot`), so
//! the abandoned list and a conversation's story show the context at the drop-off.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::domain::context::{ContextCommand, SessionRef};
use crate::domain::journeys::ServiceCommand;
use crate::domain::journeys::fields::{BodyKind, parse_body, parse_transition};
use crate::domain::{Command, ExpectedVersion};
use crate::store::{EventMeta, Store, WriteError, WriteRequest};

/// The namespace of the conversations' context.
const CONTEXT_NAMESPACE: &str = "bot";

/// A small deterministic generator: the same seed gives the same data set.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How the loaded journeys ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoReport {
    pub services: u64,
    pub completed: u64,
    pub abandoned: u64,
    pub active: u64,
    pub calls: u64,
}

/// One journey's writer: the service it drives and the time its steps are at.
struct Journey<'a> {
    store: &'a Store,
    account: &'a str,
    service_id: String,
    at: DateTime<Utc>,
    calls: u64,
}

impl Journey<'_> {
    async fn submit(&mut self, command: ServiceCommand) -> Result<Value, WriteError> {
        let command = Command::Service {
            account: self.account.to_string(),
            service_id: self.service_id.clone(),
            expected: ExpectedVersion::Any,
            command,
        };
        self.send(command).await
    }

    /// What the bot or IVR learnt, kept in the conversation's context session.
    async fn remember(&mut self, conversation: &str, properties: Value) -> Result<(), WriteError> {
        let properties = properties
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.clone(), crate::domain::events::JsonText::from_value(value)))
            .collect();
        let session = SessionRef {
            namespace: CONTEXT_NAMESPACE.into(),
            session_id: conversation.into(),
            expected: ExpectedVersion::Any,
        };
        let command = ContextCommand::PatchProperties { session, properties };
        self.send(Command::Context { account: self.account.to_string(), command }).await.map(|_| ())
    }

    async fn send(&mut self, command: Command) -> Result<Value, WriteError> {
        let meta = EventMeta {
            request_id: uuid::Uuid::new_v4().to_string(),
            actor: "demo".into(),
            ..Default::default()
        };
        let outcome = self.store.submit(WriteRequest { command, meta, idempotency: None }).await?;
        self.calls += 1;
        Ok(outcome.created.map_or(Value::Null, Value::from))
    }

    fn stamp(&self) -> String {
        self.at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn wait(&mut self, seconds: u64) {
        self.at += Duration::seconds(seconds as i64);
    }

    fn body(&self, mut fields: Value, kind: BodyKind) -> crate::domain::journeys::fields::Body {
        fields["timestamp"] = json!(self.stamp());
        parse_body(fields.as_object().cloned().unwrap_or_default(), kind)
            .expect("the demo writes valid bodies")
    }

    async fn step(
        &mut self,
        from: Option<u64>,
        state_type: &str,
        media: &str,
        est: Option<u64>,
    ) -> Result<u64, WriteError> {
        let mut fields = json!({ "media_type": media, "timestamp": self.stamp() });
        if let Some(est) = est {
            fields["est_duration"] = json!(est);
        }
        let created = match from {
            None => {
                fields["state_type"] = json!(state_type);
                self.submit(ServiceCommand::StartState { body: parse_body_of(fields, BodyKind::StateStart) })
                    .await?
            }
            Some(from) => {
                fields["from"] = json!({ "state_id": from, "disposition": "done" });
                fields["to"] = json!({ "state_type": state_type });
                let (from_state_id, end, start) =
                    parse_transition(fields.as_object().cloned().unwrap_or_default())
                        .expect("a valid transition");
                self.submit(ServiceCommand::Transition { from_state_id, end, start }).await?
            }
        };
        Ok(created.as_str().and_then(|id| id.parse().ok()).unwrap_or(0))
    }

    async fn task(&mut self, state_id: u64, task_type: &str, seconds: u64) -> Result<(), WriteError> {
        let body = self.body(json!({ "state_id": state_id, "task_type": task_type }), BodyKind::TaskStart);
        let created = self.submit(ServiceCommand::StartTask { body }).await?;
        self.wait(seconds);
        let task_id = created.as_str().and_then(|id| id.parse().ok()).unwrap_or(0);
        let body = self.body(json!({ "disposition": "done" }), BodyKind::TaskEnd);
        self.submit(ServiceCommand::EndTask { task_id, body }).await.map(|_| ())
    }

    async fn end(&mut self, disposition: &str) -> Result<(), WriteError> {
        let body = self.body(json!({ "disposition": disposition }), BodyKind::ServiceEnd);
        self.submit(ServiceCommand::End { body }).await.map(|_| ())
    }
}

fn parse_body_of(fields: Value, kind: BodyKind) -> crate::domain::journeys::fields::Body {
    parse_body(fields.as_object().cloned().unwrap_or_default(), kind).expect("the demo writes valid bodies")
}

/// What happened to one journey.
enum Ending {
    Completed,
    Abandoned,
    Active,
}

/// Drives one synthetic journey, started at `at`.
async fn journey(
    store: &Store,
    account: &str,
    rng: &mut Rng,
    at: DateTime<Utc>,
    calls: &mut u64,
) -> Result<Ending, WriteError> {
    let service_type = match rng.below(100) {
        0..45 => "billing",
        45..80 => "tech_support",
        _ => "sales",
    };
    let chat = rng.chance(30);
    let media = if chat { "chat" } else { "voice" };
    let mut j = Journey { store, account, service_id: uuid::Uuid::new_v4().to_string(), at, calls: 0 };
    let customer = format!("cust-{:05}", rng.below(20_000));
    let conversation = format!("conv-{}", &j.service_id[..8]);
    let channel = if chat { "session_id" } else { "interaction_id" };
    let start = j.body(
        json!({ "customer_id": customer, "service_type": service_type, "media_type": media,
                channel: conversation, "Reason": { "text": format!("{service_type} enquiry") } }),
        BodyKind::ServiceStart,
    );
    j.submit(ServiceCommand::Start { body: start }).await?;
    let language = if rng.chance(20) { "es" } else { "en" };
    j.remember(&conversation, json!({ "intent": service_type, "language": language })).await?;
    let ending = drive(&mut j, rng, chat, media, &conversation).await?;
    *calls += j.calls;
    Ok(ending)
}

async fn drive(
    j: &mut Journey<'_>,
    rng: &mut Rng,
    chat: bool,
    media: &str,
    conversation: &str,
) -> Result<Ending, WriteError> {
    let recent = Utc::now() - j.at < Duration::hours(1);
    let first = j.step(None, if chat { "bot" } else { "ivr" }, media, Some(30)).await?;
    j.wait(10 + rng.below(60));
    if rng.chance(5) {
        j.end("customer_hangup").await?;
        return Ok(Ending::Abandoned);
    }
    let identification = j.step(Some(first), "identification", media, Some(45)).await?;
    j.task(identification, "verify_identity", 5 + rng.below(40)).await?;
    let verified = !rng.chance(10);
    j.remember(conversation, json!({ "verified": verified })).await?;
    if rng.chance(3) {
        j.end("timeout").await?;
        return Ok(Ending::Abandoned);
    }
    let mut state = j.step(Some(identification), "queue", media, Some(120)).await?;
    let waited = 20 + rng.below(900);
    j.wait(waited);
    if recent && rng.chance(50) {
        return Ok(Ending::Active);
    }
    if waited > 300 && rng.chance(60) {
        state = j.step(Some(state), "offering_callback", media, Some(20)).await?;
        j.wait(5 + rng.below(40));
        if rng.chance(40) {
            j.end("customer_hangup").await?;
            return Ok(Ending::Abandoned);
        }
        state = j.step(Some(state), "callback_pending", "voice", Some(600)).await?;
        j.wait(60 + rng.below(1200));
        if rng.chance(10) {
            j.end("abandoned").await?;
            return Ok(Ending::Abandoned);
        }
    } else if rng.chance(if waited > 300 { 35 } else { 8 }) {
        j.end("customer_hangup").await?;
        return Ok(Ending::Abandoned);
    }
    // Some chats move to a call with the agent.
    let agent_media = if chat && rng.chance(15) { "voice" } else { media };
    let agent = j.step(Some(state), "agent", agent_media, Some(300)).await?;
    j.task(agent, "resolve", 60 + rng.below(900)).await?;
    j.wait(5 + rng.below(60));
    let wrapup = j.step(Some(agent), "wrapup", agent_media, Some(60)).await?;
    j.wait(10 + rng.below(120));
    let _ = wrapup;
    j.end(if rng.chance(90) { "resolved" } else { "escalated" }).await?;
    Ok(Ending::Completed)
}

/// Loads `services` journeys into `account`, started over the last seven days, with `workers`
/// journeys in flight at a time so that the writer commits them in groups.
pub async fn load(
    store: &Store,
    account: &str,
    services: u64,
    workers: u64,
) -> Result<DemoReport, WriteError> {
    let store = Arc::new(store.clone());
    let account: Arc<str> = account.into();
    let now = Utc::now();
    let namespace = ContextCommand::CreateNamespace {
        namespace: CONTEXT_NAMESPACE.into(),
        ttl_second: None,
        expected: ExpectedVersion::Any,
    };
    let meta = EventMeta {
        request_id: uuid::Uuid::new_v4().to_string(),
        actor: "demo".into(),
        ..Default::default()
    };
    let command = Command::Context { account: account.to_string(), command: namespace };
    store.submit(WriteRequest { command, meta, idempotency: None }).await?;
    let mut tasks = Vec::new();
    for worker in 0..workers.max(1) {
        let (store, account) = (store.clone(), account.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (worker + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut report = DemoReport::default();
            for _ in (worker..services).step_by(workers.max(1) as usize) {
                // One in twenty started within the last hour: some of those are still going on.
                let span = if rng.chance(5) { 3600 } else { 7 * 24 * 3600 };
                let at = now - Duration::seconds(rng.below(span) as i64);
                match journey(&store, &account, &mut rng, at, &mut report.calls).await? {
                    Ending::Completed => report.completed += 1,
                    Ending::Abandoned => report.abandoned += 1,
                    Ending::Active => report.active += 1,
                }
                report.services += 1;
            }
            Ok::<DemoReport, WriteError>(report)
        }));
    }
    let mut total = DemoReport::default();
    for task in tasks {
        let report = task.await.map_err(|_| WriteError::Unavailable)??;
        total.services += report.services;
        total.completed += report.completed;
        total.abandoned += report.abandoned;
        total.active += report.active;
        total.calls += report.calls;
    }
    Ok(total)
}
