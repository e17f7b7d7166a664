//! End to end, real binaries, on both stores: the agent samples this machine
//! and a web root the test fills, the collector stores the samples and
//! `/stats` serves them to an admin token.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_testkit::clickhouse::ClickHouseServer;
use livehead_testkit::free_port;
use livehead_testkit::sites::FakeSites;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Proc, certs, http_request, loopback, tls_args, wait_for};

const ADMIN_TOKEN: &str = "admin-secret-token";

/// Where the collector under test keeps its rows, and how the test reads them.
enum Backend {
    ClickHouse {
        server: ClickHouseServer,
        db: String,
    },
    Sqlite {
        path: PathBuf,
    },
}

impl Backend {
    fn args(&self) -> Vec<String> {
        match self {
            Self::ClickHouse { server, db } => vec![
                "--clickhouse-url".into(),
                server.http_url(),
                "--database".into(),
                db.clone(),
            ],
            Self::Sqlite { path } => vec!["--sqlite-path".into(), path.display().to_string()],
        }
    }

    /// The answer to `sql` (the same SQL on both stores), tab-separated.
    fn query(&self, sql: &str) -> String {
        match self {
            Self::ClickHouse { server, db } => server.query_in(db, sql),
            Self::Sqlite { path } => {
                let out = std::process::Command::new("sqlite3")
                    .args(["-separator", "\t"])
                    .arg(path)
                    .arg(sql)
                    .output()
                    .expect("sqlite3 (apt install sqlite3)");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }

    fn number(&self, sql: &str) -> u64 {
        self.query(sql).trim().parse().unwrap_or(0)
    }
}

fn write_file(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, vec![b'x'; bytes]).expect("file");
}

/// /proc/meminfo's MemTotal in bytes.
fn mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    kb * 1024
}

fn stats(http: u16, path: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (status, body) =
        http_request(loopback(http), "GET", path, &[&auth], "").expect("collector answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON from {path}: {body}")),
    )
}

