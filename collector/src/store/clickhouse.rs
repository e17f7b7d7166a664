//! The ClickHouse store: the `clickhouse` crate over HTTP, RowBinary with LZ4.
//!
//! Tables (see [`schema`]): `health_history` (every probe), `health_last` (the
//! newest probe per site, `ReplacingMergeTree(ts)`, read with `FINAL`),
//! `ingest_batches` (one marker per written batch) and `schema_migrations`.
//!
//! Exactly-once per batch without transactions: `ingest_batches` holds markers
//! `(agent, seq, records, digest)`, and a batch whose markers count all its
//! rows is not written again. Every table a batch's rows are appended to (the
//! sample tables, and `health_history` with history on) has a materialized
//! view writing, as part of each INSERT, a marker that counts the rows of each
//! batch the server kept ([`markers::MarkedTable`]), even when the INSERT was
//! cut short (18.16 keeps the rows received before the connection dropped; a
//! replay then writes the rest, see [`Store::write_batch`]). So markers count
//! records of every kind and do not depend on history being on. `health_last`
//! is written first; rewriting it on a replay is harmless since the newest
//! `ts` wins. A view's part is committed after the rows' part: a server killed
//! in between keeps rows no marker counts, which the next write of the batch
//! finds by the sort key and marks instead of writing them again
//! (`count_unmarked_rows`, within `storage.unmarked_rows_window` of the
//! server's start). What no view counts (the probes with history off, an
//! empty batch) is marked directly, last.
//!
//! Servers older than 22.3 (Debian's 18.16) get the [`Flavour::Legacy`] schema and
//! retention by dropping day partitions in [`Store::maintain`]; newer ones get
//! `LowCardinality`, codecs and table TTLs.

pub mod markers;
pub mod samples;
pub mod schema;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ::clickhouse::sql::Identifier;
use ::clickhouse::{Client, Compression, Row, RowWrite};
use livehead_common::clock;
use serde::{Deserialize, Serialize};

use self::markers::MarkedTable;
use self::schema::{
    APPLIED_VERSIONS_SQL, BATCH_MARKER_DAYS, BATCHES_SEEN_SQL, BATCHES_TABLE, COLUMN_EXISTS_SQL,
    CREATE_DATABASE_SQL, DROP_PARTITION_SQL, ENGINE_FULL_SQL, HISTORY_TABLE, LAST_SQL, LAST_TABLE,
    MIGRATIONS_TABLE, STALE_PARTITIONS_SQL, UPTIME_SQL, VERSION_SQL,
};
pub use self::schema::{Flavour, Migration};
use super::query::Param;
use super::rows::RowKind;
use super::{
    BatchWrite, DumpFilter, LastState, ProbeRow, Replay, Rows, RowsRef, StatsQuery, StorageConfig,
    Store, StoreError, WriteOutcome,
};

/// Bounds sending an INSERT and waiting for the server to finish it. An INSERT that
/// times out is not acked; the replay finds the marker if the server did write it.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the store waits, after finding rows that no marker counts, before
/// reading their markers again and marking them (see
/// `ClickHouseStore::count_unmarked_rows`). Rows without a marker only follow
/// a server stopped mid-insert, so this costs nothing in normal operation.
const UNMARKED_SETTLE: Duration = Duration::from_secs(1);

/// How often the server's uptime is asked for `storage.unmarked_rows_window`.
const UPTIME_CHECK: Duration = Duration::from_secs(60);

