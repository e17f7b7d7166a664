//! The embedded SQLite store, each test on its own file in a temporary directory.
//! Tables are read back with rusqlite directly, and the old D1 queries with the
//! `sqlite3` shell (Debian package `sqlite3`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_sqlite::rusqlite::Connection;
use deadpool_sqlite::rusqlite::types::ValueRef;
use livehead_collector::store::clickhouse::schema;
use livehead_collector::store::sample_tables::TABLES as SAMPLE_TABLES;
use livehead_collector::store::sqlite::SqliteStore;
use livehead_collector::store::{
    BatchWrite, DumpFilter, LastState, Order, ProbeRow, RowsRef, StorageConfig, Store, StoreError,
    WriteOutcome,
};
use support::{CHECKS, checks};
use tempfile::TempDir;

const DAY_MS: u64 = 86_400_000;

fn config(dir: &TempDir) -> StorageConfig {
    StorageConfig {
        sqlite_path: dir.path().join("livehead.db"),
        ..StorageConfig::default()
    }
}

async fn open(config: &StorageConfig) -> SqliteStore {
    SqliteStore::open(config).await.expect("open the store")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A probe with a distinct value in every column.
fn probe(site: &str, ts: u64) -> ProbeRow {
    ProbeRow {
        site: site.to_owned(),
        status: 301,
        ms: 123,
        port: 8443,
        location: format!("https://www.{site}/"),
        cross: 1,
        ts,
        latency_us: 123_456,
        connect_us: 2_345,
        first_byte_us: 98_765,
        error: "timeout".to_owned(),
        method: "GET".to_owned(),
        target: format!("https://{site}:8443/"),
        cert_expiry: 1_900_000_000_000,
        agent: "ignored: the batch's agent is stored".to_owned(),
        cert_trust: CHECKS.cert_trust.to_owned(),
        cert_error: CHECKS.cert_error.to_owned(),
        content: CHECKS.content.to_owned(),
        content_failure: CHECKS.content_failure.to_owned(),
        content_excerpt: CHECKS.content_excerpt.to_owned(),
        vantage: "inside".to_owned(),
    }
}

/// A probe with the old worker's columns set as given.
fn state(site: &str, status: u16, ms: u32, location: &str, cross: u8, ts: u64) -> ProbeRow {
    ProbeRow {
        status,
        ms,
        location: location.to_owned(),
        cross,
        ..probe(site, ts)
    }
}

fn batch<'a>(agent: &'a str, seq: u64, probes: &'a [ProbeRow]) -> BatchWrite<'a> {
    BatchWrite {
        agent,
        seq,
        rows: RowsRef::of_probes(probes),
    }
}

async fn write(store: &SqliteStore, agent: &str, seq: u64, probes: &[ProbeRow]) -> WriteOutcome {
    store
        .write_batch(batch(agent, seq, probes))
        .await
        .expect("write batch")
}

/// The answer of `sql`, one line per row, values separated by `|` (as the
/// `sqlite3` shell prints them).
fn q(config: &StorageConfig, sql: &str) -> String {
    let conn = Connection::open(&config.sqlite_path).expect("open the file with rusqlite");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let columns = stmt.column_count();
    let mut rows = stmt.query([]).expect("query");
    let mut out = String::new();
    while let Some(row) = rows.next().expect("next row") {
        let values: Vec<String> = (0..columns)
            .map(|i| match row.get_ref(i).expect("a value") {
                ValueRef::Null => String::new(),
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Real(f) => f.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Blob(b) => format!("{b:?}"),
            })
            .collect();
        out.push_str(&values.join("|"));
        out.push('\n');
    }
    out
}

fn exec(config: &StorageConfig, sql: &str) {
    let conn = Connection::open(&config.sqlite_path).expect("open the file with rusqlite");
    conn.execute_batch(sql).expect("execute");
}

fn count(config: &StorageConfig, table: &str) -> u64 {
    q(config, &format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .expect("a count")
}

fn unix_seconds() -> u64 {
    now_ms() / 1000
}

const PROBE_COLUMNS: &str = "site, status, ms, port, location, \"cross\", ts, latency_us, \
                             connect_us, first_byte_us, error, method, target, cert_expiry, agent, \
                             cert_trust, cert_error, content, content_failure, content_excerpt";

#[tokio::test]
async fn open_creates_the_directory_tables_and_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        sqlite_path: dir.path().join("state/nested/livehead.db"),
        ..StorageConfig::default()
    };
    let store = open(&config).await;
    assert_eq!(store.path(), config.sqlite_path);

    let mut tables = vec![
        "health_history\n".to_owned(),
        "health_last\n".to_owned(),
        "ingest_batches\n".to_owned(),
        "schema_migrations\n".to_owned(),
    ];
    let mut indexes = vec![
        "health_history|health_history_site_ts\n".to_owned(),
        "health_history|health_history_ts\n".to_owned(),
        "health_last|health_last_ts\n".to_owned(),
        "ingest_batches|ingest_batches_written_at\n".to_owned(),
    ];
    for table in SAMPLE_TABLES {
        let name = table.table;
        tables.push(format!("{name}\n"));
        indexes.push(format!("{name}|{name}_key\n"));
        indexes.push(format!("{name}|{name}_ts\n"));
        let columns = q(
            &config,
            &format!("SELECT name FROM pragma_table_info('{name}') ORDER BY cid"),
        );
        assert_eq!(columns, table.column_names().join("\n") + "\n");
        let key = q(
            &config,
            &format!("SELECT name FROM pragma_index_info('{name}_key') ORDER BY seqno"),
        );
        assert_eq!(key, table.sort_key().join("\n") + "\n");
    }
    tables.sort();
    indexes.sort();
    assert_eq!(
        q(
            &config,
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ),
        tables.concat()
    );
    assert_eq!(
        q(
            &config,
            "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' \
             AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
        ),
        indexes.concat()
    );
    for (table, columns) in [
        ("health_history", schema::history_columns()),
        ("health_last", schema::last_columns()),
        ("ingest_batches", schema::batch_columns()),
        ("schema_migrations", schema::migration_columns()),
    ] {
        let names = q(
            &config,
            &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
        );
        assert_eq!(names, columns.join("\n") + "\n", "columns of {table}");
    }
    assert_eq!(
        q(
            &config,
            "SELECT name FROM pragma_table_info('health_last') WHERE pk > 0 ORDER BY pk"
        ),
        "site\nvantage\n"
    );
    assert_eq!(q(&config, "PRAGMA journal_mode"), "wal\n");
    assert_eq!(
        q(
            &config,
            "SELECT version, name, applied_at > strftime('%s', 'now') - 600 \
             FROM schema_migrations ORDER BY version"
        ),
        "1|probe tables|1\n2|batch markers|1\n3|batch digests|1\n4|sample tables|1\n\
         5|alert tables|1\n6|watchdog and heartbeat tables|1\n7|probe trust and content|1\n\
         8|probe vantages|1\n"
    );
}

