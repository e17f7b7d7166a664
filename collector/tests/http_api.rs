//! The old worker's HTTP API (`/health`, `/push`, `/last`, `/dump_last`) against
//! the real collector started in-process, over loopback. Every test runs twice:
//! on the embedded SQLite store (a file in a temporary directory) and on
//! ClickHouse (Debian's `clickhouse-server` started by the testkit, one
//! database per test). "Nothing stored" is always checked through the API.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livehead_collector::config::{PushToken, RoleToken};
use livehead_collector::store::StorageConfig;
use livehead_collector::{CollectorConfig, CollectorError, Running};
use livehead_common::Shutdown;
use livehead_testkit::Backend;
use livehead_testkit::clickhouse::ClickHouseServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static SERVER: LazyLock<ClickHouseServer> = LazyLock::new(ClickHouseServer::start);

const TOKEN: &str = "s3cret-push-token";
const TOKEN_NAME: &str = "ci-pods";
const MINUTE: u64 = 60_000;

livehead_testkit::on_both_stores!(
    health_and_metrics,
    push_the_old_scripts_array,
    push_a_single_object,
    the_newest_probe_is_last,
    a_missing_or_wrong_token_is_401,
    invalid_pushes_are_400_naming_the_field,
    one_bad_record_refuses_the_whole_array,
    oversize_pushes_are_413,
    an_empty_array_stores_nothing,
    last_refuses_bad_sites_and_404s_unknown_ones,
    dump_last_filters,
    dump_last_pages_and_orders,
    dump_last_default_and_maximum_limits,
    dump_last_names_each_invalid_parameter,
    sql_injection_is_inert,
    reads_can_require_the_token,
    a_bad_token_hash_stops_the_start,
    closed_reads_answer_each_role_token_its_sites,
    a_bad_role_token_stops_the_start,
    stats_routes_check_roles_before_reading,
    ready_follows_the_store_and_health_stays_the_old_answer,
    push_needs_a_json_content_type,
    authorization_twice_is_refused,
    a_trickled_body_is_answered_408,
    idle_and_trickling_connections_are_closed_on_both_ports,
    connections_over_the_limit_wait_for_one_to_close,
    requests_hyper_refuses_answer_in_json,
    push_bytes_in_flight_are_bounded,
);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn config(backend: Backend, test: &str, dir: &tempfile::TempDir) -> CollectorConfig {
    let loopback = "127.0.0.1:0".parse().expect("address");
    let storage = match backend {
        Backend::Sqlite => StorageConfig {
            clickhouse_url: None,
            sqlite_path: dir.path().join("livehead.db"),
            ..StorageConfig::default()
        },
        Backend::ClickHouse => StorageConfig {
            clickhouse_url: Some(SERVER.http_url()),
            database: SERVER.unique_database(test),
            ..StorageConfig::default()
        },
    };
    let mut config = CollectorConfig {
        grpc_listen: loopback,
        http_listen: loopback,
        insecure: true,
        storage,
        ..CollectorConfig::default()
    };
    config.api.push_tokens = vec![PushToken {
        name: TOKEN_NAME.into(),
        sha256: sha256_hex(TOKEN),
    }];
    config
}

/// A collector running for one test; stopped on drop.
struct Collector {
    base: String,
    http: SocketAddr,
    grpc: SocketAddr,
    client: reqwest::Client,
    shutdown: Shutdown,
    _running: Running,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(backend: Backend, test: &str) -> Collector {
    start_with(backend, test, |_| {}).await
}

async fn start_with(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut CollectorConfig),
) -> Collector {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(backend, test, &dir);
    tweak(&mut config);
    start_config(config, dir).await
}

async fn start_config(config: CollectorConfig, dir: tempfile::TempDir) -> Collector {
    let shutdown = Shutdown::new();
    let running = livehead_collector::start(config, shutdown.clone())
        .await
        .expect("collector starts");
    Collector {
        base: format!("http://{}", running.http_addr),
        http: running.http_addr,
        grpc: running.grpc_addr,
        client: livehead_testkit::http_client(),
        shutdown,
        _running: running,
        _dir: dir,
    }
}

/// An answer: status code, `WWW-Authenticate` header, JSON body.
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let www_authenticate = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ASCII header").to_owned());
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}"));
        Self {
            status,
            www_authenticate,
            body,
        }
    }

    /// The `error` of a refusal with `status`.
    fn error(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["ok"], json!(false), "{}", self.body);
        self.body["error"].as_str().expect("an error message")
    }

    /// The sites of a `/dump_last` answer, in order.
    fn sites(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{}", self.body);
        let data = self.body["data"].as_array().expect("data");
        assert_eq!(self.body["count"], json!(data.len()));
        data.iter()
            .map(|d| d["site"].as_str().expect("site").to_owned())
            .collect()
    }
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Collector {
    /// `POST /push` as the old script does it: bearer token, JSON body.
    async fn push(&self, body: &Value) -> Answer {
        self.push_text(Some(&format!("Bearer {TOKEN}")), body.to_string())
            .await
    }

    async fn push_text(&self, authorization: Option<&str>, body: String) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/push", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        Answer::from(request.send().await.expect("request")).await
    }

    /// A push that must be stored whole.
    async fn push_ok(&self, body: &Value) {
        let want = body.as_array().map_or(1, Vec::len);
        let answer = self.push(body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body, json!({"ok": true, "stored": want}));
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.get_with(path_and_query, None).await
    }

    async fn get_with(&self, path_and_query: &str, token: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path_and_query}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.expect("request")).await
    }

    async fn last(&self, site: &str) -> Answer {
        self.get(&format!("/last?site={}", enc(site))).await
    }

    async fn dump(&self, pairs: &[(&str, &str)]) -> Answer {
        self.get(&format!("/dump_last?{}", query(pairs))).await
    }

    /// How many sites the store holds, through the API.
    async fn stored_sites(&self) -> usize {
        self.dump(&[("limit", "5000")]).await.sites().len()
    }

    /// Refused requests stored nothing: no new site, `site` unknown.
    async fn assert_nothing_stored(&self, before: usize, site: &str) {
        assert_eq!(
            self.stored_sites().await,
            before,
            "a refused push stored rows"
        );
        assert_eq!(self.last(site).await.status, 404, "{site} was stored");
    }
}

