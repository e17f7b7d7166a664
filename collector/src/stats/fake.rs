//! A tiny in-memory [`Store`] for the `/stats` and roles tests: it holds
//! [`Rows`] and answers by filtering them, nothing more (no bucketing, no
//! newest-per-key: the tests seed one row per thing). The tests only use the
//! `Store` trait, so they can run on the real stores once those read samples.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::store::samples::{SampleKind, Scope};
use crate::store::{
    BatchWrite, DumpFilter, LastState, Order, Rows, StatsQuery, Store, StoreError, WriteOutcome,
};

#[derive(Default)]
pub struct FakeStore {
    pub rows: Mutex<Rows>,
    /// Every call fails, as a store that is down.
    pub broken: bool,
}

impl FakeStore {
    pub fn with(rows: Rows) -> Self {
        Self {
            rows: Mutex::new(rows),
            broken: false,
        }
    }

    /// The newest probe of each site (one vantage is enough for the stats
    /// tests).
    fn newest(&self) -> Result<BTreeMap<String, LastState>, StoreError> {
        let mut newest: BTreeMap<String, LastState> = BTreeMap::new();
        for row in self.rows()?.probes {
            if newest.get(&row.site).is_some_and(|s| s.ts >= row.ts) {
                continue;
            }
            let state = LastState {
                site: row.site.clone(),
                status: row.status,
                ms: row.ms,
                port: row.port,
                location: row.location,
                cross: row.cross,
                ts: row.ts,
                vantage: livehead_common::vantage::or_inside(&row.vantage).to_owned(),
                ..LastState::default()
            };
            newest.insert(row.site, state);
        }
        Ok(newest)
    }

    fn rows(&self) -> Result<Rows, StoreError> {
        if self.broken {
            return Err(StoreError::Unsupported("the fake store is down".into()));
        }
        Ok(self.rows.lock().map(|r| r.clone()).unwrap_or_default())
    }
}

/// Whether a row of (`key`, `ts`) is in `scope`.
fn keep(scope: &Scope<'_>, key: &str, ts: u64) -> bool {
    match scope {
        Scope::Latest(latest) => ts >= latest.since_ms && latest.only.is_none_or(|o| o == key),
        Scope::History(history) => {
            key == history.of && (history.since_ms..=history.until_ms).contains(&ts)
        }
        // Heartbeat reads only, which the fake's tests do not make.
        Scope::Newest(_) => false,
    }
}

impl Store for FakeStore {
    async fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.rows()?;
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| StoreError::Unsupported("poisoned".into()))?;
        Ok(batches
            .iter()
            .map(|batch| {
                rows.extend(batch.rows);
                WriteOutcome::Written {
                    rows: batch.rows.len(),
                }
            })
            .collect())
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
        Ok(self.newest()?.remove(site).filter(|s| s.vantage == vantage))
    }

    async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
        let mut states: Vec<LastState> = self
            .newest()?
            .into_values()
            .filter(|s| s.vantage == filter.vantage)
            .filter(|s| filter.statuses.is_empty() || filter.statuses.contains(&s.status))
            .collect();
        // By ts in the filter's order, ties by site ascending, as the stores.
        states.sort_by(|a, b| {
            match filter.order {
                Order::Asc => a.ts.cmp(&b.ts),
                Order::Desc => b.ts.cmp(&a.ts),
            }
            .then_with(|| a.site.cmp(&b.site))
        });
        let offset = usize::try_from(filter.offset).unwrap_or(usize::MAX);
        Ok(states
            .into_iter()
            .skip(offset)
            .take(filter.limit as usize)
            .collect())
    }

    async fn stats(&self, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
        let all = self.rows()?;
        let s = &query.scope;
        let mut out = Rows::default();
        match query.kind {
            SampleKind::Node => {
                out.nodes = all
                    .nodes
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::Filesystem => {
                out.filesystems = all
                    .filesystems
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::Disk => {
                out.disks = all
                    .disks
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::Interface => {
                out.interfaces = all
                    .interfaces
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::Pod => {
                out.pods = all
                    .pods
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::SiteDisk => {
                out.site_disks = all
                    .site_disks
                    .into_iter()
                    .filter(|r| keep(s, &r.site, r.ts))
                    .collect()
            }
            SampleKind::SiteProcess => {
                out.site_processes = all
                    .site_processes
                    .into_iter()
                    .filter(|r| keep(s, &r.site, r.ts))
                    .collect()
            }
            SampleKind::Service => {
                out.services = all
                    .services
                    .into_iter()
                    .filter(|r| keep(s, &r.site, r.ts))
                    .collect()
            }
            SampleKind::AlertEvent => {
                out.alerts = all
                    .alerts
                    .into_iter()
                    .filter(|r| keep(s, &r.agent, r.ts))
                    .collect()
            }
            SampleKind::AlertDelivery => {
                out.deliveries = all
                    .deliveries
                    .into_iter()
                    .filter(|r| keep(s, &r.agent, r.ts))
                    .collect()
            }
            SampleKind::Watchdog => {
                out.watchdog = all
                    .watchdog
                    .into_iter()
                    .filter(|r| keep(s, &r.node, r.ts))
                    .collect()
            }
            SampleKind::HeartbeatCheck => {
                out.heartbeat_checks = all
                    .heartbeat_checks
                    .into_iter()
                    .filter(|r| keep(s, &r.agent, r.ts))
                    .collect()
            }
            SampleKind::HeartbeatPing => {
                out.heartbeat_pings = all
                    .heartbeat_pings
                    .into_iter()
                    .filter(|r| keep(s, &r.agent, r.ts))
                    .collect()
            }
            SampleKind::HeartbeatState => {
                out.heartbeat_states = all
                    .heartbeat_states
                    .into_iter()
                    .filter(|r| keep(s, &r.agent, r.ts))
                    .collect()
            }
        }
        Ok(out)
    }
}
