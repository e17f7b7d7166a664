//! The embedded SQLite store, used when no ClickHouse URL is configured.
//!
//! Same tables and columns as ClickHouse (`health_history`, `health_last`,
//! `ingest_batches`, `schema_migrations`), so the queries users ran with
//! `sqlite3` on the old worker's D1 database run unchanged on this file.
//!
//! Exactly-once per batch comes from SQLite's transactions: one `BEGIN
//! IMMEDIATE` transaction inserts the batch marker, upserts `health_last` and
//! appends to `health_history`, so a batch is either entirely written or not at
//! all. A dropped `write_batch` future does not cut the transaction short: the
//! work runs to its end on a blocking thread and a replay then finds the marker.
//!
//! The file is in WAL mode: readers (the HTTP API, a `sqlite3` shell) never block
//! the writer. SQLite has a single writer, so writes queue on a fair async mutex
//! in the store rather than in SQLite's sleep-and-retry busy handler, which would
//! let a long maintenance pass starve batch writes.
//!
//! Integers are SQLite's signed 64 bits. Measured values above `i64::MAX`
//! (nothing real gets there) are stored as `i64::MAX`; a batch `seq` above it is
//! refused, since saturating it would merge distinct batches.

pub(crate) mod samples;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_sqlite::rusqlite::types::{Type, Value};
use deadpool_sqlite::rusqlite::{
    self, Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter,
};
use deadpool_sqlite::{Config, Hook, HookError, InteractError, Pool, PoolError, Runtime};
use livehead_common::clock;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::clickhouse::schema::BATCH_MARKER_DAYS;
use super::query::Param;
use super::sample_tables::TABLES;
use super::{
    BatchWrite, DumpFilter, LastState, ProbeRow, Replay, Rows, RowsRef, StatsQuery, StorageConfig,
    Store, StoreError, WriteOutcome, digest,
};

/// Connections in the pool. SQLite writes one transaction at a time whatever
/// the number of connections, so more only serve concurrent API reads, and each
/// one holds its own page cache.
const POOL_SIZE: usize = 4;

/// How long a statement waits for a lock held by another process (a `sqlite3`
/// shell, a second collector on the same file) before failing; the batch is then
/// not acked and the agent resends it.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Rows one maintenance `DELETE` removes. Each chunk is its own transaction, so
/// batch writes queued behind it wait for one chunk (milliseconds), not for the
/// whole backlog a first retention pass may find.
const DELETE_CHUNK: usize = 10_000;

const DAY_MS: u64 = 86_400_000;
const DAY_SECONDS: i64 = 86_400;

/// One schema version; its statements run in the same transaction as recording
/// it in `schema_migrations`, so a version is applied entirely or not at all.
struct Migration {
    version: u32,
    name: &'static str,
    /// The statements (rendered: the sample tables come from their specs).
    sql: fn() -> Cow<'static, str>,
}

/// Versions and names as in ClickHouse ([`super::clickhouse::schema::migrations`]).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "probe tables",
        sql: || PROBE_TABLES_SQL.into(),
    },
    Migration {
        version: 2,
        name: "batch markers",
        sql: || BATCH_MARKERS_SQL.into(),
    },
    Migration {
        version: 3,
        name: "batch digests",
        sql: || BATCH_DIGESTS_SQL.into(),
    },
    Migration {
        version: 4,
        name: "sample tables",
        sql: || samples::migration_sql(4).into(),
    },
    Migration {
        version: 5,
        name: "alert tables",
        sql: || samples::migration_sql(5).into(),
    },
    Migration {
        version: 6,
        name: "watchdog and heartbeat tables",
        sql: || samples::migration_sql(6).into(),
    },
    Migration {
        version: 7,
        name: "probe trust and content",
        sql: || TRUST_AND_CONTENT_SQL.into(),
    },
    Migration {
        version: 8,
        name: "probe vantages",
        sql: || VANTAGES_SQL.into(),
    },
];

const BOOTSTRAP_SQL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)";

