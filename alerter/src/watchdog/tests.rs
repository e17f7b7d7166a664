// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use livehead_proto::v1::{Record, StepEnd, WatchdogEvent, WatchdogEventKind as K, record};

use super::*;
use crate::lifecycle::{Lifecycle, SavedState};
use crate::receivers::Status;
use crate::{Notification, RulesFile};

/// Info to Discord (the Slack stand-in of these tests), critical to
/// PagerDuty only.
const RULES: &str = r#"
[[receivers]]
kind = "discord"
name = "chat"
url = "https://discord.example/ops"

[[receivers]]
kind = "pagerduty"
name = "pager"
routing_key = "0123456789abcdef0123456789abcdef"

[route]
receiver = "chat"
group_wait = "1s"
group_interval = "1s"

[[route.routes]]
matchers = ["severity=critical"]
receiver = "pager"
"#;

/// The alerter's clock, moved by hand.
struct Run {
    lifecycle: Lifecycle,
    watchdogs: Watchdogs,
    now: u64,
}

impl Run {
    fn new() -> Self {
        Self::from(None)
    }

    fn from(saved: Option<SavedState>) -> Self {
        let file = RulesFile::parse(RULES).unwrap();
        let lifecycle = Lifecycle::new(&file, saved, 1_000).unwrap();
        let mut watchdogs = Watchdogs::default();
        watchdogs.restore(&lifecycle.alerts(1_000));
        Self {
            lifecycle,
            watchdogs,
            now: 1_000,
        }
    }

    /// The agent `n1` reports `kind` for app `web` at `ts`.
    fn event(&mut self, ts: u64, kind: K, edit: impl FnOnce(&mut WatchdogEvent)) -> usize {
        let mut event = WatchdogEvent {
            ts_ms: ts,
            app: "web".into(),
            kind: kind as i32,
            ..Default::default()
        };
        edit(&mut event);
        let record = Record {
            kind: Some(record::Kind::Watchdog(event)),
        };
        let mut changes = Vec::new();
        self.now = self.now.max(ts);
        self.watchdogs
            .observe("n1", &record, self.now, &mut changes);
        self.lifecycle.apply(&changes, self.now);
        changes.len()
    }

    /// What is handed out at `now`, moving the clock there; each is
    /// reported delivered, as the dispatcher would.
    fn due(&mut self, now: u64) -> Vec<(String, Notification)> {
        self.now = now;
        let sent = self.lifecycle.due(now);
        for (receiver, n) in &sent {
            let report = crate::DeliveryReport {
                receiver: receiver.clone(),
                id: n.id.clone(),
                attempts: 0,
                result: Ok(()),
                tries: Vec::new(),
            };
            self.lifecycle.delivered(&report, now);
        }
        sent
    }
}