/// Writes batches to ClickHouse. Cheap to share: the client pools connections.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    flavour: Flavour,
    history: bool,
    retention_days: u32,
    unmarked_rows_window: Duration,
    /// Whether the server started recently, and when that was last asked.
    restarted: std::sync::Arc<tokio::sync::Mutex<Option<(std::time::Instant, bool)>>>,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("flavour", &self.flavour)
            .field("history", &self.history)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// Connects, creates the database when missing, picks the schema flavour from
    /// the server's version and applies the missing migrations and the configured
    /// TTLs. Safe to run by several replicas at once.
    pub async fn connect(config: &StorageConfig) -> Result<Self, StoreError> {
        let url = config
            .clickhouse_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or(StoreError::NotConfigured("clickhouse_url"))?;
        if config.database.is_empty() {
            return Err(StoreError::NotConfigured("database"));
        }
        // Validation stays off until the version is known: 18.x cannot answer in
        // RowBinaryWithNamesAndTypes.
        let server = Client::default()
            .with_url(url)
            .with_user(config.user.as_str())
            .with_password(config.password.as_str())
            .with_compression(Compression::Lz4)
            .with_validation(false);
        let version: String = server.query(VERSION_SQL).fetch_one().await?;
        let flavour = Flavour::for_server(&version)?;
        server
            .query(CREATE_DATABASE_SQL)
            .bind(Identifier(&config.database))
            .execute()
            .await?;
        let client = server
            .with_database(config.database.as_str())
            .with_validation(flavour.client_validation());
        let store = Self {
            client,
            flavour,
            history: config.history,
            retention_days: config.retention_days,
            unmarked_rows_window: config.unmarked_rows_window,
            restarted: Default::default(),
        };
        store.migrate().await?;
        if flavour.uses_ttl() {
            store.apply_ttls(config).await?;
        }
        tracing::info!(
            %version,
            ?flavour,
            database = %config.database,
            history = config.history,
            retention_days = config.retention_days,
            "clickhouse store ready"
        );
        Ok(store)
    }

    /// The schema flavour picked for the server.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.client.query(&schema::bootstrap()).execute().await?;
        let applied: Vec<u32> = self.client.query(APPLIED_VERSIONS_SQL).fetch_all().await?;
        for migration in schema::migrations(self.flavour) {
            if applied.contains(&migration.version) {
                continue;
            }
            for statement in &migration.statements {
                if let Some((table, column)) = schema::skip_when(statement)
                    && self.has_column(table, column).await?
                {
                    continue;
                }
                self.client.query(statement).execute().await?;
            }
            let mut insert = self
                .client
                .insert::<MigrationRow<'_>>(MIGRATIONS_TABLE)
                .await?;
            insert
                .write(&MigrationRow {
                    version: migration.version,
                    name: migration.name,
                    applied_at: unix_seconds(),
                })
                .await?;
            insert.end().await?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "clickhouse migration applied"
            );
        }
        Ok(())
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let found: u64 = self
            .client
            .query(COLUMN_EXISTS_SQL)
            .bind(table)
            .bind(column)
            .fetch_one()
            .await?;
        Ok(found > 0)
    }

    /// Brings table TTLs to the configuration, touching only those that differ
    /// (`MODIFY TTL` rewrites every part of the table).
    async fn apply_ttls(&self, config: &StorageConfig) -> Result<(), StoreError> {
        for ttl in schema::table_ttls(config) {
            let engine_full = self.engine_full(ttl.table).await?;
            let Some(statement) = schema::ttl_statement(&ttl, &engine_full) else {
                continue;
            };
            if let Err(err) = self.client.query(&statement).execute().await {
                // Another replica starting at the same time may have changed it
                // first (`REMOVE TTL` then fails on a table without TTL).
                let now = self.engine_full(ttl.table).await?;
                if schema::ttl_statement(&ttl, &now).is_some() {
                    return Err(err.into());
                }
            }
            tracing::info!(table = ttl.table, %statement, "clickhouse table TTL changed");
        }
        Ok(())
    }

    /// `system.tables.engine_full` of one of our tables (engine, keys, TTL, settings).
    async fn engine_full(&self, table: &str) -> Result<String, StoreError> {
        Ok(self
            .client
            .query(ENGINE_FULL_SQL)
            .bind(table)
            .fetch_one()
            .await?)
    }

    /// How many rows of each batch are stored and their digest, for the batches
    /// that have markers (absent: never written). Fewer rows than the batch's
    /// after an interrupted INSERT (see [`Store::write_batches`]).
    async fn rows_written(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<HashMap<(String, u64), (u64, u64)>, StoreError> {
        let agents: BTreeSet<&str> = batches.iter().map(|b| b.agent).collect();
        let seqs: BTreeSet<u64> = batches.iter().map(|b| b.seq).collect();
        let seen: Vec<Seen> = self
            .client
            .query(BATCHES_SEEN_SQL)
            .bind(agents.into_iter().collect::<Vec<_>>())
            .bind(seqs.into_iter().collect::<Vec<_>>())
            .fetch_all()
            .await?;
        Ok(seen
            .into_iter()
            .map(|s| ((s.agent, s.seq), (s.records, s.digest)))
            .collect())
    }

    /// Whether the server started less than `storage.unmarked_rows_window` ago (asked at
    /// most every [`UPTIME_CHECK`]; when it cannot say, assume it did). Only a
    /// server stopped mid-insert leaves rows without their marker, and their
    /// batches come back within minutes of its restart (agents resend what
    /// was not acknowledged as soon as a collector writes again), so the
    /// lookup for such rows, which costs ClickHouse CPU on every group
    /// write, runs only then.
    async fn restarted_lately(&self) -> bool {
        if self.unmarked_rows_window.is_zero() {
            return false;
        }
        let mut known = self.restarted.lock().await;
        if let Some((at, restarted)) = *known
            && at.elapsed() < UPTIME_CHECK
        {
            return restarted;
        }
        let restarted = match self.client.query(UPTIME_SQL).fetch_one::<u64>().await {
            Ok(uptime) => uptime < self.unmarked_rows_window.as_secs(),
            Err(_) => true,
        };
        *known = Some((std::time::Instant::now(), restarted));
        restarted
    }

    /// Finds the history rows of `batches` that no marker counts, makes
    /// `stored` count them, and returns the markers that record them.
    ///
    /// ClickHouse commits an INSERT's rows, then the part its view writes (the
    /// marker): a server killed in between keeps rows that no marker counts,
    /// and a replay would write them again. So for each batch, the first row
    /// its markers do not cover is looked up by the sort key (one key per
    /// batch, one granule each); the rare batches found are then counted in
    /// full.
    async fn count_unmarked_rows<'b>(
        &self,
        batches: &[BatchWrite<'b>],
        stored: &mut HashMap<(String, u64), (u64, u64)>,
    ) -> Result<Vec<BatchRow<'b>>, StoreError> {
        // The first row of each batch that its markers do not cover, by table.
        let mut firsts: HashMap<RowKind, Vec<(&BatchWrite<'b>, RowKey<'b>)>> = HashMap::new();
        for batch in batches {
            let marked = stored
                .get(&(batch.agent.to_owned(), batch.seq))
                .map_or(0, |m| m.0);
            let rest = batch
                .rows
                .skip(usize::try_from(marked).unwrap_or(usize::MAX));
            let Some((kind, ts)) = rest.first() else {
                continue;
            };
            // No view counts probes with history off: nothing to find.
            if kind == RowKind::Probe && !self.history {
                continue;
            }
            let Some(located) = located_by(rest, kind, batch.agent).next() else {
                continue;
            };
            firsts.entry(kind).or_default().push((batch, (located, ts)));
        }
        let mut orphaned: Vec<&BatchWrite<'b>> = Vec::new();
        for (kind, found) in firsts {
            let table = MarkedTable::of(kind);
            let keys: Vec<RowKey<'_>> = found.iter().map(|(_, key)| *key).collect();
            let seqs: BTreeSet<u64> = found.iter().map(|(b, _)| b.seq).collect();
            let agents: BTreeSet<&str> = found.iter().map(|(b, _)| b.agent).collect();
            let pairs: Vec<Pair> = self
                .client
                .query(&table.rows_at_sql())
                .bind(SqlTuple(&keys))
                .bind(agents.iter().collect::<Vec<_>>())
                .bind(seqs.iter().collect::<Vec<_>>())
                .fetch_all()
                .await?;
            let pairs: HashSet<(String, u64)> =
                pairs.into_iter().map(|p| (p.agent, p.seq)).collect();
            orphaned.extend(
                found
                    .into_iter()
                    .map(|(b, _)| b)
                    .filter(|b| pairs.contains(&(b.agent.to_owned(), b.seq))),
            );
        }
        if orphaned.is_empty() {
            return Ok(Vec::new());
        }
        // Rows without a marker may also be an INSERT still between its two
        // parts (one cut short a moment ago, still being processed): let it
        // end, and read the markers again, rather than mark its rows twice.
        tokio::time::sleep(UNMARKED_SETTLE).await;
        let again: Vec<BatchWrite<'b>> = orphaned.iter().map(|b| **b).collect();
        for (key, marker) in self.rows_written(&again).await? {
            stored.insert(key, marker);
        }
        let counted = self.count_rows(&orphaned).await?;
        let written_at = unix_seconds();
        let mut repairs = Vec::new();
        for batch in orphaned {
            let key = (batch.agent.to_owned(), batch.seq);
            let Some(&(records, digest)) = counted.get(&key) else {
                continue;
            };
            let (marked, marked_digest) = stored.get(&key).copied().unwrap_or((0, 0));
            if records <= marked {
                continue;
            }
            tracing::warn!(
                agent = batch.agent,
                seq = batch.seq,
                marked,
                stored = records,
                "batch rows stored without their marker (the server stopped mid-insert); marking them"
            );
            repairs.push(BatchRow {
                agent: batch.agent,
                seq: batch.seq,
                records: records - marked,
                written_at,
                digest: digest.wrapping_sub(marked_digest),
            });
            stored.insert(key, (records, digest));
        }
        Ok(repairs)
    }

    /// The rows of `batches` stored in every table a marker view watches,
    /// counted and digested as the views do, by (agent, seq).
    async fn count_rows(
        &self,
        batches: &[&BatchWrite<'_>],
    ) -> Result<HashMap<(String, u64), (u64, u64)>, StoreError> {
        let agents: Vec<&str> = batches.iter().map(|b| b.agent).collect();
        let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
        let mut total: HashMap<(String, u64), (u64, u64)> = HashMap::new();
        for &kind in RowKind::ALL {
            if !batches.iter().any(|b| b.rows.count(kind) > 0) {
                continue;
            }
            if kind == RowKind::Probe && !self.history {
                continue;
            }
            let located: BTreeSet<&str> = batches
                .iter()
                .flat_map(|b| located_by(b.rows, kind, b.agent))
                .collect();
            let located: Vec<&str> = located.into_iter().collect();
            let seen: Vec<Seen> = self
                .client
                .query(&MarkedTable::of(kind).count_sql())
                .bind(SqlTuple(&located))
                .bind(&agents)
                .bind(&seqs)
                .fetch_all()
                .await?;
            for s in seen {
                let entry = total.entry((s.agent, s.seq)).or_default();
                entry.0 += s.records;
                entry.1 = entry.1.wrapping_add(s.digest);
            }
        }
        Ok(total)
    }

    /// The sample kinds' rows of `batches`, one INSERT per table, in the batch order.
    async fn write_sample_rows(&self, batches: &[BatchWrite<'_>]) -> Result<(), StoreError> {
        let batches: Vec<(&str, u64, RowsRef<'_>)> =
            batches.iter().map(|b| (b.agent, b.seq, b.rows)).collect();
        samples::write_sample_rows(&self.client, &batches).await
    }

    /// Writes `rows` to `table` in one INSERT and waits until the server has them.
    async fn insert_rows<'r, T>(
        &self,
        table: &str,
        rows: impl IntoIterator<Item = T::Value<'r>>,
    ) -> Result<(), StoreError>
    where
        T: RowWrite,
    {
        let mut insert = self
            .client
            .insert::<T>(table)
            .await?
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        for row in rows {
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Legacy retention: drops the day partitions of `table` older than `days`.
    async fn drop_partitions_older_than(&self, table: &str, days: u32) -> Result<(), StoreError> {
        let stale: Vec<String> = self
            .client
            .query(STALE_PARTITIONS_SQL)
            .bind(table)
            .bind(days)
            .fetch_all()
            .await?;
        for partition in stale {
            self.client
                .query(DROP_PARTITION_SQL)
                .bind(Identifier(table))
                .bind(partition.as_str())
                .execute()
                .await?;
            tracing::info!(table, %partition, "clickhouse partition dropped (retention)");
        }
        Ok(())
    }
}

impl Store for ClickHouseStore {
    /// (1) the batches' markers tell how many of their rows are stored: all of
    /// them means Duplicate; (2) all probe rows of the others into
    /// `health_last`, one INSERT (idempotent); (3) their rows not stored yet,
    /// kind after kind in the batch order ([`super::rows`]), one INSERT per
    /// table: the sample tables, then `health_history`; each of these tables'
    /// materialized view writes each batch's marker (its rows' count and
    /// digest) in the same INSERT; (4) markers written directly for what no
    /// view counts: the probes when history is off, and empty batches.
    ///
    /// Why "rows not stored yet": when an INSERT's HTTP body is cut (the collector
    /// killed, or this future dropped, mid-request), ClickHouse 18.16 takes the end
    /// of the connection for the end of the data and keeps the rows received so
    /// far, with markers counting them. Tables are written in the batch order and
    /// rows batch after batch, each in its order, so what was kept of a batch is
    /// always a prefix of its rows; a replay writes the rest. This assumes a
    /// replay carries the same rows in the same order (the agent resends the
    /// batch from its spool).
    ///
    /// The batch's agent is written in the rows' `agent` (`node`) column
    /// (markers are keyed by it).
    async fn write_batches(
        &self,
        batches: &[BatchWrite<'_>],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut stored = self.rows_written(batches).await?;
        if self.restarted_lately().await {
            let repairs = self.count_unmarked_rows(batches, &mut stored).await?;
            if !repairs.is_empty() {
                self.insert_rows::<BatchRow<'_>>(BATCHES_TABLE, repairs)
                    .await?;
            }
        }
        let plan = plan_group(batches, &stored);
        // Rows are collected first: an iterator of closures held across the
        // INSERT's awaits would make this future not `Send`.
        if !plan.last.is_empty() {
            let rows: Vec<_> = plan.last.iter().map(|(a, p)| LastRow::new(p, a)).collect();
            self.insert_rows::<LastRow<'_>>(LAST_TABLE, rows).await?;
        }
        self.write_sample_rows(&plan.rest).await?;
        if self.history {
            let rows: Vec<_> = plan
                .rest
                .iter()
                .flat_map(|b| {
                    b.rows
                        .probes
                        .iter()
                        .map(|p| HistoryRow::new(p, b.agent, b.seq))
                })
                .collect();
            if !rows.is_empty() {
                self.insert_rows::<HistoryRow<'_>>(HISTORY_TABLE, rows)
                    .await?;
            }
        }
        let markers = direct_markers(&plan.rest, self.history);
        if !markers.is_empty() {
            self.insert_rows::<BatchRow<'_>>(BATCHES_TABLE, markers)
                .await?;
        }
        Ok(plan.outcomes)
    }

    async fn last(&self, site: &str, vantage: &str) -> Result<Option<LastState>, StoreError> {
        Ok(self
            .client
            .query(LAST_SQL)
            .bind(site)
            .bind(vantage)
            .fetch_optional()
            .await?)
    }

    async fn dump_last(&self, filter: &DumpFilter) -> Result<Vec<LastState>, StoreError> {
        let conditions = filter.conditions("");
        let sql = schema::dump_last_sql(&conditions.sql, filter.order.order_by());
        let mut query = self.client.query(&sql);
        for param in &conditions.params {
            query = match param {
                Param::Int(value) => query.bind(*value),
                Param::Text(value) => query.bind(value.as_str()),
            };
        }
        Ok(query
            .bind(filter.offset)
            .bind(filter.limit)
            .fetch_all()
            .await?)
    }

    async fn stats(&self, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
        samples::stats(&self.client, query).await
    }

    async fn latest_probes(&self, since_ms: u64) -> Result<Vec<ProbeRow>, StoreError> {
        let rows: Vec<ProbeRead> = self
            .client
            .query(schema::LATEST_PROBES_SQL)
            .bind(since_ms)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(ProbeRow::from).collect())
    }

    async fn probe_history(
        &self,
        site: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<ProbeRow>, StoreError> {
        let rows: Vec<ProbeRead> = self
            .client
            .query(schema::PROBE_HISTORY_SQL)
            .bind(site)
            .bind(since_ms)
            .bind(limit)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(ProbeRow::from).collect())
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        if self.flavour.uses_ttl() {
            return Ok(());
        }
        if self.retention_days > 0 {
            for table in schema::retained_tables() {
                self.drop_partitions_older_than(table, self.retention_days)
                    .await?;
            }
        }
        self.drop_partitions_older_than(BATCHES_TABLE, BATCH_MARKER_DAYS)
            .await
    }
}

/// What a group of batches needs written, given what is already stored.
struct GroupPlan<'a> {
    outcomes: Vec<WriteOutcome>,
    /// Every probe of every batch to write, for `health_last`.
    last: Vec<(&'a str, &'a ProbeRow)>,
    /// The batches to write, each with its rows not stored yet.
    rest: Vec<BatchWrite<'a>>,
}

fn plan_group<'a>(
    batches: &[BatchWrite<'a>],
    stored: &HashMap<(String, u64), (u64, u64)>,
) -> GroupPlan<'a> {
    let mut plan = GroupPlan {
        outcomes: Vec::with_capacity(batches.len()),
        last: Vec::new(),
        rest: Vec::new(),
    };
    // Batches planned for writing in this group: the same batch twice is an
    // agent that reconnected and resent it while the first copy was queued.
    let mut in_group: HashMap<(&str, u64), RowsRef<'a>> = HashMap::new();
    for batch in batches {
        let key = (batch.agent, batch.seq);
        let replay = match in_group.get(&key) {
            Some(first) => Replay::of(Some((first.len() as u64, first.digest())), batch.rows),
            None => Replay::of(
                stored.get(&(batch.agent.to_owned(), batch.seq)).copied(),
                batch.rows,
            ),
        };
        let skip = match replay {
            Replay::New => 0,
            Replay::Partial { rows } => {
                tracing::warn!(
                    agent = batch.agent,
                    seq = batch.seq,
                    stored = rows,
                    total = batch.rows.len(),
                    "batch was partly written by an interrupted insert; writing the rest"
                );
                rows
            }
            Replay::Duplicate => {
                plan.outcomes.push(WriteOutcome::Duplicate);
                continue;
            }
            Replay::Conflict => {
                plan.outcomes.push(WriteOutcome::Conflict);
                continue;
            }
        };
        in_group.insert(key, batch.rows);
        plan.last
            .extend(batch.rows.probes.iter().map(|p| (batch.agent, p)));
        plan.rest.push(BatchWrite {
            rows: batch.rows.skip(skip),
            ..*batch
        });
        plan.outcomes.push(WriteOutcome::Written {
            rows: batch.rows.len(),
        });
    }
    plan
}

/// The markers no materialized view writes: with history off, the probes'
/// (`health_last` has no view); and an empty batch's, so that its replay is
/// known too. They are written last, so what they count is the end of each
/// batch's rows, as the batch order wants.
fn direct_markers<'a>(rest: &[BatchWrite<'a>], history: bool) -> Vec<BatchRow<'a>> {
    let written_at = unix_seconds();
    rest.iter()
        .filter_map(|b| {
            let probes = if history { &[][..] } else { b.rows.probes };
            (!probes.is_empty() || b.rows.is_empty()).then(|| BatchRow {
                agent: b.agent,
                seq: b.seq,
                records: probes.len() as u64,
                written_at,
                digest: RowsRef::of_probes(probes).digest(),
            })
        })
        .collect()
}

