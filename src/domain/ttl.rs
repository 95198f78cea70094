//! The TTL rule of the context store, used by every write that stamps a property.

/// Longest TTL accepted from a client: 100 years, in seconds.
pub const MAX_TTL_SECONDS: u64 = 100 * 366 * 24 * 3600;

use chrono::{DateTime, Duration, Utc};

use super::DomainError;

/// Refuses a TTL longer than `MAX_TTL_SECONDS`; `what` names the field in the message.
pub fn check(what: &str, ttl_second: u64) -> Result<u64, DomainError> {
    if ttl_second > MAX_TTL_SECONDS {
        return Err(DomainError::Invalid(format!("{what} must be at most {MAX_TTL_SECONDS}")));
    }
    Ok(ttl_second)
}

/// When a property written at `now` expires: the session TTL wins over the namespace TTL;
/// a TTL of 0 (or none at all) means the property never expires.
pub fn expires_at(
    now: DateTime<Utc>,
    session_ttl: Option<u64>,
    namespace_ttl: Option<u64>,
) -> Option<DateTime<Utc>> {
    let ttl = session_ttl.or(namespace_ttl).unwrap_or(0);
    if ttl == 0 {
        return None;
    }
    let ttl = Duration::try_seconds(i64::try_from(ttl).ok()?)?;
    now.checked_add_signed(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ttl_wins_over_namespace_ttl_and_zero_means_forever() {
        let now = Utc::now();
        assert_eq!(expires_at(now, None, None), None);
        assert_eq!(expires_at(now, None, Some(10)), Some(now + Duration::seconds(10)));
        assert_eq!(expires_at(now, Some(5), Some(10)), Some(now + Duration::seconds(5)));
        assert_eq!(expires_at(now, Some(0), Some(10)), None);
    }
}
