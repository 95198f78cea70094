//! Accounts and their API keys: named keys, each with a role, several active at once.

use std::collections::BTreeMap;

use super::DomainError;
use super::events::*;
use super::names::check_name;

/// An administrative change to accounts.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    CreateAccount {
        account_id: String,
    },
    /// Issue a key (generated and hashed by the caller) named `name`. With `replace`, an active
    /// key of that name is revoked first (the LivePerson-compatible `api-key` call); without,
    /// an active key of that name is a conflict.
    IssueApiKey {
        account_id: String,
        key_id: String,
        key_hash: String,
        name: String,
        role: Role,
        replace: bool,
    },
    /// Revoke the active key named `name`.
    RevokeApiKey {
        account_id: String,
        name: String,
    },
    /// Set the account's own write limit, or (`None`) let the server's default apply.
    SetLimits {
        account_id: String,
        writes_per_second: Option<u32>,
    },
    /// Set how many days of the account's log stay live (older events are archived by the
    /// sweeper), or (`None`) keep everything.
    SetRetention {
        account_id: String,
        days: Option<u32>,
    },
}

/// The longest retention an account may be given, in days (a hundred years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// The highest `writes_per_second` an account may be given.
pub const MAX_WRITES_PER_SECOND: u32 = 1_000_000;

/// The most characters a key's name has.
pub const MAX_KEY_NAME: usize = 64;

/// What an account command is decided against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    pub exists: bool,
    /// An existing account whose id looks like this one (`names::look_alike_form`): `ACME` or
    /// `ａｃｍｅ` beside `acme`. Loaded for `CreateAccount` only.
    pub look_alike: Option<String>,
    /// The account's active keys: name → key id.
    pub active_keys: BTreeMap<String, String>,
}

impl AccountCommand {
    /// The LivePerson-compatible key issue (`POST …/api-key`, `ctxd admin issue-key`): the
    /// account's `default` key, able to do everything, replacing the active one.
    pub fn issue_default_key(account_id: &str, key_id: &str, key_hash: &str) -> AccountCommand {
        AccountCommand::IssueApiKey {
            account_id: account_id.to_string(),
            key_id: key_id.to_string(),
            key_hash: key_hash.to_string(),
            name: DEFAULT_KEY_NAME.to_string(),
            role: Role::Write,
            replace: true,
        }
    }

    pub fn account_id(&self) -> &str {
        match self {
            AccountCommand::CreateAccount { account_id }
            | AccountCommand::IssueApiKey { account_id, .. }
            | AccountCommand::RevokeApiKey { account_id, .. }
            | AccountCommand::SetLimits { account_id, .. }
            | AccountCommand::SetRetention { account_id, .. } => account_id,
        }
    }
}

/// A key's name: 1 to 64 of lower-case ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or a digit, so that the actor it becomes (`key:<name>`) reads the same to everyone
/// (no `Bot-7` beside `bot-7`, no `..` in a path).
pub fn check_key_name(name: &str) -> Result<(), DomainError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    let starts = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !starts || name.len() > MAX_KEY_NAME || !name.chars().all(allowed) {
        return Err(DomainError::Invalid(format!(
            "a key's name is 1 to {MAX_KEY_NAME} lower-case ASCII letters, digits, '-', '_' or '.', \
             starting with a letter or a digit"
        )));
    }
    Ok(())
}