/// A ClickHouse `DateTime` (unsigned 32-bit seconds) for now.
fn unix_seconds() -> u32 {
    u32::try_from(clock::unix_seconds()).unwrap_or(u32::MAX)
}

/// A row of `health_history`; field order is the column order of
/// [`schema::history_columns`].
#[derive(Row, Serialize)]
struct HistoryRow<'a> {
    site: &'a str,
    status: u16,
    ms: u32,
    port: u16,
    location: &'a str,
    cross: u8,
    ts: u64,
    latency_us: u64,
    connect_us: u64,
    first_byte_us: u64,
    error: &'a str,
    method: &'a str,
    target: &'a str,
    cert_expiry: u64,
    agent: &'a str,
    seq: u64,
    cert_trust: &'a str,
    cert_error: &'a str,
    content: &'a str,
    content_failure: &'a str,
    content_excerpt: &'a str,
    vantage: &'a str,
}

impl<'a> HistoryRow<'a> {
    fn new(p: &'a ProbeRow, agent: &'a str, seq: u64) -> Self {
        Self {
            site: &p.site,
            status: p.status,
            ms: p.ms,
            port: p.port,
            location: &p.location,
            cross: p.cross,
            ts: p.ts,
            latency_us: p.latency_us,
            connect_us: p.connect_us,
            first_byte_us: p.first_byte_us,
            error: &p.error,
            method: &p.method,
            target: &p.target,
            cert_expiry: p.cert_expiry,
            agent,
            seq,
            cert_trust: &p.cert_trust,
            cert_error: &p.cert_error,
            content: &p.content,
            content_failure: &p.content_failure,
            content_excerpt: &p.content_excerpt,
            vantage: &p.vantage,
        }
    }
}

