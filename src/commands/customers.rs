//! Customer profiles, identification keys and journey settings.

use crate::store::db::Connection;

use super::Decision;
use crate::domain::ExpectedVersion;
use crate::domain::events::{customer_stream, journey_settings_stream};
use crate::domain::journeys::customers::{self as domain_customers, CustomerCommand};
use crate::projections;
use crate::store::WriteError;
use crate::store::log;

/// Loads what a customer command is decided against: the profile it leaves, the unique keys
/// it must not break, the existing identification keys; checks `If-Match` on the stream it
/// addresses (the customer's, or `cs/<account>` for keys and settings).
pub(super) fn decide(
    conn: &Connection,
    account: &str,
    expected: ExpectedVersion,
    command: &CustomerCommand,
) -> Result<Decision, WriteError> {
    let stream = match command {
        CustomerCommand::Create { customer_id, .. } | CustomerCommand::Replace { customer_id, .. } => {
            customer_stream(account, customer_id)
        }
        CustomerCommand::DefineIdentificationKey(_) | CustomerCommand::SetJourneySettings(_) => {
            journey_settings_stream(account)
        }
    };
    let version = log::stream_version(conn, &stream)?;
    expected.check(version)?;
    let events = match command {
        CustomerCommand::Create { customer_id, profile }
        | CustomerCommand::Replace { customer_id, profile } => {
            super::refuse_while_erased(conn, account, customer_id)?;
            let old = projections::customers::load_profile(conn, account, customer_id)?;
            let after = match (&old, command) {
                (Some(old), CustomerCommand::Replace { .. }) => {
                    domain_customers::replaced_profile(old, profile)
                }
                _ => profile.clone(),
            };
            let keys = projections::customers::identification_keys(conn, account)?;
            let conflict =
                projections::customers::unique_conflict(conn, account, &keys, &after, customer_id)?;
            let command = match command {
                CustomerCommand::Replace { .. } => {
                    CustomerCommand::Replace { customer_id: customer_id.clone(), profile: after }
                }
                other => other.clone(),
            };
            domain_customers::decide_customer(&command, old.is_some(), conflict.as_deref())?
        }
        CustomerCommand::DefineIdentificationKey(key) => {
            let keys = projections::customers::identification_keys(conn, account)?;
            domain_customers::check_identification_key(key, &keys)?;
            let duplicates = key.unique && projections::customers::has_duplicates(conn, account, key)?;
            domain_customers::decide_customer(command, true, duplicates.then_some(key.name.as_str()))?
        }
        CustomerCommand::SetJourneySettings(_) => domain_customers::decide_customer(command, true, None)?,
    };
    let created = events.iter().find_map(super::created_id);
    Ok(Decision {
        events: super::tag_all(account, events),
        primary: Some((stream, version)),
        created,
        ..Decision::default()
    })
}
