//! The context store's commands and their decisions (LivePerson v1 semantics).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::events::*;
use super::names::{check_name, check_namespace};
use super::ttl::expires_at;
use super::{DomainError, ExpectedVersion, StreamVersion};

/// Largest session document, in characters of its compact JSON form.
pub const MAX_DOCUMENT_CHARS: usize = 800_000;

/// A change to the context store, decided by the writer against `SessionState`.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextCommand {
    /// Register a namespace (idempotent); a TTL given replaces the namespace TTL.
    CreateNamespace { namespace: String, ttl_second: Option<u64>, expected: ExpectedVersion },
    /// Remove a namespace with every session and property in it: at once when it fits in one
    /// step, else it reads as deleted at once and its sessions go in steps.
    DeleteNamespace { namespace: String, expected: ExpectedVersion },
    /// The next step of a namespace delete that was started (sent by ctxd itself).
    DeleteNamespaceStep { namespace: String },
    /// Merge properties into a session (PATCH, and PUT of one property).
    PatchProperties { session: SessionRef, properties: Properties },
    /// Remove one property (idempotent).
    DeleteProperty { session: SessionRef, property: String },
    /// Remove every property of a session, keeping its TTL setting.
    ClearSession { session: SessionRef },
    /// Remove every property of a session and its TTL setting.
    DeleteSession { session: SessionRef },
    /// Set the TTL stamped on the session's properties written from now on.
    SetSessionTtl { session: SessionRef, ttl_second: u64 },
}

/// A session addressed by a write, with the `If-Match` precondition on its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRef {
    pub namespace: String,
    pub session_id: String,
    pub expected: ExpectedVersion,
}

/// What a session command is decided against, loaded by the writer from the projections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    pub version: StreamVersion,
    pub namespace_registered: bool,
    pub namespace_ttl: Option<u64>,
    /// The namespace is being deleted in steps: nothing may be written to it until it is gone.
    pub namespace_deleting: bool,
    /// `None`: the session has no TTL setting (it may still hold properties).
    pub session_ttl: Option<u64>,
    /// True when the session holds any properties (even expired, not yet swept) or a TTL setting.
    pub session_known: bool,
    /// Characters the stored properties add to the session document (`property_chars` summed),
    /// expired ones included until the sweeper removes them.
    pub stored_chars: usize,
    /// The stored properties the command names (and only those: a write never reads the whole
    /// session).
    pub named: BTreeMap<String, StoredProperty>,
    /// True when the session holds an unexpired property (loaded for commands that name no
    /// property; a patch or a property delete does not need it).
    pub any_live: bool,
}

/// A stored property a command names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredProperty {
    /// Length in characters of its JSON value.
    pub value_chars: usize,
    /// False once its expiry time has passed (the sweeper has not removed it yet).
    pub live: bool,
}

/// What a namespace command is decided against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceState {
    /// Version of the namespace's own stream (registration and TTL), its `ETag`.
    pub version: StreamVersion,
    pub registered: bool,
    pub ttl_second: Option<u64>,
    /// A delete of the namespace is proceeding in steps.
    pub deleting: bool,
    /// For deletes: the sessions (with properties or a TTL setting) the next step deletes, as
    /// many as a `StepBound` allows, in id order.
    pub sessions: Vec<String>,
    /// For deletes: sessions remain beyond `sessions`.
    pub more_sessions: bool,
}

/// The most one step of a long command takes: items (a namespace's sessions, a customer's
/// services) and the rows in them (their properties, their events). A step takes at least one
/// item, whatever it holds. About a few milliseconds of the writer.
#[derive(Debug, Clone, Copy)]
pub struct StepBound {
    pub items: usize,
    pub rows: u64,
}

pub const STEP: StepBound = StepBound { items: 200, rows: 2000 };