/// A row of `health_last` (no `seq`).
#[derive(Row, Serialize)]
struct LastRow<'a> {
    site: &'a str,
    status: u16,
    ms: u32,
    port: u16,
    location: &'a str,
    cross: u8,
    ts: u64,
    latency_us: u64,
    connect_us: u64,
    first_byte_us: u64,
    error: &'a str,
    method: &'a str,
    target: &'a str,
    cert_expiry: u64,
    agent: &'a str,
    cert_trust: &'a str,
    cert_error: &'a str,
    content: &'a str,
    content_failure: &'a str,
    content_excerpt: &'a str,
    vantage: &'a str,
}

impl<'a> LastRow<'a> {
    fn new(p: &'a ProbeRow, agent: &'a str) -> Self {
        Self {
            site: &p.site,
            status: p.status,
            ms: p.ms,
            port: p.port,
            location: &p.location,
            cross: p.cross,
            ts: p.ts,
            latency_us: p.latency_us,
            connect_us: p.connect_us,
            first_byte_us: p.first_byte_us,
            error: &p.error,
            method: &p.method,
            target: &p.target,
            cert_expiry: p.cert_expiry,
            agent,
            cert_trust: &p.cert_trust,
            cert_error: &p.cert_error,
            content: &p.content,
            content_failure: &p.content_failure,
            content_excerpt: &p.content_excerpt,
            vantage: &p.vantage,
        }
    }
}

