//! Receivers: where notifications go, and in which wire format.
//!
//! A [`Notification`] is receiver-neutral; each receiver module turns it into
//! its service's JSON (pure functions, testable without a socket) and tells
//! how to read the answer ([`Verdict`]). [`delivery`] owns the I/O: queues,
//! retries, pacing and counters.

pub mod delivery;
pub mod discord;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// How bad an alert is; PagerDuty's four levels, which the others map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Where an alert is in its lifecycle when the notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Acknowledged,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert's state change, as every receiver needs it. Serde, so that
/// the alerter's outbox survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable per alert (its dedup key): PagerDuty's `dedup_key`, the
    /// webhook's `fingerprint`, so every transition of one incident lands on
    /// the same incident at the receiver.
    pub id: String,
    /// Name of the rule that fired.
    pub rule: String,
    pub severity: Severity,
    pub status: Status,
    /// One line saying what is wrong ("shop.example answers 503").
    pub summary: String,
    /// Longer text, e.g. the sites a node alert covers.
    pub description: Option<String>,
    pub node: Option<String>,
    pub site: Option<String>,
    pub service: Option<String>,
    /// When the alert started firing (unix ms).
    pub since_ms: u64,
    /// When it resolved (unix ms); `None` while it is not resolved.
    pub ended_ms: Option<u64>,
    /// Extra labels of the rule or the series.
    pub labels: BTreeMap<String, String>,
    /// Link back to the alert in livehead.
    pub link: Option<String>,
}

impl Notification {
    /// "node n1 · site shop.example · service nginx", or "fleet" when the
    /// alert is about no particular place.
    pub fn place(&self) -> String {
        let parts: Vec<String> = [
            ("node", &self.node),
            ("site", &self.site),
            ("service", &self.service),
        ]
        .into_iter()
        .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
        .collect();
        if parts.is_empty() {
            "fleet".to_owned()
        } else {
            parts.join(" · ")
        }
    }

    /// What identifies the alert for label-based receivers: the rule's
    /// labels plus `alertname`, `severity`, `node`, `site`, `service`.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".to_owned(), self.rule.clone());
        labels.insert("severity".to_owned(), self.severity.as_str().to_owned());
        for (key, value) in [
            ("node", &self.node),
            ("site", &self.site),
            ("service", &self.service),
        ] {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value.clone());
            }
        }
        labels
    }
}

/// RFC 3339 / ISO 8601 UTC time with milliseconds, as Discord, PagerDuty and
/// Alertmanager's format all accept.
pub fn iso8601(unix_ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Cuts `text` to at most `max` characters, ending with "…" when cut so a
/// reader sees that something is missing.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// A value that must not be shown: webhook URLs of Slack and Discord carry
/// their token in the path, PagerDuty's routing key is a credential. Its
/// `Debug` and `Display` are redacted, so neither logs nor errors leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a receiver's queue is drained; every receiver has its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Notifications waiting for this receiver; when full, new ones are
    /// dropped (counted in `notifications_dropped_total` and logged) so the
    /// caller never waits. Default 1024.
    pub queue: usize,
    /// Timeout of one HTTP request, connection included. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per notification, the first included, for transient
    /// failures (network errors, timeouts, 408, 429, 5xx). Default 6.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled at each retry, with jitter
    /// (a random wait between half and all of it). Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between two attempts, whether computed or asked by the
    /// server (`Retry-After`, Discord's `retry_after`). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Shortest time between two requests to this receiver. Default: 1 s for
    /// Slack (its limit is about one message per second per webhook), 0 for
    /// the others (they answer 429 and we honour it).
    #[serde(with = "humantime_serde::option")]
    pub min_interval: Option<Duration>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            queue: 1024,
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            min_interval: None,
        }
    }
}

/// One configured receiver, tagged by `kind`:
///
/// ```toml
/// [[receivers]]
/// kind = "slack"
/// name = "ops-slack"
/// url = "https://hooks.slack.com/services/T000/B000/XXXX"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Receiver {
    Slack(slack::SlackConfig),
    Discord(discord::DiscordConfig),
    PagerDuty(pagerduty::PagerDutyConfig),
    Webhook(webhook::WebhookConfig),
}

impl Receiver {
    /// The name routes and logs use; never the URL.
    pub fn name(&self) -> &str {
        match self {
            Receiver::Slack(c) => &c.name,
            Receiver::Discord(c) => &c.name,
            Receiver::PagerDuty(c) => &c.name,
            Receiver::Webhook(c) => &c.name,
        }
    }

    pub fn delivery(&self) -> &DeliveryPolicy {
        match self {
            Receiver::Slack(c) => &c.delivery,
            Receiver::Discord(c) => &c.delivery,
            Receiver::PagerDuty(c) => &c.delivery,
            Receiver::Webhook(c) => &c.delivery,
        }
    }

    /// The pacing between two requests, the receiver's default filled in.
    pub fn min_interval(&self) -> Duration {
        let default = match self {
            Receiver::Slack(_) => slack::MIN_INTERVAL,
            _ => Duration::ZERO,
        };
        self.delivery().min_interval.unwrap_or(default)
    }