#[tokio::test]
async fn open_reports_an_unusable_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write a file");
    let under_a_file = StorageConfig {
        sqlite_path: blocker.join("livehead.db"),
        ..StorageConfig::default()
    };
    let err = SqliteStore::open(&under_a_file)
        .await
        .expect_err("a file where the directory should be");
    assert!(
        matches!(&err, StoreError::CreateDir { path, .. } if *path == blocker),
        "{err}"
    );

    let a_directory = StorageConfig {
        sqlite_path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let err = SqliteStore::open(&a_directory)
        .await
        .expect_err("a directory is no database");
    assert!(
        matches!(&err, StoreError::Sqlite { path, .. } if path == dir.path()),
        "{err}"
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let probes = [probe("a.example", now_ms())];
    let store = open(&config).await;
    assert_eq!(
        write(&store, "edge-1", 1, &probes).await,
        WriteOutcome::Written { rows: 1 }
    );
    drop(store);
    let migrations = q(&config, "SELECT * FROM schema_migrations ORDER BY version");
    // Migration 1 would create this index again if it ran a second time.
    exec(&config, "DROP INDEX health_last_ts");

    let store = open(&config).await;
    assert_eq!(
        q(&config, "SELECT * FROM schema_migrations ORDER BY version"),
        migrations
    );
    assert_eq!(
        q(
            &config,
            "SELECT count(*) FROM sqlite_master WHERE name = 'health_last_ts'"
        ),
        "0\n"
    );
    assert_eq!(count(&config, "health_history"), 1);
    assert_eq!(q(&config, "SELECT site FROM health_last"), "a.example\n");
    assert_eq!(
        write(&store, "edge-1", 1, &probes).await,
        WriteOutcome::Duplicate,
        "the markers survive a restart"
    );
}

#[tokio::test]
async fn write_batch_writes_every_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let mut quoted = probe("o'brien.example", ts + 1);
    quoted.error = String::new();
    quoted.location = String::new();
    quoted.cross = 0;
    quoted.method = "HEAD".to_owned();
    let probes = [probe("a.example", ts), quoted];
    assert_eq!(
        write(&store, "edge-1", 7, &probes).await,
        WriteOutcome::Written { rows: 2 }
    );

    let expected_last = format!(
        "a.example|301|123|8443|https://www.a.example/|1|{ts}|123456|2345|98765|\
         timeout|GET|https://a.example:8443/|1900000000000|edge-1|\
         name_mismatch|certificate not valid for name \"x\"|failed|at least 512 bytes|<html><body></body></html>\n\
         o'brien.example|301|123|8443||0|{}|123456|2345|98765|\
         |HEAD|https://o'brien.example:8443/|1900000000000|edge-1|\
         name_mismatch|certificate not valid for name \"x\"|failed|at least 512 bytes|<html><body></body></html>\n",
        ts + 1
    );
    let last = q(
        &config,
        &format!("SELECT {PROBE_COLUMNS} FROM health_last ORDER BY site"),
    );
    assert_eq!(last, expected_last);

    let history = q(
        &config,
        &format!("SELECT {PROBE_COLUMNS}, seq FROM health_history ORDER BY site"),
    );
    let expected_history: String = expected_last
        .lines()
        .map(|line| format!("{line}|7\n"))
        .collect();
    assert_eq!(history, expected_history);

    // Integers are stored as integers, texts as texts (no type affinity surprises
    // for users' queries).
    assert_eq!(
        q(
            &config,
            "SELECT DISTINCT typeof(status), typeof(ts), typeof(location), typeof(seq) \
             FROM health_history"
        ),
        "integer|integer|text|integer\n"
    );
    let markers = q(
        &config,
        "SELECT agent, seq, records, written_at > strftime('%s', 'now') - 600 \
         FROM ingest_batches",
    );
    assert_eq!(markers, "edge-1|7|2|1\n");
}

