//! livehead's ClickHouse schema as pure data: the flavour a server gets, the
//! versioned migrations, the table TTLs and the SQL the store runs. Nothing here
//! talks to a server, so tests can render all of it (the chdb check runs the
//! Modern flavour on a current ClickHouse).
//!
//! Every statement is idempotent (`IF NOT EXISTS`), table names are unqualified
//! (the client's `database` setting picks the database) and values are bound with
//! `?`, never formatted. The only numbers formatted into DDL are retention days.

use crate::store::sample_tables::{ColType, TABLES as SAMPLE_TABLES, TableSpec};
use crate::store::{StorageConfig, StoreError};

pub const HISTORY_TABLE: &str = "health_history";
pub const LAST_TABLE: &str = "health_last";
pub const BATCHES_TABLE: &str = "ingest_batches";
pub const BATCHES_VIEW: &str = "ingest_batches_mv";
pub const MIGRATIONS_TABLE: &str = "schema_migrations";

/// How long batch markers are kept: longer than any agent keeps unacked batches.
pub const BATCH_MARKER_DAYS: u32 = 7;

/// The oldest server the schema is tested against (Debian's `clickhouse-server`).
pub const MIN_SERVER: (u32, u32) = (18, 16);
/// From this version on: TTL, `LowCardinality`, codecs and the client's schema
/// validation (`RowBinaryWithNamesAndTypes`).
pub const MODERN_SERVER: (u32, u32) = (22, 3);

/// Which DDL a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Before 22.3: plain column types, retention by dropping day partitions in
    /// [`Store::maintain`](crate::store::Store::maintain).
    Legacy,
    /// 22.3 and later: `LowCardinality`, codecs, retention by table TTL.
    Modern,
}

impl Flavour {
    /// The flavour for a `SELECT version()` answer such as `18.16.1` or
    /// `24.8.4.13`.
    pub fn for_server(version: &str) -> Result<Self, StoreError> {
        let parsed = parse_version(version).ok_or_else(|| {
            StoreError::Unsupported(format!("unparsable server version {version:?}"))
        })?;
        if parsed < MIN_SERVER {
            return Err(StoreError::Unsupported(format!(
                "ClickHouse {version} is older than {}.{}",
                MIN_SERVER.0, MIN_SERVER.1
            )));
        }
        Ok(if parsed >= MODERN_SERVER {
            Self::Modern
        } else {
            Self::Legacy
        })
    }

    /// Whether the `clickhouse` crate's schema validation works on this server
    /// (it needs `RowBinaryWithNamesAndTypes`, unknown to 18.x).
    pub fn client_validation(self) -> bool {
        self == Self::Modern
    }

    /// Whether retention is done by table TTL (else by `maintain()`).
    pub fn uses_ttl(self) -> bool {
        self == Self::Modern
    }
}

/// `major.minor` of a version string like `18.16.1` or `25.3.2.39-stable`.
pub fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// One schema version: its statements run in order, then the version is recorded in
/// `schema_migrations`. Statements are idempotent, so a migration interrupted half
/// way (or run by two replicas at once) is simply run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<String>,
}

/// Creates `schema_migrations`; run at every start, before reading it.
pub fn bootstrap() -> String {
    // ReplacingMergeTree: two replicas migrating at once may both record a version;
    // merges fold the copies and readers use DISTINCT.
    format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (\n    version UInt32,\n    name String,\n    \
         applied_at DateTime\n) ENGINE = ReplacingMergeTree ORDER BY version"
    )
}

/// A column of the probe tables with its type per flavour.
struct Column {
    name: &'static str,
    legacy: &'static str,
    modern: &'static str,
}

const fn col(name: &'static str, legacy: &'static str, modern: &'static str) -> Column {
    Column {
        name,
        legacy,
        modern,
    }
}

const LC: &str = "LowCardinality(String)";
const US: &str = "UInt64 CODEC(T64, ZSTD)";

