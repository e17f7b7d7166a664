//! Receivers against local servers standing in for Slack, Discord,
//! PagerDuty and webhook consumers: exact payloads, retries, refusals.

// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use hmac::{Hmac, KeyInit, Mac};
use livehead_alerter::receivers::discord;
use livehead_alerter::{
    DeliveryMetrics, DeliveryReport, Dispatcher, Notification, Receiver, ReceiverError, Severity,
    Status,
};
use livehead_testkit::receiver::{FakeReceiver, Reply, reply};
use prometheus::{IntCounterVec, Registry};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

/// The local stand-in for each service: records every request, answers
/// its script in order, then 200.
type Fake = FakeReceiver;

/// Long enough for any retry schedule these tests set up.
const ARRIVES: Duration = Duration::from_secs(30);

fn receiver(toml: &str) -> Receiver {
    toml::from_str(toml).unwrap()
}

fn notification(status: Status) -> Notification {
    Notification {
        id: "site-down/critical/n1/shop.example/".to_owned(),
        rule: "site-down".to_owned(),
        severity: Severity::Critical,
        status,
        summary: "shop.example answers 503".to_owned(),
        description: None,
        node: Some("n1".to_owned()),
        site: Some("shop.example".to_owned()),
        service: None,
        since_ms: 1_700_000_000_000,
        ended_ms: (status == Status::Resolved).then_some(1_700_000_090_000),
        labels: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
        link: Some("https://livehead.example/alerts/42".to_owned()),
    }
}

struct Setup {
    dispatcher: Dispatcher,
    metrics: DeliveryMetrics,
    reports: mpsc::Receiver<DeliveryReport>,
}

fn start(receivers: Vec<Receiver>) -> Setup {
    let registry = Registry::new();
    let metrics = DeliveryMetrics::new(&registry).unwrap();
    let (tx, reports) = mpsc::channel(64);
    let dispatcher = Dispatcher::start(receivers, metrics.clone(), Some(tx)).unwrap();
    Setup {
        dispatcher,
        metrics,
        reports,
    }
}

/// Sends `notifications` to `name`, drains the queues, returns the reports.
/// The guard only turns a hang (a wait not honoured) into a failure.
async fn deliver(
    mut setup: Setup,
    name: &str,
    notifications: Vec<Notification>,
) -> (DeliveryMetrics, Vec<DeliveryReport>) {
    for n in notifications {
        setup.dispatcher.notify(name, n).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), setup.dispatcher.close())
        .await
        .expect("delivery finished");
    let mut reports = Vec::new();
    while let Ok(report) = setup.reports.try_recv() {
        reports.push(report);
    }
    (setup.metrics, reports)
}

fn count(counter: &IntCounterVec, receiver: &str) -> u64 {
    counter.with_label_values(&[receiver]).get()
}

// Retries that only finish in time if the server's wait is used: the
// computed backoff would be an hour.
const HOUR_BACKOFF: &str =
    r#"delivery = { initial_backoff = "1h", max_backoff = "2h", min_interval = "0s" }"#;
const FAST: &str = r#"delivery = { initial_backoff = "10ms", min_interval = "0s" }"#;

#[tokio::test]
async fn slack_payload_is_text_and_blocks() {
    let fake = Fake::scripted(vec![], None).await;
    let slack = receiver(&format!(
        "kind = \"slack\"\nname = \"ops\"\nurl = \"{}\"\n{FAST}",
        fake.url("/services/T0/B0/token")
    ));
    let (metrics, _) = deliver(
        start(vec![slack]),
        "ops",
        vec![notification(Status::Firing)],
    )
    .await;

    let requests = fake.received();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/services/T0/B0/token");
    assert_eq!(r.headers["content-type"], "application/json");
    let body = &r.json;
    assert_eq!(
        body["text"],
        "[FIRING] critical · site-down: shop.example answers 503 (node n1 · site shop.example)"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 4);
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "[FIRING] critical · site-down"}})
    );
    assert_eq!(
        blocks[1],
        json!({"type": "section", "text": {"type": "mrkdwn", "text": "shop.example answers 503"}})
    );
    assert_eq!(
        blocks[2],
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": "*Severity*\ncritical"},
            {"type": "mrkdwn", "text": "*Where*\nnode n1 · site shop.example"},
            {"type": "mrkdwn", "text": "*Since*\n2023-11-14T22:13:20.000Z"},
        ]})
    );
    assert_eq!(
        blocks[3],
        json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "<https://livehead.example/alerts/42|Open in livehead>"}
        ]})
    );
    assert_eq!(body.as_object().unwrap().len(), 2);
    assert_eq!(count(&metrics.sent, "ops"), 1);
}

