//! PagerDuty Events API v2: `POST {events_url}` with `routing_key`,
//! `event_action` (`trigger`, `acknowledge`, `resolve`) and the alert's id
//! as `dedup_key`, so the three land on one incident. A trigger carries the
//! `payload` (summary ≤ 1024 characters, source, severity, timestamp,
//! custom details); acknowledge and resolve need only the key.
//!
//! PagerDuty answers 202; 400 is an invalid event (never retried), 429 and
//! 5xx are retried with backoff.

use serde::{Deserialize, Serialize};

use super::{DeliveryPolicy, Notification, Secret, Status, iso8601, truncate};

/// Where events go unless configured otherwise.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty's limit on `payload.summary`.
pub const SUMMARY_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Name used by routes, logs and metrics. Required.
    pub name: String,
    /// The integration's routing key (32 characters). Required; secret:
    /// never logged.
    pub routing_key: Secret,
    /// Events endpoint. Default `https://events.pagerduty.com/v2/enqueue`
    /// (tests and EU accounts point it elsewhere).
    #[serde(default = "default_events_url")]
    pub events_url: String,
    /// Queue, retries and pacing.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

fn default_events_url() -> String {
    EVENTS_URL.to_owned()
}

#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub routing_key: &'a str,
    pub event_action: &'static str,
    pub dedup_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    pub client: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Payload {
    pub summary: String,
    pub source: String,
    pub severity: &'static str,
    pub timestamp: String,
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub custom_details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub href: String,
    pub text: &'static str,
}

/// The event for `n`.
pub fn event<'a>(config: &'a PagerDutyConfig, n: &'a Notification) -> Event<'a> {
    let event_action = match n.status {
        Status::Firing => "trigger",
        Status::Acknowledged => "acknowledge",
        Status::Resolved => "resolve",
    };
    let payload = (n.status == Status::Firing).then(|| payload(n));
    Event {
        routing_key: config.routing_key.expose(),
        event_action,
        dedup_key: &n.id,
        payload,
        links: n
            .link
            .iter()
            .map(|href| Link {
                href: href.clone(),
                text: "Open in livehead",
            })
            .collect(),
        client: "livehead",
        client_url: n.link.clone(),
    }
}

fn payload(n: &Notification) -> Payload {
    let mut details = serde_json::Map::new();
    details.insert("rule".to_owned(), n.rule.clone().into());
    details.insert("where".to_owned(), n.place().into());
    if let Some(description) = &n.description {
        details.insert("description".to_owned(), description.clone().into());
    }
    for (key, value) in &n.labels {
        details.insert(key.clone(), value.clone().into());
    }
    Payload {
        summary: truncate(&n.summary, SUMMARY_MAX),
        // The most specific place the alert is about: what PagerDuty shows
        // as "where".
        source: n
            .site
            .clone()
            .or_else(|| n.node.clone())
            .unwrap_or_else(|| "livehead".to_owned()),
        severity: n.severity.as_str(),
        timestamp: iso8601(n.since_ms),
        class: n.rule.clone(),
        component: n.service.clone(),
        group: n.node.clone(),
        custom_details: details,
    }
}
