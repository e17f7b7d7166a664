//! Heartbeat checks (issue 12): the alerter decides lateness. One
//! [`Tracker`] per check, fed the watch stream's `HeartbeatCheck` and
//! `HeartbeatPing` records (snapshot, then live); each change of status is
//! a `HeartbeatState` record for the store, and a check going down raises
//! one alert, resolved by its next success, routed like any other.
//!
//! Pure: no I/O and no clock; every call gets `now_ms`. The service loop
//! folds records in with [`Heartbeats::observe`], evaluates with
//! [`Heartbeats::settle`] (once no snapshot is being read) and
//! [`Heartbeats::tick`], sleeps until [`Heartbeats::next_due`], and saves
//! [`Heartbeats::saved`] with the lifecycle's state.

use std::collections::{BTreeMap, BTreeSet};

use livehead_heartbeat::{CheckSpec, LastPing, Status, Tracker, format_ms};
use livehead_proto::v1::record::Kind;
use livehead_proto::v1::{HeartbeatCheck, HeartbeatPing, HeartbeatState, HeartbeatStatus, Record};
use serde::{Deserialize, Serialize};

use crate::model::{AlertChange, AlertKey, Condition};
use crate::receivers::Severity;

/// The rule name of heartbeat alerts (`alertname` to routes and silences).
pub const RULE: &str = "heartbeat";
/// Checks tracked at most; pings of further unknown checks are dropped
/// (the collector refuses pings of checks it does not have, so only a
/// flood of checks reaches it).
pub const MAX_CHECKS: usize = 100_000;

/// `[heartbeats]` of the alerter's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatsConfig {
    /// Severity of the alert a check that goes down raises. Default "error".
    pub severity: Severity,
}

impl Default for HeartbeatsConfig {
    fn default() -> Self {
        Self {
            severity: Severity::Error,
        }
    }
}

/// The parts of a check version the alerter needs, saved with its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub ts_ms: u64,
    pub name: String,
    pub tags: String,
    pub period_s: u64,
    pub cron: String,
    pub tz: String,
    pub grace_s: u64,
    pub paused: bool,
}

impl CheckDef {
    fn of(c: &HeartbeatCheck) -> Self {
        Self {
            ts_ms: c.ts_ms,
            name: c.name.clone(),
            tags: c.tags.clone(),
            period_s: c.period_s,
            cron: c.cron.clone(),
            tz: c.tz.clone(),
            grace_s: c.grace_s,
            paused: c.paused,
        }
    }

    fn spec(&self, check_id: &str) -> Result<CheckSpec, livehead_heartbeat::ScheduleError> {
        CheckSpec::from_record(&HeartbeatCheck {
            ts_ms: self.ts_ms,
            check_id: check_id.to_owned(),
            name: self.name.clone(),
            tags: self.tags.clone(),
            period_s: self.period_s,
            cron: self.cron.clone(),
            tz: self.tz.clone(),
            grace_s: self.grace_s,
            paused: self.paused,
            ..HeartbeatCheck::default()
        })
    }
}

/// One check as saved: its definition (None while only pings were seen),
/// its pings folded, the status last reported, and its alert's key while
/// one is raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCheck {
    pub check_id: String,
    pub def: Option<CheckDef>,
    pub tracker: Tracker,
    pub status: Option<Status>,
    pub alert: Option<AlertKey>,
}

struct Watched {
    def: Option<(CheckDef, CheckSpec)>,
    tracker: Tracker,
    status: Option<Status>,
    alert: Option<AlertKey>,
    /// When the status may change with no ping (cached `next_change`).
    due: Option<u64>,
}

/// Every check's tracker; see the module doc.
pub struct Heartbeats {
    severity: Severity,
    checks: BTreeMap<String, Watched>,
    /// Checks that got a record since the last `settle`.
    touched: BTreeSet<String>,
    /// Deleted checks and the time of their deleting version, so an older
    /// version arriving late does not bring one back (at most MAX_CHECKS).
    deleted: BTreeMap<String, u64>,
    dirty: bool,
}