/// ClickHouse's columns in ClickHouse's order (checked by the tests against
/// `schema::history_columns`). Columns that were optional in the old D1 schema
/// default to ClickHouse's zero values, like ClickHouse columns left out of an
/// INSERT. `cross` is quoted: it is an SQL keyword.
const PROBE_TABLES_SQL: &str = r#"
CREATE TABLE IF NOT EXISTS health_history (
    site TEXT NOT NULL,
    status INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    port INTEGER NOT NULL DEFAULT 0,
    location TEXT NOT NULL DEFAULT '',
    "cross" INTEGER NOT NULL DEFAULT 0,
    ts INTEGER NOT NULL,
    latency_us INTEGER NOT NULL DEFAULT 0,
    connect_us INTEGER NOT NULL DEFAULT 0,
    first_byte_us INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    cert_expiry INTEGER NOT NULL DEFAULT 0,
    agent TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS health_history_ts ON health_history (ts);
CREATE INDEX IF NOT EXISTS health_history_site_ts ON health_history (site, ts);
CREATE TABLE IF NOT EXISTS health_last (
    site TEXT NOT NULL PRIMARY KEY,
    status INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    port INTEGER NOT NULL DEFAULT 0,
    location TEXT NOT NULL DEFAULT '',
    "cross" INTEGER NOT NULL DEFAULT 0,
    ts INTEGER NOT NULL,
    latency_us INTEGER NOT NULL DEFAULT 0,
    connect_us INTEGER NOT NULL DEFAULT 0,
    first_byte_us INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    cert_expiry INTEGER NOT NULL DEFAULT 0,
    agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS health_last_ts ON health_last (ts);
"#;

/// `written_at` is indexed because markers pile up (one per batch) and
/// [`Store::maintain`] expires them by age.
const BATCH_MARKERS_SQL: &str = "
CREATE TABLE IF NOT EXISTS ingest_batches (
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    records INTEGER NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
);
CREATE INDEX IF NOT EXISTS ingest_batches_written_at ON ingest_batches (written_at);
";

/// The batch's [`digest`](super::digest), as a signed integer of the same bits.
/// Applied once: its transaction records the version.
const BATCH_DIGESTS_SQL: &str =
    "ALTER TABLE ingest_batches ADD COLUMN digest INTEGER NOT NULL DEFAULT 0;";

/// A probe's certificate trust and content check (issue 16), appended to
/// both probe tables as in ClickHouse; `''` in the rows written before.
/// Applied once: its transaction records the version.
const TRUST_AND_CONTENT_SQL: &str = "
ALTER TABLE health_history ADD COLUMN cert_trust TEXT NOT NULL DEFAULT '';
ALTER TABLE health_history ADD COLUMN cert_error TEXT NOT NULL DEFAULT '';
ALTER TABLE health_history ADD COLUMN content TEXT NOT NULL DEFAULT '';
ALTER TABLE health_history ADD COLUMN content_failure TEXT NOT NULL DEFAULT '';
ALTER TABLE health_history ADD COLUMN content_excerpt TEXT NOT NULL DEFAULT '';
ALTER TABLE health_last ADD COLUMN cert_trust TEXT NOT NULL DEFAULT '';
ALTER TABLE health_last ADD COLUMN cert_error TEXT NOT NULL DEFAULT '';
ALTER TABLE health_last ADD COLUMN content TEXT NOT NULL DEFAULT '';
ALTER TABLE health_last ADD COLUMN content_failure TEXT NOT NULL DEFAULT '';
ALTER TABLE health_last ADD COLUMN content_excerpt TEXT NOT NULL DEFAULT '';
";

/// Where a probe was made from (issue 16): `vantage` appended to both probe
/// tables as in ClickHouse (`'inside'` in the rows written before), and
/// `health_last` keyed by (site, vantage), which SQLite cannot alter in
/// place: a new table filled from the old one, which is dropped, then
/// renamed (its index goes with it and is made again). One transaction, as
/// every migration: a collector that dies half way finds the old table.
const VANTAGES_SQL: &str = r#"
ALTER TABLE health_history ADD COLUMN vantage TEXT NOT NULL DEFAULT 'inside';
CREATE TABLE health_last_v8 (
    site TEXT NOT NULL,
    status INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    port INTEGER NOT NULL DEFAULT 0,
    location TEXT NOT NULL DEFAULT '',
    "cross" INTEGER NOT NULL DEFAULT 0,
    ts INTEGER NOT NULL,
    latency_us INTEGER NOT NULL DEFAULT 0,
    connect_us INTEGER NOT NULL DEFAULT 0,
    first_byte_us INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    cert_expiry INTEGER NOT NULL DEFAULT 0,
    agent TEXT NOT NULL DEFAULT '',
    cert_trust TEXT NOT NULL DEFAULT '',
    cert_error TEXT NOT NULL DEFAULT '',
    content TEXT NOT NULL DEFAULT '',
    content_failure TEXT NOT NULL DEFAULT '',
    content_excerpt TEXT NOT NULL DEFAULT '',
    vantage TEXT NOT NULL DEFAULT 'inside',
    PRIMARY KEY (site, vantage)
);
INSERT INTO health_last_v8 (site, status, ms, port, location, "cross", ts, latency_us,
    connect_us, first_byte_us, error, method, target, cert_expiry, agent, cert_trust,
    cert_error, content, content_failure, content_excerpt)
SELECT site, status, ms, port, location, "cross", ts, latency_us, connect_us,
    first_byte_us, error, method, target, cert_expiry, agent, cert_trust, cert_error,
    content, content_failure, content_excerpt FROM health_last;
DROP TABLE health_last;
ALTER TABLE health_last_v8 RENAME TO health_last;
CREATE INDEX IF NOT EXISTS health_last_ts ON health_last (ts);
"#;

const APPLIED_VERSIONS_SQL: &str = "SELECT version FROM schema_migrations";
const RECORD_MIGRATION_SQL: &str =
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)";

/// Inserts nothing when (agent, seq) is already there: the replay test.
const INSERT_MARKER_SQL: &str = "INSERT OR IGNORE INTO ingest_batches \
     (agent, seq, records, written_at, digest) VALUES (?1, ?2, ?3, ?4, ?5)";
/// The marker an ignored insert found.
const MARKER_SQL: &str = "SELECT records, digest FROM ingest_batches WHERE agent = ?1 AND seq = ?2";

macro_rules! probe_columns {
    () => {
        "site, status, ms, port, location, \"cross\", ts, latency_us, connect_us, \
         first_byte_us, error, method, target, cert_expiry, agent, cert_trust, cert_error, \
         content, content_failure, content_excerpt, vantage"
    };
}

/// The newest `ts` per (site, vantage) wins, like ClickHouse's `ReplacingMergeTree(ts)` (on equal
/// `ts` the later write, as there), so a late older batch never overwrites a
/// newer state.
const UPSERT_LAST_SQL: &str = concat!(
    "INSERT INTO health_last (",
    probe_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18, ?19, ?20, ?21) \
     ON CONFLICT (site, vantage) DO UPDATE SET status = excluded.status, ms = excluded.ms, \
     port = excluded.port, location = excluded.location, \"cross\" = excluded.\"cross\", \
     ts = excluded.ts, latency_us = excluded.latency_us, connect_us = excluded.connect_us, \
     first_byte_us = excluded.first_byte_us, error = excluded.error, \
     method = excluded.method, target = excluded.target, \
     cert_expiry = excluded.cert_expiry, agent = excluded.agent, \
     cert_trust = excluded.cert_trust, cert_error = excluded.cert_error, \
     content = excluded.content, content_failure = excluded.content_failure, \
     content_excerpt = excluded.content_excerpt \
     WHERE excluded.ts >= health_last.ts"
);

