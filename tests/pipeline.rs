//! End to end with the real binaries as separate processes:
//! agent → mTLS gRPC → collector → ClickHouse (a real server on free ports).

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livehead_testkit::clickhouse::ClickHouseServer;
use livehead_testkit::free_port;
use livehead_testkit::sites::{
    BADHEAD_SITE, CROSS_LOCATION, CROSS_SITE, ERROR_SITE, FakeSites, NOHEAD_SITE, OK_SITE,
    SAME_LOCATION, SAME_SITE,
};
use support::{Proc, certs, http_get, loopback, metric_sum, tls_args, wait_for};

struct Collector {
    proc: Proc,
    grpc: u16,
    http: u16,
}

fn start_collector(ch: &ClickHouseServer, db: &str, dir: &Path, grpc: u16, http: u16) -> Proc {
    start_collector_with(ch, db, dir, grpc, http, &[])
}

fn start_collector_with(
    ch: &ClickHouseServer,
    db: &str,
    dir: &Path,
    grpc: u16,
    http: u16,
    extra: &[String],
) -> Proc {
    let mut args: Vec<String> = [
        "collector",
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--clickhouse-url",
        &ch.http_url(),
        "--database",
        db,
    ]
    .map(String::from)
    .to_vec();
    args.extend(tls_args(&dir.join("certs"), "collector"));
    args.extend(extra.iter().cloned());
    Proc::spawn("collector", &args, dir)
}

async fn collector(ch: &ClickHouseServer, db: &str, dir: &Path) -> Collector {
    let (grpc, http) = (free_port(), free_port());
    let mut proc = start_collector(ch, db, dir, grpc, http);
    wait_healthy(&mut proc, http).await;
    Collector { proc, grpc, http }
}

async fn wait_healthy(proc: &mut Proc, http: u16) {
    wait_for(
        "collector /health",
        Duration::from_secs(30),
        || proc.log(),
        || {
            http_get(loopback(http), "/health")
                .filter(|(s, b)| *s == 200 && b.contains("\"ok\":true"))
        },
    )
    .await;
}

fn agent(dir: &Path, grpc: u16, sites_file: &Path, target: &str, extra: &[&str]) -> Proc {
    agent_named("agent", dir, grpc, sites_file, target, free_port(), extra)
}

/// An agent process logging to `<dir>/<name>.log`, its /metrics on `metrics`.
fn agent_named(
    name: &str,
    dir: &Path,
    grpc: u16,
    sites_file: &Path,
    target: &str,
    metrics: u16,
    extra: &[&str],
) -> Proc {
    let mut args: Vec<String> = [
        "--log-format",
        "json",
        "agent",
        "--collector-url",
        &format!("https://127.0.0.1:{grpc}"),
        "--server-name",
        "localhost",
        "--sites-file",
        &sites_file.display().to_string(),
        "--target",
        target,
        "--spread",
        "0",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        // These tests count HEAD requests and check HEAD-first fields; the
        // content checks' GETs have their own test (content_checks.rs).
        "--no-content",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(tls_args(&dir.join("certs"), "agent-node-1"));
    Proc::spawn(name, &args, dir)
}

/// A metric of the agent serving /metrics on `port` (None: not answering).
/// An agent probing `count` of the fake sites every 300 ms, in batches of 20,
/// reconnecting within half a second: the load of the crash and outage tests.
fn busy_agent(dir: &Path, grpc: u16, sites: &FakeSites, count: usize, drain: &str) -> Proc {
    let list = dir.join("sites.txt");
    let names: Vec<String> = (0..count).map(|i| format!("site{i:03}.example")).collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let config = dir.join("agent.toml");
    let toml = format!(
        "[batch]\nmax_records = 20\nmax_delay = \"50ms\"\n[collector]\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"500ms\"\ndrain_timeout = \"{drain}\"\n[sample]\ninterval = \"5s\"\n"
    );
    std::fs::write(&config, toml).expect("agent config");
    let target = format!("127.0.0.1:{}", sites.port());
    let config_arg = config.display().to_string();
    agent(
        dir,
        grpc,
        &list,
        &target,
        &["--interval", "300ms", "--config", &config_arg],
    )
}

fn agent_metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(loopback(port), "/metrics")?;
    Some(metric_sum(&body, name))
}

