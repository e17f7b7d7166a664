//! Noise control of one alert key: consecutive failures to fire and
//! successes to resolve (Gatus' thresholds), `for` and `keep_firing_for`
//! (Prometheus). Pure: every time is an argument.

use std::time::Duration;

use crate::Condition;

/// A rule's noise settings, in the units the engine computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub for_ms: u64,
    pub keep_ms: u64,
}

impl Params {
    pub fn new(failure: u32, success: u32, for_: Duration, keep: Duration) -> Self {
        Params {
            failure_threshold: failure.max(1),
            success_threshold: success.max(1),
            for_ms: millis(for_),
            keep_ms: millis(keep),
        }
    }

    /// Whether time alone can change a state (so `tick` must look at it).
    pub fn timed(&self) -> bool {
        self.for_ms > 0 || self.keep_ms > 0
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One key's state. `cond` is `None` while the alert is inactive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Noise {
    pub cond: Option<Condition>,
    fails: u32,
    oks: u32,
    /// When the condition started holding (pending since).
    since_ms: u64,
    /// When it stopped holding (the first good sample after bad ones):
    /// `keep_firing_for` counts from there.
    clear_since_ms: u64,
}

impl Noise {
    /// State after a restart: `condition` as the lifecycle remembers it.
    pub fn restored(p: &Params, condition: Condition, since_ms: u64) -> Self {
        let firing = condition == Condition::Firing;
        Noise {
            cond: (condition != Condition::Resolved).then_some(condition),
            fails: if firing { p.failure_threshold } else { 1 },
            oks: 0,
            since_ms,
            clear_since_ms: since_ms,
        }
    }

    /// Nothing to remember: the tracker may be dropped.
    pub fn idle(&self) -> bool {
        self.cond.is_none() && self.fails == 0
    }

    pub fn active(&self) -> bool {
        self.cond.is_some()
    }

    fn ready(&self, p: &Params, at_ms: u64) -> bool {
        self.fails >= p.failure_threshold && at_ms.saturating_sub(self.since_ms) >= p.for_ms
    }

    /// One evaluation of the condition at `at_ms`; the change, if any.
    pub fn sample(&mut self, p: &Params, holds: bool, at_ms: u64) -> Option<Condition> {
        if holds {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
            match self.cond {
                None => {
                    self.since_ms = at_ms;
                    let next = if self.ready(p, at_ms) {
                        Condition::Firing
                    } else {
                        Condition::Pending
                    };
                    self.cond = Some(next);
                    Some(next)
                }
                Some(Condition::Pending) => self.fire_if_ready(p, at_ms),
                Some(_) => None,
            }
        } else {
            if self.oks == 0 {
                self.clear_since_ms = at_ms;
            }
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
            match self.cond {
                Some(Condition::Pending) => self.resolve(),
                Some(Condition::Firing) => self.resolve_if_ready(p, at_ms),
                _ => None,
            }
        }
    }

    /// Time passed without data: `for` may now be met, or
    /// `keep_firing_for` over.
    pub fn tick(&mut self, p: &Params, now_ms: u64) -> Option<Condition> {
        match self.cond {
            Some(Condition::Pending) => self.fire_if_ready(p, now_ms),
            Some(Condition::Firing) => self.resolve_if_ready(p, now_ms),
            _ => None,
        }
    }

    fn fire_if_ready(&mut self, p: &Params, at_ms: u64) -> Option<Condition> {
        self.ready(p, at_ms).then(|| {
            self.cond = Some(Condition::Firing);
            Condition::Firing
        })
    }

    fn resolve_if_ready(&mut self, p: &Params, at_ms: u64) -> Option<Condition> {
        let kept = at_ms.saturating_sub(self.clear_since_ms) < p.keep_ms;
        if self.oks >= p.success_threshold && !kept {
            self.resolve()
        } else {
            None
        }
    }

    fn resolve(&mut self) -> Option<Condition> {
        *self = Noise {
            oks: self.oks,
            ..Noise::default()
        };
        Some(Condition::Resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Condition::*;

    fn run(p: &Params, samples: &[(bool, u64)]) -> Vec<Option<Condition>> {
        let mut noise = Noise::default();
        samples
            .iter()
            .map(|&(holds, at)| noise.sample(p, holds, at))
            .collect()
    }

    #[test]
    fn thresholds_count_consecutive_samples() {
        let p = Params::new(3, 2, Duration::ZERO, Duration::ZERO);
        let got = run(
            &p,
            &[
                (true, 1),
                (true, 2),
                (false, 3),
                (true, 4),
                (true, 5),
                (true, 6),
                (false, 7),
                (true, 8),
                (false, 9),
                (false, 10),
            ],
        );
        assert_eq!(
            got,
            [
                Some(Pending),
                None,
                Some(Resolved),
                Some(Pending),
                None,
                Some(Firing),
                None,
                None,
                None,
                Some(Resolved)
            ]
        );
    }

    #[test]
    fn for_and_keep_firing_for_count_time() {
        let p = Params::new(1, 1, Duration::from_millis(100), Duration::from_millis(50));
        let mut noise = Noise::default();
        assert_eq!(noise.sample(&p, true, 1000), Some(Pending));
        assert_eq!(noise.tick(&p, 1099), None);
        assert_eq!(noise.tick(&p, 1100), Some(Firing));
        assert_eq!(noise.sample(&p, false, 1120), None, "kept firing");
        assert_eq!(noise.tick(&p, 1169), None);
        assert_eq!(noise.tick(&p, 1170), Some(Resolved));
        assert_eq!(noise.tick(&p, 2000), None);
        assert!(noise.idle());
    }

    #[test]
    fn immediate_rules_fire_without_pending() {
        let p = Params::new(1, 1, Duration::ZERO, Duration::ZERO);
        assert_eq!(
            run(&p, &[(true, 1), (true, 2), (false, 3)]),
            [Some(Firing), None, Some(Resolved)]
        );
    }

    #[test]
    fn restored_firing_does_not_fire_again() {
        let p = Params::new(2, 1, Duration::ZERO, Duration::ZERO);
        let mut noise = Noise::restored(&p, Firing, 10);
        assert_eq!(noise.sample(&p, true, 20), None);
        assert_eq!(noise.sample(&p, false, 30), Some(Resolved));
    }
}
