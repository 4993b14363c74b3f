//! Identifiers (gateway, meter, building, agency ids) share one syntax.

/// Longest identifier accepted anywhere in the contract.
pub const MAX_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier `{0}` is longer than {MAX_ID_LEN} characters")]
    TooLong(String),
    #[error("identifier `{0}` has a character other than ASCII letters, digits, `-`, `_`, `.`")]
    BadChar(String),
}

/// An id is 1..=64 characters of ASCII letters, digits, `-`, `_` and `.`, so that it is safe in
/// MQTT topics, file names, URLs and Prometheus labels without escaping.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.chars().take(MAX_ID_LEN).collect::<String>() + "..."));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(IdError::BadChar(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_ids() {
        let cases: &[(&str, bool)] = &[
            ("b1-elec", true),
            ("gw_01.site", true),
            ("", false),
            ("has space", false),
            ("slash/no", false),
            ("ümlaut", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (id, ok) in cases {
            assert_eq!(validate_id(id).is_ok(), *ok, "{id}");
        }
    }
}