#[test]
fn slack_escapes_control_characters() {
    let mut n = notification(Status::Resolved);
    n.summary = "<!channel> & <https://evil|x>".to_owned();
    let body = livehead_alerter::receivers::slack::message(&n);
    assert_eq!(
        body["blocks"][1]["text"]["text"],
        "&lt;!channel&gt; &amp; &lt;https://evil|x&gt;"
    );
    assert_eq!(
        body["blocks"][2]["fields"][2]["text"],
        "*Resolved*\n2023-11-14T22:14:50.000Z (since 2023-11-14T22:13:20.000Z)"
    );
}

#[tokio::test]
async fn slack_429_waits_for_retry_after() {
    let fake = Fake::scripted(
        vec![Reply {
            status: 429,
            headers: vec![("retry-after", "1")],
            body: "rate_limited",
        }],
        None,
    )
    .await;
    let slack = receiver(&format!(
        "kind = \"slack\"\nname = \"ops\"\nurl = \"{}\"\n{HOUR_BACKOFF}",
        fake.url("/hook")
    ));
    let (metrics, reports) = deliver(
        start(vec![slack]),
        "ops",
        vec![notification(Status::Firing)],
    )
    .await;

    let requests = fake.received();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].json, requests[1].json);
    assert_eq!(count(&metrics.retried, "ops"), 1);
    assert_eq!(count(&metrics.sent, "ops"), 1);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].attempts, 2);
    assert!(reports[0].result.is_ok());
    // Each attempt is reported, for the store's delivery records.
    let tries: Vec<(u16, bool)> = reports[0]
        .tries
        .iter()
        .map(|t| (t.http_status, t.error.is_some()))
        .collect();
    assert_eq!(tries, vec![(429, true), (200, false)]);
}

#[tokio::test]
async fn discord_payload_is_an_embed() {
    let fake = Fake::scripted(vec![reply(204)], None).await;
    let discord = receiver(&format!(
        "kind = \"discord\"\nname = \"alerts\"\nurl = \"{}\"\n{FAST}",
        fake.url("/api/webhooks/1/token")
    ));
    let (metrics, _) = deliver(
        start(vec![discord]),
        "alerts",
        vec![notification(Status::Firing)],
    )
    .await;

    let requests = fake.received();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/webhooks/1/token");
    assert_eq!(
        requests[0].json,
        json!({"embeds": [{
            "title": "[FIRING] critical · site-down",
            "description": "shop.example answers 503",
            "color": 0xE01E5A,
            "timestamp": "2023-11-14T22:13:20.000Z",
            "url": "https://livehead.example/alerts/42",
            "fields": [
                {"name": "Severity", "value": "critical", "inline": true},
                {"name": "Node", "value": "n1", "inline": true},
                {"name": "Site", "value": "shop.example", "inline": true},
                {"name": "team", "value": "web", "inline": true},
            ],
            "footer": {"text": "livehead · alert site-down/critical/n1/shop.example/"},
        }]})
    );
    assert_eq!(count(&metrics.sent, "alerts"), 1);
}

#[test]
fn discord_colour_follows_severity_and_resolution() {
    let mut n = notification(Status::Firing);
    let colours: Vec<u32> = [
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Info,
    ]
    .into_iter()
    .map(|s| {
        n.severity = s;
        discord::message(&n).embeds[0].color
    })
    .collect();
    assert_eq!(colours, [0xE01E5A, 0xE67E22, 0xF1C40F, 0x3498DB]);
    n.status = Status::Resolved;
    n.ended_ms = Some(1_700_000_090_000);
    let resolved = discord::message(&n);
    assert_eq!(resolved.embeds[0].color, 0x2ECC71);
    assert_eq!(
        resolved.embeds[0].fields[3].value,
        "2023-11-14T22:14:50.000Z"
    );
}