/// One record exactly as `live_head.sh` builds it.
fn record(site: &str, status: u16, ms: u32, location: Option<&str>, ts: u64) -> Value {
    let mut r = json!({"site": site, "status": status, "ms": ms, "port": 8080});
    if let Some(location) = location {
        r["location"] = json!(location);
    }
    r["ts"] = json!(ts);
    r
}

async fn health_and_metrics(backend: Backend) {
    let c = start(backend, "health").await;
    let answer = c.get("/health").await;
    assert_eq!((answer.status, answer.body), (200, json!({"ok": true})));

    // Wrong paths and methods answer in JSON too.
    c.get("/nowhere").await.error(404);
    c.get("/push").await.error(405);

    c.push_ok(&record("a.com", 200, 1, None, now_ms())).await;
    c.get("/dump_last?limit=0").await.error(400);
    let metrics = c
        .client
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    for line in [
        r#"livehead_collector_api_requests_total{code="200",endpoint="push"} 1"#,
        r#"livehead_collector_api_requests_total{code="400",endpoint="dump_last"} 1"#,
        r#"livehead_collector_api_push_records_total{outcome="stored"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

async fn push_the_old_scripts_array(backend: Backend) {
    let c = start(backend, "old_array").await;
    let (t1, t2) = (now_ms() - 20_000, now_ms() - 10_000);
    // The script's exact bytes (its printf format), with current timestamps.
    let body = format!(
        r#"[{{"site":"a.com","status":200,"ms":18,"port":8080,"ts":{t1}}},{{"site":"b.com","status":301,"ms":12,"port":8080,"location":"https://www.b.com/","ts":{t2}}}]"#
    );
    let answer = c.push_text(Some(&format!("Bearer {TOKEN}")), body).await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"ok": true, "stored": 2}))
    );

    let a = c.last("a.com").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"ok": true, "site": "a.com",
               "data": {"s": 200, "ms": 18, "p": 8080, "l": null, "x": 0, "t": t1}})
    );
    // Keys in the old worker's order (serde_json keeps the order it parsed).
    assert_eq!(
        a.body.to_string(),
        format!(
            r#"{{"ok":true,"site":"a.com","data":{{"s":200,"ms":18,"p":8080,"l":null,"x":0,"t":{t1}}}}}"#
        )
    );
    let b = c.last("b.com").await;
    assert_eq!(
        b.body,
        json!({"ok": true, "site": "b.com",
               "data": {"s": 301, "ms": 12, "p": 8080, "l": "https://www.b.com/", "x": 0,
                        "t": t2}})
    );
}

async fn push_a_single_object(backend: Backend) {
    let c = start(backend, "single").await;
    let ts = now_ms() - 1000;
    // A redirect off the site's domain: cross-domain.
    c.push_ok(&record(
        "c.com",
        302,
        25,
        Some("https://login.other.net/x"),
        ts,
    ))
    .await;
    assert_eq!(
        c.last("c.com").await.body["data"],
        json!({"s": 302, "ms": 25, "p": 8080, "l": "https://login.other.net/x", "x": 1, "t": ts})
    );
    // No answer: curl printed "000", the script sent 0.
    c.push_ok(&record("D.Example.COM", 0, 0, None, ts)).await;
    let d = c.last("d.example.com").await;
    assert_eq!(d.body["site"], json!("d.example.com"));
    assert_eq!(
        d.body["data"],
        json!({"s": 0, "ms": 0, "p": 8080, "l": null, "x": 0, "t": ts})
    );
    // The site is looked up in lower case.
    assert_eq!(c.last("D.EXAMPLE.com").await.status, 200);
    // Same registrable domain, other host: not cross-domain.
    c.push_ok(&record("e.co.uk", 301, 3, Some("https://www.e.co.uk/"), ts))
        .await;
    assert_eq!(c.last("e.co.uk").await.body["data"]["x"], json!(0));
}

async fn the_newest_probe_is_last(backend: Backend) {
    let c = start(backend, "newest").await;
    let now = now_ms();
    c.push_ok(&record("a.com", 200, 1, None, now - 2 * MINUTE))
        .await;
    c.push_ok(&record("a.com", 500, 2, None, now - MINUTE))
        .await;
    assert_eq!(c.last("a.com").await.body["data"]["s"], json!(500));
    // A late push of an older probe does not hide the newer one.
    c.push_ok(&record("a.com", 404, 3, None, now - 3 * MINUTE))
        .await;
    let data = c.last("a.com").await.body["data"].clone();
    assert_eq!(
        (&data["s"], &data["t"]),
        (&json!(500), &json!(now - MINUTE))
    );
    assert_eq!(c.stored_sites().await, 1);
}