/// The `agent stopped` summary's numeric field `name`.
fn summary_field(log: &str, name: &str) -> u64 {
    let stopped = log
        .lines()
        .find(|l| l.contains("agent stopped"))
        .unwrap_or_else(|| panic!("no agent summary line in {log}"));
    summary_number(stopped, name)
}

/// The numeric field `name` of a JSON log line.
fn summary_number(line: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let rest = &line[line.find(&key).expect(name) + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .expect(name)
}

const NO_DUPLICATES: &str = "SELECT count() FROM (SELECT site, ts, count() AS c FROM health_history GROUP BY site, ts HAVING c > 1)";

/// Every table a batch's records land in, with the columns telling two
/// records apart: probes by site and time, samples by node, thing and time.
const RECORD_TABLES: &[(&str, &str)] = &[
    ("health_history", "site, ts"),
    ("node_samples", "node, ts"),
    ("filesystem_samples", "node, mountpoint, ts"),
    ("disk_samples", "node, device, ts"),
    ("interface_samples", "node, interface, ts"),
    ("pod_samples", "node, pod, ts"),
    ("site_disk_samples", "node, site, ts"),
    ("site_process_samples", "node, site, ts"),
    ("service_states", "node, unit, ts"),
    ("alert_events", "agent, alert_id, ts"),
    (
        "alert_deliveries",
        "agent, notification_id, receiver, attempt, ts",
    ),
];

/// Records stored, of every kind.
fn stored_records(ch: &ClickHouseServer, db: &str) -> u64 {
    RECORD_TABLES
        .iter()
        .map(|(table, _)| count(ch, db, &format!("SELECT count() FROM {table}")))
        .sum()
}

/// Distinct records stored, of every kind: [`stored_records`] when none is
/// stored twice.
fn distinct_records(ch: &ClickHouseServer, db: &str) -> u64 {
    RECORD_TABLES
        .iter()
        .map(|(table, key)| count(ch, db, &format!("SELECT uniqExact({key}) FROM {table}")))
        .sum()
}

/// Sample records stored (every kind but probes).
fn stored_samples(ch: &ClickHouseServer, db: &str) -> u64 {
    stored_records(ch, db) - count(ch, db, "SELECT count() FROM health_history")
}

fn head_requests(sites: &FakeSites) -> u64 {
    sites
        .requests()
        .iter()
        .filter(|r| r.method.as_str() == "HEAD")
        .count() as u64
}

fn count(ch: &ClickHouseServer, db: &str, sql: &str) -> u64 {
    ch.query_in(db, sql).trim().parse().unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

const COLUMNS: &str =
    "site, status, port, location, `cross`, error, method, agent, target, cert_expiry";

/// `--once`: one round, unspread, then the agent exits 0 once the collector has
/// acknowledged every result; with no collector it exits non-zero and says how
/// many results were not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_once_runs_one_acknowledged_round_and_exits() {
    let ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database("e2e_once");
    let mut collector = collector(&ch, &db, dir.path()).await;
    let list = dir.path().join("sites.txt");
    std::fs::write(&list, [OK_SITE, ERROR_SITE, CROSS_SITE].join("\n")).expect("sites");
    let target = format!("127.0.0.1:{}", sites.port());

    // A long interval and the default spread: --once ignores both.
    let mut once = agent(
        dir.path(),
        collector.grpc,
        &list,
        &target,
        &["--once", "--interval", "1h"],
    );
    let status = once.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", once.log());
    let rows = "SELECT count() FROM health_history";
    assert_eq!(
        count(&ch, &db, rows),
        3,
        "one round, all acknowledged before the exit"
    );

    collector.proc.kill9();
    let mut orphan = agent(
        dir.path(),
        collector.grpc,
        &list,
        &target,
        &["--once", "--interval", "1h"],
    );
    let status = orphan.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "no collector, yet exit 0: {}",
        orphan.log()
    );
    assert!(
        orphan
            .log()
            .contains("1 batches (3 records) of the round were not acknowledged"),
        "{}",
        orphan.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_results_reach_clickhouse_field_by_field() {
    let ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database("e2e_fields");
    let mut collector = collector(&ch, &db, dir.path()).await;

    let list = dir.path().join("sites.txt");
    let names = [
        OK_SITE,
        SAME_SITE,
        CROSS_SITE,
        ERROR_SITE,
        NOHEAD_SITE,
        BADHEAD_SITE,
    ];
    std::fs::write(&list, format!("# test sites\n{}\n", names.join("\n"))).expect("sites");
    let started = now_ms();
    let target = format!("127.0.0.1:{}", sites.port());
    // Probes only: the rows counted below are the six probes.
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[sample]\nenabled = false\n").expect("agent config");
    let config_arg = config.display().to_string();
    let mut agent = agent(
        dir.path(),
        collector.grpc,
        &list,
        &target,
        &["--interval", "1h", "--config", &config_arg],
    );

    let last = "SELECT count() FROM health_last FINAL";
    wait_for(
        "6 rows in health_last",
        Duration::from_secs(30),
        || {
            format!(
                "agent:\n{}\ncollector:\n{}",
                agent.log(),
                collector.proc.log()
            )
        },
        || (count(&ch, &db, last) == 6).then_some(()),
    )
    .await;

    let port = sites.port();
    let t = &target;
    let expected = [
        format!("{BADHEAD_SITE}\t200\t{port}\t\t0\t\tGET\tnode-1\t{t}\t0"),
        format!("{CROSS_SITE}\t301\t{port}\t{CROSS_LOCATION}\t1\t\tHEAD\tnode-1\t{t}\t0"),
        format!("{ERROR_SITE}\t500\t{port}\t\t0\t\tHEAD\tnode-1\t{t}\t0"),
        format!("{NOHEAD_SITE}\t200\t{port}\t\t0\t\tGET\tnode-1\t{t}\t0"),
        format!("{OK_SITE}\t200\t{port}\t\t0\t\tHEAD\tnode-1\t{t}\t0"),
        format!("{SAME_SITE}\t301\t{port}\t{SAME_LOCATION}\t0\t\tHEAD\tnode-1\t{t}\t0"),
    ];
    for table in ["health_last FINAL", "health_history"] {
        let rows = ch.query_in(&db, &format!("SELECT {COLUMNS} FROM {table} ORDER BY site"));
        let rows: Vec<&str> = rows.lines().collect();
        assert_eq!(rows, expected, "rows of {table}");
        let timing = ch.query_in(&db, &format!(
            "SELECT min(ts), max(ts), min(latency_us), min(first_byte_us), \
             countIf(ms != intDiv(latency_us, 1000)), countIf(first_byte_us > latency_us) FROM {table}"));
        let f: Vec<u64> = timing
            .split_whitespace()
            .map(|v| v.parse().expect("number"))
            .collect();
        let done = now_ms();
        assert!(
            f[0] >= started && f[1] <= done,
            "ts {f:?} outside [{started}, {done}]"
        );
        assert!(
            f[2] > 0 && f[3] > 0,
            "latency and first byte are measured: {f:?}"
        );
        assert_eq!(
            (f[4], f[5]),
            (0, 0),
            "ms = latency_us/1000 and first byte <= total: {f:?}"
        );
    }
    // The 405 and 400 sites were asked HEAD first, then GET with a one-byte range.
    for site in [NOHEAD_SITE, BADHEAD_SITE] {
        let seen: Vec<(String, Option<String>)> = sites
            .requests_for(site)
            .into_iter()
            .map(|r| (r.method.to_string(), r.range))
            .collect();
        assert_eq!(
            seen,
            [
                ("HEAD".into(), None),
                ("GET".into(), Some("bytes=0-0".into()))
            ],
            "{site}"
        );
    }

    let (_, metrics) = http_get(loopback(collector.http), "/metrics").expect("collector metrics");
    assert_eq!(
        metric_sum(&metrics, "livehead_collector_rows_total"),
        6.0,
        "{metrics}"
    );
    agent.terminate(Duration::from_secs(15));
    assert!(
        agent.log().contains("\"unacked_batches\":0"),
        "{}",
        agent.log()
    );
    collector.proc.terminate(Duration::from_secs(15));
}

/// `/ready`'s status code, or 0 when nothing answers.
fn ready_status(http: u16) -> u16 {
    http_get(loopback(http), "/ready").map_or(0, |(status, _)| status)
}

/// What [`clickhouse_outages`] left in ClickHouse.
struct AfterStalls {
    /// Rows in `health_history`.
    stored: u64,
    /// Distinct probe results among them.
    distinct: u64,
    /// Probe results the agent produced (and had acknowledged).
    spooled: u64,
    /// Batches stored more than once: their rows and markers.
    repeated: String,
}

/// What happens to ClickHouse while the agent sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGSTOP, longer than the write timeout, then SIGCONT.
    Stall,
    /// SIGKILL, then a restart on the same ports and data.
    Kill,
}

/// ClickHouse goes through `outages` while the agent sends: `/ready` goes
/// 503 and back each time, and the agent ends with every batch acknowledged.
async fn clickhouse_outages(name: &str, outages: &[Outage]) -> AfterStalls {
    let mut ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database(name);
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        "ready_interval = \"200ms\"\n[storage]\nread_timeout = \"1s\"\nwrite_timeout = \"3s\"\n",
    )
    .expect("collector config");
    let (grpc, http) = (free_port(), free_port());
    let extra = ["--config".to_owned(), collector_toml.display().to_string()];
    let mut collector = start_collector_with(&ch, &db, dir.path(), grpc, http, &extra);
    wait_healthy(&mut collector, http).await;

    let mut agent = busy_agent(dir.path(), grpc, &sites, 50, "30s");
    let history = "SELECT count() FROM health_history";
    let patience = Duration::from_secs(60);
    let context = || format!("{}\n{}", collector.log(), agent.log());
    wait_for("rows stored", patience, context, || {
        (count(&ch, &db, history) >= 150).then_some(())
    })
    .await;
    wait_for("ready", patience, context, || {
        (ready_status(http) == 200).then_some(())
    })
    .await;

    for outage in outages {
        let pid = ch.pid().expect("clickhouse pid");
        match outage {
            // Longer than the write timeout, so writes fail and are resent.
            Outage::Stall => livehead_testkit::signal(pid, "STOP"),
            Outage::Kill => livehead_testkit::signal(pid, "KILL"),
        }
        wait_for("unready during the outage", patience, context, || {
            (ready_status(http) == 503).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        match outage {
            Outage::Stall => livehead_testkit::signal(pid, "CONT"),
            Outage::Kill => ch.restart(),
        }
        wait_for("ready after the outage", patience, context, || {
            (ready_status(http) == 200).then_some(())
        })
        .await;
        let back = count(&ch, &db, history);
        wait_for("rows written after the outage", patience, context, || {
            (count(&ch, &db, history) >= back + 150).then_some(())
        })
        .await;
    }

    agent.terminate(Duration::from_secs(40));
    let log = agent.log();
    assert_eq!(summary_field(&log, "unacked_batches"), 0, "{log}");
    assert_eq!(summary_field(&log, "dropped_records"), 0, "{log}");
    let metrics = http_get(loopback(http), "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    if outages.contains(&Outage::Stall) {
        assert!(
            metric_sum(&metrics, "livehead_collector_store_timeouts_total") >= 1.0,
            "{metrics}"
        );
    }
    collector.terminate(Duration::from_secs(15));
    assert!(
        stored_samples(&ch, &db) > 0,
        "batches mixed samples with probes"
    );
    AfterStalls {
        stored: stored_records(&ch, &db),
        distinct: distinct_records(&ch, &db),
        spooled: summary_field(&log, "records_spooled"),
        repeated: format!(
            "rows by seq:\n{}markers by seq:\n{}",
            ch.query_in(
                &db,
                "SELECT seq, count() FROM health_history GROUP BY seq \
                 HAVING count() > uniqExact(site, ts) ORDER BY seq",
            ),
            ch.query_in(
                &db,
                "SELECT seq, groupArray(records) FROM ingest_batches GROUP BY seq \
                 HAVING count() > 1 ORDER BY seq",
            ),
        ),
    }
}

/// A stalled ClickHouse, twice, loses nothing and stores nothing twice.
/// Before writes waited for an abandoned write to end (`store::timed`), 2
/// runs in 5 stored whole groups twice: the INSERT abandoned by the write
/// timeout completed once ClickHouse resumed, after the replay's marker lookup
/// had found nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stalled_loses_and_duplicates_nothing() {
    let after = clickhouse_outages("e2e_stall", &[Outage::Stall, Outage::Stall]).await;
    assert_eq!(
        after.distinct, after.spooled,
        "every probe result is stored"
    );
    assert_eq!(
        after.stored, after.spooled,
        "no probe result is stored twice; batches stored more than once:\n{}",
        after.repeated
    );
}

/// A stalled, then killed and restarted ClickHouse loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stalled_and_killed_loses_nothing() {
    let after = clickhouse_outages("e2e_kill", &[Outage::Stall, Outage::Kill]).await;
    assert_eq!(
        after.distinct, after.spooled,
        "every probe result is stored"
    );
}

