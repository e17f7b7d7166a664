//! End to end, real processes: agent → collector (both stores) → alerter →
//! local stand-ins for Slack and PagerDuty. A site failing gives one message
//! and its recovery one resolved message; a node's sites failing together
//! give one message about the node; a silence keeps quiet; an alerter killed
//! mid-incident neither repeats the trigger nor forgets the resolve; a
//! collector restarted does not make the alerter miss the transition.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_testkit::clickhouse::ClickHouseServer;
use livehead_testkit::free_port;
use livehead_testkit::receiver::{FakeReceiver, Received};
use livehead_testkit::sites::FakeSites;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{
    Proc, QUICK_AGENT_CONFIG, agent_args, certs, http_request, loopback, start_alerter,
    start_collector, wait_for, wait_healthy,
};

const ADMIN_TOKEN: &str = "alerter-admin-token";
const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";
/// Time allowed for a notification to arrive (rounds every 300 ms; a loaded
/// CI machine is slow, the alerter itself is not waited for).
const ARRIVES: Duration = Duration::from_secs(30);

/// Where the collector keeps its rows.
enum Store {
    Sqlite(PathBuf),
    ClickHouse(ClickHouseServer, String),
}

impl Store {
    fn args(&self) -> Vec<String> {
        match self {
            Store::Sqlite(path) => vec!["--sqlite-path".into(), path.display().to_string()],
            Store::ClickHouse(server, db) => vec![
                "--clickhouse-url".into(),
                server.http_url(),
                "--database".into(),
                db.clone(),
            ],
        }
    }
}

/// A collector, one agent (node `node-1`) probing `sites`, an alerter, a
/// fake Slack and a fake PagerDuty.
struct Stack {
    dir: tempfile::TempDir,
    store: Store,
    grpc: u16,
    http: u16,
    api: u16,
    collector: Proc,
    agent: Proc,
    alerter: Proc,
    sites: FakeSites,
    slack: FakeReceiver,
    pagerduty: FakeReceiver,
}

/// The rules of these tests: a site answering 5xx (twice in a row), the
/// node rule when half of a node's sites fail, which inhibits the per-site
/// alerts it covers; Slack gets everything, PagerDuty the critical ones.
fn rules(slack: &FakeReceiver, pagerduty: &FakeReceiver) -> String {
    format!(
        r#"
[[rules]]
name = "SiteServerError"
kind = "status"
severity = "error"
statuses = ["5xx"]
failure_threshold = 2
summary = "{{site}} answers {{status}}"

[[rules]]
name = "NodeSitesFailing"
kind = "fleet"
severity = "critical"
share = 50
min_sites = 10

[[receivers]]
kind = "slack"
name = "slack"
url = "{slack}"
delivery = {{ min_interval = "0s" }}

[[receivers]]
kind = "pagerduty"
name = "pagerduty"
routing_key = "{ROUTING_KEY}"
events_url = "{pagerduty}"

[route]
receiver = "slack"
group_wait = "1s"
group_interval = "1s"

[[route.routes]]
matchers = ["severity=~critical|error"]
receiver = "pagerduty"
continue = true

[[route.routes]]
receiver = "slack"

[[inhibit]]
source_matchers = ["alertname=NodeSitesFailing"]
target_matchers = ["alertname=SiteServerError"]
equal = ["node"]
"#,
        slack = slack.url("/slack"),
        pagerduty = pagerduty.url("/v2/enqueue"),
    )
}

impl Stack {
    async fn start(store: Store, site_count: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        certs(&dir.path().join("certs"), &["node-1", "alerter"]);
        let sites = FakeSites::start().await;
        let slack = FakeReceiver::start().await;
        let pagerduty = FakeReceiver::start().await;
        let (grpc, http, api) = (free_port(), free_port(), free_port());
        let collector = start_collector("collector", dir.path(), grpc, http, &store.args());
        wait_healthy(&collector, http).await;
        let agent = start_agent(dir.path(), grpc, &sites, site_count);
        std::fs::write(dir.path().join("rules.toml"), rules(&slack, &pagerduty)).expect("rules");
        let alerter = start_alerter(dir.path(), &[grpc], api, &admin_token());
        wait_healthy(&alerter, api).await;
        Self {
            dir,
            store,
            grpc,
            http,
            api,
            collector,
            agent,
            alerter,
            sites,
            slack,
            pagerduty,
        }
    }

