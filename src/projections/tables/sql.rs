//! `Tables` written through to SQLite, in the writer's transaction.

use crate::store::db::{Connection, params};

use super::{PendingCounts, PropertyRow, SessionKey, Tables};
use crate::domain::events::{Properties, Role};
use crate::domain::journeys::customers::attribute_values;
use crate::domain::journeys::events::{IdentificationKeyDefined, JourneySettingsSet};
use crate::domain::journeys::service::ServiceDoc;
use crate::projections::analytics::{AbandonedRow, Counter, redacted_detail};
use crate::store::StoreError;

pub const INSERT_ABANDONED: &str = "INSERT INTO analytics_abandoned
    (account_id, ended_at, service_id, service_type, hour, media_type, state_type, detail)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Writes into the projection tables of a connection. Every table but `services` is written
/// at once; the service a command works on is kept in memory while the command's events fold
/// into it and written once by `finish`, so a transition (two or three events) reads and writes
/// its row once instead of three times.
pub struct SqlTables<'c> {
    conn: &'c Connection,
    /// (account, service) not yet written back.
    service: Option<(String, ServiceDoc)>,
    /// (account, service id, indexed keys) of a service row as it is stored: when the keys are
    /// unchanged, the write-back leaves the customer and contact key indexes alone.
    stored: Option<(String, String, Keys)>,
    /// The command's counter deltas, for the caller to write (`finish`).
    counts: PendingCounts,
}

impl<'c> SqlTables<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        SqlTables { conn, service: None, stored: None, counts: PendingCounts::default() }
    }

    /// Starts from a service already loaded (by the decision), saving a read.
    pub fn with_service(conn: &'c Connection, account_id: &str, doc: ServiceDoc) -> Self {
        let stored = Some((account_id.to_string(), doc.service_id.clone(), Keys::of(&doc)));
        SqlTables {
            conn,
            service: Some((account_id.to_string(), doc)),
            stored,
            counts: PendingCounts::default(),
        }
    }

    /// Writes back the service kept in memory, and answers the counter deltas the events made,
    /// for the caller to write (`PendingCounts::write`) with those of the other commands of its
    /// transaction. Must be called once the events are applied.
    pub fn finish(mut self) -> Result<PendingCounts, StoreError> {
        self.write_service()?;
        Ok(self.counts)
    }

    fn write_service(&mut self) -> Result<(), StoreError> {
        let Some((account_id, doc)) = self.service.take() else {
            return Ok(());
        };
        let c = crate::projections::journeys::ServiceColumns::of(&doc, self.conn.dialect());
        let unchanged_keys = match self.stored.take() {
            Some((account, service_id, keys)) => {
                account == account_id && service_id == doc.service_id && keys.are_those_of(&doc)
            }
            None => false,
        };
        if unchanged_keys {
            return self.run(
                "UPDATE services SET active = ?3, auto_complete_at = ?4, expires_at = ?5, document = ?6
                 WHERE account_id = ?1 AND service_id = ?2",
                params![account_id, doc.service_id, c.active, c.auto_complete_at, c.expires_at, c.document],
            );
        }
        self.run(
            "INSERT INTO services (account_id, service_id, customer_id, contact_key, started_at, active,
                                   auto_complete_at, expires_at, document)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (account_id, service_id) DO UPDATE SET customer_id = excluded.customer_id,
                   contact_key = excluded.contact_key, active = excluded.active,
                   auto_complete_at = excluded.auto_complete_at, expires_at = excluded.expires_at,
                   document = excluded.document",
            params![
                account_id,
                doc.service_id,
                c.customer_id,
                c.contact_key,
                c.started_at,
                c.active,
                c.auto_complete_at,
                c.expires_at,
                c.document
            ],
        )
    }

    fn holds(&self, account_id: &str, service_id: &str) -> bool {
        self.service
            .as_ref()
            .is_some_and(|(account, doc)| account == account_id && doc.service_id == service_id)
    }

    /// Runs one cached write statement.
    fn run(&self, sql: &str, params: impl crate::store::db::Params) -> Result<(), StoreError> {
        // Nothing reads its answer: on PostgreSQL it goes with the next statement waited for.
        self.conn.prepare_cached(sql)?.execute_later(params)?;
        Ok(())
    }
}

/// The indexed columns of a service row that lifecycle calls leave as they are: the customer,
/// and the contact key (changed only by an erasure).
#[derive(Debug, Clone)]
struct Keys {
    customer_id: Option<String>,
    contact_key: Option<String>,
}

impl Keys {
    fn of(doc: &ServiceDoc) -> Keys {
        Keys { customer_id: doc.customer_id.clone(), contact_key: doc.contact_key.clone() }
    }

