//! How records leave a process: batches, the spool, and the transport that
//! gets them acknowledged by the collector. The agent ships its probes and
//! samples this way; the alerter ships its alert records the same way, so
//! both get the spool's durability and the collector's exactly-once storage.

use livehead_common::Shutdown;
use livehead_proto::v1::Record;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::AgentError;
use crate::batch::{self, Seqs};
use crate::config::{BatchConfig, CollectorConnConfig, SpoolConfig};
use crate::metrics::AgentMetrics;
use crate::spool::SharedSpool;
use crate::transport::{self, Stops};

/// The batcher and the transport of one sender, running.
pub struct Shipper {
    batcher: JoinHandle<u64>,
    transport: JoinHandle<()>,
    stops: Stops,
    spool: SharedSpool,
    drain_timeout: std::time::Duration,
    metrics: AgentMetrics,
}

/// What was left when a [`Shipper`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftover {
    /// Records the batcher put in the spool over the whole run.
    pub records_spooled: u64,
    /// Batches never acknowledged (they stay in a disk spool).
    pub unacked_batches: usize,
    pub unacked_records: usize,
    /// Records dropped because the spool was full.
    pub dropped_records: u64,
}

impl Shipper {
    /// Opens the spool (a disk spool gives back what an earlier run left)
    /// and starts batching what `records` yields under the name `agent_id`
    /// (empty: the certificate's name) and sending it to `collector`.
    pub async fn start(
        agent_id: String,
        batch: &BatchConfig,
        spool: &SpoolConfig,
        collector: &CollectorConnConfig,
        records: mpsc::Receiver<Record>,
        metrics: AgentMetrics,
    ) -> Result<Self, AgentError> {
        let connector = transport::connector(collector, metrics.tls.clone())?;
        let spool = crate::open_spool(spool, &metrics).await?;
        let seqs = Seqs::random();
        let builder =
            batch::BatchBuilder::new(agent_id, seqs.clone(), batch.max_records, batch.max_bytes);
        let batcher = tokio::spawn(batch::run(builder, batch.max_delay, records, spool.clone()));
        let stops = Stops {
            drain: Shutdown::new(),
            hard: Shutdown::new(),
        };
        let transport = tokio::spawn(transport::run(
            connector,
            collector.clone(),
            spool.clone(),
            seqs,
            metrics.clone(),
            stops.clone(),
        ));
        Ok(Self {
            batcher,
            transport,
            stops,
            spool,
            drain_timeout: collector.drain_timeout,
            metrics,
        })
    }

    /// Once every sender of the records channel is dropped: flushes the
    /// batcher, then lets the collector acknowledge what is pending for up
    /// to `drain_timeout`, and stops.
    pub async fn finish(mut self) -> Leftover {
        let records_spooled = self.batcher.await.unwrap_or(0);
        self.stops.drain.cancel();
        if tokio::time::timeout(self.drain_timeout, &mut self.transport)
            .await
            .is_err()
        {
            self.stops.hard.cancel();
            // It stops at once, counting what was in flight and never acknowledged.
            let _ = self.transport.await;
        }
        let (unacked_batches, unacked_records) = {
            let spool = self.spool.lock();
            (spool.len(), spool.records())
        };
        Leftover {
            records_spooled,
            unacked_batches,
            unacked_records,
            dropped_records: self.metrics.spool_dropped_records.get(),
        }
    }
}
