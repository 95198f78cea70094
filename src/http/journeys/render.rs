//! How services, states and tasks look in responses: start and end events nested as `started`
//! and `completed`, `est_duration` and `disposition` hoisted to the item, `duration` in ms,
//! extensions at the item's top level, chosen with the `extensions` selector.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::events::{JsonText, Properties};
use crate::domain::journeys::fields::Touch;
use crate::domain::journeys::service::{Lifecycle, ServiceDoc, StateDoc, TaskDoc};

/// Time as the reference writes it: `2026-11-22T10:42:00.000Z`.
pub fn time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn json(text: &JsonText) -> Value {
    serde_json::from_str(text.as_str()).expect("stored JSON parses")
}

/// Which extensions of one kind of item to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Pick {
    #[default]
    None,
    All,
    Named(Vec<String>),
}

impl Pick {
    fn add(&mut self, name: &str) {
        if name == "*" {
            *self = Pick::All;
        } else if let Pick::None = self {
            *self = Pick::Named(vec![name.to_string()]);
        } else if let Pick::Named(names) = self {
            names.push(name.to_string());
        }
    }

    fn wants(&self, name: &str) -> bool {
        match self {
            Pick::None => false,
            Pick::All => true,
            Pick::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The `extensions` parameter: `a,b` for the addressed items, `State.a` / `Task.*` for the
/// states or tasks inside them, `*` for all of the addressed items' extensions.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    pub own: Pick,
    pub states: Pick,
    pub tasks: Pick,
}

impl Extensions {
    pub fn parse(param: Option<&str>) -> Extensions {
        let mut picked = Extensions::default();
        for name in param.unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.split_once('.') {
                Some(("State", rest)) => picked.states.add(rest),
                Some(("Task", rest)) => picked.tasks.add(rest),
                _ => picked.own.add(name),
            }
        }
        picked
    }

    /// The selection for items listed directly (states or tasks endpoints): their own picks
    /// also apply through the `State.` / `Task.` forms.
    pub fn for_listed_states(mut self) -> Extensions {
        if self.own == Pick::None {
            self.own = std::mem::take(&mut self.states);
        }
        self
    }

    pub fn for_listed_tasks(mut self) -> Extensions {
        if self.own == Pick::None {
            self.own = std::mem::take(&mut self.tasks);
        }
        self
    }
}

/// Which children to embed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Embed {
    pub active_states: bool,
    pub completed_states: bool,
    pub active_tasks: bool,
    pub completed_tasks: bool,
}

fn touch(touch: &Touch) -> Value {
    let mut object = Map::new();
    object.insert("timestamp".into(), time(touch.timestamp).into());
    for (name, value) in &touch.channel {
        object.insert(name.clone(), json(value));
    }
    Value::Object(object)
}

fn put_label(object: &mut Map<String, Value>, name: &str, value: &Option<JsonText>) {
    if let Some(value) = value {
        object.insert(name.into(), json(value));
    }
}

/// The fields every item has: started, completed, est_duration, disposition, duration, extensions.
fn lifecycle(object: &mut Map<String, Value>, life: &Lifecycle, pick: &Pick) {
    if let Some(est) = life.est_duration {
        object.insert("est_duration".into(), est.into());
    }
    object.insert("started".into(), touch(&life.started));
    if let Some(completed) = &life.completed {
        object.insert("completed".into(), touch(completed));
        put_label(object, "disposition", &life.disposition);
        if let Some(desc) = &life.disposition_desc {
            object.insert("disposition_desc".into(), desc.clone().into());
        }
        if let Some(ms) = life.duration_ms() {
            object.insert("duration".into(), ms.into());
        }
        if let Some(by) = life.closed_by {
            object.insert("closed_by".into(), serde_json::to_value(by).expect("an enum serializes"));
        }
    }
    extensions(object, &life.extensions, pick);
}

fn extensions(object: &mut Map<String, Value>, extensions: &Properties, pick: &Pick) {
    for (name, value) in extensions.iter().filter(|(name, _)| pick.wants(name)) {
        object.insert(name.clone(), json(value));
    }
}

/// A service, with the children `embed` asks for.
pub fn service(doc: &ServiceDoc, embed: Embed, picked: &Extensions) -> Value {
    let mut object = Map::new();
    object.insert("service_id".into(), doc.service_id.clone().into());
    put_label(&mut object, "service_type", &doc.service_type);
    if let Some(customer_id) = &doc.customer_id {
        object.insert("customer_id".into(), customer_id.clone().into());
    }
    if let Some(contact_key) = &doc.contact_key {
        object.insert("contact_key".into(), contact_key.clone().into());
    }
    lifecycle(&mut object, &doc.life, &picked.own);
    let nested = Extensions { own: picked.states.clone(), states: Pick::None, tasks: picked.tasks.clone() };
    let state_list = |active: bool| -> Value {
        let states = doc.states.iter().filter(|s| s.life.is_active() == active);
        states.map(|s| state(doc, s, Embed::default(), &nested, false)).collect()
    };
    if embed.active_states {
        object.insert("active_states".into(), state_list(true));
    }
    if embed.completed_states {
        object.insert("completed_states".into(), state_list(false));
    }
    embed_tasks(&mut object, doc, None, embed, &picked.tasks);
    Value::Object(object)
}

/// Adds `active_tasks` / `completed_tasks` as `embed` asks: the service's tasks, or those of `state`.
fn embed_tasks(
    object: &mut Map<String, Value>,
    doc: &ServiceDoc,
    state: Option<u32>,
    embed: Embed,
    pick: &Pick,
) {
    let picked = Extensions { own: pick.clone(), ..Extensions::default() };
    let list = |active: bool| -> Value {
        let tasks = doc.tasks.iter().filter(|t| state.is_none_or(|id| t.state_id == Some(id)));
        tasks.filter(|t| t.life.is_active() == active).map(|t| task(doc, t, &picked, false)).collect()
    };
    if embed.active_tasks {
        object.insert("active_tasks".into(), list(true));
    }
    if embed.completed_tasks {
        object.insert("completed_tasks".into(), list(false));
    }
}

/// A state; `top_level` adds `service_id`; `embed` may add its tasks.
pub fn state(
    doc: &ServiceDoc,
    state: &StateDoc,
    embed: Embed,
    picked: &Extensions,
    top_level: bool,
) -> Value {
    let mut object = Map::new();
    if top_level {
        object.insert("service_id".into(), doc.service_id.clone().into());
    }
    object.insert("state_id".into(), state.state_id.into());
    put_label(&mut object, "state_type", &state.state_type);
    if let Some(previous) = state.previous_state_id {
        object.insert("previous_state_id".into(), previous.into());
    }
    lifecycle(&mut object, &state.life, &picked.own);
    embed_tasks(&mut object, doc, Some(state.state_id), embed, &picked.tasks);
    Value::Object(object)
}

/// A task; `top_level` adds `service_id` and `customer_id`.
pub fn task(doc: &ServiceDoc, task: &TaskDoc, picked: &Extensions, top_level: bool) -> Value {
    let mut object = Map::new();
    if top_level {
        object.insert("service_id".into(), doc.service_id.clone().into());
        if let Some(customer_id) = &doc.customer_id {
            object.insert("customer_id".into(), customer_id.clone().into());
        }
    }
    object.insert("task_id".into(), task.task_id.into());
    if let Some(state_id) = task.state_id {
        object.insert("state_id".into(), state_id.into());
    }
    put_label(&mut object, "task_type", &task.task_type);
    lifecycle(&mut object, &task.life, &picked.own);
    Value::Object(object)
}