#[tokio::test]
async fn health_last_keeps_the_newest_probe_per_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let mut newer = probe("a.example", ts);
    newer.status = 200;
    let mut older = probe("a.example", ts - 60_000);
    older.status = 503;
    let other = probe("b.example", ts - 60_000);

    write(&store, "edge-1", 2, std::slice::from_ref(&newer)).await;
    // An older batch arriving late (e.g. replayed from another agent's spool).
    write(&store, "edge-2", 1, &[older, other]).await;

    assert_eq!(
        q(
            &config,
            "SELECT site, status, ts, agent FROM health_last ORDER BY site"
        ),
        format!(
            "a.example|200|{ts}|edge-1\nb.example|301|{}|edge-2\n",
            ts - 60_000
        )
    );
    assert_eq!(count(&config, "health_history"), 3);

    // Equal ts: the later write wins, as with ReplacingMergeTree.
    let mut same_ts = newer.clone();
    same_ts.status = 204;
    write(&store, "edge-3", 1, &[same_ts]).await;
    assert_eq!(
        q(
            &config,
            "SELECT status, agent FROM health_last WHERE site = 'a.example'"
        ),
        "204|edge-3\n"
    );
}

#[tokio::test]
async fn a_replayed_batch_is_written_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let probes = [probe("a.example", ts), probe("b.example", ts)];
    // A quote in the agent checks the bound value in the duplicate check.
    let agent = "edge-1's";

    assert_eq!(
        write(&store, agent, 1, &probes).await,
        WriteOutcome::Written { rows: 2 }
    );
    for _ in 0..2 {
        assert_eq!(
            write(&store, agent, 1, &probes).await,
            WriteOutcome::Duplicate
        );
    }
    assert_eq!(count(&config, "health_history"), 2);

    // Same seq from another agent, and the next seq: both new.
    assert_eq!(
        write(&store, "edge-2", 1, &probes).await,
        WriteOutcome::Written { rows: 2 }
    );
    assert_eq!(
        write(&store, agent, 2, &probes).await,
        WriteOutcome::Written { rows: 2 }
    );
    assert_eq!(count(&config, "health_history"), 6);

    // A second store on the same file (another collector) sees the markers too.
    let other = open(&config).await;
    assert_eq!(
        write(&other, "edge-2", 1, &probes).await,
        WriteOutcome::Duplicate
    );
    assert_eq!(
        q(
            &config,
            "SELECT agent, seq, records FROM ingest_batches ORDER BY agent, seq"
        ),
        "edge-1's|1|2\nedge-1's|2|2\nedge-2|1|2\n"
    );
}

