//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`) driven over WebDriver against real processes
//! (collector on SQLite, an agent probing the testkit's fake sites, the
//! alerter). Signs in as admin, user and readonly; sees a node's failing
//! sites; watches a site flip to 500 on the open page; acknowledges its
//! alert from the page and reads the alerter's state; checks that a user
//! never sees another user's site, on the page or in the live stream; signs
//! out. Screenshots of the main views are kept in
//! `<target>/dashboard-screenshots/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use livehead_testkit::free_port;
use livehead_testkit::receiver::FakeReceiver;
use livehead_testkit::sites::FakeSites;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    Proc, QUICK_AGENT_CONFIG, agent_args, certs, http_request, loopback, start_alerter,
    start_collector, wait_for, wait_healthy,
};

const ADMIN: &str = "dashboard-admin-token";
const USER: &str = "dashboard-user-token";
const READONLY: &str = "dashboard-readonly-token";
/// The alerter's own admin token: the collector forwards the page's
/// actions with it, and the test reads the alerter's state with it.
const ALERTER: &str = "dashboard-alerter-token";
/// Sites `site000.pod.test` … of node `node-1`.
const SITES: usize = 10;
/// Time allowed for the stack to settle (processes start, first rounds).
const SETTLES: Duration = Duration::from_secs(30);
/// The issue's promise: a site's flip shows on the open page within 2 s.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn site(i: usize) -> String {
    format!("site{i:03}.pod.test")
}

/// A collector (role tokens, dashboard forwarding to the alerter), an agent
/// `node-1` probing [`SITES`] fake sites every 300 ms and sampling the
/// machine, and an alerter with one rule (a site answering 5xx twice).
struct Stack {
    dir: tempfile::TempDir,
    grpc: u16,
    http: u16,
    /// The collector's flags (store, config), for a restart.
    flags: Vec<String>,
    api: u16,
    collector: Proc,
    agent: Proc,
    alerter: Proc,
    sites: FakeSites,
    _slack: FakeReceiver,
}

impl Stack {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        certs(&dir.path().join("certs"), &["node-1", "alerter"]);
        let sites = FakeSites::start().await;
        let slack = FakeReceiver::start().await;
        let (grpc, http, api) = (free_port(), free_port(), free_port());
        // Failing before anyone looks: node-1 has failing sites to show.
        for i in [3, 7, 8] {
            sites.set_status(&site(i), 500);
        }
        let config = collector_config(dir.path(), api);
        let db = dir.path().join("livehead.db").display().to_string();
        let flags = vec![
            "--sqlite-path".to_owned(),
            db,
            "--config".into(),
            config.display().to_string(),
        ];
        let collector = start_collector("collector", dir.path(), grpc, http, &flags);
        wait_healthy(&collector, http).await;
        let agent = start_agent(dir.path(), grpc, &sites);
        std::fs::write(dir.path().join("rules.toml"), rules(&slack)).expect("rules");
        let token = format!(
            "[[api.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
            sha(ALERTER)
        );
        let alerter = start_alerter(dir.path(), &[grpc], api, &token);
        wait_healthy(&alerter, api).await;
        Self {
            dir,
            grpc,
            http,
            flags,
            api,
            collector,
            agent,
            alerter,
            sites,
            _slack: slack,
        }
    }

    /// SIGTERM to the collector, `meanwhile` while it is down, then the
    /// same collector again (same store, same session key: signed-in pages
    /// stay signed in).
    async fn restart_collector_with(&mut self, meanwhile: impl FnOnce(&FakeSites)) {
        self.collector.terminate(Duration::from_secs(10));
        meanwhile(&self.sites);
        self.collector = start_collector(
            "collector",
            self.dir.path(),
            self.grpc,
            self.http,
            &self.flags,
        );
        wait_healthy(&self.collector, self.http).await;
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn logs(&self) -> String {
        format!(
            "--- collector\n{}\n--- alerter\n{}\n--- agent\n{}",
            tail(&self.collector.log()),
            tail(&self.alerter.log()),
            tail(&self.agent.log())
        )
    }

    /// The alerter's alerts (its own API, admin token).
    fn alerter_alerts(&self) -> Vec<Value> {
        let auth = format!("Authorization: Bearer {ALERTER}");
        let Some((200, body)) = http_request(loopback(self.api), "GET", "/alerts", &[&auth], "")
        else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        json["alerts"].as_array().cloned().unwrap_or_default()
    }
}

