//! The ClickHouse store against a real server: Debian's `clickhouse-server` 18.16
//! started by the testkit (one server for this binary, one database per test).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livehead_collector::store::clickhouse::{ClickHouseStore, Flavour};
use livehead_collector::store::sample_tables::TABLES as SAMPLE_TABLES;
use livehead_collector::store::{
    BatchWrite, ProbeRow, RowsRef, StorageConfig, Store, StoreError, WriteOutcome,
};
use livehead_testkit::clickhouse::ClickHouseServer;
use support::{CHECKS, checks};

static SERVER: LazyLock<ClickHouseServer> = LazyLock::new(ClickHouseServer::start);

const DAY_MS: u64 = 86_400_000;

fn config(test: &str) -> StorageConfig {
    StorageConfig {
        clickhouse_url: Some(SERVER.http_url()),
        database: SERVER.unique_database(test),
        ..StorageConfig::default()
    }
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

fn batch<'a>(agent: &'a str, seq: u64, probes: &'a [ProbeRow]) -> BatchWrite<'a> {
    BatchWrite {
        agent,
        seq,
        rows: RowsRef::of_probes(probes),
    }
}

fn q(config: &StorageConfig, sql: &str) -> String {
    SERVER.query_in(&config.database, sql)
}

fn count(config: &StorageConfig, table: &str) -> u64 {
    q(config, &format!("SELECT count() FROM {table}"))
        .trim()
        .parse()
        .expect("a count")
}

const PROBE_COLUMNS: &str = "site, status, ms, port, location, `cross`, ts, latency_us, \
                             connect_us, first_byte_us, error, method, target, cert_expiry, agent, \
                             cert_trust, cert_error, content, content_failure, content_excerpt";

#[tokio::test]
async fn migrations_create_the_tables_and_rerun_idempotently() {
    let config = config("migrations");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    assert_eq!(
        store.flavour(),
        Flavour::Legacy,
        "Debian's 18.16 is a legacy server"
    );
    drop(store);
    ClickHouseStore::connect(&config)
        .await
        .expect("connect again");

    let tables = q(
        &config,
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name",
    );
    let mut expected = vec![
        "health_history\tMergeTree\n".to_owned(),
        "health_last\tReplacingMergeTree\n".to_owned(),
        "ingest_batches\tMergeTree\n".to_owned(),
        "ingest_batches_mv\tMaterializedView\n".to_owned(),
        "schema_migrations\tReplacingMergeTree\n".to_owned(),
    ];
    let mut partitioned = vec![
        "health_history\ttoYYYYMMDD(toDateTime(intDiv(ts, 1000)))\n".to_owned(),
        "ingest_batches\ttoYYYYMMDD(written_at)\n".to_owned(),
    ];
    for table in SAMPLE_TABLES {
        expected.push(format!("{}\tMergeTree\n", table.table));
        expected.push(format!("{}_batches_mv\tMaterializedView\n", table.table));
        partitioned.push(format!(
            "{}\ttoYYYYMMDD(toDateTime(intDiv(ts, 1000)))\n",
            table.table
        ));
        let names = q(
            &config,
            &format!(
                "SELECT name FROM system.columns WHERE database = currentDatabase() \
                 AND table = '{}'",
                table.table
            ),
        );
        assert_eq!(
            names,
            table.column_names().join("\n") + "\n",
            "columns of {}",
            table.table
        );
    }
    expected.sort();
    partitioned.sort();
    assert_eq!(tables, expected.concat());
    let versions = q(
        &config,
        "SELECT version, name, count() FROM schema_migrations GROUP BY version, name ORDER BY version",
    );
    assert_eq!(
        versions,
        "1\tprobe tables\t1\n2\tbatch markers\t1\n3\tbatch digests\t1\n4\tsample tables\t1\n\
         5\talert tables\t1\n6\twatchdog and heartbeat tables\t1\n7\tprobe trust and content\t1\n\
         8\tprobe vantages\t1\n"
    );
    let partition_keys = q(
        &config,
        "SELECT name, partition_key FROM system.tables \
         WHERE database = currentDatabase() AND partition_key != '' ORDER BY name",
    );
    assert_eq!(partition_keys, partitioned.concat());
}

#[tokio::test]
async fn connect_reports_missing_configuration() {
    let mut config = config("unconfigured");
    config.clickhouse_url = None;
    let err = ClickHouseStore::connect(&config).await.expect_err("no url");
    assert!(
        matches!(err, StoreError::NotConfigured("clickhouse_url")),
        "{err}"
    );
}

#[tokio::test]
async fn write_batch_writes_every_column() {
    let config = config("columns");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let mut quoted = probe("o'brien.example", ts + 1);
    quoted.error = String::new();
    quoted.location = String::new();
    quoted.cross = 0;
    quoted.method = "HEAD".to_owned();
    let probes = [probe("a.example", ts), quoted];
    let outcome = store
        .write_batch(batch("edge-1", 7, &probes))
        .await
        .expect("write");
    assert_eq!(outcome, WriteOutcome::Written { rows: 2 });

    let expected_last = format!(
        "a.example\t301\t123\t8443\thttps://www.a.example/\t1\t{ts}\t123456\t2345\t98765\t\
         timeout\tGET\thttps://a.example:8443/\t1900000000000\tedge-1\t\
         name_mismatch\tcertificate not valid for name \"x\"\tfailed\tat least 512 bytes\t<html><body></body></html>\n\
         o\\'brien.example\t301\t123\t8443\t\t0\t{}\t123456\t2345\t98765\t\
         \tHEAD\thttps://o\\'brien.example:8443/\t1900000000000\tedge-1\t\
         name_mismatch\tcertificate not valid for name \"x\"\tfailed\tat least 512 bytes\t<html><body></body></html>\n",
        ts + 1
    );
    let last = q(
        &config,
        &format!("SELECT {PROBE_COLUMNS} FROM health_last FINAL ORDER BY site"),
    );
    assert_eq!(last, expected_last);

    let history = q(
        &config,
        &format!("SELECT {PROBE_COLUMNS}, seq FROM health_history ORDER BY site"),
    );
    let expected_history: String = expected_last
        .lines()
        .map(|line| format!("{line}\t7\n"))
        .collect();
    assert_eq!(history, expected_history);

    let markers = q(
        &config,
        "SELECT agent, seq, records, written_at > now() - 600 FROM ingest_batches",
    );
    assert_eq!(markers, "edge-1\t7\t2\t1\n");
}

#[tokio::test]
async fn health_last_keeps_the_newest_probe_per_site() {
    let config = config("newest");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let mut newer = probe("a.example", ts);
    newer.status = 200;
    let mut older = probe("a.example", ts - 60_000);
    older.status = 503;
    let other = probe("b.example", ts - 60_000);

    store
        .write_batch(batch("edge-1", 2, std::slice::from_ref(&newer)))
        .await
        .expect("newer batch");
    // An older batch arriving late (e.g. replayed from another agent's spool).
    store
        .write_batch(batch("edge-2", 1, &[older, other]))
        .await
        .expect("older batch");

    let last = q(
        &config,
        "SELECT site, status, ts, agent FROM health_last FINAL ORDER BY site",
    );
    assert_eq!(
        last,
        format!(
            "a.example\t200\t{ts}\tedge-1\nb.example\t301\t{}\tedge-2\n",
            ts - 60_000
        )
    );
    assert_eq!(count(&config, "health_history"), 3);
}

#[tokio::test]
async fn a_replayed_batch_is_written_once() {
    let config = config("replay");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let probes = [probe("a.example", ts), probe("b.example", ts)];
    // A quote in the agent checks the bound value in the duplicate check.
    let agent = "edge-1's";

    let first = store
        .write_batch(batch(agent, 1, &probes))
        .await
        .expect("write");
    assert_eq!(first, WriteOutcome::Written { rows: 2 });
    for _ in 0..2 {
        let again = store
            .write_batch(batch(agent, 1, &probes))
            .await
            .expect("replay");
        assert_eq!(again, WriteOutcome::Duplicate);
    }
    assert_eq!(count(&config, "health_history"), 2);

    // Same seq from another agent, and the next seq: both new.
    let other = store
        .write_batch(batch("edge-2", 1, &probes))
        .await
        .expect("other agent");
    assert_eq!(other, WriteOutcome::Written { rows: 2 });
    let next = store
        .write_batch(batch(agent, 2, &probes))
        .await
        .expect("next seq");
    assert_eq!(next, WriteOutcome::Written { rows: 2 });
    assert_eq!(count(&config, "health_history"), 6);

    // Another replica (a second store on the same database) sees the markers too.
    let replica = ClickHouseStore::connect(&config).await.expect("replica");
    let replayed = replica
        .write_batch(batch("edge-2", 1, &probes))
        .await
        .expect("replay on replica");
    assert_eq!(replayed, WriteOutcome::Duplicate);

    let markers = q(
        &config,
        "SELECT agent, seq, records FROM ingest_batches ORDER BY agent, seq",
    );
    assert_eq!(
        markers,
        "edge-1\\'s\t1\t2\nedge-1\\'s\t2\t2\nedge-2\t1\t2\n"
    );
}

#[tokio::test]
async fn an_empty_batch_is_acked_once() {
    let config = config("empty");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let first = store
        .write_batch(batch("edge-1", 9, &[]))
        .await
        .expect("write");
    assert_eq!(first, WriteOutcome::Written { rows: 0 });
    let again = store
        .write_batch(batch("edge-1", 9, &[]))
        .await
        .expect("replay");
    assert_eq!(again, WriteOutcome::Duplicate);
    assert_eq!(
        q(&config, "SELECT agent, seq, records FROM ingest_batches"),
        "edge-1\t9\t0\n"
    );
}

#[tokio::test]
async fn history_off_fills_only_health_last() {
    let mut config = config("history_off");
    config.history = false;
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let probes = [probe("a.example", ts), probe("b.example", ts)];

    let first = store
        .write_batch(batch("edge-1", 1, &probes))
        .await
        .expect("write");
    assert_eq!(first, WriteOutcome::Written { rows: 2 });
    let again = store
        .write_batch(batch("edge-1", 1, &probes))
        .await
        .expect("replay");
    assert_eq!(again, WriteOutcome::Duplicate);

    assert_eq!(count(&config, "health_history"), 0);
    assert_eq!(
        q(&config, "SELECT site FROM health_last FINAL ORDER BY site"),
        "a.example\nb.example\n"
    );
    assert_eq!(
        q(&config, "SELECT agent, seq, records FROM ingest_batches"),
        "edge-1\t1\t2\n"
    );
}

/// What a collector killed in the middle of the history INSERT leaves behind on
/// 18.16: the server takes the cut connection for the end of the body and keeps
/// the rows received so far (plus a marker counting them). The replay writes the
/// rest, once.
#[tokio::test]
async fn a_replay_completes_an_interrupted_insert() {
    let config = config("interrupted");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let probes: Vec<ProbeRow> = (0..5)
        .map(|i| probe(&format!("s{i}.example"), ts + i))
        .collect();

    // Send the first two rows of batch (edge-1, 3) and cut the connection without
    // ending the chunked body.
    let rows: String = probes[..2]
        .iter()
        .map(|p| format!("{}\t{}\t{}\tedge-1\t3\n", p.site, p.ts, p.latency_us))
        .collect();
    cut_insert(
        &config.database,
        "INSERT INTO health_history (site, ts, latency_us, agent, seq) FORMAT TabSeparated",
        rows.as_bytes(),
    );
    let kept = wait_for(|| count(&config, "health_history") == 2);
    assert!(kept, "18.16 kept the rows of the cut INSERT");
    // The marker's part is committed after the rows' part.
    let counted = wait_for(|| q(&config, "SELECT records FROM ingest_batches") == "2\n");
    assert!(counted, "the view's marker counts the rows kept");

    let replay = store
        .write_batch(batch("edge-1", 3, &probes))
        .await
        .expect("replay");
    assert_eq!(replay, WriteOutcome::Written { rows: 5 });
    assert_eq!(
        q(
            &config,
            "SELECT site, count() FROM health_history GROUP BY site ORDER BY site"
        ),
        "s0.example\t1\ns1.example\t1\ns2.example\t1\ns3.example\t1\ns4.example\t1\n"
    );
    assert_eq!(count(&config, "health_last FINAL"), 5);
    let again = store
        .write_batch(batch("edge-1", 3, &probes))
        .await
        .expect("second replay");
    assert_eq!(again, WriteOutcome::Duplicate);
    assert_eq!(count(&config, "health_history"), 5);
}

/// One call for a group, as the collector's group-commit writer makes: batches
/// written before are duplicates, a batch cut short earlier gets its rest, a
/// batch repeated inside the group is written once, and an empty batch leaves
/// its marker.
#[tokio::test]
async fn a_group_of_batches_is_written_in_one_call() {
    let config = config("group");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let rows = |prefix: &str, n: u64| -> Vec<ProbeRow> {
        (0..n)
            .map(|i| probe(&format!("{prefix}{i}.example"), ts + i))
            .collect()
    };
    let (old, cut, new) = (rows("old", 3), rows("cut", 5), rows("new", 2));
    store
        .write_batch(batch("edge-1", 1, &old))
        .await
        .expect("earlier batch");
    let kept: String = cut[..2]
        .iter()
        .map(|p| format!("{}\t{}\t{}\tedge-1\t2\n", p.site, p.ts, p.latency_us))
        .collect();
    cut_insert(
        &config.database,
        "INSERT INTO health_history (site, ts, latency_us, agent, seq) FORMAT TabSeparated",
        kept.as_bytes(),
    );
    // The view's marker part is committed after the rows' part: wait for both,
    // as the collector's replay would meet them.
    assert!(wait_for(|| count(&config, "health_history") == 5
        && q(
            &config,
            "SELECT sum(records) FROM ingest_batches WHERE seq = 2"
        ) == "2\n"));

    let group = [
        batch("edge-1", 1, &old),
        batch("edge-1", 2, &cut),
        batch("edge-2", 1, &new),
        batch("edge-2", 1, &new),
        batch("edge-1", 3, &[]),
    ];
    let outcomes = store.write_batches(&group).await.expect("group");
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Duplicate,
            WriteOutcome::Written { rows: 5 },
            WriteOutcome::Written { rows: 2 },
            WriteOutcome::Duplicate,
            WriteOutcome::Written { rows: 0 },
        ]
    );
    let per_batch = "SELECT agent, seq, count(), uniqExact(site) FROM health_history \
                     GROUP BY agent, seq ORDER BY agent, seq";
    assert_eq!(
        q(&config, per_batch),
        "edge-1\t1\t3\t3\nedge-1\t2\t5\t5\nedge-2\t1\t2\t2\n"
    );
    assert_eq!(
        q(
            &config,
            "SELECT agent, seq, sum(records) FROM ingest_batches GROUP BY agent, seq ORDER BY agent, seq"
        ),
        "edge-1\t1\t3\nedge-1\t2\t5\nedge-1\t3\t0\nedge-2\t1\t2\n"
    );
    assert_eq!(count(&config, "health_last FINAL"), 10);

    let again = store.write_batches(&group).await.expect("replayed group");
    assert!(
        again.iter().all(|o| *o == WriteOutcome::Duplicate),
        "{again:?}"
    );
    assert_eq!(count(&config, "health_history"), 10);
}

