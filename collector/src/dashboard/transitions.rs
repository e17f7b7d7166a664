//! The overview's "recent transitions": sites whose status class changed,
//! as this collector accepted their probes. Kept in memory (the newest
//! [`KEPT`]), seeded with the store's newest probe of every site at start so
//! the first change of each site counts; a restarted collector starts a new
//! list, and each replica lists what it accepted.

use livehead_common::vantage::INSIDE;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use livehead_common::Shutdown;
use tokio::sync::broadcast::error::RecvError;

use super::view::{Class, Transition};
use crate::group_commit::GroupCommit;
use crate::store::{ProbeRow, Store};

/// Transitions kept (all sites): the overview shows the newest 50 a caller
/// may see.
pub const KEPT: usize = 500;
/// Sites whose class is remembered; past it the memory restarts empty (a
/// fleet never has that many, a flood of made-up names could).
pub const MAX_SITES: usize = 1_000_000;

#[derive(Debug, Default)]
struct Inner {
    last: HashMap<String, Class>,
    recent: VecDeque<Transition>,
}

/// Shared by the overview handler and the tracking task.
#[derive(Debug, Clone, Default)]
pub struct Transitions {
    inner: Arc<Mutex<Inner>>,
}

impl Transitions {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Remembers the class of each probe (oldest first), recording changes.
    pub fn observe(&self, probes: &[ProbeRow]) {
        self.with(|inner| {
            // The dashboard shows the inside vantage, as /last does.
            for probe in probes.iter().filter(|p| p.vantage == INSIDE) {
                let to = Class::of(probe.status);
                if inner.last.len() >= MAX_SITES && !inner.last.contains_key(&probe.site) {
                    inner.last.clear();
                }
                let Some(from) = inner.last.insert(probe.site.clone(), to) else {
                    continue;
                };
                if from == to {
                    continue;
                }
                if inner.recent.len() == KEPT {
                    inner.recent.pop_back();
                }
                inner.recent.push_front(Transition {
                    site: probe.site.clone(),
                    node: probe.agent.clone(),
                    from,
                    to,
                    ts_ms: probe.ts,
                });
            }
        });
    }

    /// The newest `limit` transitions of sites `keep` accepts, newest first.
    pub fn newest(&self, limit: usize, keep: impl Fn(&str) -> bool) -> Vec<Transition> {
        self.with(|inner| {
            inner
                .recent
                .iter()
                .filter(|t| keep(&t.site))
                .take(limit)
                .cloned()
                .collect()
        })
    }

    /// Follows the accepted batches until `shutdown`, after seeding with the
    /// newest probe of each site probed since `since_ms`.
    pub fn spawn<S: Store>(
        &self,
        store: Arc<S>,
        writer: &GroupCommit,
        since_ms: u64,
        shutdown: Shutdown,
    ) {
        let mut accepted = writer.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            match store.latest_probes(since_ms).await {
                Ok(probes) => this.observe(&probes),
                Err(error) => {
                    tracing::warn!(%error, "dashboard: no seed for transitions (the first change of each site is missed)");
                }
            }
            loop {
                let received = tokio::select! {
                    received = accepted.recv() => received,
                    () = shutdown.cancelled() => return,
                };
                match received {
                    Ok(batch) => this.observe(&batch.rows.probes),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "dashboard transitions lagged");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(site: &str, status: u16, ts: u64) -> ProbeRow {
        ProbeRow {
            site: site.into(),
            agent: "web-1".into(),
            status,
            ts,
            ..ProbeRow::default()
        }
    }

    #[test]
    fn changes_of_class_are_recorded_newest_first() {
        let t = Transitions::default();
        t.observe(&[probe("a", 200, 1), probe("b", 200, 1)]);
        t.observe(&[probe("a", 204, 2), probe("a", 500, 3), probe("b", 301, 4)]);
        let all = t.newest(50, |_| true);
        let seen: Vec<(&str, Class, Class)> = all
            .iter()
            .map(|t| (t.site.as_str(), t.from, t.to))
            .collect();
        assert_eq!(
            seen,
            [
                ("b", Class::Up, Class::Redirect),
                ("a", Class::Up, Class::Down)
            ]
        );
        assert_eq!(t.newest(50, |s| s == "a").len(), 1);
    }

    #[test]
    fn the_list_is_bounded() {
        let t = Transitions::default();
        for i in 0..(KEPT as u64 + 10) {
            t.observe(&[probe("a", if i % 2 == 0 { 200 } else { 500 }, i)]);
        }
        assert_eq!(t.newest(usize::MAX, |_| true).len(), KEPT);
    }
}
