//! What the admin API lists about each watched app: its phase and
//! counters, published by the app's task and read by the HTTP handlers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::state::{AppPhase, AppState};

/// One app as `GET /watchdog/apps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub state: AppPhase,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Recoveries in a row that did not bring the app back.
    pub failed_recoveries: u32,
    /// Since the watchdog (re)started: checks run, checks failed,
    /// recoveries started, recoveries that brought the app back.
    pub checks: u64,
    pub checks_failed: u64,
    pub recoveries: u64,
    pub recovered: u64,
    /// The last check, unix ms (0: none yet).
    pub last_check_ms: u64,
    /// The last failed check's reason.
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    status: AppStatus,
    state: Option<AppState>,
}

/// The statuses of one running watchdog, by app name.
#[derive(Debug, Clone, Default)]
pub struct Statuses(Arc<Mutex<BTreeMap<String, Entry>>>);

impl Statuses {
    /// Every app, in name order, with its phase at `now`.
    pub fn list(&self, now: Instant) -> Vec<AppStatus> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        map.values().map(|e| Self::view(e, now)).collect()
    }

    /// One app, if watched.
    pub fn get(&self, name: &str, now: Instant) -> Option<AppStatus> {
        let map = self.0.lock().ok()?;
        map.get(name).map(|e| Self::view(e, now))
    }

    /// The names of the apps exhausted at `now`.
    pub fn exhausted(&self, now: Instant) -> Vec<String> {
        self.list(now)
            .into_iter()
            .filter(|s| s.state == AppPhase::Exhausted)
            .map(|s| s.name)
            .collect()
    }

    fn view(entry: &Entry, now: Instant) -> AppStatus {
        let mut status = entry.status.clone();
        if let Some(state) = &entry.state {
            status.state = state.phase(now);
            status.consecutive_failures = state.consecutive_failures();
            status.failed_recoveries = state.failed_recoveries();
        }
        status
    }

    /// Changes `name`'s counters (creating its entry).
    pub(super) fn publish(&self, name: &str, change: impl FnOnce(&mut AppStatus)) {
        let Ok(mut map) = self.0.lock() else { return };
        let entry = map.entry(name.to_owned()).or_insert_with(|| Entry {
            status: AppStatus {
                name: name.to_owned(),
                state: AppPhase::Watching,
                consecutive_failures: 0,
                failed_recoveries: 0,
                checks: 0,
                checks_failed: 0,
                recoveries: 0,
                recovered: 0,
                last_check_ms: 0,
                last_failure: None,
            },
            state: None,
        });
        change(&mut entry.status);
    }

    pub(super) fn set_state(&self, name: &str, state: &AppState) {
        self.publish(name, |_| {});
        if let Ok(mut map) = self.0.lock()
            && let Some(entry) = map.get_mut(name)
        {
            entry.state = Some(state.clone());
        }
    }

    pub(super) fn checked(&self, name: &str, failure: Option<&String>) {
        self.publish(name, |s| {
            s.checks += 1;
            s.last_check_ms = unix_ms();
            if let Some(reason) = failure {
                s.checks_failed += 1;
                s.last_failure = Some(reason.clone());
            }
        });
    }
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::watchdog::state::Limits;

    #[test]
    fn statuses_follow_the_state_and_count_checks() {
        let statuses = Statuses::default();
        let mut state = AppState::new(Limits {
            failure_threshold: 1,
            cooldown: Duration::from_secs(60),
            max_recoveries: 1,
            settle: Duration::ZERO,
        });
        let t0 = Instant::now();
        statuses.set_state("web", &state);
        statuses.checked("web", Some(&"port closed".to_owned()));
        state.on_check(t0, false);
        state.recovery_finished(t0);
        state.on_check(t0, false);
        statuses.set_state("web", &state);
        let web = statuses.get("web", t0).expect("listed");
        assert_eq!(web.state, AppPhase::Exhausted);
        assert_eq!((web.checks, web.checks_failed), (1, 1));
        assert_eq!(web.last_failure.as_deref(), Some("port closed"));
        assert_eq!(statuses.exhausted(t0), ["web"]);
        assert!(statuses.get("db", t0).is_none());
    }
}
