//! End to end, real processes: an app (a `sleep` behind a pidfile) watched
//! by the agent's watchdog, killed by the test. The watchdog restarts it
//! and every step lands in the collector's SQLite store (`watchdog_events`)
//! and reaches the alerter: one info notice at the fake Slack. Then its
//! recovery hangs (killed at its timeout) until the attempts run out, with
//! the cooldown between them: a critical page at the fake PagerDuty. A
//! re-arm through the agent's admin API brings it back and resolves the
//! page; so does a config reload (SIGHUP) after the next exhaustion.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_testkit::free_port;
use livehead_testkit::receiver::{FakeReceiver, Received};
use livehead_testkit::sites::FakeSites;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{
    Proc, agent_args, certs, http_get, http_request, loopback, metric_sum, start_alerter,
    start_collector, wait_for, wait_healthy,
};

const ADMIN_TOKEN: &str = "agent-watchdog-admin";
const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";
/// A guard against a hung test, not a speed goal.
const ARRIVES: Duration = Duration::from_secs(20);
/// The watchdog's cooldown between two recoveries.
const COOLDOWN_MS: u64 = 1_000;

/// The app: a `sleep` started in the background by `start.sh`, which
/// writes its pid; killed when the test ends.
struct App {
    dir: PathBuf,
}

impl App {
    fn new(dir: &Path) -> Self {
        std::fs::write(
            dir.join("start.sh"),
            "sleep 300 >/dev/null 2>&1 &\necho $! > \"$1\"\necho \"started $!\"\n",
        )
        .expect("start script");
        Self {
            dir: dir.to_owned(),
        }
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("app.pid")
    }