/// ... nor stores anything twice: ClickHouse 18.16 commits the rows' part,
/// then the marker's (the materialized view), and a SIGKILL between the two
/// keeps rows without their marker, which the store must find and mark rather
/// than write again on the replay (before it did, this failed 2 runs in 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_killed_duplicates_nothing() {
    let after = clickhouse_outages("e2e_kill_once", &[Outage::Kill, Outage::Kill]).await;
    assert_eq!(
        after.stored, after.spooled,
        "no probe result is stored twice; batches stored more than once:\n{}",
        after.repeated
    );
}

/// SIGKILL the collector while the agent is sending, restart it on the same
/// port: after recovery every probe result is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_crash_loses_and_duplicates_nothing() {
    let ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database("e2e_crash");
    let Collector {
        proc: mut first,
        grpc,
        http,
    } = collector(&ch, &db, dir.path()).await;

    let mut agent = busy_agent(dir.path(), grpc, &sites, 150, "20s");

    let history = "SELECT count() FROM health_history";
    wait_for(
        "a few rounds stored",
        Duration::from_secs(30),
        || agent.log(),
        || (count(&ch, &db, history) >= 450).then_some(()),
    )
    .await;
    first.kill9();
    // Rounds go on while the collector is down: the agent spools them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_restart = count(&ch, &db, history);
    let mut second = start_collector(&ch, &db, dir.path(), grpc, http);
    wait_healthy(&mut second, http).await;
    wait_for(
        "rows written after the restart",
        Duration::from_secs(30),
        || agent.log(),
        || (count(&ch, &db, history) >= at_restart + 600).then_some(()),
    )
    .await;

    agent.terminate(Duration::from_secs(30));
    let log = agent.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("agent stopped"))
        .expect("agent summary line");
    let field = |name: &str| -> u64 {
        let key = format!("\"{name}\":");
        let rest = &stopped[stopped.find(&key).expect(name) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .expect(name)
    };
    assert_eq!(field("unacked_batches"), 0, "{stopped}");
    assert_eq!(field("dropped_records"), 0, "{stopped}");
    let spooled = field("records_spooled");
    assert!(
        log.contains("collector connection lost"),
        "the crash was noticed: {log}"
    );
    assert!(
        stored_samples(&ch, &db) > 0,
        "batches mixed samples with probes"
    );
    assert_eq!(
        stored_records(&ch, &db),
        spooled,
        "every record, probe or sample, is stored"
    );
    assert_eq!(
        distinct_records(&ch, &db),
        spooled,
        "no record is stored twice"
    );
    second.terminate(Duration::from_secs(15));
}