/// One call for a group, as the collector's group-commit writer makes: one
/// transaction, so a batch written before is a duplicate, a batch repeated in
/// the group is written once, and a group that fails writes nothing.
#[tokio::test]
async fn a_group_of_batches_is_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let old = [probe("old.example", ts)];
    let new = [probe("a.example", ts), probe("b.example", ts)];
    write(&store, "edge-1", 1, &old).await;

    let group = [
        batch("edge-1", 1, &old),
        batch("edge-2", 1, &new),
        batch("edge-2", 1, &new),
        batch("edge-1", 2, &[]),
    ];
    let outcomes = store.write_batches(&group).await.expect("group");
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Duplicate,
            WriteOutcome::Written { rows: 2 },
            WriteOutcome::Duplicate,
            WriteOutcome::Written { rows: 0 },
        ]
    );
    assert_eq!(count(&config, "health_history"), 3);
    assert_eq!(
        q(
            &config,
            "SELECT agent, seq, records FROM ingest_batches ORDER BY agent, seq"
        ),
        "edge-1|1|1\nedge-1|2|0\nedge-2|1|2\n"
    );

    let fresh = [probe("c.example", ts)];
    let failing = [
        batch("edge-3", 1, &fresh),
        batch("edge-3", u64::MAX, &fresh),
    ];
    store
        .write_batches(&failing)
        .await
        .expect_err("a seq SQLite cannot hold fails the group");
    assert_eq!(
        count(&config, "health_history"),
        3,
        "nothing of the group written"
    );
}

#[tokio::test]
async fn an_empty_batch_is_acked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    assert_eq!(
        write(&store, "edge-1", 9, &[]).await,
        WriteOutcome::Written { rows: 0 }
    );
    assert_eq!(
        write(&store, "edge-1", 9, &[]).await,
        WriteOutcome::Duplicate
    );
    assert_eq!(
        q(&config, "SELECT agent, seq, records FROM ingest_batches"),
        "edge-1|9|0\n"
    );
}

#[tokio::test]
async fn history_off_fills_only_health_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&dir);
    config.history = false;
    let store = open(&config).await;
    let ts = now_ms();
    let probes = [probe("a.example", ts), probe("b.example", ts)];

    assert_eq!(
        write(&store, "edge-1", 1, &probes).await,
        WriteOutcome::Written { rows: 2 }
    );
    assert_eq!(
        write(&store, "edge-1", 1, &probes).await,
        WriteOutcome::Duplicate
    );
    assert_eq!(count(&config, "health_history"), 0);
    assert_eq!(
        q(&config, "SELECT site FROM health_last ORDER BY site"),
        "a.example\nb.example\n"
    );
    assert_eq!(
        q(&config, "SELECT agent, seq, records FROM ingest_batches"),
        "edge-1|1|2\n"
    );
}

#[tokio::test]
async fn concurrent_batches_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let mut writers = tokio::task::JoinSet::new();
    let mut readers = tokio::task::JoinSet::new();
    for seq in 0..16u64 {
        let writer = store.clone();
        writers.spawn(async move {
            let probes: Vec<ProbeRow> = (0..50)
                .map(|i| probe(&format!("s{i}.example"), ts + seq))
                .collect();
            writer.write_batch(batch("edge-1", seq, &probes)).await
        });
        let reader = store.clone();
        readers.spawn(async move { reader.dump_last(&DumpFilter::default()).await });
    }
    let mut written = 0;
    for outcome in writers.join_all().await {
        match outcome.expect("write") {
            WriteOutcome::Written { rows } => written += rows,
            WriteOutcome::Duplicate | WriteOutcome::Conflict => {
                panic!("distinct seqs are never duplicates")
            }
        }
    }
    for states in readers.join_all().await {
        assert!(states.expect("read").len() <= 50);
    }
    assert_eq!(written, 800);
    assert_eq!(count(&config, "health_history"), 800);
    assert_eq!(count(&config, "ingest_batches"), 16);
    assert_eq!(
        q(&config, "SELECT DISTINCT ts FROM health_last"),
        format!("{}\n", ts + 15)
    );
}