async fn samples_end_to_end(backend: Backend) {
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);

    // alpha: 6,500 bytes in 4 files (one in a subdirectory); beta: empty;
    // `backups` is ignored like discovery ignores it.
    let www = dir.path().join("www");
    for (file, bytes) in [
        ("alpha.example/index.php", 1000),
        ("alpha.example/wp-config.php", 2000),
        ("alpha.example/readme.html", 3000),
        ("alpha.example/wp-content/a.css", 500),
        ("backups/dump.sql", 10),
    ] {
        write_file(&www.join(file), bytes);
    }
    std::fs::create_dir_all(www.join("beta.example")).expect("beta");

    let hash = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!("[[api.tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\nrole = \"admin\"\n"),
    )
    .expect("collector config");
    let (grpc, http) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "collector",
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--config",
        &collector_toml.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(backend.args());
    args.extend(tls_args(&dir.path().join("certs"), "collector"));
    let mut collector = Proc::spawn("collector", &args, dir.path());
    wait_for(
        "collector /health",
        Duration::from_secs(30),
        || collector.log(),
        || support::http_get(loopback(http), "/health").filter(|(s, _)| *s == 200),
    )
    .await;

    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        "[batch]\nmax_delay = \"50ms\"\n[sample]\ninterval = \"5s\"\nsite_walk_interval = \"1s\"\n",
    )
    .expect("agent config");
    let mut agent_args: Vec<String> = [
        "agent",
        "--collector-url",
        &format!("https://127.0.0.1:{grpc}"),
        "--server-name",
        "localhost",
        "--web-root",
        &www.display().to_string(),
        "--target",
        &format!("127.0.0.1:{}", sites.port()),
        "--interval",
        "2s",
        "--metrics-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--config",
        &agent_toml.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    agent_args.extend(tls_args(&dir.path().join("certs"), "agent-node-1"));
    let mut agent = Proc::spawn("agent", &agent_args, dir.path());
    let logs = || format!("{}\n{}", collector.log(), agent.log());

    // The first tick is a baseline for rates; the second sends a node sample.
    wait_for(
        "node and site samples stored",
        Duration::from_secs(60),
        logs,
        || {
            let nodes = backend.number("SELECT count(*) FROM node_samples");
            let walks = backend
                .number("SELECT count(*) FROM site_disk_samples WHERE site = 'alpha.example'");
            (nodes >= 1 && walks >= 1).then_some(())
        },
    )
    .await;

    let node = backend.query(
        "SELECT node, cpu_cores, cpu_busy_pct, mem_total_bytes, mem_available_bytes, \
         mem_used_pct, load1, tasks_total, uptime_s FROM node_samples ORDER BY ts DESC LIMIT 1",
    );
    let f: Vec<&str> = node.trim().split('\t').collect();
    assert_eq!(f.len(), 9, "{node}");
    assert_eq!(f[0], "node-1", "the node is the agent's identity");
    let number = |i: usize| -> f64 { f[i].parse().unwrap_or_else(|_| panic!("{i}: {node}")) };
    assert!(number(1) >= 1.0, "cores: {node}");
    assert!((0.0..=100.0).contains(&number(2)), "busy: {node}");
    assert_eq!(
        number(3) as u64,
        mem_total(),
        "MemTotal as /proc/meminfo says"
    );
    assert!(
        number(4) > 0.0 && number(4) <= number(3),
        "available: {node}"
    );
    assert!((0.0..=100.0).contains(&number(5)), "used %: {node}");
    assert!(
        number(6) >= 0.0 && number(7) >= 1.0 && number(8) > 0.0,
        "{node}"
    );
    let filesystems = backend.query(
        "SELECT mountpoint, size_bytes, used_pct FROM filesystem_samples ORDER BY ts DESC LIMIT 1",
    );
    let fs: Vec<&str> = filesystems.trim().split('\t').collect();
    assert_eq!(fs.len(), 3, "a filesystem is sampled: {filesystems}");
    assert!(
        fs[1].parse::<u64>().is_ok_and(|size| size > 0),
        "{filesystems}"
    );

    let alpha = "SELECT disk_bytes, file_count FROM site_disk_samples \
                 WHERE site = 'alpha.example' ORDER BY ts DESC LIMIT 1";
    assert_eq!(backend.query(alpha).trim(), "6500\t4");
    assert_eq!(
        backend
            .query(
                "SELECT disk_bytes, file_count FROM site_disk_samples \
             WHERE site = 'beta.example' ORDER BY ts DESC LIMIT 1"
            )
            .trim(),
        "0\t0"
    );
    assert_eq!(
        backend.number("SELECT count(*) FROM site_disk_samples WHERE site = 'backups'"),
        0,
        "sites.ignore applies to site walks"
    );

    // A new file shows after the next walk.
    write_file(&www.join("alpha.example/wp-content/uploads/new.jpg"), 1234);
    wait_for(
        "the next walk counts the new file",
        Duration::from_secs(30),
        logs,
        || (backend.query(alpha).trim() == "7734\t5").then_some(()),
    )
    .await;

    // /stats serves what was stored.
    let (status, server) = stats(http, "/stats/server?node=node-1");
    assert_eq!(status, 200, "{server}");
    assert!(server.to_string().contains("\"node-1\""), "{server}");
    assert!(
        server
            .to_string()
            .contains(&format!("\"mem_total_bytes\":{}", mem_total())),
        "{server}"
    );
    let (status, site) = stats(http, "/stats/site/alpha.example");
    assert_eq!(status, 200, "{site}");
    assert!(site.to_string().contains("\"disk_bytes\":7734"), "{site}");
    let (status, history) = stats(http, "/stats/server/history?node=node-1&hours=1&points=10");
    assert_eq!(status, 200, "{history}");
    let (status, _) = stats(http, "/stats/site/gamma.example");
    assert_eq!(status, 404, "a site without samples");

    agent.terminate(Duration::from_secs(20));
    collector.terminate(Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_clickhouse_and_stats() {
    let server = ClickHouseServer::start();
    let db = server.unique_database("e2e_samples");
    samples_end_to_end(Backend::ClickHouse { server, db }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_sqlite_and_stats() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("livehead.db");
    samples_end_to_end(Backend::Sqlite { path }).await;
}
