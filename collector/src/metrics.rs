//! The collector's Prometheus metrics.

use livehead_common::listener::ListenerMetrics;
use livehead_common::metrics::{register, registry};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

#[derive(Clone)]
pub struct CollectorMetrics {
    pub registry: Registry,
    /// Batches received, by outcome: written, duplicate, refused, failed.
    pub batches: IntCounterVec,
    /// Rows written.
    pub rows: IntCounter,
    /// Records rejected by validation, by field.
    pub rejects: IntCounterVec,
    /// Time to write one group of batches to the store (see `group_commit`).
    pub insert_seconds: Histogram,
    /// Batches written together by one store write.
    pub group_batches: Histogram,
    /// Agent streams open.
    pub streams: IntGauge,
    /// Store upkeep runs that failed.
    pub maintenance_errors: IntCounter,
    /// HTTP API requests, by endpoint (push, last, dump_last) and status code.
    pub api_requests: IntCounterVec,
    /// Records received on `/push`, by outcome: stored, refused (the request
    /// was invalid or too large), failed (the store was unavailable).
    pub api_push_records: IntCounterVec,
    /// Time of each store call, by op: write, last, dump_last, ping, maintain
    /// (timed-out calls count their timeout).
    pub store_seconds: HistogramVec,
    /// Store calls that timed out (`storage.read_timeout`/`write_timeout`), by op.
    pub store_timeouts: IntCounterVec,
    /// Store calls that failed, timeouts included, by op.
    pub store_errors: IntCounterVec,
    /// 1 when `/ready` answers 200.
    pub ready: IntGauge,
    /// Connections open, by port (grpc, http).
    pub connections: IntGaugeVec,
    /// Failed `accept` calls (e.g. out of file descriptors), by port.
    pub accept_errors: IntCounterVec,
    /// gRPC connections closed before their TLS handshake completed, by
    /// reason (timeout, error).
    pub tls_handshake_failures: IntCounterVec,
    /// `WatchService` subscribers connected.
    pub watch_subscribers: IntGauge,
    /// Messages sent to watch subscribers, by event (snapshot, synced, batch).
    pub watch_events: IntCounterVec,
    /// Watch streams ended with ABORTED because the subscriber fell behind.
    pub watch_lagged: IntCounter,
    /// Heartbeat pings, by outcome: stored, not_found, limited (over
    /// `heartbeats.max_pings_per_check`), invalid, failed (the store).
    pub heartbeat_pings: IntCounterVec,
}

impl CollectorMetrics {
    pub fn new() -> Self {
        let r = registry("livehead_collector");
        let by = |name: &str, help: &str, label: &str| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric"),
            )
        };
        Self {
            batches: by("batches_total", "Batches received, by outcome", "outcome"),
            heartbeat_pings: by(
                "heartbeat_pings_total",
                "Heartbeat pings, by outcome",
                "outcome",
            ),
            rows: register(
                &r,
                IntCounter::new("rows_total", "Rows written").expect("static metric"),
            ),
            rejects: by(
                "rejects_total",
                "Records rejected by validation, by field",
                "field",
            ),
            insert_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "insert_seconds",
                        "Time to write one group of batches to the store",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                )
                .expect("static metric"),
            ),
            group_batches: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "group_batches",
                        "Batches written together by one store write",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                    ]),
                )
                .expect("static metric"),
            ),
            streams: register(
                &r,
                IntGauge::new("streams", "Agent streams open").expect("static metric"),
            ),
            maintenance_errors: register(
                &r,
                IntCounter::new("maintenance_errors_total", "Store upkeep runs that failed")
                    .expect("static metric"),
            ),
            api_requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "api_requests_total",
                        "HTTP API requests, by endpoint and status code",
                    ),
                    &["endpoint", "code"],
                )
                .expect("static metric"),
            ),
            api_push_records: by(
                "api_push_records_total",
                "Records received on /push, by outcome",
                "outcome",
            ),
            store_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("store_seconds", "Time of each store call, by op").buckets(
                        vec![
                            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                            10.0, 30.0, 60.0,
                        ],
                    ),
                    &["op"],
                )
                .expect("static metric"),
            ),
            store_timeouts: by(
                "store_timeouts_total",
                "Store calls that timed out, by op",
                "op",
            ),
            store_errors: by(
                "store_errors_total",
                "Store calls that failed, timeouts included, by op",
                "op",
            ),
            ready: register(
                &r,
                IntGauge::new("ready", "1 when /ready answers 200").expect("static metric"),
            ),
            connections: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("connections", "Connections open, by port"),
                    &["port"],
                )
                .expect("static metric"),
            ),
            accept_errors: by(
                "accept_errors_total",
                "Failed accept calls (e.g. out of file descriptors), by port",
                "port",
            ),
            tls_handshake_failures: by(
                "tls_handshake_failures_total",
                "gRPC connections closed before their TLS handshake completed, by reason",
                "reason",
            ),
            watch_subscribers: register(
                &r,
                IntGauge::new("watch_subscribers", "WatchService subscribers connected")
                    .expect("static metric"),
            ),
            watch_events: by(
                "watch_events_total",
                "Messages sent to watch subscribers, by event",
                "event",
            ),
            watch_lagged: register(
                &r,
                IntCounter::new(
                    "watch_lagged_total",
                    "Watch streams aborted because the subscriber fell behind",
                )
                .expect("static metric"),
            ),
            registry: r,
        }
    }

    /// The connection metrics of one port ("grpc" or "http").
    pub fn listener(&self, port: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections.with_label_values(&[port]),
            accept_errors: self.accept_errors.with_label_values(&[port]),
        }
    }
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