#[tokio::test]
async fn retention_deletes_old_history_and_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&dir);
    config.retention_days = 30;
    let store = open(&config).await;
    let now = now_ms();
    // More than two deletion chunks of old rows.
    let old: Vec<ProbeRow> = (0..25_001)
        .map(|i| probe(&format!("s{}.example", i % 3), now - 40 * DAY_MS))
        .collect();
    let edge = [probe("a.example", now - 29 * DAY_MS)];
    let recent = [probe("a.example", now)];
    write(&store, "edge-1", 1, &old).await;
    write(&store, "edge-1", 2, &edge).await;
    write(&store, "edge-1", 3, &recent).await;
    // A marker from ten days ago (markers are kept 7 days).
    exec(
        &config,
        &format!(
            "INSERT INTO ingest_batches (agent, seq, records, written_at) \
             VALUES ('edge-0', 1, 1, {})",
            unix_seconds() - 10 * 86_400
        ),
    );

    store.maintain().await.expect("maintain");

    assert_eq!(
        q(&config, "SELECT ts FROM health_history ORDER BY ts"),
        format!("{}\n{now}\n", now - 29 * DAY_MS)
    );
    assert_eq!(
        q(
            &config,
            "SELECT agent, seq FROM ingest_batches ORDER BY agent, seq"
        ),
        "edge-1|1\nedge-1|2\nedge-1|3\n"
    );
    // health_last is not subject to retention.
    assert_eq!(count(&config, "health_last"), 4);

    // Idempotent; and retention 0 keeps history forever.
    store.maintain().await.expect("maintain again");
    assert_eq!(count(&config, "health_history"), 2);
    drop(store);
    config.retention_days = 0;
    let forever = open(&config).await;
    let ancient = [probe("c.example", now - 400 * DAY_MS)];
    write(&forever, "edge-1", 4, &ancient).await;
    forever.maintain().await.expect("maintain forever");
    assert_eq!(count(&config, "health_history"), 3);
}

#[tokio::test]
async fn last_answers_known_and_unknown_sites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let mut plain = probe("b.example", ts + 5);
    plain.location = String::new();
    plain.cross = 0;
    plain.status = 200;
    write(&store, "edge-1", 1, &[probe("a.example", ts), plain]).await;

    assert_eq!(
        store.last("a.example", "inside").await.expect("last"),
        Some(LastState {
            site: "a.example".into(),
            status: 301,
            ms: 123,
            port: 8443,
            location: "https://www.a.example/".into(),
            cross: 1,
            ts,
            ..checks()
        })
    );
    assert_eq!(
        store.last("b.example", "inside").await.expect("last"),
        Some(LastState {
            site: "b.example".into(),
            status: 200,
            ms: 123,
            port: 8443,
            location: String::new(),
            cross: 0,
            ts: ts + 5,
            ..checks()
        })
    );
    assert_eq!(
        store.last("unknown.example", "inside").await.expect("last"),
        None
    );
    assert_eq!(
        store.last("' OR 1=1 --", "inside").await.expect("last"),
        None
    );
}

const T: u64 = 1_800_000_000_000;

/// Seven sites with ties on `ts` (b/c, a_b/aab) and a `_` to test escaping.
async fn dump_fixture(store: &SqliteStore) {
    let probes = [
        state("a.example", 200, 10, "", 0, T),
        state("b.example", 503, 20, "", 0, T + 10),
        state("c.example", 301, 30, "https://x.other/", 1, T + 10),
        state("d.example", 301, 40, "https://www.d.example/", 0, T + 20),
        state("e.example", 404, 50, "https://y.other/", 1, T + 30),
        state("a_b.example", 200, 60, "", 0, T + 40),
        state("aab.example", 200, 70, "", 0, T + 40),
    ];
    write(store, "edge-1", 1, &probes).await;
}

async fn sites(store: &SqliteStore, filter: DumpFilter) -> Vec<String> {
    store
        .dump_last(&filter)
        .await
        .expect("dump_last")
        .into_iter()
        .map(|s| s.site.trim_end_matches(".example").to_owned())
        .collect()
}

