//! Validation of the alert records (`livehead/v1/alerts.proto`), which the
//! alerter sends through the ingest path like an agent: from the wire
//! message to its row, or the first thing wrong named `alert.<field>` or
//! `delivery.<field>`.
//!
//! Rules: `ts_ms` within the limits of every record; `alert_id` is 16 hex
//! digits (stored lower case); names (rule, node, service, receiver,
//! notification id, actor) at most `limits.max_name_bytes` without control
//! characters, the rule, receiver and notification id non-empty; a site, when
//! set, a host name stored lower case; enums known and not UNSPECIFIED,
//! stored as their lowercase names (`critical`, `firing`, `sent`); free text
//! (summary, delivery error) at most `limits.max_text_bytes`.

use livehead_proto::v1::{AlertDelivery, AlertEvent, AlertSeverity, AlertState, DeliveryOutcome};

use super::samples::Ctx;
use super::{Invalid, check_text, invalid, label};
use crate::store::samples::{AlertDeliveryRow, AlertEventRow};

/// Hex digits of an `alert_id`.
pub const ALERT_ID_DIGITS: usize = 16;

/// The stored name of a severity, `None` for UNSPECIFIED.
pub fn severity_label(severity: AlertSeverity) -> Option<&'static str> {
    Some(match severity {
        AlertSeverity::Unspecified => return None,
        AlertSeverity::Critical => "critical",
        AlertSeverity::Error => "error",
        AlertSeverity::Warning => "warning",
        AlertSeverity::Info => "info",
    })
}

/// The stored name of a state, `None` for UNSPECIFIED.
pub fn state_label(state: AlertState) -> Option<&'static str> {
    Some(match state {
        AlertState::Unspecified => return None,
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Acknowledged => "acknowledged",
        AlertState::Resolved => "resolved",
    })
}

/// The stored name of an outcome, `None` for UNSPECIFIED.
pub fn outcome_label(outcome: DeliveryOutcome) -> Option<&'static str> {
    Some(match outcome {
        DeliveryOutcome::Unspecified => return None,
        DeliveryOutcome::Sent => "sent",
        DeliveryOutcome::Retry => "retry",
        DeliveryOutcome::Failed => "failed",
        DeliveryOutcome::Dropped => "dropped",
    })
}

/// A name that may be empty (the alert is not about a node, a service).
pub(super) fn opt_name(ctx: &Ctx<'_>, field: &'static str, value: &str) -> Result<String, Invalid> {
    check_text(field, value, ctx.limits.max_name_bytes)?;
    Ok(value.to_owned())
}

pub(super) fn text(ctx: &Ctx<'_>, field: &'static str, value: &str) -> Result<String, Invalid> {
    check_text(field, value, ctx.limits.max_text_bytes)?;
    Ok(value.to_owned())
}