impl StepBound {
    /// The items one step takes from `candidates` (each with the rows it holds, in order), and
    /// whether any is left: as many as the bound allows, and at least one.
    pub fn take<T, E>(
        self,
        candidates: impl IntoIterator<Item = Result<(T, u64), E>>,
    ) -> Result<(Vec<T>, bool), E> {
        let (mut taken, mut rows) = (Vec::new(), 0);
        for candidate in candidates {
            let (item, held) = candidate?;
            if !taken.is_empty() && (taken.len() == self.items || rows + held > self.rows) {
                return Ok((taken, true));
            }
            rows += held;
            taken.push(item);
        }
        Ok((taken, false))
    }
}

impl ContextCommand {
    /// The session this command writes to, if it is a session command.
    pub fn session(&self) -> Option<&SessionRef> {
        match self {
            ContextCommand::PatchProperties { session, .. }
            | ContextCommand::DeleteProperty { session, .. }
            | ContextCommand::ClearSession { session }
            | ContextCommand::DeleteSession { session }
            | ContextCommand::SetSessionTtl { session, .. } => Some(session),
            ContextCommand::CreateNamespace { .. }
            | ContextCommand::DeleteNamespace { .. }
            | ContextCommand::DeleteNamespaceStep { .. } => None,
        }
    }

    /// The property keys a session command names.
    pub fn property_keys(&self) -> Vec<&str> {
        match self {
            ContextCommand::PatchProperties { properties, .. } => {
                properties.keys().map(String::as_str).collect()
            }
            ContextCommand::DeleteProperty { property, .. } => vec![property.as_str()],
            _ => Vec::new(),
        }
    }

    /// The namespace this command addresses.
    pub fn namespace(&self) -> &str {
        match self {
            ContextCommand::CreateNamespace { namespace, .. }
            | ContextCommand::DeleteNamespace { namespace, .. }
            | ContextCommand::DeleteNamespaceStep { namespace } => namespace,
            other => &other.session().expect("session command").namespace,
        }
    }
}

/// Decides a namespace command: which events, if any, it appends.
pub fn decide_namespace(state: &NamespaceState, command: &ContextCommand) -> Result<Vec<Event>, DomainError> {
    check_namespace(command.namespace())?;
    match command {
        ContextCommand::CreateNamespace { expected, .. }
        | ContextCommand::DeleteNamespace { expected, .. } => expected.check(state.version)?,
        ContextCommand::DeleteNamespaceStep { .. } => {}
        _ => unreachable!("session commands are decided by decide_session"),
    }
    match command {
        ContextCommand::CreateNamespace { namespace, ttl_second, .. } => {
            if let Some(ttl) = ttl_second {
                check_ttl(*ttl)?;
            }
            if state.deleting {
                return Err(being_deleted(namespace));
            }
            if !state.registered {
                return Ok(vec![Event::NamespaceCreated(NamespaceCreated {
                    namespace: namespace.clone(),
                    ttl_second: *ttl_second,
                    implicit: false,
                })]);
            }
            Ok(match ttl_second {
                Some(ttl) if state.ttl_second != Some(*ttl) => {
                    vec![Event::NamespaceTtlSet(NamespaceTtlSet {
                        namespace: namespace.clone(),
                        ttl_second: *ttl,
                    })]
                }
                _ => vec![],
            })
        }
        // Asked again while it proceeds: nothing more to start.
        ContextCommand::DeleteNamespace { .. } if state.deleting => Ok(vec![]),
        ContextCommand::DeleteNamespace { namespace, .. } if state.more_sessions => {
            Ok(vec![Event::NamespaceDeletionStarted(NamespaceDeletionStarted {
                namespace: namespace.clone(),
            })])
        }
        ContextCommand::DeleteNamespace { namespace, .. } => {
            let mut events = delete_sessions(namespace, &state.sessions);
            if state.registered || !events.is_empty() {
                events.push(Event::NamespaceDeleted(NamespaceDeleted { namespace: namespace.clone() }));
            }
            Ok(events)
        }
        ContextCommand::DeleteNamespaceStep { .. } if !state.deleting => Ok(vec![]),
        ContextCommand::DeleteNamespaceStep { namespace } => {
            let mut events = delete_sessions(namespace, &state.sessions);
            if !state.more_sessions {
                events.push(Event::NamespaceDeleted(NamespaceDeleted { namespace: namespace.clone() }));
            }
            Ok(events)
        }
        _ => unreachable!("session commands are decided by decide_session"),
    }
}

