//! The journeys read model: one row per service (its states and tasks inside its document),
//! indexed by customer, by contact key and by when the sweeper must look at it.

use crate::store::db::{Connection, Dialect, OptionalExtension, Value, ValueRef, params};
use chrono::{DateTime, Utc};

use super::analytics;
use super::tables::Tables;
use super::{EventRef, Until, data_field};
use crate::domain::Event;
use crate::domain::erasure;
use crate::domain::journeys::JourneySettings;
use crate::domain::journeys::fields::label_text;
use crate::domain::journeys::service::ServiceDoc;
use crate::store::log::format_time;
use crate::store::{StoreError, payload};

/// Applies a service, customer or journey settings event.
pub fn apply(tables: &mut impl Tables, recorded: &EventRef<'_>) -> Result<(), StoreError> {
    let account = recorded.account;
    let at = || {
        DateTime::parse_from_rfc3339(recorded.recorded_at)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|error| StoreError::Corrupt(format!("recorded_at {}: {error}", recorded.recorded_at)))
    };
    match recorded.event {
        Event::ServiceStarted(e) => {
            let doc = ServiceDoc::start(e, at()?);
            analytics::service_started(tables, account, &doc)?;
            tables.put_service(account, doc)
        }
        // A deleted service leaves the analytics as they were: the journey happened.
        Event::ServiceDeleted(e) => tables.delete_service(account, &e.service_id),
        Event::ServiceExpired(e) => {
            let doc = take(tables, account, &e.service_id)?;
            analytics::apply(tables, account, &doc, recorded.event, recorded.recorded_at)?;
            tables.delete_service(account, &e.service_id)
        }
        Event::ServiceEnded(_)
        | Event::ServiceAutoCompleted(_)
        | Event::ServiceAssociated(_)
        | Event::ServiceExpirySet(_)
        | Event::StateStarted(_)
        | Event::StateEnded(_)
        | Event::TaskStarted(_)
        | Event::TaskEnded(_)
        | Event::ExtensionReplaced(_) => {
            let mut doc = take(tables, account, service_id_of(recorded.event))?;
            analytics::apply(tables, account, &doc, recorded.event, recorded.recorded_at)?;
            doc.apply(recorded.event, at()?);
            tables.put_service(account, doc)
        }
        Event::CustomerCreated(e) => {
            tables.put_customer(account, &e.customer_id, &e.profile, recorded.recorded_at)
        }
        Event::CustomerReplaced(e) => {
            tables.put_customer(account, &e.customer_id, &e.profile, recorded.recorded_at)
        }
        // The redacted events already rebuild the service redacted: redacting again changes
        // nothing there, and live it redacts what the service holds (a deleted one, nothing).
        Event::ServiceErased(e) => {
            if let Some(mut doc) = tables.take_service(account, &e.service_id)? {
                erasure::redact_service(&mut doc);
                tables.put_service(account, doc)?;
            }
            tables.redact_abandoned(account, &e.service_id)?;
            tables.advance_customer_erasure(account, &e.customer_id, &e.service_id, recorded.seq)
        }
        Event::CustomerErasureStarted(e) => {
            tables.delete_customer(account, &e.customer_id)?;
            tables.start_customer_erasure(account, &e.customer_id, recorded.recorded_at, recorded.seq)
        }
        Event::CustomerErased(e) => {
            tables.delete_customer(account, &e.customer_id)?;
            tables.end_customer_erasure(account, &e.customer_id)
        }
        Event::IdentificationKeyDefined(e) => tables.insert_identification_key(account, e),
        Event::JourneySettingsSet(e) => tables.set_journey_settings(account, e),
        _ => Ok(()),
    }
}

/// The service an event is about, which must exist.
fn take(tables: &mut impl Tables, account: &str, service_id: &str) -> Result<ServiceDoc, StoreError> {
    tables.take_service(account, service_id)?.ok_or_else(|| {
        StoreError::Corrupt(format!("an event of service {service_id} comes before its start"))
    })
}