/// A row of [`schema::LATEST_PROBES_SQL`]: `health_last`'s columns.
#[derive(Row, Deserialize)]
struct ProbeRead {
    site: String,
    status: u16,
    ms: u32,
    port: u16,
    location: String,
    cross: u8,
    ts: u64,
    latency_us: u64,
    connect_us: u64,
    first_byte_us: u64,
    error: String,
    method: String,
    target: String,
    cert_expiry: u64,
    agent: String,
    cert_trust: String,
    cert_error: String,
    content: String,
    content_failure: String,
    content_excerpt: String,
    vantage: String,
}

impl From<ProbeRead> for ProbeRow {
    fn from(r: ProbeRead) -> Self {
        Self {
            site: r.site,
            status: r.status,
            ms: r.ms,
            port: r.port,
            location: r.location,
            cross: r.cross,
            ts: r.ts,
            latency_us: r.latency_us,
            connect_us: r.connect_us,
            first_byte_us: r.first_byte_us,
            error: r.error,
            method: r.method,
            target: r.target,
            cert_expiry: r.cert_expiry,
            agent: r.agent,
            cert_trust: r.cert_trust,
            cert_error: r.cert_error,
            content: r.content,
            content_failure: r.content_failure,
            content_excerpt: r.content_excerpt,
            vantage: r.vantage,
        }
    }
}