/// Decides an account command.
pub fn decide_account(state: &AccountState, command: &AccountCommand) -> Result<Vec<Event>, DomainError> {
    check_name("account id", command.account_id())?;
    let exists = |account_id: &str| {
        if state.exists { Ok(()) } else { Err(DomainError::NotFound(format!("account '{account_id}'"))) }
    };
    match command {
        AccountCommand::CreateAccount { account_id } => {
            if state.exists {
                return Err(DomainError::Conflict(format!("account '{account_id}' already exists")));
            }
            if let Some(existing) = &state.look_alike {
                return Err(DomainError::Conflict(format!(
                    "account '{account_id}' would look like the existing account '{existing}'; \
                     account ids are compared ignoring case and character width"
                )));
            }
            Ok(vec![Event::AccountCreated(AccountCreated { account_id: account_id.clone() })])
        }
        AccountCommand::IssueApiKey { account_id, key_id, key_hash, name, role, replace } => {
            exists(account_id)?;
            check_key_name(name)?;
            if name == DEFAULT_KEY_NAME && !replace {
                return Err(DomainError::Invalid(format!(
                    "the name '{DEFAULT_KEY_NAME}' is the key of POST /admin/accounts/{{id}}/api-key; choose another"
                )));
            }
            let mut events = vec![];
            if let Some(previous) = state.active_keys.get(name) {
                if !replace {
                    return Err(DomainError::Conflict(format!(
                        "account '{account_id}' has an active key named '{name}': revoke it first"
                    )));
                }
                events.push(Event::ApiKeyRevoked(ApiKeyRevoked {
                    account_id: account_id.clone(),
                    key_id: previous.clone(),
                    name: name.clone(),
                }));
            }
            events.push(Event::ApiKeyIssued(ApiKeyIssued {
                account_id: account_id.clone(),
                key_id: key_id.clone(),
                key_hash: key_hash.clone(),
                name: name.clone(),
                role: *role,
            }));
            Ok(events)
        }
        AccountCommand::RevokeApiKey { account_id, name } => {
            exists(account_id)?;
            let key_id = state.active_keys.get(name).ok_or_else(|| {
                DomainError::NotFound(format!("an active key named '{name}' in account '{account_id}'"))
            })?;
            Ok(vec![Event::ApiKeyRevoked(ApiKeyRevoked {
                account_id: account_id.clone(),
                key_id: key_id.clone(),
                name: name.clone(),
            })])
        }
        AccountCommand::SetLimits { account_id, writes_per_second } => {
            exists(account_id)?;
            if writes_per_second.is_some_and(|rate| !(1..=MAX_WRITES_PER_SECOND).contains(&rate)) {
                return Err(DomainError::Invalid(format!(
                    "writes_per_second must be from 1 to {MAX_WRITES_PER_SECOND}, or null for the server's default"
                )));
            }
            let limits =
                AccountLimitsSet { account_id: account_id.clone(), writes_per_second: *writes_per_second };
            Ok(vec![Event::AccountLimitsSet(limits)])
        }
        AccountCommand::SetRetention { account_id, days } => {
            exists(account_id)?;
            if days.is_some_and(|days| !(1..=MAX_RETENTION_DAYS).contains(&days)) {
                return Err(DomainError::Invalid(format!(
                    "days must be from 1 to {MAX_RETENTION_DAYS}, or null to keep everything"
                )));
            }
            Ok(vec![Event::RetentionSet(crate::domain::events::RetentionSet {
                account_id: account_id.clone(),
                days: *days,
            })])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(name: &str, replace: bool) -> AccountCommand {
        AccountCommand::IssueApiKey {
            account_id: "a".into(),
            key_id: "new".into(),
            key_hash: "h".into(),
            name: name.into(),
            role: Role::Read,
            replace,
        }
    }

    fn with_keys(keys: &[(&str, &str)]) -> AccountState {
        let active_keys = keys.iter().map(|(name, id)| (name.to_string(), id.to_string())).collect();
        AccountState { exists: true, active_keys, look_alike: None }
    }

    #[test]
    fn replacing_a_key_revokes_the_active_one_of_that_name_only() {
        let state = with_keys(&[("default", "old"), ("bot-7", "b7")]);
        let events = decide_account(&state, &issue("default", true)).unwrap();
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(types, ["ApiKeyRevoked", "ApiKeyIssued"]);
        assert!(matches!(&events[0], Event::ApiKeyRevoked(revoked) if revoked.key_id == "old"));
    }

    #[test]
    fn a_second_active_key_of_one_name_is_a_conflict_and_names_are_checked() {
        let state = with_keys(&[("bot-7", "b7")]);
        assert!(matches!(decide_account(&state, &issue("bot-7", false)), Err(DomainError::Conflict(_))));
        assert_eq!(decide_account(&state, &issue("bot-8", false)).unwrap().len(), 1);
        for bad in ["", "bot 7", "bot/7", "ｂｏｔ", "Bot-7", ".", "..", "-x", "default", &"x".repeat(65)] {
            assert!(
                matches!(decide_account(&state, &issue(bad, false)), Err(DomainError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn revoking_needs_an_active_key_of_that_name() {
        let state = with_keys(&[("bot-7", "b7")]);
        let revoke = |name: &str| AccountCommand::RevokeApiKey { account_id: "a".into(), name: name.into() };
        let events = decide_account(&state, &revoke("bot-7")).unwrap();
        assert!(matches!(&events[..], [Event::ApiKeyRevoked(revoked)] if revoked.key_id == "b7"));
        assert!(matches!(decide_account(&state, &revoke("bot-8")), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn an_account_that_looks_like_another_is_a_conflict() {
        let create = AccountCommand::CreateAccount { account_id: "ＡＣＭＥ".into() };
        let state = AccountState { look_alike: Some("acme".into()), ..AccountState::default() };
        assert!(matches!(decide_account(&state, &create), Err(DomainError::Conflict(_))));
        assert!(decide_account(&AccountState::default(), &create).is_ok());
    }

    #[test]
    fn an_account_cannot_be_created_twice_nor_keyed_before_it_exists() {
        let create = AccountCommand::CreateAccount { account_id: "a".into() };
        assert!(matches!(decide_account(&with_keys(&[]), &create), Err(DomainError::Conflict(_))));
        assert!(matches!(
            decide_account(&AccountState::default(), &issue("default", true)),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn version_1_key_events_read_as_the_default_key_with_every_right() {
        let issued =
            Event::decode("ApiKeyIssued", r#"{"account_id":"a","key_id":"k","key_hash":"h"}"#).unwrap();
        assert!(matches!(issued, Event::ApiKeyIssued(e) if e.name == "default" && e.role == Role::Write));
        let revoked = Event::decode("ApiKeyRevoked", r#"{"account_id":"a","key_id":"k"}"#).unwrap();
        assert!(matches!(revoked, Event::ApiKeyRevoked(e) if e.name == "default"));
    }
}