/// (receiver, status) of each notification, sorted.
fn statuses(sent: &[(String, Notification)]) -> Vec<(String, Status)> {
    let mut out: Vec<_> = sent.iter().map(|(r, n)| (r.clone(), n.status)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn pair(receiver: &str, status: Status) -> (String, Status) {
    (receiver.to_owned(), status)
}

fn failing_recovery(run: &mut Run, ts: u64, attempt: u32) {
    run.event(ts, K::RecoveryStarted, |e| e.attempt = attempt);
    run.event(ts + 1, K::RecoveryStep, |e| {
        e.attempt = attempt;
        e.command = "systemctl restart web".into();
        e.step_end = StepEnd::Exited as i32;
        e.exit_status = 1;
        e.duration_ms = 1_234;
    });
}

#[test]
fn exhaustion_pages_as_critical_and_a_rearm_resolves_it() {
    let mut run = Run::new();
    failing_recovery(&mut run, 2_000, 3);
    assert_eq!(
        run.event(3_000, K::Exhausted, |e| {
            e.attempt = 3;
            e.reason = "port 8080 closed".into();
        }),
        1
    );
    let sent = run.due(4_000);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (receiver, n) = &sent[0];
    assert_eq!((receiver.as_str(), n.status), ("pager", Status::Firing));
    assert_eq!(n.severity, Severity::Critical);
    for part in ["web", "n1", "3 recoveries", "port 8080 closed"] {
        assert!(n.summary.contains(part), "{part}: {}", n.summary);
    }
    let description = n.description.as_deref().unwrap_or_default();
    assert!(
        description.contains("systemctl restart web: exit 1 in 1.2 s"),
        "{description}"
    );
    // The same event again (a replay) changes nothing.
    assert_eq!(run.event(3_000, K::Exhausted, |e| e.attempt = 3), 0);
    assert!(run.due(10_000).is_empty());

    run.event(20_000, K::Rearmed, |_| {});
    assert_eq!(
        statuses(&run.due(21_000)),
        [pair("pager", Status::Resolved)]
    );
}

#[test]
fn a_restart_is_one_info_notice_that_ends_without_a_resolved_notification() {
    let mut run = Run::new();
    run.event(2_000, K::RecoveryStarted, |e| e.attempt = 1);
    run.event(2_500, K::RecoveryStep, |e| {
        e.attempt = 1;
        e.command = "pm2 restart web".into();
        e.step_end = StepEnd::Exited as i32;
        e.duration_ms = 800;
    });
    run.event(3_000, K::Recovered, |e| e.attempt = 1);
    let sent = run.due(4_000);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (receiver, n) = &sent[0];
    assert_eq!((receiver.as_str(), n.status), ("chat", Status::Firing));
    assert_eq!(n.severity, Severity::Info);
    assert!(
        n.summary.contains("restarted") && n.summary.contains("attempt 1"),
        "{}",
        n.summary
    );
    assert!(
        n.description
            .as_deref()
            .unwrap_or_default()
            .contains("pm2 restart web: exit 0 in 0.8 s"),
        "{n:?}"
    );
    // Resolved quietly as it went out: listed resolved, never re-sent.
    let alerts = run.lifecycle.alerts(4_000);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, State::Resolved);
    assert!(run.due(100_000).is_empty());
    assert!(run.due(10_000_000).is_empty());

    // The next restart is a new notice.
    run.event(20_000_000, K::RecoveryStarted, |e| e.attempt = 1);
    run.event(20_001_000, K::Recovered, |e| e.attempt = 1);
    assert_eq!(run.due(20_002_000).len(), 1);
}

#[test]
fn a_recovery_after_exhaustion_resolves_it_and_notices_the_restart() {
    let mut run = Run::new();
    failing_recovery(&mut run, 2_000, 2);
    run.event(3_000, K::Exhausted, |e| e.attempt = 2);
    assert_eq!(run.due(4_000).len(), 1);
    // Re-armed by a reload whose first recovery worked.
    run.event(5_000, K::Rearmed, |_| {});
    run.event(6_000, K::RecoveryStarted, |e| e.attempt = 1);
    run.event(7_000, K::Recovered, |e| e.attempt = 1);
    assert_eq!(
        statuses(&run.due(9_000)),
        [
            pair("chat", Status::Firing),
            pair("pager", Status::Resolved)
        ]
    );
}

#[test]
fn after_a_restart_the_snapshot_replay_notifies_nothing_again() {
    let mut run = Run::new();
    failing_recovery(&mut run, 2_000, 3);
    run.event(3_000, K::Exhausted, |e| e.attempt = 3);
    assert_eq!(run.due(4_000).len(), 1);
    // Another app on the same node restarted and was noticed.
    let other = |e: &mut WatchdogEvent| {
        e.app = "db".into();
        e.attempt = 1;
    };
    run.event(5_000, K::Recovered, other);
    assert_eq!(run.due(6_000).len(), 1);
    let saved = run.lifecycle.saved();

    // The alerter restarts; the watch snapshot gives the newest event of
    // each (node, app).
    let mut run = Run::from(Some(saved));
    assert_eq!(run.event(3_000, K::Exhausted, |e| e.attempt = 3), 0);
    assert_eq!(run.event(5_000, K::Recovered, other), 0);
    let again = run.due(60_000);
    assert!(again.is_empty(), "{again:#?}");
    // Live events carry on from the restored state.
    run.event(70_000, K::Rearmed, |_| {});
    assert_eq!(
        statuses(&run.due(71_000)),
        [pair("pager", Status::Resolved)]
    );
}

#[test]
fn a_restart_older_than_the_listed_alerts_is_not_noticed() {
    let mut run = Run::new();
    run.now = 2 * crate::lifecycle::KEEP_RESOLVED_MS;
    assert_eq!(run.event(5_000, K::Recovered, |e| e.attempt = 1), 0);
    // An old exhaustion still holds: the app waits for a person.
    assert_eq!(run.event(6_000, K::Exhausted, |e| e.attempt = 3), 1);
}

#[test]
fn a_notice_still_firing_ends_quietly_when_the_next_recovery_starts() {
    let mut run = Run::new();
    run.event(2_000, K::Recovered, |e| e.attempt = 1);
    // Handed out later than it fired: still firing until then.
    assert_eq!(run.lifecycle.alerts(2_000)[0].state, State::Firing);
    // A next recovery starts before the notice went out: it ends quietly.
    run.event(2_100, K::RecoveryStarted, |e| e.attempt = 1);
    assert_eq!(run.lifecycle.alerts(2_100)[0].state, State::Resolved);
    assert!(run.due(10_000).is_empty());
}