    fn start(&self) -> u32 {
        let status = std::process::Command::new("sh")
            .arg(self.dir.join("start.sh"))
            .arg(self.pidfile())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("start the app");
        assert!(status.success());
        self.pid().expect("pid written")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// The pid of a running app other than `old`, once there is one.
    fn restarted(&self, old: u32) -> Option<u32> {
        self.pid().filter(|&p| p != old && alive(p))
    }

    /// The file that makes the first recovery step hang.
    fn hang(&self) -> PathBuf {
        self.dir.join("HANG")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3, after the parenthesised command: a zombie is not running.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The agent's config: its watchdog checks the pidfile every 200 ms,
/// recovers after 2 failed checks, at most twice in a row, 1 s apart; the
/// first step hangs while `HANG` exists (timeout 1 s), the second starts
/// the app.
fn agent_config(app: &App) -> String {
    format!(
        r#"[batch]
max_delay = "50ms"
[collector]
reconnect_min = "100ms"
reconnect_max = "500ms"
[watchdog]
admin_tokens = [{{ name = "ops", sha256 = "{sha}", role = "admin" }}]
[[watchdog.apps]]
name = "app"
interval = "200ms"
pidfile = {pidfile:?}
failure_threshold = 2
cooldown = "{COOLDOWN_MS}ms"
max_recoveries = 2
settle = "300ms"
[[watchdog.apps.recovery]]
argv = ["if [ -e {hang} ]; then echo hanging; sleep 30; fi"]
shell = true
timeout = "1s"
[[watchdog.apps.recovery]]
argv = ["sh", {start:?}, {pidfile:?}]
timeout = "5s"
"#,
        sha = sha(ADMIN_TOKEN),
        pidfile = app.pidfile().display().to_string(),
        hang = app.hang().display(),
        start = app.dir.join("start.sh").display().to_string(),
    )
}

/// No rule: the watchdog's alerts are built in. Critical pages, the rest
/// goes to Slack.
fn rules(slack: &FakeReceiver, pagerduty: &FakeReceiver) -> String {
    format!(
        r#"
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
group_wait = "500ms"
group_interval = "1s"

[[route.routes]]
matchers = ["severity=critical"]
receiver = "pagerduty"
"#,
        slack = slack.url("/slack"),
        pagerduty = pagerduty.url("/v2/enqueue"),
    )
}

fn start_agent(dir: &Path, app: &App, grpc: u16, sites: &FakeSites, admin: u16) -> Proc {
    use std::os::unix::fs::PermissionsExt;
    let list = dir.join("sites.txt");
    std::fs::write(&list, "site000.pod.test\n").expect("sites");
    let config = dir.join("agent.toml");
    std::fs::write(&config, agent_config(app)).expect("agent config");
    // The watchdog refuses a config file others may write.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (config, target) = (
        config.display().to_string(),
        format!("127.0.0.1:{}", sites.port()),
    );
    let args = agent_args(
        dir,
        "agent-node-1",
        grpc,
        &list,
        admin,
        &[
            "--config",
            &config,
            "--target",
            &target,
            "--interval",
            "10s",
            "--no-sample",
        ],
    );
    Proc::spawn("agent-node-1", &args, dir)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The processes and fakes of the test.
struct Stack {
    _dir: tempfile::TempDir,
    db: PathBuf,
    admin: u16,
    collector: Proc,
    agent: Proc,
    alerter: Proc,
    slack: FakeReceiver,
    pagerduty: FakeReceiver,
}

impl Stack {
    fn logs(&self) -> String {
        format!(
            "--- agent\n{}\n--- collector\n{}\n--- alerter\n{}",
            tail(&self.agent.log()),
            tail(&self.collector.log()),
            tail(&self.alerter.log())
        )
    }

    /// The `watchdog_events` rows: kind|attempt|step_end|exit_status|output|ts.
    fn rows(&self) -> Vec<Vec<String>> {
        let out = std::process::Command::new("sqlite3")
            .arg(&self.db)
            .arg(
                "SELECT kind, attempt, step_end, exit_status, replace(output, char(10), ' '), ts \
                 FROM watchdog_events WHERE node = 'node-1' AND app = 'app' ORDER BY ts, rowid",
            )
            .output()
            .expect("sqlite3");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect()
    }

    /// Rows until one of `kind` has come `n` times.
    async fn rows_until(&self, kind: &str, n: usize) -> Vec<Vec<String>> {
        wait_for(
            &format!("{n} {kind} row(s)"),
            ARRIVES,
            || format!("{:#?}\n{}", self.rows(), self.logs()),
            || {
                let rows = self.rows();
                (rows.iter().filter(|r| r[0] == kind).count() >= n).then_some(rows)
            },
        )
        .await
    }

    async fn received(&self, receiver: &FakeReceiver, n: usize) -> Vec<Received> {
        wait_for(
            &format!("{n} notification(s)"),
            ARRIVES,
            || format!("{:#?}\n{}", received_texts(receiver), self.logs()),
            || {
                let got = receiver.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }

    /// `method path` on the agent's admin API with the admin token.
    fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let (status, body) =
            http_request(loopback(self.admin), method, path, &[&auth], "").unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn app_state(&self) -> String {
        let (_, body) = self.admin("GET", "/watchdog/apps");
        body["apps"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn received_texts(receiver: &FakeReceiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.json.to_string())
        .collect()
}

fn count(rows: &[Vec<String>], kind: &str) -> usize {
    rows.iter().filter(|r| r[0] == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_restarts_the_app_pages_when_exhausted_and_resumes_when_rearmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(&dir.path().join("certs"), &["node-1", "alerter"]);
    let app = App::new(dir.path());
    let first = app.start();
    let sites = FakeSites::start().await;
    let slack = FakeReceiver::start().await;
    let pagerduty = FakeReceiver::start().await;
    let (grpc, http, api, admin) = (free_port(), free_port(), free_port(), free_port());
    let db = dir.path().join("livehead.db");
    let collector = start_collector(
        "collector",
        dir.path(),
        grpc,
        http,
        &["--sqlite-path".into(), db.display().to_string()],
    );
    wait_healthy(&collector, http).await;
    let agent = start_agent(dir.path(), &app, grpc, &sites, admin);
    std::fs::write(dir.path().join("rules.toml"), rules(&slack, &pagerduty)).expect("rules");
    let alerter = start_alerter(dir.path(), &[grpc], api, "");
    wait_healthy(&alerter, api).await;
    let stack = Stack {
        _dir: dir,
        db,
        admin,
        collector,
        agent,
        alerter,
        slack,
        pagerduty,
    };
    wait_for(
        "the watchdog watching the app",
        ARRIVES,
        || stack.logs(),
        || (stack.app_state() == "watching").then_some(()),
    )
    .await;
    // Nothing to re-arm while it is watched.
    assert_eq!(stack.admin("POST", "/watchdog/apps/app/rearm").0, 409);
    assert_eq!(stack.admin("POST", "/watchdog/apps/nope/rearm").0, 404);

    // 1. Killed: restarted, every step stored, one info notice.
    app.kill();
    let second = wait_for(
        "the app restarted",
        ARRIVES,
        || stack.logs(),
        || app.restarted(first),
    )
    .await;
    let rows = stack.rows_until("recovered", 1).await;
    let kinds: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let started = kinds
        .iter()
        .position(|&k| k == "recovery_started")
        .expect("a recovery");
    assert!(count(&rows[..started], "check_failed") >= 2, "{rows:#?}");
    assert_eq!(
        kinds[started..],
        [
            "recovery_started",
            "recovery_step",
            "recovery_step",
            "recovered"
        ],
        "{rows:#?}"
    );
    let start_step = &rows[started + 2];
    assert_eq!(
        (start_step[2].as_str(), start_step[3].as_str()),
        ("exited", "0")
    );
    assert!(
        start_step[4].contains(&format!("started {second}")),
        "{start_step:?}"
    );
    let notice = stack.received(&stack.slack, 1).await;
    let text = notice[0].json["text"].as_str().unwrap_or_default();
    assert!(text.contains("app") && text.contains("restarted"), "{text}");
    assert!(stack.pagerduty.received().is_empty(), "info does not page");

    // 2. Its recovery hangs: killed at the timeout, twice, 1 s apart, then
    // exhausted and paged as critical.
    std::fs::write(app.hang(), "").expect("hang");
    app.kill();
    let rows = stack.rows_until("exhausted", 1).await;
    let phase: Vec<&Vec<String>> = rows.iter().skip(kinds.len()).collect();
    let timed_out = phase
        .iter()
        .filter(|r| r[0] == "recovery_step")
        .map(|r| (r[2].as_str(), r[4].as_str()))
        .collect::<Vec<_>>();
    assert_eq!(
        timed_out,
        [("timed_out", "hanging "), ("timed_out", "hanging ")],
        "{rows:#?}"
    );
    let starts: Vec<u64> = phase
        .iter()
        .filter(|r| r[0] == "recovery_started")
        .map(|r| r[5].parse().expect("ts"))
        .collect();
    assert_eq!(starts.len(), 2, "{rows:#?}");
    assert!(starts[1] - starts[0] >= COOLDOWN_MS, "{starts:?}");
    let exhausted = rows.iter().find(|r| r[0] == "exhausted").expect("row");
    assert_eq!(exhausted[1], "2");
    let page = stack.received(&stack.pagerduty, 1).await;
    assert_eq!(
        page[0].json["event_action"], "trigger",
        "{:?}",
        page[0].json
    );
    assert_eq!(page[0].json["payload"]["severity"], "critical");
    let summary = page[0].json["payload"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains("app") && summary.contains("2 recoveries"),
        "{summary}"
    );
    assert_eq!(stack.app_state(), "exhausted");
    assert_eq!(
        stack.slack.received().len(),
        1,
        "critical goes to PagerDuty only"
    );

    // 3. Fixed and re-armed by a person: back, and the page resolves.
    std::fs::remove_file(app.hang()).expect("unhang");
    let (status, body) = stack.admin("POST", "/watchdog/apps/app/rearm");
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the app restarted after the re-arm",
        ARRIVES,
        || stack.logs(),
        || app.restarted(second),
    )
    .await;
    let rows = stack.rows_until("recovered", 2).await;
    assert_eq!(count(&rows, "rearmed"), 1, "{rows:#?}");
    let page = stack.received(&stack.pagerduty, 2).await;
    assert_eq!(
        page[1].json["event_action"], "resolve",
        "{:?}",
        page[1].json
    );
    assert_eq!(page[1].json["dedup_key"], page[0].json["dedup_key"]);
    stack.received(&stack.slack, 2).await;
    wait_for(
        "the app watched again",
        ARRIVES,
        || stack.logs(),
        || (stack.app_state() == "watching").then_some(()),
    )
    .await;

    // 4. Exhausted again, then the config file reloaded (SIGHUP): the new
    // watchdog starts fresh, so the app is re-armed and brought back.
    std::fs::write(app.hang(), "").expect("hang");
    app.kill();
    stack.rows_until("exhausted", 2).await;
    let third = app.pid().expect("pid");
    std::fs::remove_file(app.hang()).expect("unhang");
    livehead_testkit::signal(stack.agent.pid(), "HUP");
    wait_for(
        "the app restarted after the reload",
        ARRIVES,
        || stack.logs(),
        || app.restarted(third),
    )
    .await;
    let rows = stack.rows_until("recovered", 3).await;
    assert_eq!(count(&rows, "rearmed"), 2, "{rows:#?}");

    // Every event counted on the agent's /metrics, none refused.
    let (_, metrics) = http_get(loopback(stack.admin), "/metrics").expect("metrics");
    let counted = metric_sum(&metrics, "livehead_agent_watchdog_events_total");
    assert!(counted >= rows.len() as f64, "{counted} < {}", rows.len());
    assert_eq!(
        metric_sum(&metrics, "livehead_agent_records_rejected_total"),
        0.0
    );
    assert_eq!(
        metric_sum(&metrics, "livehead_agent_watchdog_reloads_refused_total"),
        0.0
    );
}