#[tokio::test]
async fn dump_last_filters_orders_and_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&config(&dir)).await;
    dump_fixture(&store).await;
    let f = DumpFilter::default;

    assert_eq!(
        sites(&store, f()).await,
        ["a_b", "aab", "e", "d", "b", "c", "a"],
        "newest first, ties by site"
    );
    assert_eq!(
        sites(
            &store,
            DumpFilter {
                order: Order::Asc,
                ..f()
            }
        )
        .await,
        ["a", "b", "c", "d", "e", "a_b", "aab"]
    );
    let cases: Vec<(DumpFilter, &[&str])> = vec![
        (
            DumpFilter {
                statuses: vec![301],
                ..f()
            },
            &["d", "c"],
        ),
        (
            DumpFilter {
                statuses: vec![301, 503],
                ..f()
            },
            &["d", "b", "c"],
        ),
        (
            DumpFilter {
                statuses: vec![418],
                ..f()
            },
            &[],
        ),
        (
            DumpFilter {
                cross: Some(true),
                ..f()
            },
            &["e", "c"],
        ),
        (
            DumpFilter {
                cross: Some(false),
                ..f()
            },
            &["a_b", "aab", "d", "b", "a"],
        ),
        (
            DumpFilter {
                since: Some(T + 10),
                ..f()
            },
            &["a_b", "aab", "e", "d", "b", "c"],
        ),
        (
            DumpFilter {
                until: Some(T + 10),
                ..f()
            },
            &["b", "c", "a"],
        ),
        (
            DumpFilter {
                since: Some(T + 10),
                until: Some(T + 20),
                ..f()
            },
            &["d", "b", "c"],
        ),
        (
            DumpFilter {
                site_like: Some("a%".into()),
                ..f()
            },
            &["a_b", "aab", "a"],
        ),
        // `_` matches any one character...
        (
            DumpFilter {
                site_like: Some("a_b%".into()),
                ..f()
            },
            &["a_b", "aab"],
        ),
        // ...and `\_` only itself, as in ClickHouse.
        (
            DumpFilter {
                site_like: Some("a\\_b%".into()),
                ..f()
            },
            &["a_b"],
        ),
        (
            DumpFilter {
                site_like: Some("d.example".into()),
                ..f()
            },
            &["d"],
        ),
        (
            DumpFilter {
                statuses: vec![301, 404, 503],
                cross: Some(true),
                since: Some(T + 5),
                until: Some(T + 30),
                site_like: Some("%.example".into()),
                ..f()
            },
            &["e", "c"],
        ),
        (
            DumpFilter {
                statuses: vec![200, 301],
                cross: Some(false),
                since: Some(T),
                site_like: Some("%a%".into()),
                order: Order::Asc,
                ..f()
            },
            &["a", "d", "a_b", "aab"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(sites(&store, filter.clone()).await, expected, "{filter:?}");
    }

    let page = |limit, offset, order| DumpFilter {
        limit,
        offset,
        order,
        ..f()
    };
    let mut paged = Vec::new();
    for offset in (0..8).step_by(2) {
        paged.extend(sites(&store, page(2, offset, Order::Desc)).await);
    }
    assert_eq!(paged, ["a_b", "aab", "e", "d", "b", "c", "a"]);
    assert_eq!(
        sites(&store, page(3, 3, Order::Asc)).await,
        ["d", "e", "a_b"]
    );
    assert!(sites(&store, page(5, 7, Order::Desc)).await.is_empty());
    let paged_filter = DumpFilter {
        statuses: vec![200],
        limit: 1,
        offset: 1,
        ..f()
    };
    assert_eq!(sites(&store, paged_filter).await, ["aab"]);

    let full = store
        .dump_last(&DumpFilter {
            site_like: Some("c.example".into()),
            ..f()
        })
        .await
        .expect("dump_last");
    assert_eq!(
        full,
        [LastState {
            site: "c.example".into(),
            status: 301,
            ms: 30,
            port: 8443,
            location: "https://x.other/".into(),
            cross: 1,
            ts: T + 10,
            ..checks()
        }]
    );
}

#[tokio::test]
async fn dump_last_site_like_is_bound_not_spliced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    dump_fixture(&store).await;
    write(&store, "edge-1", 2, &[probe("o'brien.example", T)]).await;

    for attack in [
        "%'; DROP TABLE health_last; --",
        "' OR 1=1 --",
        "%' OR '1'='1",
        "\" OR \"\"=\"",
        "%') UNION SELECT name, 0, 0, 0, '', 0, 0 FROM sqlite_master --",
    ] {
        let filter = DumpFilter {
            site_like: Some(attack.into()),
            ..DumpFilter::default()
        };
        assert!(sites(&store, filter).await.is_empty(), "{attack}");
    }
    let quote = DumpFilter {
        site_like: Some("o'brien%".into()),
        ..DumpFilter::default()
    };
    assert_eq!(sites(&store, quote).await, ["o'brien"]);
    assert_eq!(count(&config, "health_last"), 8, "the table is still there");
}

