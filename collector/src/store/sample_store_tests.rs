//! The sample tables on both stores, each test written once and run on
//! SQLite (a file in a temporary directory) and on ClickHouse (Debian's
//! 18.16 started by the testkit, one database per test): rows of every kind
//! written through `Store::write_batch`, read back by `Store::stats`.

use std::sync::LazyLock;

use livehead_common::clock;
use livehead_testkit::Backend;
use livehead_testkit::clickhouse::ClickHouseServer;

use super::clickhouse::ClickHouseStore;
use super::clickhouse::schema;
use super::samples::{
    AlertDeliveryRow, AlertEventRow, DiskRow, FilesystemRow, HeartbeatCheckRow, HeartbeatPingRow,
    HeartbeatStateRow, History, InterfaceRow, Latest, Newest, NodeRow, PodRow, SampleKind, Scope,
    ServiceRow, SiteDiskRow, SiteProcessRow, StatsQuery, WatchdogEventRow,
};
use super::sqlite::SqliteStore;
use super::{
    BatchWrite, DumpFilter, LastState, ProbeRow, Rows, StorageConfig, Store, WriteOutcome,
};

/// One ClickHouse server for the collector's unit tests (each test its own database).
pub(crate) static SERVER: LazyLock<ClickHouseServer> = LazyLock::new(ClickHouseServer::start);

const DAY_MS: u64 = 86_400_000;

livehead_testkit::on_both_stores!(
    every_kind_reads_back_as_written,
    latest_is_the_newest_row_of_each_thing,
    history_averages_into_at_most_points_buckets,
    retention_expires_old_samples,
    the_readme_bi_queries_run_as_written,
    latest_probes_are_the_newest_of_each_site_with_every_column,
    the_watch_snapshot_reads_the_newest_state,
    the_readme_alert_queries_run_as_written,
    the_readme_watchdog_and_heartbeat_queries_run_as_written,
    newest_rows_of_one_thing_come_newest_first,
    probe_trust_and_content_read_back_on_every_path,
    migration_7_adds_trust_and_content_to_existing_probe_tables,
    probes_keep_a_last_state_per_vantage,
    migration_8_keys_health_last_by_vantage_keeping_its_rows,
    probe_history_is_one_sites_probes_newest_first,
);

enum TestStore {
    /// The directory lives as long as the store.
    Sqlite(SqliteStore, #[allow(dead_code)] tempfile::TempDir),
    ClickHouse(Box<ClickHouseStore>, String),
}

impl TestStore {
    async fn open(backend: Backend, test: &str, retention_days: u32) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let config = StorageConfig {
                    sqlite_path: dir.path().join("livehead.db"),
                    retention_days,
                    ..StorageConfig::default()
                };
                Self::Sqlite(SqliteStore::open(&config).await.expect("open"), dir)
            }
            Backend::ClickHouse => {
                let database = SERVER.unique_database(test);
                let config = StorageConfig {
                    clickhouse_url: Some(SERVER.http_url()),
                    database: database.clone(),
                    retention_days,
                    ..StorageConfig::default()
                };
                let store = ClickHouseStore::connect(&config).await.expect("connect");
                Self::ClickHouse(Box::new(store), database)
            }
        }
    }

    /// Writes one batch through the stores' one write path.
    async fn write(&self, agent: &str, seq: u64, rows: &Rows) {
        let batch = BatchWrite {
            agent,
            seq,
            rows: rows.as_ref(),
        };
        let outcome = match self {
            Self::Sqlite(store, _) => store.write_batch(batch).await,
            Self::ClickHouse(store, _) => store.write_batch(batch).await,
        }
        .expect("write the batch");
        assert_eq!(outcome, WriteOutcome::Written { rows: rows.len() });
    }

    async fn stats(&self, kind: SampleKind, scope: Scope<'_>) -> Rows {
        let query = StatsQuery { kind, scope };
        match self {
            Self::Sqlite(store, _) => store.stats(&query).await,
            Self::ClickHouse(store, _) => store.stats(&query).await,
        }
        .expect("stats")
    }

    async fn latest(&self, kind: SampleKind, since_ms: u64, only: Option<&str>) -> Rows {
        self.stats(kind, Scope::Latest(Latest { since_ms, only }))
            .await
    }

    /// Runs one README statement with the store's own command-line client
    /// and answers its rows, fields separated by `|`.
    fn sql(&self, sql: &str) -> String {
        match self {
            Self::Sqlite(store, _) => {
                let output = std::process::Command::new("sqlite3")
                    .arg(store.path())
                    .arg(format!("{sql};"))
                    .output()
                    .expect("run sqlite3 (Debian package sqlite3)");
                assert!(
                    output.status.success(),
                    "sqlite3 failed for {sql}:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout).expect("UTF-8")
            }
            Self::ClickHouse(_, database) => SERVER.query_in(database, sql).replace('\t', "|"),
        }
    }

    async fn maintain(&self) {
        match self {
            Self::Sqlite(store, _) => store.maintain().await,
            Self::ClickHouse(store, _) => store.maintain().await,
        }
        .expect("maintain");
    }
}

fn node(node: &str, ts: u64, cpu: f64) -> NodeRow {
    NodeRow {
        node: node.into(),
        ts,
        cpu_cores: 8,
        cpu_busy_pct: cpu,
        cpu_user_pct: 1.25,
        cpu_system_pct: 2.5,
        cpu_iowait_pct: 0.5,
        cpu_steal_pct: 0.125,
        load1: 0.75,
        load5: 0.5,
        load15: 0.25,
        tasks_running: 3,
        tasks_total: 412,
        mem_total_bytes: 16 << 30,
        mem_available_bytes: 9 << 30,
        mem_used_pct: 43.75,
        swap_total_bytes: 2 << 30,
        swap_free_bytes: 1 << 30,
        psi_cpu_some: Some(1.5),
        psi_cpu_full: None,
        psi_io_some: Some(0.25),
        psi_io_full: Some(0.0),
        psi_memory_some: None,
        psi_memory_full: Some(3.0),
        open_fds: 2048,
        uptime_s: 86_400,
    }
}