async fn a_missing_or_wrong_token_is_401(backend: Backend) {
    let c = start(backend, "unauthorized").await;
    let body = json!([record("a.com", 200, 1, None, now_ms())]).to_string();
    let wrong = format!("Bearer {TOKEN}x");
    let hash = format!("Bearer {}", sha256_hex(TOKEN));
    let basic = format!("Basic {TOKEN}");
    for authorization in [
        None,
        Some(wrong.as_str()),
        Some(hash.as_str()),
        Some(TOKEN),
        Some(basic.as_str()),
        Some("Bearer"),
        Some("Bearer "),
    ] {
        let answer = c.push_text(authorization, body.clone()).await;
        assert_eq!(
            answer.error(401),
            "missing or wrong bearer token",
            "{authorization:?}"
        );
        assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    c.assert_nothing_stored(0, "a.com").await;
    // The right token works.
    c.push_ok(&json!([record("a.com", 200, 1, None, now_ms())]))
        .await;
}

async fn invalid_pushes_are_400_naming_the_field(backend: Backend) {
    let c = start(backend, "invalid").await;
    let now = now_ms();
    let good = || record("z.com", 200, 18, None, now);
    let with = |field: &str, value: Value| {
        let mut r = good();
        r[field] = value;
        r.to_string()
    };
    let without = |field: &str| {
        let mut r = good();
        r.as_object_mut().expect("object").remove(field);
        r.to_string()
    };
    let long = format!("https://z.com/{}", "x".repeat(2100));
    let cases: Vec<(String, &str)> = vec![
        ("{\"site\":\"z.com\",".into(), "body: not valid JSON"),
        ("".into(), "body: not valid JSON"),
        (
            "\"z.com\"".into(),
            "body: expected a JSON object or an array of objects",
        ),
        (
            with("status", json!("200")),
            "status: invalid type: string \"200\"",
        ),
        (with("ms", json!(1.5)), "ms: invalid type: floating point"),
        (with("site", json!(5)), "site: invalid type: integer"),
        (without("site"), "site: missing"),
        (without("status"), "status: missing"),
        (without("ms"), "ms: missing"),
        (without("port"), "port: missing"),
        (without("ts"), "ts: missing"),
        (
            with("site", json!("bad site.com")),
            "site: \"bad site.com\"",
        ),
        (with("site", json!("")), "site: empty"),
        (
            with("status", json!(700)),
            "status: 700 is not an HTTP status (100-599, or 0)",
        ),
        (
            with("port", json!(0)),
            "port: 0 is not a TCP port (1-65535)",
        ),
        (
            with("port", json!(70000)),
            "port: 70000 is not a TCP port (1-65535)",
        ),
        (with("ms", json!(-1)), "ms: -1 is not a latency"),
        (with("ts", json!(now - 40 * 86_400_000)), "ts: "),
        (with("ts", json!(now + 3_600_000)), "ts: "),
        (
            with("location", json!(long)),
            "location: 2114 bytes, over the 2048-byte limit",
        ),
    ];
    for (body, want) in cases {
        let answer = c
            .push_text(Some(&format!("Bearer {TOKEN}")), body.clone())
            .await;
        let error = answer.error(400);
        assert!(
            error.starts_with(want),
            "{body}\n→ {error}\n  wanted {want}"
        );
    }
    c.assert_nothing_stored(0, "z.com").await;
}

async fn one_bad_record_refuses_the_whole_array(backend: Backend) {
    let c = start(backend, "one_bad").await;
    let now = now_ms();
    let mut records: Vec<Value> = (0..5)
        .map(|i| record(&format!("s{i}.com"), 200, 10, None, now))
        .collect();
    records[3]["port"] = json!(99999);
    let answer = c.push(&Value::Array(records)).await;
    assert_eq!(
        answer.error(400),
        "[3].port: 99999 is not a TCP port (1-65535)"
    );
    c.assert_nothing_stored(0, "s0.com").await;
    c.assert_nothing_stored(0, "s4.com").await;
}

async fn oversize_pushes_are_413(backend: Backend) {
    let c = start_with(backend, "oversize", |config| {
        config.api.max_push_bytes = 2048;
        config.limits.max_batch_records = 5;
    })
    .await;
    let now = now_ms();
    c.push_ok(&record("seed.com", 200, 1, None, now)).await;

    let big = json!({"site": "big.com", "status": 200, "ms": 1, "port": 80, "ts": now,
                     "padding": "x".repeat(3000)});
    assert_eq!(
        c.push(&big).await.error(413),
        "body: over the 2048-byte limit (api.max_push_bytes)"
    );
    let many: Vec<Value> = (0..6)
        .map(|i| record(&format!("m{i}.com"), 200, 1, None, now))
        .collect();
    assert_eq!(
        c.push(&Value::Array(many.clone())).await.error(413),
        "body: 6 records, over the limit of 5 (limits.max_batch_records)"
    );
    c.assert_nothing_stored(1, "big.com").await;
    c.assert_nothing_stored(1, "m0.com").await;
    // At the limit is fine.
    c.push_ok(&Value::Array(many[..5].to_vec())).await;
    assert_eq!(c.stored_sites().await, 6);
}

async fn an_empty_array_stores_nothing(backend: Backend) {
    let c = start(backend, "empty").await;
    let answer = c.push(&json!([])).await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"ok": true, "stored": 0}))
    );
    assert_eq!(c.stored_sites().await, 0);
}

async fn last_refuses_bad_sites_and_404s_unknown_ones(backend: Backend) {
    let c = start(backend, "last_errors").await;
    c.push_ok(&record("a.com", 200, 1, None, now_ms())).await;
    assert_eq!(c.get("/last").await.error(400), "site: missing");
    assert_eq!(c.get("/last?site=").await.error(400), "site: missing");
    assert_eq!(c.get("/last?other=a.com").await.error(400), "site: missing");
    assert_eq!(
        c.get("/last?site=a.com&site=b.com").await.error(400),
        "site: given more than once"
    );
    assert!(c.last("bad site").await.error(400).starts_with("site: "));
    assert_eq!(
        c.last("unknown.com").await.error(404),
        "site unknown.com not found"
    );
    assert_eq!(c.get("/last?site=a.com&_=123").await.status, 200);
}

