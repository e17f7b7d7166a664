//! What the rules engine hands the lifecycle: alerts named by their dedup
//! key, and the changes of their condition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::receivers::Severity;

/// What identifies one alert; notifications dedup on it. `node` is the
/// name of the agent that reported the data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    pub rule: String,
    pub severity: Severity,
    pub node: Option<String>,
    pub site: Option<String>,
    pub service: Option<String>,
}

impl AlertKey {
    /// Stable over restarts and releases: 16 hex digits of SHA-256 over the
    /// key's fields (PagerDuty's `dedup_key`, the webhook's fingerprint).
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            Some(self.rule.as_str()),
            Some(self.severity.as_str()),
            self.node.as_deref(),
            self.site.as_deref(),
            self.service.as_deref(),
        ] {
            // A field's presence and its length are hashed too, so no two
            // different keys can write the same bytes.
            match part {
                Some(text) => {
                    hash.update([1]);
                    hash.update((text.len() as u64).to_le_bytes());
                    hash.update(text.as_bytes());
                }
                None => hash.update([0]),
            }
        }
        hex::encode(&hash.finalize()[..8])
    }

    /// The labels matchers (routes, silences, inhibition) see besides the
    /// rule's own: `alertname`, `severity`, and `node`, `site`, `service`
    /// when set.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), self.rule.clone());
        labels.insert("severity".to_owned(), self.severity.as_str().to_owned());
        for (name, value) in [
            ("node", &self.node),
            ("site", &self.site),
            ("service", &self.service),
        ] {
            if let Some(value) = value {
                labels.insert(name.to_owned(), value.clone());
            }
        }
        labels
    }
}

/// The condition of an alert as the rules see it. Acknowledgement and
/// manual resolution belong to the lifecycle, not to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Holds, but not yet for long enough (thresholds, `for`).
    Pending,
    Firing,
    /// No longer holds (after `success_threshold`, `keep_firing_for`), or
    /// a pending alert that never fired stopped holding.
    Resolved,
}

/// One change the engine decided.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub key: AlertKey,
    pub condition: Condition,
    /// The time of the data (or of the evaluation, for durations and
    /// missing data) that caused the change, unix ms.
    pub at_ms: u64,
    /// One line saying what is wrong ("shop.example answers 503").
    pub summary: String,
    /// Longer text, e.g. the sites a node alert covers, one per line.
    pub description: Option<String>,
    /// The rule's own labels (`team = "web"`), merged under the key's.
    pub labels: BTreeMap<String, String>,
    /// An event rather than a condition (the watchdog's "app restarted"):
    /// notified once as firing, then resolved quietly by the lifecycle as
    /// soon as that notification is handed out, with no "resolved"
    /// notification. False for every rule's alert.
    pub notice: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(site: Option<&str>, service: Option<&str>) -> AlertKey {
        AlertKey {
            rule: "SiteDown".to_owned(),
            severity: Severity::Critical,
            node: Some("n1".to_owned()),
            site: site.map(str::to_owned),
            service: service.map(str::to_owned),
        }
    }

    #[test]
    fn ids_are_stable_and_tell_fields_apart() {
        assert_eq!(key(Some("a"), None).id(), key(Some("a"), None).id());
        assert_eq!(key(Some("a"), None).id().len(), 16);
        // The same text in a different field is a different alert.
        assert_ne!(key(Some("a"), None).id(), key(None, Some("a")).id());
    }
}