fn filesystem(node: &str, ts: u64, mountpoint: &str, used_pct: f64) -> FilesystemRow {
    FilesystemRow {
        node: node.into(),
        ts,
        mountpoint: mountpoint.into(),
        device: "/dev/nvme0n1p2".into(),
        fstype: "ext4".into(),
        size_bytes: 100 << 30,
        used_bytes: 40 << 30,
        free_bytes: 60 << 30,
        used_pct,
        inodes_total: 6_000_000,
        inodes_used: 300_000,
        inodes_free: 5_700_000,
        inodes_used_pct: 5.0,
    }
}

fn site_disk(node: &str, ts: u64, site: &str, disk_bytes: u64) -> SiteDiskRow {
    SiteDiskRow {
        node: node.into(),
        ts,
        site: site.into(),
        disk_bytes,
        file_count: 1234,
        walk_ms: 56,
        truncated: false,
    }
}

/// One row of every kind, a distinct value in every column.
fn every_kind(agent: &str, ts: u64) -> Rows {
    Rows {
        nodes: vec![node(agent, ts, 12.5)],
        filesystems: vec![filesystem(agent, ts, "/var/www", 40.0)],
        disks: vec![DiskRow {
            node: agent.into(),
            ts,
            device: "nvme0n1".into(),
            read_bytes_per_s: 1024.5,
            write_bytes_per_s: 2048.25,
            reads_per_s: 10.0,
            writes_per_s: 20.0,
        }],
        interfaces: vec![InterfaceRow {
            node: agent.into(),
            ts,
            interface: "eth0.100".into(),
            rx_bytes_per_s: 1.0,
            tx_bytes_per_s: 2.0,
            rx_packets_per_s: 3.0,
            tx_packets_per_s: 4.0,
            rx_errors_per_s: 5.0,
            tx_errors_per_s: 6.0,
            rx_drops_per_s: 7.0,
            tx_drops_per_s: 8.0,
        }],
        pods: vec![PodRow {
            node: agent.into(),
            ts,
            pod: "web-7d9f".into(),
            cgroup: "kubepods.slice/pod123".into(),
            cpu_pct: 150.0,
            cpu_throttled_us: 1200,
            memory_current_bytes: 300 << 20,
            memory_max_bytes: 512 << 20,
            memory_working_set_bytes: 250 << 20,
            oom_kills: 1,
            io_read_bytes_per_s: 11.0,
            io_write_bytes_per_s: 12.0,
            io_reads_per_s: 13.0,
            io_writes_per_s: 14.0,
            pids_current: 42,
            pids_max: 0,
        }],
        site_disks: vec![SiteDiskRow {
            truncated: true,
            ..site_disk(agent, ts, "a.example", 5 << 20)
        }],
        site_processes: vec![SiteProcessRow {
            node: agent.into(),
            ts,
            site: "a.example".into(),
            user: "web_a".into(),
            processes: 7,
            cpu_pct: 33.5,
            rss_bytes: 200 << 20,
        }],
        services: vec![ServiceRow {
            node: agent.into(),
            ts,
            unit: "php8.2-fpm.service".into(),
            site: "a.example".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 4321,
            memory_bytes: 80 << 20,
            cpu_time_us: 9_000_000,
            restarts: 2,
        }],
        alerts: vec![AlertEventRow {
            agent: agent.into(),
            ts,
            alert_id: "0123456789abcdef".into(),
            rule: "site-down".into(),
            severity: "critical".into(),
            node: "node-7".into(),
            site: "a.example".into(),
            service: "php8.2-fpm.service".into(),
            state: "firing".into(),
            summary: "a.example answers 502".into(),
            since_ms: ts - 5000,
            actor: "ops@example".into(),
        }],
        deliveries: vec![AlertDeliveryRow {
            agent: agent.into(),
            ts,
            notification_id: "fedcba9876543210".into(),
            receiver: "slack-ops".into(),
            state: "firing".into(),
            attempt: 3,
            outcome: "retry".into(),
            http_status: 429,
            error: "rate limited".into(),
        }],
        watchdog: vec![WatchdogEventRow {
            node: agent.into(),
            ts,
            app: "shop".into(),
            kind: "recovery_step".into(),
            attempt: 2,
            reason: "tcp 127.0.0.1:3000 refused".into(),
            command: "pm2 restart shop".into(),
            step_end: "exited".into(),
            exit_status: 1,
            duration_ms: 1500,
            output: "stopping\n\tstarted \u{1b}[32mok\u{1b}[0m\n".into(),
        }],
        heartbeat_checks: vec![HeartbeatCheckRow {
            agent: agent.into(),
            ts,
            check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
            project: "ops".into(),
            slug: "nightly-backup".into(),
            name: "Nightly backup".into(),
            tags: "backup prod".into(),
            period_s: 0,
            cron: "30 2 * * *".into(),
            tz: "Europe/Paris".into(),
            grace_s: 3600,
            paused: true,
            deleted: false,
            source: "config".into(),
            actor: "checks.toml".into(),
        }],
        heartbeat_pings: vec![HeartbeatPingRow {
            agent: agent.into(),
            ts,
            check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
            kind: "exit".into(),
            exit_status: 3,
            rid: "0e6a1bb8-52a4-4b39-8d8e-3f4b1f0a9c11".into(),
            method: "POST".into(),
            remote: "10.0.0.7".into(),
            user_agent: "curl/8.5".into(),
            body: "rsync failed\n".into(),
            body_bytes: 40_000,
            duration_ms: 61_000,
        }],
        heartbeat_states: vec![HeartbeatStateRow {
            agent: agent.into(),
            ts,
            check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
            name: "Nightly backup".into(),
            status: "down".into(),
            previous: "grace".into(),
            reason: "exit status 3".into(),
        }],
        probes: Vec::new(),
    }
}

const KINDS: [SampleKind; 14] = [
    SampleKind::Node,
    SampleKind::Filesystem,
    SampleKind::Disk,
    SampleKind::Interface,
    SampleKind::Pod,
    SampleKind::SiteDisk,
    SampleKind::SiteProcess,
    SampleKind::Service,
    SampleKind::AlertEvent,
    SampleKind::AlertDelivery,
    SampleKind::Watchdog,
    SampleKind::HeartbeatCheck,
    SampleKind::HeartbeatPing,
    SampleKind::HeartbeatState,
];

