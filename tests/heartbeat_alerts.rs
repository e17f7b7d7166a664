//! End to end, real processes: heartbeat records stored by a collector
//! reach the alerter through its watch stream, and a check that is late or
//! reports a failure is one Slack message (with the failure's log), its
//! next success one resolved message. The first test pushes the records over
//! gRPC as an agent would (the alerter's side alone); the second goes
//! through the collector's `/ping` endpoints, a checks file, and `livehead
//! run` around a failing command.

mod support;

use std::path::Path;
use std::time::Duration;

use livehead_agent::config::{BatchConfig, CollectorConnConfig, SpoolConfig};
use livehead_agent::metrics::AgentMetrics;
use livehead_agent::ship::Shipper;
use livehead_common::tls::TlsFiles;
use livehead_proto::v1::record::Kind;
use livehead_proto::v1::{HeartbeatCheck, HeartbeatPing, PingKind, Record};
use livehead_testkit::free_port;
use livehead_testkit::receiver::FakeReceiver;
use support::{
    Proc, certs, http_get, loopback, start_alerter, start_collector, wait_for, wait_healthy,
};
use tokio::sync::mpsc;

const CHECK_ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";
const ARRIVES: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    livehead_common::clock::unix_ms()
}

/// Heartbeat alerts page in these tests.
const HEARTBEAT_SETTINGS: &str = "[heartbeats]\nseverity = \"critical\"\n";

/// The collector's store: `<dir>/livehead.db`.
fn sqlite(dir: &Path) -> Vec<String> {
    vec![
        "--sqlite-path".into(),
        dir.join("livehead.db").display().to_string(),
    ]
}

