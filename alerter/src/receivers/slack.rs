//! Slack incoming webhooks: `POST {url}` with `text` (the notification's
//! fallback, shown in push notifications) and `blocks` (the message: a
//! header with status, severity and rule, the summary, then severity, where
//! and since when as fields, and a link back).
//!
//! Slack allows about one message per second per webhook and answers 429
//! with `Retry-After` beyond it: [`MIN_INTERVAL`] paces us, and the common
//! verdict honours the header.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{DeliveryPolicy, Notification, Secret, Status, iso8601, truncate};

/// Default pacing of one webhook.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

// Block Kit limits: a header's text, a section's text, a field's text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Name used by routes, logs and metrics. Required.
    pub name: String,
    /// The incoming webhook URL (`https://hooks.slack.com/services/…`).
    /// Required; secret: never logged.
    pub url: Secret,
    /// Queue, retries and pacing (`min_interval` defaults to 1 s here).
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

/// The JSON body for `n`.
pub fn message(n: &Notification) -> Value {
    let headline = format!(
        "[{}] {} · {}",
        n.status.as_str().to_uppercase(),
        n.severity.as_str(),
        n.rule
    );
    let since = since_text(n);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&headline, HEADER_MAX)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&summary_text(n)), SECTION_MAX)}}),
        json!({"type": "section", "fields": [
            field("Severity", n.severity.as_str()),
            field("Where", &n.place()),
            field(since.0, &since.1),
        ]}),
    ];
    if let Some(link) = &n.link {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("<{}|Open in livehead>", escape(link))}
        ]}));
    }
    json!({
        // The fallback text is mrkdwn too: escaped like the blocks.
        "text": escape(&format!("{headline}: {} ({})", n.summary, n.place())),
        "blocks": blocks,
    })
}

fn summary_text(n: &Notification) -> String {
    match &n.description {
        Some(description) => format!("{}\n{}", n.summary, description),
        None => n.summary.clone(),
    }
}

/// "Since" while firing, "Resolved" with the end time once resolved.
fn since_text(n: &Notification) -> (&'static str, String) {
    match (n.status, n.ended_ms) {
        (Status::Resolved, Some(end)) => (
            "Resolved",
            format!("{} (since {})", iso8601(end), iso8601(n.since_ms)),
        ),
        _ => ("Since", iso8601(n.since_ms)),
    }
}

fn field(title: &str, value: &str) -> Value {
    let text = format!("*{title}*\n{}", escape(value));
    json!({"type": "mrkdwn", "text": truncate(&text, FIELD_MAX)})
}

/// Slack's mrkdwn reads `<`, `>` and `&` as control characters (links,
/// mentions): a site's text must not turn into an `@channel`.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
