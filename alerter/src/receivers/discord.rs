//! Discord webhooks: `POST {url}` with `embeds`, one per notification:
//! title (status, severity, rule), description (the summary), colour by
//! severity (green once resolved), ISO 8601 `timestamp` (when it started),
//! fields for where, and a link back.
//!
//! Discord rejects a message above its limits instead of cutting it, so
//! [`truncate_message`] enforces them all before sending. A 429 carries the
//! wait in the JSON body's `retry_after` (seconds, a float); a 404 means the
//! webhook was deleted, which no retry will fix.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{DeliveryPolicy, Notification, Secret, Severity, Status, Verdict, iso8601, truncate};

/// Discord's documented limits on one webhook message.
pub const CONTENT_MAX: usize = 2000;
pub const EMBEDS_MAX: usize = 10;
pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4096;
pub const FIELDS_MAX: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;
/// Title, description, field names and values and footers of all embeds.
pub const TOTAL_MAX: usize = 6000;

/// Embed colours (RGB as Discord's integer).
pub const COLOUR_CRITICAL: u32 = 0xE0_1E_5A;
pub const COLOUR_ERROR: u32 = 0xE6_7E_22;
pub const COLOUR_WARNING: u32 = 0xF1_C4_0F;
pub const COLOUR_INFO: u32 = 0x34_98_DB;
pub const COLOUR_RESOLVED: u32 = 0x2E_CC_71;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Name used by routes, logs and metrics. Required.
    pub name: String,
    /// The webhook URL (`https://discord.com/api/webhooks/…`). Required;
    /// secret: never logged.
    pub url: Secret,
    /// Queue, retries and pacing.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub embeds: Vec<Embed>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Embed {
    pub title: String,
    pub description: String,
    pub color: u32,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub fields: Vec<Field>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub footer: Option<Footer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footer {
    pub text: String,
}

/// The message for `n`, within Discord's limits.
pub fn message(n: &Notification) -> Message {
    let mut fields = vec![Field {
        name: "Severity".to_owned(),
        value: n.severity.as_str().to_owned(),
        inline: true,
    }];
    for (name, value) in [
        ("Node", &n.node),
        ("Site", &n.site),
        ("Service", &n.service),
    ] {
        if let Some(value) = value {
            fields.push(inline(name, value));
        }
    }
    if let (Status::Resolved, Some(end)) = (n.status, n.ended_ms) {
        fields.push(inline("Resolved", &iso8601(end)));
    }
    fields.extend(n.labels.iter().map(|(k, v)| inline(k, v)));
    let description = match &n.description {
        Some(d) => format!("{}\n{}", n.summary, d),
        None => n.summary.clone(),
    };
    let mut message = Message {
        content: None,
        embeds: vec![Embed {
            title: format!(
                "[{}] {} · {}",
                n.status.as_str().to_uppercase(),
                n.severity.as_str(),
                n.rule
            ),
            description,
            color: colour(n.severity, n.status),
            timestamp: iso8601(n.since_ms),
            url: n.link.clone(),
            fields,
            footer: Some(Footer {
                text: format!("livehead · alert {}", n.id),
            }),
        }],
    };
    truncate_message(&mut message);
    message
}

fn inline(name: &str, value: &str) -> Field {
    Field {
        name: name.to_owned(),
        value: value.to_owned(),
        inline: true,
    }
}

pub fn colour(severity: Severity, status: Status) -> u32 {
    if status == Status::Resolved {
        return COLOUR_RESOLVED;
    }
    match severity {
        Severity::Critical => COLOUR_CRITICAL,
        Severity::Error => COLOUR_ERROR,
        Severity::Warning => COLOUR_WARNING,
        Severity::Info => COLOUR_INFO,
    }
}

/// Cuts `message` to every Discord limit. The per-item limits apply first;
/// then, past 6000 characters in all, descriptions shrink (the longest
/// text, least needed for triage), then trailing fields go.
pub fn truncate_message(message: &mut Message) {
    if let Some(content) = &mut message.content {
        *content = truncate(content, CONTENT_MAX);
    }
    message.embeds.truncate(EMBEDS_MAX);
    for embed in &mut message.embeds {
        embed.title = truncate(&embed.title, TITLE_MAX);
        embed.description = truncate(&embed.description, DESCRIPTION_MAX);
        embed.fields.truncate(FIELDS_MAX);
        for field in &mut embed.fields {
            field.name = truncate(&field.name, FIELD_NAME_MAX);
            field.value = truncate(&field.value, FIELD_VALUE_MAX);
        }
        if let Some(footer) = &mut embed.footer {
            footer.text = truncate(&footer.text, FOOTER_MAX);
        }
    }
    let mut excess = total_chars(message).saturating_sub(TOTAL_MAX);
    for i in (0..message.embeds.len()).rev() {
        if excess == 0 {
            return;
        }
        let description = &mut message.embeds[i].description;
        let len = description.chars().count();
        // `truncate` keeps exactly the length asked, "…" included.
        *description = truncate(description, len.saturating_sub(excess));
        excess = total_chars(message).saturating_sub(TOTAL_MAX);
    }
    while excess > 0 {
        let Some(embed) = message
            .embeds
            .iter_mut()
            .rev()
            .find(|e| !e.fields.is_empty())
        else {
            break;
        };
        embed.fields.pop();
        excess = total_chars(message).saturating_sub(TOTAL_MAX);
    }
    // Only titles and footers left, 10 × (256 + 2048) can still pass 6000.
    while total_chars(message) > TOTAL_MAX && message.embeds.len() > 1 {
        message.embeds.pop();
    }
}

/// The characters Discord counts against [`TOTAL_MAX`].
pub fn total_chars(message: &Message) -> usize {
    message
        .embeds
        .iter()
        .map(|e| {
            e.title.chars().count()
                + e.description.chars().count()
                + e.fields
                    .iter()
                    .map(|f| f.name.chars().count() + f.value.chars().count())
                    .sum::<usize>()
                + e.footer.as_ref().map_or(0, |f| f.text.chars().count())
        })
        .sum()
}

#[derive(Deserialize)]
struct RateLimited {
    retry_after: f64,
}

/// Discord's reading of an answer: the wait of a 429 is in the body, a 404
/// is a deleted webhook.
pub(crate) fn verdict(status: u16, headers: &HeaderMap, body: &[u8]) -> Verdict {
    match status {
        404 => Verdict::Gone,
        429 => {
            let wait = serde_json::from_slice::<RateLimited>(body)
                .ok()
                .and_then(|r| std::time::Duration::try_from_secs_f64(r.retry_after).ok());
            match wait {
                Some(wait) => Verdict::Retry(Some(wait)),
                None => Verdict::from_http(status, headers),
            }
        }
        _ => Verdict::from_http(status, headers),
    }
}