/// Role tokens of the three roles, and the dashboard's way to the alerter.
fn collector_config(dir: &Path, alerter_api: u16) -> PathBuf {
    let token_file = dir.join("alerter-token");
    std::fs::write(&token_file, ALERTER).expect("alerter token");
    let key_file = dir.join("session.key");
    std::fs::write(&key_file, [7u8; 64]).expect("session key");
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[api.tokens]]
name = "ops"
sha256 = "{admin}"
role = "admin"

[[api.tokens]]
name = "team-a"
sha256 = "{user}"
role = "user"
sites = ["site001.pod.test", "site002.pod.test", "site004.pod.test"]

[[api.tokens]]
name = "viewer"
sha256 = "{readonly}"
role = "readonly"
sites = ["site003.pod.test"]

[dashboard]
alerter_url = "http://127.0.0.1:{alerter_api}"
alerter_token_file = {token_file:?}
session_key_file = {key_file:?}
"#,
            admin = sha(ADMIN),
            user = sha(USER),
            readonly = sha(READONLY),
            token_file = token_file.display().to_string(),
            key_file = key_file.display().to_string(),
        ),
    )
    .expect("collector config");
    config
}

fn rules(slack: &FakeReceiver) -> String {
    format!(
        r#"
[[rules]]
name = "SiteServerError"
kind = "status"
severity = "error"
statuses = ["5xx"]
failure_threshold = 2
summary = "{{site}} answers {{status}}"

[[receivers]]
kind = "slack"
name = "slack"
url = "{slack}"
delivery = {{ min_interval = "0s" }}

[route]
receiver = "slack"
group_wait = "1s"
group_interval = "1s"
"#,
        slack = slack.url("/slack"),
    )
}

/// Agent `node-1`: probes every 300 ms, samples the machine every 5 s (the
/// node page's charts).
fn start_agent(dir: &Path, grpc: u16, sites: &FakeSites) -> Proc {
    let list = dir.join("sites.txt");
    let names: Vec<String> = (0..SITES).map(site).collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let config = dir.join("agent.toml");
    std::fs::write(&config, QUICK_AGENT_CONFIG).expect("agent config");
    let (config, target) = (
        config.display().to_string(),
        format!("127.0.0.1:{}", sites.port()),
    );
    let args = agent_args(
        dir,
        "agent-node-1",
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
            "--sample-interval",
            "5s",
        ],
    );
    Proc::spawn("agent-node-1", &args, dir)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Where screenshots are kept: `$CARGO_TARGET_DIR/dashboard-screenshots`,
/// else `target/dashboard-screenshots` in the workspace.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("dashboard-screenshots")
}

/// `chromedriver` on a free loopback port and one headless Chromium session
/// through it; both end when this is dropped or closed.
struct Browser {
    driver: Child,
    client: Client,
    base: String,
    driver_log: PathBuf,
    _profile: tempfile::TempDir,
}

const INSTALL_HINT: &str =
    "install Debian's chromium and chromium-driver (bash scripts/install-deps.sh --tests)";

impl Browser {
    async fn start(base: &str, log_dir: &Path) -> Self {
        Self::start_with(base, log_dir, &[]).await
    }

    /// With extra Chromium flags (`--force-dark-mode`).
    async fn start_with(base: &str, log_dir: &Path, flags: &[&str]) -> Self {
        let port = free_port();
        let driver_log = log_dir.join(format!("chromedriver-{port}.log"));
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): {INSTALL_HINT}"));
        let log = || std::fs::read_to_string(&driver_log).unwrap_or_default();
        // chromedriver answers HTTP/1.1 only: its port accepting is enough,
        // the session request below says the rest.
        wait_for(
            "chromedriver to listen",
            SETTLES,
            || tail(&log()),
            || std::net::TcpStream::connect(loopback(port)).ok(),
        )
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_binary(), "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromium does not start under chromedriver: {e}\n{INSTALL_HINT}\n--- chromedriver log\n{}",
                    tail(&log())
                )
            });
        Self {
            driver,
            client,
            base: base.to_owned(),
            driver_log,
            _profile: profile,
        }
    }

    /// Opens the dashboard at `hash` (`#/alerts`): a navigation within the
    /// page when it is already open (no reload).
    async fn open(&self, hash: &str) {
        let current = self.client.current_url().await.expect("current url");
        if current.path() == "/ui/" {
            self.js(&format!("location.hash = {}; return true", json!(hash)))
                .await;
        } else {
            self.client
                .goto(&format!("{}/ui/{hash}", self.base))
                .await
                .expect("open the dashboard");
        }
    }

    /// Runs `script` (a function body) in the page; its return value.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than null, false,
    /// 0 or "" (every 50 ms, up to `timeout`); that value.
    async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let body = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}\npage text:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current view loaded its JSON (`main[data-loaded]`).
    async fn loaded(&self, view: &str) {
        self.wait_js(
            &format!("the {view} view to load"),
            SETTLES,
            &format!(
                "const m = document.getElementById('view'); \
                 return m && m.dataset.loaded === {} && !m.hasAttribute('aria-busy')",
                json!(view)
            ),
        )
        .await;
    }

    async fn sign_in(&self, token: &str) {
        self.open("#/signin").await;
        let input = self
            .client
            .wait()
            .at_most(SETTLES)
            .for_element(Locator::Css("#token"))
            .await
            .expect("the sign-in form");
        input.send_keys(token).await.expect("type the token");
        self.click("#signin-submit").await;
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }

    /// Fails on any script error or CSP violation the page recorded.
    async fn no_errors(&self) {
        let errors = self
            .js("return window.livehead ? window.livehead.errors : ['no page']")
            .await;
        assert_eq!(errors, json!([]), "the page reported errors");
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.driver_log;
    }
}

