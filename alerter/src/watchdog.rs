//! The agents' watchdog records as alerts, built in (no rule needed):
//!
//! - `exhausted` fires `watchdog_exhausted` (critical) for the (node, app):
//!   the watchdog gave up and waits for a person. `rearmed` or `recovered`
//!   for the same (node, app) resolves it.
//! - `recovered` fires `watchdog_restarted` (info), a *notice*: one
//!   notification saying the app was restarted (attempt, steps and their
//!   durations), then the lifecycle resolves it quietly (no "resolved"
//!   notification; see [`AlertChange::notice`]).
//!
//! Both route like any alert (`severity`, `alertname`, `node`, `service` =
//! the app). Pure: records in, changes out, times from the records.

use std::collections::{BTreeMap, HashMap};

use livehead_proto::v1::record::Kind;
use livehead_proto::v1::{Record, StepEnd, WatchdogEvent, WatchdogEventKind};

use crate::lifecycle::{AlertView, KEEP_RESOLVED_MS, State};
use crate::model::{AlertChange, AlertKey, Condition, Severity};

/// The alert of an app the watchdog gave up on.
pub const EXHAUSTED: &str = "watchdog_exhausted";
/// The notice of an app the watchdog restarted.
pub const RESTARTED: &str = "watchdog_restarted";

/// Steps of one recovery kept for the notice; a longer sequence is cut
/// (the store has every step).
const MAX_STEPS: usize = 20;

/// Whether `rule` is one of this module's, not a rules-file rule.
pub fn is_builtin(rule: &str) -> bool {
    rule == EXHAUSTED || rule == RESTARTED
}

/// What is known per (node, app).
#[derive(Debug, Default)]
struct App {
    /// The `watchdog_exhausted` alert is firing.
    exhausted: bool,
    /// Newest exhaustion and restart handled (unix ms): a replay (the
    /// watch snapshot after a restart) is not notified again.
    exhausted_ms: u64,
    restarted_ms: u64,
    /// Newest exhaustion resolved.
    resolved_ms: u64,
    /// A `watchdog_restarted` notice may still be firing (silenced or
    /// inhibited, so never handed out): the next recovery ends it.
    notice_open: bool,
    /// The current recovery's steps, one line each.
    steps: Vec<String>,
}

/// The watchdog alerts of the fleet.
#[derive(Debug, Default)]
pub struct Watchdogs {
    apps: HashMap<(String, String), App>,
}

impl Watchdogs {
    /// Carries on from the lifecycle's alerts (every state: a resolved one
    /// tells what was already notified) after a restart.
    pub fn restore<'a>(&mut self, alerts: impl IntoIterator<Item = &'a AlertView>) {
        for alert in alerts {
            let (Some(node), Some(app)) = (&alert.node, &alert.service) else {
                continue;
            };
            if !is_builtin(&alert.rule) {
                continue;
            }
            let entry = self.apps.entry((node.clone(), app.clone())).or_default();
            let active = alert.state != State::Resolved;
            if alert.rule == EXHAUSTED {
                entry.exhausted |= active;
                entry.exhausted_ms = entry.exhausted_ms.max(alert.since_ms);
                if !active {
                    entry.resolved_ms = entry.resolved_ms.max(alert.ended_ms.unwrap_or(0));
                }
            } else {
                entry.notice_open |= active;
                entry.restarted_ms = entry.restarted_ms.max(alert.since_ms);
            }
        }
    }

    /// One record from `agent` at `now_ms`; watchdog events may change
    /// alerts. A restart older than [`KEEP_RESOLVED_MS`] (a snapshot kept
    /// longer than that) is not noticed: the lifecycle no longer lists the
    /// notice that told it, so it cannot tell whether it was sent.
    pub fn observe(
        &mut self,
        agent: &str,
        record: &Record,
        now_ms: u64,
        out: &mut Vec<AlertChange>,
    ) {
        let Some(Kind::Watchdog(event)) = &record.kind else {
            return;
        };
        let app = self
            .apps
            .entry((agent.to_owned(), event.app.clone()))
            .or_default();
        match event.kind() {
            WatchdogEventKind::RecoveryStarted => {
                app.steps.clear();
                if app.notice_open {
                    app.notice_open = false;
                    let summary = format!("{} on {agent}: another recovery started", event.app);
                    out.push(change(
                        agent,
                        event,
                        RESTARTED,
                        Condition::Resolved,
                        summary,
                    ));
                }
            }
            WatchdogEventKind::RecoveryStep => {
                if app.steps.len() < MAX_STEPS {
                    app.steps.push(step_line(event));
                }
            }
            WatchdogEventKind::Recovered => {
                resolve_exhausted(app, agent, event, "recovered", out);
                let recent = event.ts_ms.saturating_add(KEEP_RESOLVED_MS) > now_ms;
                if event.ts_ms > app.restarted_ms && recent {
                    app.restarted_ms = event.ts_ms;
                    app.notice_open = true;
                    out.push(restarted(agent, event, &app.steps));
                }
            }
            WatchdogEventKind::Rearmed => {
                resolve_exhausted(app, agent, event, "re-armed", out);
            }
            WatchdogEventKind::Exhausted => {
                if event.ts_ms > app.exhausted_ms && event.ts_ms > app.resolved_ms {
                    app.exhausted_ms = event.ts_ms;
                    app.exhausted = true;
                    out.push(exhausted(agent, event, &app.steps));
                }
            }
            WatchdogEventKind::CheckFailed
            | WatchdogEventKind::RecoveryFailed
            | WatchdogEventKind::Unspecified => {}
        }
    }
}