const INSERT_HISTORY_SQL: &str = concat!(
    "INSERT INTO health_history (",
    probe_columns!(),
    ", seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
);

macro_rules! state_select {
    () => {
        "SELECT site, status, ms, port, location, \"cross\", ts, cert_trust, cert_error, \
         content, content_failure, content_excerpt, vantage FROM health_last"
    };
}

const LAST_SQL: &str = concat!(state_select!(), " WHERE site = ?1 AND vantage = ?2");

/// Binds `since`; every column of `health_last` in [`ProbeRow`]'s order.
const LATEST_PROBES_SQL: &str = concat!(
    "SELECT ",
    probe_columns!(),
    " FROM health_last WHERE ts >= ?1 ORDER BY agent, site, vantage"
);

/// Binds: site, since, limit. Ties in `ts` go to the row written last.
const PROBE_HISTORY_SQL: &str = concat!(
    "SELECT ",
    probe_columns!(),
    " FROM health_history WHERE site = ?1 AND ts >= ?2 ORDER BY ts DESC, rowid DESC LIMIT ?3"
);

/// Chunked through `rowid` because this SQLite has no `DELETE ... LIMIT`.
const EXPIRE_HISTORY_SQL: &str = "DELETE FROM health_history WHERE rowid IN \
     (SELECT rowid FROM health_history WHERE ts < ?1 LIMIT ?2)";
