//! What the store keeps: an `AlertEvent` per transition, an `AlertDelivery`
//! per delivery attempt.

use livehead_proto::v1::{
    AlertDelivery, AlertEvent, AlertSeverity, AlertState, DeliveryOutcome, Record, record,
};

use super::{Alert, State};
use crate::DeliveryReport;
use crate::receivers::{ReceiverError, Severity, Status};

pub(super) fn event(alert: &Alert, actor: &str, ts_ms: u64) -> Record {
    let since_ms = if alert.state == State::Pending {
        0
    } else {
        alert.since_ms
    };
    Record {
        kind: Some(record::Kind::Alert(AlertEvent {
            ts_ms,
            alert_id: alert.id.clone(),
            rule: alert.key.rule.clone(),
            severity: severity(alert.key.severity) as i32,
            node: alert.key.node.clone().unwrap_or_default(),
            site: alert.key.site.clone().unwrap_or_default(),
            service: alert.key.service.clone().unwrap_or_default(),
            state: state(alert.state) as i32,
            summary: alert.summary.clone(),
            since_ms,
            actor: actor.to_owned(),
        })),
    }
}

/// One record per attempt: retries, then the outcome. A report without
/// attempts is a notification dropped before any (queue full) or one that
/// could not be encoded.
pub(super) fn deliveries(
    report: &DeliveryReport,
    status: Option<Status>,
    now_ms: u64,
) -> Vec<Record> {
    let state = status.map_or(AlertState::Unspecified, |s| match s {
        Status::Firing => AlertState::Firing,
        Status::Acknowledged => AlertState::Acknowledged,
        Status::Resolved => AlertState::Resolved,
    }) as i32;
    let record = |ts_ms, attempt, outcome: DeliveryOutcome, http_status, error: String| Record {
        kind: Some(record::Kind::Delivery(AlertDelivery {
            ts_ms,
            notification_id: report.id.clone(),
            receiver: report.receiver.clone(),
            state,
            attempt,
            outcome: outcome as i32,
            http_status,
            error,
        })),
    };
    if report.tries.is_empty() {
        let outcome = match &report.result {
            Ok(()) => DeliveryOutcome::Sent,
            Err(ReceiverError::QueueFull { .. } | ReceiverError::Closed { .. }) => {
                DeliveryOutcome::Dropped
            }
            Err(_) => DeliveryOutcome::Failed,
        };
        let error = report.result.as_ref().err().map(ToString::to_string);
        return vec![record(now_ms, 0, outcome, 0, error.unwrap_or_default())];
    }
    let last = report.tries.len();
    report
        .tries
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let outcome = match (&t.error, i + 1 == last) {
                (None, _) => DeliveryOutcome::Sent,
                (Some(_), false) => DeliveryOutcome::Retry,
                (Some(_), true) => DeliveryOutcome::Failed,
            };
            let error = match (&report.result, i + 1 == last) {
                (Err(err), true) => err.to_string(),
                _ => t.error.clone().unwrap_or_default(),
            };
            record(
                t.at_ms,
                u32::try_from(i + 1).unwrap_or(u32::MAX),
                outcome,
                u32::from(t.http_status),
                error,
            )
        })
        .collect()
}

fn severity(s: Severity) -> AlertSeverity {
    match s {
        Severity::Critical => AlertSeverity::Critical,
        Severity::Error => AlertSeverity::Error,
        Severity::Warning => AlertSeverity::Warning,
        Severity::Info => AlertSeverity::Info,
    }
}

fn state(s: State) -> AlertState {
    match s {
        State::Pending => AlertState::Pending,
        State::Firing => AlertState::Firing,
        State::Acknowledged => AlertState::Acknowledged,
        State::Resolved => AlertState::Resolved,
    }
}