/// The `text` of every message Slack received, in order.
fn slack_texts(slack: &FakeReceiver) -> Vec<String> {
    slack
        .received()
        .iter()
        .map(|r| r.json["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What a failed wait shows: both processes' logs.
fn both_logs(alerter: &Proc, collector: &Proc) -> String {
    format!(
        "--- alerter\n{}\n--- collector\n{}",
        alerter.log(),
        collector.log()
    )
}

fn rules(slack: &FakeReceiver) -> String {
    format!(
        r#"
[[receivers]]
kind = "slack"
name = "slack"
url = "{slack}"
delivery = {{ min_interval = "0s" }}

[route]
receiver = "slack"
group_wait = "0s"
group_interval = "1s"
"#,
        slack = slack.url("/slack"),
    )
}

/// Ships records to the collector as agent `jobs` would.
async fn shipper(dir: &Path, grpc: u16) -> (Shipper, mpsc::Sender<Record>) {
    let certs = dir.join("certs");
    let connection = CollectorConnConfig {
        url: format!("https://127.0.0.1:{grpc}"),
        server_name: Some("localhost".into()),
        tls: Some(TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join("agent-jobs.pem"),
            key: certs.join("agent-jobs-key.pem"),
            ..TlsFiles::default()
        }),
        ..CollectorConnConfig::default()
    };
    let batch = BatchConfig {
        max_delay: Duration::from_millis(50),
        ..BatchConfig::default()
    };
    let (tx, rx) = mpsc::channel(64);
    let shipper = Shipper::start(
        String::new(),
        &batch,
        &SpoolConfig::default(),
        &connection,
        rx,
        AgentMetrics::new(),
    )
    .await
    .expect("shipper");
    (shipper, tx)
}

fn check(ts_ms: u64) -> Record {
    Record {
        kind: Some(Kind::HeartbeatCheck(HeartbeatCheck {
            ts_ms,
            check_id: CHECK_ID.into(),
            name: "nightly-backup".into(),
            tags: "prod".into(),
            period_s: 60,
            grace_s: 60,
            source: "api".into(),
            actor: "test".into(),
            ..HeartbeatCheck::default()
        })),
    }
}

fn ping(ts_ms: u64, kind: PingKind, exit_status: u32, body: &str) -> Record {
    Record {
        kind: Some(Kind::HeartbeatPing(HeartbeatPing {
            ts_ms,
            check_id: CHECK_ID.into(),
            kind: kind.into(),
            exit_status,
            method: "POST".into(),
            remote: "127.0.0.1".into(),
            body: body.into(),
            body_bytes: body.len() as u64,
            ..HeartbeatPing::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_or_failing_check_is_one_slack_message_and_its_success_resolves_it() {
    livehead_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["jobs", "alerter"]);
    let slack = FakeReceiver::start().await;
    std::fs::write(dir.path().join("rules.toml"), rules(&slack)).expect("rules");
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let collector = start_collector("collector", dir.path(), grpc, http, &sqlite(dir.path()));
    wait_healthy(&collector, http).await;
    let alerter = start_alerter(dir.path(), &[grpc], api, HEARTBEAT_SETTINGS);
    wait_healthy(&alerter, api).await;
    let logs = || both_logs(&alerter, &collector);
    let texts = || slack_texts(&slack);
    let wait_messages = |n: usize| {
        wait_for(
            "Slack messages",
            ARRIVES,
            move || format!("got {:#?}\n{}", texts(), logs()),
            move || {
                let t = texts();
                (t.len() >= n).then_some(t)
            },
        )
    };

    let (shipper, records) = shipper(dir.path(), grpc).await;
    // Last success three minutes ago, every minute expected, one minute of
    // grace: down as soon as the alerter sees it.
    let now = now_ms();
    records.send(check(now - 10 * 60_000)).await.expect("send");
    records
        .send(ping(now - 3 * 60_000, PingKind::Success, 0, ""))
        .await
        .expect("send");
    let got = wait_messages(1).await;
    assert!(
        got[0].contains("heartbeat nightly-backup is down: no ping since"),
        "{got:#?}"
    );

    records
        .send(ping(now_ms(), PingKind::Success, 0, ""))
        .await
        .expect("send");
    let got = wait_messages(2).await;
    assert!(got[1].contains("is up again"), "{got:#?}");

    records
        .send(ping(
            now_ms(),
            PingKind::Exit,
            3,
            "copying...\nERROR: disk full\n",
        ))
        .await
        .expect("send");
    let got = wait_messages(3).await;
    assert!(got[2].contains("exit status 3"), "{got:#?}");
    // The log is in the message's blocks (the summary's section).
    let blocks = slack.received()[2].json["blocks"].to_string();
    assert!(blocks.contains("ERROR: disk full"), "{blocks}");

    // Each change of status is a heartbeat_states row, stored through the
    // alerter's records (the sqlite3 CLI, as tests/alerting.rs does).
    let db = dir.path().join("livehead.db");
    let query = |sql: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .expect("sqlite3");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let states = wait_for(
        "heartbeat_states rows",
        ARRIVES,
        || alerter.log(),
        || {
            let rows = query(&format!(
                "SELECT previous || '>' || status FROM heartbeat_states WHERE check_id = '{CHECK_ID}' ORDER BY ts"
            ));
            (rows.lines().count() >= 3).then_some(rows)
        },
    )
    .await;
    // ">down", or ">new" then "new>down" when the check and its ping came
    // in two batches.
    assert!(states.ends_with(">down\ndown>up\nup>down"), "{states}");

    // Nothing more: one message per change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(texts().len(), 3, "{:#?}", texts());
    drop(records);
    shipper.finish().await;
}

const LATE_ID: &str = "0e6a1bb8-52a4-4b39-8d8e-3f4b1f0a9c11";
const JOB_ID: &str = "7c3e5f0e-8d1b-4a57-9a8e-2f0b1c9d4e6a";

/// Two checks as code: one pinged every 4 s (1 s of grace), one hourly job.
fn checks_file() -> String {
    format!(
        r#"
[[checks]]
id = "{LATE_ID}"
name = "token-refresh"
period = "4s"
grace = "1s"

[[checks]]
id = "{JOB_ID}"
name = "nightly-backup"
period = "1h"
grace = "1h"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_ping_and_a_failing_livehead_run_reach_slack_through_the_ping_endpoints() {
    livehead_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["alerter"]);
    let slack = FakeReceiver::start().await;
    std::fs::write(dir.path().join("rules.toml"), rules(&slack)).expect("rules");
    let checks = dir.path().join("checks.toml");
    std::fs::write(&checks, checks_file()).expect("checks file");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[heartbeats]\nchecks_file = {:?}\n",
            checks.display().to_string()
        ),
    )
    .expect("collector config");
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let mut flags = sqlite(dir.path());
    flags.extend(["--config".to_owned(), config.display().to_string()]);
    let collector = start_collector("collector", dir.path(), grpc, http, &flags);
    wait_healthy(&collector, http).await;
    let alerter = start_alerter(dir.path(), &[grpc], api, HEARTBEAT_SETTINGS);
    wait_healthy(&alerter, api).await;
    let logs = || both_logs(&alerter, &collector);
    let texts = || slack_texts(&slack);
    let wait_text = |what: &'static str| {
        wait_for(
            what,
            ARRIVES,
            move || format!("got {:#?}\n{}", texts(), logs()),
            move || texts().into_iter().position(|t| t.contains(what)),
        )
    };
    let ping = |path: &str| {
        let (status, body) = http_get(loopback(http), path).expect("ping answered");
        assert_eq!(status, 200, "{path}: {body}");
    };

    // Pinged once, then silent past its period and grace: one message.
    ping(&format!("/ping/{LATE_ID}"));
    wait_text("heartbeat token-refresh is down").await;
    // The next ping resolves it.
    ping(&format!("/ping/{LATE_ID}"));
    wait_text("token-refresh is up again").await;
    let downs = texts()
        .iter()
        .filter(|t| t.contains("token-refresh is down"))
        .count();
    assert_eq!(downs, 1, "{:#?}", texts());

    // An unknown id is a 404 and stores nothing.
    let unknown = "11111111-2222-4333-8444-555555555555";
    let (status, _) = http_get(loopback(http), &format!("/ping/{unknown}")).expect("answer");
    assert_eq!(status, 404);

    // `livehead run` around a failing command: its status is the command's,
    // and the failure alert carries the command's output.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_livehead"))
        .args(["run", "--check", JOB_ID, "--url"])
        .arg(format!("http://127.0.0.1:{http}"))
        .args([
            "--",
            "sh",
            "-c",
            "echo copying; echo 'ERROR: disk full' >&2; exit 3",
        ])
        .output()
        .await
        .expect("livehead run");
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    let at = wait_text("nightly-backup is down").await;
    let text = &texts()[at];
    assert!(text.contains("exit status 3"), "{text}");
    let blocks = slack.received()[at].json["blocks"].to_string();
    assert!(blocks.contains("ERROR: disk full"), "{blocks}");

    // Both pings of the run are stored, the end with the output and the
    // run's duration paired by its rid.
    let db = dir.path().join("livehead.db");
    let pings = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT kind || ':' || exit_status || ':' || (rid != '') || ':' || (body LIKE '%disk full%') \
             FROM heartbeat_pings WHERE check_id = '{JOB_ID}' ORDER BY ts"
        ))
        .output()
        .expect("sqlite3");
    let pings = String::from_utf8_lossy(&pings.stdout);
    assert_eq!(pings.trim(), "start:0:1:0\nexit:3:1:1", "{pings}");
    let unknown_rows = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT count(*) FROM heartbeat_pings WHERE check_id = '{unknown}'"
        ))
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&unknown_rows.stdout).trim(), "0");
}
