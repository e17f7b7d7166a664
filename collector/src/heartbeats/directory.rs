//! A replica's cache of the checks (the newest version of each), which pings
//! look their check up in. It reads the store at most every
//! `heartbeats.cache_ttl`, and on a miss at most once per [`MISS_INTERVAL`],
//! so a flood of unknown ids costs the store one read a second. One read at
//! a time (the others wait for its answer, or use the cache while fresh);
//! what this replica writes is remembered at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::sample_tables::HEARTBEAT_WRITER;
use crate::store::samples::{HeartbeatCheckRow, Latest, SampleKind, Scope, StatsQuery};
use crate::store::{Store, StoreError};

/// Shortest time between two store reads caused by pings of unknown checks.
pub const MISS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Snapshot {
    /// By check id; deleted checks included (their newest version says so).
    checks: HashMap<String, HeartbeatCheckRow>,
    read_at: Option<Instant>,
}

pub struct Directory {
    ttl: Duration,
    snapshot: RwLock<Snapshot>,
    /// Held while the store is read: one read at a time.
    reading: tokio::sync::Mutex<()>,
}

/// Every check's newest version written by the collector (rows another
/// sender might have sent as heartbeat checks are not checks).
pub async fn read_checks<S: Store>(store: &S) -> Result<Vec<HeartbeatCheckRow>, StoreError> {
    let query = StatsQuery {
        kind: SampleKind::HeartbeatCheck,
        scope: Scope::Latest(Latest {
            since_ms: 0,
            only: Some(HEARTBEAT_WRITER),
        }),
    };
    Ok(store.stats(&query).await?.heartbeat_checks)
}

impl Directory {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            snapshot: RwLock::new(Snapshot::default()),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    /// The live (not deleted) check `matches` picks, if any.
    pub async fn find<S: Store>(
        &self,
        store: &S,
        matches: impl Fn(&HeartbeatCheckRow) -> bool,
    ) -> Result<Option<HeartbeatCheckRow>, StoreError> {
        let (found, read_at) = self.look(&matches);
        let fresh = read_at.is_some_and(|at| at.elapsed() < self.ttl);
        if found.is_some() && fresh {
            return Ok(found);
        }
        let may_read = !fresh || read_at.is_none_or(|at| at.elapsed() >= MISS_INTERVAL);
        if !may_read {
            return Ok(found);
        }
        let _reading = self.reading.lock().await;
        // Another request may have read the store while this one waited.
        let (found, now_read_at) = self.look(&matches);
        if now_read_at != read_at {
            return Ok(found);
        }
        self.replace(read_checks(store).await?);
        Ok(self.look(&matches).0)
    }

    /// Replaces the cache with a fresh read of every check.
    pub fn replace(&self, rows: Vec<HeartbeatCheckRow>) {
        let checks = rows.into_iter().map(|r| (r.check_id.clone(), r)).collect();
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = Snapshot {
                checks,
                read_at: Some(Instant::now()),
            };
        }
    }

    /// A version this replica just wrote.
    pub fn remember(&self, row: HeartbeatCheckRow) {
        if let Ok(mut snapshot) = self.snapshot.write() {
            snapshot.checks.insert(row.check_id.clone(), row);
        }
    }

    fn look(
        &self,
        matches: &impl Fn(&HeartbeatCheckRow) -> bool,
    ) -> (Option<HeartbeatCheckRow>, Option<Instant>) {
        let Ok(snapshot) = self.snapshot.read() else {
            return (None, None);
        };
        let found = snapshot
            .checks
            .values()
            .find(|c| !c.deleted && matches(c))
            .cloned();
        (found, snapshot.read_at)
    }
}