fn resolve_exhausted(
    app: &mut App,
    agent: &str,
    event: &WatchdogEvent,
    how: &str,
    out: &mut Vec<AlertChange>,
) {
    if !app.exhausted || event.ts_ms < app.exhausted_ms {
        return;
    }
    app.exhausted = false;
    app.resolved_ms = event.ts_ms;
    let summary = format!(
        "{} on {agent}: {how}, the watchdog watches it again",
        event.app
    );
    out.push(change(
        agent,
        event,
        EXHAUSTED,
        Condition::Resolved,
        summary,
    ));
}

fn exhausted(agent: &str, event: &WatchdogEvent, steps: &[String]) -> AlertChange {
    let reason = if event.reason.is_empty() {
        "unknown".to_owned()
    } else {
        event.reason.clone()
    };
    let summary = format!(
        "watchdog gave up on {} on {agent} after {} recoveries that did not bring it back; \
         last failure: {reason}; re-arm it once fixed",
        event.app, event.attempt
    );
    let mut c = change(agent, event, EXHAUSTED, Condition::Firing, summary);
    c.description = description("last recovery", steps);
    c
}

fn restarted(agent: &str, event: &WatchdogEvent, steps: &[String]) -> AlertChange {
    let summary = format!(
        "{} on {agent} was restarted by the watchdog (attempt {})",
        event.app, event.attempt
    );
    let mut c = change(agent, event, RESTARTED, Condition::Firing, summary);
    c.description = description("steps", steps);
    c.notice = true;
    c
}

fn description(title: &str, steps: &[String]) -> Option<String> {
    (!steps.is_empty()).then(|| format!("{title}:\n{}", steps.join("\n")))
}

/// `systemctl restart web: exit 0 in 1.2 s`.
fn step_line(event: &WatchdogEvent) -> String {
    let end = match event.step_end() {
        StepEnd::Exited => format!("exit {}", event.exit_status),
        StepEnd::Signaled => format!("killed by signal {}", event.exit_status),
        StepEnd::TimedOut => "timed out, killed".to_owned(),
        StepEnd::Cancelled => "cancelled (agent stopping)".to_owned(),
        StepEnd::SpawnFailed => format!("could not start: {}", event.reason),
        StepEnd::Unspecified => "unknown end".to_owned(),
    };
    // Milliseconds as seconds with one decimal, without float casts.
    let (secs, tenths) = (event.duration_ms / 1000, (event.duration_ms % 1000) / 100);
    format!("{}: {end} in {secs}.{tenths} s", event.command)
}

fn change(
    agent: &str,
    event: &WatchdogEvent,
    rule: &str,
    condition: Condition,
    summary: String,
) -> AlertChange {
    let severity = if rule == EXHAUSTED {
        Severity::Critical
    } else {
        Severity::Info
    };
    AlertChange {
        key: AlertKey {
            rule: rule.to_owned(),
            severity,
            node: Some(agent.to_owned()),
            site: None,
            service: Some(event.app.clone()),
        },
        condition,
        at_ms: event.ts_ms,
        summary,
        description: None,
        labels: BTreeMap::new(),
        notice: false,
    }
}

#[cfg(test)]
mod tests;