const EXPIRE_MARKERS_SQL: &str = "DELETE FROM ingest_batches WHERE rowid IN \
     (SELECT rowid FROM ingest_batches WHERE written_at < ?1 LIMIT ?2)";

/// The embedded store. Cheap to clone: clones share the pool and the write queue.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool,
    path: Arc<Path>,
    /// Held for every write transaction (see the module doc).
    write_queue: Arc<Mutex<()>>,
    history: bool,
    retention_days: u32,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("history", &self.history)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `config.sqlite_path` (creating it and its directory when missing),
    /// switches it to WAL and applies the missing migrations.
    pub async fn open(config: &StorageConfig) -> Result<Self, StoreError> {
        let path: Arc<Path> = Arc::from(config.sqlite_path.as_path());
        create_parent_dir(&path).await?;
        let store = Self {
            pool: open_pool(&path)?,
            path: Arc::clone(&path),
            write_queue: Arc::new(Mutex::new(())),
            history: config.history,
            retention_days: config.retention_days,
        };
        let applied = store.write(migrate).await?;
        for migration in applied {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "sqlite migration applied"
            );
        }
        tracing::info!(
            path = %path.display(),
            history = config.history,
            retention_days = config.retention_days,
            "sqlite store ready"
        );
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on a pooled connection, on a blocking thread.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        conn.interact(work)
            .await
            .map_err(|e| self.interact_error(&e))?
            .map_err(|source| self.sqlite_error(source))
    }

    /// [`Self::run`] for work that writes, in turn with the other writes. The
    /// turn ends when the work does, even if this future is dropped before.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let turn: OwnedMutexGuard<()> = Arc::clone(&self.write_queue).lock_owned().await;
        self.run(move |conn| {
            let _turn = turn;
            work(conn)
        })
        .await
    }

    /// Deletes what `sql` selects, [`DELETE_CHUNK`] rows per transaction, and
    /// returns how many rows went.
    async fn delete_in_chunks(&self, sql: &'static str, cutoff: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self
                .write(move |conn| {
                    conn.prepare_cached(sql)?
                        .execute(params![cutoff, DELETE_CHUNK as i64])
                })
                .await?;
            total += deleted as u64;
            if deleted < DELETE_CHUNK {
                return Ok(total);
            }
        }
    }

    fn sqlite_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn pool_error(&self, err: PoolError) -> StoreError {
        match err {
            PoolError::Backend(source) | PoolError::PostCreateHook(HookError::Backend(source)) => {
                self.sqlite_error(source)
            }
            other => StoreError::SqlitePool {
                path: self.path.to_path_buf(),
                reason: other.to_string(),
            },
        }
    }

    fn interact_error(&self, err: &InteractError) -> StoreError {
        StoreError::SqlitePool {
            path: self.path.to_path_buf(),
            reason: interact_reason(err).to_owned(),
        }
    }
}

