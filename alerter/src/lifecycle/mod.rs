//! What happens to an alert once the rules decided it: states, silences,
//! inhibition, grouping, routing to receivers, and the state that survives
//! a restart.
//!
//! [`Lifecycle`] is pure: no I/O and no clock, every call gets `now_ms`. The
//! caller feeds it the engine's changes ([`Lifecycle::apply`]) and the API's
//! actions, sends what [`Lifecycle::due`] returns, reports deliveries back
//! ([`Lifecycle::delivered`]), ships [`Lifecycle::drain_records`] to the
//! store and saves [`Lifecycle::saved`] when [`Lifecycle::is_dirty`].

pub mod config;
mod groups;
pub mod matcher;
mod records;
mod saved;
mod silences;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use config::{InhibitSpec, RouteSpec, Routing, check};
pub use matcher::{Matcher, MatcherError};
pub use saved::{SavedState, StateError};
pub use silences::{NewSilence, Silence, SilenceView};

use crate::file::RulesFile;
use crate::model::{AlertChange, AlertKey, Condition};
use crate::receivers::Notification;
use groups::Group;
use livehead_proto::v1::Record;

/// How long resolved alerts and expired silences stay listed: a day, so the
/// morning shift sees the night's incidents.
pub const KEEP_RESOLVED_MS: u64 = 24 * 3600 * 1000;

/// How long a notification handed out by `due()` waits for its delivery
/// report before it is forgotten (the report was lost: the dispatcher drops
/// reports when their channel is full). Longer than the longest delivery
/// (6 attempts, waits capped at 5 min).
pub const OUTBOX_MAX_AGE_MS: u64 = 3600 * 1000;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Firing,
    /// Someone took it: listed, not repeated.
    Acknowledged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            State::Pending,
            State::Firing,
            State::Acknowledged,
            State::Resolved,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    fn is_active(self) -> bool {
        matches!(self, State::Firing | State::Acknowledged)
    }
}

/// One tracked alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Alert {
    pub key: AlertKey,
    pub id: String,
    pub state: State,
    /// Start of the pending period, then of firing.
    pub since_ms: u64,
    pub ended_ms: Option<u64>,
    pub changed_ms: u64,
    pub summary: String,
    pub description: Option<String>,
    /// The rule's labels under the key's (`AlertKey::labels` wins).
    pub labels: BTreeMap<String, String>,
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
    /// See [`AlertChange::notice`]; absent from states saved before it.
    #[serde(default)]
    pub notice: bool,
}

/// What the API lists about an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub severity: crate::Severity,
    pub node: Option<String>,
    pub site: Option<String>,
    pub service: Option<String>,
    pub state: State,
    /// Unix ms: start of pending, or of firing.
    pub since_ms: u64,
    pub ended_ms: Option<u64>,
    pub summary: String,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub silenced: bool,
    pub inhibited: bool,
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
}

/// Why an action on the lifecycle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("no alert with id {0:?}")]
    UnknownAlert(String),
    #[error("no silence with id {0:?}")]
    UnknownSilence(String),
    #[error("alert {id:?} is {state}: only a firing alert can be acknowledged")]
    NotFiring { id: String, state: &'static str },
    #[error("alert {0:?} is already resolved")]
    AlreadyResolved(String),
    #[error("silence: {0}")]
    InvalidSilence(String),
    #[error("rules file: {0}")]
    Config(String),
}

/// A notification handed out by `due()` and not yet reported delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    pub receiver: String,
    pub notification: Notification,
    pub handed_ms: u64,
}

/// Alerts, their groups, silences and the outbox; see the module doc.
#[derive(Debug)]
pub struct Lifecycle {
    routing: Routing,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, Group>,
    silences: Vec<Silence>,
    outbox: Vec<Outgoing>,
    /// Outbox entries of the previous run, handed out again by `due()`.
    resend: Vec<(String, Notification)>,
    records: Vec<Record>,
    /// Silence starts and ends up to this time have been applied.
    silences_checked_ms: u64,
    dirty: bool,
}

impl Lifecycle {
    /// Starts from `saved` (the previous run's state) when given: alerts,
    /// groups and silences as they were, and every notification that was
    /// handed out but not reported delivered comes back in the first `due()`.
    pub fn new(
        file: &RulesFile,
        saved: Option<SavedState>,
        now_ms: u64,
    ) -> Result<Self, LifecycleError> {
        let routing = compile(file)?;
        let mut saved = saved.unwrap_or_default();
        // Their wait for a report starts again with this run.
        for outgoing in &mut saved.outbox {
            outgoing.handed_ms = now_ms;
        }
        let resend = saved
            .outbox
            .iter()
            .map(|o| (o.receiver.clone(), o.notification.clone()))
            .collect();
        let mut lifecycle = Lifecycle {
            routing,
            alerts: saved
                .alerts
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
            groups: saved
                .groups
                .into_iter()
                .map(|g| (g.key.clone(), g))
                .collect(),
            silences: saved.silences,
            outbox: saved.outbox,
            resend,
            records: Vec::new(),
            silences_checked_ms: now_ms,
            dirty: false,
        };
        // Routes may have changed while it was down.
        lifecycle.regroup(now_ms);
        Ok(lifecycle)
    }

