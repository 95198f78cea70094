//! The one rule for names that come from clients: account ids, namespaces, session ids and
//! property keys.

use super::DomainError;

/// Longest accepted name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Namespaces the LivePerson API reserves for its own use, and those whose paths ctxd's own
/// routes take (`/v1/account/{a}/analytics/…`, and `events`, `audit` to come); writing to them is a 400.
pub const RESERVED_NAMESPACES: &[&str] =
    &["consumer", "operational", "conversation", "custom", "sde", "faas", "analytics", "events", "audit"];

/// The session that holds a namespace's own properties.
pub const DEFAULT_SESSION: &str = "__default__";

/// Checks a client-chosen name: not empty, at most 256 bytes, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::Invalid(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(DomainError::Invalid(format!("{what} is longer than {MAX_NAME_BYTES} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::Invalid(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// A client's name in the one form ctxd keeps and compares it in: Unicode NFC, so that `é` sent
/// as `e` and a combining accent (as macOS and some keyboards write it) names the same session
/// as `é` sent whole. Names already in NFC (every ASCII name) come back as they are.
pub fn normal_form(name: String) -> String {
    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
    match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => name,
        _ => name.nfc().collect(),
    }
}

/// The form in which names that must not look alike are compared: Unicode compatibility
/// composition (NFKC: fullwidth `ａｃｍｅ` is `acme`, `ﬁ` is `fi`), then lower case. Names are
/// stored as given; this form only decides what counts as the same name where that matters
/// (reserved namespaces, account ids).
pub fn look_alike_form(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfkc().flat_map(char::to_lowercase).collect::<String>().nfkc().collect()
}

/// A namespace name must be a valid name and not one of the reserved ones, however written.
pub fn check_namespace(namespace: &str) -> Result<(), DomainError> {
    check_name("namespace", namespace)?;
    let form = look_alike_form(namespace);
    if RESERVED_NAMESPACES.contains(&form.as_str()) {
        return Err(DomainError::Invalid(format!("namespace '{namespace}' is reserved")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_refused_when_empty_too_long_or_with_control_characters() {
        assert!(check_name("x", "ok-name_1.2@x").is_ok());
        assert!(check_name("x", "").is_err());
        assert!(check_name("x", &"a".repeat(257)).is_err());
        assert!(check_name("x", &"a".repeat(256)).is_ok());
        assert!(check_name("x", "tab\there").is_err());
    }

    #[test]
    fn reserved_namespaces_are_refused_in_any_case_and_any_look_alike() {
        assert!(check_namespace("Consumer").is_err());
        assert!(check_namespace("faas").is_err());
        assert!(check_namespace("ｃｏｎｓｕｍｅｒ").is_err(), "fullwidth");
        assert!(check_namespace("ＣＯＮＳＵＭＥＲ").is_err(), "fullwidth capitals");
        assert!(check_namespace("ＳＤＥ").is_err());
        assert!(check_namespace("myNamespace").is_ok());
        assert!(check_namespace("consumers").is_ok());
    }

    #[test]
    fn names_are_kept_in_nfc() {
        assert_eq!(normal_form("caf\u{0065}\u{0301}".into()), "café");
        assert_eq!(normal_form("café".into()), "café");
        assert_eq!(normal_form("plain-ascii".into()), "plain-ascii");
        // NFC keeps compatibility forms apart: fullwidth letters are look-alikes, not the same name.
        assert_eq!(normal_form("ａｃｍｅ".into()), "ａｃｍｅ");
    }

    #[test]
    fn look_alikes_share_one_form() {
        assert_eq!(look_alike_form("ACME"), "acme");
        assert_eq!(look_alike_form("ａｃｍｅ"), "acme");
        assert_eq!(look_alike_form("Ａｃｍｅ"), "acme");
        assert_eq!(look_alike_form("caf\u{0065}\u{0301}"), look_alike_form("café"));
        assert_ne!(look_alike_form("acme"), look_alike_form("acne"));
    }
}