fn alert_id(value: &str) -> Result<String, Invalid> {
    if value.len() != ALERT_ID_DIGITS || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "alert.alert_id",
            format!("{value:?} is not {ALERT_ID_DIGITS} hex digits"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

pub fn check_alert(a: &AlertEvent, ctx: &Ctx<'_>) -> Result<AlertEventRow, Invalid> {
    let ts = ctx.ts("alert.ts_ms", a.ts_ms)?;
    if a.since_ms > ts {
        return Err(invalid(
            "alert.since_ms",
            format!("{} is after the transition's ts_ms {ts}", a.since_ms),
        ));
    }
    let site = if a.site.is_empty() {
        String::new()
    } else {
        super::samples::site("alert.site", &a.site)?
    };
    Ok(AlertEventRow {
        agent: ctx.agent.into(),
        ts,
        alert_id: alert_id(&a.alert_id)?,
        rule: ctx.name("alert.rule", &a.rule)?,
        severity: label("alert.severity", a.severity, severity_label)?,
        node: opt_name(ctx, "alert.node", &a.node)?,
        site,
        service: opt_name(ctx, "alert.service", &a.service)?,
        state: label("alert.state", a.state, state_label)?,
        summary: text(ctx, "alert.summary", &a.summary)?,
        since_ms: a.since_ms,
        actor: opt_name(ctx, "alert.actor", &a.actor)?,
    })
}

pub fn check_delivery(d: &AlertDelivery, ctx: &Ctx<'_>) -> Result<AlertDeliveryRow, Invalid> {
    if d.attempt == 0 {
        return Err(invalid("delivery.attempt", "0: the first attempt is 1"));
    }
    if d.http_status != 0 && !(100..=599).contains(&d.http_status) {
        return Err(invalid(
            "delivery.http_status",
            format!("{} is not an HTTP status (100-599, or 0)", d.http_status),
        ));
    }
    Ok(AlertDeliveryRow {
        agent: ctx.agent.into(),
        ts: ctx.ts("delivery.ts_ms", d.ts_ms)?,
        notification_id: ctx.name("delivery.notification_id", &d.notification_id)?,
        receiver: ctx.name("delivery.receiver", &d.receiver)?,
        state: label("delivery.state", d.state, state_label)?,
        attempt: d.attempt,
        outcome: label("delivery.outcome", d.outcome, outcome_label)?,
        http_status: d.http_status,
        error: text(ctx, "delivery.error", &d.error)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::validate::samples::tests::refused;

    const NOW: u64 = 1_800_000_000_000;

    fn ctx(limits: &Limits) -> Ctx<'_> {
        Ctx {
            agent: "alerter",
            now_ms: NOW,
            limits,
        }
    }

    pub(crate) fn alert() -> AlertEvent {
        AlertEvent {
            ts_ms: NOW - 10,
            alert_id: "0123456789ABCDEF".into(),
            rule: "site-down".into(),
            severity: AlertSeverity::Critical as i32,
            node: "node-7".into(),
            site: "Shop.Example".into(),
            service: String::new(),
            state: AlertState::Firing as i32,
            summary: "shop.example answers 502".into(),
            since_ms: NOW - 5000,
            actor: String::new(),
        }
    }

    fn delivery() -> AlertDelivery {
        AlertDelivery {
            ts_ms: NOW,
            notification_id: "0123456789abcdef".into(),
            receiver: "slack-ops".into(),
            state: AlertState::Resolved as i32,
            attempt: 1,
            outcome: DeliveryOutcome::Sent as i32,
            http_status: 200,
            error: String::new(),
        }
    }

    #[test]
    fn alert_events_become_rows_with_enum_names() {
        let limits = Limits::default();
        let row = check_alert(&alert(), &ctx(&limits)).expect("valid");
        assert_eq!(
            (
                row.agent.as_str(),
                row.alert_id.as_str(),
                row.severity.as_str(),
                row.state.as_str(),
                row.site.as_str(),
                row.node.as_str()
            ),
            (
                "alerter",
                "0123456789abcdef",
                "critical",
                "firing",
                "shop.example",
                "node-7"
            )
        );
        refused(
            &alert(),
            check_alert,
            vec![
                (|a| a.ts_ms = NOW + 3_600_000, "alert.ts_ms"),
                (|a| a.alert_id = "0123".into(), "alert.alert_id"),
                (|a| a.alert_id = "0123456789abcdeg".into(), "alert.alert_id"),
                (|a| a.rule = String::new(), "alert.rule"),
                (|a| a.rule = "r".repeat(513), "alert.rule"),
                (|a| a.severity = 0, "alert.severity"),
                (|a| a.severity = 9, "alert.severity"),
                (|a| a.state = 0, "alert.state"),
                (|a| a.state = 77, "alert.state"),
                (|a| a.node = "a\nb".into(), "alert.node"),
                (|a| a.site = "not a host".into(), "alert.site"),
                (|a| a.service = "s".repeat(600), "alert.service"),
                (|a| a.summary = "x".repeat(5000), "alert.summary"),
                (|a| a.since_ms = NOW, "alert.since_ms"),
                (|a| a.actor = "\u{7}".into(), "alert.actor"),
            ],
        );
    }

    #[test]
    fn deliveries_become_rows_with_enum_names() {
        let limits = Limits::default();
        let row = check_delivery(&delivery(), &ctx(&limits)).expect("valid");
        assert_eq!(
            (row.state.as_str(), row.outcome.as_str(), row.agent.as_str()),
            ("resolved", "sent", "alerter")
        );
        refused(
            &delivery(),
            check_delivery,
            vec![
                (|d| d.ts_ms = 0, "delivery.ts_ms"),
                (
                    |d| d.notification_id = String::new(),
                    "delivery.notification_id",
                ),
                (|d| d.receiver = String::new(), "delivery.receiver"),
                (|d| d.state = 0, "delivery.state"),
                (|d| d.outcome = 0, "delivery.outcome"),
                (|d| d.outcome = 12, "delivery.outcome"),
                (|d| d.attempt = 0, "delivery.attempt"),
                (|d| d.http_status = 42, "delivery.http_status"),
                (|d| d.error = "e".repeat(5000), "delivery.error"),
            ],
        );
    }
}