/// The `/dump_last` fixture: site, status, location, cross, minutes ago.
const FIXTURE: &[(&str, u16, Option<&str>, u8, u64)] = &[
    ("s01.example.com", 200, None, 0, 80),
    (
        "s02.example.com",
        301,
        Some("https://www.s02.example.com/"),
        0,
        70,
    ),
    ("s03.example.com", 301, Some("https://other.net/"), 1, 60),
    ("s04.test.org", 500, None, 0, 50),
    ("s05.test.org", 403, None, 0, 40),
    ("s06.test.org", 302, Some("//elsewhere.io/login"), 1, 30),
    ("s07.example.com", 0, None, 0, 20),
    ("my_site.example.com", 500, None, 0, 15),
    ("myxsite.example.com", 200, None, 0, 10),
];

struct Fixture {
    base: u64,
}

impl Fixture {
    fn ts(&self, minutes_ago: u64) -> u64 {
        self.base - minutes_ago * MINUTE
    }

    /// Sites matching `keep`, newest first.
    fn expect(&self, keep: impl Fn(&(&str, u16, Option<&str>, u8, u64)) -> bool) -> Vec<String> {
        // Minutes ago ascending = newest first.
        let mut rows: Vec<_> = FIXTURE.iter().filter(|r| keep(r)).collect();
        rows.sort_by_key(|r| r.4);
        rows.iter().map(|r| r.0.to_owned()).collect()
    }
}

async fn push_fixture(c: &Collector) -> Fixture {
    let fixture = Fixture { base: now_ms() };
    let records: Vec<Value> = FIXTURE
        .iter()
        .map(|(site, status, location, _, ago)| {
            record(site, *status, 10, *location, fixture.ts(*ago))
        })
        .collect();
    c.push_ok(&Value::Array(records)).await;
    fixture
}

async fn dump_last_filters(backend: Backend) {
    let c = start(backend, "dump_filters").await;
    let f = push_fixture(&c).await;
    let all = f.expect(|_| true);

    let answer = c.dump(&[]).await;
    assert_eq!(answer.sites(), all);
    assert_eq!(
        (
            &answer.body["limit"],
            &answer.body["offset"],
            &answer.body["order"]
        ),
        (&json!(1000), &json!(0), &json!("desc"))
    );
    // Every field of an entry.
    let s03 = answer.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|d| d["site"] == json!("s03.example.com"))
        .expect("s03")
        .clone();
    assert_eq!(
        s03,
        json!({"site": "s03.example.com", "s": 301, "ms": 10, "p": 8080,
               "l": "https://other.net/", "x": 1, "t": f.ts(60)})
    );

    // Each filter alone.
    let ts40 = f.ts(40).to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("status", "500,403,301")],
            f.expect(|r| [500, 403, 301].contains(&r.1)),
        ),
        (vec![("status", "0")], f.expect(|r| r.1 == 0)),
        (vec![("status", "404")], vec![]),
        (vec![("cross", "1")], f.expect(|r| r.3 == 1)),
        (vec![("cross", "true")], f.expect(|r| r.3 == 1)),
        (vec![("cross", "0")], f.expect(|r| r.3 == 0)),
        (vec![("cross", "false")], f.expect(|r| r.3 == 0)),
        (vec![("since", ts40.as_str())], f.expect(|r| r.4 <= 40)),
        (vec![("until", ts40.as_str())], f.expect(|r| r.4 >= 40)),
        (
            vec![("site_like", "%.test.org")],
            f.expect(|r| r.0.ends_with(".test.org")),
        ),
        (
            vec![("site_like", "S0_.EXAMPLE.COM")],
            f.expect(|r| r.0.starts_with("s0") && r.0.ends_with(".example.com")),
        ),
        (
            vec![("site_like", "my_site%")],
            f.expect(|r| r.0.starts_with("my")),
        ),
        (
            vec![("site_like", "my\\_site%")],
            vec!["my_site.example.com".into()],
        ),
        (vec![("site_like", "nothing%")], vec![]),
        // Unknown parameters and empty values are ignored.
        (
            vec![("_", "1735648000"), ("status", ""), ("cross", "")],
            all.clone(),
        ),
    ];
    for (pairs, want) in cases {
        assert_eq!(c.dump(&pairs).await.sites(), want, "{pairs:?}");
    }

    // Combinations.
    let since = f.ts(65).to_string();
    let until = f.ts(25).to_string();
    let combined = [
        ("status", "301,302,500"),
        ("cross", "1"),
        ("since", since.as_str()),
        ("site_like", "%.%"),
    ];
    assert_eq!(
        c.dump(&combined).await.sites(),
        f.expect(|r| [301, 302, 500].contains(&r.1) && r.3 == 1 && r.4 <= 65)
    );
    let window = [
        ("status", "200,500"),
        ("since", since.as_str()),
        ("until", until.as_str()),
        ("cross", "0"),
    ];
    assert_eq!(
        c.dump(&window).await.sites(),
        f.expect(|r| [200, 500].contains(&r.1) && r.3 == 0 && (25..=65).contains(&r.4))
    );
    let paged = [
        ("cross", "0"),
        ("site_like", "%.example.com"),
        ("limit", "2"),
        ("offset", "1"),
        ("order", "asc"),
    ];
    let mut want = f.expect(|r| r.3 == 0 && r.0.ends_with(".example.com"));
    want.reverse();
    let answer = c.dump(&paged).await;
    assert_eq!(answer.sites(), want[1..3].to_vec());
    assert_eq!(
        (
            &answer.body["limit"],
            &answer.body["offset"],
            &answer.body["order"]
        ),
        (&json!(2), &json!(1), &json!("asc"))
    );
}

