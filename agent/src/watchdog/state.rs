//! The per-app decision logic, pure: check outcomes and times go in,
//! decisions come out, so loop protection is tested without processes.

use std::time::{Duration, Instant};

use super::config::AppConfig;

/// What the runner must do after telling the machine something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep checking at the app's interval.
    Nothing,
    /// Run the recovery steps now, then call [`AppState::recovery_finished`].
    Recover { attempt: u32 },
    /// Check again at `at` (after `settle`): that check says whether the
    /// recovery worked.
    Verify { at: Instant },
    /// The recovery brought the app back.
    Recovered { attempt: u32 },
    /// The recovery did not bring the app back; more may follow.
    RecoveryFailed { attempt: u32 },
    /// `max_recoveries` recoveries in a row failed: the machine stops
    /// acting until [`AppState::rearm`].
    Exhausted { attempts: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watching,
    /// Recovery steps running.
    Recovering,
    /// Recovery done; the first check at or after `until` verifies it.
    Settling {
        until: Instant,
    },
    Exhausted,
}

/// An app's phase as the admin API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppPhase {
    Watching,
    /// Steps running, or waiting for `settle` before the verifying check.
    Recovering,
    Cooldown,
    Exhausted,
}

/// The loop-protection parameters of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub max_recoveries: u32,
    pub settle: Duration,
}

impl From<&AppConfig> for Limits {
    fn from(c: &AppConfig) -> Self {
        Self {
            failure_threshold: c.failure_threshold.max(1),
            cooldown: c.cooldown,
            max_recoveries: c.max_recoveries.max(1),
            settle: c.settle,
        }
    }
}

/// One app's state.
#[derive(Debug, Clone)]
pub struct AppState {
    limits: Limits,
    phase: Phase,
    consecutive_failures: u32,
    /// Recoveries in a row whose verification failed; a healthy check
    /// (verified or not) resets it, since the app was back.
    failed_recoveries: u32,
    last_recovery: Option<Instant>,
}

