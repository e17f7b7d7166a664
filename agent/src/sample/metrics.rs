//! The sampler's own Prometheus metrics.

use livehead_common::metrics::register;
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

/// Registered in whatever registry the agent exports (its `AgentMetrics`
/// registry, prefixed `livehead_agent_`).
#[derive(Clone)]
pub struct SampleMetrics {
    /// Records produced, by kind (node, filesystem, disk, interface, pod,
    /// site_disk, site_process, service).
    pub records: IntCounterVec,
    /// Ticks of the sampling interval done.
    pub ticks: IntCounter,
    /// Sources that could not be read, by source (stat, meminfo, statvfs,
    /// cgroup, proc, web_root, systemctl, ...).
    pub read_errors: IntCounterVec,
    /// Ticks whose records found the channel full and had to wait.
    pub channel_full: IntCounter,
    /// Site walks skipped because the previous one still ran.
    pub site_walks_skipped: IntCounter,
    /// Duration of the last complete walk of the web root.
    pub site_walk_seconds: Gauge,
}

impl SampleMetrics {
    pub fn new(r: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            register(r, IntCounter::new(name, help).expect("static metric"))
        };
        Self {
            records: register(
                r,
                IntCounterVec::new(
                    Opts::new("sample_records_total", "Sample records produced, by kind"),
                    &["kind"],
                )
                .expect("static metric"),
            ),
            ticks: counter("sample_ticks_total", "Sampling ticks done"),
            read_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sample_read_errors_total",
                        "Sample sources that could not be read, by source",
                    ),
                    &["source"],
                )
                .expect("static metric"),
            ),
            channel_full: counter(
                "sample_channel_full_total",
                "Sampling ticks that found the record channel full and waited",
            ),
            site_walks_skipped: counter(
                "sample_site_walks_skipped_total",
                "Site walks skipped because the previous one was still running",
            ),
            site_walk_seconds: register(
                r,
                Gauge::new(
                    "sample_site_walk_seconds",
                    "Duration of the last walk of the web root",
                )
                .expect("static metric"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_under_the_agent_prefix() {
        let r = livehead_common::metrics::registry("livehead_agent");
        let m = SampleMetrics::new(&r);
        m.records.with_label_values(&["node"]).inc();
        m.read_errors.with_label_values(&["statvfs"]).inc();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.contains(&"livehead_agent_sample_records_total".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"livehead_agent_sample_read_errors_total".to_owned()));
    }
}