async fn dump_last_pages_and_orders(backend: Backend) {
    let c = start(backend, "dump_pages").await;
    let f = push_fixture(&c).await;
    let desc = f.expect(|_| true);
    let mut asc = desc.clone();
    asc.reverse();
    assert_eq!(c.dump(&[("order", "desc")]).await.sites(), desc);
    assert_eq!(c.dump(&[("order", "DESC")]).await.sites(), desc);
    assert_eq!(c.dump(&[("order", "asc")]).await.sites(), asc);
    for (order, want) in [("desc", &desc), ("asc", &asc)] {
        let mut pages = Vec::new();
        for offset in (0..12).step_by(4) {
            let offset = offset.to_string();
            let page = c
                .dump(&[("order", order), ("limit", "4"), ("offset", &offset)])
                .await
                .sites();
            assert!(page.len() <= 4);
            pages.extend(page);
        }
        assert_eq!(&pages, want, "{order}");
    }
    assert_eq!(
        c.dump(&[("offset", "9")]).await.sites(),
        Vec::<String>::new()
    );
    assert_eq!(c.dump(&[("offset", "10000000")]).await.sites().len(), 0);
}

async fn dump_last_default_and_maximum_limits(backend: Backend) {
    let c = start(backend, "dump_limits").await;
    let now = now_ms();
    let records: Vec<Value> = (0..1100)
        .map(|i| record(&format!("site{i:04}.com"), 200, 1, None, now - i))
        .collect();
    c.push_ok(&Value::Array(records)).await;

    let answer = c.dump(&[]).await;
    let sites = answer.sites();
    assert_eq!((sites.len(), &answer.body["limit"]), (1000, &json!(1000)));
    assert_eq!(sites[0], "site0000.com");
    assert_eq!(sites[999], "site0999.com");
    for limit in ["5000", "5001", "100000", "99999999999999999999999"] {
        let answer = c.dump(&[("limit", limit)]).await;
        assert_eq!(answer.sites().len(), 1100, "limit={limit}");
        assert_eq!(answer.body["limit"], json!(5000), "limit={limit}");
    }
    let answer = c.dump(&[("limit", "7"), ("offset", "1095")]).await;
    assert_eq!(
        answer.sites(),
        [
            "site1095.com",
            "site1096.com",
            "site1097.com",
            "site1098.com",
            "site1099.com"
        ]
    );
}

async fn dump_last_names_each_invalid_parameter(backend: Backend) {
    let c = start(backend, "dump_invalid").await;
    c.push_ok(&record("a.com", 200, 1, None, now_ms())).await;
    let long = "a".repeat(513);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("status", "abc")], "status"),
        (&[("status", "1000")], "status"),
        (&[("status", "-1")], "status"),
        (&[("status", "500,,403")], "status"),
        (&[("cross", "yes")], "cross"),
        (&[("cross", "2")], "cross"),
        (&[("since", "-5")], "since"),
        (&[("since", "1.5")], "since"),
        (&[("since", "10"), ("until", "9")], "since"),
        (&[("until", "tomorrow")], "until"),
        (&[("site_like", &long)], "site_like"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "-1")], "limit"),
        (&[("limit", "ten")], "limit"),
        (&[("offset", "-1")], "offset"),
        (&[("offset", "10000001")], "offset"),
        (&[("order", "random")], "order"),
        (&[("limit", "5"), ("limit", "6")], "limit"),
        (&[("status", "200"), ("status", "500")], "status"),
    ];
    for (pairs, param) in cases {
        let error = c.dump(pairs).await.error(400).to_owned();
        assert!(
            error.starts_with(&format!("{param}: ")),
            "{pairs:?} → {error}"
        );
    }
    let statuses = vec!["200"; 51].join(",");
    assert!(
        c.dump(&[("status", &statuses)])
            .await
            .error(400)
            .starts_with("status: ")
    );
}

async fn sql_injection_is_inert(backend: Backend) {
    let c = start(backend, "injection").await;
    let f = push_fixture(&c).await;
    let all = f.expect(|_| true);

    for pattern in [
        "%' OR 1=1 --",
        "'; DROP TABLE health_last; --",
        "%'; DROP TABLE health_history; SELECT '",
        "%\" OR \"1\"=\"1",
        "%') OR ('1'='1",
        "%' UNION SELECT name, 1, 1, 1, '', 0, 0 FROM sqlite_master --",
        "%\\' OR 1=1 --",
    ] {
        let answer = c.dump(&[("site_like", pattern)]).await;
        assert_eq!(answer.sites(), Vec::<String>::new(), "site_like={pattern}");
    }
    for (param, value) in [
        ("status", "500) OR (1=1"),
        ("status", "500;DROP TABLE health_last"),
        ("cross", "1 OR 1=1"),
        ("since", "0 OR 1=1"),
        ("until", "0) OR (1=1"),
        ("limit", "1;DROP TABLE x"),
        ("limit", "1 UNION SELECT 1"),
        ("offset", "0;--"),
        ("order", "asc;--"),
        ("order", "asc; DROP TABLE health_last"),
        ("order", "ts"),
    ] {
        let error = c.dump(&[(param, value)]).await.error(400).to_owned();
        assert!(
            error.starts_with(&format!("{param}: ")),
            "{param}={value} → {error}"
        );
    }
    for site in ["a.com' OR '1'='1", "a.com; DROP TABLE health_last"] {
        assert!(c.last(site).await.error(400).starts_with("site: "));
    }
    // A pushed site can carry no SQL either: it must be a host name.
    let answer = c
        .push(&record(
            "x.com'); DROP TABLE health_last; --",
            200,
            1,
            None,
            now_ms(),
        ))
        .await;
    assert!(answer.error(400).starts_with("site: "));

    // Everything still answers as before.
    assert_eq!(c.dump(&[]).await.sites(), all);
    assert_eq!(c.last("s03.example.com").await.status, 200);
    c.push_ok(&record("after.com", 200, 1, None, now_ms()))
        .await;
    assert_eq!(c.stored_sites().await, all.len() + 1);
}

