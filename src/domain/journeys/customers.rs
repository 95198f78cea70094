//! Customer profiles, identification keys and the account's journey settings.
//!
//! A profile is a JSON object: a value that is a scalar or an array of scalars is an
//! attribute (an array is multi-valued, its first item the primary value); an object or an
//! array of objects is an extension. Identification keys name the attributes that identify
//! a customer; a unique key refuses a second customer with the same values (409).

use serde_json::{Map, Value};

use super::events::{CustomerCreated, CustomerReplaced, IdentificationKeyDefined, JourneySettingsSet};
use crate::domain::events::{JsonText, Properties};
use crate::domain::names::check_name;
use crate::domain::{DomainError, Event};

/// Largest profile, and largest sum of a service's extensions, in characters of compact JSON:
/// the context store's document limit, so that no single row makes the writer slow for everyone.
pub const MAX_DOCUMENT_CHARS: usize = 800_000;

/// Characters of a profile's values (names included), as stored.
fn profile_chars(profile: &Properties) -> usize {
    profile.iter().map(|(name, value)| name.len() + value.as_str().len()).sum()
}

/// Longest identification key name, and most attributes in one key.
const MAX_KEY_NAME: usize = 26;
const MAX_KEY_ATTRIBUTES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    Create {
        customer_id: String,
        profile: Properties,
    },
    /// PUT: the attributes are replaced; extensions given replace theirs, others stay.
    Replace {
        customer_id: String,
        profile: Properties,
    },
    DefineIdentificationKey(IdentificationKeyDefined),
    SetJourneySettings(JourneySettingsSet),
}

/// Whether a profile value is an extension (an object, or an array of objects).
pub fn is_extension(value: &Value) -> bool {
    match value {
        Value::Object(_) => true,
        Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_object),
        _ => false,
    }
}

/// Checks a profile body: names, no nulls, no `customer_id` (the server assigns it).
pub fn parse_profile(object: Map<String, Value>) -> Result<Properties, DomainError> {
    let mut profile = Properties::new();
    for (name, value) in object {
        check_name("attribute name", &name)?;
        if name == "customer_id" {
            return Err(DomainError::Invalid("customer_id is assigned by the server".into()));
        }
        let scalar = |v: &Value| !(v.is_object() || v.is_array() || v.is_null());
        let valid = match &value {
            Value::Array(items) => items.iter().all(scalar) || is_extension(&value),
            other => scalar(other) || other.is_object(),
        };
        if !valid {
            return Err(DomainError::Invalid(format!(
                "{name} must be a string, number or boolean, an array of them, an object or an array of objects"
            )));
        }
        profile.insert(name, JsonText::from_value(&value));
    }
    Ok(profile)
}

/// The profile after a PUT of `given` over `old`: attributes are `given`'s; extensions are
/// `old`'s, each replaced by `given`'s of the same name.
pub fn replaced_profile(old: &Properties, given: &Properties) -> Properties {
    let kept = old.iter().filter(|(name, value)| is_extension(&parse(value)) && !given.contains_key(*name));
    kept.map(|(name, value)| (name.clone(), value.clone())).chain(given.clone()).collect()
}

fn parse(value: &JsonText) -> Value {
    serde_json::from_str(value.as_str()).expect("stored JSON parses")
}

/// The indexable values of a profile, as (name, value) pairs: `Attr` for attributes, and
/// `Extension.Attr` for the scalar attributes of extensions. Strings are indexed as their
/// content, other scalars as their JSON text.
pub fn attribute_values(profile: &Properties) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, value) in profile {
        let value = parse(value);
        match value {
            Value::Object(object) => push_object(&mut pairs, name, &object),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(object) => push_object(&mut pairs, name, &object),
                        scalar => pairs.push((name.clone(), scalar_text(&scalar))),
                    }
                }
            }
            scalar => pairs.push((name.clone(), scalar_text(&scalar))),
        }
    }
    pairs.sort();
    pairs.dedup();
    pairs
}