/// `health_history`'s columns; `health_last` has all but `seq`. The first seven keep
/// the old worker's names (`ts` is unix milliseconds). Those after `seq` were
/// added by migration 7 ([`TRUST_AND_CONTENT`]), so they come last.
const PROBE_COLUMNS: &[Column] = &[
    col("site", "String", LC),
    col("status", "UInt16", "UInt16"),
    col("ms", "UInt32", "UInt32 CODEC(T64, ZSTD)"),
    col("port", "UInt16", "UInt16"),
    col("location", "String", LC),
    col("cross", "UInt8", "UInt8"),
    col("ts", "UInt64", "UInt64 CODEC(Delta, ZSTD)"),
    col("latency_us", "UInt64", US),
    col("connect_us", "UInt64", US),
    col("first_byte_us", "UInt64", US),
    col("error", "String", LC),
    col("method", "String", LC),
    col("target", "String", LC),
    col("cert_expiry", "UInt64", "UInt64 CODEC(ZSTD)"),
    col("agent", "String", LC),
    col("seq", "UInt64", "UInt64 CODEC(Delta, ZSTD)"),
    col("cert_trust", "String", LC),
    col("cert_error", "String", LC),
    col("content", "String", LC),
    col("content_failure", "String", LC),
    // Text cut from bodies: too varied for a dictionary.
    col("content_excerpt", "String", "String CODEC(ZSTD)"),
    // Migration 8. The DEFAULT fills the rows written before it: they came
    // from agents without a vantage, which are inside.
    col(
        "vantage",
        "String DEFAULT 'inside'",
        "LowCardinality(String) DEFAULT 'inside'",
    ),
];

/// The probe columns migration 7 adds to both probe tables: a probe's
/// certificate trust and content check (issue 16).
const TRUST_AND_CONTENT: &[&str] = &[
    "cert_trust",
    "cert_error",
    "content",
    "content_failure",
    "content_excerpt",
];

/// The probe column migration 8 adds: where the probe was made from.
const VANTAGE: &str = "vantage";

/// `health_last` of migration 8 while it is filled, before it takes the
/// name; a statement naming it is part of the re-keying (see [`skip_when`]).
const NEW_LAST_TABLE: &str = "health_last_v8";
/// The `health_last` before migration 8 once renamed away, then dropped.
const OLD_LAST_TABLE: &str = "health_last_v7";

const BATCH_COLUMNS: &[Column] = &[
    col("agent", "String", LC),
    col("seq", "UInt64", "UInt64 CODEC(Delta, ZSTD)"),
    col("records", "UInt64", "UInt64"),
    col("written_at", "DateTime", "DateTime CODEC(Delta, ZSTD)"),
    // Added by migration 3, so last.
    col("digest", "UInt64", "UInt64"),
];

/// Column names of `health_history`, in insert order.
pub fn history_columns() -> Vec<&'static str> {
    PROBE_COLUMNS.iter().map(|c| c.name).collect()
}

/// Column names of `health_last`, in insert order.
pub fn last_columns() -> Vec<&'static str> {
    PROBE_COLUMNS
        .iter()
        .filter(|c| c.name != "seq")
        .map(|c| c.name)
        .collect()
}

/// Column names of `ingest_batches`, in insert order.
pub fn batch_columns() -> Vec<&'static str> {
    BATCH_COLUMNS.iter().map(|c| c.name).collect()
}

/// Column names of `schema_migrations`, in insert order.
pub fn migration_columns() -> Vec<&'static str> {
    vec!["version", "name", "applied_at"]
}

fn column_list(flavour: Flavour, columns: &[Column], skip: &[&str]) -> String {
    columns
        .iter()
        .filter(|c| !skip.contains(&c.name))
        .map(|c| {
            let ty = match flavour {
                Flavour::Legacy => c.legacy,
                Flavour::Modern => c.modern,
            };
            format!("    `{}` {ty}", c.name)
        })
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The day a probe row belongs to (server time zone), as the partition key.
const PROBE_DAY: &str = "toYYYYMMDD(toDateTime(intDiv(ts, 1000)))";

/// Settings for tables with a TTL: expired data goes by whole parts (the tables are
/// partitioned by day), never by rewriting parts.
fn ttl_settings(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Legacy => "",
        Flavour::Modern => " SETTINGS ttl_only_drop_parts = 1",
    }
}

