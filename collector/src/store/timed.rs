//! Every store call bounded in time, timed and counted, in one place.
//!
//! A stalled store (ClickHouse SIGSTOPped, a disk that hangs) otherwise
//! blocks its callers for as long as it stalls: `/last` answered after 75 s
//! and no write ever failed. Here a read gets `storage.read_timeout` and a
//! group write (marker lookup and INSERTs together) or an upkeep pass
//! `storage.write_timeout`; past it the call fails with
//! [`StoreError::TimedOut`]. The API then answers 503 and the writer fails
//! the group, whose agents resend it.
//!
//! Dropping a write midway is what the stores are built to survive: the
//! ClickHouse store's markers count exactly the rows an interrupted INSERT
//! kept, and SQLite's transaction runs to its end on its own thread; either
//! way the replay completes the batch exactly once (see the stores' docs) —
//! provided the replay looks the markers up after the abandoned write ended.
//! A stalled ClickHouse does not end it: once resumed it reads the INSERT
//! still in its socket buffers and stores it, possibly after the replay's
//! lookup found nothing (the end-to-end test saw whole groups stored twice).
//! So after a write timed out, the next write first waits for the store to
//! answer a read again, then one more `write_timeout`: the time the abandoned
//! write would have had. Until the store answers, writes fail at once instead
//! of piling more abandoned INSERTs onto it.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{
    BatchWrite, DumpFilter, LastState, ProbeRow, Rows, StatsQuery, StorageConfig, Store,
    StoreError, WriteOutcome,
};
use crate::metrics::CollectorMetrics;
use crate::ready::{Readiness, STORE_WRITES, WRITE_FAILURE_MEMORY};

/// `inner` with time bounds, metrics (`store_seconds`, `store_timeouts_total`,
/// `store_errors_total`, by op) and the `store_writes` readiness check.
pub struct Timed<S> {
    inner: S,
    read_timeout: Duration,
    write_timeout: Duration,
    metrics: CollectorMetrics,
    readiness: Readiness,
    /// A write timed out and may still complete on the server.
    abandoned: tokio::sync::Mutex<bool>,
}

impl<S: Store> Timed<S> {
    pub fn new(
        inner: S,
        config: &StorageConfig,
        metrics: CollectorMetrics,
        readiness: Readiness,
    ) -> Self {
        Self {
            inner,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            metrics,
            readiness,
            abandoned: tokio::sync::Mutex::new(false),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// After an abandoned write: waits until the store answers a read, then
    /// `write_timeout`, so that the abandoned write is over before the next
    /// one looks markers up. Fails at once when the store does not answer.
    async fn settle(&self) -> Result<(), StoreError> {
        let mut abandoned = self.abandoned.lock().await;
        if !*abandoned {
            return Ok(());
        }
        self.ping().await?;
        tracing::info!(
            wait = ?self.write_timeout,
            "store answers again; waiting for a timed-out write to end before writing"
        );
        tokio::time::sleep(self.write_timeout).await;
        *abandoned = false;
        Ok(())
    }

    async fn call<T>(
        &self,
        op: &'static str,
        limit: Duration,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                self.metrics.store_timeouts.with_label_values(&[op]).inc();
                Err(StoreError::TimedOut {
                    store: self.inner.kind(),
                    op,
                    after: limit,
                })
            }
        };
        self.metrics
            .store_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.metrics.store_errors.with_label_values(&[op]).inc();
            tracing::debug!(op, %error, "store call failed");
        }
        result
    }
}