impl Heartbeats {
    /// Starts from the checks saved by the previous run.
    pub fn new(config: &HeartbeatsConfig, saved: Vec<SavedCheck>) -> Self {
        let mut checks = BTreeMap::new();
        for s in saved {
            let def = s.def.and_then(|d| match d.spec(&s.check_id) {
                Ok(spec) => Some((d, spec)),
                Err(error) => {
                    tracing::warn!(check_id = %s.check_id, %error, "saved heartbeat check no longer valid; waiting for its next version");
                    None
                }
            });
            let watched = Watched {
                def,
                tracker: s.tracker,
                status: s.status,
                alert: s.alert,
                due: None,
            };
            checks.insert(s.check_id, watched);
        }
        let touched = checks.keys().cloned().collect();
        Self {
            severity: config.severity,
            checks,
            touched,
            deleted: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Folds a record in; other kinds are ignored. Nothing is decided
    /// until `settle`.
    pub fn observe(&mut self, record: &Record, changes: &mut Vec<AlertChange>, now_ms: u64) {
        match &record.kind {
            Some(Kind::HeartbeatCheck(c)) => self.check(c, changes, now_ms),
            Some(Kind::HeartbeatPing(p)) => self.ping(p),
            _ => {}
        }
    }

    fn check(&mut self, c: &HeartbeatCheck, changes: &mut Vec<AlertChange>, now_ms: u64) {
        let current_ts = self
            .checks
            .get(&c.check_id)
            .and_then(|w| w.def.as_ref())
            .map(|(d, _)| d.ts_ms);
        let deleted_ts = self.deleted.get(&c.check_id).copied();
        if current_ts.or(deleted_ts).is_some_and(|ts| c.ts_ms < ts) {
            return;
        }
        if c.deleted {
            self.forget(&c.check_id, changes, now_ms);
            self.remember_deleted(&c.check_id, c.ts_ms);
            return;
        }
        let def = CheckDef::of(c);
        let spec = match def.spec(&c.check_id) {
            Ok(spec) => spec,
            Err(error) => {
                tracing::warn!(check_id = %c.check_id, %error, "heartbeat check version refused; the previous one stays");
                return;
            }
        };
        if !self.checks.contains_key(&c.check_id) && self.checks.len() >= MAX_CHECKS {
            tracing::warn!(check_id = %c.check_id, max = MAX_CHECKS, "too many heartbeat checks; this one is not tracked");
            return;
        }
        let w = self
            .checks
            .entry(c.check_id.clone())
            .or_insert_with(Watched::new);
        let was_paused = w.def.as_ref().is_some_and(|(d, _)| d.paused);
        if was_paused && !def.paused {
            // Healthchecks' resume: new until the next ping.
            w.tracker.resume();
        }
        w.def = Some((def, spec));
        self.touched.insert(c.check_id.clone());
        self.dirty = true;
    }

    fn forget(&mut self, check_id: &str, changes: &mut Vec<AlertChange>, now_ms: u64) {
        let Some(w) = self.checks.remove(check_id) else {
            return;
        };
        self.touched.remove(check_id);
        self.dirty = true;
        if let Some(key) = w.alert {
            let name = w.def.map(|(d, _)| d.name).unwrap_or_default();
            changes.push(AlertChange {
                key,
                condition: Condition::Resolved,
                at_ms: now_ms,
                summary: format!("heartbeat {name}: check deleted"),
                description: None,
                labels: BTreeMap::new(),
                notice: false,
            });
        }
    }

    fn remember_deleted(&mut self, check_id: &str, ts_ms: u64) {
        if self.deleted.len() >= MAX_CHECKS {
            let oldest = self
                .deleted
                .iter()
                .min_by_key(|(_, ts)| **ts)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.deleted.remove(&oldest);
            }
        }
        self.deleted.insert(check_id.to_owned(), ts_ms);
    }

    fn ping(&mut self, p: &HeartbeatPing) {
        if self.deleted.contains_key(&p.check_id) {
            return;
        }
        if !self.checks.contains_key(&p.check_id) && self.checks.len() >= MAX_CHECKS {
            return;
        }
        let w = self
            .checks
            .entry(p.check_id.clone())
            .or_insert_with(Watched::new);
        if w.tracker.observe(p).applied {
            self.touched.insert(p.check_id.clone());
            self.dirty = true;
        }
    }

    /// Decides the checks that got records since the last call.
    pub fn settle(
        &mut self,
        now_ms: u64,
        changes: &mut Vec<AlertChange>,
        records: &mut Vec<Record>,
    ) {
        for id in std::mem::take(&mut self.touched) {
            self.evaluate(&id, now_ms, changes, records);
        }
    }

    /// Decides the checks whose status may have changed with time.
    pub fn tick(&mut self, now_ms: u64, changes: &mut Vec<AlertChange>, records: &mut Vec<Record>) {
        let due: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, w)| w.due.is_some_and(|d| d <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.evaluate(&id, now_ms, changes, records);
        }
    }

    /// The next instant a check's status may change with no ping.
    pub fn next_due(&self) -> Option<u64> {
        self.checks.values().filter_map(|w| w.due).min()
    }