/// The schema, oldest version first. Versions are the same in both flavours; only
/// the DDL differs. Table TTLs are not part of it (they follow the configuration at
/// every start, see [`table_ttls`]).
pub fn migrations(flavour: Flavour) -> Vec<Migration> {
    let history = format!(
        "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (\n{}\n) ENGINE = MergeTree \
         PARTITION BY {PROBE_DAY} ORDER BY (site, ts){}",
        column_list(
            flavour,
            PROBE_COLUMNS,
            &[TRUST_AND_CONTENT, &[VANTAGE]].concat()
        ),
        ttl_settings(flavour)
    );
    // ReplacingMergeTree(ts): the newest probe per site wins, so a replayed older
    // batch never overwrites a newer state. Readers use FINAL. Migration 8
    // rebuilds it keyed by (site, vantage) ([`last_table_ddl`]).
    let last = format!(
        "CREATE TABLE IF NOT EXISTS {LAST_TABLE} (\n{}\n) ENGINE = ReplacingMergeTree(ts) \
         ORDER BY site",
        column_list(
            flavour,
            PROBE_COLUMNS,
            &[&["seq", VANTAGE][..], TRUST_AND_CONTENT].concat()
        )
    );
    let batches = format!(
        "CREATE TABLE IF NOT EXISTS {BATCHES_TABLE} (\n{}\n) ENGINE = MergeTree \
         PARTITION BY toYYYYMMDD(written_at) ORDER BY (agent, seq){}",
        column_list(flavour, BATCH_COLUMNS, &["digest"]),
        ttl_settings(flavour)
    );
    // The batch marker is written by the same INSERT as the history rows (one block),
    // and counts exactly the rows the server kept (all of them, or the prefix an
    // interrupted INSERT delivered).
    let view = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {BATCHES_VIEW} TO {BATCHES_TABLE} AS \
         SELECT agent, seq, count() AS records, now() AS written_at \
         FROM {HISTORY_TABLE} GROUP BY agent, seq"
    );
    // Markers also carry the batch's digest (see `store::digest`), summed like
    // `records`, so that a batch whose sequence number holds other rows is told
    // from a replay. 18.x has no `ADD COLUMN IF NOT EXISTS`: the store skips
    // an `ADD COLUMN` whose column exists (see [`added_column`]). A view cannot
    // be altered in 18.x, so it is replaced; a batch written by another replica
    // in between gets no marker (a replay of it would be written twice): roll
    // this version out with one collector, or accept that window.
    let add_digest = format!("ALTER TABLE {BATCHES_TABLE} ADD COLUMN digest UInt64 DEFAULT 0");
    let drop_view = format!("DROP TABLE IF EXISTS {BATCHES_VIEW}");
    let view_with_digest = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {BATCHES_VIEW} TO {BATCHES_TABLE} AS \
         SELECT agent, seq, count() AS records, now() AS written_at, \
         sum(intHash64(bitXor(intHash64(ts), latency_us))) AS digest \
         FROM {HISTORY_TABLE} GROUP BY agent, seq"
    );
    vec![
        Migration {
            version: 1,
            name: "probe tables",
            statements: vec![history, last],
        },
        Migration {
            version: 2,
            name: "batch markers",
            statements: vec![batches, view],
        },
        Migration {
            version: 3,
            name: "batch digests",
            statements: vec![add_digest, drop_view, view_with_digest],
        },
        Migration {
            version: 4,
            name: "sample tables",
            statements: sample_tables(flavour, 4),
        },
        Migration {
            version: 5,
            name: "alert tables",
            statements: sample_tables(flavour, 5),
        },
        Migration {
            version: 6,
            name: "watchdog and heartbeat tables",
            statements: sample_tables(flavour, 6),
        },
        Migration {
            version: 7,
            name: "probe trust and content",
            statements: trust_and_content(flavour),
        },
        Migration {
            version: 8,
            name: "probe vantages",
            statements: vantages(flavour),
        },
    ]
}

