//! The ping endpoints, the management API and checks as code over real HTTP
//! on loopback, against the collector's whole router (as `start` assembles
//! it, served by the collector's HTTP server), on both stores. The clock is
//! fixed (near now, so the stores' retention keeps the rows) and moved by
//! the tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use livehead_common::Shutdown;
use livehead_common::http_server::HttpLimits;
use livehead_testkit::Backend;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::access::Access;
use crate::config::{ApiConfig, HeartbeatsConfig, Limits, RoleToken};
use crate::group_commit::{GroupCommit, QueueBounds};
use crate::store::samples::{Latest, SampleKind, Scope, StatsQuery};
use crate::store::{AnyStore, StorageConfig};

livehead_testkit::on_both_stores!(
    every_url_shape_and_method_is_stored,
    unknown_ids_are_404_and_store_nothing,
    create_1_makes_a_check_under_a_known_key_only,
    a_body_over_the_limit_keeps_its_first_bytes,
    a_flood_on_one_check_is_limited_while_another_passes,
    pause_resume_and_a_ping_unpauses,
    the_api_refuses_by_role_and_duplicate_names,
    the_list_shows_each_checks_status,
    checks_as_code_apply_once_and_remove_what_the_file_drops,
);

const ADMIN: &str = "admin-secret";
const USER: &str = "user-secret";
const READONLY: &str = "readonly-secret";
const KEY: &str = "ops-ping-key";
const MINUTE: u64 = 60_000;

