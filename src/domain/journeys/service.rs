//! A service as its events leave it: the state its commands are decided against, the document
//! the `services` projection stores, and what the API renders. `ServiceDoc::apply` is the one
//! fold of service events, used live, in rebuild and (later) for as-of reads.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::events::{ClosedBy, Closing, Expiry, Item, Opening};
use super::fields::Touch;
use crate::domain::Event;
use crate::domain::events::{JsonText, Properties};

/// Start, end and extensions of a service, state or task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub est_duration: Option<u64>,
    pub started: Touch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Touch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub extensions: Properties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<ClosedBy>,
}

impl Lifecycle {
    fn open(opening: &Opening) -> Lifecycle {
        Lifecycle {
            est_duration: opening.est_duration,
            started: opening.started.clone(),
            completed: None,
            disposition: None,
            disposition_desc: None,
            extensions: opening.extensions.clone(),
            closed_by: None,
        }
    }

    fn close(&mut self, closing: &Closing) {
        self.completed = Some(closing.completed.clone());
        self.disposition = closing.disposition.clone();
        self.disposition_desc = closing.disposition_desc.clone();
        self.closed_by = closing.closed_by;
        merge(&mut self.extensions, &closing.extensions);
    }

    pub fn is_active(&self) -> bool {
        self.completed.is_none()
    }

    /// Milliseconds from start to end, by the events' own timestamps; none while active.
    pub fn duration_ms(&self) -> Option<i64> {
        self.completed.as_ref().map(|end| (end.timestamp - self.started.timestamp).num_milliseconds())
    }
}

fn merge(into: &mut Properties, from: &Properties) {
    into.extend(from.iter().map(|(name, value)| (name.clone(), value.clone())));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    pub state_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_type: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state_id: Option<u32>,
    pub life: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDoc {
    pub task_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<JsonText>,
    pub life: Lifecycle,
}

/// What analytics count a service under, fixed when it starts (docs/ANALYTICS.md): its service
/// type, the hour it started (client time, `YYYY-MM-DDTHH`) and the media type it started on;
/// `""` for a type or media type not given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cohort {
    pub service_type: String,
    pub hour: String,
    pub media_type: String,
}

/// A label as analytics key it: its text, or `""` when absent.
pub fn label_key(label: Option<&JsonText>) -> String {
    label.map(super::fields::label_text).unwrap_or_default()
}

/// The media type a touch carried, as analytics key it.
pub fn media_key(touch: &Touch) -> String {
    label_key(touch.channel.get("media_type"))
}

/// A service with its states and tasks, in id order (ids are 1, 2, 3 … within the service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDoc {
    pub service_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_key: Option<String>,
    pub life: Lifecycle,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_complete_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Expiry::is_unset")]
    pub expiry: Expiry,
    /// Server time of the last event: inactivity and sliding TTL count from here.
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub cohort: Cohort,
}

impl ServiceDoc {
    /// The service a `ServiceStarted` creates.
    pub fn start(event: &super::events::ServiceStarted, at: DateTime<Utc>) -> ServiceDoc {
        ServiceDoc {
            service_id: event.service_id.clone(),
            service_type: event.service_type.clone(),
            customer_id: event.customer_id.clone(),
            contact_key: event.contact_key.clone(),
            life: Lifecycle::open(&event.opening),
            states: Vec::new(),
            tasks: Vec::new(),
            auto_complete_after: event.auto_complete_after,
            expiry: event.expiry.clone(),
            updated_at: at,
            cohort: Cohort {
                service_type: label_key(event.service_type.as_ref()),
                hour: event.opening.started.timestamp.format("%Y-%m-%dT%H").to_string(),
                media_type: media_key(&event.opening.started),
            },
        }
    }