    /// Where requests go. Secret for Slack, Discord and webhooks (the token
    /// is in the URL); PagerDuty's events URL is public, its key is not.
    pub(crate) fn url(&self) -> &str {
        match self {
            Receiver::Slack(c) => c.url.expose(),
            Receiver::Discord(c) => c.url.expose(),
            Receiver::PagerDuty(c) => &c.events_url,
            Receiver::Webhook(c) => c.url.expose(),
        }
    }

    /// Checks what serde cannot: names and URLs usable, limits non-zero.
    pub fn validate(&self) -> Result<(), ReceiverError> {
        let invalid = |reason: &str| {
            Err(ReceiverError::Config {
                receiver: self.name().to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.name().trim().is_empty() {
            return invalid("`name` is empty");
        }
        let url = self.url();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return invalid("`url` must start with https:// or http://");
        }
        if reqwest::Url::parse(url).is_err() {
            return invalid("`url` is not a valid URL");
        }
        let policy = self.delivery();
        if policy.queue == 0 {
            return invalid("`delivery.queue` must be at least 1");
        }
        if policy.max_attempts == 0 {
            return invalid("`delivery.max_attempts` must be at least 1");
        }
        if let Receiver::Webhook(c) = self {
            if reqwest::header::HeaderName::try_from(c.signature_header.as_str()).is_err() {
                return invalid("`signature_header` is not a valid HTTP header name");
            }
        }
        if let Receiver::PagerDuty(c) = self {
            if c.routing_key.expose().trim().is_empty() {
                return invalid("`routing_key` is empty");
            }
        }
        Ok(())
    }

    /// The request body and the headers it needs besides `Content-Type`.
    pub(crate) fn encode(&self, n: &Notification) -> Result<Outgoing, ReceiverError> {
        let encoded = match self {
            Receiver::Slack(_) => serde_json::to_vec(&slack::message(n)).map(Outgoing::json),
            Receiver::Discord(_) => serde_json::to_vec(&discord::message(n)).map(Outgoing::json),
            Receiver::PagerDuty(c) => {
                serde_json::to_vec(&pagerduty::event(c, n)).map(Outgoing::json)
            }
            Receiver::Webhook(c) => webhook::request(c, n),
        };
        encoded.map_err(|err| ReceiverError::Encode {
            receiver: self.name().to_owned(),
            reason: err.to_string(),
        })
    }

    /// What the answer means: each service has its own way of saying "wait".
    pub(crate) fn verdict(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> Verdict {
        match self {
            Receiver::Discord(_) => discord::verdict(status, headers, body),
            _ => Verdict::from_http(status, headers),
        }
    }
}

/// A request body ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    fn json(body: Vec<u8>) -> Self {
        Outgoing {
            body,
            headers: Vec::new(),
        }
    }
}

/// What an answer means for delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Delivered,
    /// Transient: try again, after the server's wait when it gave one.
    Retry(Option<Duration>),
    /// The request itself is wrong: retrying would fail the same way.
    Rejected,
    /// The webhook was deleted (Discord 404): nothing will ever succeed.
    Gone,
}

impl Verdict {
    /// The common reading: 2xx delivered; 408, 429 and 5xx transient, with
    /// `Retry-After` honoured when it is in seconds (the HTTP-date form is
    /// rare from webhooks and falls back to our backoff); the rest rejected.
    pub(crate) fn from_http(status: u16, headers: &HeaderMap) -> Verdict {
        match status {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500..=599 => Verdict::Retry(retry_after_header(headers)),
            _ => Verdict::Rejected,
        }
    }
}

fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Why a notification was not delivered. Only the receiver's configured
/// name appears, never its URL or key.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver {receiver:?}: invalid configuration: {reason}")]
    Config { receiver: String, reason: String },
    #[error("no receiver named {receiver:?}")]
    Unknown { receiver: String },
    #[error("receiver {receiver:?}: queue full ({capacity} waiting), notification {id:?} dropped")]
    QueueFull {
        receiver: String,
        capacity: usize,
        id: String,
    },
    #[error("receiver {receiver:?}: delivery stopped, notification {id:?} dropped")]
    Closed { receiver: String, id: String },
    #[error("receiver {receiver:?}: could not encode the notification: {reason}")]
    Encode { receiver: String, reason: String },
    #[error(
        "receiver {receiver:?}: the webhook was deleted (HTTP 404); \
         nothing will be delivered until its URL is replaced"
    )]
    Gone { receiver: String },
    #[error("receiver {receiver:?}: rejected with HTTP {status}: {body}")]
    Rejected {
        receiver: String,
        status: u16,
        body: String,
    },
    #[error("receiver {receiver:?}: gave up after {attempts} attempts, last: {last}")]
    GaveUp {
        receiver: String,
        attempts: u32,
        last: String,
    },
}

/// The current time in unix ms, for callers building notifications.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
