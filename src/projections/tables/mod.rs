//! The writes projections make, as one trait with two implementations. `SqlTables` (`sql.rs`)
//! writes through to SQLite (the writer, live); `MemoryTables` (`memory/`) folds the same writes in
//! memory and stores the final rows once, in key order (rebuild and verify), which is several
//! times faster than replaying row by row. `apply` is the same code for both, and `ctxd verify`
//! compares what the two produce, table by table.

use super::analytics::{AbandonedRow, Counter};
use crate::domain::events::{Properties, Role};
use crate::domain::journeys::events::{IdentificationKeyDefined, JourneySettingsSet};
use crate::domain::journeys::service::ServiceDoc;
use crate::store::StoreError;

/// The session a property or TTL setting belongs to.
#[derive(Debug, Clone, Copy)]
pub struct SessionKey<'a> {
    pub account_id: &'a str,
    pub namespace: &'a str,
    pub session_id: &'a str,
}

/// A property as written by `PropertiesPatched`.
#[derive(Debug, Clone, Copy)]
pub struct PropertyRow<'a> {
    pub session: SessionKey<'a>,
    pub key: &'a str,
    /// Compact JSON.
    pub value: &'a str,
    /// Unix microseconds; `None`: never expires.
    pub expires_at: Option<i64>,
}

/// Every write a projection makes. Inserts of rows that exist are errors (a corrupt log).
pub trait Tables {
    fn insert_account(&mut self, account_id: &str, created_at: &str) -> Result<(), StoreError>;
    fn insert_api_key(
        &mut self,
        key_hash: &str,
        key_id: &str,
        account_id: &str,
        issued_at: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError>;
    fn revoke_api_key(&mut self, account_id: &str, key_id: &str, revoked_at: &str) -> Result<(), StoreError>;
    fn set_account_limits(
        &mut self,
        account_id: &str,
        writes_per_second: Option<u32>,
    ) -> Result<(), StoreError>;
    fn set_account_retention(&mut self, account_id: &str, days: Option<u32>) -> Result<(), StoreError>;
    fn insert_namespace(
        &mut self,
        account_id: &str,
        namespace: &str,
        created_at: &str,
        ttl_second: Option<u64>,
    ) -> Result<(), StoreError>;
    fn set_namespace_ttl(
        &mut self,
        account_id: &str,
        namespace: &str,
        ttl_second: u64,
    ) -> Result<(), StoreError>;
    /// Marks a namespace as being deleted in steps (registering it if it was not).
    fn start_namespace_deletion(
        &mut self,
        account_id: &str,
        namespace: &str,
        at: &str,
    ) -> Result<(), StoreError>;
    fn delete_namespace(&mut self, account_id: &str, namespace: &str) -> Result<(), StoreError>;
    fn upsert_property(&mut self, row: PropertyRow<'_>) -> Result<(), StoreError>;
    fn delete_property(&mut self, session: SessionKey<'_>, key: &str) -> Result<(), StoreError>;
    fn delete_session_properties(&mut self, session: SessionKey<'_>) -> Result<(), StoreError>;
    fn upsert_session_ttl(
        &mut self,
        session: SessionKey<'_>,
        ttl_second: u64,
        set_at: &str,
    ) -> Result<(), StoreError>;
    fn delete_session_ttl(&mut self, session: SessionKey<'_>) -> Result<(), StoreError>;
    /// The service, which the caller then puts back or deletes (`MemoryTables` hands it over).
    fn take_service(&mut self, account_id: &str, service_id: &str) -> Result<Option<ServiceDoc>, StoreError>;
    fn put_service(&mut self, account_id: &str, doc: ServiceDoc) -> Result<(), StoreError>;
    fn delete_service(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError>;
    /// Creates or replaces a profile (a replacement keeps `created_at`) and its attribute index.
    fn put_customer(
        &mut self,
        account_id: &str,
        customer_id: &str,
        profile: &Properties,
        created_at: &str,
    ) -> Result<(), StoreError>;
    /// Removes a profile and its attribute index (an erasure).
    fn delete_customer(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError>;
    /// A customer erasure that proceeds in steps: started, its last erased service, ended. Its
    /// steps are the one place where an event (`ServiceErased`, a service's) changes another
    /// stream's row (the customer's), so they take the event's position `seq`: a fold in stream
    /// order keeps the advance that came last in the log, and only one that came after the start.
    fn start_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        at: &str,
        seq: u64,
    ) -> Result<(), StoreError>;
    fn advance_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        service_id: &str,
        seq: u64,
    ) -> Result<(), StoreError>;
    fn end_customer_erasure(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError>;
    fn insert_identification_key(
        &mut self,
        account_id: &str,
        key: &IdentificationKeyDefined,
    ) -> Result<(), StoreError>;
    fn set_journey_settings(
        &mut self,
        account_id: &str,
        settings: &JourneySettingsSet,
    ) -> Result<(), StoreError>;
    /// Adds `deltas` (in `counter.values()` order) to the counter row of `keys`, creating it.
    fn add_counts(
        &mut self,
        account_id: &str,
        counter: Counter,
        keys: &[&str],
        deltas: &[i64],
    ) -> Result<(), StoreError>;
    fn insert_abandoned(&mut self, account_id: &str, row: AbandonedRow) -> Result<(), StoreError>;
    /// Redacts the personal values of a service's abandoned-journey rows (an erasure).
    fn redact_abandoned(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError>;
}

mod counts;
mod sql;

pub use counts::PendingCounts;
pub use sql::{INSERT_ABANDONED, SqlTables};