    /// Folds one later event of this service's stream into it; `at` is the event's server time.
    /// Events of other streams, the start and the removals are left to the caller.
    pub fn apply(&mut self, event: &Event, at: DateTime<Utc>) {
        self.updated_at = at;
        match event {
            Event::ServiceEnded(e) => {
                self.life.close(&e.closing);
                if let Some(expiry) = &e.expiry {
                    self.expiry = expiry.clone();
                }
            }
            Event::ServiceAutoCompleted(e) => {
                let completed = Touch { timestamp: e.completed_at, channel: Properties::new() };
                self.life.completed = Some(completed);
                self.life.closed_by = Some(ClosedBy::ServiceAutoCompleted);
            }
            Event::ServiceAssociated(e) => {
                self.customer_id = Some(e.customer_id.clone());
                if e.service_type.is_some() {
                    self.service_type = e.service_type.clone();
                }
                merge(&mut self.life.started.channel, &e.channel);
                merge(&mut self.life.extensions, &e.extensions);
            }
            Event::ServiceExpirySet(e) => self.expiry = e.expiry.clone(),
            Event::StateStarted(e) => self.states.push(StateDoc {
                state_id: e.state_id,
                state_type: e.state_type.clone(),
                previous_state_id: e.previous_state_id,
                life: Lifecycle::open(&e.opening),
            }),
            Event::StateEnded(e) => {
                if let Some(state) = self.state_mut(e.state_id) {
                    state.life.close(&e.closing);
                }
            }
            Event::TaskStarted(e) => self.tasks.push(TaskDoc {
                task_id: e.task_id,
                state_id: e.state_id,
                task_type: e.task_type.clone(),
                life: Lifecycle::open(&e.opening),
            }),
            Event::TaskEnded(e) => {
                if let Some(task) = self.task_mut(e.task_id) {
                    task.life.close(&e.closing);
                }
            }
            Event::ExtensionReplaced(e) => {
                let extensions = match e.item {
                    Item::Service => Some(&mut self.life.extensions),
                    Item::State(id) => self.state_mut(id).map(|state| &mut state.life.extensions),
                    Item::Task(id) => self.task_mut(id).map(|task| &mut task.life.extensions),
                };
                if let Some(extensions) = extensions {
                    extensions.insert(e.name.clone(), e.value.clone());
                }
            }
            _ => {}
        }
    }

    pub fn state(&self, state_id: u32) -> Option<&StateDoc> {
        self.states.iter().find(|state| state.state_id == state_id)
    }

    pub fn task(&self, task_id: u32) -> Option<&TaskDoc> {
        self.tasks.iter().find(|task| task.task_id == task_id)
    }

    fn state_mut(&mut self, state_id: u32) -> Option<&mut StateDoc> {
        self.states.iter_mut().find(|state| state.state_id == state_id)
    }

    fn task_mut(&mut self, task_id: u32) -> Option<&mut TaskDoc> {
        self.tasks.iter_mut().find(|task| task.task_id == task_id)
    }

    pub fn is_active(&self) -> bool {
        self.life.is_active()
    }

    /// When the sweeper completes this service for inactivity; none once it ended.
    pub fn auto_complete_at(&self) -> Option<DateTime<Utc>> {
        let after = self.auto_complete_after.filter(|_| self.is_active())?;
        self.updated_at.checked_add_signed(Duration::try_seconds(i64::try_from(after).ok()?)?)
    }

    /// When the sweeper removes this service: `ttl` after its last update, else its
    /// `expiration_time`; `ttl` wins when both are set.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self.expiry.ttl {
            Some(ttl) => self.updated_at.checked_add_signed(Duration::try_seconds(i64::try_from(ttl).ok()?)?),
            None => self.expiry.expiration_time,
        }
    }

    /// The open state a customer is in: the most recently started active state.
    pub fn current_state(&self) -> Option<&StateDoc> {
        self.states
            .iter()
            .filter(|state| state.life.is_active())
            .max_by_key(|state| (state.life.started.timestamp, state.state_id))
    }
}
