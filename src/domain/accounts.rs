//! Accounts and their API keys: one active key per account at a time.

use super::DomainError;
use super::events::*;
use super::names::check_name;

/// An administrative change to accounts.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    CreateAccount {
        account_id: String,
    },
    /// Issue a key (generated and hashed by the caller) and revoke the previous one.
    IssueApiKey {
        account_id: String,
        key_id: String,
        key_hash: String,
    },
    /// Set the account's own write limit, or (`None`) let the server's default apply.
    SetLimits {
        account_id: String,
        writes_per_second: Option<u32>,
    },
}

/// The highest `writes_per_second` an account may be given.
pub const MAX_WRITES_PER_SECOND: u32 = 1_000_000;

/// What an account command is decided against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    pub exists: bool,
    pub active_key_id: Option<String>,
}

impl AccountCommand {
    pub fn account_id(&self) -> &str {
        match self {
            AccountCommand::CreateAccount { account_id }
            | AccountCommand::IssueApiKey { account_id, .. }
            | AccountCommand::SetLimits { account_id, .. } => account_id,
        }
    }
}

/// Decides an account command.
pub fn decide_account(state: &AccountState, command: &AccountCommand) -> Result<Vec<Event>, DomainError> {
    check_name("account id", command.account_id())?;
    match command {
        AccountCommand::CreateAccount { account_id } => {
            if state.exists {
                return Err(DomainError::Conflict(format!("account '{account_id}' already exists")));
            }
            Ok(vec![Event::AccountCreated(AccountCreated { account_id: account_id.clone() })])
        }
        AccountCommand::IssueApiKey { account_id, key_id, key_hash } => {
            if !state.exists {
                return Err(DomainError::NotFound(format!("account '{account_id}'")));
            }
            let mut events = vec![];
            if let Some(previous) = &state.active_key_id {
                events.push(Event::ApiKeyRevoked(ApiKeyRevoked {
                    account_id: account_id.clone(),
                    key_id: previous.clone(),
                }));
            }
            events.push(Event::ApiKeyIssued(ApiKeyIssued {
                account_id: account_id.clone(),
                key_id: key_id.clone(),
                key_hash: key_hash.clone(),
            }));
            Ok(events)
        }
        AccountCommand::SetLimits { account_id, writes_per_second } => {
            if !state.exists {
                return Err(DomainError::NotFound(format!("account '{account_id}'")));
            }
            if writes_per_second.is_some_and(|rate| !(1..=MAX_WRITES_PER_SECOND).contains(&rate)) {
                return Err(DomainError::Invalid(format!(
                    "writes_per_second must be from 1 to {MAX_WRITES_PER_SECOND}, or null for the server's default"
                )));
            }
            let limits =
                AccountLimitsSet { account_id: account_id.clone(), writes_per_second: *writes_per_second };
            Ok(vec![Event::AccountLimitsSet(limits)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuing_a_key_revokes_the_active_one() {
        let state = AccountState { exists: true, active_key_id: Some("old".into()) };
        let command = AccountCommand::IssueApiKey {
            account_id: "a".into(),
            key_id: "new".into(),
            key_hash: "h".into(),
        };
        let types: Vec<_> = decide_account(&state, &command).unwrap().iter().map(Event::event_type).collect();
        assert_eq!(types, ["ApiKeyRevoked", "ApiKeyIssued"]);
    }

    #[test]
    fn an_account_cannot_be_created_twice_nor_keyed_before_it_exists() {
        let create = AccountCommand::CreateAccount { account_id: "a".into() };
        assert!(matches!(
            decide_account(&AccountState { exists: true, active_key_id: None }, &create),
            Err(DomainError::Conflict(_))
        ));
        let issue =
            AccountCommand::IssueApiKey { account_id: "a".into(), key_id: "k".into(), key_hash: "h".into() };
        assert!(matches!(decide_account(&AccountState::default(), &issue), Err(DomainError::NotFound(_))));
    }
}
