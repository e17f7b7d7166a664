//! Where accepted rows go and where the HTTP API reads them. The ingest path and
//! the API only see the [`Store`] trait; each backend lives in its own module:
//! `clickhouse` (the system of record) and `sqlite` (the embedded store used
//! when no ClickHouse URL is configured). [`AnyStore::open`] picks one.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use livehead_common::vantage::INSIDE;

pub mod clickhouse;
pub mod query;
pub mod rows;
#[cfg(test)]
pub(crate) mod sample_store_tests;
pub mod sample_tables;
pub mod samples;
pub mod sqlite;
pub mod timed;

pub use query::{DumpFilter, LastState, Order};
pub use rows::{Rows, RowsRef};
pub use samples::StatsQuery;

/// Storage options shared by every backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// ClickHouse HTTP endpoint, e.g. `http://127.0.0.1:8123`. Unset: the
    /// embedded SQLite store at `sqlite_path`.
    pub clickhouse_url: Option<String>,
    /// The embedded store's file, used when `clickhouse_url` is unset; created
    /// when missing. Default `livehead.db` (relative to the working directory).
    pub sqlite_path: PathBuf,
    /// Database holding livehead's tables; created when missing.
    pub database: String,
    /// ClickHouse user.
    pub user: String,
    /// ClickHouse password (empty for none).
    pub password: String,
    /// Keep every probe in `health_history` (the old worker's HISTORY_ENABLED).
    pub history: bool,
    /// Days of history (`health_history` and the sample tables) kept; 0
    /// keeps it forever. Default 30.
    pub retention_days: u32,
    /// ClickHouse: for this long after the server started, each group write
    /// also looks for rows a server stopped mid-insert left without their
    /// batch marker, so that their replay marks them instead of writing them
    /// twice. It costs ClickHouse CPU (one sort-key lookup per batch), so it
    /// only runs while such replays can come. 0 turns it off. Default 1h.
    #[serde(with = "humantime_serde")]
    pub unmarked_rows_window: Duration,
    /// Longest a read (`/last`, `/dump_last`, the readiness probe) may take;
    /// past it the API answers 503. Default 5s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest one group write may take, marker lookup included, and one
    /// upkeep pass; past it the write fails and the agents resend. The next
    /// write then waits until the store answers a read, plus this long, so
    /// the abandoned write is over before the replay looks markers up (see
    /// `timed`). Default 60s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: None,
            sqlite_path: PathBuf::from("livehead.db"),
            database: "livehead".into(),
            user: "default".into(),
            password: String::new(),
            history: true,
            retention_days: 30,
            unmarked_rows_window: Duration::from_secs(3600),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// One validated probe, as stored in `health_history` and `health_last`.
/// The first columns keep the old worker's names (`site, status, ms, port,
/// location, cross, ts`) so existing queries run unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Direct https probes: `trusted`, `expired`, `unknown_issuer`,
    /// `name_mismatch`, `self_signed` or `invalid`; empty when not checked.
    pub cert_trust: String,
    /// Why the certificate is not trusted (one line); empty otherwise.
    pub cert_error: String,
    /// A content check's outcome: `ok` or `failed`; empty when none ran.
    pub content: String,
    /// The assertion that failed, as configured; empty otherwise.
    pub content_failure: String,
    /// A short excerpt of the body around what failed (at most 200 bytes).
    pub content_excerpt: String,
    /// Where the agent probed from (`inside`, `outside`...); never empty
    /// once validated (an empty label is stored as `inside`).
    pub vantage: String,
}

/// Zeros and empty strings, from the [`INSIDE`] vantage (as a probe of an
/// agent that sends none).
impl Default for ProbeRow {
    fn default() -> Self {
        Self {
            site: String::new(),
            status: 0,
            ms: 0,
            port: 0,
            location: String::new(),
            cross: 0,
            ts: 0,
            latency_us: 0,
            connect_us: 0,
            first_byte_us: 0,
            error: String::new(),
            method: String::new(),
            target: String::new(),
            cert_expiry: 0,
            agent: String::new(),
            cert_trust: String::new(),
            cert_error: String::new(),
            content: String::new(),
            content_failure: String::new(),
            content_excerpt: String::new(),
            vantage: INSIDE.to_owned(),
        }
    }
}

