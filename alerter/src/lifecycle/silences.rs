//! Silences: maintenance windows. A silenced alert is tracked and listed
//! but not notified; when the silence ends, what still fires is notified
//! at its group's next flush.

use serde::{Deserialize, Serialize};

use super::matcher::{Matcher, all_match};
use super::{Alert, KEEP_RESOLVED_MS, Lifecycle, LifecycleError, groups::short_hash};

/// Longest comment and creator name kept; longer ones are refused.
pub const MAX_TEXT: usize = 1024;
/// Matchers of one silence, at most.
pub const MAX_MATCHERS: usize = 32;
/// Silences kept (expired ones included, for a day), at most: a client
/// creating silences in a loop fills this, not the memory.
pub const MAX_SILENCES: usize = 10_000;

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub created_by: String,
    pub comment: String,
    pub created_ms: u64,
}

/// A silence as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    /// `pending` (starts later), `active` or `expired`.
    pub state: &'static str,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Alertmanager-style matchers, all must match; at least one.
    pub matchers: Vec<String>,
    /// Unix ms; default now.
    #[serde(default)]
    pub starts_at_ms: Option<u64>,
    /// Unix ms, after `starts_at_ms` and in the future; or give `duration`.
    #[serde(default)]
    pub ends_at_ms: Option<u64>,
    /// How long from `starts_at_ms` ("2h", "30m"), instead of `ends_at_ms`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why (required).
    pub comment: String,
}

impl Silence {
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    fn view(&self, now_ms: u64) -> SilenceView {
        let state = if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        };
        SilenceView {
            silence: self.clone(),
            state,
        }
    }
}

impl Lifecycle {
    /// Adds a silence by `created_by`; returns it (with its id).
    pub fn add_silence(
        &mut self,
        new: NewSilence,
        created_by: &str,
        now_ms: u64,
    ) -> Result<Silence, LifecycleError> {
        let invalid = |m: &str| Err(LifecycleError::InvalidSilence(m.to_owned()));
        if new.matchers.is_empty() {
            return invalid("`matchers` is empty: a silence must say what it silences");
        }
        if self.silences.len() >= MAX_SILENCES {
            return invalid(&format!(
                "{MAX_SILENCES} silences are kept already; expired ones leave after a day"
            ));
        }
        if new.matchers.len() > MAX_MATCHERS {
            return invalid(&format!("more than {MAX_MATCHERS} matchers"));
        }
        if new.comment.trim().is_empty() {
            return invalid("`comment` is empty: say why");
        }
        if new.comment.len() > MAX_TEXT {
            return invalid(&format!("`comment` is longer than {MAX_TEXT} bytes"));
        }
        let matchers = new
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| LifecycleError::InvalidSilence(err.to_string()))?;
        let starts_at_ms = new.starts_at_ms.unwrap_or(now_ms);
        let ends_at_ms = match (new.ends_at_ms, &new.duration) {
            (Some(ends), None) => ends,
            (None, Some(duration)) => humantime::parse_duration(duration.trim())
                .map(|d| starts_at_ms.saturating_add(super::config::millis(d)))
                .map_err(|err| {
                    LifecycleError::InvalidSilence(format!(
                        "`duration` {duration:?} is not a duration like \"2h\": {err}"
                    ))
                })?,
            _ => return invalid("give either `ends_at_ms` or `duration`"),
        };
        if ends_at_ms <= now_ms {
            return invalid("`ends_at_ms` is in the past");
        }
        if ends_at_ms <= starts_at_ms {
            return invalid("`ends_at_ms` must be after `starts_at_ms`");
        }
        let id = short_hash(&format!(
            "{created_by}|{now_ms}|{}|{:?}|{}",
            self.silences.len(),
            new.matchers,
            new.comment
        ));
        let silence = Silence {
            id,
            matchers,
            starts_at_ms,
            ends_at_ms,
            created_by: created_by.to_owned(),
            comment: new.comment,
            created_ms: now_ms,
        };
        tracing::info!(silence = %silence.id, created_by, "silence added");
        self.silences.push(silence.clone());
        self.touch_all(now_ms);
        self.dirty = true;
        Ok(silence)
    }

    /// Ends a silence now; what it hid is notified at the next flush.
    pub fn expire_silence(&mut self, id: &str, now_ms: u64) -> Result<(), LifecycleError> {
        let silence = self
            .silences
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| LifecycleError::UnknownSilence(id.to_owned()))?;
        if silence.ends_at_ms > now_ms {
            silence.ends_at_ms = now_ms;
            silence.starts_at_ms = silence.starts_at_ms.min(now_ms);
            self.touch_all(now_ms);
            self.dirty = true;
        }
        Ok(())
    }

    /// Every silence kept (expired ones for a day).
    pub fn silences(&self, now_ms: u64) -> Vec<SilenceView> {
        self.silences.iter().map(|s| s.view(now_ms)).collect()
    }

    pub(super) fn is_silenced(&self, alert: &Alert, now_ms: u64) -> bool {
        self.silences
            .iter()
            .any(|s| s.is_active(now_ms) && all_match(&s.matchers, &alert.labels))
    }

    /// Whether a silence started or ended since the last look; moves the
    /// mark to `now_ms`.
    pub(super) fn silence_boundary_passed(&mut self, now_ms: u64) -> bool {
        let since = self.silences_checked_ms;
        self.silences_checked_ms = now_ms;
        self.silences.iter().any(|s| {
            [s.starts_at_ms, s.ends_at_ms]
                .iter()
                .any(|t| since < *t && *t <= now_ms)
        })
    }

    pub(super) fn next_silence_boundary(&self) -> Option<u64> {
        self.silences
            .iter()
            .flat_map(|s| [s.starts_at_ms, s.ends_at_ms])
            .filter(|t| *t > self.silences_checked_ms)
            .min()
    }

    pub(super) fn prune_silences(&mut self, now_ms: u64) {
        let before = self.silences.len();
        self.silences
            .retain(|s| s.ends_at_ms.saturating_add(KEEP_RESOLVED_MS) > now_ms);
        if self.silences.len() != before {
            self.dirty = true;
        }
    }
}
