//! The HTTP API on a real server on a free loopback port.

// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use livehead_alerter::access::{Access, RoleToken};
use livehead_alerter::api::{Shared, router};
use livehead_alerter::{AlertChange, AlertKey, Condition, Lifecycle, RulesFile, Severity};
use prometheus::Registry;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RULES: &str = r#"
[[receivers]]
kind = "discord"
name = "discord-warn"
url = "https://discord.example/warn"

[route]
receiver = "discord-warn"
group_by = ["..."]
"#;

fn token(name: &str, role: &str, sites: &[&str]) -> RoleToken {
    RoleToken {
        name: name.to_owned(),
        sha256: hex::encode(Sha256::digest(format!("secret-{name}").as_bytes())),
        role: role.to_owned(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn key(node: &str, site: Option<&str>) -> AlertKey {
    AlertKey {
        rule: if site.is_some() {
            "SiteDown"
        } else {
            "NodeDown"
        }
        .to_owned(),
        severity: if site.is_some() {
            Severity::Warning
        } else {
            Severity::Critical
        },
        node: Some(node.to_owned()),
        site: site.map(str::to_owned),
        service: None,
    }
}

/// Handlers read this clock: a fixed time keeps answers exact.
fn clock() -> u64 {
    1_000_000
}

struct Server {
    base: String,
    shared: Arc<Shared>,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Self {
        let file = RulesFile::parse(RULES).unwrap();
        let mut lifecycle = Lifecycle::new(&file, None, 0).unwrap();
        let changes: Vec<AlertChange> = [
            key("n1", Some("a.shop.example")),
            key("n1", Some("b.other.example")),
            key("n1", None),
        ]
        .into_iter()
        .map(|key| AlertChange {
            summary: format!("{} down", key.rule),
            key,
            condition: Condition::Firing,
            at_ms: 500_000,
            description: None,
            labels: BTreeMap::new(),
            notice: false,
        })
        .collect();
        lifecycle.apply(&changes, 500_000);
        let access = Access::new(&[
            token("root", "admin", &[]),
            token("shop", "user", &["*.shop.example"]),
            token("viewer", "readonly", &["*.shop.example"]),
        ])
        .unwrap();
        let shared = Shared::with_clock(lifecycle, access, Registry::new(), clock).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            base,
            shared,
            client: livehead_testkit::http_client(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            request = request.bearer_auth(format!("secret-{who}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn sites(&self, path: &str, who: &str) -> Vec<Value> {
        let (status, body) = self.call("GET", path, Some(who), None).await;
        assert_eq!(status, 200, "{body}");
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["site"].clone())
            .collect()
    }
}

#[tokio::test]
async fn alerts_are_listed_by_role_and_filtered() {
    let s = Server::start().await;
    assert_eq!(s.sites("/alerts", "root").await.len(), 3);
    // A user sees its sites only; node alerts are the admin's.
    assert_eq!(
        s.sites("/alerts", "shop").await,
        vec![json!("a.shop.example")]
    );
    assert_eq!(
        s.sites("/alerts?severity=critical", "root").await,
        vec![Value::Null]
    );
    assert_eq!(
        s.sites("/alerts?site=B.other.example", "root").await,
        vec![json!("b.other.example")]
    );
    assert_eq!(s.sites("/alerts?node=n2", "root").await.len(), 0);
    assert_eq!(
        s.sites("/alerts?state=firing&node=n1", "root").await.len(),
        3
    );
    let (status, body) = s
        .call("GET", "/alerts?state=burning", Some("root"), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            400,
            "state: \"burning\" is not pending, firing, acknowledged or resolved"
        )
    );
    let (status, body) = s
        .call("GET", "/alerts?colour=red", Some("root"), None)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"colour\""),
        "{body}"
    );
    let (status, body) = s.call("GET", "/alerts", None, None).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"ok": false, "error": "missing or wrong bearer token"})
        )
    );
    let (status, body) = s.call("GET", "/alerts", Some("stranger"), None).await;
    assert_eq!((status, body["ok"].clone()), (401, json!(false)));
}