/// A row of the answer to [`BATCHES_SEEN_SQL`].
#[derive(Row, Deserialize)]
struct Seen {
    agent: String,
    seq: u64,
    records: u64,
    digest: u64,
}

/// A row found by its table's `located_by` column and `ts`.
type RowKey<'a> = (&'a str, u64);

/// The values of the `located_by` column ([`MarkedTable`]) of the rows of
/// `kind`, in order: their site, or (node-level kinds, found by node) the
/// agent once.
fn located_by<'a>(
    rows: RowsRef<'a>,
    kind: RowKind,
    agent: &'a str,
) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    match kind {
        RowKind::Probe => Box::new(rows.probes.iter().map(|r| r.site.as_str())),
        RowKind::SiteDisk => Box::new(rows.site_disks.iter().map(|r| r.site.as_str())),
        RowKind::SiteProcess => Box::new(rows.site_processes.iter().map(|r| r.site.as_str())),
        RowKind::Service => Box::new(rows.services.iter().map(|r| r.site.as_str())),
        _ => Box::new(std::iter::repeat_n(agent, rows.count(kind).min(1))),
    }
}

/// A row of the answer to [`MarkedTable::rows_at_sql`].
#[derive(Row, Deserialize)]
struct Pair {
    agent: String,
    seq: u64,
}

