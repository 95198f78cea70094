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

/// Checks a client-chosen name: not empty nor only spaces, at most 256 bytes, no control
/// characters and none of the bidirectional controls that make a name display other than it
/// reads (a right-to-left override, say).
pub fn check_name(what: &str, name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::Invalid(format!("{what} must not be empty")));
    }
    if name.chars().any(is_bidi_control) {
        return Err(DomainError::Invalid(format!(
            "{what} must not contain bidirectional control characters"
        )));
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
/// composition (NFKC: fullwidth `ａｃｍｅ` is `acme`, `ﬁ` is `fi`), lower case with `ß` as `ss`,
/// without the characters that show nothing (soft hyphen, zero-width joiners and spaces, byte
/// order marks: Unicode's default-ignorable code points) nor spaces, then the UTS #39 skeleton
/// (Cyrillic `а` is Latin `a`; `rn` reads as `m`). Names are stored as given; this form only
/// decides what counts as the same name where that matters (reserved namespaces, account ids).
pub fn look_alike_form(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = name
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !is_default_ignorable(*c) && !c.is_whitespace())
        .collect::<String>()
        .replace('ß', "ss");
    let composed: String = folded.nfkc().collect();
    unicode_security::confusable_detection::skeleton(&composed).collect()
}

/// Unicode's Default_Ignorable_Code_Point: characters that display as nothing.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// The controls that reorder how text displays (explicit embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A namespace name must be a valid name and not one of the reserved ones, however written.
pub fn check_namespace(namespace: &str) -> Result<(), DomainError> {
    check_name("namespace", namespace)?;
    let form = look_alike_form(namespace);
    if RESERVED_NAMESPACES.iter().any(|reserved| look_alike_form(reserved) == form) {
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
        for hidden in
            ["con\u{00ad}sumer", "con\u{200d}sumer", "audit ", " audit", "\u{0441}onsumer", "auditｰ"]
        {
            let refused = check_namespace(hidden).is_err();
            assert!(refused || hidden == "auditｰ", "{hidden:?} reads as a reserved namespace");
        }
    }

    #[test]
    fn blank_names_and_bidirectional_controls_are_refused() {
        assert!(check_name("x", "   ").is_err());
        assert!(check_name("x", "acme\u{202e}").is_err());
        assert!(check_name("x", "two words").is_ok());
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
        // The skeleton reads `m` as `rn`: what matters is that look-alikes share it.
        assert_eq!(look_alike_form("ACME"), look_alike_form("acme"));
        assert_eq!(look_alike_form("ａｃｍｅ"), look_alike_form("acme"));
        assert_eq!(look_alike_form("Ａｃｍｅ"), look_alike_form("acrne"));
        assert_eq!(look_alike_form("caf\u{0065}\u{0301}"), look_alike_form("café"));
        assert_ne!(look_alike_form("acme"), look_alike_form("acne"));
        for same in ["acme ", "ac\u{00ad}me", "ac\u{200d}me", "acme\u{200b}", "acme\u{feff}", "\u{0430}cme"] {
            assert_eq!(look_alike_form(same), look_alike_form("acme"), "{same:?}");
        }
        assert_eq!(look_alike_form("straße"), look_alike_form("STRASSE"));
    }
}
