//! The memory tables against the SQL ones, for every event type: one `apply`, two table
//! implementations, the same rows.

use crate::store::db::Connection;
use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::events::*;
use crate::projections::tables::SqlTables;
use crate::projections::{apply, checksums};
use crate::store::log::RecordedEvent;

fn properties(pairs: &[(&str, serde_json::Value)]) -> Properties {
    pairs.iter().map(|(key, value)| (key.to_string(), JsonText::from_value(value))).collect()
}

/// Every event type, including rewrites, deletes of absent rows and re-creation.
fn script() -> Vec<(&'static str, Event)> {
    let s = |id: &str| (String::from("ns"), id.to_string());
    let patched = |id: &str, pairs: &[(&str, serde_json::Value)], expires: bool| {
        Event::PropertiesPatched(PropertiesPatched {
            namespace: s(id).0,
            session_id: s(id).1,
            properties: properties(pairs),
            expires_at: expires.then(|| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()),
        })
    };
    vec![
        ("acme", Event::AccountCreated(AccountCreated { account_id: "acme".into() })),
        (
            "acme",
            Event::ApiKeyIssued(ApiKeyIssued {
                account_id: "acme".into(),
                key_id: "k1".into(),
                key_hash: "h1".into(),
                name: "default".into(),
                role: Role::Write,
            }),
        ),
        (
            "acme",
            Event::ApiKeyRevoked(ApiKeyRevoked {
                account_id: "acme".into(),
                key_id: "k1".into(),
                name: "default".into(),
            }),
        ),
        (
            "acme",
            Event::AccountLimitsSet(AccountLimitsSet {
                account_id: "acme".into(),
                writes_per_second: Some(50),
            }),
        ),
        ("acme", Event::RetentionSet(RetentionSet { account_id: "acme".into(), days: Some(30) })),
        (
            "acme",
            Event::LogArchived(LogArchived {
                first_seq: 1,
                through_seq: 4,
                previous_hash: "00".into(),
                through_hash: "00".into(),
                through_recorded_at: "2026-01-01T00:00:00.000000Z".into(),
                segment: "s".into(),
                segment_sha256: "00".into(),
                streams: 1,
                snapshot_sha256: "00".into(),
            }),
        ),
        (
            "acme",
            Event::ApiKeyIssued(ApiKeyIssued {
                account_id: "acme".into(),
                key_id: "k2".into(),
                key_hash: "h2".into(),
                name: "dashboard".into(),
                role: Role::Read,
            }),
        ),
        (
            "acme",
            Event::NamespaceCreated(NamespaceCreated {
                namespace: "ns".into(),
                ttl_second: None,
                implicit: false,
            }),
        ),
        ("acme", Event::NamespaceTtlSet(NamespaceTtlSet { namespace: "ns".into(), ttl_second: 60 })),
        ("acme", patched("a", &[("x", 1.into()), ("y", "two".into())], false)),
        ("acme", patched("a", &[("x", serde_json::json!({"deep": [1, null]}))], true)),
        ("acme", patched("b", &[("z", true.into())], true)),
        (
            "acme",
            Event::SessionTtlSet(SessionTtlSet {
                namespace: "ns".into(),
                session_id: "b".into(),
                ttl_second: 5,
            }),
        ),
        (
            "acme",
            Event::SessionTtlSet(SessionTtlSet {
                namespace: "ns".into(),
                session_id: "b".into(),
                ttl_second: 7,
            }),
        ),
        (
            "acme",
            Event::PropertyDeleted(PropertyDeleted {
                namespace: "ns".into(),
                session_id: "a".into(),
                property: "y".into(),
            }),
        ),
        (
            "acme",
            Event::PropertyDeleted(PropertyDeleted {
                namespace: "ns".into(),
                session_id: "a".into(),
                property: "absent".into(),
            }),
        ),
        (
            "acme",
            Event::PropertiesExpired(PropertiesExpired {
                namespace: "ns".into(),
                session_id: "b".into(),
                properties: vec!["z".into()],
            }),
        ),
        ("acme", patched("c", &[("k", 3.into())], false)),
        (
            "acme",
            Event::SessionPropertiesCleared(SessionPropertiesCleared {
                namespace: "ns".into(),
                session_id: "c".into(),
            }),
        ),
        ("globex", patched("a", &[("other", "tenant".into())], false)),
        (
            "acme",
            Event::SessionDeleted(SessionDeleted {
                namespace: "ns".into(),
                session_id: "b".into(),
                cause: None,
            }),
        ),
        ("acme", Event::NamespaceDeleted(NamespaceDeleted { namespace: "ns".into() })),
        (
            "acme",
            Event::NamespaceCreated(NamespaceCreated {
                namespace: "ns".into(),
                ttl_second: Some(9),
                implicit: true,
            }),
        ),
        // A delete in steps, left midway: of a registered namespace and of one never registered.
        ("acme", Event::NamespaceDeletionStarted(NamespaceDeletionStarted { namespace: "ns".into() })),
        ("acme", Event::NamespaceDeletionStarted(NamespaceDeletionStarted { namespace: "other".into() })),
    ]
    .into_iter()
    .chain(journey_script())
    .collect()
}

