//! End to end, real processes: two agents probe one site from two
//! vantages — `inside` (a node's agent, at the pod's server) and `outside`
//! (a prober elsewhere, at a second server standing for the ingress) —
//! through one collector (SQLite) to the alerter's `vantage` rule and a
//! fake Slack. The ingress answering 502 while the pod answers 200 is "edge,
//! DNS or ingress"; flipped (the pod 500, the ingress healed), "the pod".
//! `/last` keeps one state per vantage.

mod support;

use std::path::Path;
use std::time::Duration;

use livehead_testkit::free_port;
use livehead_testkit::receiver::FakeReceiver;
use livehead_testkit::sites::FakeSites;
use serde_json::Value;
use support::{
    Proc, QUICK_AGENT_CONFIG, agent_args, certs, http_get, loopback, start_alerter,
    start_collector, wait_for, wait_healthy,
};

const SITE: &str = "shop.pod.test";
const ARRIVES: Duration = Duration::from_secs(30);

fn rules(slack: &FakeReceiver) -> String {
    format!(
        r#"
[[rules]]
name = "SiteSideDown"
kind = "vantage"
severity = "critical"

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

/// Agent `node` of `vantage` probing [`SITE`] at `server` every 300 ms.
fn start_agent(dir: &Path, node: &str, vantage: &str, grpc: u16, server: &FakeSites) -> Proc {
    let list = dir.join(format!("sites-{node}.txt"));
    std::fs::write(&list, format!("{SITE}\n")).expect("sites");
    let config = dir.join(format!("agent-{node}.toml"));
    std::fs::write(&config, QUICK_AGENT_CONFIG).expect("agent config");
    let (config, target) = (
        config.display().to_string(),
        format!("127.0.0.1:{}", server.port()),
    );
    let args = agent_args(
        dir,
        &format!("agent-{node}"),
        grpc,
        &list,
        free_port(),
        &[
            "--config",
            &config,
            "--target",
            &target,
            "--vantage",
            vantage,
            "--interval",
            "300ms",
            "--spread",
            "0",
            "--no-sample",
            "--no-content",
        ],
    );
    Proc::spawn(&format!("agent-{node}"), &args, dir)
}

fn slack_texts(slack: &FakeReceiver) -> Vec<String> {
    slack
        .received()
        .iter()
        .map(|r| r.json.to_string())
        .collect()
}

/// `/last` of [`SITE`] with `query` added: (status, `data`).
fn last(http: u16, query: &str) -> Option<(u16, Value)> {
    let (status, body) = http_get(loopback(http), &format!("/last?site={SITE}{query}"))?;
    let json: Value = serde_json::from_str(&body).ok()?;
    Some((status, json["data"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_names_the_side_that_broke() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["node-1", "prober", "alerter"]);
    let db = dir.path().join("livehead.db");
    let pod = FakeSites::start().await;
    let ingress = FakeSites::start().await;
    let slack = FakeReceiver::start().await;
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let store = ["--sqlite-path".to_owned(), db.display().to_string()];
    let collector = start_collector("collector", dir.path(), grpc, http, &store);
    wait_healthy(&collector, http).await;
    std::fs::write(dir.path().join("rules.toml"), rules(&slack)).expect("rules");
    let alerter = start_alerter(dir.path(), &[grpc], api, "");
    wait_healthy(&alerter, api).await;
    ingress.set_status(SITE, 502);
    let inside = start_agent(dir.path(), "node-1", "inside", grpc, &pod);
    let outside = start_agent(dir.path(), "prober", "outside", grpc, &ingress);
    let logs = || {
        format!(
            "slack: {:#?}\n--- alerter\n{}\n--- collector\n{}\n--- inside\n{}\n--- outside\n{}",
            slack_texts(&slack),
            alerter.log(),
            collector.log(),
            inside.log(),
            outside.log()
        )
    };

    // One state per vantage; the default is the old worker's answer.
    let (inside_state, outside_state) = wait_for("both vantages in /last", ARRIVES, logs, || {
        let (200, inside) = last(http, "")? else {
            return None;
        };
        let (200, outside) = last(http, "&vantage=outside")? else {
            return None;
        };
        Some((inside, outside))
    })
    .await;
    assert_eq!(inside_state["s"], 200, "{inside_state}");
    assert!(inside_state.get("vantage").is_none(), "{inside_state}");
    assert_eq!(outside_state["s"], 502, "{outside_state}");
    assert_eq!(outside_state["vantage"], "outside", "{outside_state}");
    assert_eq!(last(http, "&vantage=elsewhere").map(|(s, _)| s), Some(404));
    assert_eq!(last(http, "&vantage=Bad%20One").map(|(s, _)| s), Some(400));

    let edge = wait_for("the edge alert", ARRIVES, logs, || {
        slack_texts(&slack)
            .into_iter()
            .find(|t| t.contains("edge, DNS or ingress"))
    })
    .await;
    assert!(edge.contains(SITE), "{edge}");
    assert!(edge.contains("down from outside"), "{edge}");
    assert!(edge.contains("up from inside"), "{edge}");
    assert!(!slack_texts(&slack).iter().any(|t| t.contains("the pod")));

    // Flip: the ingress is fixed (and seen so), then the pod breaks.
    ingress.heal(SITE);
    wait_for("the outside vantage up again", ARRIVES, logs, || {
        let (200, state) = last(http, "&vantage=outside")? else {
            return None;
        };
        (state["s"] == 200).then_some(())
    })
    .await;
    pod.set_status(SITE, 500);
    let pod_alert = wait_for("the pod alert", ARRIVES, logs, || {
        slack_texts(&slack)
            .into_iter()
            .find(|t| t.contains("the pod (down from inside"))
    })
    .await;
    assert!(pod_alert.contains("up from outside"), "{pod_alert}");
}