#[tokio::test]
async fn discord_429_waits_for_body_retry_after() {
    let fake = Fake::scripted(vec![Reply {
        status: 429,
        headers: vec![("content-type", "application/json")],
        body: r#"{"message": "You are being rate limited.", "retry_after": 0.25, "global": false}"#,
    }], None)
    .await;
    let discord = receiver(&format!(
        "kind = \"discord\"\nname = \"alerts\"\nurl = \"{}\"\n{HOUR_BACKOFF}",
        fake.url("/api/webhooks/1/token")
    ));
    let (metrics, reports) = deliver(
        start(vec![discord]),
        "alerts",
        vec![notification(Status::Firing)],
    )
    .await;

    assert_eq!(fake.received().len(), 2);
    assert_eq!(count(&metrics.retried, "alerts"), 1);
    assert_eq!(count(&metrics.sent, "alerts"), 1);
    assert!(reports[0].result.is_ok());
}

#[tokio::test]
async fn discord_404_is_gone_and_not_retried() {
    let fake = Fake::scripted(
        vec![Reply {
            status: 404,
            headers: vec![],
            body: r#"{"message": "Unknown Webhook", "code": 10015}"#,
        }],
        None,
    )
    .await;
    let discord = receiver(&format!(
        "kind = \"discord\"\nname = \"alerts\"\nurl = \"{}\"\n{FAST}",
        fake.url("/api/webhooks/1/secret-token")
    ));
    let (metrics, reports) = deliver(
        start(vec![discord]),
        "alerts",
        vec![notification(Status::Firing)],
    )
    .await;

    assert_eq!(fake.received().len(), 1);
    assert_eq!(count(&metrics.failed, "alerts"), 1);
    assert_eq!(count(&metrics.retried, "alerts"), 0);
    assert_eq!(reports[0].attempts, 1);
    assert_eq!(reports[0].tries.len(), 1);
    assert_eq!(reports[0].tries[0].http_status, 404);
    let err = reports[0].result.as_ref().unwrap_err();
    assert!(matches!(err, ReceiverError::Gone { receiver } if receiver == "alerts"));
    let text = err.to_string();
    assert!(
        text.contains("\"alerts\"") && text.contains("deleted"),
        "{text}"
    );
    assert!(!text.contains("secret-token"), "{text}");
}

fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

fn field(name: &str, value: &str) -> discord::Field {
    discord::Field {
        name: name.to_owned(),
        value: value.to_owned(),
        inline: false,
    }
}

fn embed(description: String) -> discord::Embed {
    discord::Embed {
        title: "t".to_owned(),
        description,
        ..Default::default()
    }
}

#[test]
fn discord_truncates_content_title_description() {
    let mut message = discord::Message {
        content: Some(long('c', 2500)),
        embeds: vec![discord::Embed {
            title: long('t', 300),
            description: long('d', 5000),
            ..Default::default()
        }],
    };
    discord::truncate_message(&mut message);
    let content = message.content.as_ref().unwrap();
    assert_eq!(content.chars().count(), 2000);
    assert!(content.ends_with('…'));
    assert_eq!(message.embeds[0].title.chars().count(), 256);
    assert!(message.embeds[0].title.ends_with('…'));
    // 4096 would pass 6000 with the title: only the per-field cut here.
    assert_eq!(message.embeds[0].description.chars().count(), 4096);
}

#[test]
fn discord_truncates_fields() {
    let mut e = embed(String::new());
    e.fields = (0..30).map(|i| field(&format!("f{i}"), "v")).collect();
    e.fields[0] = field(&long('n', 300), &long('v', 2000));
    let mut message = discord::Message {
        content: None,
        embeds: vec![e],
    };
    discord::truncate_message(&mut message);
    let fields = &message.embeds[0].fields;
    assert_eq!(fields.len(), 25);
    assert_eq!(fields[24].name, "f24");
    assert_eq!(fields[0].name.chars().count(), 256);
    assert_eq!(fields[0].value.chars().count(), 1024);
}