impl ProbeRow {
    /// What the row holds in memory, its strings included: how the collector
    /// bounds the rows waiting to be written (`limits.max_queued_bytes`).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.site.len()
            + self.location.len()
            + self.error.len()
            + self.method.len()
            + self.target.len()
            + self.agent.len()
            + self.cert_trust.len()
            + self.cert_error.len()
            + self.content.len()
            + self.content_failure.len()
            + self.content_excerpt.len()
            + self.vantage.len()
    }
}

/// A batch to write, identified by (agent, seq) so that a replay is detected.
#[derive(Debug, Clone, Copy)]
pub struct BatchWrite<'a> {
    pub agent: &'a str,
    pub seq: u64,
    pub rows: RowsRef<'a>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The rows are durably written.
    Written { rows: usize },
    /// This (agent, seq) had been written before; nothing was written again.
    Duplicate,
    /// This (agent, seq) holds other rows (two processes sharing one identity
    /// numbered batches alike): nothing was written; the batch needs another
    /// sequence number.
    Conflict,
}

/// A fingerprint of rows, stored in each batch marker so that a batch that
/// reuses a written batch's sequence number is not taken for its replay.
/// Additive (a wrapping sum over the rows, whatever their kind) so that
/// ClickHouse's markers of a batch written in parts (one per table, and
/// several after an interrupted INSERT, see the ClickHouse store) add up to
/// the whole batch's; each row counts as a hash of its `ts` and one `UInt64`
/// of its kind (`KindRow::digest`) that ClickHouse's marker views compute
/// alike (`intHash64`), so that near-equal rows (a millisecond apart, a few
/// µs slower) cannot cancel out. 0 is the digest of markers written before
/// digests existed; they are not compared.
pub fn digest(rows: RowsRef<'_>) -> u64 {
    rows.digest()
}

/// One row's share of [`digest`]: `intHash64(bitXor(intHash64(ts), latency_us))`.
pub fn row_digest(ts: u64, latency_us: u64) -> u64 {
    int_hash64(int_hash64(ts) ^ latency_us)
}

/// ClickHouse's `intHash64` (MurmurHash3's 64-bit finaliser of the value
/// XOR a constant), bit for bit.
fn int_hash64(x: u64) -> u64 {
    let mut x = x ^ 0x4CF2_D2BA_AE6D_A887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// What a stored marker says of a batch about to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// No marker: write every row.
    New,
    /// The first `rows` rows are stored (an interrupted ClickHouse INSERT):
    /// write the rest.
    Partial { rows: usize },
    /// Every row is stored.
    Duplicate,
    /// The marker counts other rows.
    Conflict,
}

