//! Vantage labels: where an agent probes from (`inside` on the nodes,
//! `outside` for an agent probing public URLs from elsewhere). Shared by the
//! agent (its `vantage` option), the collector (which refuses a bad one) and
//! the alerter (which compares them), so all three agree on the syntax and on
//! what an empty label means.

/// The vantage of nodes' agents, of older agents (which send no label) and
/// of the HTTP `/push`.
pub const INSIDE: &str = "inside";

/// Most bytes of a vantage label.
pub const MAX_VANTAGE_BYTES: usize = 32;

/// Why a string is not a vantage label; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VantageError {
    #[error("{len} bytes, over {MAX_VANTAGE_BYTES}")]
    TooLong { len: usize },
    #[error("{label:?}: character {found:?} not allowed (a-z, 0-9, '_' and '-' only)")]
    BadChar { label: String, found: char },
}

/// Checks a label: `[a-z0-9_-]`, at most [`MAX_VANTAGE_BYTES`]. Empty is
/// valid and means [`INSIDE`].
pub fn check_vantage(label: &str) -> Result<(), VantageError> {
    if label.len() > MAX_VANTAGE_BYTES {
        return Err(VantageError::TooLong { len: label.len() });
    }
    let allowed = |c: &char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-');
    match label.chars().find(|c| !allowed(c)) {
        Some(found) => Err(VantageError::BadChar {
            label: label.into(),
            found,
        }),
        None => Ok(()),
    }
}

/// The label as stored and compared: empty is [`INSIDE`].
pub fn or_inside(label: &str) -> &str {
    if label.is_empty() { INSIDE } else { label }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_lowercase_words() {
        for good in ["", "inside", "outside", "eu-west_2", &"a".repeat(32)] {
            assert_eq!(check_vantage(good), Ok(()), "{good}");
        }
        assert_eq!(
            check_vantage(&"a".repeat(33)),
            Err(VantageError::TooLong { len: 33 })
        );
        for bad in ["Outside", "out side", "é", "a.b"] {
            assert!(
                matches!(check_vantage(bad), Err(VantageError::BadChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_is_inside() {
        assert_eq!(or_inside(""), "inside");
        assert_eq!(or_inside("outside"), "outside");
    }
}
