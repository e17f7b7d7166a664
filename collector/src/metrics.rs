//! The collector's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct CollectorMetrics {
    pub registry: Registry,
    /// Batches received, by outcome: written, duplicate, refused, failed.
    pub batches: IntCounterVec,
    /// Rows written.
    pub rows: IntCounter,
    /// Records rejected by validation, by field.
    pub rejects: IntCounterVec,
    /// Time to write one batch to the store.
    pub insert_seconds: Histogram,
    /// Agent streams open.
    pub streams: IntGauge,
    /// Store upkeep runs that failed.
    pub maintenance_errors: IntCounter,
}

impl CollectorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("livehead_collector".into()), None)
            .expect("static prefix is valid");
        let m = Self {
            batches: IntCounterVec::new(
                Opts::new("batches_total", "Batches received, by outcome"),
                &["outcome"],
            )
            .expect("static metric"),
            rows: IntCounter::new("rows_total", "Rows written").expect("static metric"),
            rejects: IntCounterVec::new(
                Opts::new("rejects_total", "Records rejected by validation, by field"),
                &["field"],
            )
            .expect("static metric"),
            insert_seconds: Histogram::with_opts(
                HistogramOpts::new("insert_seconds", "Time to write one batch to the store")
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
            )
            .expect("static metric"),
            streams: IntGauge::new("streams", "Agent streams open").expect("static metric"),
            maintenance_errors: IntCounter::new(
                "maintenance_errors_total",
                "Store upkeep runs that failed",
            )
            .expect("static metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.batches.clone()),
            Box::new(m.rows.clone()),
            Box::new(m.rejects.clone()),
            Box::new(m.insert_seconds.clone()),
            Box::new(m.streams.clone()),
            Box::new(m.maintenance_errors.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