    /// Takes a new rules file (SIGHUP). Alerts and silences stay; groups are
    /// rebuilt for the new routes, keeping the state of those whose route
    /// and labels are unchanged. On error nothing changes.
    pub fn reload(&mut self, file: &RulesFile, now_ms: u64) -> Result<(), LifecycleError> {
        self.routing = compile(file)?;
        self.regroup(now_ms);
        self.dirty = true;
        Ok(())
    }

    /// Applies the engine's changes, in order.
    pub fn apply(&mut self, changes: &[AlertChange], now_ms: u64) {
        for change in changes {
            self.apply_one(change, now_ms);
        }
    }

    fn apply_one(&mut self, change: &AlertChange, now_ms: u64) {
        let id = change.key.id();
        let previous = self.alerts.get(&id).map(|a| a.state);
        let next = match (previous, change.condition) {
            (None | Some(State::Resolved), Condition::Pending) => State::Pending,
            (None | Some(State::Resolved | State::Pending), Condition::Firing) => State::Firing,
            (Some(State::Pending | State::Firing | State::Acknowledged), Condition::Resolved) => {
                State::Resolved
            }
            // Already there: refresh the text (dedup: nothing is notified).
            (Some(_), _) => {
                if let Some(alert) = self.alerts.get_mut(&id) {
                    refresh(alert, change);
                    self.dirty = true;
                }
                return;
            }
            (None, Condition::Resolved) => return,
        };
        let mut labels = change.labels.clone();
        labels.extend(change.key.labels());
        let alert = self.alerts.entry(id.clone()).or_insert_with(|| Alert {
            key: change.key.clone(),
            id: id.clone(),
            state: next,
            since_ms: change.at_ms,
            ended_ms: None,
            changed_ms: change.at_ms,
            summary: String::new(),
            description: None,
            labels: BTreeMap::new(),
            acknowledged_by: None,
            resolved_by: None,
            notice: change.notice,
        });
        refresh(alert, change);
        alert.notice = change.notice;
        alert.labels = labels;
        alert.changed_ms = change.at_ms;
        match next {
            State::Pending => {
                alert.since_ms = change.at_ms;
                alert.ended_ms = None;
            }
            State::Firing => {
                alert.since_ms = change.at_ms;
                alert.ended_ms = None;
                alert.acknowledged_by = None;
                alert.resolved_by = None;
            }
            _ => alert.ended_ms = Some(change.at_ms),
        }
        alert.state = next;
        self.transition(&id, "", now_ms);
    }

    /// Marks a firing alert acknowledged: it stays listed, is no longer
    /// repeated, and one `Acknowledged` notification goes out now.
    pub fn acknowledge(
        &mut self,
        id: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<(), LifecycleError> {
        let alert = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| LifecycleError::UnknownAlert(id.to_owned()))?;
        match alert.state {
            State::Acknowledged => return Ok(()),
            State::Firing => {}
            state => {
                return Err(LifecycleError::NotFiring {
                    id: id.to_owned(),
                    state: state.as_str(),
                });
            }
        }
        alert.state = State::Acknowledged;
        alert.acknowledged_by = Some(actor.to_owned());
        alert.changed_ms = now_ms;
        self.transition(id, actor, now_ms);
        self.urgent(id, now_ms);
        Ok(())
    }