/// The repro: a collector whose message limit is far below the
/// agent's batches. The agent splits them (to the limits the collector
/// announces, or in halves on each `OutOfRange`) and every record is stored.
/// Either path alone suffices; the one without headers is what
/// agent/tests/transport.rs proves against a stub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_collector_message_limit_still_stores_every_record() {
    let ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database("e2e_small_limit");
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "[limits]\nmax_message_bytes = 20000\n").expect("config");
    let (grpc, http) = (free_port(), free_port());
    let extra = ["--config".to_owned(), config.display().to_string()];
    let mut collector = start_collector_with(&ch, &db, dir.path(), grpc, http, &extra);
    wait_healthy(&mut collector, http).await;

    let list = dir.path().join("sites.txt");
    let names: Vec<String> = (0..1000).map(|i| format!("site{i:04}.example")).collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "[collector]\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\ndrain_timeout = \"90s\"\n",
    )
    .expect("agent config");
    let target = format!("127.0.0.1:{}", sites.port());
    let config_arg = agent_config.display().to_string();
    let mut agent = agent(
        dir.path(),
        grpc,
        &list,
        &target,
        &["--once", "--concurrency", "200", "--config", &config_arg],
    );
    let status = agent.wait_exit(Duration::from_secs(120));
    let log = agent.log();
    assert!(
        status.success(),
        "{status}: {log}\ncollector:\n{}",
        collector.log()
    );
    assert_eq!(summary_field(&log, "dropped_records"), 0, "{log}");
    assert_eq!(count(&ch, &db, "SELECT count() FROM health_history"), 1000);
    assert_eq!(
        count(&ch, &db, "SELECT uniqExact(site) FROM health_history"),
        1000
    );
    collector.terminate(Duration::from_secs(15));
}