/// Migration 8: `vantage` appended to `health_history`, and `health_last`
/// keyed by (site, vantage) so that each vantage keeps its own newest probe.
/// A sorting key cannot take a new column (18.x), so `health_last` is
/// rebuilt: a new table filled from the old one (its rows are all inside),
/// then both renamed in one `RENAME` and the old one dropped. The statements
/// up to the `RENAME` are skipped once `health_last` has `vantage` (see
/// [`skip_when`]), so a collector that dies anywhere in between starts the
/// copy again from a fresh table, or only drops what is left of the old one.
fn vantages(flavour: Flavour) -> Vec<String> {
    let add_history = PROBE_COLUMNS.iter().filter(|c| c.name == VANTAGE).map(|c| {
        let ty = match flavour {
            Flavour::Legacy => c.legacy,
            Flavour::Modern => c.modern,
        };
        format!("ALTER TABLE {HISTORY_TABLE} ADD COLUMN {VANTAGE} {ty}")
    });
    let copied = last_columns()
        .into_iter()
        .filter(|c| *c != VANTAGE)
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    add_history
        .chain([
            format!("DROP TABLE IF EXISTS {NEW_LAST_TABLE}"),
            last_table_ddl(flavour, NEW_LAST_TABLE),
            format!("INSERT INTO {NEW_LAST_TABLE} ({copied}) SELECT {copied} FROM {LAST_TABLE}"),
            format!(
                "RENAME TABLE {LAST_TABLE} TO {OLD_LAST_TABLE}, {NEW_LAST_TABLE} TO {LAST_TABLE}"
            ),
            format!("DROP TABLE IF EXISTS {OLD_LAST_TABLE}"),
        ])
        .collect()
}

/// `health_last` as of migration 8, named `table`. ReplacingMergeTree(ts):
/// the newest probe per (site, vantage) wins, so a replayed older batch never
/// overwrites a newer state.
fn last_table_ddl(flavour: Flavour, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n{}\n) ENGINE = ReplacingMergeTree(ts) \
         ORDER BY (site, {VANTAGE})",
        column_list(flavour, PROBE_COLUMNS, &["seq"])
    )
}

/// Migration 7: [`TRUST_AND_CONTENT`] appended to both probe tables; rows
/// written before read `''`, a String column's default (no `DEFAULT`
/// clause: it would have to precede a codec). Each `ADD COLUMN` is skipped when its column
/// exists, as migration 3's (see [`added_column`]). No view reads these
/// columns, so nothing else changes.
fn trust_and_content(flavour: Flavour) -> Vec<String> {
    [HISTORY_TABLE, LAST_TABLE]
        .iter()
        .flat_map(|table| {
            PROBE_COLUMNS
                .iter()
                .filter(|c| TRUST_AND_CONTENT.contains(&c.name))
                .map(move |c| {
                    let ty = match flavour {
                        Flavour::Legacy => c.legacy,
                        Flavour::Modern => c.modern,
                    };
                    format!("ALTER TABLE {table} ADD COLUMN {} {ty}", c.name)
                })
        })
        .collect()
}

/// The tables of [`crate::store::sample_tables`] that schema `version`
/// creates, each with its marker view.
fn sample_tables(flavour: Flavour, version: u32) -> Vec<String> {
    SAMPLE_TABLES
        .iter()
        .filter(|spec| spec.version == version)
        .flat_map(|spec| [sample_table(flavour, spec), sample_view(spec)])
        .collect()
}

/// A sample table ([`crate::store::sample_tables`]): partitioned by day like
/// `health_history`, sorted by [`TableSpec::sort_key`] so that both "this
/// node (or site) over the last hour" and "every node now" (today's
/// partition only) read few granules.
fn sample_table(flavour: Flavour, spec: &TableSpec) -> String {
    let columns = spec
        .columns
        .iter()
        .map(|(name, ty)| (*name, sample_column_type(flavour, name, *ty)))
        .chain([(
            "seq",
            match flavour {
                Flavour::Legacy => "UInt64",
                Flavour::Modern => "UInt64 CODEC(Delta, ZSTD)",
            },
        )])
        .map(|(name, ty)| format!("    `{name}` {ty}"))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{columns}\n) ENGINE = MergeTree \
         PARTITION BY {PROBE_DAY} ORDER BY ({}){}",
        spec.table,
        spec.sort_key().join(", "),
        ttl_settings(flavour)
    )
}

