//! Where accepted rows go. The ingest path only sees the [`Store`] trait; each
//! backend lives in its own module (`clickhouse`, and the embedded SQLite store
//! in a later change).

use std::future::Future;

pub mod clickhouse;

/// Storage options shared by every backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// ClickHouse HTTP endpoint, e.g. `http://127.0.0.1:8123`. Required for now.
    pub clickhouse_url: Option<String>,
    /// Database holding livehead's tables; created when missing.
    pub database: String,
    /// ClickHouse user.
    pub user: String,
    /// ClickHouse password (empty for none).
    pub password: String,
    /// Keep every probe in `health_history` (the old worker's HISTORY_ENABLED).
    pub history: bool,
    /// Days of history kept; 0 keeps it forever.
    pub retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: None,
            database: "livehead".into(),
            user: "default".into(),
            password: String::new(),
            history: true,
            retention_days: 30,
        }
    }
}

/// One validated probe, as stored in `health_history` and `health_last`.
/// The first columns keep the old worker's names (`site, status, ms, port,
/// location, cross, ts`) so existing queries run unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeRow {
    pub site: String,
    /// HTTP status, 0 when there was no answer.
    pub status: u16,
    /// Latency in whole milliseconds (compatibility; `latency_us` is exact).
    pub ms: u32,
    pub port: u16,
    /// Redirect target, empty when none.
    pub location: String,
    /// 1 when the redirect leaves the site's registrable domain.
    pub cross: u8,
    /// Probe start, unix milliseconds.
    pub ts: u64,
    pub latency_us: u64,
    pub connect_us: u64,
    pub first_byte_us: u64,
    /// "" when answered, else timeout/refused/reset/dns/tls/other.
    pub error: String,
    /// "HEAD" or "GET".
    pub method: String,
    /// Address or URL probed.
    pub target: String,
    /// Certificate expiry of an https target (unix ms), 0 when none.
    pub cert_expiry: u64,
    /// Agent that sent the row (its certificate name).
    pub agent: String,
}

/// A batch to write, identified by (agent, seq) so that a replay is detected.
#[derive(Debug, Clone, Copy)]
pub struct BatchWrite<'a> {
    pub agent: &'a str,
    pub seq: u64,
    pub probes: &'a [ProbeRow],
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The rows are durably written.
    Written { rows: usize },
    /// This (agent, seq) had been written before; nothing was written again.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    #[error("unsupported server: {0}")]
    Unsupported(String),
    #[error("storage.{0} is not set (--clickhouse-url / LIVEHEAD_CLICKHOUSE_URL, --database)")]
    NotConfigured(&'static str),
}

/// A backend the collector writes accepted batches to.
pub trait Store: Send + Sync + 'static {
    /// Writes the batch's rows unless (agent, seq) was written before. Returns
    /// only once the rows are durable, so the caller may then ack the batch.
    fn write_batch(
        &self,
        batch: BatchWrite<'_>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Periodic upkeep (retention on servers without TTL). Called every few
    /// minutes by the collector.
    fn maintain(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