fn service_id_of(event: &Event) -> &str {
    match event {
        Event::ServiceEnded(e) => &e.service_id,
        Event::ServiceAutoCompleted(e) => &e.service_id,
        Event::ServiceAssociated(e) => &e.service_id,
        Event::ServiceExpirySet(e) => &e.service_id,
        Event::StateStarted(e) => &e.service_id,
        Event::StateEnded(e) => &e.service_id,
        Event::TaskStarted(e) => &e.service_id,
        Event::TaskEnded(e) => &e.service_id,
        Event::ExtensionReplaced(e) => &e.service_id,
        _ => "",
    }
}

/// The `services` columns of a document, derived in one place for both table implementations.
pub struct ServiceColumns {
    pub customer_id: Option<String>,
    pub contact_key: Option<String>,
    pub started_at: String,
    pub active: bool,
    pub auto_complete_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// The document's JSON, as stored (`store::payload`).
    pub document: Value,
}

impl ServiceColumns {
    pub fn of(doc: &ServiceDoc, dialect: Dialect) -> ServiceColumns {
        let document = serde_json::to_string(doc).expect("a service document serializes");
        ServiceColumns {
            customer_id: doc.customer_id.clone(),
            contact_key: doc.contact_key.clone(),
            started_at: format_time(millis(doc.life.started.timestamp)),
            active: doc.is_active(),
            auto_complete_at: doc.auto_complete_at().map(|time| time.timestamp_micros()),
            expires_at: doc.expires_at().map(|time| time.timestamp_micros()),
            document: payload::stored(dialect, &document),
        }
    }
}

/// A time cut to the millisecond: the precision the API shows, so a filter with a time the API
/// returned finds that item.
fn millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

/// The document of a `services` row's `document` column.
fn parse_doc(stored: ValueRef<'_>) -> Result<ServiceDoc, StoreError> {
    serde_json::from_str(&payload::text(stored)?)
        .map_err(|error| StoreError::Corrupt(format!("service document: {error}")))
}

/// One service of `account`.
pub fn load_service(
    conn: &Connection,
    account: &str,
    service_id: &str,
) -> Result<Option<ServiceDoc>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT document FROM services WHERE account_id = ?1 AND service_id = ?2")?;
    let mut rows = statement.query((account, service_id))?;
    rows.next()?.map(|row| parse_doc(row.get_ref(0)?)).transpose()
}

/// Every service that had been `customer_id`'s by `until` (started for them or associated with
/// them, even if since deleted or associated with someone else), from the log, in id order:
/// what an erasure redacts, and what an as-of read of the customer's services folds.
pub fn services_ever_of(
    conn: &Connection,
    account: &str,
    customer_id: &str,
    until: Until<'_>,
) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(&services_ever_of_sql(conn, until))?;
    let rows = statement.query_map(params![account, until.bound(), customer_id], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The query of `services_ever_of`: a seek on `events_services_of_customers` (migration 0012).
fn services_ever_of_sql(conn: &Connection, until: Until<'_>) -> String {
    let (service, customer) = (data_field(conn, "service_id"), data_field(conn, "customer_id"));
    format!(
        "SELECT {service} AS service_id
         FROM events{}
         WHERE account = ?1 AND {} AND event_type IN ('ServiceStarted', 'ServiceAssociated')
           AND {customer} = ?3
         UNION {ARCHIVED_SERVICES}
         ORDER BY service_id",
        services_index(conn),
        until.condition()
    )
}

/// SQLite: the index the customer's services are sought on (`INDEXED BY`; PostgreSQL's planner
/// finds it by itself).
fn services_index(conn: &Connection) -> &'static str {
    conn.sql(" INDEXED BY events_services_of_customers", "")
}

/// The services ever given to customer `?2` of account `?1` after `?3`, unordered: in the
/// log, and in the snapshot of its last archive.
fn services_after_sql(conn: &Connection) -> String {
    let (service, customer) = (data_field(conn, "service_id"), data_field(conn, "customer_id"));
    format!(
        "SELECT {service} AS service_id FROM events{}
         WHERE account = ?1 AND event_type IN ('ServiceStarted', 'ServiceAssociated')
           AND {customer} = ?2 AND {service} > ?3
         UNION SELECT service_id FROM snapshot_customer_services
         WHERE account_id = ?1 AND customer_id = ?2 AND service_id > ?3",
        services_index(conn)
    )
}