/// `rows` with only the rows of `kind`.
fn of_kind(rows: &Rows, kind: SampleKind) -> Rows {
    let mut out = Rows::default();
    match kind {
        SampleKind::Node => out.nodes = rows.nodes.clone(),
        SampleKind::Filesystem => out.filesystems = rows.filesystems.clone(),
        SampleKind::Disk => out.disks = rows.disks.clone(),
        SampleKind::Interface => out.interfaces = rows.interfaces.clone(),
        SampleKind::Pod => out.pods = rows.pods.clone(),
        SampleKind::SiteDisk => out.site_disks = rows.site_disks.clone(),
        SampleKind::SiteProcess => out.site_processes = rows.site_processes.clone(),
        SampleKind::Service => out.services = rows.services.clone(),
        SampleKind::AlertEvent => out.alerts = rows.alerts.clone(),
        SampleKind::AlertDelivery => out.deliveries = rows.deliveries.clone(),
        SampleKind::Watchdog => out.watchdog = rows.watchdog.clone(),
        SampleKind::HeartbeatCheck => out.heartbeat_checks = rows.heartbeat_checks.clone(),
        SampleKind::HeartbeatPing => out.heartbeat_pings = rows.heartbeat_pings.clone(),
        SampleKind::HeartbeatState => out.heartbeat_states = rows.heartbeat_states.clone(),
    }
    out
}

async fn every_kind_reads_back_as_written(backend: Backend) {
    let store = TestStore::open(backend, "every_kind", 30).await;
    let ts = clock::unix_ms() - 1000;
    let mut rows = every_kind("edge-1", ts);
    // The batch's agent is stored as `node`, whatever the row says.
    let mut sent = rows.clone();
    sent.nodes[0].node = "someone-else".into();
    sent.alerts[0].agent = "someone-else".into();
    store.write("edge-1", 1, &sent).await;
    for kind in KINDS {
        let latest = store.latest(kind, 0, None).await;
        assert_eq!(latest, of_kind(&rows, kind), "{kind:?}");
    }
    // History of one row: one bucket starting at `since`, the row's values.
    let history = store
        .stats(
            SampleKind::Node,
            Scope::History(History {
                of: "edge-1",
                since_ms: ts,
                until_ms: ts + 1000,
                points: 10,
            }),
        )
        .await;
    rows.nodes[0].ts = ts;
    assert_eq!(history.nodes, rows.nodes);
}

async fn latest_is_the_newest_row_of_each_thing(backend: Backend) {
    let store = TestStore::open(backend, "latest", 30).await;
    let now = clock::unix_ms();
    let older = Rows {
        nodes: vec![node("a", now - 3000, 10.0)],
        filesystems: vec![
            filesystem("a", now - 3000, "/", 10.0),
            filesystem("a", now - 3000, "/var", 20.0),
        ],
        site_disks: vec![site_disk("a", now - 3000, "x.example", 100)],
        ..Rows::default()
    };
    let mut newest_a = node("a", now - 2000, 30.0);
    // The newest row's NULLs are its own, not an older row's values.
    newest_a.psi_cpu_some = None;
    let newer = Rows {
        nodes: vec![newest_a.clone()],
        filesystems: vec![filesystem("a", now - 2000, "/", 11.0)],
        site_disks: vec![
            site_disk("a", now - 2000, "x.example", 200),
            site_disk("a", now - 2000, "y.example", 300),
        ],
        ..Rows::default()
    };
    let b = Rows {
        nodes: vec![node("b", now - 500, 50.0)],
        site_disks: vec![site_disk("b", now - 500, "x.example", 400)],
        ..Rows::default()
    };
    store.write("a", 1, &older).await;
    store.write("a", 2, &newer).await;
    store.write("b", 1, &b).await;

    let nodes = store.latest(SampleKind::Node, 0, None).await.nodes;
    assert_eq!(nodes, [newest_a.clone(), b.nodes[0].clone()]);
    let only_a = store.latest(SampleKind::Node, 0, Some("a")).await.nodes;
    assert_eq!(only_a, [newest_a]);
    // Node a's newest row is older than `since`: gone from "now".
    let fresh = store.latest(SampleKind::Node, now - 1000, None).await.nodes;
    assert_eq!(fresh, b.nodes);

    let filesystems = store.latest(SampleKind::Filesystem, 0, None).await;
    let used: Vec<(&str, f64)> = filesystems
        .filesystems
        .iter()
        .map(|f| (f.mountpoint.as_str(), f.used_pct))
        .collect();
    assert_eq!(used, [("/", 11.0), ("/var", 20.0)]);

    // Site kinds: `only` is the site; one row per node holding it.
    let x = store
        .latest(SampleKind::SiteDisk, 0, Some("x.example"))
        .await
        .site_disks;
    let x: Vec<(&str, u64)> = x.iter().map(|r| (r.node.as_str(), r.disk_bytes)).collect();
    assert_eq!(x, [("a", 200), ("b", 400)]);
    let all = store.latest(SampleKind::SiteDisk, 0, None).await.site_disks;
    assert_eq!(all.len(), 3);
    let none = store
        .latest(SampleKind::SiteDisk, 0, Some("z.example"))
        .await;
    assert!(none.is_empty());
}

