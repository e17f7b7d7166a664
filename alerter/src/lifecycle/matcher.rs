//! Label matchers as Alertmanager writes them: `label=value`,
//! `label!=value`, `label=~regex`, `label!~regex`. Regexes are anchored at
//! both ends; a label the alert lacks has the value "" (so `site=""`
//! matches alerts without a site).

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Why a matcher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error(
        "matcher {0:?}: expected `label=value`, `label!=value`, `label=~regex` or `label!~regex`"
    )]
    Syntax(String),
    #[error(
        "matcher {text:?}: label {label:?} must be letters, digits and `_`, not starting with a digit"
    )]
    Label { text: String, label: String },
    #[error("matcher {text:?}: bad regex: {reason}")]
    Regex { text: String, reason: String },
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
}

/// One compiled matcher; serialised as the text it was parsed from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Matcher {
    text: String,
    label: String,
    test: Test,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Matcher {
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let syntax = || MatcherError::Syntax(text.to_owned());
        let op_at = text.find(['=', '!']).ok_or_else(syntax)?;
        let label = text[..op_at].trim();
        let rest = &text[op_at..];
        let (op, value) = ["!~", "=~", "!=", "="]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (op, v)))
            .ok_or_else(syntax)?;
        if !is_label(label) {
            return Err(MatcherError::Label {
                text: text.to_owned(),
                label: label.to_owned(),
            });
        }
        let value = unquote(value.trim());
        let regex = || {
            Regex::new(&format!("^(?:{value})$")).map_err(|err| MatcherError::Regex {
                text: text.to_owned(),
                reason: err.to_string(),
            })
        };
        let test = match op {
            "=" => Test::Equal(value.to_owned()),
            "!=" => Test::NotEqual(value.to_owned()),
            "=~" => Test::Matches(regex()?),
            _ => Test::NotMatches(regex()?),
        };
        Ok(Matcher {
            text: text.trim().to_owned(),
            label: label.to_owned(),
            test,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        match &self.test {
            Test::Equal(v) => value == v,
            Test::NotEqual(v) => value != v,
            Test::Matches(re) => re.is_match(value),
            Test::NotMatches(re) => !re.is_match(value),
        }
    }

    /// `(label, value)` when this is an equality matcher.
    pub fn equality(&self) -> Option<(&str, &str)> {
        match &self.test {
            Test::Equal(value) => Some((&self.label, value)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Whether every matcher matches (true for none).
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Matcher {
    type Error = MatcherError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Matcher::parse(&text)
    }
}

impl From<Matcher> for String {
    fn from(matcher: Matcher) -> String {
        matcher.text
    }
}

fn is_label(label: &str) -> bool {
    let mut chars = label.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Alertmanager's matchers may quote the value: `severity="critical"`.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
// Tests may unwrap (house rules): a panic is the test failing.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_four_operators() {
        let l = labels(&[("severity", "critical"), ("node", "n1")]);
        assert!(Matcher::parse("severity=critical").unwrap().matches(&l));
        assert!(
            Matcher::parse("severity = \"critical\"")
                .unwrap()
                .matches(&l)
        );
        assert!(!Matcher::parse("severity!=critical").unwrap().matches(&l));
        assert!(Matcher::parse("node=~n[0-9]").unwrap().matches(&l));
        // Anchored: "n" alone does not match "n1".
        assert!(!Matcher::parse("node=~n").unwrap().matches(&l));
        assert!(Matcher::parse("node!~x.*").unwrap().matches(&l));
        // A missing label is "".
        assert!(Matcher::parse("site=\"\"").unwrap().matches(&l));
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        assert!(matches!(
            Matcher::parse("severity"),
            Err(MatcherError::Syntax(_))
        ));
        assert!(matches!(
            Matcher::parse("1x=a"),
            Err(MatcherError::Label { .. })
        ));
        let err = Matcher::parse("node=~(").unwrap_err();
        assert!(err.to_string().contains("bad regex"), "{err}");
    }
}