    /// Compared without copying: the write-back of every lifecycle call asks.
    fn are_those_of(&self, doc: &ServiceDoc) -> bool {
        self.customer_id == doc.customer_id && self.contact_key == doc.contact_key
    }
}

impl Tables for SqlTables<'_> {
    fn insert_account(&mut self, account_id: &str, created_at: &str) -> Result<(), StoreError> {
        self.run("INSERT INTO accounts (account_id, created_at) VALUES (?1, ?2)", (account_id, created_at))
    }

    fn insert_api_key(
        &mut self,
        key_hash: &str,
        key_id: &str,
        account_id: &str,
        issued_at: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO api_keys (key_hash, key_id, account_id, issued_at, name, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key_hash, key_id, account_id, issued_at, name, role.as_str()],
        )
    }

    fn revoke_api_key(&mut self, account_id: &str, key_id: &str, revoked_at: &str) -> Result<(), StoreError> {
        self.run("UPDATE api_keys SET revoked_at = ?3 WHERE account_id = ?1 AND key_id = ?2 AND revoked_at IS NULL", (account_id, key_id, revoked_at))
    }

    fn set_account_limits(
        &mut self,
        account_id: &str,
        writes_per_second: Option<u32>,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE accounts SET writes_per_second = ?2 WHERE account_id = ?1",
            (account_id, writes_per_second),
        )
    }

    fn set_account_retention(&mut self, account_id: &str, days: Option<u32>) -> Result<(), StoreError> {
        self.run("UPDATE accounts SET retention_days = ?2 WHERE account_id = ?1", (account_id, days))
    }

    fn insert_namespace(
        &mut self,
        account_id: &str,
        namespace: &str,
        created_at: &str,
        ttl_second: Option<u64>,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO namespaces (account_id, namespace, created_at, ttl_second) VALUES (?1, ?2, ?3, ?4)",
            params![account_id, namespace, created_at, ttl_second],
        )
    }

    fn set_namespace_ttl(
        &mut self,
        account_id: &str,
        namespace: &str,
        ttl_second: u64,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE namespaces SET ttl_second = ?3 WHERE account_id = ?1 AND namespace = ?2",
            params![account_id, namespace, ttl_second],
        )
    }

    fn start_namespace_deletion(
        &mut self,
        account_id: &str,
        namespace: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO namespaces (account_id, namespace, created_at, deleting_since) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (account_id, namespace) DO UPDATE SET deleting_since = excluded.deleting_since",
            (account_id, namespace, at),
        )
    }

    fn delete_namespace(&mut self, account_id: &str, namespace: &str) -> Result<(), StoreError> {
        self.run("DELETE FROM namespaces WHERE account_id = ?1 AND namespace = ?2", (account_id, namespace))
    }

    fn upsert_property(&mut self, row: PropertyRow<'_>) -> Result<(), StoreError> {
        let s = row.session;
        self.run(
            "INSERT INTO properties (account_id, namespace, session_id, key, value, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account_id, namespace, session_id, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            params![s.account_id, s.namespace, s.session_id, row.key, row.value, row.expires_at],
        )
    }

    fn delete_property(&mut self, s: SessionKey<'_>, key: &str) -> Result<(), StoreError> {
        self.run("DELETE FROM properties WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3 AND key = ?4", (s.account_id, s.namespace, s.session_id, key))
    }

    fn delete_session_properties(&mut self, s: SessionKey<'_>) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM properties WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
            (s.account_id, s.namespace, s.session_id),
        )
    }

    fn upsert_session_ttl(
        &mut self,
        s: SessionKey<'_>,
        ttl_second: u64,
        set_at: &str,
    ) -> Result<(), StoreError> {
        self.run("INSERT INTO session_ttls (account_id, namespace, session_id, ttl_second, ttl_set_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account_id, namespace, session_id) DO UPDATE SET ttl_second = excluded.ttl_second, ttl_set_at = excluded.ttl_set_at", params![s.account_id, s.namespace, s.session_id, ttl_second, set_at])
    }

    fn delete_session_ttl(&mut self, s: SessionKey<'_>) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM session_ttls WHERE account_id = ?1 AND namespace = ?2 AND session_id = ?3",
            (s.account_id, s.namespace, s.session_id),
        )
    }

    fn take_service(&mut self, account_id: &str, service_id: &str) -> Result<Option<ServiceDoc>, StoreError> {
        if self.holds(account_id, service_id) {
            return Ok(self.service.take().map(|(_, doc)| doc));
        }
        self.write_service()?;
        let doc = crate::projections::journeys::load_service(self.conn, account_id, service_id)?;
        if let Some(doc) = &doc {
            self.stored = Some((account_id.to_string(), service_id.to_string(), Keys::of(doc)));
        }
        Ok(doc)
    }

    fn put_service(&mut self, account_id: &str, doc: ServiceDoc) -> Result<(), StoreError> {
        if !self.holds(account_id, &doc.service_id) {
            self.write_service()?;
        }
        self.service = Some((account_id.to_string(), doc));
        Ok(())
    }

    fn delete_service(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError> {
        if self.holds(account_id, service_id) {
            self.service = None;
            self.stored = None;
        }
        self.run("DELETE FROM services WHERE account_id = ?1 AND service_id = ?2", (account_id, service_id))
    }

    fn put_customer(
        &mut self,
        account_id: &str,
        customer_id: &str,
        profile: &Properties,
        created_at: &str,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(profile).expect("a profile serializes");
        self.run(
            "INSERT INTO customers (account_id, customer_id, profile, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id, customer_id) DO UPDATE SET profile = excluded.profile",
            (account_id, customer_id, text, created_at),
        )?;
        self.run(
            "DELETE FROM customer_attributes WHERE account_id = ?1 AND customer_id = ?2",
            (account_id, customer_id),
        )?;
        for (name, value) in attribute_values(profile) {
            self.run(
                "INSERT INTO customer_attributes (account_id, name, value, customer_id) VALUES (?1, ?2, ?3, ?4)",
                (account_id, name, value, customer_id),
            )?;
        }
        Ok(())
    }

    fn start_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        at: &str,
        _seq: u64,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO customer_erasures (account_id, customer_id, started_at) VALUES (?1, ?2, ?3)",
            (account_id, customer_id, at),
        )
    }

    fn advance_customer_erasure(
        &mut self,
        account_id: &str,
        customer_id: &str,
        service_id: &str,
        _seq: u64,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE customer_erasures SET erased_through = ?3 WHERE account_id = ?1 AND customer_id = ?2",
            (account_id, customer_id, service_id),
        )
    }

    fn end_customer_erasure(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM customer_erasures WHERE account_id = ?1 AND customer_id = ?2",
            (account_id, customer_id),
        )
    }

    fn delete_customer(&mut self, account_id: &str, customer_id: &str) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM customers WHERE account_id = ?1 AND customer_id = ?2",
            (account_id, customer_id),
        )?;
        self.run(
            "DELETE FROM customer_attributes WHERE account_id = ?1 AND customer_id = ?2",
            (account_id, customer_id),
        )
    }

    fn insert_identification_key(
        &mut self,
        account_id: &str,
        key: &IdentificationKeyDefined,
    ) -> Result<(), StoreError> {
        let attributes = serde_json::to_string(&key.attributes).expect("names serialize");
        self.run(
            "INSERT INTO identification_keys (account_id, name, position, source, attributes, is_unique)
                 VALUES (?1, ?2, (SELECT COUNT(*) + 1 FROM identification_keys WHERE account_id = ?1), ?3, ?4, ?5)",
            params![account_id, key.name, key.source, attributes, key.unique],
        )
    }

    fn set_journey_settings(
        &mut self,
        account_id: &str,
        settings: &JourneySettingsSet,
    ) -> Result<(), StoreError> {
        let dispositions = settings
            .abandon_dispositions
            .as_ref()
            .map(|list| serde_json::to_string(list).expect("names serialize"));
        self.run(
            "INSERT INTO journey_settings (account_id, auto_complete_after, abandon_dispositions) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id) DO UPDATE SET auto_complete_after = excluded.auto_complete_after,
                   abandon_dispositions = excluded.abandon_dispositions",
            params![account_id, settings.auto_complete_after, dispositions],
        )
    }

    fn add_counts(
        &mut self,
        account_id: &str,
        counter: Counter,
        keys: &[&str],
        deltas: &[i64],
    ) -> Result<(), StoreError> {
        self.counts.add(account_id, counter, keys, deltas);
        Ok(())
    }

    fn redact_abandoned(&mut self, account_id: &str, service_id: &str) -> Result<(), StoreError> {
        let rows: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT ended_at, detail FROM analytics_abandoned WHERE account_id = ?1 AND service_id = ?2",
            )?
            .query_map((account_id, service_id), |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (ended_at, detail) in rows {
            self.run(
                "UPDATE analytics_abandoned SET detail = ?1 WHERE account_id = ?2 AND ended_at = ?3 AND service_id = ?4",
                (redacted_detail(&detail)?, account_id, ended_at, service_id),
            )?;
        }
        Ok(())
    }

    fn insert_abandoned(&mut self, account_id: &str, row: AbandonedRow) -> Result<(), StoreError> {
        self.run(
            INSERT_ABANDONED,
            params![
                account_id,
                row.ended_at,
                row.service_id,
                row.service_type,
                row.hour,
                row.media_type,
                row.state_type,
                row.detail
            ],
        )
    }
}