/// Numbers beyond SQLite's signed 64 bits neither panic nor wrap.
#[tokio::test]
async fn out_of_range_numbers_are_handled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    dump_fixture(&store).await;
    let f = DumpFilter::default;

    let since = DumpFilter {
        since: Some(u64::MAX),
        ..f()
    };
    assert!(sites(&store, since).await.is_empty());
    let until = DumpFilter {
        until: Some(u64::MAX),
        ..f()
    };
    assert_eq!(sites(&store, until).await.len(), 7);
    let offset = DumpFilter {
        offset: u64::MAX,
        ..f()
    };
    assert!(sites(&store, offset).await.is_empty());

    let huge = ProbeRow {
        cert_expiry: u64::MAX,
        latency_us: u64::MAX,
        ..probe("huge.example", T)
    };
    let err = store
        .write_batch(batch("edge-1", u64::MAX, std::slice::from_ref(&huge)))
        .await
        .expect_err("a seq SQLite cannot hold");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert_eq!(count(&config, "ingest_batches"), 1, "nothing written");

    write(&store, "edge-1", 2, &[huge]).await;
    assert_eq!(
        q(
            &config,
            "SELECT cert_expiry, latency_us FROM health_history WHERE site = 'huge.example'"
        ),
        format!("{}|{}\n", i64::MAX, i64::MAX)
    );
}

/// Runs `sql` with the `sqlite3` shell, as users do on the file.
fn sqlite3(path: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .args(["-bail", "-separator", "|"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running sqlite3 failed ({e}): install the sqlite3 package \
                 (scripts/install-deps.sh --tests)"
            )
        });
    assert!(
        output.status.success(),
        "sqlite3 failed on:\n{sql}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Errors (5xx) per hour.
const D1_ERRORS_PER_HOUR: &str = "\
SELECT strftime('%Y-%m-%d %H:00', ts/1000, 'unixepoch') AS heure,
       COUNT(*) AS erreurs
FROM health_history
WHERE status >= 500
GROUP BY heure
ORDER BY heure DESC;";

/// Slowest sites over the last day.
const D1_SLOWEST_SITES: &str = "\
SELECT site, 
       AVG(ms) as latence_moyenne,
       COUNT(*) as nb_mesures
FROM health_history
WHERE ts >= strftime('%s','now','-1 day')*1000
GROUP BY site
ORDER BY latence_moyenne DESC
LIMIT 50;";

/// Sites with the most errors.
const D1_MOST_ERRORS: &str = "\
SELECT site, 
       COUNT(*) as nb_erreurs,
       AVG(ms) as latence_moyenne
FROM health_history
WHERE status >= 500
GROUP BY site
ORDER BY nb_erreurs DESC
LIMIT 10;";

/// Cross-domain redirects.
const D1_CROSS_REDIRECTS: &str = "\
SELECT site,
       status,
       location,
       COUNT(*) as occurrences
FROM health_history
WHERE cross = 1
GROUP BY site, status, location
ORDER BY occurrences DESC;";

/// The newest states.
const D1_LAST_STATES: &str =
    "SELECT site,status,ms,location,cross,ts FROM health_last ORDER BY ts DESC LIMIT 20;";

#[tokio::test]
async fn old_d1_queries_run_unchanged_with_the_sqlite3_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    // 2025-01-02 03:00:00 UTC: errors and redirects at fixed times, so the
    // per-hour answer does not depend on today.
    let h: u64 = 1_735_786_800_000;
    let min = 60_000;
    let hour = 60 * min;
    let now = now_ms();
    let old = [
        state("a.example", 503, 100, "", 0, h + 5 * min),
        state("a.example", 503, 300, "", 0, h + 10 * min),
        state("a.example", 500, 200, "", 0, h + hour + min),
        state("b.example", 502, 1000, "", 0, h + 2 * hour),
        state("c.example", 301, 5, "https://other.example/", 1, h - DAY_MS),
        state(
            "c.example",
            301,
            5,
            "https://other.example/",
            1,
            h - DAY_MS + min,
        ),
        state(
            "c.example",
            301,
            5,
            "https://other.example/",
            1,
            h - DAY_MS + 2 * min,
        ),
        state(
            "e.example",
            301,
            5,
            "https://e.other/",
            1,
            h - DAY_MS + 3 * min,
        ),
        state(
            "e.example",
            301,
            5,
            "https://e.other/",
            1,
            h - DAY_MS + 4 * min,
        ),
        state(
            "d.example",
            302,
            5,
            "https://elsewhere.example/",
            1,
            h - DAY_MS,
        ),
        state("d.example", 200, 9999, "", 0, now - 2 * DAY_MS),
    ];
    let recent = [
        state("c.example", 200, 50, "", 0, now - 3 * hour),
        state("c.example", 200, 70, "", 0, now - 2 * hour),
        state("d.example", 200, 400, "", 0, now - hour),
        state("a.example", 200, 10, "", 0, now - 30 * min),
    ];
    write(&store, "edge-1", 1, &old).await;
    write(&store, "edge-1", 2, &recent).await;
    let path = &config.sqlite_path;

    assert_eq!(
        sqlite3(path, D1_ERRORS_PER_HOUR),
        "2025-01-02 05:00|1\n2025-01-02 04:00|1\n2025-01-02 03:00|2\n"
    );
    assert_eq!(
        sqlite3(path, D1_SLOWEST_SITES),
        "d.example|400.0|1\nc.example|60.0|2\na.example|10.0|1\n"
    );
    assert_eq!(
        sqlite3(path, D1_MOST_ERRORS),
        "a.example|3|200.0\nb.example|1|1000.0\n"
    );
    assert_eq!(
        sqlite3(path, D1_CROSS_REDIRECTS),
        "c.example|301|https://other.example/|3\n\
         e.example|301|https://e.other/|2\n\
         d.example|302|https://elsewhere.example/|1\n"
    );
    assert_eq!(
        sqlite3(path, D1_LAST_STATES),
        format!(
            "a.example|200|10||0|{}\nd.example|200|400||0|{}\nc.example|200|70||0|{}\n\
             b.example|502|1000||0|{}\ne.example|301|5|https://e.other/|1|{}\n",
            now - 30 * min,
            now - hour,
            now - 2 * hour,
            h + 2 * hour,
            h - DAY_MS + 4 * min
        )
    );

    // The shell left no lock behind: the store still writes.
    assert_eq!(
        write(
            &store,
            "edge-1",
            3,
            &[state("f.example", 200, 1, "", 0, now)]
        )
        .await,
        WriteOutcome::Written { rows: 1 }
    );
    assert_eq!(sqlite3(path, "SELECT count(*) FROM health_last;"), "6\n");
}

