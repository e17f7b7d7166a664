//! Roles on the whole HTTP API (the old worker's routes and `/stats`), over
//! loopback, against [`FakeStore`]; the `/stats` matrix runs again on both
//! real stores.

use std::sync::Arc;

use livehead_common::clock::unix_ms;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fake::FakeStore;
use super::*;
use crate::api::{self, ApiState, Tokens};
use crate::config::{Limits, PushToken, RoleToken};
use crate::store::ProbeRow;
use crate::store::samples::{
    FilesystemRow, NodeRow, ServiceRow, SiteDiskRow, SiteProcessRow, WatchdogEventRow,
};

const PUSH: &str = "push-secret";
const MINUTE: u64 = 60_000;

/// The callers of the matrix, in its columns' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    /// `*.shop.example`
    User,
    /// `blog.example`
    Readonly,
    NoToken,
    BadToken,
}

const EVERYONE: [Who; 5] = [
    Who::Admin,
    Who::User,
    Who::Readonly,
    Who::NoToken,
    Who::BadToken,
];

impl Who {
    fn secret(self) -> Option<&'static str> {
        match self {
            Self::Admin => Some("admin-secret"),
            Self::User => Some("user-secret"),
            Self::Readonly => Some("readonly-secret"),
            Self::NoToken => None,
            Self::BadToken => Some("guessed-secret"),
        }
    }
}