impl AppState {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            phase: Phase::Watching,
            consecutive_failures: 0,
            failed_recoveries: 0,
            last_recovery: None,
        }
    }

    /// True once exhausted, until [`Self::rearm`].
    pub fn is_exhausted(&self) -> bool {
        self.phase == Phase::Exhausted
    }

    /// Where the app stands at `now`, for the admin API. `Cooldown`: a
    /// check failed (or a recovery did not work) and the next recovery
    /// waits for the cooldown since the last one.
    pub fn phase(&self, now: Instant) -> AppPhase {
        match self.phase {
            Phase::Exhausted => AppPhase::Exhausted,
            Phase::Recovering | Phase::Settling { .. } => AppPhase::Recovering,
            Phase::Watching => {
                let cooling = self
                    .last_recovery
                    .is_some_and(|at| now.saturating_duration_since(at) < self.limits.cooldown);
                if cooling && self.consecutive_failures > 0 {
                    AppPhase::Cooldown
                } else {
                    AppPhase::Watching
                }
            }
        }
    }

    /// Failed checks in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Recoveries in a row that did not bring the app back.
    pub fn failed_recoveries(&self) -> u32 {
        self.failed_recoveries
    }

    /// A check finished at `now`.
    pub fn on_check(&mut self, now: Instant, healthy: bool) -> Decision {
        match self.phase {
            // A check while steps run or before settle ends says nothing
            // about the recovery; the runner does not send one.
            Phase::Exhausted | Phase::Recovering => Decision::Nothing,
            Phase::Settling { until } if now < until => Decision::Nothing,
            Phase::Settling { .. } => self.verify(healthy),
            Phase::Watching => self.watch(now, healthy),
        }
    }

    /// The recovery steps ended (whatever their outcome) at `now`.
    pub fn recovery_finished(&mut self, now: Instant) -> Decision {
        if self.phase != Phase::Recovering {
            return Decision::Nothing;
        }
        let at = now + self.limits.settle;
        self.phase = Phase::Settling { until: at };
        Decision::Verify { at }
    }

    /// A person said to try again: forget failures, recoveries and cooldown.
    pub fn rearm(&mut self) {
        *self = Self::new(self.limits);
    }

    fn watch(&mut self, now: Instant, healthy: bool) -> Decision {
        if healthy {
            self.consecutive_failures = 0;
            self.failed_recoveries = 0;
            return Decision::Nothing;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let cooled = self
            .last_recovery
            .is_none_or(|at| now.saturating_duration_since(at) >= self.limits.cooldown);
        if self.consecutive_failures < self.limits.failure_threshold || !cooled {
            return Decision::Nothing;
        }
        self.phase = Phase::Recovering;
        self.last_recovery = Some(now);
        Decision::Recover {
            attempt: self.failed_recoveries + 1,
        }
    }

    fn verify(&mut self, healthy: bool) -> Decision {
        let attempt = self.failed_recoveries + 1;
        if healthy {
            self.phase = Phase::Watching;
            self.consecutive_failures = 0;
            self.failed_recoveries = 0;
            return Decision::Recovered { attempt };
        }
        self.failed_recoveries = attempt;
        if attempt >= self.limits.max_recoveries {
            self.phase = Phase::Exhausted;
            return Decision::Exhausted { attempts: attempt };
        }
        // Still failing: the next failed check recovers again once the
        // cooldown allows, without waiting for the threshold anew.
        self.phase = Phase::Watching;
        self.consecutive_failures = self.limits.failure_threshold;
        Decision::RecoveryFailed { attempt }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            failure_threshold: 2,
            cooldown: Duration::from_secs(300),
            max_recoveries: 3,
            settle: Duration::from_secs(10),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// Recovers at `t`, settles, and verifies with `healthy`.
    fn recover(s: &mut AppState, t0: Instant, t: u64, healthy: bool) -> Decision {
        assert_eq!(
            s.recovery_finished(secs(t0, t)),
            Decision::Verify {
                at: secs(t0, t + 10)
            }
        );
        assert_eq!(s.on_check(secs(t0, t + 5), false), Decision::Nothing);
        s.on_check(secs(t0, t + 10), healthy)
    }

    #[test]
    fn recovers_only_after_the_threshold_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        assert_eq!(s.on_check(secs(t0, 0), false), Decision::Nothing);
        assert_eq!(s.on_check(secs(t0, 60), true), Decision::Nothing);
        assert_eq!(s.on_check(secs(t0, 120), false), Decision::Nothing);
        assert_eq!(
            s.on_check(secs(t0, 180), false),
            Decision::Recover { attempt: 1 }
        );
        assert_eq!(
            recover(&mut s, t0, 181, true),
            Decision::Recovered { attempt: 1 }
        );
        assert_eq!(s.on_check(secs(t0, 240), true), Decision::Nothing);
    }

    #[test]
    fn a_second_recovery_waits_for_the_cooldown() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        s.on_check(secs(t0, 0), false);
        assert_eq!(
            s.on_check(secs(t0, 60), false),
            Decision::Recover { attempt: 1 }
        );
        assert_eq!(
            recover(&mut s, t0, 61, false),
            Decision::RecoveryFailed { attempt: 1 }
        );
        // 60s + 300s cooldown: nothing before 360s.
        assert_eq!(s.on_check(secs(t0, 120), false), Decision::Nothing);
        assert_eq!(s.on_check(secs(t0, 359), false), Decision::Nothing);
        assert_eq!(
            s.on_check(secs(t0, 360), false),
            Decision::Recover { attempt: 2 }
        );
    }

    #[test]
    fn exhausts_after_max_recoveries_and_acts_again_only_when_rearmed() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        s.on_check(secs(t0, 0), false);
        let mut t = 60;
        for attempt in 1..=3 {
            assert_eq!(
                s.on_check(secs(t0, t), false),
                Decision::Recover { attempt }
            );
            let verdict = recover(&mut s, t0, t, false);
            if attempt < 3 {
                assert_eq!(verdict, Decision::RecoveryFailed { attempt });
            } else {
                assert_eq!(verdict, Decision::Exhausted { attempts: 3 });
            }
            t += 300;
        }
        assert!(s.is_exhausted());
        for later in [t, t + 3600, t + 86_400] {
            assert_eq!(s.on_check(secs(t0, later), false), Decision::Nothing);
        }
        assert_eq!(s.on_check(secs(t0, t + 90_000), true), Decision::Nothing);
        s.rearm();
        assert!(!s.is_exhausted());
        assert_eq!(s.on_check(secs(t0, t + 100_000), false), Decision::Nothing);
        assert_eq!(
            s.on_check(secs(t0, t + 100_060), false),
            Decision::Recover { attempt: 1 }
        );
    }

    #[test]
    fn a_flapping_app_is_restarted_at_most_once_per_cooldown() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        let mut recoveries = Vec::new();
        // Down two checks, up one, for an hour at 60s checks: each recovery
        // "works", so the app never exhausts, but the cooldown spaces them.
        let mut t = 0;
        while t < 3600 {
            for healthy in [false, false, true] {
                if let Decision::Recover { .. } = s.on_check(secs(t0, t), healthy) {
                    recoveries.push(t);
                    assert_eq!(
                        recover(&mut s, t0, t, true),
                        Decision::Recovered { attempt: 1 }
                    );
                }
                t += 60;
            }
        }
        assert!(!s.is_exhausted());
        assert!(recoveries.len() >= 2, "{recoveries:?}");
        for pair in recoveries.windows(2) {
            assert!(pair[1] - pair[0] >= 300, "{recoveries:?}");
        }
    }

    #[test]
    fn the_phase_tells_cooldown_and_exhaustion_apart() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        assert_eq!(s.phase(t0), AppPhase::Watching);
        s.on_check(secs(t0, 0), false);
        s.on_check(secs(t0, 60), false);
        assert_eq!(s.phase(secs(t0, 60)), AppPhase::Recovering);
        recover(&mut s, t0, 61, false);
        assert_eq!(s.phase(secs(t0, 100)), AppPhase::Cooldown);
        assert_eq!((s.failed_recoveries(), s.consecutive_failures()), (1, 2));
        // Past the cooldown the next failed check recovers: watching again.
        assert_eq!(s.phase(secs(t0, 400)), AppPhase::Watching);
        s.on_check(secs(t0, 400), true);
        assert_eq!(s.phase(secs(t0, 401)), AppPhase::Watching);
        s.phase = Phase::Exhausted;
        assert_eq!(s.phase(secs(t0, 402)), AppPhase::Exhausted);
    }

    #[test]
    fn events_out_of_phase_are_ignored() {
        let t0 = Instant::now();
        let mut s = AppState::new(limits());
        assert_eq!(s.recovery_finished(t0), Decision::Nothing);
        s.on_check(secs(t0, 0), false);
        assert_eq!(
            s.on_check(secs(t0, 1), false),
            Decision::Recover { attempt: 1 }
        );
        // While the steps run, checks are not counted.
        assert_eq!(s.on_check(secs(t0, 2), true), Decision::Nothing);
        assert_eq!(
            recover(&mut s, t0, 3, true),
            Decision::Recovered { attempt: 1 }
        );
    }
}