impl<S: Store> Store for Timed<S> {
    async fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let result = match self.settle().await {
            Ok(()) => {
                self.call(
                    "write",
                    self.write_timeout,
                    self.inner.write_batches(batches),
                )
                .await
            }
            Err(error) => Err(error),
        };
        if let Err(StoreError::TimedOut { .. }) = &result {
            *self.abandoned.lock().await = true;
        }
        match &result {
            Ok(_) => self.readiness.clear(STORE_WRITES),
            Err(error) => self.readiness.fail_for(
                STORE_WRITES,
                format!("last write failed: {error}"),
                WRITE_FAILURE_MEMORY,
            ),
        }
        result
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        self.call("maintain", self.write_timeout, self.inner.maintain())
            .await
    }

    async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
        self.call("last", self.read_timeout, self.inner.last(site, vantage))
            .await
    }

    async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
        self.call("dump_last", self.read_timeout, self.inner.dump_last(filter))
            .await
    }

    async fn stats(&self, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
        self.call("stats", self.read_timeout, self.inner.stats(query))
            .await
    }

    async fn latest_probes(&self, since_ms: u64) -> Result<Vec<ProbeRow>, StoreError> {
        self.call(
            "latest_probes",
            self.read_timeout,
            self.inner.latest_probes(since_ms),
        )
        .await
    }

    async fn probe_history(
        &self,
        site: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<ProbeRow>, StoreError> {
        self.call(
            "probe_history",
            self.read_timeout,
            self.inner.probe_history(site, since_ms, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", self.read_timeout, self.inner.ping())
            .await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose every call hangs.
    struct Stalled;

    impl Store for Stalled {
        async fn write_batches(
            &self,
            _: &[BatchWrite<'_>],
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            std::future::pending().await
        }
        async fn maintain(&self) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn last(&self, _: &str, _: &str) -> Result<Option<LastState>, StoreError> {
            std::future::pending().await
        }
        async fn dump_last(&self, _: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
            std::future::pending().await
        }

        async fn stats(&self, _: &StatsQuery<'_>) -> Result<Rows, StoreError> {
            Ok(Rows::default())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_calls_time_out_and_are_counted() {
        let metrics = CollectorMetrics::new();
        let readiness = Readiness::new(metrics.clone());
        let config = StorageConfig {
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(7),
            ..StorageConfig::default()
        };
        let store = Timed::new(Stalled, &config, metrics.clone(), readiness.clone());
        let started = tokio::time::Instant::now();
        let error = store.last("a.com", "inside").await.expect_err("stalled");
        assert_eq!(error.to_string(), "store: last timed out after 2s");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let error = store
            .write_batch(BatchWrite {
                agent: "a",
                seq: 1,
                rows: crate::store::RowsRef::default(),
            })
            .await
            .expect_err("stalled");
        assert!(matches!(error, StoreError::TimedOut { op: "write", .. }));
        assert_eq!(started.elapsed(), Duration::from_secs(9));
        assert_eq!(metrics.store_timeouts.with_label_values(&["last"]).get(), 1);
        assert_eq!(
            metrics.store_timeouts.with_label_values(&["write"]).get(),
            1
        );
        assert_eq!(
            readiness.problems().get(STORE_WRITES).map(String::as_str),
            Some("last write failed: store: write timed out after 7s")
        );
    }

    /// Stalls while `stalled`; counts the writes that reached it.
    #[derive(Default)]
    struct Switch {
        stalled: std::sync::atomic::AtomicBool,
        writes: std::sync::atomic::AtomicUsize,
    }

    impl Switch {
        async fn maybe_stall(&self) {
            if self.stalled.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
    }

    impl Store for Switch {
        async fn write_batches(
            &self,
            batches: &[BatchWrite<'_>],
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.maybe_stall().await;
            Ok(vec![WriteOutcome::Written { rows: 0 }; batches.len()])
        }
        async fn maintain(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn last(&self, _: &str, _: &str) -> Result<Option<LastState>, StoreError> {
            self.maybe_stall().await;
            Ok(None)
        }
        async fn dump_last(&self, _: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
            Ok(Vec::new())
        }

        async fn stats(&self, _: &StatsQuery<'_>) -> Result<Rows, StoreError> {
            Ok(Rows::default())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_abandoned_write_the_next_waits_for_the_store_and_one_timeout() {
        use std::sync::atomic::Ordering::SeqCst;
        let metrics = CollectorMetrics::new();
        let config = StorageConfig {
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(7),
            ..StorageConfig::default()
        };
        let switch = Switch::default();
        switch.stalled.store(true, SeqCst);
        let store = Timed::new(switch, &config, metrics.clone(), Readiness::new(metrics));
        let batch = BatchWrite {
            agent: "a",
            seq: 1,
            rows: crate::store::RowsRef::default(),
        };
        store.write_batch(batch).await.expect_err("stalled");
        assert_eq!(store.inner().writes.load(SeqCst), 1);

        // Still stalled: refused after the read timeout, without writing.
        let started = tokio::time::Instant::now();
        let error = store.write_batch(batch).await.expect_err("stalled");
        assert!(
            matches!(error, StoreError::TimedOut { op: "ping", .. }),
            "{error}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(store.inner().writes.load(SeqCst), 1);

        // Back: the write waits one write timeout, then goes through; the
        // next one does not wait.
        store.inner().stalled.store(false, SeqCst);
        let started = tokio::time::Instant::now();
        store.write_batch(batch).await.expect("written");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        let started = tokio::time::Instant::now();
        store.write_batch(batch).await.expect("written");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(store.inner().writes.load(SeqCst), 3);
    }
}