/// ClickHouse's type of a sample column. Legacy has no `Bool` (nor
/// `LowCardinality`, codecs): flags are `UInt8` there.
fn sample_column_type(flavour: Flavour, name: &str, ty: ColType) -> &'static str {
    match (flavour, ty) {
        (Flavour::Legacy, ColType::Text) => "String",
        (Flavour::Legacy, ColType::U32) => "UInt32",
        (Flavour::Legacy, ColType::U64) => "UInt64",
        (Flavour::Legacy, ColType::F64) => "Float64",
        (_, ColType::OptF64) => "Nullable(Float64)",
        (Flavour::Legacy, ColType::Bool) => "UInt8",
        (Flavour::Modern, ColType::Text) => LC,
        (Flavour::Modern, ColType::U32) => "UInt32 CODEC(T64, ZSTD)",
        (Flavour::Modern, ColType::U64) if name == "ts" => "UInt64 CODEC(Delta, ZSTD)",
        (Flavour::Modern, ColType::U64) => US,
        (Flavour::Modern, ColType::F64) => "Float64 CODEC(Gorilla, ZSTD)",
        (Flavour::Modern, ColType::Bool) => "Bool",
    }
}

/// The batch markers of a sample table, written by its INSERTs exactly as
/// `ingest_batches_mv` writes those of `health_history` (`node` is the
/// batch's agent), so that a batch's markers count its rows of every kind.
fn sample_view(spec: &TableSpec) -> String {
    super::markers::MarkedTable::of(spec.kind.into())
        .view_sql(&format!("{}_batches_mv", spec.table), BATCHES_TABLE)
}

/// Column names of a sample table, in insert order.
pub fn sample_columns(spec: &TableSpec) -> Vec<&'static str> {
    spec.column_names()
}

/// The table and column an `ALTER TABLE t ADD COLUMN c ...` statement of
/// [`migrations`] adds, which the store checks first: 18.x cannot say
/// `IF NOT EXISTS` there, and a migration must be safe to run again.
pub fn added_column(statement: &str) -> Option<(&str, &str)> {
    let mut words = statement.split_whitespace();
    match (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
    ) {
        ("ALTER", "TABLE", table, "ADD", "COLUMN") => Some((table, words.next()?)),
        _ => None,
    }
}

/// The table and column whose existence makes the store skip `statement`
/// of [`migrations`]: an `ADD COLUMN`'s own (see [`added_column`]), and
/// `health_last`'s `vantage` for the statements of migration 8 that re-key
/// it (they name [`NEW_LAST_TABLE`]): once it has the column, the re-keyed
/// table is in place.
pub fn skip_when(statement: &str) -> Option<(&str, &str)> {
    added_column(statement).or_else(|| {
        statement
            .split_whitespace()
            .any(|word| word.trim_end_matches(',') == NEW_LAST_TABLE)
            .then_some((LAST_TABLE, VANTAGE))
    })
}

/// Binds a table and a column name; answers 1 when the column exists.
pub const COLUMN_EXISTS_SQL: &str = "SELECT count() FROM system.columns \
     WHERE database = currentDatabase() AND table = ? AND name = ?";

/// A table's wanted TTL (Modern flavour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTtl {
    pub table: &'static str,
    /// The TTL expression, `None` to keep rows forever. Written the way servers
    /// print it back in `system.tables.engine_full`, so an unchanged TTL is
    /// recognised and not re-applied (which would rewrite every part).
    pub expression: Option<String>,
}

/// The TTLs the configuration asks for: `health_history` and the sample
/// tables by `retention_days` (0 = forever), `ingest_batches` by
/// [`BATCH_MARKER_DAYS`].
pub fn table_ttls(config: &StorageConfig) -> Vec<TableTtl> {
    let history = (config.retention_days > 0).then(|| {
        format!(
            "toDateTime(intDiv(ts, 1000)) + toIntervalDay({})",
            config.retention_days
        )
    });
    let mut ttls = vec![
        TableTtl {
            table: HISTORY_TABLE,
            expression: history.clone(),
        },
        TableTtl {
            table: BATCHES_TABLE,
            expression: Some(format!("written_at + toIntervalDay({BATCH_MARKER_DAYS})")),
        },
    ];
    ttls.extend(SAMPLE_TABLES.iter().map(|spec| TableTtl {
        table: spec.table,
        expression: history.clone().filter(|_| spec.expires()),
    }));
    ttls
}