/// The services that archived events gave customer `?3` of account `?1` (the snapshot keeps
/// them: `store::archive`).
const ARCHIVED_SERVICES: &str =
    "SELECT service_id FROM snapshot_customer_services WHERE account_id = ?1 AND customer_id = ?3";

/// The next `limit` services ever given to a customer after `after`, in id order: a seek on
/// the index `events_services_of_customers` (migration 0012).
pub fn services_of_after(
    conn: &Connection,
    account: &str,
    customer_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let sql = services_after_sql(conn) + " ORDER BY service_id LIMIT ?4";
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params![account, customer_id, after.unwrap_or(""), limit as i64], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last service a customer erasure that proceeds in steps has erased: `None` when no
/// erasure of the customer is in progress, `Some(None)` when it has erased none yet.
pub fn erasure_progress(
    conn: &Connection,
    account: &str,
    customer_id: &str,
) -> Result<Option<Option<String>>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT erased_through FROM customer_erasures WHERE account_id = ?1 AND customer_id = ?2",
        )?
        .query_row(params![account, customer_id], |row| row.get(0))
        .optional()?)
}

/// Every customer erasure in progress, as (account, customer).
pub fn customers_being_erased(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT account_id, customer_id FROM customer_erasures ORDER BY started_at")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where a customer erasure stands, as `GET /genesys/1/cs/profiles/{id}/erasure` shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ErasureStatus {
    pub customer_id: String,
    /// True while the erasure proceeds in steps; false when none is (done, or never asked).
    pub erasing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Services still to erase.
    pub services_left: u64,
}

pub fn erasure_status(
    conn: &Connection,
    account: &str,
    customer_id: &str,
) -> Result<ErasureStatus, StoreError> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT started_at, erased_through FROM customer_erasures WHERE account_id = ?1 AND customer_id = ?2",
        )?
        .query_row(params![account, customer_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let services_left = match &row {
        None => 0,
        Some((_, through)) => conn
            .prepare_cached(&format!("SELECT count(*) FROM ({}) AS services", services_after_sql(conn)))?
            .query_row(params![account, customer_id, through.as_deref().unwrap_or("")], |row| row.get(0))?,
    };
    Ok(ErasureStatus {
        customer_id: customer_id.to_string(),
        erasing: row.is_some(),
        started_at: row.map(|(started_at, _)| started_at),
        services_left,
    })
}

/// Which services of a list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    All,
    Active,
    Completed,
}

/// The filters of the service list endpoints.
#[derive(Debug, Clone)]
pub struct ServiceFilter {
    pub status: Status,
    pub started_from: Option<DateTime<Utc>>,
    pub started_to: Option<DateTime<Utc>>,
    /// Type names or ids; empty: any.
    pub service_types: Vec<String>,
}

/// Whose services a list is of.
pub enum Owner<'a> {
    Customer(&'a str),
    /// Anonymous services (no customer) started with this contact key.
    ContactKey(&'a str),
}

/// Most services one list returns: the reference has no paging, so a bound keeps a reply sane.
pub const MAX_LISTED_SERVICES: usize = 1000;

/// The services of a customer or an anonymous contact key, oldest first.
pub fn list_services(
    conn: &Connection,
    account: &str,
    owner: Owner<'_>,
    filter: &ServiceFilter,
) -> Result<Vec<ServiceDoc>, StoreError> {
    let (column, extra, who) = match owner {
        Owner::Customer(id) => ("customer_id", "", id),
        Owner::ContactKey(key) => ("contact_key", "AND customer_id IS NULL", key),
    };
    let active = match filter.status {
        Status::All => None,
        Status::Active => Some(true),
        Status::Completed => Some(false),
    };
    let sql = format!(
        "SELECT document FROM services WHERE account_id = ?1 AND {column} = ?2 {extra}
           AND (CAST(?3 AS BIGINT) IS NULL OR active = ?3) AND (CAST(?4 AS TEXT) IS NULL OR started_at >= ?4)
           AND (CAST(?5 AS TEXT) IS NULL OR started_at <= ?5)
         ORDER BY started_at, service_id"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(params![
        account,
        who,
        active,
        filter.started_from.map(format_time),
        filter.started_to.map(format_time)
    ])?;
    let mut services = Vec::new();
    while let Some(row) = rows.next()? {
        let doc = parse_doc(row.get_ref(0)?)?;
        let type_matches = filter.service_types.is_empty()
            || doc.service_type.as_ref().is_some_and(|t| filter.service_types.contains(&label_text(t)));
        if type_matches {
            services.push(doc);
            if services.len() == MAX_LISTED_SERVICES {
                break;
            }
        }
    }
    Ok(services)
}

