//! End to end, real processes: heartbeat records stored by a collector
//! reach the alerter through its watch stream, and a check that is late or
//! reports a failure is one Slack message (with the failure's log), its
//! next success one resolved message. The records are pushed over gRPC as
//! an agent would, so this does not depend on the collector's `/ping`
//! endpoints.

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
use support::{Proc, certs, http_get, loopback, tls_args, wait_for};
use tokio::sync::mpsc;

const CHECK_ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";
const ARRIVES: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    livehead_common::clock::unix_ms()
}

async fn wait_http(proc: &Proc, port: u16) {
    wait_for(
        "/health",
        ARRIVES,
        || proc.log(),
        || http_get(loopback(port), "/health").filter(|(s, _)| *s == 200),
    )
    .await;
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

fn start_collector(dir: &Path, grpc: u16, http: u16) -> Proc {
    let mut args: Vec<String> = vec![
        "collector".into(),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--watch-allow".into(),
        "alerter".into(),
        "--sqlite-path".into(),
        dir.join("livehead.db").display().to_string(),
    ];
    args.extend(tls_args(&dir.join("certs"), "collector"));
    Proc::spawn("collector", &args, dir)
}

fn start_alerter(dir: &Path, grpc: u16, api: u16) -> Proc {
    let config = dir.join("alerter.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[collectors]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n[heartbeats]\nseverity = \"critical\"\n",
            state = dir.join("alerter-state").display().to_string(),
        ),
    )
    .expect("alerter config");
    let mut args: Vec<String> = vec![
        "alerter".into(),
        "--config".into(),
        config.display().to_string(),
        "--rules".into(),
        dir.join("rules.toml").display().to_string(),
        "--server-name".into(),
        "localhost".into(),
        "--collector-url".into(),
        format!("https://127.0.0.1:{grpc}"),
    ];
    args.extend(tls_args(&dir.join("certs"), "agent-alerter"));
    Proc::spawn("alerter", &args, dir)
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
    let collector = start_collector(dir.path(), grpc, http);
    wait_http(&collector, http).await;
    let alerter = start_alerter(dir.path(), grpc, api);
    wait_http(&alerter, api).await;
    let logs = || {
        format!(
            "--- alerter\n{}\n--- collector\n{}",
            alerter.log(),
            collector.log()
        )
    };
    let texts = || -> Vec<String> {
        slack
            .received()
            .iter()
            .map(|r| r.json["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
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
