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
    /// Content checks done, by outcome: `ok`, `failed`, `unchecked` (no
    /// answer, or a redirect without `statuses`).
    pub content_checks: IntCounterVec,
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
    pub spool_records: IntGauge,
    pub spool_dropped_batches: IntCounter,
    pub spool_dropped_records: IntCounter,
    /// Batches a disk spool could not write (each also counted as dropped).
    pub spool_write_errors: IntCounter,
    /// Disk spool files found unreadable (at start, or when sending).
    pub spool_corrupt_files: IntCounter,
    /// Batches split because the collector's limits refused them.
    pub batches_split: IntCounter,
    /// Batches resent under a new sequence number because the collector
    /// holds another batch under theirs.
    pub batches_renumbered: IntCounter,
    pub reconnects: IntCounter,
    /// Reloads of the collector connection's TLS files, and those refused.
    pub tls: livehead_common::tls::live::ReloadMetrics,
    /// The watchdog's events by kind, reloads refused, events dropped.
    pub watchdog: crate::watchdog::WatchdogMetrics,
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
            content_checks: register(
                &r,
                IntCounterVec::new(
                    Opts::new("content_checks_total", "Content checks done, by outcome"),
                    &["outcome"],
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
            spool_bytes: gauge(
                "spool_bytes",
                "Bytes awaiting acknowledgement (encoded, or files on disk)",
            ),
            spool_records: gauge("spool_records", "Records awaiting acknowledgement"),
            spool_dropped_batches: counter(
                "spool_dropped_batches_total",
                "Batches lost: dropped from the full spool and never acknowledged, or not written to the disk spool",
            ),
            spool_dropped_records: counter(
                "spool_dropped_records_total",
                "Records lost: dropped from the full spool and never acknowledged, or not written to the disk spool",
            ),
            spool_write_errors: counter(
                "spool_write_errors_total",
                "Batches the disk spool could not write (dropped)",
            ),
            spool_corrupt_files: counter(
                "spool_corrupt_files_total",
                "Disk spool files found unreadable and set aside",
            ),
            batches_split: counter(
                "batches_split_total",
                "Batches split to fit the collector's limits",
            ),
            batches_renumbered: counter(
                "batches_renumbered_total",
                "Batches resent under a new sequence number (another process used theirs)",
            ),
            reconnects: counter("reconnects_total", "Collector connections lost or refused"),
            tls: livehead_common::tls::live::ReloadMetrics::new(&r),
            watchdog: crate::watchdog::WatchdogMetrics {
                events: register(
                    &r,
                    IntCounterVec::new(
                        Opts::new(
                            "watchdog_events_total",
                            "Watchdog events (failed checks, recoveries and their steps, exhaustions, re-arms), by kind",
                        ),
                        &["kind"],
                    )
                    .expect("static metric"),
                ),
                reloads_refused: counter(
                    "watchdog_reloads_refused_total",
                    "Config reloads (SIGHUP) whose [watchdog] was refused; the running watchdog stayed",
                ),
                events_dropped: counter(
                    "watchdog_events_dropped_total",
                    "Watchdog events not sent to the collector because the agent was stopping",
                ),
            },
            registry: r.clone(),
        }
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}