async fn history_averages_into_at_most_points_buckets(backend: Backend) {
    let store = TestStore::open(backend, "history", 30).await;
    let since = clock::unix_ms() - 60_000;
    // One row a second for 10 s, busy % = the second; another node alongside,
    // and rows of this node just outside the range.
    let mut rows = Rows::default();
    let mut other = Rows::default();
    for i in 0..10u64 {
        let mut row = node("a", since + i * 1000, i as f64);
        row.mem_available_bytes = i * 100;
        row.psi_cpu_full = (i % 2 == 0).then_some(i as f64);
        rows.nodes.push(row);
        other.nodes.push(node("b", since + i * 1000, 99.0));
        rows.site_disks
            .push(site_disk("a", since + i * 1000, "x.example", i * 10));
    }
    rows.nodes.push(node("a", since - 1, 1000.0));
    rows.nodes.push(node("a", since + 10_000, 1000.0));
    store.write("a", 1, &rows).await;
    store.write("b", 1, &other).await;

    let history = |of, points| {
        Scope::History(History {
            of,
            since_ms: since,
            until_ms: since + 9_999,
            points,
        })
    };
    let got = store.stats(SampleKind::Node, history("a", 5)).await;
    let buckets: Vec<(u64, f64, u64, Option<f64>)> = got
        .nodes
        .iter()
        .map(|r| {
            (
                r.ts - since,
                r.cpu_busy_pct,
                r.mem_available_bytes,
                r.psi_cpu_full,
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            (0, 0.5, 50, Some(0.0)),
            (2000, 2.5, 250, Some(2.0)),
            (4000, 4.5, 450, Some(4.0)),
            (6000, 6.5, 650, Some(6.0)),
            (8000, 8.5, 850, Some(8.0)),
        ]
    );
    assert!(got.nodes.iter().all(|r| r.node == "a"));

    // 3 points over 10 s: buckets of 3.334 s, at most 3 of them.
    let got = store.stats(SampleKind::Node, history("a", 3)).await;
    let starts: Vec<u64> = got.nodes.iter().map(|r| r.ts - since).collect();
    assert_eq!(starts, [0, 3334, 6668]);
    let cpu: Vec<f64> = got.nodes.iter().map(|r| r.cpu_busy_pct).collect();
    assert_eq!(cpu, [1.5, 5.0, 8.0]);

    // Site history is of a site.
    let got = store
        .stats(SampleKind::SiteDisk, history("x.example", 2))
        .await
        .site_disks;
    let sites: Vec<(u64, &str, u64)> = got
        .iter()
        .map(|r| (r.ts - since, r.site.as_str(), r.disk_bytes))
        .collect();
    assert_eq!(sites, [(0, "x.example", 20), (5000, "x.example", 70)]);

    // An empty range answers nothing.
    let empty = store
        .stats(
            SampleKind::Node,
            Scope::History(History {
                of: "a",
                since_ms: since,
                until_ms: since - 1,
                points: 5,
            }),
        )
        .await;
    assert!(empty.is_empty());
}

async fn retention_expires_old_samples(backend: Backend) {
    let store = TestStore::open(backend, "retention", 30).await;
    let now = clock::unix_ms();
    store
        .write("old", 1, &every_kind("old", now - 40 * DAY_MS))
        .await;
    let recent = every_kind("new", now);
    store.write("new", 1, &recent).await;
    for kind in KINDS {
        assert_eq!(store.latest(kind, 0, None).await.len(), 2, "{kind:?}");
    }
    store.maintain().await;
    for kind in KINDS {
        let left = store.latest(kind, 0, None).await;
        if kind == SampleKind::HeartbeatCheck {
            // Definitions never expire: a yearly job's check stays.
            assert_eq!(left.len(), 2, "{kind:?}");
        } else {
            assert_eq!(left, of_kind(&recent, kind), "{kind:?}");
        }
    }
}

/// The README's ready-made BI queries, as written, on samples whose answers
/// are known (values whose text is alike in both clients: 20.5, not 20).
async fn the_readme_bi_queries_run_as_written(backend: Backend) {
    let store = TestStore::open(backend, "readme_bi", 30).await;
    let now = clock::unix_ms();
    let hour = now / 3_600_000 * 3_600_000;
    let sample = |node_name: &str, ts, cpu, mem| NodeRow {
        mem_used_pct: mem,
        ..node(node_name, ts, cpu)
    };
    let a = Rows {
        nodes: vec![
            sample("a", hour, 10.25, 40.25),
            sample("a", hour + 1, 30.75, 60.75),
        ],
        filesystems: vec![
            filesystem("a", now - 2000, "/", 95.5),
            filesystem("a", now - 1000, "/", 11.5),
            filesystem("a", now - 1000, "/var", 20.5),
        ],
        site_disks: vec![
            site_disk("a", now - 6 * DAY_MS, "x.example", 100),
            site_disk("a", now - DAY_MS, "x.example", 300),
            site_disk("a", now - 1000, "x.example", 600),
            site_disk("a", now - 6 * DAY_MS, "y.example", 1000),
            site_disk("a", now - 1000, "y.example", 1100),
            // Out of the 7 days: not the start of the growth.
            site_disk("a", now - 8 * DAY_MS, "y.example", 0),
        ],
        ..Rows::default()
    };
    let b = Rows {
        nodes: vec![sample("b", hour, 50.5, 10.5)],
        filesystems: vec![filesystem("b", now - 1000, "/", 90.5)],
        ..Rows::default()
    };
    store.write("a", 1, &a).await;
    store.write("b", 1, &b).await;

    let heading = match backend {
        Backend::Sqlite => "#### Ready-made SQL for BI (SQLite)",
        Backend::ClickHouse => "#### Ready-made SQL for BI (ClickHouse)",
    };
    let statements = livehead_testkit::readme::sql_statements(heading);
    assert_eq!(statements.len(), 3, "{statements:?}");
    // The first fields of each row (the hour's text differs by nothing but
    // is left out: it depends on when the test runs).
    let fields = |out: String, keep: &[usize]| -> Vec<String> {
        out.lines()
            .map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                keep.iter().map(|i| f[*i]).collect::<Vec<_>>().join("|")
            })
            .collect()
    };
    assert_eq!(
        fields(store.sql(&statements[0]), &[0, 2, 3]),
        ["a|20.5|50.5", "b|50.5|10.5"]
    );
    assert_eq!(
        fields(store.sql(&statements[1]), &[0, 1, 2]),
        ["b|/|90.5", "a|/var|20.5", "a|/|11.5"]
    );
    assert_eq!(
        fields(store.sql(&statements[2]), &[0, 1, 2, 3]),
        ["a|x.example|500|600", "a|y.example|100|1100"]
    );
}

/// The markers ClickHouse's views write carry the digest Rust computes
/// (`KindRow::digest`) for rows of every kind.
#[tokio::test]
async fn clickhouse_markers_digest_sample_rows_as_rust_does() {
    let store = TestStore::open(Backend::ClickHouse, "digests", 30).await;
    let TestStore::ClickHouse(_, database) = &store else {
        unreachable!()
    };
    let now = clock::unix_ms();
    let mut expected = String::new();
    for (seq, kind) in (1u64..).zip(KINDS) {
        let mut rows = of_kind(&every_kind("edge-1", now), kind);
        let second = of_kind(&every_kind("edge-1", now + 7), kind);
        rows.extend(second.as_ref());
        store.write("edge-1", seq, &rows).await;
        expected.push_str(&format!("{seq}\t2\t{}\n", rows.as_ref().digest()));
    }
    // A batch of every kind: its markers (one per table) add up to its digest.
    let all = every_kind("edge-1", now + 1);
    store.write("edge-1", 99, &all).await;
    expected.push_str(&format!("99\t{}\t{}\n", KINDS.len(), all.as_ref().digest()));
    let markers = SERVER.query_in(
        database,
        "SELECT seq, sum(records), sum(digest) FROM ingest_batches \
         WHERE agent = 'edge-1' GROUP BY seq ORDER BY seq",
    );
    assert_eq!(markers, expected);
}