/// Debian installs the browser as /usr/bin/chromium; chromedriver looks
/// for google-chrome by default.
fn chromium_binary() -> String {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("no chromium binary: {INSTALL_HINT}"))
        .to_owned()
}

/// A script returning whether `site` has a row in node `node`'s failing
/// group, marked down.
fn failing_row(node: &str, site: &str) -> String {
    format!(
        "const r = document.querySelector('#failing details[data-node=' + CSS.escape({node}) + '] tr[data-site=' + CSS.escape({site}) + ']'); \
         return !!r && r.dataset.class === 'down'",
        node = json!(node),
        site = json!(site),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let mut stack = Stack::start().await;
    admin_session(&mut stack).await;
    user_session(&stack).await;
    readonly_session(&stack).await;
}

/// Admin: the node's failing sites, a flip seen live, the node, site and
/// alerts views, an acknowledgement reaching the alerter, sign-out.
async fn admin_session(stack: &mut Stack) {
    let b = Browser::start(&stack.base(), stack.dir.path()).await;
    b.sign_in(ADMIN).await;
    b.loaded("overview").await;
    let who = b
        .js("return document.getElementById('who').textContent")
        .await;
    assert_eq!(who, json!("ops (admin)"));

    // The failing sites of node-1, grouped under it.
    for i in [3, 7, 8] {
        b.wait_js(
            &format!("{} failing under node-1", site(i)),
            SETTLES,
            &failing_row("node-1", &site(i)),
        )
        .await;
    }
    b.wait_js(
        "the live stream",
        SETTLES,
        "return document.getElementById('live-state').dataset.state === 'live' && window.livehead.received > 0",
    )
    .await;

    // A flip shows on the open page, without a reload, within 2 s.
    b.js("window.notReloaded = true; return true").await;
    let flipped = Instant::now();
    stack.sites.set_status(&site(4), 500);
    b.wait_js(
        "site004 to appear failing on the open overview",
        LIVE_WITHIN,
        &failing_row("node-1", &site(4)),
    )
    .await;
    let seen = flipped.elapsed();
    println!("site004's flip to 500 shown on the open page after {seen:?}");
    assert_eq!(
        b.js("return window.notReloaded === true").await,
        json!(true),
        "the page reloaded"
    );
    let count = b
        .js("return document.querySelector('#failing details[data-node=\"node-1\"] .count-badge').textContent")
        .await;
    assert_eq!(count, json!("✖ 4 failing"), "{}", stack.logs());
    b.screenshot("overview").await;

    // The collector restarts while a site starts failing: the page says it
    // reconnects, comes back by itself and refetches what it missed.
    stack
        .restart_collector_with(|sites| sites.set_status(&site(6), 502))
        .await;
    b.wait_js(
        "the page to reconnect and show what it missed",
        SETTLES,
        &format!(
            "return document.getElementById('live-state').dataset.state === 'live' && (() => {{ {} }})()",
            failing_row("node-1", &site(6))
        ),
    )
    .await;
    let seen = b
        .js("return [window.notReloaded === true, window.livehead.resyncs, window.livehead.states]")
        .await;
    assert_eq!(seen[0], json!(true), "the page reloaded: {seen}");
    assert!(
        seen[1].as_u64() >= Some(1),
        "no refetch after the gap: {seen}"
    );
    assert!(
        seen[2]
            .as_array()
            .is_some_and(|s| s.contains(&json!("reconnecting"))),
        "the page never said it was reconnecting: {seen}"
    );

    // The node: charts with units, its sites.
    b.open("#/node/node-1").await;
    b.loaded("node").await;
    b.wait_js(
        "site rows on the node page",
        SETTLES,
        "return document.querySelectorAll('#node-sites tr[data-site]').length === 10",
    )
    .await;
    let charts = b
        .js("return [...document.querySelectorAll('figure.chart-box svg.chart')].map(s => s.getAttribute('aria-label'))")
        .await;
    assert_eq!(charts.as_array().map(Vec::len), Some(5), "{charts}");
    let labels = b
        .js("return [...document.querySelectorAll('figure.chart-box .ylabel')].map(t => t.textContent).join(' ')")
        .await;
    assert!(
        labels
            .as_str()
            .is_some_and(|l| l.contains('%') && l.contains("B/s")),
        "axes without units: {labels}"
    );
    b.wait_js(
        "a CPU line over two samples (live)",
        SETTLES,
        "const p = document.querySelector('figure.chart-box path.line-0'); return !!p && p.getAttribute('d').includes('L')",
    )
    .await;
    b.screenshot("node").await;

    // The site: its strip shows the failure.
    b.open(&format!("#/site/{}", site(4))).await;
    b.loaded("site").await;
    b.wait_js(
        "down cells in site004's strip",
        SETTLES,
        "return document.querySelectorAll('#site-strip rect[data-class=\"down\"]').length > 0",
    )
    .await;
    b.screenshot("site").await;

    // Its alert, acknowledged from the page: the alerter's state changes.
    b.open("#/alerts").await;
    b.loaded("alerts").await;
    let row = format!(
        "#alerts article[data-site=\"{}\"][data-state=\"firing\"]",
        site(4)
    );
    b.wait_js(
        "site004's alert firing on the alerts page",
        SETTLES,
        &format!("return !!document.querySelector({})", json!(row)),
    )
    .await;
    b.screenshot("alerts").await;
    let sections = b
        .js("return [!!document.getElementById('heartbeat-checks'), !!document.getElementById('watchdog')]")
        .await;
    assert_eq!(
        sections,
        json!([true, true]),
        "heartbeats and watchdog sections"
    );
    b.click(&format!("{row} button.ack")).await;
    let acked = wait_for(
        "the alerter to list site004's alert acknowledged",
        SETTLES,
        || format!("{:#?}\n{}", stack.alerter_alerts(), stack.logs()),
        || {
            stack
                .alerter_alerts()
                .into_iter()
                .find(|a| a["site"] == json!(site(4)) && a["state"] == json!("acknowledged"))
        },
    )
    .await;
    assert_eq!(acked["acknowledged_by"], json!("ops"), "{acked}");
    b.wait_js(
        "the acknowledged alert to leave the active list",
        SETTLES,
        &format!("return !document.querySelector({})", json!(row)),
    )
    .await;

    b.no_errors().await;
    sign_out(&b).await;
    b.close().await;
}

/// Signs out from the header: the sign-in form shows, the session route
/// answers 401, and a view asked for falls back to sign-in.
async fn sign_out(b: &Browser) {
    b.click("#signout").await;
    b.wait_js(
        "the sign-in form after signing out",
        SETTLES,
        "return !!document.getElementById('signin-form')",
    )
    .await;
    let status = b
        .js("return fetch('/ui/api/session').then(r => r.status)")
        .await;
    assert_eq!(status, json!(401), "the session outlived the sign-out");
    b.open("#/alerts").await;
    b.wait_js(
        "a signed-out view to fall back to sign-in",
        SETTLES,
        "return location.hash === '#/signin' && !!document.getElementById('signin-form')",
    )
    .await;
}

/// User `team-a` (sites 001, 002, 004): another user's site never shows,
/// on the page or in the stream, while its own flips do.
async fn user_session(stack: &Stack) {
    let b = Browser::start(&stack.base(), stack.dir.path()).await;
    b.sign_in(USER).await;
    b.loaded("overview").await;
    b.wait_js(
        "the live stream",
        SETTLES,
        "return document.getElementById('live-state').dataset.state === 'live'",
    )
    .await;
    let total = b
        .js("return document.querySelector('#counts [data-key=\"total\"] .n').textContent")
        .await;
    assert_eq!(total, json!("3"), "a user counts its own sites only");

    // Another user's site and one of its own fail together.
    stack.sites.set_status(&site(5), 503);
    stack.sites.set_status(&site(1), 503);
    b.wait_js(
        "its own site failing",
        SETTLES,
        &failing_row("node-1", &site(1)),
    )
    .await;
    // Later rounds come in too (site001 is probed every 300 ms) before
    // the stream is searched for site005.
    let before = b.js("return window.livehead.received").await;
    b.wait_js(
        "ten more events",
        SETTLES,
        &format!("return window.livehead.received >= {} + 10", before),
    )
    .await;
    let leaked = b
        .js("return window.livehead.events.filter(e => e.site === 'site005.pod.test' || e.site === 'site007.pod.test').length")
        .await;
    assert_eq!(leaked, json!(0), "another user's site in the live stream");
    let sites_seen = b
        .js("return [...new Set(window.livehead.events.map(e => e.site).filter(Boolean))].sort()")
        .await;
    assert!(
        sites_seen.as_array().is_some_and(|s| s.iter().all(|x| [
            "site001.pod.test",
            "site002.pod.test",
            "site004.pod.test"
        ]
        .contains(&x.as_str().unwrap_or_default()))),
        "events for sites not the user's: {sites_seen}"
    );
    let text = b.js("return document.body.innerText").await;
    assert!(
        !text.as_str().unwrap_or_default().contains("site005"),
        "{text}"
    );

    // Its page is a 404 like a site that does not exist.
    b.open(&format!("#/site/{}", site(5))).await;
    b.wait_js(
        "another user's site to be not found",
        SETTLES,
        "const e = document.querySelector('.view-error'); return !!e && e.textContent.startsWith('Not found')",
    )
    .await;
    // Nor is its alert listed, while the user's own is, with its buttons.
    b.open("#/alerts?state=all").await;
    b.loaded("alerts").await;
    b.wait_js(
        "its own site's alert",
        SETTLES,
        "return !!document.querySelector('#alerts article[data-site=\"site001.pod.test\"] button.ack')",
    )
    .await;
    let others = b
        .js("return [...document.querySelectorAll('#alerts article')].map(a => a.dataset.site).filter(s => !['site001.pod.test','site002.pod.test','site004.pod.test'].includes(s))")
        .await;
    assert_eq!(others, json!([]), "alerts of sites not the user's");
    let resolve = b
        .js("return document.querySelectorAll('#alerts button.resolve').length")
        .await;
    assert_eq!(resolve, json!(0), "resolve is for admins");
    b.no_errors().await;
    sign_out(&b).await;
    b.close().await;
}

/// Readonly `viewer` (site003), in a browser set to dark: a wrong token
/// first, then reads its site without any action button; node pages are
/// for admins.
async fn readonly_session(stack: &Stack) {
    let b = Browser::start_with(&stack.base(), stack.dir.path(), &["--force-dark-mode"]).await;
    b.sign_in("not-a-token").await;
    b.wait_js(
        "a refused sign-in to say so",
        SETTLES,
        "return document.getElementById('signin-error').textContent",
    )
    .await;
    b.js("document.getElementById('token').value = ''; return true")
        .await;
    b.sign_in(READONLY).await;
    b.loaded("overview").await;
    let total = b
        .js("return document.querySelector('#counts [data-key=\"total\"] .n').textContent")
        .await;
    assert_eq!(total, json!("1"));
    let dark = b
        .js("return matchMedia('(prefers-color-scheme: dark)').matches && getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(
        dark,
        json!("rgb(21, 23, 26)"),
        "the dark theme follows the system"
    );
    b.screenshot("overview-readonly-dark").await;
    b.open("#/alerts?state=all").await;
    b.loaded("alerts").await;
    b.wait_js(
        "site003's alert",
        SETTLES,
        "return !!document.querySelector('#alerts article[data-site=\"site003.pod.test\"]')",
    )
    .await;
    let buttons = b
        .js("return document.querySelectorAll('#alerts button').length")
        .await;
    assert_eq!(buttons, json!(0), "readonly sees no action buttons");
    let watchdog = b.js("return !!document.getElementById('watchdog')").await;
    assert_eq!(watchdog, json!(false), "the watchdog section is for admins");
    b.open("#/node/node-1").await;
    b.wait_js(
        "node pages refused to readonly",
        SETTLES,
        "const e = document.querySelector('.view-error'); return !!e && e.textContent.startsWith('Not allowed')",
    )
    .await;
    b.no_errors().await;
    sign_out(&b).await;
    b.close().await;
}