/// The tables whose day partitions Legacy retention drops after
/// `retention_days`: `health_history` and the sample tables that expire.
pub fn retained_tables() -> impl Iterator<Item = &'static str> {
    std::iter::once(HISTORY_TABLE).chain(
        SAMPLE_TABLES
            .iter()
            .filter(|spec| spec.expires())
            .map(|spec| spec.table),
    )
}

/// The `ALTER` that brings `ttl.table` to the wanted TTL, given the table's current
/// `engine_full` (from [`ENGINE_FULL_SQL`]), or `None` when it already has it. Also
/// fixes tables created by the Legacy flavour before the server was upgraded.
pub fn ttl_statement(ttl: &TableTtl, engine_full: &str) -> Option<String> {
    let has_ttl = engine_full.contains(" TTL ");
    match &ttl.expression {
        Some(expr) if engine_full.contains(&format!(" TTL {expr}")) => None,
        Some(expr) => Some(format!("ALTER TABLE {} MODIFY TTL {expr}", ttl.table)),
        None if has_ttl => Some(format!("ALTER TABLE {} REMOVE TTL", ttl.table)),
        None => None,
    }
}

/// The server's version string.
pub const VERSION_SQL: &str = "SELECT version()";
/// Seconds since the server started.
pub const UPTIME_SQL: &str = "SELECT toUInt64(uptime())";
/// Binds the database name as an identifier.
pub const CREATE_DATABASE_SQL: &str = "CREATE DATABASE IF NOT EXISTS ?";
/// Versions already applied.
pub const APPLIED_VERSIONS_SQL: &str =
    "SELECT DISTINCT version FROM schema_migrations ORDER BY version";
/// Binds a table name (string); answers one `engine_full`.
pub const ENGINE_FULL_SQL: &str =
    "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?";
/// Binds an array of agents and an array of seqs; answers, for each (agent, seq)
/// among them that has markers, the rows those markers count. The caller keeps
/// the pairs it asked for (the arrays also match other combinations).
pub const BATCHES_SEEN_SQL: &str = "SELECT agent, seq, sum(records) AS records, \
     sum(digest) AS digest FROM ingest_batches WHERE has(?, agent) AND has(?, seq) GROUP BY agent, seq";
/// Binds a table name (string) and a number of days; answers the IDs of the day
/// partitions older than that (Legacy retention).
pub const STALE_PARTITIONS_SQL: &str = "SELECT DISTINCT partition_id FROM system.parts \
     WHERE database = currentDatabase() AND table = ? AND active \
     AND toUInt32OrZero(partition_id) > 0 \
     AND toUInt32OrZero(partition_id) < toYYYYMMDD(today() - ?) \
     ORDER BY partition_id";
/// Binds the table (identifier) and the partition ID (string).
pub const DROP_PARTITION_SQL: &str = "ALTER TABLE ? DROP PARTITION ID ?";

/// Binds a site and a vantage; answers its newest probe from there. The sort
/// key is (site, vantage), so this reads one granule; `ORDER BY ts` picks the newest of rows not merged yet.
pub const LAST_SQL: &str = "SELECT site, status, ms, port, location, `cross`, ts, \
     cert_trust, cert_error, content, content_failure, content_excerpt, vantage \
     FROM health_last WHERE site = ? AND vantage = ? ORDER BY ts DESC LIMIT 1";