/// A list bound as an SQL tuple, `('a', 'b')`, where `IN` needs one: 18.16
/// does not take an array there, and the values are still escaped by the
/// client, never formatted. Never empty (`()` is not SQL).
struct SqlTuple<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for SqlTuple<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for item in self.0 {
            tuple.serialize_element(item)?;
        }
        tuple.end()
    }
}

/// A row of `ingest_batches`.
#[derive(Row, Serialize)]
struct BatchRow<'a> {
    agent: &'a str,
    seq: u64,
    records: u64,
    /// DateTime: unix seconds.
    written_at: u32,
    digest: u64,
}

/// A row of `schema_migrations`.
#[derive(Row, Serialize)]
struct MigrationRow<'a> {
    version: u32,
    name: &'a str,
    /// DateTime: unix seconds.
    applied_at: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed(ts: u64) -> crate::store::Rows {
        use crate::store::samples::NodeRow;
        crate::store::Rows {
            nodes: vec![NodeRow {
                ts,
                ..NodeRow::default()
            }],
            probes: vec![
                ProbeRow {
                    ts,
                    ..ProbeRow::default()
                };
                2
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_partly_written_batch_writes_its_rest_and_direct_markers_count_the_probes() {
        let rows = mixed(1);
        let empty = crate::store::Rows::default();
        let batches = [
            BatchWrite {
                agent: "a",
                seq: 1,
                rows: rows.as_ref(),
            },
            BatchWrite {
                agent: "a",
                seq: 2,
                rows: empty.as_ref(),
            },
        ];
        // The node row of batch 1 is stored (its view marked it).
        let node_only = rows.as_ref().take(1).digest();
        let stored = HashMap::from([(("a".to_owned(), 1), (1, node_only))]);
        let plan = plan_group(&batches, &stored);
        assert_eq!(
            plan.outcomes,
            [
                WriteOutcome::Written { rows: 3 },
                WriteOutcome::Written { rows: 0 }
            ]
        );
        assert_eq!(plan.last.len(), 2, "health_last gets every probe again");
        assert!(plan.rest[0].rows.nodes.is_empty());
        assert_eq!(plan.rest[0].rows.probes.len(), 2);
        // History off: the probes and the empty batch are marked directly.
        let markers = direct_markers(&plan.rest, false);
        let counts: Vec<(u64, u64)> = markers.iter().map(|m| (m.seq, m.records)).collect();
        assert_eq!(counts, [(1, 2), (2, 0)]);
        assert_eq!(
            markers[0].digest.wrapping_add(node_only),
            rows.as_ref().digest()
        );
        // History on: health_history's view marks the probes.
        let counts: Vec<(u64, u64)> = direct_markers(&plan.rest, true)
            .iter()
            .map(|m| (m.seq, m.records))
            .collect();
        assert_eq!(counts, [(2, 0)]);
        // Everything stored: a duplicate; another digest: a conflict.
        let all = HashMap::from([(("a".to_owned(), 1), (3, rows.as_ref().digest()))]);
        assert_eq!(
            plan_group(&batches[..1], &all).outcomes,
            [WriteOutcome::Duplicate]
        );
        let other = mixed(2);
        let replaced = [BatchWrite {
            rows: other.as_ref(),
            ..batches[0]
        }];
        assert_eq!(
            plan_group(&replaced, &all).outcomes,
            [WriteOutcome::Conflict]
        );
    }

    // The row structs are serialized in field order (RowBinary); they must list the
    // columns the schema declares, in the same order.
    #[test]
    fn row_structs_match_the_schema() {
        assert_eq!(
            HistoryRow::COLUMN_NAMES,
            schema::history_columns().as_slice()
        );
        assert_eq!(LastRow::COLUMN_NAMES, schema::last_columns().as_slice());
        assert_eq!(BatchRow::COLUMN_NAMES, schema::batch_columns().as_slice());
        assert_eq!(
            MigrationRow::COLUMN_NAMES,
            schema::migration_columns().as_slice()
        );
    }
}