    /// Resolves an alert by hand (an admin): the resolved notification goes
    /// out now. The rules fire it again only after they see it recover.
    pub fn resolve(&mut self, id: &str, actor: &str, now_ms: u64) -> Result<(), LifecycleError> {
        let alert = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| LifecycleError::UnknownAlert(id.to_owned()))?;
        if alert.state == State::Resolved {
            return Err(LifecycleError::AlreadyResolved(id.to_owned()));
        }
        alert.state = State::Resolved;
        alert.resolved_by = Some(actor.to_owned());
        alert.ended_ms = Some(now_ms);
        alert.changed_ms = now_ms;
        self.transition(id, actor, now_ms);
        self.urgent(id, now_ms);
        Ok(())
    }

    /// Records a transition of alert `id` and schedules what it changes.
    fn transition(&mut self, id: &str, actor: &str, now_ms: u64) {
        self.dirty = true;
        let Some(alert) = self.alerts.get(id) else {
            return;
        };
        // At the change's time: the data's for the rules, now for a person.
        self.records
            .push(records::event(alert, actor, alert.changed_ms));
        if alert.state == State::Firing {
            self.route_alert(id);
        }
        self.touch_alert(id, now_ms);
        // An inhibition source changing state changes what others show.
        if self.is_source(id) {
            self.touch_all(now_ms);
        }
    }

    /// Every alert, for the API (filters are the caller's).
    pub fn alerts(&self, now_ms: u64) -> Vec<AlertView> {
        let sources = self.sources();
        self.alerts
            .values()
            .map(|a| self.view(a, &sources, now_ms))
            .collect()
    }

    /// One alert, for the API.
    pub fn alert(&self, id: &str, now_ms: u64) -> Option<AlertView> {
        let alert = self.alerts.get(id)?;
        Some(self.view(alert, &self.sources(), now_ms))
    }

    fn view(&self, a: &Alert, sources: &[Vec<&Alert>], now_ms: u64) -> AlertView {
        AlertView {
            id: a.id.clone(),
            rule: a.key.rule.clone(),
            severity: a.key.severity,
            node: a.key.node.clone(),
            site: a.key.site.clone(),
            service: a.key.service.clone(),
            state: a.state,
            since_ms: a.since_ms,
            ended_ms: a.ended_ms,
            summary: a.summary.clone(),
            description: a.description.clone(),
            labels: a.labels.clone(),
            silenced: a.state != State::Resolved && self.is_silenced(a, now_ms),
            inhibited: a.state.is_active() && self.is_inhibited(a, sources),
            acknowledged_by: a.acknowledged_by.clone(),
            resolved_by: a.resolved_by.clone(),
        }
    }

    /// The alerts not resolved, so the engine can be restored after a
    /// restart: acknowledged ones are `Firing` to the rules.
    pub fn active(&self) -> impl Iterator<Item = (&AlertKey, Condition, u64)> {
        self.alerts.values().filter_map(|a| {
            let condition = match a.state {
                State::Pending => Condition::Pending,
                State::Firing | State::Acknowledged => Condition::Firing,
                State::Resolved => return None,
            };
            Some((&a.key, condition, a.since_ms))
        })
    }

    /// The records (an `AlertEvent` per transition, an `AlertDelivery` per
    /// delivery attempt) since the last call, for the store.
    pub fn drain_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// Whether anything changed since `mark_saved()`.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// What must survive a restart.
    pub fn saved(&self) -> SavedState {
        SavedState {
            version: saved::VERSION,
            alerts: self.alerts.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            silences: self.silences.clone(),
            outbox: self.outbox.clone(),
            // The service loop adds its heartbeats.
            heartbeats: Vec::new(),
        }
    }

    /// Notifications handed out and not yet reported delivered.
    pub fn in_flight(&self) -> usize {
        self.outbox.len()
    }

    /// Alerts by state, for the metrics gauge.
    pub fn counts(&self) -> BTreeMap<State, usize> {
        let mut counts = BTreeMap::new();
        for alert in self.alerts.values() {
            *counts.entry(alert.state).or_default() += 1;
        }
        counts
    }

    /// Forgets what nobody needs any more: resolved alerts in no group,
    /// after [`KEEP_RESOLVED_MS`]; outbox entries after
    /// [`OUTBOX_MAX_AGE_MS`].
    fn prune(&mut self, now_ms: u64) {
        let outbox = self.outbox.len();
        self.outbox.retain(|o| {
            let keep = o.handed_ms.saturating_add(OUTBOX_MAX_AGE_MS) > now_ms;
            if !keep {
                tracing::warn!(receiver = %o.receiver, id = %o.notification.id, "no delivery report for an hour: notification forgotten");
            }
            keep
        });
        if self.outbox.len() != outbox {
            self.dirty = true;
        }
        let grouped: BTreeSet<&String> = self.groups.values().flat_map(|g| &g.members).collect();
        let before = self.alerts.len();
        let stale: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                a.state == State::Resolved
                    && a.ended_ms
                        .unwrap_or(a.changed_ms)
                        .saturating_add(KEEP_RESOLVED_MS)
                        <= now_ms
                    && !grouped.contains(&a.id)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in stale {
            self.alerts.remove(&id);
        }
        if self.alerts.len() != before {
            self.dirty = true;
        }
    }
}

fn refresh(alert: &mut Alert, change: &AlertChange) {
    alert.summary.clone_from(&change.summary);
    alert.description.clone_from(&change.description);
}

fn compile(file: &RulesFile) -> Result<Routing, LifecycleError> {
    Routing::compile(file).map_err(|err| LifecycleError::Config(err.message))
}