/// The same through the `clickhouse` crate (RowBinary, LZ4 frames of ~256 KiB): an
/// INSERT dropped before `end()` (a cancelled `write_batch`) keeps whole frames on
/// 18.16, i.e. a prefix of the rows, with a marker counting exactly them.
#[tokio::test]
async fn a_dropped_crate_insert_keeps_a_counted_prefix() {
    #[derive(clickhouse::Row, serde::Serialize)]
    struct Partial<'a> {
        site: &'a str,
        ts: u64,
        latency_us: u64,
        agent: &'a str,
        seq: u64,
    }

    let config = config("dropped");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let padding = "x".repeat(200);
    let probes: Vec<ProbeRow> = (0..6000)
        .map(|i| probe(&format!("{padding}-{i:05}.example"), ts + i))
        .collect();

    let client = clickhouse::Client::default()
        .with_url(SERVER.http_url())
        .with_database(config.database.as_str())
        .with_validation(false);
    let mut insert = client
        .insert::<Partial<'_>>("health_history")
        .await
        .expect("start insert");
    for p in &probes[..5000] {
        let row = Partial {
            site: &p.site,
            ts: p.ts,
            latency_us: p.latency_us,
            agent: "edge-1",
            seq: 1,
        };
        insert.write(&row).await.expect("write row");
    }
    // Let the first frames reach the server, then give up on the INSERT.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(insert);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let kept = count(&config, "health_history");
    let counted: u64 = q(&config, "SELECT sum(records) FROM ingest_batches")
        .trim()
        .parse()
        .expect("a sum");
    assert_eq!(kept, counted, "the marker counts the rows kept");
    assert!(kept < 5000, "a dropped INSERT is never complete");
    if kept > 0 {
        let last_kept = q(&config, "SELECT max(site) FROM health_history");
        assert_eq!(
            last_kept.trim(),
            probes[kept as usize - 1].site,
            "a prefix was kept"
        );
    }

    let replay = store
        .write_batch(batch("edge-1", 1, &probes))
        .await
        .expect("replay");
    assert_eq!(replay, WriteOutcome::Written { rows: 6000 });
    assert_eq!(
        q(
            &config,
            "SELECT count(), uniqExact(site) FROM health_history"
        ),
        "6000\t6000\n"
    );
    eprintln!("the dropped INSERT had kept {kept} rows");
}