fn sha(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn role(name: &str, who: Who, role: &str, sites: &[&str]) -> RoleToken {
    RoleToken {
        name: name.into(),
        sha256: sha(who.secret().unwrap_or_default()),
        role: role.into(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn config(open_reads: bool) -> ApiConfig {
    ApiConfig {
        push_tokens: vec![PushToken {
            name: "pods".into(),
            sha256: sha(PUSH),
        }],
        tokens: vec![
            role("ops", Who::Admin, "admin", &[]),
            role("shop-team", Who::User, "user", &["*.shop.example"]),
            role("blog-viewer", Who::Readonly, "readonly", &["blog.example"]),
        ],
        open_reads,
        ..ApiConfig::default()
    }
}

/// Three sites (one per restricted token and one of nobody's), one node.
fn rows(now: u64) -> Rows {
    let sites = ["eu.shop.example", "blog.example", "secret.example"];
    let probe = |site: &str| ProbeRow {
        site: site.into(),
        status: 200,
        ts: now - MINUTE,
        agent: "agent-1".into(),
        ..ProbeRow::default()
    };
    Rows {
        probes: sites.iter().map(|s| probe(s)).collect(),
        nodes: vec![
            NodeRow {
                node: "node-1".into(),
                ts: now - MINUTE,
                cpu_busy_pct: 12.5,
                ..NodeRow::default()
            },
            // Older than api.stats_fresh: gone.
            NodeRow {
                node: "node-gone".into(),
                ts: now - 60 * MINUTE,
                ..NodeRow::default()
            },
        ],
        filesystems: vec![FilesystemRow {
            node: "node-1".into(),
            ts: now - MINUTE,
            mountpoint: "/".into(),
            used_pct: 40.0,
            ..FilesystemRow::default()
        }],
        // Days old, and still where the app stands.
        watchdog: vec![WatchdogEventRow {
            node: "node-1".into(),
            ts: now - 3 * 24 * 60 * MINUTE,
            app: "shop".into(),
            kind: "exhausted".into(),
            attempt: 3,
            ..WatchdogEventRow::default()
        }],
        site_disks: sites
            .iter()
            .map(|s| SiteDiskRow {
                node: "node-1".into(),
                ts: now - 20 * MINUTE,
                site: (*s).into(),
                disk_bytes: 4096,
                file_count: 3,
                ..SiteDiskRow::default()
            })
            .collect(),
        site_processes: sites
            .iter()
            .map(|s| SiteProcessRow {
                node: "node-1".into(),
                ts: now - MINUTE,
                site: (*s).into(),
                processes: 2,
                ..SiteProcessRow::default()
            })
            .collect(),
        services: sites
            .iter()
            .map(|s| ServiceRow {
                node: "node-1".into(),
                ts: now - MINUTE,
                site: (*s).into(),
                unit: format!("php-fpm@{s}"),
                active_state: "active".into(),
                ..ServiceRow::default()
            })
            .collect(),
        ..Rows::default()
    }
}

struct Served {
    base: String,
    client: reqwest::Client,
}

/// The collector's whole HTTP router (as `start` assembles it) on `store`.
async fn serve<S: Store>(store: Arc<S>, config: ApiConfig) -> Served {
    let metrics = CollectorMetrics::new();
    let tokens = Tokens::from_config(&config.push_tokens).expect("push tokens");
    let access = Arc::new(Access::from_config(&config).expect("role tokens"));
    let writer = crate::group_commit::GroupCommit::start(
        store.clone(),
        crate::group_commit::QueueBounds::rows(10_000),
        metrics.clone(),
    );
    let api = api::router(ApiState::new(
        store.clone(),
        writer,
        tokens,
        access.clone(),
        metrics.clone(),
        Limits::default(),
        config.clone(),
    ))
    .merge(router(StatsState::new(
        store,
        access,
        metrics.clone(),
        &config,
    )));
    let readiness = crate::ready::Readiness::new(metrics.clone());
    let app = crate::http::router(&metrics, &readiness, api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        base: format!("http://{addr}"),
        client: livehead_testkit::http_client(),
    }
}

/// `rows(now)` as agents send them: one batch per node, since a store takes
/// a sample's node from its batch's agent.
fn batches(now: u64) -> Vec<(&'static str, Rows)> {
    let mut node_1 = rows(now);
    let (gone, kept): (Vec<NodeRow>, Vec<NodeRow>) = std::mem::take(&mut node_1.nodes)
        .into_iter()
        .partition(|n| n.node == "node-gone");
    node_1.nodes = kept;
    let gone = Rows {
        nodes: gone,
        ..Rows::default()
    };
    vec![("node-1", node_1), ("node-gone", gone)]
}

/// A real store (SQLite, or a database of the tests' ClickHouse) holding
/// [`batches`], written through the one write path.
async fn real_store(clickhouse: bool) -> (Arc<crate::store::AnyStore>, tempfile::TempDir) {
    use crate::store::sample_store_tests::SERVER;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = if clickhouse {
        crate::store::StorageConfig {
            clickhouse_url: Some(SERVER.http_url()),
            database: SERVER.unique_database("stats_roles"),
            ..crate::store::StorageConfig::default()
        }
    } else {
        crate::store::StorageConfig {
            sqlite_path: dir.path().join("livehead.db"),
            ..crate::store::StorageConfig::default()
        }
    };
    let store = crate::store::AnyStore::open(&config).await.expect("open");
    for (seq, (agent, rows)) in (1..).zip(batches(unix_ms())) {
        let batch = crate::store::BatchWrite {
            agent,
            seq,
            rows: rows.as_ref(),
        };
        store.write_batch(batch).await.expect("seed");
    }
    (Arc::new(store), dir)
}

async fn seeded(open_reads: bool) -> Served {
    let store = Arc::new(FakeStore::with(rows(unix_ms())));
    serve(store, config(open_reads)).await
}

impl Served {
    async fn get(&self, who: Who, path: &str) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(secret) = who.secret() {
            request = request.bearer_auth(secret);
        }
        answer(request.send().await.expect("request")).await
    }

    async fn push(&self, secret: Option<&str>) -> (u16, Value) {
        let body = json!({"site": "eu.shop.example", "status": 200, "ms": 5,
                          "port": 443, "ts": unix_ms()});
        let mut request = self
            .client
            .post(format!("{}/push", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        answer(request.send().await.expect("request")).await
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Each route's status for [admin, user, readonly, no token, bad token].
const READS: &[(&str, [u16; 5])] = &[
    ("/health", [200, 200, 200, 200, 200]),
    ("/stats/server", [200, 403, 403, 401, 401]),
    ("/stats/server?node=node-1", [200, 403, 403, 401, 401]),
    (
        "/stats/server/history?node=node-1",
        [200, 403, 403, 401, 401],
    ),
    ("/stats/system", [200, 200, 200, 401, 401]),
    ("/stats/sites", [200, 403, 403, 401, 401]),
    ("/stats/site/eu.shop.example", [200, 200, 404, 401, 401]),
    ("/stats/site/blog.example", [200, 404, 200, 401, 401]),
    ("/stats/site/secret.example", [200, 404, 404, 401, 401]),
    (
        "/stats/site/unknown.shop.example",
        [404, 404, 404, 401, 401],
    ),
    (
        "/stats/site/eu.shop.example/history",
        [200, 200, 404, 401, 401],
    ),
    (
        "/stats/site/blog.example/history?hours=2",
        [200, 404, 200, 401, 401],
    ),
    (
        "/stats/site/secret.example/history",
        [200, 404, 404, 401, 401],
    ),
    ("/stats/services", [200, 403, 403, 401, 401]),
    ("/stats/watchdog", [200, 403, 403, 401, 401]),
    ("/stats/watchdog?node=node-1", [200, 403, 403, 401, 401]),
    ("/stats/watchdog?node=node-2", [404, 403, 403, 401, 401]),
    ("/stats/services/eu.shop.example", [200, 200, 404, 401, 401]),
    ("/stats/services/blog.example", [200, 404, 200, 401, 401]),
    ("/stats/services/secret.example", [200, 404, 404, 401, 401]),
];

/// The old reads when `api.open_reads` is false.
const CLOSED_OLD_READS: &[(&str, [u16; 5])] = &[
    ("/last?site=eu.shop.example", [200, 200, 404, 401, 401]),
    ("/last?site=blog.example", [200, 404, 200, 401, 401]),
    ("/last?site=secret.example", [200, 404, 404, 401, 401]),
    ("/dump_last", [200, 200, 200, 401, 401]),
];

async fn check(served: &Served, table: &[(&str, [u16; 5])]) {
    for (path, statuses) in table {
        for (who, want) in EVERYONE.iter().zip(statuses) {
            let (status, body) = served.get(*who, path).await;
            assert_eq!(status, *want, "{who:?} GET {path}: {body}");
            assert_eq!(
                body["ok"],
                json!(status == 200),
                "{who:?} GET {path}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn every_role_against_every_stats_route() {
    for open_reads in [true, false] {
        check(&seeded(open_reads).await, READS).await;
    }
}

#[tokio::test]
async fn every_role_against_every_stats_route_on_sqlite() {
    let (store, _dir) = real_store(false).await;
    for open_reads in [true, false] {
        check(&serve(store.clone(), config(open_reads)).await, READS).await;
    }
}

#[tokio::test]
async fn every_role_against_every_stats_route_on_clickhouse() {
    let (store, _dir) = real_store(true).await;
    for open_reads in [true, false] {
        check(&serve(store.clone(), config(open_reads)).await, READS).await;
    }
}

#[tokio::test]
async fn the_watchdog_route_shows_where_each_app_stands_whatever_its_age() {
    for clickhouse in [false, true] {
        let (store, _dir) = real_store(clickhouse).await;
        let s = serve(store, config(false)).await;
        let (status, body) = s.get(Who::Admin, "/stats/watchdog").await;
        assert_eq!(status, 200, "{body}");
        let apps = body["apps"].as_array().expect("apps");
        assert_eq!(apps.len(), 1, "{body}");
        assert_eq!(apps[0]["app"], "shop");
        assert_eq!(apps[0]["kind"], "exhausted");
        assert_eq!(apps[0]["node"], "node-1");
    }
}

#[tokio::test]
async fn open_reads_keep_the_old_api_open_to_everyone() {
    let s = seeded(true).await;
    let open: Vec<_> = CLOSED_OLD_READS
        .iter()
        .map(|(path, _)| (*path, [200; 5]))
        .collect();
    check(&s, &open).await;
    let (_, dump) = s.get(Who::NoToken, "/dump_last").await;
    assert_eq!(dump["count"], json!(3));
}

#[tokio::test]
async fn closed_reads_need_a_role_token_and_show_only_its_sites() {
    let s = seeded(false).await;
    check(&s, CLOSED_OLD_READS).await;
    let sites = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|d| d["site"].as_str().expect("site").to_owned())
            .collect()
    };
    let (_, admin) = s.get(Who::Admin, "/dump_last?order=asc").await;
    assert_eq!(admin["count"], json!(3));
    let (_, user) = s.get(Who::User, "/dump_last").await;
    assert_eq!(sites(&user), ["eu.shop.example"]);
    assert_eq!(user["count"], json!(1));
    let (_, viewer) = s.get(Who::Readonly, "/dump_last?limit=5").await;
    assert_eq!(sites(&viewer), ["blog.example"]);
    let (_, paged) = s.get(Who::Readonly, "/dump_last?offset=1").await;
    assert_eq!(paged["count"], json!(0));

    // A push token pushes; it does not read.
    let mut request = s.client.get(format!("{}/dump_last", s.base));
    request = request.bearer_auth(PUSH);
    assert_eq!(answer(request.send().await.expect("request")).await.0, 401);
}

#[tokio::test]
async fn a_restricted_dump_pages_through_the_stores_pages() {
    let now = unix_ms();
    // 12,000 sites, three of the store's pages; the user's: one in a thousand.
    let probes = (0..12_000u64)
        .map(|i| ProbeRow {
            site: if i % 1000 == 0 {
                format!("s{i}.shop.example")
            } else {
                format!("s{i}.other.example")
            },
            status: 200,
            ts: now - i,
            agent: "agent-1".into(),
            ..ProbeRow::default()
        })
        .collect();
    let store = Arc::new(FakeStore::with(Rows {
        probes,
        ..Rows::default()
    }));
    let s = serve(store, config(false)).await;
    let sites = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|d| d["site"].as_str().expect("site").to_owned())
            .collect()
    };
    let (_, all) = s.get(Who::User, "/dump_last").await;
    assert_eq!(all["count"], json!(12));
    assert_eq!(sites(&all)[..2], ["s0.shop.example", "s1000.shop.example"]);
    let (_, page) = s.get(Who::User, "/dump_last?offset=10&limit=5").await;
    assert_eq!(
        (sites(&page), &page["offset"], &page["limit"]),
        (
            vec![
                "s10000.shop.example".to_owned(),
                "s11000.shop.example".into()
            ],
            &json!(10),
            &json!(5)
        )
    );
    let (_, oldest) = s.get(Who::User, "/dump_last?order=asc&limit=3").await;
    assert_eq!(
        sites(&oldest),
        [
            "s11000.shop.example",
            "s10000.shop.example",
            "s9000.shop.example"
        ]
    );
    let (_, admin) = s.get(Who::Admin, "/dump_last?limit=5000").await;
    assert_eq!(admin["count"], json!(5000));
}

#[tokio::test]
async fn a_site_not_the_tokens_is_answered_like_an_unknown_one() {
    for open_reads in [true, false] {
        let s = seeded(open_reads).await;
        for (hidden, unknown) in [
            (
                "/stats/site/secret.example",
                "/stats/site/secret.shop.example",
            ),
            (
                "/stats/services/secret.example",
                "/stats/services/secret.shop.example",
            ),
        ] {
            let (_, hidden_body) = s.get(Who::User, hidden).await;
            let (_, unknown_body) = s.get(Who::User, unknown).await;
            assert_eq!(
                hidden_body["error"]
                    .as_str()
                    .map(|e| e.replace("secret.example", "X")),
                unknown_body["error"]
                    .as_str()
                    .map(|e| e.replace("secret.shop.example", "X")),
            );
            assert_eq!(
                hidden_body,
                json!({"ok": false, "error": "site secret.example not found"})
            );
        }
    }
    let s = seeded(false).await;
    let (_, hidden) = s.get(Who::User, "/last?site=secret.example").await;
    let (_, unknown) = s.get(Who::Admin, "/last?site=nowhere.example").await;
    assert_eq!(
        hidden,
        json!({"ok": false, "error": "site secret.example not found"})
    );
    assert_eq!(
        unknown,
        json!({"ok": false, "error": "site nowhere.example not found"})
    );
}

#[tokio::test]
async fn only_push_tokens_write() {
    let s = seeded(true).await;
    assert_eq!(
        s.push(Some(PUSH)).await,
        (200, json!({"ok": true, "stored": 1}))
    );
    for who in [Who::Admin, Who::User, Who::Readonly] {
        let (status, body) = s.push(who.secret()).await;
        assert_eq!(status, 403, "{who:?}");
        assert_eq!(
            body["error"],
            json!("this token may not write: /push takes push tokens (api.push_tokens)")
        );
    }
    for who in [Who::NoToken, Who::BadToken] {
        assert_eq!(s.push(who.secret()).await.0, 401, "{who:?}");
    }
    // Push tokens do not read /stats either.
    let request = s
        .client
        .get(format!("{}/stats/system", s.base))
        .bearer_auth(PUSH);
    assert_eq!(answer(request.send().await.expect("request")).await.0, 401);
}

#[tokio::test]
async fn answers_show_fresh_rows_in_their_envelopes() {
    let s = seeded(true).await;
    let (_, server) = s.get(Who::Admin, "/stats/server").await;
    let nodes = server["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "the stale node is left out: {server}");
    assert_eq!(nodes[0]["node"], json!("node-1"));
    assert_eq!(nodes[0]["sample"]["cpu_busy_pct"], json!(12.5));
    assert_eq!(nodes[0]["filesystems"][0]["mountpoint"], json!("/"));
    assert_eq!(nodes[0]["pods"], json!([]));
    let (status, body) = s.get(Who::Admin, "/stats/server?node=node-gone").await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("node node-gone not found"))
    );

    let (_, history) = s
        .get(Who::Admin, "/stats/server/history?node=node-1&points=10")
        .await;
    assert_eq!(history["points"], json!(10));
    assert_eq!(history["data"].as_array().map(Vec::len), Some(1));

    let (_, site) = s.get(Who::User, "/stats/site/EU.shop.example").await;
    assert_eq!(site["site"], json!("eu.shop.example"));
    assert_eq!(
        site["disk"][0]["disk_bytes"],
        json!(4096),
        "20-minute-old walk: fresh"
    );
    assert_eq!(site["processes"][0]["processes"], json!(2));
    assert_eq!(
        site["services"][0]["unit"],
        json!("php-fpm@eu.shop.example")
    );

    let (_, sites) = s.get(Who::Admin, "/stats/sites").await;
    assert_eq!(sites["sites"].as_array().map(Vec::len), Some(3));
    let (_, services) = s.get(Who::Admin, "/stats/services").await;
    assert_eq!(services["services"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn system_shows_raw_node_data_to_admins_only() {
    let s = seeded(true).await;
    let (_, admin) = s.get(Who::Admin, "/stats/system").await;
    assert_eq!(admin["totals"]["nodes"], json!(1));
    assert_eq!(admin["totals"]["sites"], json!(3));
    assert_eq!(admin["nodes"][0]["node"], json!("node-1"));

    let (_, user) = s.get(Who::User, "/stats/system").await;
    assert_eq!(
        user,
        json!({"ok": true, "role": "user",
               "totals": {"sites": 1, "services": 1, "services_active": 1, "services_failed": 0},
               "sites": ["eu.shop.example"]})
    );
    let (_, viewer) = s.get(Who::Readonly, "/stats/system").await;
    assert_eq!(viewer["sites"], json!(["blog.example"]));
    assert!(viewer.get("nodes").is_none());
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let s = seeded(true).await;
    for (path, error) in [
        ("/stats/server/history", "node: missing"),
        (
            "/stats/server/history?node=node-1&points=500",
            "points: 500 is over the maximum 200",
        ),
        (
            "/stats/site/blog.example/history?hours=200",
            "hours: 200 is over the maximum 168",
        ),
        (
            "/stats/server?node=a%20b",
            "node: ' ' is not allowed (letters, digits, `.`, `-`, `_`)",
        ),
        (
            "/stats/site/a%20b",
            "site: ' ' is not allowed (letters, digits, `.`, `-`, `_`)",
        ),
    ] {
        let (status, body) = s.get(Who::Admin, path).await;
        assert_eq!((status, &body["error"]), (400, &json!(error)), "{path}");
    }
    // The role is checked before the parameters: nothing to learn from them.
    let (status, _) = s.get(Who::User, "/stats/server/history?points=500").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_failing_store_is_503() {
    let store = Arc::new(FakeStore {
        broken: true,
        ..FakeStore::default()
    });
    let s = serve(store, config(true)).await;
    for path in ["/stats/server", "/stats/system", "/stats/site/blog.example"] {
        let (status, body) = s.get(Who::Admin, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(error.starts_with("storage unavailable: "), "{error}");
    }
    // Refusals come before the store.
    assert_eq!(s.get(Who::User, "/stats/site/secret.example").await.0, 404);
    assert_eq!(s.get(Who::NoToken, "/stats/system").await.0, 401);
}