fn probe(agent: &str, site: &str, ts: u64, status: u16) -> ProbeRow {
    ProbeRow {
        site: site.into(),
        status,
        ms: 12,
        port: 443,
        location: "https://other.example/".into(),
        cross: 1,
        ts,
        latency_us: 12_345,
        connect_us: 100,
        first_byte_us: 12_000,
        error: String::new(),
        method: "GET".into(),
        target: "10.0.0.7:443".into(),
        cert_expiry: 1_900_000_000_000,
        agent: agent.into(),
        cert_trust: "expired".into(),
        cert_error: "invalid peer certificate: Expired".into(),
        content: "failed".into(),
        content_failure: "contains \"critical error\"".into(),
        content_excerpt: "<p>There has been a critical error on this website.</p>".into(),
        vantage: "inside".into(),
    }
}

impl TestStore {
    async fn latest_probes(&self, since_ms: u64) -> Vec<ProbeRow> {
        match self {
            Self::Sqlite(store, _) => store.latest_probes(since_ms).await,
            Self::ClickHouse(store, _) => store.latest_probes(since_ms).await,
        }
        .expect("latest probes")
    }

    async fn snapshot(&self, since_ms: u64) -> Rows {
        match self {
            Self::Sqlite(store, _) => crate::watch::read_snapshot(store, since_ms).await,
            Self::ClickHouse(store, _) => {
                crate::watch::read_snapshot(store.as_ref(), since_ms).await
            }
        }
        .expect("snapshot")
    }
}

async fn latest_probes_are_the_newest_of_each_site_with_every_column(backend: Backend) {
    let store = TestStore::open(backend, "latest_probes", 30).await;
    let now = clock::unix_ms();
    let old_a = probe("node-1", "a.example", now - 3000, 200);
    let gone = probe("node-1", "gone.example", now - 60_000, 200);
    store
        .write("node-1", 1, &Rows::from(vec![old_a, gone.clone()]))
        .await;
    let mut new_a = probe("node-2", "a.example", now - 1000, 0);
    new_a.error = "timeout".into();
    new_a.method = "HEAD".into();
    new_a.location = String::new();
    new_a.cross = 0;
    let b = probe("node-1", "b.example", now - 2000, 503);
    store
        .write("node-2", 1, &Rows::from(vec![new_a.clone()]))
        .await;
    store.write("node-1", 2, &Rows::from(vec![b.clone()])).await;
    // By agent, then site; the newest probe of a site whoever sent it.
    assert_eq!(
        store.latest_probes(now - 10_000).await,
        [b.clone(), new_a.clone()]
    );
    assert_eq!(store.latest_probes(0).await, [b, gone, new_a]);
}

impl TestStore {
    async fn probe_history(&self, site: &str, since_ms: u64, limit: u32) -> Vec<ProbeRow> {
        match self {
            Self::Sqlite(store, _) => store.probe_history(site, since_ms, limit).await,
            Self::ClickHouse(store, _) => store.probe_history(site, since_ms, limit).await,
        }
        .expect("probe history")
    }
}

/// The dashboard's site page: every column, one site only, since a time,
/// newest first, at most `limit`.
async fn probe_history_is_one_sites_probes_newest_first(backend: Backend) {
    let store = TestStore::open(backend, "probe_history", 30).await;
    let now = clock::unix_ms();
    let mut probes: Vec<ProbeRow> = (0..5)
        .map(|i| probe("node-1", "a.example", now - 5000 + i * 1000, 200 + i as u16))
        .collect();
    probes[3].cert_trust = "expired".into();
    probes[3].cert_error = "certificate expired".into();
    probes[3].content = "failed".into();
    probes[3].content_failure = "body contains \"Fatal error\"".into();
    let other = probe("node-1", "b.example", now - 500, 500);
    let mut rows = probes.clone();
    rows.push(other.clone());
    store.write("node-1", 1, &Rows::from(rows)).await;
    let newest_first: Vec<ProbeRow> = probes.iter().rev().cloned().collect();
    assert_eq!(store.probe_history("a.example", 0, 100).await, newest_first);
    assert_eq!(
        store.probe_history("a.example", now - 2500, 100).await,
        newest_first[..2]
    );
    assert_eq!(
        store.probe_history("a.example", 0, 2).await,
        newest_first[..2]
    );
    assert_eq!(store.probe_history("b.example", 0, 10).await, [other]);
    assert_eq!(store.probe_history("c.example", 0, 10).await, []);
}

async fn the_watch_snapshot_reads_the_newest_state(backend: Backend) {
    let store = TestStore::open(backend, "snapshot", 30).await;
    let now = clock::unix_ms();
    let mut older = every_kind("edge-1", now - 5000);
    older.probes = vec![probe("edge-1", "a.example", now - 5000, 200)];
    let mut newer = every_kind("edge-1", now - 1000);
    newer.probes = vec![probe("edge-1", "a.example", now - 1000, 502)];
    store.write("edge-1", 1, &older).await;
    store.write("edge-1", 2, &newer).await;
    let snapshot = store.snapshot(now - 60_000).await;
    let heartbeats = Rows {
        heartbeat_checks: newer.heartbeat_checks.clone(),
        heartbeat_pings: newer.heartbeat_pings.clone(),
        heartbeat_states: newer.heartbeat_states.clone(),
        ..Rows::default()
    };
    let expected = Rows {
        nodes: newer.nodes.clone(),
        filesystems: newer.filesystems.clone(),
        services: newer.services.clone(),
        watchdog: newer.watchdog.clone(),
        probes: newer.probes.clone(),
        ..heartbeats.clone()
    };
    assert_eq!(snapshot, expected);
    // Heartbeats whatever their age: a monthly job's last ping is old.
    assert_eq!(store.snapshot(now).await, heartbeats);
}