/// Binds `since`; answers the newest probe of every (site, vantage) probed
/// since then, every column of `health_last` in `ProbeRow`'s order, by agent,
/// site then vantage.
/// `argMax` rather than `FINAL`, as [`dump_last_sql`].
pub const LATEST_PROBES_SQL: &str = "SELECT site, tupleElement(v, 1) AS status, \
     tupleElement(v, 2) AS ms, tupleElement(v, 3) AS port, tupleElement(v, 4) AS location, \
     tupleElement(v, 5) AS `cross`, last_ts AS ts, tupleElement(v, 6) AS latency_us, \
     tupleElement(v, 7) AS connect_us, tupleElement(v, 8) AS first_byte_us, \
     tupleElement(v, 9) AS error, tupleElement(v, 10) AS method, tupleElement(v, 11) AS target, \
     tupleElement(v, 12) AS cert_expiry, tupleElement(v, 13) AS agent, \
     tupleElement(v, 14) AS cert_trust, tupleElement(v, 15) AS cert_error, \
     tupleElement(v, 16) AS content, tupleElement(v, 17) AS content_failure, \
     tupleElement(v, 18) AS content_excerpt, vantage FROM (\
     SELECT site, vantage, max(ts) AS last_ts, argMax(tuple(status, ms, port, location, `cross`, \
     latency_us, connect_us, first_byte_us, error, method, target, cert_expiry, agent, \
     cert_trust, cert_error, content, content_failure, content_excerpt), ts) AS v \
     FROM health_last GROUP BY site, vantage HAVING last_ts >= ?) \
     ORDER BY agent, site, vantage";

/// The dashboard's site page: one site's probes since a time, newest
/// first, every column of `health_history` but `seq` in `ProbeRow`'s order.
/// Binds: site, since, limit.
pub const PROBE_HISTORY_SQL: &str = "SELECT site, status, ms, port, location, `cross`, ts, \
     latency_us, connect_us, first_byte_us, error, method, target, cert_expiry, agent, \
     cert_trust, cert_error, content, content_failure, content_excerpt, vantage FROM health_history \
     WHERE site = ? AND ts >= ? ORDER BY ts DESC LIMIT ?";