    fn restart_alerter(&mut self) {
        self.alerter = start_alerter(self.dir.path(), &[self.grpc], self.api, &admin_token());
    }

    fn restart_collector(&mut self) {
        self.collector = start_collector(
            "collector",
            self.dir.path(),
            self.grpc,
            self.http,
            &self.store.args(),
        );
    }

    fn logs(&self) -> String {
        format!(
            "--- alerter\n{}\n--- collector\n{}\n--- agent\n{}",
            tail(&self.alerter.log()),
            tail(&self.collector.log()),
            tail(&self.agent.log())
        )
    }

    /// Slack messages so far, as (status word, text).
    fn slack_texts(&self) -> Vec<String> {
        self.slack.received().iter().map(slack_text).collect()
    }

    /// Waits until Slack got `n` messages; fails with the logs otherwise.
    async fn slack_messages(&self, n: usize) -> Vec<String> {
        wait_for(
            &format!("{n} Slack message(s)"),
            ARRIVES,
            || format!("got {:#?}\n{}", self.slack_texts(), self.logs()),
            || {
                let texts = self.slack_texts();
                (texts.len() >= n).then_some(texts)
            },
        )
        .await
    }

    /// The alerts the API lists (admin token).
    fn alerts(&self) -> Vec<Value> {
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let Some((200, body)) = http_request(loopback(self.api), "GET", "/alerts", &[&auth], "")
        else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        json["alerts"].as_array().cloned().unwrap_or_default()
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn slack_text(r: &Received) -> String {
    r.json["text"].as_str().unwrap_or_default().to_owned()
}

/// The alerter's API token of these tests, an admin.
fn admin_token() -> String {
    let sha = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
    format!("[[api.tokens]]\nname = \"ops\"\nsha256 = \"{sha}\"\nrole = \"admin\"\n")
}

/// Probes `count` sites `siteNNN.pod.test` every 300 ms, sending at once.
fn start_agent(dir: &Path, grpc: u16, sites: &FakeSites, count: usize) -> Proc {
    start_agent_named("node-1", "site", dir, grpc, sites, count)
}

/// Agent `node` probing `<prefix>NNN.pod.test`.
fn start_agent_named(
    node: &str,
    prefix: &str,
    dir: &Path,
    grpc: u16,
    sites: &FakeSites,
    count: usize,
) -> Proc {
    let list = dir.join(format!("sites-{node}.txt"));
    let names: Vec<String> = (0..count)
        .map(|i| format!("{prefix}{i:03}.pod.test"))
        .collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let config = dir.join("agent.toml");
    std::fs::write(&config, QUICK_AGENT_CONFIG).expect("agent config");
    let (config, target) = (
        config.display().to_string(),
        format!("127.0.0.1:{}", sites.port()),
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
            "--interval",
            "300ms",
            "--spread",
            "0",
            "--no-sample",
        ],
    );
    Proc::spawn(&format!("agent-{node}"), &args, dir)
}

/// One site flips to 500: one Slack message naming it, one PagerDuty
/// trigger; it recovers: one resolved message, one resolve with the same
/// dedup_key. Nothing else.
async fn flip_and_recover(store: Store) {
    let stack = Stack::start(store, 20).await;
    // Every site answers 200 for a few rounds: nothing is sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(stack.slack_texts().is_empty(), "{:#?}", stack.slack_texts());

    stack.sites.set_status("site007.pod.test", 500);
    let texts = stack.slack_messages(1).await;
    assert!(
        texts[0].contains("FIRING") && texts[0].contains("site007.pod.test answers 500"),
        "{texts:#?}"
    );
    // The link back filters the alerts on the node and the site.
    let body = serde_json::to_string(&stack.slack.received()[0].json).expect("json");
    assert!(
        // Slack escapes & in mrkdwn.
        body.contains("https://livehead.test/alerts?node=node-1&amp;site=site007.pod.test"),
        "{body}"
    );
    let triggers = stack.pagerduty.wait_for(1, ARRIVES).await;
    assert_eq!(triggers[0].json["event_action"], "trigger");
    let dedup_key = triggers[0].json["dedup_key"].clone();

    stack.sites.heal("site007.pod.test");
    let texts = stack.slack_messages(2).await;
    assert!(texts[1].contains("RESOLVED"), "{texts:#?}");
    let events = stack.pagerduty.wait_for(2, ARRIVES).await;
    assert_eq!(events[1].json["event_action"], "resolve");
    assert_eq!(events[1].json["dedup_key"], dedup_key);

    // Rounds go on: no repeat, no second incident.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.slack_texts().len(), 2, "{:#?}", stack.slack_texts());
    assert_eq!(stack.pagerduty.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_site_is_one_message_and_its_recovery_one_more_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("livehead.db");
    flip_and_recover(Store::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_site_is_one_message_and_its_recovery_one_more_on_clickhouse() {
    let server = ClickHouseServer::start();
    let db = server.unique_database("alerting");
    flip_and_recover(Store::ClickHouse(server, db)).await;
}

fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::Sqlite(dir.path().join("livehead.db"))
}

/// 200 sites behind one node fail at once: one notification about the
/// node (listing its sites), not 200; they recover: one resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_sites_fail_together_is_one_notification() {
    let db = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(sqlite_store(&db), 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.sites.set_status(".pod.test", 503);
    let texts = stack.slack_messages(1).await;
    // Later rounds and the per-site alerts (inhibited) add nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let texts_after = stack.slack_texts();
    assert_eq!(texts_after.len(), 1, "{texts_after:#?}");
    assert!(
        texts[0].contains("NodeSitesFailing") && texts[0].contains("node-1"),
        "{texts:#?}"
    );
    let body = serde_json::to_string(&stack.slack.received()[0].json).expect("json");
    assert!(
        body.contains("site000.pod.test"),
        "the message lists the sites: {body}"
    );
    // The per-site alerts exist, inhibited.
    let inhibited = stack
        .alerts()
        .iter()
        .filter(|a| a["rule"] == "SiteServerError" && a["inhibited"] == true)
        .count();
    assert!(inhibited >= 100, "{inhibited} inhibited site alerts");

    stack.sites.heal(".pod.test");
    let texts = stack.slack_messages(2).await;
    assert!(
        texts[1].contains("RESOLVED") && texts[1].contains("NodeSitesFailing"),
        "{texts:#?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.slack_texts().len(), 2, "{:#?}", stack.slack_texts());
}

/// A silence on the site: it fails, the alert is listed silenced, nothing
/// is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_keeps_a_failing_site_quiet() {
    let db = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(sqlite_store(&db), 20).await;
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let silence =
        r#"{"matchers": ["site=site003.pod.test"], "duration": "1h", "comment": "maintenance"}"#;
    let (status, body) = http_request(
        loopback(stack.api),
        "POST",
        "/silences",
        &[&auth, "Content-Type: application/json"],
        silence,
    )
    .expect("API answers");
    assert_eq!(status, 201, "{body}");

    stack.sites.set_status("site003.pod.test", 500);
    wait_for(
        "the silenced alert to fire",
        ARRIVES,
        || format!("{:#?}\n{}", stack.alerts(), stack.logs()),
        || {
            stack
                .alerts()
                .into_iter()
                .find(|a| a["site"] == "site003.pod.test" && a["state"] == "firing")
        },
    )
    .await
    .get("silenced")
    .map(|s| assert_eq!(s, true))
    .expect("silenced flag");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stack.slack_texts().is_empty(), "{:#?}", stack.slack_texts());
    assert!(stack.pagerduty.received().is_empty());
}

/// The alerter is SIGKILLed while a site fails (after the trigger went
/// out) and restarted: no second trigger, and the resolve still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerter_killed_mid_incident_neither_repeats_nor_forgets() {
    let db = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(sqlite_store(&db), 20).await;
    stack.sites.set_status("site011.pod.test", 502);
    stack.slack_messages(1).await;
    stack.pagerduty.wait_for(1, ARRIVES).await;
    // Both deliveries are reported and saved: the saved outbox is empty
    // (a kill before that would rightly send them again).
    let state_file = stack.dir.path().join("alerter-state/state.json");
    wait_for(
        "the deliveries saved",
        ARRIVES,
        || std::fs::read_to_string(&state_file).unwrap_or_default(),
        || {
            let saved = std::fs::read_to_string(&state_file).ok()?;
            let json: Value = serde_json::from_str(&saved).ok()?;
            json["outbox"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(())
        },
    )
    .await;
    stack.alerter.kill9();
    stack.restart_alerter();
    wait_healthy(&stack.alerter, stack.api).await;
    // Rounds go on failing while it resynchronises: no new trigger.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.slack_texts().len(),
        1,
        "{:#?}\n{}",
        stack.slack_texts(),
        stack.logs()
    );
    assert_eq!(stack.pagerduty.received().len(), 1);

    stack.sites.heal("site011.pod.test");
    let texts = stack.slack_messages(2).await;
    assert!(texts[1].contains("RESOLVED"), "{texts:#?}");
    let events = stack.pagerduty.wait_for(2, ARRIVES).await;
    assert_eq!(events[1].json["event_action"], "resolve");
    assert_eq!(events[1].json["dedup_key"], events[0].json["dedup_key"]);
}

/// The collector restarts while a site starts failing: the alerter
/// reconnects, resynchronises and still notifies the transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restart_does_not_hide_a_transition() {
    let db = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(sqlite_store(&db), 20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.collector.terminate(Duration::from_secs(10));
    stack.sites.set_status("site005.pod.test", 500);
    // The agent spools meanwhile; the alerter keeps reconnecting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.restart_collector();
    let texts = stack.slack_messages(1).await;
    assert!(texts[0].contains("site005.pod.test"), "{texts:#?}");
    stack.sites.heal("site005.pod.test");
    let texts = stack.slack_messages(2).await;
    assert!(texts[1].contains("RESOLVED"), "{texts:#?}");
}

/// The alert and its deliveries reach the store, where BI reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_deliveries_are_stored() {
    let db = tempfile::tempdir().expect("tempdir");
    let path = db.path().join("livehead.db");
    let stack = Stack::start(Store::Sqlite(path.clone()), 20).await;
    stack.sites.set_status("site002.pod.test", 500);
    stack.slack_messages(1).await;
    let query = |sql: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg(sql)
            .output()
            .expect("sqlite3");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_for(
        "alert rows in the store",
        ARRIVES,
        || stack.logs(),
        || {
            let events = query(
                "SELECT count(*) FROM alert_events WHERE site = 'site002.pod.test' AND state = 'firing'",
            );
            let sent = query("SELECT count(*) FROM alert_deliveries WHERE outcome = 'sent'");
            (events == "1" && sent.parse::<u32>().unwrap_or(0) >= 2).then_some(())
        },
    )
    .await;
}

/// Two collector replicas writing one ClickHouse database, each with its
/// own agent: the alerter watches both (a list of URLs), so a site failing
/// behind either one is notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerter_watches_every_collector_replica() {
    let server = ClickHouseServer::start();
    let db = server.unique_database("replicas");
    let store = Store::ClickHouse(server, db);
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["node-1", "node-2", "alerter"]);
    let sites = FakeSites::start().await;
    let slack = FakeReceiver::start().await;
    let pagerduty = FakeReceiver::start().await;
    let (grpc_a, http_a, grpc_b, http_b, api) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let a = start_collector("collector-a", dir.path(), grpc_a, http_a, &store.args());
    wait_healthy(&a, http_a).await;
    let b = start_collector("collector-b", dir.path(), grpc_b, http_b, &store.args());
    wait_healthy(&b, http_b).await;
    let _one = start_agent_named("node-1", "a", dir.path(), grpc_a, &sites, 10);
    let _two = start_agent_named("node-2", "b", dir.path(), grpc_b, &sites, 10);
    std::fs::write(dir.path().join("rules.toml"), rules(&slack, &pagerduty)).expect("rules");
    let alerter = start_alerter(dir.path(), &[grpc_a, grpc_b], api, &admin_token());
    wait_healthy(&alerter, api).await;

    sites.set_status("a004.pod.test", 500);
    sites.set_status("b006.pod.test", 500);
    let texts = || -> Vec<String> { slack.received().iter().map(slack_text).collect() };
    wait_for(
        "a message for each replica's site",
        ARRIVES,
        || format!("{:#?}\n{}", texts(), tail(&alerter.log())),
        || {
            let texts = texts();
            let both = texts.iter().any(|t| t.contains("a004.pod.test"))
                && texts.iter().any(|t| t.contains("b006.pod.test"));
            both.then_some(())
        },
    )
    .await;
    assert_eq!(texts().len(), 2, "{:#?}", texts());
}