#[test]
fn discord_keeps_ten_embeds_and_6000_characters() {
    let mut message = discord::Message {
        content: None,
        embeds: (0..12).map(|_| embed(long('d', 1000))).collect(),
    };
    discord::truncate_message(&mut message);
    assert_eq!(message.embeds.len(), 10);
    assert_eq!(discord::total_chars(&message), 6000);
    // The last embeds' descriptions give way first; the first are intact.
    assert_eq!(message.embeds[0].description.chars().count(), 1000);
    assert!(message.embeds[9].description.is_empty());

    // No description left to cut: trailing fields go.
    let mut e = embed(String::new());
    e.fields = (0..25).map(|_| field("n", &long('v', 1000))).collect();
    let mut message = discord::Message {
        content: None,
        embeds: vec![e],
    };
    discord::truncate_message(&mut message);
    assert!(discord::total_chars(&message) <= 6000);
    assert_eq!(message.embeds[0].fields.len(), 5);
}

#[test]
fn discord_message_of_a_huge_notification_fits() {
    let mut n = notification(Status::Firing);
    n.summary = long('s', 10_000);
    n.labels = (0..40)
        .map(|i| (format!("label{i:02}"), long('v', 500)))
        .collect();
    let message = discord::message(&n);
    assert!(discord::total_chars(&message) <= discord::TOTAL_MAX);
    assert!(message.embeds[0].fields.len() <= discord::FIELDS_MAX);
    assert!(message.embeds[0].description.chars().count() <= discord::DESCRIPTION_MAX);
}

#[tokio::test]
async fn pagerduty_trigger_acknowledge_resolve_share_one_dedup_key() {
    let fake = Fake::scripted(vec![reply(202), reply(202), reply(202)], None).await;
    let pd = receiver(&format!(
        "kind = \"pagerduty\"\nname = \"oncall\"\nrouting_key = \"R0UT1NGKEY\"\nevents_url = \"{}\"\n{FAST}",
        fake.url("/v2/enqueue")
    ));
    let sequence = vec![
        notification(Status::Firing),
        notification(Status::Acknowledged),
        notification(Status::Resolved),
    ];
    let (metrics, _) = deliver(start(vec![pd]), "oncall", sequence).await;

    let requests = fake.received();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.path == "/v2/enqueue"));
    assert_eq!(
        requests[0].json,
        json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "dedup_key": "site-down/critical/n1/shop.example/",
            "payload": {
                "summary": "shop.example answers 503",
                "source": "shop.example",
                "severity": "critical",
                "timestamp": "2023-11-14T22:13:20.000Z",
                "class": "site-down",
                "group": "n1",
                "custom_details": {"rule": "site-down", "where": "node n1 · site shop.example", "team": "web"},
            },
            "links": [{"href": "https://livehead.example/alerts/42", "text": "Open in livehead"}],
            "client": "livehead",
            "client_url": "https://livehead.example/alerts/42",
        })
    );
    for (request, action) in requests[1..].iter().zip(["acknowledge", "resolve"]) {
        assert_eq!(request.json["event_action"], action);
        assert_eq!(
            request.json["dedup_key"],
            "site-down/critical/n1/shop.example/"
        );
        assert_eq!(request.json["routing_key"], "R0UT1NGKEY");
        assert!(request.json.get("payload").is_none());
    }
    assert_eq!(count(&metrics.sent, "oncall"), 3);
}

