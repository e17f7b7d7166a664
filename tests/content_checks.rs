//! End to end with the real binary: an agent's failing content check
//! (a WordPress error page answered with 200) reaches a collector on
//! SQLite with its failure and excerpt; a passing one is stored as OK.
//! And the certificate trust of a direct https probe: a certificate from
//! the test's own CA is `unknown_issuer` in `/last` until the agent is given
//! that CA (`probe.extra_ca_files`), then `trusted`.

mod support;

use std::path::Path;
use std::time::Duration;

use livehead_common::certs::DevCa;
use livehead_testkit::free_port;
use livehead_testkit::sites::{FakeSites, OK_SITE, WP_ERROR_SITE};
use support::{
    Proc, agent_args, certs, http_get, loopback, start_collector, wait_for, wait_healthy,
};

fn sqlite(path: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .args(["-separator", "\t"])
        .arg(path)
        .arg(sql)
        .output()
        .expect("sqlite3 (apt install sqlite3)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_content_check_is_stored_with_its_failure_and_excerpt() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = dir.path().join("livehead.db");
    let sites = FakeSites::start().await;
    let (grpc, http) = (free_port(), free_port());
    let collector = start_collector(
        "collector",
        dir.path(),
        grpc,
        http,
        &["--sqlite-path".into(), db.display().to_string()],
    );
    wait_healthy(&collector, http).await;

    let list = dir.path().join("sites.txt");
    std::fs::write(&list, format!("{OK_SITE}\n{WP_ERROR_SITE}\n")).expect("sites");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[content]\nevery_rounds = 1\n").expect("agent config");
    let (config, target) = (
        config.display().to_string(),
        format!("127.0.0.1:{}", sites.port()),
    );
    let args = agent_args(
        dir.path(),
        "agent-node-1",
        grpc,
        &list,
        free_port(),
        &[
            "--target",
            &target,
            "--config",
            &config,
            "--no-sample",
            "--once",
        ],
    );
    let mut agent = Proc::spawn("agent", &args, dir.path());
    let status = agent.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "agent: {}", agent.log());

    let query = "SELECT site, status, method, content, content_failure, content_excerpt \
                 FROM health_history ORDER BY site";
    let rows = wait_for(
        "two probes in the store",
        Duration::from_secs(30),
        || collector.log(),
        || {
            let rows = sqlite(&db, query);
            (rows.lines().count() == 2).then_some(rows)
        },
    )
    .await;
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0][..5], [OK_SITE, "200", "GET", "ok", ""], "{rows:?}");
    assert_eq!(
        rows[1][..5],
        [
            WP_ERROR_SITE,
            "200",
            "GET",
            "failed",
            "not_contains = \"There has been a critical error on this website\""
        ],
        "{rows:?}"
    );
    assert!(
        rows[1][5].contains("There has been a critical error on this website"),
        "{rows:?}"
    );
    assert!(rows[1][5].len() <= 200, "{rows:?}");
}

/// One `--once` round of an agent probing `url` directly, with `config`.
fn probe_once(dir: &Path, grpc: u16, url: &str, config: &str) {
    let list = dir.join("direct.txt");
    std::fs::write(&list, format!("{url}\n")).expect("sites");
    let path = dir.join("direct.toml");
    std::fs::write(&path, config).expect("agent config");
    let path = path.display().to_string();
    let args = agent_args(
        dir,
        "agent-node-1",
        grpc,
        &list,
        free_port(),
        &["--config", &path, "--no-sample", "--no-content", "--once"],
    );
    let mut agent = Proc::spawn("agent", &args, dir);
    let status = agent.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "agent: {}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_untrusted_until_the_agent_trusts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["node-1"]);
    let db = dir.path().join("livehead.db");
    let ca = DevCa::generate("the test's own CA").expect("CA");
    let site = FakeSites::start_tls_issued_by(&ca, "localhost").await;
    let (grpc, http) = (free_port(), free_port());
    let collector = start_collector(
        "collector",
        dir.path(),
        grpc,
        http,
        &["--sqlite-path".into(), db.display().to_string()],
    );
    wait_healthy(&collector, http).await;
    let url = format!("https://localhost:{}/", site.port());
    let last = |trust: &'static str| {
        wait_for(
            trust,
            Duration::from_secs(30),
            || collector.log(),
            move || {
                let (200, body) = http_get(loopback(http), "/last?site=localhost")? else {
                    return None;
                };
                let json: serde_json::Value = serde_json::from_str(&body).ok()?;
                (json["data"]["cert_trust"] == trust).then_some(json)
            },
        )
    };

    probe_once(dir.path(), grpc, &url, "");
    let untrusted = last("unknown_issuer").await;
    assert_eq!(untrusted["data"]["s"], 200, "{untrusted}");
    assert!(
        untrusted["data"]["cert_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{untrusted}"
    );

    let ca_file = dir.path().join("site-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let config = format!(
        "[probe]\nextra_ca_files = [{:?}]\n",
        ca_file.display().to_string()
    );
    probe_once(dir.path(), grpc, &url, &config);
    let trusted = last("trusted").await;
    assert_eq!(trusted["data"]["s"], 200, "{trusted}");
    assert!(trusted["data"].get("cert_error").is_none(), "{trusted}");
}
