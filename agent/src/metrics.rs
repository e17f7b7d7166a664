//! The agent's Prometheus metrics.

use livehead_common::metrics::{register, registry};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the agent exports, registered once.
#[derive(Clone)]
pub struct AgentMetrics {
    pub registry: Registry,
    /// Probes done, by outcome: 2xx, 3xx, 4xx, 5xx, or the error kind.
    pub probes: IntCounterVec,
    pub probe_seconds: Histogram,
    pub rounds: IntCounter,
    pub round_seconds: Gauge,
    pub sites: IntGauge,
    pub discovery_errors: IntCounter,
    pub batches_sent: IntCounter,
    pub batches_acked: IntCounter,
    pub records_rejected: IntCounter,
    /// Batches the collector refused as a whole, for good (dropped).
    pub batches_refused: IntCounter,
    pub spool_batches: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_dropped_batches: IntCounter,
    pub spool_dropped_records: IntCounter,
    pub reconnects: IntCounter,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let r = registry("livehead_agent");
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("static metric"))
        };
        let gauge = |name: &str, help: &str| {
            register(&r, IntGauge::new(name, help).expect("static metric"))
        };
        Self {
            probes: register(
                &r,
                IntCounterVec::new(
                    Opts::new("probes_total", "Probes done, by outcome"),
                    &["outcome"],
                )
                .expect("static metric"),
            ),
            probe_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("probe_seconds", "Probe latency").buckets(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                )
                .expect("static metric"),
            ),
            rounds: counter("rounds_total", "Rounds completed"),
            round_seconds: register(
                &r,
                Gauge::new("round_seconds", "Duration of the last round").expect("static metric"),
            ),
            sites: gauge("sites", "Sites found by the last discovery"),
            discovery_errors: counter(
                "discovery_errors_total",
                "Site sources that could not be read",
            ),
            batches_sent: counter("batches_sent_total", "Batches sent (resends included)"),
            batches_acked: counter(
                "batches_acked_total",
                "Batches acknowledged by the collector",
            ),
            records_rejected: counter(
                "records_rejected_total",
                "Records the collector refused as invalid",
            ),
            batches_refused: counter(
                "batches_refused_total",
                "Batches the collector refused for good; dropped",
            ),
            spool_batches: gauge("spool_batches", "Batches awaiting acknowledgement"),
            spool_bytes: gauge("spool_bytes", "Encoded bytes awaiting acknowledgement"),
            spool_dropped_batches: counter(
                "spool_dropped_batches_total",
                "Oldest batches dropped because the spool was full",
            ),
            spool_dropped_records: counter(
                "spool_dropped_records_total",
                "Records in batches dropped because the spool was full",
            ),
            reconnects: counter("reconnects_total", "Collector connections lost or refused"),
            registry: r.clone(),
        }
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}