#[tokio::test]
async fn the_readme_sqlite_queries_run_with_the_sqlite3_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let now = now_ms();
    let rows = [
        state("a.example", 500, 10, "", 0, now),
        state("b.example", 301, 5, "https://other.example/", 1, now),
    ];
    write(&store, "edge-1", 1, &rows).await;
    let statements = livehead_testkit::readme::sql_statements("### SQLite (the embedded store)");
    assert!(statements.len() >= 5, "{statements:?}");
    for sql in statements {
        // Panics with sqlite3's error when a statement fails.
        sqlite3(&config.sqlite_path, &format!("{sql};"));
    }
}

/// Two processes sharing one identity may number batches alike: a batch whose
/// (agent, seq) holds other rows is a conflict, not a replay.
#[tokio::test]
async fn a_seq_holding_other_rows_is_a_conflict_not_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    let store = open(&config).await;
    let ts = now_ms();
    let one = [probe("a.example", ts)];
    let mut other = probe("a.example", ts + 1);
    other.latency_us += 7;
    let two = [other, probe("b.example", ts)];

    assert_eq!(
        write(&store, "edge-1", 5, &one).await,
        WriteOutcome::Written { rows: 1 }
    );
    assert_eq!(
        write(&store, "edge-1", 5, &two[..1]).await,
        WriteOutcome::Conflict
    );
    assert_eq!(
        write(&store, "edge-1", 5, &two).await,
        WriteOutcome::Conflict
    );
    assert_eq!(
        write(&store, "edge-1", 5, &one).await,
        WriteOutcome::Duplicate
    );
    let group = [batch("edge-1", 6, &one), batch("edge-1", 6, &two)];
    let outcomes = store.write_batches(&group).await.expect("group");
    assert_eq!(
        outcomes,
        [WriteOutcome::Written { rows: 1 }, WriteOutcome::Conflict]
    );
    assert_eq!(count(&config, "health_history"), 2);
}