impl Store for SqliteStore {
    /// One transaction for the whole group (one fsync, however many batches);
    /// per batch the marker, then `health_last`, then `health_history` (when
    /// on). An existing marker means Duplicate and nothing of that batch is
    /// written. The batch's agent goes in the rows' `agent` column, as with
    /// ClickHouse.
    async fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        // The work outlives this call (see the module doc), so it owns its rows.
        let owned = batches
            .iter()
            .map(|b| {
                let seq = i64::try_from(b.seq).map_err(|_| {
                    self.sqlite_error(rusqlite::Error::ToSqlConversionFailure(Box::new(
                        SeqOutOfRange(b.seq),
                    )))
                })?;
                Ok((b.agent.to_owned(), seq, b.rows.to_rows()))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let history = self.history;
        self.write(move |conn| write_group(conn, &owned, history))
            .await
    }

    /// Expires history older than `retention_days` (0 keeps it) and batch
    /// markers older than [`BATCH_MARKER_DAYS`], as ClickHouse's TTLs do.
    async fn maintain(&self) -> Result<(), StoreError> {
        if self.retention_days > 0 {
            let keep_ms = u64::from(self.retention_days) * DAY_MS;
            let cutoff = saturate(clock::unix_ms().saturating_sub(keep_ms));
            let rows = self.delete_in_chunks(EXPIRE_HISTORY_SQL, cutoff).await?;
            if rows > 0 {
                tracing::info!(rows, "sqlite history rows deleted (retention)");
            }
            let expiring = TABLES.iter().filter(|t| t.expires());
            for (sql, table) in samples::EXPIRE.iter().zip(expiring) {
                let rows = self.delete_in_chunks(sql, cutoff).await?;
                if rows > 0 {
                    tracing::info!(
                        rows,
                        table = table.table,
                        "sqlite sample rows deleted (retention)"
                    );
                }
            }
        }
        let cutoff = unix_seconds() - i64::from(BATCH_MARKER_DAYS) * DAY_SECONDS;
        self.delete_in_chunks(EXPIRE_MARKERS_SQL, cutoff).await?;
        Ok(())
    }

    async fn stats(&self, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
        let Some((sql, values)) = samples::stats_sql(query) else {
            return Ok(Rows::default());
        };
        let kind = query.kind;
        self.run(move |conn| samples::stats(conn, kind, &sql, values))
            .await
    }

    async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
        let key = [site.to_owned(), vantage.to_owned()];
        self.run(move |conn| {
            conn.prepare_cached(LAST_SQL)?
                .query_row(key, last_state)
                .optional()
        })
        .await
    }

    async fn latest_probes(&self, since_ms: u64) -> Result<Vec<ProbeRow>, StoreError> {
        self.run(move |conn| {
            conn.prepare_cached(LATEST_PROBES_SQL)?
                .query_map([saturate(since_ms)], probe_row)?
                .collect()
        })
        .await
    }

    async fn probe_history(
        &self,
        site: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<ProbeRow>, StoreError> {
        let site = site.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(PROBE_HISTORY_SQL)?
                .query_map(
                    params_from_iter([
                        Value::Text(site),
                        Value::Integer(saturate(since_ms)),
                        Value::Integer(i64::from(limit)),
                    ]),
                    probe_row,
                )?
                .collect()
        })
        .await
    }

    /// SQLite's `LIKE` ignores ASCII case where ClickHouse's does not; sites are
    /// stored in lower case and the API lowers the pattern, so both answer alike.
    async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
        let conditions = filter.conditions(" ESCAPE '\\'");
        let sql = format!(
            "{} WHERE {} ORDER BY {} LIMIT ? OFFSET ?",
            state_select!(),
            conditions.sql,
            filter.order.order_by()
        );
        let mut values: Vec<Value> = conditions.params.into_iter().map(bound_value).collect();
        values.push(Value::Integer(i64::from(filter.limit)));
        values.push(Value::Integer(saturate(filter.offset)));
        self.run(move |conn| {
            conn.prepare_cached(&sql)?
                .query_map(params_from_iter(values), last_state)?
                .collect()
        })
        .await
    }
}

#[derive(Debug, thiserror::Error)]
#[error("batch seq {0} is over SQLite's largest integer")]
struct SeqOutOfRange(u64);

async fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