#[test]
fn pagerduty_summary_is_cut_at_1024() {
    let config = match receiver("kind = \"pagerduty\"\nname = \"p\"\nrouting_key = \"k\"") {
        Receiver::PagerDuty(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(config.events_url, "https://events.pagerduty.com/v2/enqueue");
    let mut n = notification(Status::Firing);
    n.summary = long('s', 3000);
    let event = livehead_alerter::receivers::pagerduty::event(&config, &n);
    let summary = event.payload.unwrap().summary;
    assert_eq!(summary.chars().count(), 1024);
}

#[tokio::test]
async fn pagerduty_400_is_not_retried() {
    let fake = Fake::scripted(
        vec![Reply {
            status: 400,
            headers: vec![],
            body: r#"{"status":"invalid event","message":"Event object is invalid"}"#,
        }],
        None,
    )
    .await;
    let pd = receiver(&format!(
        "kind = \"pagerduty\"\nname = \"oncall\"\nrouting_key = \"R0UT1NGKEY\"\nevents_url = \"{}\"\n{FAST}",
        fake.url("/v2/enqueue")
    ));
    let (metrics, reports) = deliver(
        start(vec![pd]),
        "oncall",
        vec![notification(Status::Firing)],
    )
    .await;

    assert_eq!(fake.received().len(), 1);
    assert_eq!(count(&metrics.failed, "oncall"), 1);
    assert_eq!(count(&metrics.retried, "oncall"), 0);
    let err = reports[0].result.as_ref().unwrap_err();
    assert!(
        matches!(err, ReceiverError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("invalid event"));
    assert!(!err.to_string().contains("R0UT1NGKEY"));
}

#[tokio::test]
async fn pagerduty_429_and_500_are_retried_until_accepted() {
    let fake = Fake::scripted(vec![reply(500), reply(429), reply(503), reply(202)], None).await;
    let pd = receiver(&format!(
        "kind = \"pagerduty\"\nname = \"oncall\"\nrouting_key = \"R0UT1NGKEY\"\nevents_url = \"{}\"\n{FAST}",
        fake.url("/v2/enqueue")
    ));
    let (metrics, reports) = deliver(
        start(vec![pd]),
        "oncall",
        vec![notification(Status::Firing)],
    )
    .await;

    let requests = fake.received();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.json == requests[0].json));
    assert_eq!(count(&metrics.retried, "oncall"), 3);
    assert_eq!(count(&metrics.sent, "oncall"), 1);
    assert_eq!(reports[0].attempts, 4);
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let fake = Fake::scripted(vec![reply(500), reply(500), reply(500), reply(202)], None).await;
    let pd = receiver(&format!(
        "kind = \"pagerduty\"\nname = \"oncall\"\nrouting_key = \"k\"\nevents_url = \"{}\"\n\
         delivery = {{ initial_backoff = \"1ms\", max_attempts = 3 }}",
        fake.url("/v2/enqueue")
    ));
    let (metrics, reports) = deliver(
        start(vec![pd]),
        "oncall",
        vec![notification(Status::Firing)],
    )
    .await;

    assert_eq!(fake.received().len(), 3);
    assert_eq!(count(&metrics.failed, "oncall"), 1);
    let err = reports[0].result.as_ref().unwrap_err();
    assert!(
        matches!(err, ReceiverError::GaveUp { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn webhook_body_is_alertmanager_v4_and_signed() {
    let fake = Fake::scripted(vec![], None).await;
    let hook = receiver(&format!(
        "kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nsecret = \"s3cret\"\n\
         external_url = \"https://livehead.example\"\n{FAST}",
        fake.url("/am")
    ));
    let (_, _) = deliver(
        start(vec![hook]),
        "hook",
        vec![notification(Status::Resolved)],
    )
    .await;

    let requests = fake.received();
    assert_eq!(requests.len(), 1);
    let labels = json!({
        "alertname": "site-down", "severity": "critical", "node": "n1",
        "site": "shop.example", "team": "web",
    });
    assert_eq!(
        requests[0].json,
        json!({
            "version": "4",
            "groupKey": "site-down/critical/n1/shop.example/",
            "truncatedAlerts": 0,
            "status": "resolved",
            "receiver": "hook",
            "groupLabels": {"alertname": "site-down"},
            "commonLabels": labels,
            "commonAnnotations": {"summary": "shop.example answers 503"},
            "externalURL": "https://livehead.example",
            "alerts": [{
                "status": "resolved",
                "labels": labels,
                "annotations": {"summary": "shop.example answers 503"},
                "startsAt": "2023-11-14T22:13:20.000Z",
                "endsAt": "2023-11-14T22:14:50.000Z",
                "generatorURL": "https://livehead.example/alerts/42",
                "fingerprint": "site-down/critical/n1/shop.example/",
            }],
        })
    );

    // The receiver's check: HMAC-SHA256 of the raw body under the secret.
    let signature = requests[0].headers["x-livehead-signature"]
        .to_str()
        .unwrap();
    let hex_mac = signature.strip_prefix("sha256=").unwrap();
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
    mac.update(&requests[0].raw);
    mac.verify_slice(&hex::decode(hex_mac).unwrap()).unwrap();
}

#[tokio::test]
async fn webhook_unsigned_firing_and_acknowledged() {
    let fake = Fake::scripted(vec![], None).await;
    let hook = receiver(&format!(
        "kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nsignature_header = \"X-Sig\"\n{FAST}",
        fake.url("/am")
    ));
    let sequence = vec![
        notification(Status::Firing),
        notification(Status::Acknowledged),
    ];
    let (_, _) = deliver(start(vec![hook]), "hook", sequence).await;

    let requests = fake.received();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].headers.get("x-sig").is_none());
    let firing = &requests[0].json["alerts"][0];
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["endsAt"], "0001-01-01T00:00:00Z");
    let acked = &requests[1].json["alerts"][0];
    assert_eq!(acked["status"], "firing");
    assert_eq!(acked["annotations"]["livehead_status"], "acknowledged");
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_another() {
    let hold = Arc::new(Semaphore::new(0));
    let slow = Fake::scripted(vec![], Some(hold.clone())).await;
    let fast = Fake::scripted(vec![], None).await;
    let setup = start(vec![
        receiver(&format!(
            "kind = \"slack\"\nname = \"slow\"\nurl = \"{}\"\n{FAST}",
            slow.url("/s")
        )),
        receiver(&format!(
            "kind = \"discord\"\nname = \"fast\"\nurl = \"{}\"\n{FAST}",
            fast.url("/f")
        )),
    ]);
    setup
        .dispatcher
        .notify("slow", notification(Status::Firing))
        .unwrap();
    slow.wait_for(1, ARRIVES).await;
    // `slow` holds its request open; `fast` gets both of its own.
    setup
        .dispatcher
        .notify("fast", notification(Status::Firing))
        .unwrap();
    setup
        .dispatcher
        .notify("fast", notification(Status::Resolved))
        .unwrap();
    fast.wait_for(2, ARRIVES).await;
    let fast_sent = async {
        while count(&setup.metrics.sent, "fast") < 2 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fast_sent)
        .await
        .unwrap();
    assert_eq!(count(&setup.metrics.sent, "slow"), 0);

    hold.add_permits(1);
    let (metrics, _) = deliver(setup, "slow", vec![]).await;
    assert_eq!(count(&metrics.sent, "slow"), 1);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let hold = Arc::new(Semaphore::new(0));
    let fake = Fake::scripted(vec![], Some(hold.clone())).await;
    let slack = receiver(&format!(
        "kind = \"slack\"\nname = \"ops\"\nurl = \"{}\"\n\
         delivery = {{ queue = 1, min_interval = \"0s\" }}",
        fake.url("/s")
    ));
    let setup = start(vec![slack]);
    setup
        .dispatcher
        .notify("ops", notification(Status::Firing))
        .unwrap();
    fake.wait_for(1, ARRIVES).await;
    // The first is in flight, the second fills the queue of one.
    setup
        .dispatcher
        .notify("ops", notification(Status::Acknowledged))
        .unwrap();
    let err = setup
        .dispatcher
        .notify("ops", notification(Status::Resolved))
        .unwrap_err();
    assert!(
        matches!(err, ReceiverError::QueueFull { capacity: 1, .. }),
        "{err}"
    );
    assert_eq!(count(&setup.metrics.dropped, "ops"), 1);

    hold.add_permits(2);
    let (metrics, _) = deliver(setup, "ops", vec![]).await;
    assert_eq!(count(&metrics.sent, "ops"), 2);
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_is_retried() {
    let hold = Arc::new(Semaphore::new(0));
    let fake = Fake::scripted(vec![], Some(hold.clone())).await;
    let hook = receiver(&format!(
        "kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n\
         delivery = {{ timeout = \"200ms\", initial_backoff = \"1ms\", max_attempts = 2 }}",
        fake.url("/am")
    ));
    let (metrics, reports) = deliver(
        start(vec![hook]),
        "hook",
        vec![notification(Status::Firing)],
    )
    .await;
    hold.add_permits(2);

    assert_eq!(fake.received().len(), 2);
    assert_eq!(count(&metrics.retried, "hook"), 1);
    let err = reports[0].result.as_ref().unwrap_err();
    assert!(
        matches!(err, ReceiverError::GaveUp { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn unknown_receiver_is_an_error() {
    let setup = start(vec![]);
    let err = setup
        .dispatcher
        .notify("nope", notification(Status::Firing))
        .unwrap_err();
    assert_eq!(err.to_string(), "no receiver named \"nope\"");
}

/// A log sink for one test: the subscriber is the thread's default, and
/// `#[tokio::test]` runs the receivers' tasks on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_url_is_in_no_error_and_no_log() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A port nobody listens on: every attempt fails to connect.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let secret = "T0SECRET/B0SECRET/XXXXTOKEN";
    let slack = receiver(&format!(
        "kind = \"slack\"\nname = \"ops\"\nurl = \"http://{addr}/services/{secret}\"\n\
         delivery = {{ initial_backoff = \"1ms\", max_attempts = 2, min_interval = \"0s\" }}"
    ));
    assert!(!format!("{slack:?}").contains("SECRET"));
    let (metrics, reports) = deliver(
        start(vec![slack]),
        "ops",
        vec![notification(Status::Firing)],
    )
    .await;

    assert_eq!(count(&metrics.failed, "ops"), 1);
    let err = reports[0].result.as_ref().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"ops\"") && text.contains("connection failed"),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!format!("{err:?}").contains("SECRET"));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("receiver=ops"), "{logs}");
    assert!(!logs.contains("SECRET"), "{logs}");
}

#[test]
fn config_defaults_and_errors() {
    let Receiver::Slack(slack) =
        receiver("kind = \"slack\"\nname = \"s\"\nurl = \"https://hooks.slack.com/x\"")
    else {
        panic!("not slack");
    };
    assert_eq!(slack.delivery.queue, 1024);
    assert_eq!(slack.delivery.timeout, Duration::from_secs(10));
    assert_eq!(slack.delivery.max_attempts, 6);
    assert_eq!(
        Receiver::Slack(slack).min_interval(),
        Duration::from_secs(1)
    );
    let discord = receiver(
        "kind = \"discord\"\nname = \"d\"\nurl = \"https://discord.com/api/webhooks/1/x\"",
    );
    assert_eq!(discord.min_interval(), Duration::ZERO);
    discord.validate().unwrap();

    let unknown = toml::from_str::<Receiver>(
        "kind = \"slack\"\nname = \"s\"\nurl = \"https://x\"\nchannel = \"#a\"",
    );
    assert!(unknown.unwrap_err().to_string().contains("channel"));
    let kind = toml::from_str::<Receiver>("kind = \"teams\"\nname = \"s\"\nurl = \"https://x\"");
    assert!(kind.unwrap_err().to_string().contains("teams"));

    let bad = receiver("kind = \"webhook\"\nname = \"w\"\nurl = \"ftp://secret-host/x\"");
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("\"w\"") && err.contains("url") && !err.contains("secret-host"),
        "{err}"
    );
    let bad = receiver(
        "kind = \"webhook\"\nname = \"w\"\nurl = \"https://x\"\nsignature_header = \"bad header\"",
    );
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("signature_header")
    );
    let bad =
        receiver("kind = \"slack\"\nname = \"s\"\nurl = \"https://x\"\ndelivery = { queue = 0 }");
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("delivery.queue")
    );

    let registry = Registry::new();
    let metrics = DeliveryMetrics::new(&registry).unwrap();
    let twice = vec![discord.clone(), discord];
    let err = Dispatcher::start(twice, metrics, None).err().unwrap();
    assert!(err.to_string().contains("two receivers"), "{err}");
}