/// An HTTP INSERT whose body stops after `data`, the connection closed without
/// the final chunk: what the server sees when the writer dies mid-request.
fn cut_insert(database: &str, sql: &str, data: &[u8]) {
    let url = SERVER.http_url();
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to clickhouse");
    let query: String = sql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let head = format!(
        "POST /?database={database}&query={query} HTTP/1.1\r\nHost: {addr}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        data.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(data).expect("send rows");
    stream.write_all(b"\r\n").expect("end chunk");
    stream.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..50 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test]
async fn legacy_retention_drops_old_partitions_only() {
    let mut config = config("retention");
    config.retention_days = 30;
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let now = now_ms();
    let old = [
        probe("a.example", now - 40 * DAY_MS),
        probe("b.example", now - 40 * DAY_MS),
    ];
    let edge = [probe("a.example", now - 20 * DAY_MS)];
    let recent = [probe("a.example", now)];
    store
        .write_batch(batch("edge-1", 1, &old))
        .await
        .expect("old");
    store
        .write_batch(batch("edge-1", 2, &edge))
        .await
        .expect("edge");
    store
        .write_batch(batch("edge-1", 3, &recent))
        .await
        .expect("recent");
    // A marker from ten days ago (markers are kept 7 days).
    q(
        &config,
        "INSERT INTO ingest_batches (agent, seq, records, written_at) \
         SELECT 'edge-0', 1, 1, now() - 10 * 86400",
    );
    let partitions = "SELECT count(DISTINCT partition_id) FROM system.parts \
                      WHERE database = currentDatabase() AND table = 'health_history' AND active";
    assert_eq!(q(&config, partitions), "3\n");

    store.maintain().await.expect("maintain");

    assert_eq!(q(&config, partitions), "2\n");
    assert_eq!(
        q(&config, "SELECT ts FROM health_history ORDER BY ts"),
        format!("{}\n{now}\n", now - 20 * DAY_MS)
    );
    assert_eq!(
        q(
            &config,
            "SELECT agent, seq FROM ingest_batches ORDER BY agent, seq"
        ),
        "edge-1\t1\nedge-1\t2\nedge-1\t3\n"
    );
    // health_last is not subject to retention.
    assert_eq!(count(&config, "health_last FINAL"), 2);

    // Idempotent; and retention 0 keeps history forever.
    store.maintain().await.expect("maintain again");
    config.retention_days = 0;
    let forever = ClickHouseStore::connect(&config).await.expect("connect");
    let ancient = [probe("c.example", now - 400 * DAY_MS)];
    forever
        .write_batch(batch("edge-1", 4, &ancient))
        .await
        .expect("ancient");
    forever.maintain().await.expect("maintain forever");
    assert_eq!(count(&config, "health_history"), 3);
}

// ---- Reads behind the HTTP API -------------------------------------------------

use livehead_collector::store::{DumpFilter, LastState, Order};

/// A probe with only the columns the API shows set apart.
fn state(site: &str, status: u16, cross: u8, ts: u64) -> ProbeRow {
    ProbeRow {
        status,
        cross,
        location: if cross == 1 {
            "https://elsewhere.example/".to_owned()
        } else {
            String::new()
        },
        ..probe(site, ts)
    }
}

fn sites(states: &[LastState]) -> Vec<&str> {
    states.iter().map(|s| s.site.as_str()).collect()
}

#[tokio::test]
async fn last_answers_the_newest_probe_of_a_site() {
    let config = config("last");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    // Two INSERTs: two parts not merged yet, so both rows of a.example exist.
    let older = [state("a.example", 500, 0, ts - 10)];
    let newer = [state("a.example", 301, 1, ts)];
    store
        .write_batch(batch("e", 1, &older))
        .await
        .expect("older");
    store
        .write_batch(batch("e", 2, &newer))
        .await
        .expect("newer");

    let last = store.last("a.example", "inside").await.expect("last");
    assert_eq!(
        last,
        Some(LastState {
            site: "a.example".into(),
            status: 301,
            ms: 123,
            port: 8443,
            location: "https://elsewhere.example/".into(),
            cross: 1,
            ts,
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

#[tokio::test]
async fn dump_last_filters_on_the_newest_state_only() {
    let config = config("dump_stale");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let first = [state("a.example", 500, 0, ts - 10)];
    let then = [state("a.example", 200, 0, ts)];
    store
        .write_batch(batch("e", 1, &first))
        .await
        .expect("first");
    store.write_batch(batch("e", 2, &then)).await.expect("then");
    let errors = DumpFilter {
        statuses: vec![500],
        ..DumpFilter::default()
    };
    assert!(store.dump_last(&errors).await.expect("dump").is_empty());
    let all = store.dump_last(&DumpFilter::default()).await.expect("dump");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, 200);
}

#[tokio::test]
async fn dump_last_filters_orders_and_pages() {
    let config = config("dump_filters");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let t = now_ms() - 1000;
    let rows = [
        state("a.shop.example", 500, 0, t),
        state("b.shop.example", 301, 1, t + 1),
        state("c.blog.example", 500, 1, t + 2),
        state("d.shop.example", 200, 0, t + 3),
        state("e.shop.example", 500, 1, t + 3),
        state("under_score.example", 403, 0, t + 4),
    ];
    store
        .write_batch(batch("e", 1, &rows))
        .await
        .expect("write");
    let dump = |filter: DumpFilter| {
        let store = &store;
        async move { store.dump_last(&filter).await.expect("dump") }
    };

    let all = dump(DumpFilter::default()).await;
    assert_eq!(
        sites(&all),
        [
            "under_score.example",
            "d.shop.example",
            "e.shop.example",
            "c.blog.example",
            "b.shop.example",
            "a.shop.example"
        ],
        "newest first, ties by site"
    );
    let asc = dump(DumpFilter {
        order: Order::Asc,
        ..DumpFilter::default()
    })
    .await;
    assert_eq!(sites(&asc)[..2], ["a.shop.example", "b.shop.example"]);
    let combined = DumpFilter {
        statuses: vec![500, 301],
        cross: Some(true),
        since: Some(t + 1),
        until: Some(t + 3),
        site_like: Some("%.shop.example".into()),
        ..DumpFilter::default()
    };
    assert_eq!(
        sites(&dump(combined.clone()).await),
        ["e.shop.example", "b.shop.example"]
    );
    let page = DumpFilter {
        limit: 1,
        offset: 1,
        ..combined
    };
    assert_eq!(sites(&dump(page).await), ["b.shop.example"]);
    let not_cross = DumpFilter {
        cross: Some(false),
        statuses: vec![500],
        ..DumpFilter::default()
    };
    assert_eq!(sites(&dump(not_cross).await), ["a.shop.example"]);
    // `\` escapes LIKE's `_`: the literal underscore matches, a wildcard one would
    // also match "under-score".
    let escaped = DumpFilter {
        site_like: Some("under\\_score%".into()),
        ..DumpFilter::default()
    };
    assert_eq!(sites(&dump(escaped).await), ["under_score.example"]);
}

#[tokio::test]
async fn dump_last_site_like_injection_is_inert() {
    let config = config("dump_injection");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let rows = [state("a.example", 200, 0, now_ms())];
    store
        .write_batch(batch("e", 1, &rows))
        .await
        .expect("write");
    for attack in [
        "%' OR 1=1 --",
        "'; DROP TABLE health_last; --",
        "%\\' OR site != '",
        "a.example' UNION ALL SELECT site, status, ms, port, location, `cross`, ts FROM health_history --",
        "?",
    ] {
        let filter = DumpFilter {
            site_like: Some(attack.into()),
            ..DumpFilter::default()
        };
        let found = store
            .dump_last(&filter)
            .await
            .expect("a pattern is a value");
        assert!(found.is_empty(), "{attack:?} matched {found:?}");
    }
    assert_eq!(count(&config, "health_last"), 1, "table intact");
}

/// The old D1 examples, written for ClickHouse (README "BI queries"): UTC hours,
/// `cross` quoted (a keyword in ClickHouse's grammar).
const CH_ERRORS_PER_HOUR: &str =
    "SELECT formatDateTime(toDateTime(intDiv(ts, 1000), 'UTC'), '%Y-%m-%d %H:00') AS heure,
       count() AS erreurs
FROM health_history
WHERE status >= 500
GROUP BY heure
ORDER BY heure DESC";
const CH_LATENCY_24H: &str = "SELECT site,
       avg(ms) AS latence_moyenne,
       count() AS nb_mesures
FROM health_history
WHERE ts >= (toUInt64(now()) - 86400) * 1000
GROUP BY site
ORDER BY latence_moyenne DESC
LIMIT 50";
const CH_TOP_ERRORS: &str = "SELECT site,
       COUNT(*) AS nb_erreurs,
       AVG(ms) AS latence_moyenne
FROM health_history
WHERE status >= 500
GROUP BY site
ORDER BY nb_erreurs DESC
LIMIT 10";
const CH_CROSS_DOMAIN: &str = "SELECT site,
       status,
       location,
       COUNT(*) AS occurrences
FROM health_history
WHERE `cross` = 1
GROUP BY site, status, location
ORDER BY occurrences DESC";

#[tokio::test]
async fn the_readme_bi_queries_run_on_clickhouse() {
    let config = config("bi_queries");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let hour = now_ms() / 3_600_000 * 3_600_000;
    let mut slow = state("slow.example", 502, 0, hour + 1);
    slow.ms = 900;
    let rows = [
        state("a.example", 500, 0, hour + 2),
        state("a.example", 500, 0, hour + 3),
        slow,
        state("b.example", 301, 1, hour + 4),
        state("b.example", 301, 1, hour + 5),
        state("old.example", 500, 0, hour - 2 * DAY_MS),
    ];
    let mut rows = rows.to_vec();
    rows[3].ms = 50;
    rows[4].ms = 50;
    store
        .write_batch(batch("e", 1, &rows))
        .await
        .expect("write");
    let day = |ms: u64| {
        SERVER
            .query(&format!(
                "SELECT formatDateTime(toDateTime(intDiv({ms}, 1000), 'UTC'), '%Y-%m-%d %H:00')"
            ))
            .trim()
            .to_owned()
    };
    assert_eq!(
        q(&config, CH_ERRORS_PER_HOUR),
        format!("{}\t3\n{}\t1\n", day(hour), day(hour - 2 * DAY_MS))
    );
    assert_eq!(
        q(&config, CH_LATENCY_24H),
        "slow.example\t900\t1\na.example\t123\t2\nb.example\t50\t2\n"
    );
    assert_eq!(
        q(&config, CH_TOP_ERRORS),
        "a.example\t2\t123\nold.example\t1\t123\nslow.example\t1\t900\n"
    );
    assert_eq!(
        q(&config, CH_CROSS_DOMAIN),
        "b.example\t301\thttps://elsewhere.example/\t2\n"
    );
}

#[tokio::test]
async fn the_readme_clickhouse_queries_run() {
    let config = config("readme_queries");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let rows = [
        state("a.example", 500, 0, now_ms()),
        state("b.example", 301, 1, now_ms()),
    ];
    store
        .write_batch(batch("e", 1, &rows))
        .await
        .expect("write");
    let statements = livehead_testkit::readme::sql_statements("### ClickHouse");
    assert!(statements.len() >= 5, "{statements:?}");
    for sql in statements {
        // Panics with the server's error when a statement fails.
        q(&config, &sql);
    }
}

/// Two processes sharing one identity may number batches alike: a batch whose
/// (agent, seq) holds other rows is a conflict, not a replay, even when its
/// first rows could pass for a prefix left by an interrupted INSERT.
#[tokio::test]
async fn a_seq_holding_other_rows_is_a_conflict_not_a_replay() {
    let config = config("conflict");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let one = [probe("a.example", ts)];
    let mut other = probe("a.example", ts + 1);
    other.latency_us += 7;
    let two = [other, probe("b.example", ts)];

    let first = store
        .write_batch(batch("edge-1", 5, &one))
        .await
        .expect("write");
    assert_eq!(first, WriteOutcome::Written { rows: 1 });
    for rows in [&two[..1], &two[..]] {
        let clash = store
            .write_batch(batch("edge-1", 5, rows))
            .await
            .expect("write");
        assert_eq!(clash, WriteOutcome::Conflict, "{} rows", rows.len());
    }
    // The same rows again are still a replay.
    let again = store
        .write_batch(batch("edge-1", 5, &one))
        .await
        .expect("replay");
    assert_eq!(again, WriteOutcome::Duplicate);
    // Two different batches under one number in one group: the second conflicts.
    let group = [batch("edge-1", 6, &one), batch("edge-1", 6, &two)];
    let outcomes = store.write_batches(&group).await.expect("group");
    assert_eq!(
        outcomes,
        [WriteOutcome::Written { rows: 1 }, WriteOutcome::Conflict]
    );
    assert_eq!(count(&config, "health_history"), 2);
}

/// A server killed between an INSERT's rows and its marker (the view's part)
/// keeps rows that no marker counts. The replay must find and mark them, not
/// write them again.
#[tokio::test]
async fn rows_stored_without_their_marker_are_found_not_written_twice() {
    let config = config("unmarked");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let ts = now_ms();
    let rows = |prefix: &str| -> Vec<ProbeRow> {
        (0..4)
            .map(|i| probe(&format!("{prefix}{i}.example"), ts + i))
            .collect()
    };
    let (whole, part) = (rows("whole"), rows("part"));
    // Batch 8's first two rows are written and marked.
    let first = store
        .write_batch(batch("edge-1", 8, &part[..2]))
        .await
        .expect("write");
    assert_eq!(first, WriteOutcome::Written { rows: 2 });
    // Then, with the view detached, rows reach history without markers:
    // batch 7 whole and the rest of batch 8.
    q(&config, "DETACH TABLE ingest_batches_mv");
    let values = |agent_seq: u64, rows: &[ProbeRow]| -> String {
        rows.iter()
            .map(|p| {
                format!(
                    "('{}', {}, {}, 'edge-1', {agent_seq})",
                    p.site, p.ts, p.latency_us
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    q(
        &config,
        &format!(
            "INSERT INTO health_history (site, ts, latency_us, agent, seq) VALUES {}, {}",
            values(7, &whole),
            values(8, &part[2..])
        ),
    );
    q(&config, "ATTACH TABLE ingest_batches_mv");
    assert_eq!(count(&config, "health_history"), 8);

    let group = [batch("edge-1", 7, &whole), batch("edge-1", 8, &part)];
    let outcomes = store.write_batches(&group).await.expect("group");
    assert_eq!(outcomes, [WriteOutcome::Duplicate, WriteOutcome::Duplicate]);
    assert_eq!(count(&config, "health_history"), 8, "nothing written twice");
    // The markers now count what is stored, so the next replay is plain.
    assert_eq!(
        q(
            &config,
            "SELECT seq, sum(records) FROM ingest_batches GROUP BY seq ORDER BY seq"
        ),
        "7\t4\n8\t4\n"
    );
    let again = store.write_batches(&group).await.expect("replay");
    assert_eq!(again, [WriteOutcome::Duplicate, WriteOutcome::Duplicate]);
}

/// Every Grafana panel's SQL runs on 18.16 and finds the rows it shows
/// (`chdb_schema.rs` does the same on a current ClickHouse).
#[tokio::test]
async fn grafana_dashboards_run_on_clickhouse_18() {
    let config = config("grafana");
    // Connecting applies the migrations: the tables the dashboards read.
    ClickHouseStore::connect(&config).await.expect("connect");
    let now = now_ms();
    for insert in support::grafana::seed(now) {
        SERVER.query_in(&config.database, &insert);
    }
    for query in support::grafana::queries(now) {
        let answer = SERVER.query_in(&config.database, &query.sql);
        assert!(
            !answer.trim().is_empty(),
            "{} found nothing:\n{}",
            query.name,
            query.sql
        );
    }
}