fn sha(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn role(name: &str, secret: &str, role: &str) -> RoleToken {
    RoleToken {
        name: name.into(),
        sha256: sha(secret),
        role: role.into(),
        sites: if role == "admin" {
            vec![]
        } else {
            vec!["*.example".into()]
        },
    }
}

struct Served {
    base: String,
    client: reqwest::Client,
    state: HeartbeatsState<AnyStore>,
    store: Arc<AnyStore>,
    metrics: CollectorMetrics,
    clock: Arc<AtomicU64>,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn open(backend: Backend, test: &str) -> (AnyStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = match backend {
        Backend::Sqlite => StorageConfig {
            sqlite_path: dir.path().join("livehead.db"),
            ..StorageConfig::default()
        },
        Backend::ClickHouse => {
            let server = &crate::store::sample_store_tests::SERVER;
            StorageConfig {
                clickhouse_url: Some(server.http_url()),
                database: server.unique_database(test),
                ..StorageConfig::default()
            }
        }
    };
    (AnyStore::open(&config).await.expect("open"), dir)
}

async fn serve(backend: Backend, test: &str, config: HeartbeatsConfig) -> Served {
    let (store, dir) = open(backend, test).await;
    let store = Arc::new(store);
    let metrics = CollectorMetrics::new();
    let api = ApiConfig {
        tokens: vec![
            role("ops", ADMIN, "admin"),
            role("dev", USER, "user"),
            role("viewer", READONLY, "readonly"),
        ],
        ..ApiConfig::default()
    };
    let access = Arc::new(Access::from_config(&api).expect("tokens"));
    let writer = GroupCommit::start(store.clone(), QueueBounds::rows(10_000), metrics.clone());
    let config = HeartbeatsConfig {
        ping_keys: BTreeMap::from([("ops".to_owned(), sha(KEY))]),
        ..config
    };
    let clock = Arc::new(AtomicU64::new(
        livehead_common::clock::unix_ms() - 60 * MINUTE,
    ));
    let now = clock.clone();
    let state = HeartbeatsState::new(Parts {
        store: store.clone(),
        writer,
        access,
        metrics: metrics.clone(),
        limits: Limits::default(),
        keys: PingKeys::from_config(&config).expect("keys"),
        config,
        clock: Arc::new(move || now.load(Ordering::SeqCst)),
    });
    let readiness = crate::ready::Readiness::new(metrics.clone());
    let app = crate::http::router(&metrics, &readiness, router(state.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(livehead_common::http_server::serve(
        listener,
        app,
        shutdown.clone(),
        HttpLimits::default(),
        metrics.listener("http"),
    ));
    Served {
        base: format!("http://{addr}"),
        client: livehead_testkit::http_client(),
        state,
        store,
        metrics,
        clock,
        shutdown,
        _dir: dir,
    }
}

impl Served {
    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    async fn ping(&self, method: &str, path: &str) -> (u16, String) {
        self.ping_body(method, path, Vec::new()).await
    }

    async fn ping_body(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("user-agent", "curl/8.5")
            .body(body)
            .send()
            .await
            .expect("ping");
        let status = response.status().as_u16();
        (status, response.text().await.expect("text"))
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates a check with the admin token; answers its id.
    async fn create(&self, body: Value) -> String {
        let (status, answer) = self
            .api("POST", "/api/v1/checks", Some(ADMIN), Some(body))
            .await;
        assert_eq!(status, 201, "{answer}");
        answer["check"]["id"].as_str().expect("id").to_owned()
    }

    async fn pings(&self, id: &str) -> Vec<Value> {
        let (status, answer) = self
            .api(
                "GET",
                &format!("/api/v1/checks/{id}/pings?limit=1000"),
                Some(READONLY),
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["pings"].as_array().expect("pings").clone()
    }

    async fn check(&self, id: &str) -> Value {
        let (status, answer) = self
            .api("GET", &format!("/api/v1/checks/{id}"), Some(READONLY), None)
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["check"].clone()
    }

    async fn stored(&self, kind: SampleKind) -> crate::store::Rows {
        let query = StatsQuery {
            kind,
            scope: Scope::Latest(Latest {
                since_ms: 0,
                only: None,
            }),
        };
        self.store.stats(&query).await.expect("read")
    }

    fn counted(&self, outcome: &str) -> u64 {
        self.metrics
            .heartbeat_pings
            .with_label_values(&[outcome])
            .get()
    }
}

fn period(name: &str) -> Value {
    json!({ "name": name, "period_s": 3600, "grace_s": 600, "tags": "prod backup" })
}

async fn every_url_shape_and_method_is_stored(backend: Backend) {
    let config = HeartbeatsConfig {
        ping_burst: 50,
        ..HeartbeatsConfig::default()
    };
    let s = serve(backend, "hb_shapes", config).await;
    let id = s
        .create(json!({ "name": "backup", "period_s": 3600, "grace_s": 600,
                        "project": "ops", "slug": "backup" }))
        .await;
    let rid = "0e6a1bb8-52a4-4b39-8d8e-3f4b1f0a9c11";
    let cases: Vec<(&str, String, &str, u32)> = vec![
        ("GET", format!("/ping/{id}"), "success", 0),
        ("HEAD", format!("/ping/{id}"), "success", 0),
        ("POST", format!("/ping/{}", id.to_uppercase()), "success", 0),
        ("GET", format!("/ping/{id}/start?rid={rid}"), "start", 0),
        ("POST", format!("/ping/{id}/0?rid={rid}"), "exit", 0),
        ("GET", format!("/ping/{id}/fail"), "fail", 0),
        ("GET", format!("/ping/{id}/log"), "log", 0),
        ("GET", format!("/ping/{id}/7"), "exit", 7),
        ("GET", format!("/ping/{KEY}/backup"), "success", 0),
        ("POST", format!("/ping/{KEY}/backup/start"), "start", 0),
        ("GET", format!("/ping/{KEY}/backup/255"), "exit", 255),
    ];
    for (method, path, _, _) in &cases {
        s.advance(1000);
        let (status, text) = s.ping(method, path).await;
        assert_eq!(status, 200, "{method} {path}: {text}");
        if *method != "HEAD" {
            assert_eq!(text, "OK");
        }
    }
    let pings = s.pings(&id).await;
    let seen: Vec<(String, String, u64)> = pings
        .iter()
        .rev()
        .map(|p| {
            (
                p["method"].as_str().unwrap_or_default().to_owned(),
                p["kind"].as_str().unwrap_or_default().to_owned(),
                p["exit_status"].as_u64().unwrap_or(999),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = cases
        .iter()
        .map(|(m, _, k, e)| ((*m).to_owned(), (*k).to_owned(), u64::from(*e)))
        .collect();
    assert_eq!(seen, expected);
    // The run started with the rid ended a second later with exit status 0.
    let ended = &pings[pings.len() - 5];
    assert_eq!(
        (ended["rid"].as_str(), ended["duration_ms"].as_u64()),
        (Some(rid), Some(1000))
    );
    assert_eq!(pings[0]["user_agent"], "curl/8.5");
    assert_eq!(pings[0]["remote"], "127.0.0.1");

    for (path, status, text) in [
        (
            format!("/ping/{id}/256"),
            400,
            "exit status: 256 is not within 0-255",
        ),
        (format!("/ping/{id}?rid=run-1"), 400, "rid: \"run-1\""),
        (format!("/ping/{id}/restart"), 404, "not found"),
    ] {
        let (got, body) = s.ping("GET", &path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.starts_with(text), "{path}: {body}");
    }
    let (status, _) = s.ping("PUT", &format!("/ping/{id}")).await;
    assert_eq!(status, 405);
    assert_eq!(
        s.pings(&id).await.len(),
        cases.len(),
        "refused pings are not stored"
    );
}

async fn unknown_ids_are_404_and_store_nothing(backend: Backend) {
    let s = serve(backend, "hb_unknown", HeartbeatsConfig::default()).await;
    for path in [
        "/ping/5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".to_owned(),
        "/ping/5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b/start".to_owned(),
        format!("/ping/{KEY}/nothing"),
        "/ping/wrong-key/backup?create=1".to_owned(),
    ] {
        assert_eq!(
            s.ping("GET", &path).await,
            (404, "not found".to_owned()),
            "{path}"
        );
    }
    assert!(
        s.stored(SampleKind::HeartbeatPing)
            .await
            .heartbeat_pings
            .is_empty()
    );
    assert!(
        s.stored(SampleKind::HeartbeatCheck)
            .await
            .heartbeat_checks
            .is_empty()
    );
    assert_eq!(s.counted("not_found"), 4);
}

async fn create_1_makes_a_check_under_a_known_key_only(backend: Backend) {
    let s = serve(backend, "hb_create", HeartbeatsConfig::default()).await;
    let (status, text) = s
        .ping("POST", &format!("/ping/{KEY}/db-dump/start?create=1"))
        .await;
    assert_eq!((status, text.as_str()), (201, "Created"));
    s.advance(1000);
    assert_eq!(
        s.ping("GET", &format!("/ping/{KEY}/db-dump?create=1"))
            .await
            .0,
        200
    );
    let (_, list) = s.api("GET", "/api/v1/checks", Some(ADMIN), None).await;
    let checks = list["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{list}");
    let check = &checks[0];
    assert_eq!(
        (
            &check["name"],
            &check["project"],
            &check["slug"],
            &check["period_s"],
            &check["grace_s"]
        ),
        (
            &json!("db-dump"),
            &json!("ops"),
            &json!("db-dump"),
            &json!(86_400),
            &json!(3_600)
        )
    );
    assert_eq!(
        (&check["source"], &check["status"]),
        (&json!("ping"), &json!("up"))
    );
    let id = check["id"].as_str().expect("id");
    assert_eq!(s.pings(id).await.len(), 2);
    // A burst of first pings makes one check.
    let burst = format!("/ping/{KEY}/burst?create=1");
    let answers = futures::future::join_all((0..5).map(|_| s.ping("GET", &burst))).await;
    let created = answers.iter().filter(|(code, _)| *code == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers.iter().all(|(code, _)| *code == 200 || *code == 201),
        "{answers:?}"
    );
    let (_, list) = s.api("GET", "/api/v1/checks", Some(ADMIN), None).await;
    assert_eq!(list["checks"].as_array().map(Vec::len), Some(2), "{list}");

    assert_eq!(s.ping("GET", "/ping/not-a-key/other?create=1").await.0, 404);
    assert_eq!(s.ping("GET", &format!("/ping/{KEY}/other")).await.0, 404);
    assert_eq!(
        s.stored(SampleKind::HeartbeatCheck)
            .await
            .heartbeat_checks
            .len(),
        2
    );
}

async fn a_body_over_the_limit_keeps_its_first_bytes(backend: Backend) {
    let config = HeartbeatsConfig {
        max_body_bytes: 50_000,
        ..HeartbeatsConfig::default()
    };
    let s = serve(backend, "hb_body", config).await;
    let id = s.create(period("log-heavy")).await;
    let body: Vec<u8> = (0..30_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(
        s.ping_body("POST", &format!("/ping/{id}/1"), body.clone())
            .await
            .0,
        200
    );
    s.advance(1000);
    assert_eq!(
        s.ping_body("POST", &format!("/ping/{id}/log"), vec![b'x'; 80_000])
            .await
            .0,
        200
    );
    let pings = s.pings(&id).await;
    let first = &pings[1];
    assert_eq!(first["body"].as_str().map(str::len), Some(10_240));
    assert_eq!(
        first["body"].as_str().map(str::as_bytes),
        Some(&body[..10_240])
    );
    assert_eq!(first["body_bytes"], 30_000);
    // Past heartbeats.max_body_bytes the body is not read: counted to it.
    assert_eq!(pings[0]["body_bytes"], 50_000);
}

async fn a_flood_on_one_check_is_limited_while_another_passes(backend: Backend) {
    let config = HeartbeatsConfig {
        // One a minute: the burst is all a test this short may send.
        max_pings_per_check: 1,
        ping_burst: 5,
        ..HeartbeatsConfig::default()
    };
    let s = serve(backend, "hb_flood", config).await;
    let (flooded, calm) = (
        s.create(period("flooded")).await,
        s.create(period("calm")).await,
    );
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(s.ping("GET", &format!("/ping/{flooded}")).await);
    }
    let limited = statuses.iter().filter(|(code, _)| *code == 429).count();
    assert_eq!(limited, 7, "{statuses:?}");
    assert!(statuses.contains(&(429, "rate limited".to_owned())));
    assert_eq!(s.counted("limited"), limited as u64);
    assert_eq!(s.ping("GET", &format!("/ping/{calm}")).await.0, 200);
    assert_eq!(s.pings(&flooded).await.len(), 12 - limited);
}

async fn pause_resume_and_a_ping_unpauses(backend: Backend) {
    let s = serve(backend, "hb_pause", HeartbeatsConfig::default()).await;
    let id = s.create(period("nightly")).await;
    let (status, answer) = s
        .api(
            "POST",
            &format!("/api/v1/checks/{id}/pause"),
            Some(USER),
            None,
        )
        .await;
    assert_eq!(
        (status, &answer["check"]["status"]),
        (200, &json!("paused"))
    );
    assert_eq!(s.check(&id).await["status"], "paused");
    // A log ping is no ping: still paused.
    s.advance(1000);
    assert_eq!(s.ping("GET", &format!("/ping/{id}/log")).await.0, 200);
    assert_eq!(s.check(&id).await["paused"], true);
    s.advance(1000);
    assert_eq!(s.ping("GET", &format!("/ping/{id}")).await.0, 200);
    let check = s.check(&id).await;
    assert_eq!(
        (&check["paused"], &check["status"], &check["source"]),
        (&json!(false), &json!("up"), &json!("ping"))
    );

    s.advance(1000);
    s.api(
        "POST",
        &format!("/api/v1/checks/{id}/pause"),
        Some(ADMIN),
        None,
    )
    .await;
    s.advance(1000);
    let (status, answer) = s
        .api(
            "POST",
            &format!("/api/v1/checks/{id}/resume"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((status, &answer["check"]["paused"]), (200, &json!(false)));
    let check = s.check(&id).await;
    assert_eq!(
        (&check["paused"], &check["actor"]),
        (&json!(false), &json!("ops"))
    );
}

async fn the_api_refuses_by_role_and_duplicate_names(backend: Backend) {
    let s = serve(backend, "hb_roles", HeartbeatsConfig::default()).await;
    let id = s.create(period("backup")).await;
    let path = format!("/api/v1/checks/{id}");
    let writes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/api/v1/checks".into(), Some(period("other"))),
        ("PATCH", path.clone(), Some(json!({ "grace_s": 60 }))),
        ("DELETE", path.clone(), None),
        ("POST", format!("{path}/pause"), None),
        ("POST", format!("{path}/resume"), None),
    ];
    for (method, route, body) in &writes {
        let (status, answer) = s.api(method, route, Some(READONLY), body.clone()).await;
        assert_eq!(status, 403, "{method} {route}: {answer}");
        let (status, _) = s.api(method, route, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {route}");
    }
    for route in [
        "/api/v1/checks".to_owned(),
        path.clone(),
        format!("{path}/pings"),
    ] {
        assert_eq!(s.api("GET", &route, None, None).await.0, 401, "{route}");
        assert_eq!(
            s.api("GET", &route, Some(READONLY), None).await.0,
            200,
            "{route}"
        );
    }
    let (status, answer) = s
        .api("POST", "/api/v1/checks", Some(USER), Some(period("backup")))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"],
        format!("name: \"backup\" is the name of check {id}")
    );
    let other = {
        let (status, answer) = s
            .api("POST", "/api/v1/checks", Some(USER), Some(period("other")))
            .await;
        assert_eq!(status, 201, "{answer}");
        answer["check"]["id"].as_str().expect("id").to_owned()
    };
    let (status, _) = s
        .api(
            "PATCH",
            &format!("/api/v1/checks/{other}"),
            Some(USER),
            Some(json!({ "name": "backup" })),
        )
        .await;
    assert_eq!(status, 409);
    for (body, error) in [
        (json!({ "name": "x", "cron": "61 * * * *" }), "cron: "),
        (
            json!({ "name": "x", "cron": "0 * * * *", "tz": "Mars/Olympus" }),
            "tz: ",
        ),
        (json!({ "name": "x", "period_s": 0 }), "period_s: "),
        (
            json!({ "name": "x", "period_s": 3600, "tz": "UTC" }),
            "tz: only with a cron",
        ),
        (
            json!({ "name": "x", "period_s": 3600, "project": "billing", "slug": "x" }),
            "project: ",
        ),
        (json!({ "period_s": 3600 }), "name: missing"),
        (
            json!({ "name": "x", "period_s": 3600, "colour": "red" }),
            "unknown field `colour`",
        ),
    ] {
        let (status, answer) = s
            .api("POST", "/api/v1/checks", Some(ADMIN), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(error)),
            "{body}: {answer}"
        );
    }
    let (status, _) = s.api("DELETE", &path, Some(USER), None).await;
    assert_eq!(status, 200);
    assert_eq!(s.api("GET", &path, Some(ADMIN), None).await.0, 404);
    assert_eq!(
        s.ping("GET", &format!("/ping/{id}")).await.0,
        404,
        "a deleted check takes no pings"
    );
}

async fn the_list_shows_each_checks_status(backend: Backend) {
    let s = serve(backend, "hb_list", HeartbeatsConfig::default()).await;
    let up = s.create(period("up")).await;
    let late = s.create(period("late")).await;
    let started = s.create(json!({ "name": "started", "cron": "0 3 * * *", "tz": "Europe/Paris", "tags": ["etl"] })).await;
    let new = s
        .create(json!({ "name": "new", "period_s": 86_400, "tags": ["etl"] }))
        .await;
    assert_eq!(s.ping("GET", &format!("/ping/{late}")).await.0, 200);
    s.advance(65 * MINUTE);
    assert_eq!(s.ping("GET", &format!("/ping/{up}")).await.0, 200);
    assert_eq!(
        s.ping("GET", &format!("/ping/{started}/start")).await.0,
        200
    );
    s.advance(MINUTE);
    let (status, answer) = s.api("GET", "/api/v1/checks", Some(READONLY), None).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: BTreeMap<String, (String, Option<String>)> = answer["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                (
                    c["status"].as_str().unwrap_or_default().to_owned(),
                    c["last_ping_kind"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect();
    assert_eq!(statuses[&up], ("up".to_owned(), Some("success".to_owned())));
    assert_eq!(
        statuses[&late],
        ("grace".to_owned(), Some("success".to_owned()))
    );
    assert_eq!(
        statuses[&started],
        ("started".to_owned(), Some("start".to_owned()))
    );
    assert_eq!(statuses[&new], ("new".to_owned(), None));
    let (_, answer) = s
        .api("GET", "/api/v1/checks?tag=etl", Some(READONLY), None)
        .await;
    let names: Vec<&str> = answer["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["new", "started"]);
    let check = s.check(&up).await;
    assert!(
        check["next_expected"]
            .as_u64()
            .is_some_and(|t| t > check["last_ping"].as_u64().unwrap_or(0))
    );
}

async fn checks_as_code_apply_once_and_remove_what_the_file_drops(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("checks.toml");
    let two = r#"
        [[checks]]
        id = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b"
        name = "Nightly backup"
        tags = ["backup"]
        cron = "30 2 * * *"
        tz = "Europe/Paris"
        grace = "1h"

        [[checks]]
        project = "ops"
        slug = "token-refresh"
        name = "Token refresh"
        period = "15m"
        grace = "5m"
    "#;
    std::fs::write(&file, two).expect("write");
    let config = HeartbeatsConfig {
        checks_file: Some(file.clone()),
        ..HeartbeatsConfig::default()
    };
    let s = serve(backend, "hb_code", config).await;
    assert_eq!(apply_checks_file(&s.state).await.expect("apply"), 2);
    s.advance(1000);
    assert_eq!(apply_checks_file(&s.state).await.expect("apply again"), 0);
    assert_eq!(
        s.ping("GET", &format!("/ping/{KEY}/token-refresh")).await.0,
        200
    );
    let id = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";
    let check = s.check(id).await;
    assert_eq!(
        (&check["source"], &check["cron"]),
        (&json!("config"), &json!("30 2 * * *"))
    );
    let (status, answer) = s
        .api(
            "PATCH",
            &format!("/api/v1/checks/{id}"),
            Some(ADMIN),
            Some(json!({ "grace_s": 60 })),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("checks.toml")),
        "{answer}"
    );

    let one = two
        .split("[[checks]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[checks]]");
    std::fs::write(&file, one).expect("write");
    s.advance(1000);
    assert_eq!(apply_checks_file(&s.state).await.expect("apply smaller"), 1);
    assert_eq!(
        s.ping("GET", &format!("/ping/{KEY}/token-refresh")).await.0,
        404
    );
    let (_, list) = s.api("GET", "/api/v1/checks", Some(ADMIN), None).await;
    assert_eq!(list["checks"].as_array().map(Vec::len), Some(1), "{list}");

    std::fs::write(&file, two.replace("Europe/Paris", "Mars/Olympus")).expect("write");
    let error = apply_checks_file(&s.state).await.expect_err("bad zone");
    let expected = format!("{}: check \"Nightly backup\": tz: ", file.display());
    assert!(error.to_string().starts_with(&expected), "{error}");
}
