//! Writing the tables folded in memory into a database (rebuild, verify's scratch copy).

use std::collections::HashMap;

use crate::store::db::{Connection, params};

use super::{MemoryTables, split};
use crate::domain::journeys::customers::attribute_values;
use crate::projections::journeys::ServiceColumns;
use crate::projections::tables::INSERT_ABANDONED;
use crate::store::StoreError;

impl MemoryTables {
    /// Inserts every row into the (empty) projection tables of `conn`, in primary key order.
    pub fn write_to(&self, conn: &Connection) -> Result<(), StoreError> {
        self.write_stream_rows(conn)?;
        self.write_account_rows(conn)
    }

    /// Inserts the rows that belong to one stream each (sessions, namespaces, services,
    /// customers, abandoned journeys) into `conn` and forgets them, keeping the account-wide
    /// ones (accounts, keys, settings, counters, erasures in progress): a fold in stream order
    /// (`projections::fold_into`) stores what it folded this way at a stream's start, when it
    /// has folded enough, and no row it stores is written to again.
    pub fn flush_stream_rows(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.write_stream_rows(conn)?;
        self.namespaces.clear();
        self.session_ttls.clear();
        self.properties.clear();
        self.services.clear();
        self.customers.clear();
        self.abandoned.clear();
        Ok(())
    }

    fn write_stream_rows(&self, conn: &Connection) -> Result<(), StoreError> {
        self.write_sessions_to(conn)?;
        self.write_services_to(conn)?;
        self.write_customers_to(conn)?;
        self.write_abandoned_to(conn)
    }

    fn write_account_rows(&self, conn: &Connection) -> Result<(), StoreError> {
        self.write_accounts_to(conn)?;
        self.write_journey_settings_to(conn)?;
        self.counters.write(conn)
    }

    fn write_abandoned_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(INSERT_ABANDONED)?;
        for (account_id, row) in &self.abandoned {
            insert.execute(params![
                account_id,
                row.ended_at,
                row.service_id,
                row.service_type,
                row.hour,
                row.media_type,
                row.state_type,
                row.detail
            ])?;
        }
        Ok(())
    }

    fn write_services_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO services (account_id, service_id, customer_id, contact_key, started_at, active,
                                   auto_complete_at, expires_at, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        for ((account_id, service_id), doc) in services {
            let c = ServiceColumns::of(doc, conn.dialect());
            insert.execute(params![
                account_id,
                service_id,
                c.customer_id,
                c.contact_key,
                c.started_at,
                c.active,
                c.auto_complete_at,
                c.expires_at,
                c.document
            ])?;
        }
        Ok(())
    }

    fn write_customers_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO customers (account_id, customer_id, profile, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut attributes = Vec::new();
        for ((account_id, customer_id), (profile, created_at)) in &self.customers {
            let text = serde_json::to_string(profile).expect("a profile serializes");
            insert.execute((account_id, customer_id, text, created_at))?;
            for (name, value) in attribute_values(profile) {
                attributes.push((account_id, name, value, customer_id));
            }
        }
        attributes.sort();
        let mut insert = conn.prepare(
            "INSERT INTO customer_attributes (account_id, name, value, customer_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for row in attributes {
            insert.execute(row)?;
        }
        Ok(())
    }

    fn write_journey_settings_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO customer_erasures (account_id, customer_id, started_at, erased_through) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for ((account_id, customer_id), (started_at, erased_through)) in &self.customer_erasures {
            insert.execute(params![account_id, customer_id, started_at, erased_through])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO identification_keys (account_id, name, position, source, attributes, is_unique)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for ((account_id, name), (position, key)) in &self.identification_keys {
            let names = serde_json::to_string(&key.attributes).expect("names serialize");
            insert.execute(params![account_id, name, *position as i64, key.source, names, key.unique])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO journey_settings (account_id, auto_complete_after, abandon_dispositions) VALUES (?1, ?2, ?3)",
        )?;
        for (account_id, settings) in &self.journey_settings {
            let dispositions = settings
                .abandon_dispositions
                .as_ref()
                .map(|list| serde_json::to_string(list).expect("names serialize"));
            insert.execute(params![account_id, settings.auto_complete_after, dispositions])?;
        }
        Ok(())
    }

    fn write_accounts_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO accounts (account_id, created_at, writes_per_second, retention_days) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (account_id, (created_at, writes_per_second, retention_days)) in &self.accounts {
            insert.execute((account_id, created_at, writes_per_second, retention_days))?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO api_keys (key_hash, key_id, account_id, issued_at, revoked_at, name, role)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (hash, key) in &self.api_keys {
            let row = params![
                hash,
                key.key_id,
                key.account_id,
                key.issued_at,
                key.revoked_at,
                key.name,
                key.role.as_str()
            ];
            insert.execute(row)?;
        }
        Ok(())
    }

    fn write_sessions_to(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut insert = conn.prepare(
            "INSERT INTO namespaces (account_id, namespace, created_at, ttl_second, deleting_since)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for ((account_id, namespace), (created_at, ttl, deleting_since)) in &self.namespaces {
            insert.execute(params![account_id, namespace, created_at, ttl, deleting_since])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO session_ttls (account_id, namespace, session_id, ttl_second, ttl_set_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (session, (ttl, set_at)) in sorted(&self.session_ttls) {
            let (account_id, namespace, session_id) = split(session);
            insert.execute(params![account_id, namespace, session_id, ttl, set_at])?;
        }
        let mut insert = conn.prepare(
            "INSERT INTO properties (account_id, namespace, session_id, key, value, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (session, properties) in sorted(&self.properties) {
            let (account_id, namespace, session_id) = split(session);
            for (key, (value, expires_at)) in properties {
                insert.execute(params![account_id, namespace, session_id, key, value, expires_at])?;
            }
        }
        Ok(())
    }
}

/// A hash map's entries in key order.
fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}