/// Every journey event type, written as stored payloads.
fn journey_script() -> Vec<(&'static str, Event)> {
    let t = r#"{"timestamp":"2026-01-01T00:00:00Z","channel":{"media_type":"voice"}}"#;
    let start = |id: &str, extra: &str| {
        format!(
            r#"{{"service_id":"{id}","service_type":"billing","customer_id":"c1","contact_key":"k",
                "opening":{{"est_duration":60,"started":{t},"extensions":{{"E":{{"a":1}}}}}},
                "auto_complete_after":60,"expiry":{{"ttl":{extra},"expiration_time":null}}}}"#
        )
    };
    let closing =
        format!(r#"{{"completed":{t},"disposition":"ok","disposition_desc":"d","closed_by":"state_ended"}}"#);
    let payloads = [
        ("ServiceStarted", start("s1", "3600")),
        ("ServiceStarted", start("s2", "null")),
        ("ServiceStarted", start("s3", "null")),
        ("StateStarted", format!(r#"{{"service_id":"s1","state_id":1,"state_type":"ivr","previous_state_id":null,"opening":{{"est_duration":null,"started":{t}}}}}"#)),
        ("TaskStarted", format!(r#"{{"service_id":"s1","task_id":1,"state_id":1,"task_type":"t","opening":{{"est_duration":5,"started":{t}}}}}"#)),
        ("TaskEnded", format!(r#"{{"service_id":"s1","task_id":1,"closing":{closing}}}"#)),
        ("ExtensionReplaced", r#"{"service_id":"s1","item":{"state":1},"name":"N","value":[{"a":1}]}"#.to_string()),
        ("StateEnded", format!(r#"{{"service_id":"s1","state_id":1,"closing":{closing}}}"#)),
        ("ServiceAssociated", r#"{"service_id":"s1","customer_id":"c2","previous_customer_id":"c1","service_type":null,"channel":{"media_type":"chat"}}"#.to_string()),
        ("ServiceExpirySet", r#"{"service_id":"s1","expiry":{"ttl":null,"expiration_time":"2027-01-01T00:00:00Z"}}"#.to_string()),
        ("ServiceEnded", format!(r#"{{"service_id":"s1","closing":{closing}}}"#)),
        ("ServiceAutoCompleted", r#"{"service_id":"s2","completed_at":"2026-01-01T00:10:00Z","idle_since":"2026-01-01T00:00:00Z"}"#.to_string()),
        ("ServiceDeleted", r#"{"service_id":"s3"}"#.to_string()),
        ("ServiceStarted", start("s4", "1")),
        ("ServiceExpired", r#"{"service_id":"s4","expired_at":"2026-01-01T00:10:00Z"}"#.to_string()),
        ("CustomerCreated", r#"{"customer_id":"c1","profile":{"Email":"a@x.org","P":{"n":"1"}}}"#.to_string()),
        ("CustomerCreated", r#"{"customer_id":"c2","profile":{"Email":["b@x.org","c@x.org"]}}"#.to_string()),
        ("CustomerReplaced", r#"{"customer_id":"c1","profile":{"Email":"d@x.org","P":{"n":"1"}}}"#.to_string()),
        ("IdentificationKeyDefined", r#"{"name":"k","source":"profile","attributes":["Email"],"unique":true}"#.to_string()),
        ("IdentificationKeyDefined", r#"{"name":"j","source":"P","attributes":["n"],"unique":false}"#.to_string()),
        ("JourneySettingsSet", r#"{"auto_complete_after":300,"abandon_dispositions":["gave_up"]}"#.to_string()),
        ("ServiceErased", r#"{"service_id":"s1","customer_id":"c2"}"#.to_string()),
        ("ServiceErased", r#"{"service_id":"s3","customer_id":"c2"}"#.to_string()),
        ("CustomerErased", r#"{"customer_id":"c2","services":["s1","s3"],"redacted":[]}"#.to_string()),
        ("SessionErased", r#"{"namespace":"ns","session_id":"b","redacted":[]}"#.to_string()),
        // An erasure in steps, left midway.
        ("CustomerErasureStarted", r#"{"customer_id":"c1","redacted":[]}"#.to_string()),
        ("ServiceErased", r#"{"service_id":"s2","customer_id":"c1","redacted":[{"seq":1,"redacted_sha256":"00"}]}"#.to_string()),
    ];
    payloads.into_iter().map(|(kind, data)| ("acme", Event::decode(kind, &data).unwrap())).collect()
}

#[test]
fn the_script_has_every_event_type() {
    let script = script();
    for kind in crate::domain::events::EVENT_TYPES {
        assert!(script.iter().any(|(_, event)| event.event_type() == *kind), "{kind} is not in the script");
    }
}

#[test]
fn sql_and_memory_tables_end_in_the_same_rows_for_every_event_type() {
    let mut live = Connection::open_in_memory().unwrap();
    crate::store::migrations::migrate(&mut live).unwrap();
    let mut memory = MemoryTables::default();
    for recorded in recorded_script() {
        let mut tables = SqlTables::new(&live);
        apply(&mut tables, &recorded).unwrap();
        tables.finish().unwrap().write(&live).unwrap();
        apply(&mut memory, &recorded).unwrap();
    }
    let mut rebuilt = Connection::open_in_memory().unwrap();
    crate::store::migrations::migrate(&mut rebuilt).unwrap();
    memory.write_to(&rebuilt).unwrap();
    assert_eq!(checksums(&live).unwrap(), checksums(&rebuilt).unwrap());
    let properties: i64 = live.query_row("SELECT count(*) FROM properties", [], |row| row.get(0)).unwrap();
    assert_eq!(properties, 2, "acme's session a keeps x, globex's session a keeps its own");
}

/// The script as recorded events of their accounts' logs.
fn recorded_script() -> Vec<RecordedEvent> {
    script()
        .into_iter()
        .enumerate()
        .map(|(seq, (account, event))| RecordedEvent {
            id: seq as u64 + 1,
            seq: seq as u64 + 1,
            account: account.into(),
            stream: event.stream(account),
            stream_version: 1,
            event,
            meta: "{}".into(),
            recorded_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, seq as u32 % 60).unwrap(),
        })
        .collect()
}

fn checksums_of(memory: &MemoryTables) -> Vec<(String, String)> {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::store::migrations::migrate(&mut conn).unwrap();
    memory.write_to(&conn).unwrap();
    checksums(&conn).unwrap()
}

#[test]
fn a_fold_cut_anywhere_into_stream_states_and_loaded_back_ends_in_the_same_rows() {
    let script = recorded_script();
    let mut whole = MemoryTables::default();
    for recorded in &script {
        apply(&mut whole, recorded).unwrap();
    }
    let expected = checksums_of(&whole);
    for cut in 0..=script.len() {
        let mut before = MemoryTables::default();
        for recorded in &script[..cut] {
            apply(&mut before, recorded).unwrap();
        }
        let mut after = MemoryTables::default();
        for (_, (account, state)) in before.into_streams() {
            // Through their stored form, as a snapshot keeps them.
            let text = serde_json::to_string(&state).unwrap();
            after.load_stream(&account, serde_json::from_str(&text).unwrap());
        }
        for recorded in &script[cut..] {
            apply(&mut after, recorded).unwrap();
        }
        assert_eq!(checksums_of(&after), expected, "cut after {cut} events");
    }
}

#[test]
fn a_log_that_inserts_a_row_twice_is_reported_as_corrupt() {
    let mut memory = MemoryTables::default();
    memory.insert_account("acme", "t").unwrap();
    assert!(matches!(memory.insert_account("acme", "t"), Err(StoreError::Corrupt(_))));
}

/// The script, with a second erasure of a customer whose first one erased services (their
/// `ServiceErased` events come after the new start in stream order, and must not advance it),
/// and a last erased service that sorts before the one erased before it, stored as a log.
fn stored_script() -> (Connection, Vec<RecordedEvent>) {
    let mut script = recorded_script();
    for (kind, data) in [
        ("ServiceErased", r#"{"service_id":"s0","customer_id":"c1"}"#),
        ("CustomerErasureStarted", r#"{"customer_id":"c2","redacted":[]}"#),
    ] {
        let mut last = script.last().unwrap().clone();
        (last.id, last.seq) = (last.id + 1, last.seq + 1);
        last.event = Event::decode(kind, data).unwrap();
        last.stream = last.event.stream("acme");
        script.push(last);
    }
    let mut conn = Connection::open_in_memory().unwrap();
    crate::store::migrations::migrate(&mut conn).unwrap();
    let mut versions = std::collections::HashMap::new();
    let mut heads = std::collections::HashMap::new();
    for recorded in &mut script {
        let version = versions.entry(recorded.stream.clone()).or_insert(0);
        *version += 1;
        recorded.stream_version = *version;
        let head = heads.entry(recorded.account.clone()).or_insert(crate::store::chain::GENESIS);
        *head = crate::store::log::append(&conn, recorded, head).unwrap();
    }
    (conn, script)
}

#[test]
fn a_fold_in_stream_order_stored_in_pieces_ends_in_the_rows_of_the_log_order() {
    let (log, script) = stored_script();
    let mut whole = MemoryTables::default();
    for recorded in &script {
        apply(&mut whole, recorded).unwrap();
    }
    let expected = checksums_of(&whole);
    let erasures = |conn: &Connection| -> Vec<(String, Option<String>)> {
        let mut statement =
            conn.prepare("SELECT customer_id, erased_through FROM customer_erasures ORDER BY 1").unwrap();
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    // Every stream stored as soon as it is folded, some, and all at the end.
    for budget in [0, 200, usize::MAX] {
        let mut target = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut target).unwrap();
        let applied = crate::projections::fold_in_stream_order(&log, &target, None, budget).unwrap();
        assert_eq!(applied, script.len() as u64);
        assert_eq!(checksums(&target).unwrap(), expected, "budget {budget}");
        assert_eq!(
            erasures(&target),
            [("c1".to_string(), Some("s0".to_string())), ("c2".to_string(), None)],
            "the last advance in the log's order, and none of an earlier erasure"
        );
    }
}

#[test]
fn a_fold_in_stream_order_starts_each_stream_from_its_snapshot() {
    let expected = {
        let mut whole = MemoryTables::default();
        stored_script().1.iter().for_each(|recorded| apply(&mut whole, recorded).unwrap());
        checksums_of(&whole)
    };
    let length = stored_script().1.len();
    for cut in [1, 7, length / 2, length - 2, length] {
        let (log, script) = stored_script();
        let mut before = MemoryTables::default();
        for recorded in &script[..cut] {
            apply(&mut before, recorded).unwrap();
        }
        for (stream, (account, state)) in before.into_streams() {
            let state = crate::store::archive::pack(&serde_json::to_string(&state).unwrap());
            log.execute(
                // At position 0, so at or before its account's cut (`live_snapshot_streams`).
                "INSERT INTO snapshot_streams (stream, through_seq, account_id, version, digest, state)
                 VALUES (?1, 0, ?2, 0, x'00', ?3)",
                crate::params![stream, account, state],
            )
            .unwrap();
        }
        // What the archive of each account's events before the cut records.
        for recorded in &script[..cut] {
            log.execute(
                "INSERT INTO archives (account_id, first_seq, through_seq, previous_hash, through_hash,
                     through_recorded_at, directory, segment, segment_sha256, archived_at)
                 VALUES (?1, 1, ?2, x'00', x'00', '', '', '', '', '')
                 ON CONFLICT DO NOTHING",
                crate::params![recorded.account, recorded.seq],
            )
            .unwrap();
        }
        for budget in [0, usize::MAX] {
            let mut target = Connection::open_in_memory().unwrap();
            crate::store::migrations::migrate(&mut target).unwrap();
            let applied = crate::projections::fold_in_stream_order(&log, &target, None, budget).unwrap();
            assert_eq!(applied, (length - cut) as u64, "cut after {cut} events");
            assert_eq!(checksums(&target).unwrap(), expected, "cut after {cut} events, budget {budget}");
        }
    }
}