async fn reads_can_require_the_token(backend: Backend) {
    let c = start_with(backend, "read_token", |config| {
        config.api.read_requires_token = true;
    })
    .await;
    c.push_ok(&record("a.com", 200, 1, None, now_ms())).await;
    for path in ["/last?site=a.com", "/dump_last"] {
        for token in [None, Some("wrong")] {
            let answer = c.get_with(path, token).await;
            assert_eq!(answer.error(401), "missing or wrong bearer token");
            assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
        }
        assert_eq!(c.get_with(path, Some(TOKEN)).await.status, 200, "{path}");
    }
}

async fn a_bad_token_hash_stops_the_start(backend: Backend) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(backend, "bad_hash", &dir);
    config.api.push_tokens.push(PushToken {
        name: "pods-eu".into(),
        sha256: "not-a-hash".into(),
    });
    let Err(error) = livehead_collector::start(config, Shutdown::new()).await else {
        panic!("a collector with an unusable token hash started");
    };
    assert!(matches!(error, CollectorError::Token(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\"pods-eu\""), "{message}");
}

fn role_token(name: &str, role: &str, sites: &[&str]) -> RoleToken {
    RoleToken {
        name: name.into(),
        sha256: sha256_hex(&format!("{name}-secret")),
        role: role.into(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The roles of `/last` and `/dump_last` on a real store (the full matrix,
/// `/stats` included, runs against an in-memory store: `stats::tests`).
async fn closed_reads_answer_each_role_token_its_sites(backend: Backend) {
    let c = start_with(backend, "closed_reads", |config| {
        config.api.open_reads = false;
        config.api.tokens = vec![
            role_token("ops", "admin", &[]),
            role_token("shop", "user", &["*.shop.example"]),
            role_token("blog", "readonly", &["blog.example"]),
        ];
    })
    .await;
    let now = now_ms();
    c.push_ok(&json!([
        record("eu.shop.example", 200, 1, None, now),
        record("blog.example", 200, 1, None, now),
        record("secret.example", 200, 1, None, now),
    ]))
    .await;
    for (token, site, status) in [
        (Some("ops-secret"), "secret.example", 200),
        (Some("shop-secret"), "eu.shop.example", 200),
        (Some("shop-secret"), "secret.example", 404),
        (Some("blog-secret"), "blog.example", 200),
        (Some("blog-secret"), "eu.shop.example", 404),
        (None, "blog.example", 401),
        (Some(TOKEN), "blog.example", 401),
    ] {
        let answer = c.get_with(&format!("/last?site={site}"), token).await;
        assert_eq!(answer.status, status, "{token:?} {site}: {}", answer.body);
    }
    let hidden = c
        .get_with("/last?site=secret.example", Some("shop-secret"))
        .await;
    let unknown = c
        .get_with("/last?site=nowhere.example", Some("ops-secret"))
        .await;
    assert_eq!(hidden.error(404), "site secret.example not found");
    assert_eq!(unknown.error(404), "site nowhere.example not found");

    let sites = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|d| d["site"].as_str().expect("site").to_owned())
            .collect()
    };
    let all = sites(c.get_with("/dump_last?order=asc", Some("ops-secret")).await);
    assert_eq!(all.len(), 3);
    let shop = sites(c.get_with("/dump_last", Some("shop-secret")).await);
    assert_eq!(shop, ["eu.shop.example"]);
    let blog = sites(
        c.get_with("/dump_last?status=200", Some("blog-secret"))
            .await,
    );
    assert_eq!(blog, ["blog.example"]);

    // Role tokens do not push.
    let refused = c
        .client
        .post(format!("{}/push", c.base))
        .bearer_auth("shop-secret")
        .header("content-type", "application/json")
        .body(record("eu.shop.example", 500, 1, None, now).to_string())
        .send()
        .await
        .expect("request");
    let refused = Answer::from(refused).await;
    assert_eq!(
        refused.error(403),
        "this token may not write: /push takes push tokens (api.push_tokens)"
    );
    let last = c
        .get_with("/last?site=eu.shop.example", Some("ops-secret"))
        .await;
    assert_eq!(last.body["data"]["s"], json!(200), "nothing stored");
}

/// `/stats` is routed in the real collector and refuses before it reads (the
/// answers themselves are tested in `stats::tests`).
async fn stats_routes_check_roles_before_reading(backend: Backend) {
    let c = start_with(backend, "stats_roles", |config| {
        config.api.tokens = vec![role_token("shop", "user", &["*.shop.example"])];
    })
    .await;
    for path in [
        "/stats/server",
        "/stats/system",
        "/stats/site/a.shop.example",
    ] {
        for token in [None, Some("wrong"), Some(TOKEN)] {
            let answer = c.get_with(path, token).await;
            assert_eq!(answer.error(401), "missing or wrong bearer token", "{path}");
            assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
        }
    }
    for path in ["/stats/server", "/stats/sites", "/stats/services"] {
        let answer = c.get_with(path, Some("shop-secret")).await;
        assert_eq!(answer.error(403), r#"admin only: token "shop" is user"#);
    }
    for path in [
        "/stats/site/secret.example",
        "/stats/site/secret.example/history",
        "/stats/services/secret.example",
    ] {
        let answer = c.get_with(path, Some("shop-secret")).await;
        assert_eq!(answer.error(404), "site secret.example not found", "{path}");
    }
}

async fn a_bad_role_token_stops_the_start(backend: Backend) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(backend, "bad_role", &dir);
    config.api.tokens = vec![role_token("shop", "user", &[])];
    let Err(error) = livehead_collector::start(config, Shutdown::new()).await else {
        panic!("a collector with a user token without sites started");
    };
    assert!(matches!(error, CollectorError::Access(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        r#"api.tokens: token "shop": a user token needs sites (names or globs)"#
    );
}

// ---------------------------------------------------------------------------
// Hardening: readiness, timeouts, connection limits, refusals before routing
// ---------------------------------------------------------------------------

/// Generous: these tests run beside others on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 100 ms until it is true, or panics with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the server sends until it closes, or `None` when it is still
/// open after `within`.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(within, conn.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// A raw HTTP/1.1 exchange: `request` sent as is, the answer's status and
/// JSON body (the connection is closed by `Connection: close` or the server).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading everything.
    let _ = conn.write_all(request).await;
    let text = read_until_closed(&mut conn, PATIENCE)
        .await
        .expect("an answer, then the connection closed");
    parse_raw(&text)
}

fn parse_raw(text: &str) -> (u16, Value) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON body ({e}): {text:?}"));
    (status, body)
}

impl Collector {
    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    async fn push_with_headers(&self, headers: &[(&str, &str)], body: String) -> Answer {
        let mut request = self.client.post(format!("{}/push", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::from(request.send().await.expect("request")).await
    }

    /// The head of a `/push` of `length` bytes, with the token.
    fn push_head(&self, length: usize) -> String {
        format!(
            "POST /push HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            self.http
        )
    }
}

async fn ready_follows_the_store_and_health_stays_the_old_answer(backend: Backend) {
    let c = start(backend, "ready").await;
    eventually("/ready answers 200", || async {
        let answer = c.get("/ready").await;
        answer.status == 200 && answer.body == json!({"ok": true})
    })
    .await;
    let answer = c.get("/health").await;
    assert_eq!((answer.status, answer.body), (200, json!({"ok": true})));
    let metrics = c.metrics().await;
    assert!(metrics.contains("livehead_collector_ready 1"), "{metrics}");
    assert!(
        metrics.contains(r#"livehead_collector_store_seconds_count{op="ping"}"#),
        "{metrics}"
    );
}

async fn push_needs_a_json_content_type(backend: Backend) {
    let c = start(backend, "content_type").await;
    let body = record("typed.com", 200, 1, None, now_ms()).to_string();
    let auth = format!("Bearer {TOKEN}");
    for (content_type, shown) in [
        (Some("text/plain"), "\"text/plain\""),
        (
            Some("application/x-www-form-urlencoded"),
            "\"application/x-www-form-urlencoded\"",
        ),
        (
            Some("multipart/form-data; boundary=x"),
            "\"multipart/form-data; boundary=x\"",
        ),
        (None, "missing"),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(value) = content_type {
            headers.push(("content-type", value));
        }
        let answer = c.push_with_headers(&headers, body.clone()).await;
        let error = answer.error(415);
        assert!(
            error.starts_with("content-type: ") && error.contains(shown),
            "{error}"
        );
    }
    c.assert_nothing_stored(0, "typed.com").await;
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "Application/JSON; charset=utf-8"),
    ];
    let answer = c.push_with_headers(&headers, body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(c.last("typed.com").await.status, 200);
}

async fn authorization_twice_is_refused(backend: Backend) {
    let c = start(backend, "auth_twice").await;
    let body = record("twice.com", 200, 1, None, now_ms()).to_string();
    let request = format!(
        "{}\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n{body}",
        c.push_head(body.len()).trim_end_matches("\r\n")
    );
    let (status, answer) = raw_exchange(c.http, request.as_bytes()).await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!({"ok": false, "error": "authorization: sent more than once"})
        )
    );
    c.assert_nothing_stored(0, "twice.com").await;
}

async fn a_trickled_body_is_answered_408(backend: Backend) {
    let c = start_with(backend, "trickle_body", |config| {
        config.limits.body_timeout = Duration::from_secs(1);
    })
    .await;
    // Content-Length 100, one byte sent, then nothing.
    let mut conn = TcpStream::connect(c.http).await.expect("connect");
    conn.write_all(format!("{}[", c.push_head(100)).as_bytes())
        .await
        .expect("write");
    let text = read_until_closed(&mut conn, PATIENCE)
        .await
        .expect("an answer before the client gives up");
    let (status, answer) = parse_raw(&text);
    assert_eq!(
        (status, answer),
        (
            408,
            json!({"ok": false, "error": "body: not received within 1s (limits.body_timeout)"})
        )
    );
}

/// Far above the 1 s timeouts set by the tests below, yet below hyper's own
/// 30 s header timeout, so that only ours can pass them.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

async fn idle_and_trickling_connections_are_closed_on_both_ports(backend: Backend) {
    let c = start_with(backend, "idle", |config| {
        config.limits.header_timeout = Duration::from_secs(1);
        config.limits.tls_handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let mut idle_http = TcpStream::connect(c.http).await.expect("connect");
    let mut trickling_http = TcpStream::connect(c.http).await.expect("connect");
    trickling_http
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut idle_grpc = TcpStream::connect(c.grpc).await.expect("connect");
    for (name, conn) in [
        ("idle HTTP", &mut idle_http),
        ("trickling HTTP", &mut trickling_http),
        ("idle gRPC", &mut idle_grpc),
    ] {
        assert!(
            read_until_closed(conn, CLOSE_WITHIN).await.is_some(),
            "the {name} connection is still open"
        );
    }
    // A kept-alive connection is closed once idle too.
    let mut kept = TcpStream::connect(c.http).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let text = read_until_closed(&mut kept, CLOSE_WITHIN)
        .await
        .expect("closed after the idle time");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    eventually("the connections gauge back to 0", || async {
        let m = c.metrics().await;
        m.contains(r#"livehead_collector_connections{port="grpc"} 0"#)
            && m.contains(r#"livehead_collector_connections{port="http"} 1"#)
    })
    .await;
}

async fn connections_over_the_limit_wait_for_one_to_close(backend: Backend) {
    let c = start_with(backend, "conn_limit", |config| {
        config.limits.max_connections = 2;
        config.limits.header_timeout = Duration::from_secs(120);
        config.limits.tls_handshake_timeout = Duration::from_secs(120);
    })
    .await;
    let first = TcpStream::connect(c.http).await.expect("connect");
    let _second = TcpStream::connect(c.http).await.expect("connect");
    // The kernel completes the third connection; the collector does not serve
    // it while two are open.
    let mut third = TcpStream::connect(c.http).await.expect("connect");
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_until_closed(&mut third, Duration::from_secs(2)).await,
        None,
        "served over the limit"
    );
    drop(first);
    let text = read_until_closed(&mut third, PATIENCE)
        .await
        .expect("served once a connection closed");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // gRPC (plain text here): a served connection gets the server's HTTP/2
    // SETTINGS in answer to the client's preface; one over the limit nothing.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut grpc = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(c.grpc).await.expect("connect");
        conn.write_all(preface).await.expect("write");
        grpc.push(conn);
    }
    let mut settings = [0u8; 9];
    for conn in &mut grpc[..2] {
        tokio::time::timeout(PATIENCE, conn.read_exact(&mut settings))
            .await
            .expect("served")
            .expect("SETTINGS");
    }
    let waiting = tokio::time::timeout(Duration::from_secs(2), grpc[2].read(&mut settings)).await;
    assert!(
        waiting.is_err(),
        "a third gRPC connection served over the limit"
    );
    grpc.remove(0);
    tokio::time::timeout(PATIENCE, grpc[1].read_exact(&mut settings))
        .await
        .expect("served once a connection closed")
        .expect("SETTINGS");
}

async fn requests_hyper_refuses_answer_in_json(backend: Backend) {
    let c = start(backend, "hyper_refusals").await;
    let big = "x".repeat(1 << 20);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            b"GET /last?site=\"a.com\" HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n".to_vec(),
            400,
        ),
        (
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            431,
        ),
    ];
    for (request, want) in cases {
        let (status, answer) = raw_exchange(c.http, &request).await;
        assert_eq!(status, want, "{answer}");
        assert_eq!(answer["ok"], json!(false), "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("request: ")),
            "{answer}"
        );
    }
    // The server still serves afterwards.
    assert_eq!(c.get("/health").await.status, 200);
}

async fn push_bytes_in_flight_are_bounded(backend: Backend) {
    let c = start_with(backend, "in_flight", |config| {
        config.api.max_push_bytes = 1000;
        config.api.max_push_bytes_in_flight = 1000;
        config.limits.body_timeout = Duration::from_secs(120);
    })
    .await;
    // A push announcing 1000 bytes and sending none holds the whole budget.
    let mut holder = TcpStream::connect(c.http).await.expect("connect");
    holder
        .write_all(c.push_head(1000).as_bytes())
        .await
        .expect("write");
    let body = record("later.com", 200, 1, None, now_ms());
    eventually("a push refused for lack of room", || async {
        let response = c
            .client
            .post(format!("{}/push", c.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let retry_after = response.headers().get("retry-after").cloned();
        let answer = Answer::from(response).await;
        answer.status == 503
            && retry_after.is_some_and(|v| v == "1")
            && answer.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("api.max_push_bytes_in_flight"))
    })
    .await;
    drop(holder);
    eventually("a push stored once the room is back", || async {
        c.push(&body).await.status == 200
    })
    .await;
}

/// ClickHouse stopped (SIGSTOP) answers nothing: reads and writes time out
/// with 503 instead of waiting for it, the timeouts are counted, `/ready`
/// goes 503 (`/health` stays 200); after SIGCONT everything is back. Its own
/// server: stopping the shared one would stall the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_clickhouse_answers_503_and_readiness_follows() {
    let ch = ClickHouseServer::start();
    let pid = ch.pid().expect("server pid");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(Backend::Sqlite, "stall", &dir);
    config.storage = StorageConfig {
        clickhouse_url: Some(ch.http_url()),
        database: ch.unique_database("stall"),
        read_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(2),
        ..StorageConfig::default()
    };
    config.ready_interval = Duration::from_millis(200);
    let c = start_config(config, dir).await;
    c.push_ok(&record("before.com", 200, 1, None, now_ms()))
        .await;
    eventually("ready before the stall", || async {
        c.get("/ready").await.status == 200
    })
    .await;

    livehead_testkit::signal(pid, "STOP");
    let started = Instant::now();
    // Bounded here too: without the store's timeouts these would wait for
    // SIGCONT, i.e. for ever.
    let error = tokio::time::timeout(PATIENCE, c.last("before.com"))
        .await
        .expect("/last waited for the stalled store")
        .error(503)
        .to_owned();
    assert_eq!(
        error,
        "storage unavailable: clickhouse: last timed out after 1s"
    );
    let during = record("during.com", 200, 1, None, now_ms());
    let error = tokio::time::timeout(PATIENCE, c.push(&during))
        .await
        .expect("/push waited for the stalled store")
        .error(503)
        .to_owned();
    assert!(error.ends_with("write timed out after 2s"), "{error}");
    // Far below the stall: ClickHouse stays stopped until SIGCONT.
    assert!(started.elapsed() < Duration::from_secs(20));
    eventually("/ready 503 naming the store", || async {
        let answer = c.get("/ready").await;
        answer.status == 503
            && answer.body["store"]
                .as_str()
                .is_some_and(|e| e.contains("timed out"))
            && answer.body["store_writes"].is_string()
    })
    .await;
    let answer = c.get("/health").await;
    assert_eq!((answer.status, answer.body), (200, json!({"ok": true})));
    let metrics = c.metrics().await;
    for line in [
        r#"livehead_collector_store_timeouts_total{op="last"} 1"#,
        r#"livehead_collector_store_timeouts_total{op="write"} 1"#,
        "livehead_collector_ready 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    livehead_testkit::signal(pid, "CONT");
    eventually("a push stored and /ready 200 after SIGCONT", || async {
        c.push(&record("after.com", 200, 1, None, now_ms()))
            .await
            .status
            == 200
            && c.get("/ready").await.status == 200
    })
    .await;
    assert_eq!(c.last("after.com").await.status, 200);
    assert_eq!(c.last("before.com").await.status, 200);
}
