//! `livehead up` as a real process on a fresh state directory: it makes its
//! dev certificates, push token and SQLite store, probes fake sites on
//! loopback, prints where its API is, and the API answers. A restart on the
//! same directory keeps the CA, the token and the data.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livehead_testkit::free_port;
use livehead_testkit::sites::{CROSS_SITE, ERROR_SITE, FakeSites, OK_SITE};
use serde_json::Value;
use support::{Proc, http_get, http_request, loopback, wait_for};

const WAIT: Duration = Duration::from_secs(60);

struct Up {
    proc: Proc,
    api: SocketAddr,
}

/// `livehead up` probing every 2s, named sites at the fake sites' port.
fn start_up(name: &str, dir: &Path, state: &Path, fake: &FakeSites, sites: &[String]) -> Up {
    let api = loopback(free_port());
    let mut args: Vec<String> = [
        "up",
        "--state-dir",
        &state.display().to_string(),
        "--listen",
        &api.to_string(),
        "--interval",
        "2s",
        "--target",
        &format!("127.0.0.1:{}", fake.port()),
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(sites);
    Up {
        proc: Proc::spawn_keeping_stdout(name, &args, dir),
        api,
    }
}

/// Polls `check` until it gives a value; fails at once, with the log, if the
/// process exits, and after [`WAIT`] otherwise.
async fn wait<T>(up: &mut Up, what: &str, mut check: impl FnMut(&Up) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check(up) {
            return v;
        }
        let running = up.proc.is_running();
        let context = || format!("stdout:\n{}\nlog:\n{}", up.proc.stdout(), up.proc.log());
        assert!(
            running,
            "livehead up exited while waiting for {what}\n{}",
            context()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn banner(up: &mut Up) -> String {
    wait(up, "the banner", |up| {
        let out = up.proc.stdout();
        out.contains("Stop with Ctrl-C.").then_some(out)
    })
    .await
}

fn get_json(api: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let (status, body) = http_get(api, path)?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// `/last?site=`'s `data` (`{"s", "ms", "p", "l", "x", "t"}`), once there is one.
fn last(api: SocketAddr, site: &str) -> Option<Value> {
    let (status, body) = get_json(api, &format!("/last?site={site}"))?;
    let data = body.get("data")?;
    (status == 200 && data.is_object()).then(|| data.clone())
}

/// Waits until `/last` shows `site` with `status` and returns its data.
async fn wait_last(up: &mut Up, site: &str, status: u64) -> Value {
    wait(
        up,
        &format!("/last?site={site} with status {status}"),
        |up| last(up.api, site).filter(|d| d["s"] == status),
    )
    .await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn push(api: SocketAddr, token: &str, body: &str) -> Option<(u16, String)> {
    http_request(
        api,
        "POST",
        "/push",
        &[
            &format!("Authorization: Bearer {token}"),
            "Content-Type: application/json",
        ],
        body,
    )
}

fn read_token(state: &Path) -> String {
    std::fs::read_to_string(state.join("push-token"))
        .expect("push-token")
        .trim()
        .to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (installed by scripts/install-deps.sh --tests)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_probes_local_sites_and_its_api_answers() {
    let fake = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let list = dir.path().join("sites.txt");
    std::fs::write(
        &list,
        format!("# fake sites\n{OK_SITE}\n{CROSS_SITE}\n{ERROR_SITE}\n"),
    )
    .expect("sites");
    // A URL is probed as given, so this one reaches the fake sites directly.
    let url = format!("http://127.0.0.1:{}/", fake.port());
    let mut up = start_up(
        "up",
        dir.path(),
        &state,
        &fake,
        &[list.display().to_string(), url.clone()],
    );

    let out = banner(&mut up).await;
    let api = format!("http://{}", up.api);
    assert!(
        out.starts_with("livehead is up: probing 4 sites at 127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.contains(&format!("curl -s '{api}/dump_last?limit=20'")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/livehead.db", state.display())),
        "{out}"
    );

    let ok = wait_last(&mut up, OK_SITE, 200).await;
    assert_eq!(ok["x"], 0, "{ok}");
    let cross = wait_last(&mut up, CROSS_SITE, 301).await;
    assert_eq!(cross["x"], 1, "{cross}");
    wait_last(&mut up, ERROR_SITE, 500).await;
    wait_last(&mut up, "127.0.0.1", 200).await;

    let (status, dump) = http_get(up.api, "/dump_last?status=500").expect("dump_last");
    assert_eq!(status, 200, "{dump}");
    assert!(dump.contains(&format!("\"{ERROR_SITE}\"")), "{dump}");
    assert!(!dump.contains(&format!("\"{OK_SITE}\"")), "{dump}");
    let (status, health) = get_json(up.api, "/health").expect("health");
    assert_eq!(
        (status, &health["ok"]),
        (200, &Value::Bool(true)),
        "{health}"
    );

    // The generated token is accepted; any other is not.
    let token = read_token(&state);
    assert_eq!(token.len(), 64, "{token}");
    let record = format!(
        r#"{{"site":"pushed.test","status":503,"ms":7,"port":8080,"ts":{}}}"#,
        now_ms()
    );
    let (status, body) = push(up.api, "not-the-token", &record).expect("push");
    assert!((400..500).contains(&status), "{status} {body}");
    let (status, body) = push(up.api, &token, &record).expect("push");
    assert_eq!(status, 200, "{body}");
    wait_last(&mut up, "pushed.test", 503).await;

    // /stats takes the generated admin token; the node is sampled.
    let admin = std::fs::read_to_string(state.join("admin-token")).expect("admin-token");
    let auth = format!("Authorization: Bearer {}", admin.trim());
    let (status, body) = http_request(up.api, "GET", "/stats/system", &[], "").expect("stats");
    assert_eq!(status, 401, "{body}");
    wait_for(
        "the node sampled",
        Duration::from_secs(40),
        || up.proc.log(),
        || {
            let (status, body) = http_request(up.api, "GET", "/stats/server", &[&auth], "")?;
            (status == 200 && body.contains("\"cpu_cores\"")).then_some(())
        },
    )
    .await;

    // The state is private, and the merged site list is kept there.
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("push-token")), 0o600);
    assert_eq!(mode(&state.join("admin-token")), 0o600);
    assert_eq!(mode(&state.join("pki/ca-key.pem")), 0o600);
    let merged = std::fs::read_to_string(state.join("sites.txt")).expect("merged list");
    assert!(
        merged.contains(&url) && merged.contains(OK_SITE),
        "{merged}"
    );

    // The database is a plain SQLite file that other tools can read.
    let rows = sqlite3(
        &state.join("livehead.db"),
        "SELECT site, status FROM health_last ORDER BY site",
    );
    for row in [
        format!("{CROSS_SITE}|301"),
        format!("{ERROR_SITE}|500"),
        format!("{OK_SITE}|200"),
        "pushed.test|503".to_owned(),
    ] {
        assert!(rows.lines().any(|l| l == row), "{row} not in:\n{rows}");
    }

    up.proc.terminate(Duration::from_secs(20));
    assert!(
        fake.requests_for(OK_SITE)
            .iter()
            .all(|r| r.forwarded_proto.as_deref() == Some("https")),
        "named sites are probed as the old script did"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_ca_the_token_and_the_data() {
    let fake = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    // First run: a web root, one directory per site.
    let www = dir.path().join("www");
    for site in [OK_SITE, ERROR_SITE, "backups"] {
        std::fs::create_dir_all(www.join(site)).expect("mkdir");
    }
    let mut up = start_up(
        "up-1",
        dir.path(),
        &state,
        &fake,
        &[www.display().to_string()],
    );
    let out = banner(&mut up).await;
    assert!(out.starts_with("livehead is up: probing 2 sites"), "{out}");
    wait_last(&mut up, ERROR_SITE, 500).await;
    wait_last(&mut up, OK_SITE, 200).await;
    up.proc.terminate(Duration::from_secs(20));

    let files = [
        "pki/ca.pem",
        "pki/ca-key.pem",
        "pki/collector.pem",
        "pki/agent-local.pem",
        "push-token",
        "admin-token",
    ];
    let read_all = || -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(state.join(f)).expect(f))
            .collect()
    };
    let before = read_all();
    assert!(
        !state.join("sites.txt").exists(),
        "a web root is used in place"
    );

    // Second run: a single list file, used in place; error.test is no longer probed.
    let list = dir.path().join("only-ok.txt");
    std::fs::write(&list, format!("{OK_SITE}\n")).expect("list");
    let started = now_ms();
    let mut up = start_up(
        "up-2",
        dir.path(),
        &state,
        &fake,
        &[list.display().to_string()],
    );
    banner(&mut up).await;
    for (file, (old, new)) in files.iter().zip(before.iter().zip(read_all())) {
        assert!(*old == new, "{file} changed on restart");
    }
    // Earlier data is still there, untouched.
    let error = last(up.api, ERROR_SITE).expect("error.test from the first run");
    assert_eq!(error["s"], 500, "{error}");
    assert!(error["t"].as_u64().is_some_and(|t| t < started), "{error}");
    // New probes land next to it.
    wait(&mut up, "a new probe of ok.test", |up| {
        last(up.api, OK_SITE).filter(|d| d["t"].as_u64().is_some_and(|t| t >= started))
    })
    .await;
    // The token of the first run still works.
    let record = format!(
        r#"{{"site":"again.test","status":200,"ms":1,"port":8080,"ts":{}}}"#,
        now_ms()
    );
    let (status, body) = push(up.api, &read_token(&state), &record).expect("push");
    assert_eq!(status, 200, "{body}");
    up.proc.terminate(Duration::from_secs(20));
}

/// `up --rules`: the alerter runs in the same process and posts to the
/// (fake) Slack webhook when a site answers 500; SIGHUP reloads the rules
/// (a second rule on the same site fires after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_rules_posts_to_slack_and_reloads_on_sighup() {
    let fake = FakeSites::start().await;
    let slack = livehead_testkit::receiver::FakeReceiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let rules = dir.path().join("rules.toml");
    let receivers = format!(
        "[[receivers]]\nkind = \"slack\"\nname = \"slack\"\nurl = \"{}\"\n\
         delivery = {{ min_interval = \"0s\" }}\n[route]\nreceiver = \"slack\"\n",
        slack.url("/hook")
    );
    let first = "[[rules]]\nname = \"SiteServerError\"\nkind = \"status\"\nseverity = \"error\"\nstatuses = [\"5xx\"]\n";
    std::fs::write(&rules, format!("{first}{receivers}")).expect("rules");
    let alerter_api = loopback(free_port());
    let api = loopback(free_port());
    let args: Vec<String> = [
        "up",
        "--state-dir",
        &state.display().to_string(),
        "--listen",
        &api.to_string(),
        "--interval",
        "1s",
        "--target",
        &format!("127.0.0.1:{}", fake.port()),
        "--rules",
        &rules.display().to_string(),
        "--alerter-listen",
        &alerter_api.to_string(),
        OK_SITE,
        ERROR_SITE,
    ]
    .map(String::from)
    .to_vec();
    let mut up = Up {
        proc: Proc::spawn_keeping_stdout("up-rules", &args, dir.path()),
        api,
    };
    let out = banner(&mut up).await;
    assert!(out.contains(&format!("{alerter_api}/alerts")), "{out}");

    let texts = |slack: &livehead_testkit::receiver::FakeReceiver| -> Vec<String> {
        slack
            .received()
            .iter()
            .map(|r| r.json["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    wait(&mut up, "the Slack message", |_| {
        texts(&slack)
            .iter()
            .any(|t| t.contains("SiteServerError") && t.contains(ERROR_SITE))
            .then_some(())
    })
    .await;

    let second = "[[rules]]\nname = \"AnyServerError\"\nkind = \"status\"\nseverity = \"warning\"\nstatuses = [500]\n";
    std::fs::write(&rules, format!("{first}{second}{receivers}")).expect("rules");
    livehead_testkit::signal(up.proc.pid(), "HUP");
    wait(&mut up, "the reloaded rule's message", |_| {
        texts(&slack)
            .iter()
            .any(|t| t.contains("AnyServerError"))
            .then_some(())
    })
    .await;
    assert!(
        up.proc.log().contains("rules reloaded"),
        "{}",
        up.proc.log()
    );
    // The admin token lists the alerts on the alerter's API.
    let token = std::fs::read_to_string(state.join("admin-token")).expect("admin token");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let (status, body) =
        http_request(alerter_api, "GET", "/alerts", &[&auth], "").expect("alerter API");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("AnyServerError"), "{body}");
}