async fn the_readme_watchdog_and_heartbeat_queries_run_as_written(backend: Backend) {
    let store = TestStore::open(backend, "heartbeat_sql", 30).await;
    let now = clock::unix_ms();
    let rows = every_kind("edge-1", now);
    let event = |ts, app: &str, kind: &str| WatchdogEventRow {
        ts,
        app: app.into(),
        kind: kind.into(),
        ..rows.watchdog[0].clone()
    };
    let ping = |ts, check_id: &str, duration_ms| HeartbeatPingRow {
        ts,
        check_id: check_id.into(),
        duration_ms,
        ..rows.heartbeat_pings[0].clone()
    };
    let state = |ts, name: &str, status: &str| HeartbeatStateRow {
        ts,
        name: name.into(),
        status: status.into(),
        ..rows.heartbeat_states[0].clone()
    };
    let batch = Rows {
        watchdog: vec![
            event(now - 3, "shop", "recovered"),
            event(now - 2, "shop", "recovered"),
            event(now - 1, "blog", "recovered"),
            event(now, "blog", "exhausted"),
        ],
        heartbeat_pings: vec![
            ping(now - 3, "a", 1000),
            ping(now - 2, "a", 3000),
            ping(now - 1, "b", 0),
            ping(now, "b", 500),
        ],
        heartbeat_states: vec![
            state(now - 2, "backup", "down"),
            state(now - 1, "backup", "up"),
            state(now, "backup", "down"),
        ],
        ..Rows::default()
    };
    store.write("edge-1", 1, &batch).await;
    let statements = livehead_testkit::readme::sql_statements("### Watchdog and heartbeat tables");
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert_eq!(store.sql(&statements[0]), "edge-1|shop|2\nedge-1|blog|1\n");
    assert_eq!(store.sql(&statements[1]), "a|2|3000\nb|1|500\n");
    assert_eq!(store.sql(&statements[2]), "backup|2\n");
}

async fn the_readme_alert_queries_run_as_written(backend: Backend) {
    let store = TestStore::open(backend, "alert_sql", 30).await;
    let now = clock::unix_ms();
    let rows = every_kind("alerter", now);
    let event = |ts, rule: &str, site: &str, state: &str| super::samples::AlertEventRow {
        ts,
        rule: rule.into(),
        site: site.into(),
        state: state.into(),
        ..rows.alerts[0].clone()
    };
    let delivery = |ts, receiver: &str, outcome: &str| super::samples::AlertDeliveryRow {
        ts,
        receiver: receiver.into(),
        outcome: outcome.into(),
        ..rows.deliveries[0].clone()
    };
    let batch = Rows {
        alerts: vec![
            event(now - 4, "site-down", "a.example", "firing"),
            event(now - 3, "site-down", "b.example", "firing"),
            event(now - 2, "site-down", "a.example", "resolved"),
            event(now - 1, "cert-expiry", "a.example", "firing"),
        ],
        deliveries: vec![
            delivery(now - 3, "slack", "failed"),
            delivery(now - 2, "pagerduty", "sent"),
            delivery(now - 1, "slack", "failed"),
        ],
        ..Rows::default()
    };
    store.write("alerter", 1, &batch).await;
    let statements = livehead_testkit::readme::sql_statements("### Alert tables");
    assert_eq!(statements.len(), 2, "{statements:?}");
    assert_eq!(
        store.sql(&statements[0]),
        "site-down|critical|2|2\ncert-expiry|critical|1|1\n"
    );
    assert_eq!(store.sql(&statements[1]), "slack|2\n");
}

fn ping(check_id: &str, ts: u64, kind: &str, rid: &str) -> HeartbeatPingRow {
    HeartbeatPingRow {
        agent: "heartbeats".into(),
        ts,
        check_id: check_id.into(),
        kind: kind.into(),
        rid: rid.into(),
        method: "GET".into(),
        ..HeartbeatPingRow::default()
    }
}

