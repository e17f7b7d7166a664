//! Fixtures both store test files use.

#![allow(dead_code)]

pub mod grafana;

use livehead_collector::store::LastState;

/// The certificate trust and content check every test probe carries.
pub struct Checks {
    pub cert_trust: &'static str,
    pub cert_error: &'static str,
    pub content: &'static str,
    pub content_failure: &'static str,
    pub content_excerpt: &'static str,
}

pub const CHECKS: Checks = Checks {
    cert_trust: "name_mismatch",
    cert_error: "certificate not valid for name \"x\"",
    content: "failed",
    content_failure: "at least 512 bytes",
    content_excerpt: "<html><body></body></html>",
};

/// The [`CHECKS`] as the API reads them from the inside vantage, the other
/// fields empty.
pub fn checks() -> LastState {
    LastState {
        vantage: "inside".into(),
        cert_trust: CHECKS.cert_trust.into(),
        cert_error: CHECKS.cert_error.into(),
        content: CHECKS.content.into(),
        content_failure: CHECKS.content_failure.into(),
        content_excerpt: CHECKS.content_excerpt.into(),
        ..LastState::default()
    }
}
