//! Readiness: whether this collector can do its job now, as opposed to
//! `/health` (liveness: the process answers). `/ready` answers 200
//! `{"ok":true}` or 503 `{"ok":false,"<check>":"<what is wrong>",..}`.
//!
//! Checks are named and set by whoever watches the thing checked; requests
//! only read the current answers, so probes hitting `/ready` never reach a
//! store that stalls. Today's checks:
//!
//! - `store`: a background task reads the store every `ready_interval`
//!   ([`spawn_store_probe`]); unready when the last read failed or timed
//!   out, or none succeeded for three intervals.
//! - `store_writes`: the last write failed (set by [`crate::store::timed`]).
//!   Forgotten after [`WRITE_FAILURE_MEMORY`] without writes, so that a
//!   collector taken out of its Service (and so receiving no writes) is not
//!   kept unready by a failure nothing can clear.
//!
//! A later check (e.g. the alerter's subscriptions) is one more name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livehead_common::Shutdown;
use serde_json::{Map, Value};

use crate::metrics::CollectorMetrics;
use crate::store::Store;

pub const STORE: &str = "store";
pub const STORE_WRITES: &str = "store_writes";

/// How long a failed write keeps the collector unready when no write follows.
pub const WRITE_FAILURE_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Problem {
    message: String,
    /// Counts from then on (a deadline still to be met counts later).
    from: Option<Instant>,
    /// Forgotten then.
    until: Option<Instant>,
}

/// The current answer of every check; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    problems: Arc<Mutex<BTreeMap<&'static str, Problem>>>,
    metrics: CollectorMetrics,
}

impl Readiness {
    pub fn new(metrics: CollectorMetrics) -> Self {
        Self {
            problems: Arc::default(),
            metrics,
        }
    }

    /// `check` fails with `message` until cleared.
    pub fn fail(&self, check: &'static str, message: impl Into<String>) {
        self.put(check, message.into(), None, None);
    }

    /// `check` fails with `message` until cleared or `period` passed.
    pub fn fail_for(&self, check: &'static str, message: impl Into<String>, period: Duration) {
        self.put(check, message.into(), None, Some(Instant::now() + period));
    }

    /// `check` fails with `message` from `period` on, unless set again before.
    pub fn fail_after(&self, check: &'static str, message: impl Into<String>, period: Duration) {
        self.put(check, message.into(), Some(Instant::now() + period), None);
    }

    pub fn clear(&self, check: &'static str) {
        self.with(|problems| {
            problems.remove(check);
        });
    }

    /// The failing checks and why; empty when ready.
    pub fn problems(&self) -> BTreeMap<&'static str, String> {
        let now = Instant::now();
        self.with(|problems| {
            problems.retain(|_, p| p.until.is_none_or(|until| until > now));
            problems
                .iter()
                .filter(|(_, p)| p.from.is_none_or(|from| from <= now))
                .map(|(check, p)| (*check, p.message.clone()))
                .collect()
        })
    }

    /// `/ready`'s body, and whether it is ready.
    pub fn answer(&self) -> (bool, Value) {
        let problems = self.problems();
        let ready = problems.is_empty();
        self.metrics.ready.set(i64::from(ready));
        let mut body = Map::new();
        body.insert("ok".into(), Value::Bool(ready));
        for (check, message) in problems {
            body.insert(check.into(), Value::String(message));
        }
        (ready, Value::Object(body))
    }

    fn put(
        &self,
        check: &'static str,
        message: String,
        from: Option<Instant>,
        until: Option<Instant>,
    ) {
        self.with(|problems| {
            problems.insert(
                check,
                Problem {
                    message,
                    from,
                    until,
                },
            );
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<&'static str, Problem>) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map itself is always consistent.
        let mut guard = self
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Reads the store every `every` and sets the [`STORE`] check. The store is
/// expected to bound the read itself (see [`crate::store::timed`]); a probe
/// that still never returns shows as "no successful read" three intervals
/// after the last success ([`Readiness::fail_after`]).
pub fn spawn_store_probe<S: Store>(
    store: Arc<S>,
    readiness: Readiness,
    every: Duration,
    shutdown: Shutdown,
) {
    readiness.fail(STORE, format!("{}: not probed yet", store.kind()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let stale = format!("{}: no successful read for {:?}", store.kind(), every * 3);
            match store.ping().await {
                Ok(()) => readiness.fail_after(STORE, stale, every * 3),
                Err(error) => {
                    tracing::warn!(%error, "readiness: store probe failed");
                    readiness.fail(STORE, error.to_string());
                }
            }
            // Refreshes the `ready` gauge between requests to `/ready`.
            readiness.answer();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_no_check_fails() {
        let r = Readiness::new(CollectorMetrics::new());
        assert_eq!(r.answer(), (true, serde_json::json!({"ok": true})));
        r.fail(STORE, "clickhouse: ping timed out after 2s");
        r.fail_for(STORE_WRITES, "disk full", Duration::from_secs(60));
        let (ready, body) = r.answer();
        assert!(!ready);
        assert_eq!(
            body.to_string(),
            r#"{"ok":false,"store":"clickhouse: ping timed out after 2s","store_writes":"disk full"}"#
        );
        r.clear(STORE);
        r.fail_for(STORE_WRITES, "disk full", Duration::ZERO);
        assert!(r.answer().0, "an expired failure is forgotten");
        r.fail_after(STORE, "stale", Duration::from_secs(60));
        assert!(r.answer().0, "a deadline still to come");
        r.fail_after(STORE, "stale", Duration::ZERO);
        assert_eq!(r.answer().1["store"], "stale");
    }
}