fn delete_sessions(namespace: &str, sessions: &[String]) -> Vec<Event> {
    sessions
        .iter()
        .map(|session_id| {
            Event::SessionDeleted(SessionDeleted {
                namespace: namespace.to_string(),
                session_id: session_id.clone(),
                cause: Some("namespace_deleted".into()),
            })
        })
        .collect()
}

fn being_deleted(namespace: &str) -> DomainError {
    DomainError::Conflict(format!(
        "namespace '{namespace}' is being deleted; write to it again once the delete is done"
    ))
}

/// Decides a session command at time `now`: which events, if any, it appends.
pub fn decide_session(
    state: &SessionState,
    command: &ContextCommand,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, DomainError> {
    let session = command.session().expect("decide_session takes session commands");
    check_namespace(&session.namespace)?;
    check_name("session id", &session.session_id)?;
    session.expected.check(state.version)?;
    if state.namespace_deleting {
        return Err(being_deleted(&session.namespace));
    }
    let namespace = session.namespace.clone();
    let session_id = session.session_id.clone();
    let events = match command {
        ContextCommand::PatchProperties { properties, .. } => {
            if properties.is_empty() {
                return Ok(vec![]);
            }
            for key in properties.keys() {
                check_name("property name", key)?;
            }
            check_document_size(state, properties)?;
            let mut events = registration(state, &namespace);
            events.push(Event::PropertiesPatched(PropertiesPatched {
                namespace,
                session_id,
                properties: properties.clone(),
                expires_at: expires_at(now, state.session_ttl, state.namespace_ttl),
            }));
            events
        }
        ContextCommand::DeleteProperty { property, .. } => {
            check_name("property name", property)?;
            if !state.named.get(property).is_some_and(|stored| stored.live) {
                return Ok(vec![]);
            }
            vec![Event::PropertyDeleted(PropertyDeleted {
                namespace,
                session_id,
                property: property.clone(),
            })]
        }
        ContextCommand::ClearSession { .. } => {
            if !state.any_live {
                return Ok(vec![]);
            }
            vec![Event::SessionPropertiesCleared(SessionPropertiesCleared { namespace, session_id })]
        }
        ContextCommand::DeleteSession { .. } => {
            if !state.session_known {
                return Ok(vec![]);
            }
            vec![Event::SessionDeleted(SessionDeleted { namespace, session_id, cause: None })]
        }
        ContextCommand::SetSessionTtl { ttl_second, .. } => {
            check_ttl(*ttl_second)?;
            if state.session_ttl == Some(*ttl_second) {
                return Ok(vec![]);
            }
            let mut events = registration(state, &namespace);
            events.push(Event::SessionTtlSet(SessionTtlSet {
                namespace,
                session_id,
                ttl_second: *ttl_second,
            }));
            events
        }
        ContextCommand::CreateNamespace { .. }
        | ContextCommand::DeleteNamespace { .. }
        | ContextCommand::DeleteNamespaceStep { .. } => {
            unreachable!("namespace commands are decided by decide_namespace")
        }
    };
    Ok(events)
}

/// The first write into a namespace that was never registered registers it.
fn registration(state: &SessionState, namespace: &str) -> Vec<Event> {
    if state.namespace_registered {
        return vec![];
    }
    vec![Event::NamespaceCreated(NamespaceCreated {
        namespace: namespace.to_string(),
        ttl_second: None,
        implicit: true,
    })]
}

fn check_ttl(ttl_second: u64) -> Result<(), DomainError> {
    super::ttl::check("ttlSecond", ttl_second).map(|_| ())
}

/// Characters one property adds to the compact JSON document: `"key":value` and a comma.
pub fn property_chars(key: &str, value_chars: usize) -> usize {
    serde_json::to_string(key).map_or(0, |k| k.chars().count()) + 1 + value_chars + 1
}

/// Refuses a patch whose merged session document would exceed `MAX_DOCUMENT_CHARS`. Properties
/// that expired but are not swept yet still count: the sum is kept per session, so that the
/// check costs the same whatever the session holds.
fn check_document_size(state: &SessionState, patch: &Properties) -> Result<(), DomainError> {
    let replaced: usize = patch
        .keys()
        .filter_map(|key| state.named.get(key).map(|stored| property_chars(key, stored.value_chars)))
        .sum();
    let kept = state.stored_chars.saturating_sub(replaced);
    let written: usize =
        patch.iter().map(|(key, value)| property_chars(key, value.as_str().chars().count())).sum();
    // Braces, minus the comma the last property does not have.
    if 2 + kept + written > MAX_DOCUMENT_CHARS + 1 {
        return Err(DomainError::DocumentTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn session(expected: ExpectedVersion) -> SessionRef {
        SessionRef { namespace: "ns".into(), session_id: "s1".into(), expected }
    }

    fn patch(value: Value) -> ContextCommand {
        ContextCommand::PatchProperties {
            session: session(ExpectedVersion::Any),
            properties: value
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), JsonText::from_value(v)))
                .collect(),
        }
    }

    #[test]
    fn first_patch_registers_the_namespace_and_stamps_the_session_ttl() {
        let now = Utc::now();
        let state = SessionState { session_ttl: Some(60), namespace_ttl: Some(600), ..Default::default() };
        let events = decide_session(&state, &patch(json!({"a": 1})), now).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::NamespaceCreated(NamespaceCreated { implicit: true, .. })));
        let Event::PropertiesPatched(patched) = &events[1] else { panic!("{events:?}") };
        assert_eq!(patched.expires_at, Some(now + chrono::Duration::seconds(60)));
    }

    #[test]
    fn a_stale_if_match_is_refused_with_the_current_version() {
        let state = SessionState { version: 3, namespace_registered: true, ..Default::default() };
        let command = ContextCommand::ClearSession { session: session(ExpectedVersion::Exactly(2)) };
        assert_eq!(
            decide_session(&state, &command, Utc::now()),
            Err(DomainError::VersionConflict { current: 3 })
        );
    }

    #[test]
    fn deleting_an_absent_property_appends_nothing() {
        let command =
            ContextCommand::DeleteProperty { session: session(ExpectedVersion::Any), property: "x".into() };
        assert_eq!(decide_session(&SessionState::default(), &command, Utc::now()), Ok(vec![]));
    }

    #[test]
    fn a_document_over_800000_characters_is_too_large() {
        let state = SessionState { namespace_registered: true, ..Default::default() };
        let fits = "x".repeat(MAX_DOCUMENT_CHARS - 10);
        assert!(decide_session(&state, &patch(json!({"a": fits})), Utc::now()).is_ok());
        let too_big = "x".repeat(MAX_DOCUMENT_CHARS);
        assert_eq!(
            decide_session(&state, &patch(json!({"a": too_big})), Utc::now()),
            Err(DomainError::DocumentTooLarge)
        );
    }

    #[test]
    fn deleting_a_namespace_deletes_each_of_its_sessions_first() {
        let state = NamespaceState {
            version: 4,
            registered: true,
            sessions: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let delete = |expected| ContextCommand::DeleteNamespace { namespace: "ns".into(), expected };
        assert_eq!(
            decide_namespace(&state, &delete(ExpectedVersion::Exactly(3))),
            Err(DomainError::VersionConflict { current: 4 })
        );
        let events = decide_namespace(&state, &delete(ExpectedVersion::Exactly(4))).unwrap();
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(types, ["SessionDeleted", "SessionDeleted", "NamespaceDeleted"]);
    }

    #[test]
    fn a_namespace_too_large_for_one_step_is_deleted_in_steps_and_closed_to_writes() {
        let namespace = || "ns".to_string();
        let mut state = NamespaceState {
            registered: true,
            sessions: vec!["a".into()],
            more_sessions: true,
            ..Default::default()
        };
        let delete =
            ContextCommand::DeleteNamespace { namespace: namespace(), expected: ExpectedVersion::Any };
        let step = ContextCommand::DeleteNamespaceStep { namespace: namespace() };
        let types = |events: Vec<Event>| events.iter().map(Event::event_type).collect::<Vec<_>>();
        assert_eq!(types(decide_namespace(&state, &delete).unwrap()), ["NamespaceDeletionStarted"]);
        assert_eq!(decide_namespace(&state, &step), Ok(vec![]), "no step before the start");
        state.deleting = true;
        assert_eq!(decide_namespace(&state, &delete), Ok(vec![]), "asked again: already started");
        assert_eq!(types(decide_namespace(&state, &step).unwrap()), ["SessionDeleted"]);
        state.more_sessions = false;
        assert_eq!(types(decide_namespace(&state, &step).unwrap()), ["SessionDeleted", "NamespaceDeleted"]);
        let create = ContextCommand::CreateNamespace {
            namespace: namespace(),
            ttl_second: None,
            expected: ExpectedVersion::Any,
        };
        assert!(matches!(decide_namespace(&state, &create), Err(DomainError::Conflict(_))));
        let session =
            SessionState { namespace_registered: true, namespace_deleting: true, ..Default::default() };
        assert!(matches!(
            decide_session(&session, &patch(json!({"a": 1})), Utc::now()),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn a_step_takes_items_within_its_bound_and_at_least_one() {
        let bound = StepBound { items: 3, rows: 10 };
        let take = |held: &[u64]| bound.take(held.iter().map(|&rows| Ok::<_, ()>((rows, rows)))).unwrap();
        assert_eq!(take(&[1, 2]), (vec![1, 2], false));
        assert_eq!(take(&[1, 1, 1, 1]), (vec![1, 1, 1], true));
        assert_eq!(take(&[4, 5, 2]), (vec![4, 5], true));
        assert_eq!(take(&[50, 1]), (vec![50], true), "one item however large");
        assert_eq!(take(&[]), (vec![], false));
    }

    #[test]
    fn setting_the_same_session_ttl_again_appends_nothing() {
        let state = SessionState { namespace_registered: true, session_ttl: Some(5), ..Default::default() };
        let set =
            |ttl_second| ContextCommand::SetSessionTtl { session: session(ExpectedVersion::Any), ttl_second };
        assert_eq!(decide_session(&state, &set(5), Utc::now()), Ok(vec![]));
        assert_eq!(decide_session(&state, &set(6), Utc::now()).unwrap().len(), 1);
    }

    #[test]
    fn reserved_namespaces_are_refused() {
        let command = ContextCommand::CreateNamespace {
            namespace: "sde".into(),
            ttl_second: None,
            expected: ExpectedVersion::Any,
        };
        assert!(matches!(
            decide_namespace(&NamespaceState::default(), &command),
            Err(DomainError::Invalid(_))
        ));
    }
}

/// A property whose expiry time has passed, as found by the sweeper.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredProperty {
    pub account: String,
    pub namespace: String,
    pub session_id: String,
    pub key: String,
}

/// One `PropertiesExpired` event per session, listing its expired keys in the order found.
pub fn decide_expiry(expired: Vec<ExpiredProperty>) -> Vec<NewEvent> {
    let mut events: Vec<NewEvent> = Vec::new();
    for property in expired {
        let same_session = events.last_mut().and_then(|last| match &mut last.event {
            Event::PropertiesExpired(e)
                if last.account == property.account
                    && e.namespace == property.namespace
                    && e.session_id == property.session_id =>
            {
                Some(e)
            }
            _ => None,
        });
        match same_session {
            Some(event) => event.properties.push(property.key),
            None => events.push(NewEvent {
                account: property.account,
                event: Event::PropertiesExpired(PropertiesExpired {
                    namespace: property.namespace,
                    session_id: property.session_id,
                    properties: vec![property.key],
                }),
            }),
        }
    }
    events
}