    fn evaluate(
        &mut self,
        id: &str,
        now_ms: u64,
        changes: &mut Vec<AlertChange>,
        records: &mut Vec<Record>,
    ) {
        let severity = self.severity;
        let Some(w) = self.checks.get_mut(id) else {
            return;
        };
        let Some((def, spec)) = &w.def else {
            return;
        };
        w.due = w.tracker.next_change(spec, now_ms);
        let status = w.tracker.status(spec, now_ms);
        if w.status == Some(status) {
            return;
        }
        let previous = w.status.replace(status);
        self.dirty = true;
        let reason = w.tracker.reason(spec, now_ms);
        tracing::info!(check_id = id, check = %def.name, status = status.as_str(),
            previous = previous.map_or("", Status::as_str), %reason, "heartbeat check changed");
        records.push(state_record(id, def, status, previous, &reason, now_ms));
        let alert = match status {
            Status::Down if w.alert.is_none() => {
                let key = alert_key(severity, &def.name);
                w.alert = Some(key.clone());
                Some((key, Condition::Firing))
            }
            Status::Up | Status::New | Status::Paused => {
                w.alert.take().map(|key| (key, Condition::Resolved))
            }
            _ => None,
        };
        if let Some((key, condition)) = alert {
            let text = Text {
                status,
                reason: &reason,
                last: w.tracker.last_ping(),
            };
            changes.push(alert_change(id, def, key, condition, &text, now_ms));
        }
    }

    /// Whether anything changed since `mark_saved()`.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// What must survive a restart.
    pub fn saved(&self) -> Vec<SavedCheck> {
        self.checks
            .iter()
            .map(|(id, w)| SavedCheck {
                check_id: id.clone(),
                def: w.def.as_ref().map(|(d, _)| d.clone()),
                tracker: w.tracker.clone(),
                status: w.status,
                alert: w.alert.clone(),
            })
            .collect()
    }

    /// Keys of the alerts raised, which the rules engine must leave alone.
    pub fn is_heartbeat(key: &AlertKey) -> bool {
        key.rule == RULE
    }
}

impl Watched {
    fn new() -> Self {
        Self {
            def: None,
            tracker: Tracker::new(),
            status: None,
            alert: None,
            due: None,
        }
    }
}

fn alert_key(severity: Severity, name: &str) -> AlertKey {
    AlertKey {
        rule: RULE.to_owned(),
        severity,
        node: None,
        site: None,
        service: Some(name.to_owned()),
    }
}

fn state_record(
    id: &str,
    def: &CheckDef,
    status: Status,
    previous: Option<Status>,
    reason: &str,
    now_ms: u64,
) -> Record {
    Record {
        kind: Some(Kind::HeartbeatState(HeartbeatState {
            ts_ms: now_ms,
            check_id: id.to_owned(),
            name: def.name.clone(),
            status: HeartbeatStatus::from(status) as i32,
            previous: previous.map_or(0, |p| HeartbeatStatus::from(p) as i32),
            reason: reason.to_owned(),
        })),
    }
}

/// What an alert's text says.
struct Text<'a> {
    status: Status,
    reason: &'a str,
    last: Option<&'a LastPing>,
}

fn alert_change(
    id: &str,
    def: &CheckDef,
    key: AlertKey,
    condition: Condition,
    text: &Text<'_>,
    now_ms: u64,
) -> AlertChange {
    let how = match text.status {
        Status::Up => "up again",
        Status::Paused => "paused",
        Status::New => "resumed",
        _ => "down",
    };
    let summary = format!("heartbeat {} is {how}: {}", def.name, text.reason);
    let mut labels = BTreeMap::new();
    labels.insert("check_id".to_owned(), id.to_owned());
    labels.insert("check".to_owned(), def.name.clone());
    if !def.tags.is_empty() {
        labels.insert("tags".to_owned(), def.tags.clone());
    }
    AlertChange {
        key,
        condition,
        at_ms: now_ms,
        summary,
        description: text.last.and_then(log_tail),
        labels,
        notice: false,
    }
}

/// The last ping's body (its tail, already bounded by the tracker to
/// `livehead_heartbeat::BODY_TAIL_CHARS`), headed by what the ping was.
fn log_tail(last: &LastPing) -> Option<String> {
    let body = last.body_tail.trim_end();
    if body.is_empty() {
        return None;
    }
    let cut = if last.body_bytes > last.body_tail.len() as u64 {
        " (its end)"
    } else {
        ""
    };
    Some(format!(
        "Last ping's log{cut}, {}:\n{body}",
        format_ms(last.ts_ms)
    ))
}

#[cfg(test)]
mod tests;