/// The disk spool: the collector dies, the agent goes on probing into its
/// spool directory and is SIGKILLed too; a new agent process on the same
/// directory and a restarted collector then store every probe exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_spool_survives_an_agent_killed_while_the_collector_is_down() {
    let ch = ClickHouseServer::start();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = ch.unique_database("e2e_disk_spool");
    let Collector {
        proc: mut first,
        grpc,
        http,
    } = collector(&ch, &db, dir.path()).await;

    let list = dir.path().join("sites.txt");
    let names: Vec<String> = (0..40).map(|i| format!("site{i:02}.example")).collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let spool = dir.path().join("spool");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[batch]\nmax_records = 15\nmax_delay = \"50ms\"\n[spool]\ndir = \"{}\"\n\
             [collector]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\ndrain_timeout = \"20s\"\n",
            spool.display()
        ),
    )
    .expect("agent config");
    let target = format!("127.0.0.1:{}", sites.port());
    let config_arg = config.display().to_string();
    let history = "SELECT count() FROM health_history";

    // Rounds every 3 s take well under a second: the agent is idle most of
    // the time, which is when it is killed below.
    let metrics = free_port();
    let mut agent = agent_named(
        "agent",
        dir.path(),
        grpc,
        &list,
        &target,
        metrics,
        &["--interval", "3s", "--config", &config_arg],
    );
    wait_for(
        "the first round stored and acknowledged",
        Duration::from_secs(30),
        || agent.log(),
        || {
            let waiting = agent_metric(metrics, "livehead_agent_spool_records")?;
            (count(&ch, &db, history) >= 40 && waiting == 0.0).then_some(())
        },
    )
    .await;
    first.kill9();
    let stored_before = count(&ch, &db, history);

    // Every probe made is now stored or spooled; two more rounds at least.
    wait_for(
        "two rounds spooled on disk",
        Duration::from_secs(60),
        || agent.log(),
        || {
            let spooled = agent_metric(metrics, "livehead_agent_spool_records")? as u64;
            let probed = head_requests(&sites);
            (spooled >= 80 && stored_before + spooled >= probed).then_some(())
        },
    )
    .await;
    agent.kill9();
    let probed = head_requests(&sites);
    let files = std::fs::read_dir(&spool).expect("spool dir").count();
    assert!(
        files >= 6,
        "{files} spool files for 80 records in batches of 15"
    );

    // The new process sends what the killed one spooled, then one round of
    // its own; the collector comes back meanwhile.
    let metrics = free_port();
    let mut second_agent = agent_named(
        "agent2",
        dir.path(),
        grpc,
        &list,
        &target,
        metrics,
        &["--interval", "1h", "--config", &config_arg],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = start_collector(&ch, &db, dir.path(), grpc, http);
    wait_healthy(&mut second, http).await;
    wait_for(
        "every probe stored",
        Duration::from_secs(60),
        || second_agent.log(),
        || {
            let waiting = agent_metric(metrics, "livehead_agent_spool_records")?;
            let probed = head_requests(&sites);
            (probed >= 40 + 80 + 40 && waiting == 0.0 && count(&ch, &db, history) >= probed)
                .then_some(probed)
        },
    )
    .await;
    second_agent.terminate(Duration::from_secs(30));
    let log = second_agent.log();
    let opened = log
        .lines()
        .find(|l| l.contains("disk spool opened"))
        .unwrap_or_else(|| panic!("no disk spool line: {log}"));
    assert!(
        summary_number(opened, "records") >= 80,
        "the killed agent's batches were found: {opened}"
    );
    assert_eq!(summary_field(&log, "unacked_batches"), 0, "{log}");
    assert_eq!(summary_field(&log, "dropped_records"), 0, "{log}");
    let probed_total = head_requests(&sites);
    assert_eq!(probed_total, probed + 40, "one round by the second agent");
    assert_eq!(count(&ch, &db, history), probed_total, "every probe stored");
    assert_eq!(count(&ch, &db, NO_DUPLICATES), 0, "none stored twice");
    assert_eq!(
        distinct_records(&ch, &db),
        stored_records(&ch, &db),
        "no sample stored twice either"
    );
    assert_eq!(
        std::fs::read_dir(&spool).expect("spool dir").count(),
        0,
        "acknowledged batches leave the spool"
    );
    second.terminate(Duration::from_secs(15));
}