fn push_object(pairs: &mut Vec<(String, String)>, extension: &str, object: &Map<String, Value>) {
    for (attribute, value) in object {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values.into_iter().filter(|v| !(v.is_object() || v.is_array() || v.is_null())) {
            pairs.push((format!("{extension}.{attribute}"), scalar_text(value)));
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The index names of a key's attributes: `Attr` for profile keys, `Extension.Attr` otherwise.
pub fn key_index_names(key: &IdentificationKeyDefined) -> Vec<String> {
    key.attributes
        .iter()
        .map(
            |attribute| {
                if key.source == "profile" {
                    attribute.clone()
                } else {
                    format!("{}.{attribute}", key.source)
                }
            },
        )
        .collect()
}

/// Checks a new identification key against the account's existing ones.
pub fn check_identification_key(
    key: &IdentificationKeyDefined,
    existing: &[IdentificationKeyDefined],
) -> Result<(), DomainError> {
    let name_ok = key.name.len() <= MAX_KEY_NAME
        && key.name.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(DomainError::Invalid(format!(
            "name must be 1 to {MAX_KEY_NAME} letters, digits or underscores, starting with a letter"
        )));
    }
    if key.attributes.is_empty() || key.attributes.len() > MAX_KEY_ATTRIBUTES {
        return Err(DomainError::Invalid(format!("attributes must list 1 to {MAX_KEY_ATTRIBUTES} names")));
    }
    for attribute in &key.attributes {
        check_name("attribute name", attribute)?;
    }
    check_name("source", &key.source)?;
    if existing.iter().any(|other| other.name.eq_ignore_ascii_case(&key.name)) {
        return Err(DomainError::Conflict(format!("identification key {} already exists", key.name)));
    }
    Ok(())
}

/// Decides a customer command. `exists` says whether the addressed profile exists; `profile`
/// is the profile the command leaves (for create and replace); `conflict` names a unique
/// identification key another customer already holds these values of.
pub fn decide_customer(
    command: &CustomerCommand,
    exists: bool,
    conflict: Option<&str>,
) -> Result<Vec<Event>, DomainError> {
    if let Some(key) = conflict {
        return Err(DomainError::Conflict(format!(
            "another customer has the same values of the unique identification key {key}"
        )));
    }
    if let CustomerCommand::Create { profile, .. } | CustomerCommand::Replace { profile, .. } = command
        && profile_chars(profile) > MAX_DOCUMENT_CHARS
    {
        return Err(DomainError::DocumentTooLarge);
    }
    Ok(match command {
        CustomerCommand::Create { customer_id, profile } => {
            if exists {
                return Err(DomainError::Conflict(format!("customer {customer_id} already exists")));
            }
            vec![Event::CustomerCreated(CustomerCreated {
                customer_id: customer_id.clone(),
                profile: profile.clone(),
            })]
        }
        CustomerCommand::Replace { customer_id, profile } => {
            if !exists {
                return Err(DomainError::NotFound(format!("customer {customer_id}")));
            }
            vec![Event::CustomerReplaced(CustomerReplaced {
                customer_id: customer_id.clone(),
                profile: profile.clone(),
            })]
        }
        CustomerCommand::DefineIdentificationKey(key) => vec![Event::IdentificationKeyDefined(key.clone())],
        CustomerCommand::SetJourneySettings(settings) => {
            settings.auto_complete_after.map(super::fields::check_auto_complete_after).transpose()?;
            vec![Event::JourneySettingsSet(settings.clone())]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(value: Value) -> Properties {
        parse_profile(value.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn attributes_and_extension_attributes_are_indexed() {
        let p = profile(json!({
            "LastName": "Doe", "EmailAddress": ["a@x.org", "b@x.org"], "Age": 40,
            "Phones": [{"PhoneNumber": "555"}, {"PhoneNumber": "556"}], "Pref": {"Lang": "fr"}
        }));
        let values = attribute_values(&p);
        for pair in
            [("Age", "40"), ("EmailAddress", "b@x.org"), ("Phones.PhoneNumber", "556"), ("Pref.Lang", "fr")]
        {
            assert!(values.contains(&(pair.0.into(), pair.1.into())), "{pair:?} in {values:?}");
        }
    }

    #[test]
    fn a_put_replaces_attributes_and_only_the_extensions_it_names() {
        let old = profile(json!({"FirstName": "Ann", "Pref": {"Lang": "fr"}, "Notes": {"a": 1}}));
        let given = profile(json!({"LastName": "Lee", "Notes": {"b": 2}}));
        let after = replaced_profile(&old, &given);
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            json!({"LastName": "Lee", "Notes": {"b": 2}, "Pref": {"Lang": "fr"}})
        );
    }

    #[test]
    fn nulls_nested_arrays_and_customer_id_are_refused() {
        for body in [
            json!({"a": null}),
            json!({"a": [[1]]}),
            json!({"customer_id": "x"}),
            json!({"a": [1, {"b": 2}]}),
        ] {
            assert!(parse_profile(body.as_object().unwrap().clone()).is_err(), "{body}");
        }
    }
}