fn open_pool(path: &Path) -> Result<Pool, StoreError> {
    let Ok(builder) = Config::new(path).builder(Runtime::Tokio1);
    let shown = path.to_path_buf();
    builder
        .max_size(POOL_SIZE)
        .post_create(Hook::async_fn(move |conn, _| {
            let shown = shown.clone();
            Box::pin(async move {
                let mode = conn
                    .interact(prepare_connection)
                    .await
                    .map_err(|e| HookError::message(interact_reason(&e)))?
                    .map_err(HookError::Backend)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    // Still correct, but readers then block the writer.
                    tracing::warn!(path = %shown.display(), %mode, "sqlite file is not in WAL mode");
                }
                Ok(())
            })
        }))
        .build()
        .map_err(|e| StoreError::SqlitePool {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Per-connection settings; answers the journal mode in effect. WAL is a
/// property of the file (the first connection switches it), the others are per
/// connection. `synchronous=FULL`: a batch is acked once written, so its commit
/// must survive a power loss or an OS crash too (`NORMAL` in WAL mode only
/// survives the process dying); the price is one fsync per batch.
fn prepare_connection(conn: &mut Connection) -> rusqlite::Result<String> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(mode)
}

fn interact_reason(err: &InteractError) -> &'static str {
    match err {
        InteractError::Panic(_) => "a database task panicked",
        InteractError::Cancelled => "a database task was cancelled",
    }
}

/// Applies the missing migrations in one transaction, so two collectors opening
/// the same file at once apply each version once. Answers those it applied.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Vec<&'static Migration>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(BOOTSTRAP_SQL)?;
    let applied = tx
        .prepare(APPLIED_VERSIONS_SQL)?
        .query_map([], |row| row.get::<_, u32>(0))?
        .collect::<rusqlite::Result<Vec<u32>>>()?;
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tx.execute_batch(&(migration.sql)())?;
        tx.execute(
            RECORD_MIGRATION_SQL,
            params![migration.version, migration.name, unix_seconds()],
        )?;
        done.push(migration);
    }
    tx.commit()?;
    Ok(done)
}

fn write_group(
    conn: &mut Connection,
    batches: &[(String, i64, Rows)],
    history: bool,
) -> rusqlite::Result<Vec<WriteOutcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcomes = batches
        .iter()
        .map(|(agent, seq, rows)| write_rows(&tx, agent, *seq, rows.as_ref(), history))
        .collect::<rusqlite::Result<_>>()?;
    tx.commit()?;
    Ok(outcomes)
}