impl Replay {
    /// Compares a marker (`records` rows stored, their `digest`) with `rows`.
    pub fn of(marker: Option<(u64, u64)>, rows: RowsRef<'_>) -> Self {
        let Some((stored, stored_digest)) = marker else {
            return Self::New;
        };
        let Some(prefix) = usize::try_from(stored).ok().filter(|n| *n <= rows.len()) else {
            return Self::Conflict;
        };
        if stored_digest != 0 && stored_digest != rows.take(prefix).digest() {
            return Self::Conflict;
        }
        if prefix == rows.len() {
            Self::Duplicate
        } else {
            Self::Partial { rows: prefix }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    #[error("unsupported server: {0}")]
    Unsupported(String),
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: deadpool_sqlite::rusqlite::Error,
    },
    #[error("sqlite {path}: {reason}")]
    SqlitePool { path: PathBuf, reason: String },
    #[error("creating directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage.{0} is empty (--clickhouse-url / LIVEHEAD_CLICKHOUSE_URL, --database)")]
    NotConfigured(&'static str),
    #[error("{store}: {op} timed out after {after:?}")]
    TimedOut {
        store: &'static str,
        op: &'static str,
        after: Duration,
    },
}

impl StoreError {
    /// Whether the failure may come from the rows of one batch rather than from
    /// the store being unreachable, slow or full. The group commit then writes
    /// the failed group's batches one by one, so that one bad batch fails alone
    /// instead of failing every agent's batch written with it.
    pub fn may_concern_one_batch(&self) -> bool {
        use deadpool_sqlite::rusqlite::{Error as Sqlite, ErrorCode};
        match self {
            Self::ClickHouse(e) => matches!(
                e,
                ::clickhouse::error::Error::BadResponse(_)
                    | ::clickhouse::error::Error::Custom(_)
                    | ::clickhouse::error::Error::InvalidParams(_)
            ),
            Self::Sqlite { source, .. } => match source {
                Sqlite::ToSqlConversionFailure(_) | Sqlite::IntegralValueOutOfRange(..) => true,
                Sqlite::SqliteFailure(e, _) => matches!(
                    e.code,
                    ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
                ),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A backend the collector writes accepted batches to.
pub trait Store: Send + Sync + 'static {
    /// Writes the batches' rows, each unless its (agent, seq) was written
    /// before (or earlier in `batches`), and answers one outcome per batch, in
    /// order. Returns only once the rows are durable, so the caller may then ack
    /// them. Either every batch is handled or the call fails: a failure leaves
    /// each batch written in full, in part (a prefix, see the ClickHouse store)
    /// or not at all, which a replay of the batch completes.
    ///
    /// Backends write the whole group in one round trip per table (one
    /// transaction for SQLite), which is what lets the collector keep up with
    /// many agents: see `group_commit`.
    fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> impl Future<Output = Result<Vec<WriteOutcome>, StoreError>> + Send;

    /// [`Store::write_batches`] for one batch.
    fn write_batch(
        &self,
        batch: BatchWrite<'_>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        async move {
            match self.write_batches(&[batch]).await?.as_slice() {
                [outcome] => Ok(*outcome),
                other => unreachable!(
                    "write_batches answered {} outcomes for one batch",
                    other.len()
                ),
            }
        }
    }

    /// Periodic upkeep (retention on servers without TTL). Called every few
    /// minutes by the collector.
    fn maintain(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest probe of `site` (as stored: lower case) from `vantage`,
    /// `None` when the site was never seen from there.
    fn last(
        &self,
        site: &str,
        vantage: &str,
    ) -> impl Future<Output = Result<Option<LastState>, StoreError>> + Send;

    /// The newest probe of every site matching `filter`, in `filter.order` of
    /// `ts` (ties by site, ascending), paged by `filter.limit` and `filter.offset`.
    fn dump_last(
        &self,
        filter: &DumpFilter,
    ) -> impl Future<Output = Result<Vec<LastState>, StoreError>> + Send;

    /// Sample rows for `/stats`: the answer holds rows of `query.kind` only.
    fn stats(
        &self,
        query: &StatsQuery<'_>,
    ) -> impl Future<Output = Result<Rows, StoreError>> + Send;

    /// The newest probe of every site probed at or after `since_ms`, with
    /// every stored column (the sending agent included), ordered by agent
    /// then site: the probes of the watch snapshot (`crate::watch`). The
    /// default answers an error: backends that serve the watch override it.
    fn latest_probes(
        &self,
        since_ms: u64,
    ) -> impl Future<Output = Result<Vec<ProbeRow>, StoreError>> + Send {
        let _ = since_ms;
        async move {
            Err(StoreError::Unsupported(format!(
                "{}: no latest_probes",
                self.kind()
            )))
        }
    }

    /// The probes of `site` (as stored: lower case) at or after `since_ms`,
    /// from `health_history`, newest first, at most `limit` (the dashboard's
    /// site page). Empty when `storage.history` is off. The default answers
    /// an error: backends that serve the dashboard override it.
    fn probe_history(
        &self,
        site: &str,
        since_ms: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ProbeRow>, StoreError>> + Send {
        let _ = (site, since_ms, limit);
        async move {
            Err(StoreError::Unsupported(format!(
                "{}: no probe_history",
                self.kind()
            )))
        }
    }

    /// A cheap read proving the store answers, for readiness: the lookup of
    /// a site that cannot exist.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move { self.last("livehead-ready.invalid", INSIDE).await.map(drop) }
    }

    /// Which backend this is, for logs and messages.
    fn kind(&self) -> &'static str {
        "store"
    }
}

/// The configured backend: ClickHouse when `storage.clickhouse_url` is set, else
/// the embedded SQLite file.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Boxed: the client is much larger than the SQLite pool handle.
    ClickHouse(Box<clickhouse::ClickHouseStore>),
    Sqlite(sqlite::SqliteStore),
}

impl AnyStore {
    /// Opens the configured backend and brings its schema up to date.
    pub async fn open(config: &StorageConfig) -> Result<Self, StoreError> {
        match config.clickhouse_url.as_deref() {
            Some(_) => Ok(Self::ClickHouse(Box::new(
                clickhouse::ClickHouseStore::connect(config).await?,
            ))),
            None => Ok(Self::Sqlite(sqlite::SqliteStore::open(config).await?)),
        }
    }
}

impl Store for AnyStore {
    fn kind(&self) -> &'static str {
        match self {
            Self::ClickHouse(_) => "clickhouse",
            Self::Sqlite(_) => "sqlite",
        }
    }

    async fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        match self {
            Self::ClickHouse(s) => s.write_batches(batches).await,
            Self::Sqlite(s) => s.write_batches(batches).await,
        }
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        match self {
            Self::ClickHouse(s) => s.maintain().await,
            Self::Sqlite(s) => s.maintain().await,
        }
    }

    async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
        match self {
            Self::ClickHouse(s) => s.last(site, vantage).await,
            Self::Sqlite(s) => s.last(site, vantage).await,
        }
    }