#[tokio::test]
async fn acknowledge_and_resolve_follow_roles() {
    let s = Server::start().await;
    let shop = key("n1", Some("a.shop.example")).id();
    let other = key("n1", Some("b.other.example")).id();
    assert_eq!(s.shared.with(|l| l.due(600_000)).len(), 3);
    // Another's site is answered as if it did not exist.
    let (status, hidden) = s
        .call("POST", &format!("/alerts/{other}/ack"), Some("shop"), None)
        .await;
    let (_, missing) = s
        .call("POST", "/alerts/0000000000000000/ack", Some("shop"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        hidden["error"].as_str().unwrap().replace(&other, "ID"),
        missing["error"]
            .as_str()
            .unwrap()
            .replace("0000000000000000", "ID")
    );
    let (status, _) = s
        .call("POST", &format!("/alerts/{shop}/ack"), Some("viewer"), None)
        .await;
    assert_eq!(status, 403);
    let (status, body) = s
        .call("POST", &format!("/alerts/{shop}/ack"), Some("shop"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alert"]["state"], "acknowledged");
    assert_eq!(body["alert"]["acknowledged_by"], "shop");
    // Resolving is the admin's.
    let (status, _) = s
        .call(
            "POST",
            &format!("/alerts/{shop}/resolve"),
            Some("shop"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = s
        .call(
            "POST",
            &format!("/alerts/{shop}/resolve"),
            Some("root"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["alert"]["resolved_by"].clone()),
        (200, json!("root"))
    );
    let (status, body) = s
        .call(
            "POST",
            &format!("/alerts/{shop}/resolve"),
            Some("root"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = s
        .call("POST", &format!("/alerts/{shop}/ack"), Some("root"), None)
        .await;
    assert_eq!(status, 409);
    let (status, _) = s
        .call("POST", "/alerts/nope/resolve", Some("root"), None)
        .await;
    assert_eq!(status, 404);
    // The lifecycle has the resolve to send now (the acknowledgement it
    // overtook is not sent any more).
    let due = s.shared.with(|l| l.due(clock()));
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].1.status, livehead_alerter::Status::Resolved);
}

#[tokio::test]
async fn silences_are_created_listed_and_expired() {
    let s = Server::start().await;
    let new = json!({"matchers": ["site=a.shop.example"], "duration": "2h", "comment": "deploy"});
    let (status, _) = s
        .call("POST", "/silences", Some("viewer"), Some(new.clone()))
        .await;
    assert_eq!(status, 403);
    let foreign = json!({"matchers": ["site=b.other.example"], "duration": "2h", "comment": "x"});
    let (status, _) = s
        .call("POST", "/silences", Some("shop"), Some(foreign))
        .await;
    assert_eq!(status, 403);
    let (status, body) = s.call("POST", "/silences", Some("shop"), Some(new)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["silence"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["silence"]["ends_at_ms"], clock() + 2 * 3_600_000);
    assert_eq!(body["silence"]["created_by"], "shop");
    let alerts = s
        .call("GET", "/alerts?site=a.shop.example", Some("shop"), None)
        .await
        .1;
    assert_eq!(alerts["alerts"][0]["silenced"], true);
    let (status, body) = s
        .call(
            "POST",
            "/silences",
            Some("root"),
            Some(json!({"matchers": ["node=~("], "duration": "1h", "comment": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("bad regex"),
        "{body}"
    );
    let (status, body) = s
        .call(
            "POST",
            "/silences",
            Some("root"),
            Some(json!({"matchers": ["node=n1"], "comment": "x", "until": 1})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("until"), "{body}");
    let (_, list) = s.call("GET", "/silences", Some("viewer"), None).await;
    assert_eq!(list["silences"][0]["state"], "active");
    assert_eq!(
        list["silences"][0]["matchers"],
        json!(["site=a.shop.example"])
    );
    let (status, _) = s
        .call(
            "POST",
            &format!("/silences/{id}/expire"),
            Some("viewer"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call("DELETE", &format!("/silences/{id}"), Some("shop"), None)
        .await;
    assert_eq!(status, 200);
    let (_, list) = s.call("GET", "/silences", Some("root"), None).await;
    assert_eq!(list["silences"][0]["state"], "expired");
    let (status, _) = s
        .call("POST", "/silences/nope/expire", Some("root"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let s = Server::start().await;
    assert_eq!(
        s.call("GET", "/health", None, None).await,
        (200, json!({"ok": true}))
    );
    let (status, body) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap().to_owned();
    assert!(text.contains("alerts{state=\"firing\"} 3"), "{text}");
    assert!(text.contains("alerts{state=\"acknowledged\"} 0"), "{text}");
    let (status, body) = s.call("GET", "/nope", None, None).await;
    assert_eq!((status, body["ok"].clone()), (404, json!(false)));
    let (status, body) = s.call("DELETE", "/alerts", Some("root"), None).await;
    assert_eq!((status, body["ok"].clone()), (405, json!(false)));
}

/// The dashboard forwards with an admin token and names its user; a
/// non-admin token cannot name anyone.
#[tokio::test]
async fn an_admin_token_may_name_the_actor() {
    let s = Server::start().await;
    let shop = key("n1", Some("a.shop.example")).id();
    let send = |who: &str, path: String| {
        s.client
            .post(format!("{}{path}", s.base))
            .bearer_auth(format!("secret-{who}"))
            .header("x-livehead-actor", "dashboard-user")
            .send()
    };
    let response = send("shop", format!("/alerts/{shop}/ack")).await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["alert"]["acknowledged_by"], "shop", "{body}");
    let response = send("root", format!("/alerts/{shop}/resolve"))
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["alert"]["resolved_by"], "dashboard-user", "{body}");
}
