//! Generic webhooks: `POST {url}` with the body Alertmanager sends its
//! webhook receivers (`"version": "4"`), so whatever already consumes those
//! works unchanged. One notification is one group of one alert: `groupKey`
//! and `fingerprint` are the alert's id. Alertmanager knows only `firing`
//! and `resolved`; an acknowledged alert is sent as `firing` with the
//! annotation `livehead_status = "acknowledged"`.
//!
//! With a `secret`, the body is signed: the header (default
//! `X-Livehead-Signature`) carries `sha256=<hex of HMAC-SHA256(secret, body)>`,
//! the scheme GitHub's webhooks use, so the receiver can check the sender.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{DeliveryPolicy, Notification, Outgoing, Secret, Status, iso8601};

/// Header carrying the signature unless configured otherwise.
pub const SIGNATURE_HEADER: &str = "X-Livehead-Signature";
/// Alertmanager's `endsAt` of an alert that has not ended.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used by routes, logs and metrics, and sent as `receiver`.
    /// Required.
    pub name: String,
    /// Where to POST. Required; secret (URLs often carry a token): never
    /// logged.
    pub url: Secret,
    /// Key of the HMAC-SHA256 signature. Default: none, the body is not
    /// signed.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Header carrying the signature. Default `X-Livehead-Signature`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Sent as `externalURL`: where the alerter's UI/API is. Default empty.
    #[serde(default)]
    pub external_url: String,
    /// Queue, retries and pacing.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

fn default_signature_header() -> String {
    SIGNATURE_HEADER.to_owned()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Body<'a> {
    pub version: &'static str,
    pub group_key: &'a str,
    pub truncated_alerts: u32,
    pub status: &'static str,
    pub receiver: &'a str,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: &'a str,
    pub alerts: Vec<Alert<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert<'a> {
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: &'a str,
    pub fingerprint: &'a str,
}

/// The Alertmanager-format body for `n`.
pub fn body<'a>(config: &'a WebhookConfig, n: &'a Notification) -> Body<'a> {
    let status = match n.status {
        Status::Resolved => "resolved",
        Status::Firing | Status::Acknowledged => "firing",
    };
    let labels = n.all_labels();
    let annotations = annotations(n);
    Body {
        version: "4",
        group_key: &n.id,
        truncated_alerts: 0,
        status,
        receiver: &config.name,
        group_labels: BTreeMap::from([("alertname".to_owned(), n.rule.clone())]),
        common_labels: labels.clone(),
        common_annotations: annotations.clone(),
        external_url: &config.external_url,
        alerts: vec![Alert {
            status,
            labels,
            annotations,
            starts_at: iso8601(n.since_ms),
            ends_at: n.ended_ms.map_or_else(|| NOT_ENDED.to_owned(), iso8601),
            generator_url: n.link.as_deref().unwrap_or(""),
            fingerprint: &n.id,
        }],
    }
}

fn annotations(n: &Notification) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([("summary".to_owned(), n.summary.clone())]);
    if let Some(description) = &n.description {
        annotations.insert("description".to_owned(), description.clone());
    }
    if n.status == Status::Acknowledged {
        annotations.insert("livehead_status".to_owned(), "acknowledged".to_owned());
    }
    annotations
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn request(
    config: &WebhookConfig,
    n: &Notification,
) -> Result<Outgoing, serde_json::Error> {
    let body = serde_json::to_vec(&body(config, n))?;
    let headers = config
        .secret
        .iter()
        .map(|secret| (config.signature_header.clone(), signature(secret, &body)))
        .collect();
    Ok(Outgoing { body, headers })
}