/// Writes one batch inside the group's transaction; its marker (`INSERT OR
/// IGNORE`) tells a batch written before, even earlier in the same group, and
/// the marker's digest whether that was this batch or another one under the
/// same number.
fn write_rows(
    tx: &rusqlite::Transaction<'_>,
    agent: &str,
    seq: i64,
    rows: RowsRef<'_>,
    history: bool,
) -> rusqlite::Result<WriteOutcome> {
    let records = saturate(rows.len() as u64);
    let new = tx.prepare_cached(INSERT_MARKER_SQL)?.execute(params![
        agent,
        seq,
        records,
        unix_seconds(),
        i64::from_ne_bytes(digest(rows).to_ne_bytes())
    ])?;
    if new == 0 {
        let (stored, stored_digest): (i64, i64) = tx
            .prepare_cached(MARKER_SQL)?
            .query_row(params![agent, seq], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let marker = (
            u64::try_from(stored).unwrap_or(u64::MAX),
            u64::from_ne_bytes(stored_digest.to_ne_bytes()),
        );
        return Ok(match Replay::of(Some(marker), rows) {
            // A transaction writes a batch whole: never a part of it.
            Replay::Duplicate => WriteOutcome::Duplicate,
            Replay::New | Replay::Partial { .. } | Replay::Conflict => WriteOutcome::Conflict,
        });
    }
    // Non-negative: `write_batches` made it from a u64 below 2^63.
    samples::write_sample_rows(tx, agent, seq.unsigned_abs(), rows)?;
    let probes = rows.probes;
    {
        let mut upsert = tx.prepare_cached(UPSERT_LAST_SQL)?;
        for p in probes {
            upsert.execute(params_from_iter(probe_values(p, agent)))?;
        }
    }
    if history {
        let mut insert = tx.prepare_cached(INSERT_HISTORY_SQL)?;
        for p in probes {
            let values = probe_values(p, agent)
                .into_iter()
                .chain([Value::Integer(seq)]);
            insert.execute(params_from_iter(values))?;
        }
    }
    Ok(WriteOutcome::Written { rows: rows.len() })
}

/// The values of [`probe_columns!`], in order.
fn probe_values(p: &ProbeRow, agent: &str) -> [Value; 21] {
    [
        Value::Text(p.site.clone()),
        Value::Integer(p.status.into()),
        Value::Integer(p.ms.into()),
        Value::Integer(p.port.into()),
        Value::Text(p.location.clone()),
        Value::Integer(p.cross.into()),
        Value::Integer(saturate(p.ts)),
        Value::Integer(saturate(p.latency_us)),
        Value::Integer(saturate(p.connect_us)),
        Value::Integer(saturate(p.first_byte_us)),
        Value::Text(p.error.clone()),
        Value::Text(p.method.clone()),
        Value::Text(p.target.clone()),
        Value::Integer(saturate(p.cert_expiry)),
        Value::Text(agent.to_owned()),
        Value::Text(p.cert_trust.clone()),
        Value::Text(p.cert_error.clone()),
        Value::Text(p.content.clone()),
        Value::Text(p.content_failure.clone()),
        Value::Text(p.content_excerpt.clone()),
        Value::Text(p.vantage.clone()),
    ]
}

/// A filter value as SQLite gets it. A number above `i64::MAX` is bound as a
/// REAL: SQLite compares it exactly with the stored integers, so `ts >= huge`
/// matches nothing and `ts <= huge` everything, as in ClickHouse.
fn bound_value(param: Param) -> Value {
    match param {
        Param::Int(n) => i64::try_from(n).map_or(Value::Real(n as f64), Value::Integer),
        Param::Text(s) => Value::Text(s),
    }
}

/// A row of [`LATEST_PROBES_SQL`].
fn probe_row(row: &Row<'_>) -> rusqlite::Result<ProbeRow> {
    Ok(ProbeRow {
        site: row.get(0)?,
        status: row.get(1)?,
        ms: row.get(2)?,
        port: row.get(3)?,
        location: row.get(4)?,
        cross: row.get(5)?,
        ts: get_u64(row, 6)?,
        latency_us: get_u64(row, 7)?,
        connect_us: get_u64(row, 8)?,
        first_byte_us: get_u64(row, 9)?,
        error: row.get(10)?,
        method: row.get(11)?,
        target: row.get(12)?,
        cert_expiry: get_u64(row, 13)?,
        agent: row.get(14)?,
        cert_trust: row.get(15)?,
        cert_error: row.get(16)?,
        content: row.get(17)?,
        content_failure: row.get(18)?,
        content_excerpt: row.get(19)?,
        vantage: row.get(20)?,
    })
}

/// A row of [`state_select!`].
fn last_state(row: &Row<'_>) -> rusqlite::Result<LastState> {
    Ok(LastState {
        site: row.get(0)?,
        status: row.get(1)?,
        ms: row.get(2)?,
        port: row.get(3)?,
        location: row.get(4)?,
        cross: row.get(5)?,
        ts: get_u64(row, 6)?,
        cert_trust: row.get(7)?,
        cert_error: row.get(8)?,
        content: row.get(9)?,
        content_failure: row.get(10)?,
        content_excerpt: row.get(11)?,
        vantage: row.get(12)?,
    })
}

/// rusqlite reads `u64` only with its `fallible_uint` feature.
fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Integer, Box::new(e)))
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_seconds() -> i64 {
    saturate(clock::unix_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_filter_values_compare_exactly() {
        assert_eq!(bound_value(Param::Int(5)), Value::Integer(5));
        assert_eq!(
            bound_value(Param::Int(u64::MAX)),
            Value::Real(u64::MAX as f64)
        );
        assert_eq!(saturate(u64::MAX), i64::MAX);
    }

    #[test]
    fn migrations_are_ordered_and_idempotent() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8]);
        // CREATEs are idempotent; an ALTER runs once, in the transaction that
        // records its version.
        for migration in MIGRATIONS {
            let sql = (migration.sql)();
            for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                // Migration 8 rebuilds health_last through health_last_v8,
                // all of it in the transaction that records the version.
                let guarded = statement.contains(" IF NOT EXISTS ")
                    || statement.contains("ALTER TABLE")
                    || statement.contains("health_last_v8")
                    || statement.trim() == "DROP TABLE health_last";
                assert!(guarded, "{statement}");
            }
        }
    }
}