/// The read behind a check's ping list and a run's duration at ping time.
async fn newest_rows_of_one_thing_come_newest_first(backend: Backend) {
    let store = TestStore::open(backend, "newest_rows_of_one_thing", 0).await;
    let now = clock::unix_ms();
    let (a, b) = (
        "a0000000-0000-4000-8000-000000000000",
        "b0000000-0000-4000-8000-000000000000",
    );
    let rows = Rows {
        heartbeat_pings: vec![
            ping(a, now - 4000, "start", "r1"),
            ping(a, now - 3000, "success", "r1"),
            ping(b, now - 2500, "start", ""),
            ping(a, now - 2000, "start", "r2"),
            ping(a, now - 1000, "log", ""),
        ],
        ..Rows::default()
    };
    store.write("heartbeats", 1, &rows).await;
    let newest = |of: &'static [&'static str], limit| {
        let store = &store;
        async move {
            let rows = store
                .stats(
                    SampleKind::HeartbeatPing,
                    Scope::Newest(Newest { of, limit }),
                )
                .await;
            rows.heartbeat_pings
                .iter()
                .map(|p| (p.ts, p.kind.clone()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        newest(&["a0000000-0000-4000-8000-000000000000"], 3).await,
        [
            (now - 1000, "log".to_owned()),
            (now - 2000, "start".to_owned()),
            (now - 3000, "success".to_owned())
        ]
    );
    assert_eq!(
        newest(&["a0000000-0000-4000-8000-000000000000", "start"], 10).await,
        [
            (now - 2000, "start".to_owned()),
            (now - 4000, "start".to_owned())
        ]
    );
    assert_eq!(
        newest(&["c0000000-0000-4000-8000-000000000000"], 10).await,
        []
    );
}

// ---- Probe trust and content (migration 7) --------------------------------

impl TestStore {
    async fn last(&self, site: &str) -> Option<LastState> {
        self.last_from(site, "inside").await
    }

    async fn last_from(&self, site: &str, vantage: &str) -> Option<LastState> {
        match self {
            Self::Sqlite(store, _) => store.last(site, vantage).await,
            Self::ClickHouse(store, _) => store.last(site, vantage).await,
        }
        .expect("last")
    }

    async fn dump_last(&self) -> Vec<LastState> {
        self.dump_last_from(&DumpFilter::default()).await
    }

    async fn dump_last_from(&self, filter: &DumpFilter) -> Vec<LastState> {
        match self {
            Self::Sqlite(store, _) => store.dump_last(filter).await,
            Self::ClickHouse(store, _) => store.dump_last(filter).await,
        }
        .expect("dump_last")
    }

    /// The same file or database opened again, as a restarted collector.
    async fn reopen(self) -> Self {
        match self {
            Self::Sqlite(store, dir) => {
                drop(store);
                let config = StorageConfig {
                    sqlite_path: dir.path().join("livehead.db"),
                    ..StorageConfig::default()
                };
                Self::Sqlite(SqliteStore::open(&config).await.expect("reopen"), dir)
            }
            Self::ClickHouse(store, database) => {
                drop(store);
                let config = StorageConfig {
                    clickhouse_url: Some(SERVER.http_url()),
                    database: database.clone(),
                    ..StorageConfig::default()
                };
                let store = ClickHouseStore::connect(&config).await.expect("reconnect");
                Self::ClickHouse(Box::new(store), database)
            }
        }
    }

    /// A probe table's column names, in order.
    fn columns(&self, table: &str) -> String {
        let sql = match self {
            Self::Sqlite(..) => {
                format!("SELECT group_concat(name, ',') FROM pragma_table_info('{table}')")
            }
            Self::ClickHouse(..) => format!(
                "SELECT arrayStringConcat(groupArray(name), ',') FROM system.columns \
                 WHERE database = currentDatabase() AND table = '{table}'"
            ),
        };
        self.sql(&sql).trim().to_owned()
    }
}

/// The newest state `probe` leaves, as the API reads it.
fn state_of(p: &ProbeRow) -> LastState {
    LastState {
        site: p.site.clone(),
        status: p.status,
        ms: p.ms,
        port: p.port,
        location: p.location.clone(),
        cross: p.cross,
        ts: p.ts,
        cert_trust: p.cert_trust.clone(),
        cert_error: p.cert_error.clone(),
        content: p.content.clone(),
        content_failure: p.content_failure.clone(),
        content_excerpt: p.content_excerpt.clone(),
        vantage: p.vantage.clone(),
    }
}

/// A probe that checked neither its certificate nor its content.
fn unchecked(agent: &str, site: &str, ts: u64) -> ProbeRow {
    ProbeRow {
        cert_trust: String::new(),
        cert_error: String::new(),
        content: String::new(),
        content_failure: String::new(),
        content_excerpt: String::new(),
        ..probe(agent, site, ts, 200)
    }
}

async fn probe_trust_and_content_read_back_on_every_path(backend: Backend) {
    let store = TestStore::open(backend, "probe_checks", 30).await;
    let now = clock::unix_ms();
    let checked = probe("edge-1", "a.example", now - 1000, 200);
    let plain = unchecked("edge-1", "b.example", now - 2000);
    // A newer plain probe replaces a checked state entirely.
    let older = probe("edge-1", "c.example", now - 5000, 200);
    let newer = unchecked("edge-1", "c.example", now - 3000);
    let rows = Rows::from(vec![checked.clone(), plain.clone(), older]);
    store.write("edge-1", 1, &rows).await;
    store
        .write("edge-1", 2, &Rows::from(vec![newer.clone()]))
        .await;

    assert_eq!(store.last("a.example").await, Some(state_of(&checked)));
    assert_eq!(store.last("b.example").await, Some(state_of(&plain)));
    assert_eq!(
        store.dump_last().await,
        [state_of(&checked), state_of(&plain), state_of(&newer)]
    );
    assert_eq!(
        store.latest_probes(0).await,
        [checked.clone(), plain, newer]
    );
    // History keeps every probe's fields (BI reads them there).
    let history = store.sql(
        "SELECT site, cert_trust, cert_error, content, content_failure, content_excerpt \
         FROM health_history WHERE cert_trust != '' ORDER BY site",
    );
    let expected: String = ["a.example", "c.example"]
        .iter()
        .map(|site| {
            format!(
                "{site}|{}|{}|{}|{}|{}\n",
                checked.cert_trust,
                checked.cert_error,
                checked.content,
                checked.content_failure,
                checked.content_excerpt
            )
        })
        .collect();
    assert_eq!(history, expected);
    // The README's query of untrusted certificates.
    let last = match store {
        TestStore::Sqlite(..) => "health_last",
        TestStore::ClickHouse(..) => "health_last FINAL",
    };
    let untrusted = store.sql(&format!(
        "SELECT site, cert_trust, cert_error FROM {last} \
         WHERE cert_trust NOT IN ('', 'trusted') ORDER BY site"
    ));
    assert_eq!(
        untrusted,
        format!("a.example|{}|{}\n", checked.cert_trust, checked.cert_error)
    );
}

/// A store whose probe tables predate migration 7 (rows in them) gets the
/// columns last, as a fresh one has them, and its old rows read as "not
/// checked".
async fn migration_7_adds_trust_and_content_to_existing_probe_tables(backend: Backend) {
    let store = TestStore::open(backend, "migration_7", 30).await;
    let now = clock::unix_ms();
    for table in ["health_history", "health_last"] {
        for column in [
            "cert_trust",
            "cert_error",
            "content",
            "content_failure",
            "content_excerpt",
        ] {
            store.sql(&format!("ALTER TABLE {table} DROP COLUMN {column}"));
        }
        store.sql(&format!(
            "INSERT INTO {table} (site, status, ms, ts) VALUES ('old.example', 200, 5, {now})"
        ));
    }
    match &store {
        TestStore::Sqlite(..) => store.sql("DELETE FROM schema_migrations WHERE version = 7"),
        // Every migration runs again: each is idempotent.
        TestStore::ClickHouse(..) => store.sql("DROP TABLE schema_migrations"),
    };
    let store = store.reopen().await;
    // Migration 8's `vantage` is already there (a key column of health_last
    // on ClickHouse, which cannot be dropped), so these come after it.
    let after_vantage = |columns: Vec<&str>| {
        let (vantage, others): (Vec<&str>, Vec<&str>) =
            columns.into_iter().partition(|c| *c == "vantage");
        let at = others
            .iter()
            .position(|c| *c == "cert_trust")
            .expect("cert_trust");
        let mut out = others;
        out.splice(at..at, vantage);
        out.join(",")
    };
    assert_eq!(
        store.columns("health_history"),
        after_vantage(schema::history_columns())
    );
    assert_eq!(
        store.columns("health_last"),
        after_vantage(schema::last_columns())
    );
    let old = store.last("old.example").await.expect("the old row");
    assert_eq!(
        (old.status, old.cert_trust.as_str(), old.content.as_str()),
        (200, "", "")
    );
    let checked = probe("edge-1", "old.example", now + 1, 200);
    store
        .write("edge-1", 1, &Rows::from(vec![checked.clone()]))
        .await;
    assert_eq!(store.last("old.example").await, Some(state_of(&checked)));
}

// ---- Vantages (migration 8) -------------------------------------------------

fn from(vantage: &str, p: ProbeRow) -> ProbeRow {
    ProbeRow {
        vantage: vantage.into(),
        ..p
    }
}

async fn probes_keep_a_last_state_per_vantage(backend: Backend) {
    let store = TestStore::open(backend, "vantages", 30).await;
    let now = clock::unix_ms();
    let inside = from("inside", unchecked("node-1", "a.example", now - 3000));
    // Newer, from another agent: it must not replace the inside state.
    let outside = from("outside", probe("prober-1", "a.example", now - 1000, 502));
    let only_outside = from("outside", unchecked("prober-1", "b.example", now - 2000));
    store
        .write("node-1", 1, &Rows::from(vec![inside.clone()]))
        .await;
    let rows = Rows::from(vec![outside.clone(), only_outside.clone()]);
    store.write("prober-1", 1, &rows).await;
    // An older outside probe replayed late changes nothing.
    let late = from("outside", unchecked("prober-1", "a.example", now - 5000));
    store.write("prober-1", 2, &Rows::from(vec![late])).await;

    assert_eq!(store.last("a.example").await, Some(state_of(&inside)));
    assert_eq!(
        store.last_from("a.example", "outside").await,
        Some(state_of(&outside))
    );
    assert_eq!(store.last("b.example").await, None);
    assert_eq!(store.dump_last().await, [state_of(&inside)]);
    let outside_filter = DumpFilter {
        vantage: "outside".into(),
        ..DumpFilter::default()
    };
    assert_eq!(
        store.dump_last_from(&outside_filter).await,
        [state_of(&outside), state_of(&only_outside)]
    );
    // The watch snapshot: every vantage's newest, by agent, site, vantage.
    assert_eq!(
        store.latest_probes(0).await,
        [inside, outside, only_outside]
    );
    let history = store.sql(
        "SELECT site, vantage, count(*) FROM health_history \
         GROUP BY site, vantage ORDER BY site, vantage",
    );
    assert_eq!(
        history,
        "a.example|inside|1\na.example|outside|2\nb.example|outside|1\n"
    );
}

/// A store whose `health_last` is keyed by site alone (rows in it) is
/// re-keyed; its rows are the inside states; a collector that died half way
/// (a half-filled new table, or the old one left renamed) finishes the job.
async fn migration_8_keys_health_last_by_vantage_keeping_its_rows(backend: Backend) {
    let store = TestStore::open(backend, "migration_8", 30).await;
    let now = clock::unix_ms();
    let old = unchecked("node-1", "old.example", now - 1000);
    store
        .write("node-1", 1, &Rows::from(vec![old.clone()]))
        .await;
    let kept = schema::last_columns()
        .into_iter()
        .filter(|c| *c != "vantage")
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (engine, gone) = match store {
        TestStore::Sqlite(..) => ("", "sqlite_master WHERE type = 'table' AND"),
        TestStore::ClickHouse(..) => (
            " ENGINE = ReplacingMergeTree(ts) ORDER BY site",
            "system.tables WHERE database = currentDatabase() AND",
        ),
    };
    for statement in [
        format!("CREATE TABLE pre_8{engine} AS SELECT {kept} FROM health_last"),
        "DROP TABLE health_last".to_owned(),
        "RENAME TABLE pre_8 TO health_last".to_owned(),
        "ALTER TABLE health_history DROP COLUMN vantage".to_owned(),
    ] {
        let statement = match (&store, statement.strip_prefix("RENAME TABLE pre_8 TO ")) {
            (TestStore::Sqlite(..), Some(to)) => format!("ALTER TABLE pre_8 RENAME TO {to}"),
            _ => statement,
        };
        store.sql(&statement);
    }
    if let TestStore::ClickHouse(..) = store {
        // What a collector killed while filling the new table leaves (SQLite
        // migrates in one transaction: nothing is left).
        store.sql(&format!(
            "CREATE TABLE health_last_v8{engine} AS SELECT {kept} FROM health_last"
        ));
    }
    let forget = match &store {
        TestStore::Sqlite(..) => "DELETE FROM schema_migrations WHERE version = 8",
        TestStore::ClickHouse(..) => "DROP TABLE schema_migrations",
    };
    store.sql(forget);
    let store = store.reopen().await;
    let check = |store: &TestStore| {
        assert_eq!(
            store.columns("health_history"),
            schema::history_columns().join(",")
        );
        assert_eq!(
            store.columns("health_last"),
            schema::last_columns().join(",")
        );
        let left = store.sql(&format!(
            "SELECT count(*) FROM {gone} name IN ('health_last_v7', 'health_last_v8')"
        ));
        assert_eq!(left.trim(), "0");
    };
    check(&store);
    if let TestStore::ClickHouse(..) = store {
        let key = store.sql(
            "SELECT sorting_key FROM system.tables \
             WHERE database = currentDatabase() AND name = 'health_last'",
        );
        assert_eq!(key.trim(), "site, vantage");
    }
    assert_eq!(store.last("old.example").await, Some(state_of(&old)));
    let outside = from("outside", unchecked("prober-1", "old.example", now));
    store
        .write("prober-1", 1, &Rows::from(vec![outside.clone()]))
        .await;
    assert_eq!(store.last("old.example").await, Some(state_of(&old)));
    assert_eq!(
        store.last_from("old.example", "outside").await,
        Some(state_of(&outside))
    );
    // Killed after the RENAME: the old table is left under its new name.
    if let TestStore::ClickHouse(..) = store {
        store.sql("CREATE TABLE health_last_v7 (site String) ENGINE = Memory");
        store.sql("DROP TABLE schema_migrations");
        let store = store.reopen().await;
        check(&store);
        assert_eq!(
            store.last_from("old.example", "outside").await,
            Some(state_of(&outside))
        );
    }
}