/// A customer's services for the journey timeline: every active one first, then the most
/// recently started completed ones, `MAX_LISTED_SERVICES` in all; and how many the customer has.
pub fn journey_services(
    conn: &Connection,
    account: &str,
    customer_id: &str,
) -> Result<(Vec<ServiceDoc>, u64), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT document FROM services WHERE account_id = ?1 AND customer_id = ?2
         ORDER BY active DESC, started_at DESC LIMIT ?3",
    )?;
    let mut rows = statement.query(params![account, customer_id, MAX_LISTED_SERVICES as i64])?;
    let mut services = Vec::new();
    while let Some(row) = rows.next()? {
        services.push(parse_doc(row.get_ref(0)?)?);
    }
    let total: u64 = conn
        .prepare_cached("SELECT count(*) FROM services WHERE account_id = ?1 AND customer_id = ?2")?
        .query_row((account, customer_id), |row| row.get(0))?;
    Ok((services, total))
}

/// Services whose expiry or auto-completion is due at `now`, as (account, service id).
/// Two seeks on the partial indexes, the second leaving out what the first found. (`UNION`,
/// which removes duplicates itself, made SQLite 3.54 merge two full scans of `services` in key
/// order: 0.6 s per sweep over 133,000 services, in the writer.)
const DUE_SERVICES: &str = "SELECT account_id, service_id FROM services WHERE expires_at <= ?1
     UNION ALL
     SELECT account_id, service_id FROM services
      WHERE auto_complete_at <= ?1 AND (expires_at IS NULL OR expires_at > ?1)
     LIMIT ?2";

pub fn due_services(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = conn.prepare_cached(DUE_SERVICES)?;
    let rows = statement
        .query_map(params![now.timestamp_micros(), limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The account's journey settings (defaults when it never set any).
pub fn journey_settings(conn: &Connection, account: &str) -> Result<JourneySettings, StoreError> {
    let row: Option<(Option<u64>, Option<String>)> = conn
        .prepare_cached(
            "SELECT auto_complete_after, abandon_dispositions FROM journey_settings WHERE account_id = ?1",
        )?
        .query_row([account], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((auto_complete_after, dispositions)) = row else {
        return Ok(JourneySettings::default());
    };
    let abandon_dispositions = dispositions
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| StoreError::Corrupt(format!("abandon_dispositions: {error}")))?;
    Ok(JourneySettings { auto_complete_after, abandon_dispositions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweeper_seeks_due_services_on_their_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {DUE_SERVICES}")).unwrap();
        let plan: Vec<String> =
            statement.query_map([0, 10], |row| row.get::<String>(3)).unwrap().map(Result::unwrap).collect();
        let plan = plan.join("\n");
        assert!(plan.contains("USING INDEX services_expiry (expires_at<?)"), "{plan}");
        assert!(plan.contains("USING INDEX services_auto_complete (auto_complete_at<?)"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    #[test]
    fn an_erasure_seeks_the_services_of_a_customer_on_their_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        for (sql, parameters) in [
            (services_after_sql(&conn) + " ORDER BY service_id LIMIT ?4", 4),
            (services_ever_of_sql(&conn, Until::End), 3),
            (services_ever_of_sql(&conn, Until::Seq(9)), 3),
        ] {
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let values = vec![crate::store::db::Value::Text("x".into()); parameters];
            let plan: Vec<String> = statement
                .query_map(crate::store::db::params_from_iter(values), |row| row.get::<String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("USING INDEX events_services_of_customers"), "{sql}\n{plan}");
            assert!(!plan.contains("SCAN"), "{plan}");
        }
    }
}