/// `/dump_last`: the newest probe per (site, vantage), then the filter (which
/// names the vantage), order and page.
/// The newest row is chosen with `argMax` rather than `FINAL` because a `WHERE`
/// on a non-key column may be applied before `FINAL` folds the rows on some
/// server versions (through PREWHERE), which would return a site's stale state.
/// The inner aliases differ from the column names so they don't shadow them
/// (ClickHouse substitutes aliases everywhere in a query). `conditions` comes
/// from [`DumpFilter::conditions`](crate::store::DumpFilter::conditions): text
/// with `?` placeholders only; the values, then offset and limit, are bound.
pub fn dump_last_sql(conditions: &str, order_by: &str) -> String {
    format!(
        "SELECT site, last_status AS status, last_ms AS ms, last_port AS port, \
         last_location AS location, last_cross AS `cross`, last_ts AS ts, \
         last_cert_trust AS cert_trust, last_cert_error AS cert_error, \
         last_content AS content, last_content_failure AS content_failure, \
         last_content_excerpt AS content_excerpt, vantage FROM (\
         SELECT site, vantage, argMax(status, ts) AS last_status, argMax(ms, ts) AS last_ms, \
         argMax(port, ts) AS last_port, argMax(location, ts) AS last_location, \
         argMax(`cross`, ts) AS last_cross, max(ts) AS last_ts, \
         argMax(cert_trust, ts) AS last_cert_trust, argMax(cert_error, ts) AS last_cert_error, \
         argMax(content, ts) AS last_content, \
         argMax(content_failure, ts) AS last_content_failure, \
         argMax(content_excerpt, ts) AS last_content_excerpt \
         FROM health_last GROUP BY site, vantage) \
         WHERE {conditions} ORDER BY {order_by} LIMIT ?, ?"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pick_flavours() {
        assert_eq!(parse_version("18.16.1"), Some((18, 16)));
        assert_eq!(parse_version("25.3.2.39-stable"), Some((25, 3)));
        assert_eq!(parse_version("22.3"), Some((22, 3)));
        assert_eq!(parse_version("nonsense"), None);
        assert_eq!(Flavour::for_server("18.16.1").ok(), Some(Flavour::Legacy));
        assert_eq!(Flavour::for_server("22.2.1").ok(), Some(Flavour::Legacy));
        assert_eq!(Flavour::for_server("22.3.1.1").ok(), Some(Flavour::Modern));
        assert_eq!(Flavour::for_server("26.9.2.1").ok(), Some(Flavour::Modern));
        assert!(matches!(
            Flavour::for_server("1.1.54394"),
            Err(StoreError::Unsupported(_))
        ));
        assert!(matches!(
            Flavour::for_server(""),
            Err(StoreError::Unsupported(_))
        ));
    }

    #[test]
    fn migrations_are_ordered_and_idempotent() {
        for flavour in [Flavour::Legacy, Flavour::Modern] {
            let all = migrations(flavour);
            let versions: Vec<u32> = all.iter().map(|m| m.version).collect();
            assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8]);
            for statement in all.iter().flat_map(|m| &m.statements) {
                let guarded = statement.contains(" IF NOT EXISTS ")
                    || statement.contains(" IF EXISTS ")
                    || skip_when(statement).is_some();
                assert!(guarded, "{statement}");
            }
        }
        assert!(bootstrap().contains(" IF NOT EXISTS "));
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE ingest_batches ADD COLUMN digest UInt64 DEFAULT 0"),
            Some(("ingest_batches", "digest"))
        );
        assert_eq!(
            added_column("ALTER TABLE health_last ADD COLUMN cert_trust String"),
            Some(("health_last", "cert_trust"))
        );
        assert_eq!(added_column("ALTER TABLE t MODIFY TTL x"), None);
        assert_eq!(added_column("DROP TABLE IF EXISTS v"), None);
    }

    #[test]
    fn rekeying_health_last_is_skipped_once_it_has_vantages() {
        let statements = vantages(Flavour::Legacy);
        let guards: Vec<_> = statements.iter().map(|s| skip_when(s)).collect();
        let column = |table| Some((table, "vantage"));
        assert_eq!(
            guards,
            [
                column("health_history"),
                column("health_last"),
                column("health_last"),
                column("health_last"),
                column("health_last"),
                None,
            ],
            "{statements:#?}"
        );
        assert!(statements[2].contains("ORDER BY (site, vantage)"));
        assert!(statements[3].starts_with("INSERT INTO health_last_v8 (`site`"));
        assert!(!statements[3].contains("vantage"), "{}", statements[3]);
        assert_eq!(statements[5], "DROP TABLE IF EXISTS health_last_v7");
    }

    #[test]
    fn legacy_ddl_uses_only_18_16_features() {
        let ddl: String = migrations(Flavour::Legacy)
            .iter()
            .flat_map(|m| m.statements.clone())
            .collect();
        for modern in ["LowCardinality", "CODEC", "TTL", "SETTINGS"] {
            assert!(!ddl.contains(modern), "{modern} in legacy DDL:\n{ddl}");
        }
    }

    #[test]
    fn ttl_statement_follows_engine_full() {
        let mut config = StorageConfig {
            retention_days: 30,
            ..StorageConfig::default()
        };
        let ttls = table_ttls(&config);
        let history = &ttls[0];
        let plain = "MergeTree PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts, 1000))) ORDER BY (site, ts) SETTINGS index_granularity = 8192";
        let with_30 = "MergeTree PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts, 1000))) ORDER BY (site, ts) TTL toDateTime(intDiv(ts, 1000)) + toIntervalDay(30) SETTINGS index_granularity = 8192";
        assert_eq!(
            ttl_statement(history, plain).as_deref(),
            Some(
                "ALTER TABLE health_history MODIFY TTL toDateTime(intDiv(ts, 1000)) + toIntervalDay(30)"
            )
        );
        assert_eq!(ttl_statement(history, with_30), None);
        config.retention_days = 300;
        let longer = &table_ttls(&config)[0];
        assert!(ttl_statement(longer, with_30).is_some_and(|s| s.contains("toIntervalDay(300)")));
        config.retention_days = 0;
        let forever = &table_ttls(&config)[0];
        assert_eq!(
            ttl_statement(forever, with_30).as_deref(),
            Some("ALTER TABLE health_history REMOVE TTL")
        );
        assert_eq!(ttl_statement(forever, plain), None);
    }
}
