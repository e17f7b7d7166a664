//! Host-name syntax shared by the agent (which names to probe) and the
//! collector (which names to store): dot-separated labels of ASCII letters,
//! digits, `-` and `_` (web-root directory names use `_`), 1–63 bytes each,
//! 253 bytes in all.

/// Why a string is not a host name; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    #[error("empty")]
    Empty,
    #[error("{len} bytes, over 253")]
    TooLong { len: usize },
    #[error("{name:?}: labels must be 1-63 bytes")]
    BadLabel { name: String },
    #[error("{name:?}: character {found:?} not allowed in a host name")]
    BadChar { name: String, found: char },
}

/// Checks `name` against the host-name syntax above.
pub fn check_host_name(name: &str) -> Result<(), HostNameError> {
    if name.is_empty() {
        return Err(HostNameError::Empty);
    }
    if name.len() > 253 {
        return Err(HostNameError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostNameError::BadLabel { name: name.into() });
        }
        let allowed = |c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_';
        if let Some(found) = label.chars().find(|c| !allowed(c)) {
            return Err(HostNameError::BadChar {
                name: name.into(),
                found,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_the_label_rules() {
        for good in ["example.com", "my_site.co.uk", "a", "xn--bcher-kva.example"] {
            assert_eq!(check_host_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_host_name(""), Err(HostNameError::Empty));
        assert!(matches!(
            check_host_name(&"a".repeat(254)),
            Err(HostNameError::TooLong { len: 254 })
        ));
        assert!(matches!(
            check_host_name("a..b"),
            Err(HostNameError::BadLabel { .. })
        ));
        assert!(matches!(
            check_host_name(&format!("{}.com", "a".repeat(64))),
            Err(HostNameError::BadLabel { .. })
        ));
        let err = check_host_name("bad site.com").expect_err("space");
        assert_eq!(
            err.to_string(),
            "\"bad site.com\": character ' ' not allowed in a host name"
        );
    }
}