    async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
        match self {
            Self::ClickHouse(s) => s.dump_last(filter).await,
            Self::Sqlite(s) => s.dump_last(filter).await,
        }
    }

    async fn stats(&self, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
        match self {
            Self::ClickHouse(s) => s.stats(query).await,
            Self::Sqlite(s) => s.stats(query).await,
        }
    }

    async fn latest_probes(&self, since_ms: u64) -> Result<Vec<ProbeRow>, StoreError> {
        match self {
            Self::ClickHouse(s) => s.latest_probes(since_ms).await,
            Self::Sqlite(s) => s.latest_probes(since_ms).await,
        }
    }

    async fn probe_history(
        &self,
        site: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<ProbeRow>, StoreError> {
        match self {
            Self::ClickHouse(s) => s.probe_history(site, since_ms, limit).await,
            Self::Sqlite(s) => s.probe_history(site, since_ms, limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_digests_are_clickhouses_int_hash64() {
        // Answers of ClickHouse 18.16 to `SELECT intHash64(toUInt64(x))`.
        assert_eq!(int_hash64(0), 4_761_183_170_873_013_810);
        assert_eq!(int_hash64(1), 10_577_349_846_663_553_072);
        assert_eq!(int_hash64(1_800_000_000_000), 11_976_087_854_763_700_442);
        assert_eq!(
            row_digest(1_800_000_000_003, 123_456),
            5_673_940_667_256_896_775
        );
    }

    #[test]
    fn near_equal_rows_do_not_cancel_out() {
        let row = |ts, latency_us| ProbeRow {
            ts,
            latency_us,
            ..ProbeRow::default()
        };
        // ts ≡ 3 (mod 8) one ms later with a latency ≡ 0 (mod 8) 7 µs longer:
        // equal under a plain `ts XOR latency_us`.
        let a = [row(1_800_000_000_003, 120_000)];
        let b = [row(1_800_000_000_004, 120_007)];
        assert_ne!(
            digest(RowsRef::of_probes(&a)),
            digest(RowsRef::of_probes(&b))
        );
        assert_eq!(
            Replay::of(
                Some((1, digest(RowsRef::of_probes(&a)))),
                RowsRef::of_probes(&b)
            ),
            Replay::Conflict
        );
        assert_eq!(
            Replay::of(
                Some((1, digest(RowsRef::of_probes(&a)))),
                RowsRef::of_probes(&a)
            ),
            Replay::Duplicate
        );
        let both = [a[0].clone(), b[0].clone()];
        assert_eq!(
            Replay::of(
                Some((1, digest(RowsRef::of_probes(&a)))),
                RowsRef::of_probes(&both)
            ),
            Replay::Partial { rows: 1 }
        );
        assert_eq!(
            Replay::of(Some((3, 0)), RowsRef::of_probes(&both)),
            Replay::Conflict
        );
        assert_eq!(
            Replay::of(Some((2, 0)), RowsRef::of_probes(&both)),
            Replay::Duplicate
        );
        assert_eq!(Replay::of(None, RowsRef::of_probes(&both)), Replay::New);
    }
}
