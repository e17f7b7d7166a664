// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use livehead_proto::v1::PingKind;

use super::*;
use crate::file::RulesFile;
use crate::lifecycle::Lifecycle;
use crate::receivers::Status as NotifStatus;

const ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";
const T0: u64 = 1_800_000_000_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn check_record(ts_ms: u64, paused: bool, deleted: bool) -> Record {
    Record {
        kind: Some(Kind::HeartbeatCheck(HeartbeatCheck {
            ts_ms,
            check_id: ID.into(),
            name: "nightly-backup".into(),
            tags: "prod db".into(),
            period_s: 3600,
            grace_s: 600,
            paused,
            deleted,
            source: "api".into(),
            ..HeartbeatCheck::default()
        })),
    }
}

fn ping_record(ts_ms: u64, kind: PingKind, exit_status: u32, body: &str) -> Record {
    Record {
        kind: Some(Kind::HeartbeatPing(HeartbeatPing {
            ts_ms,
            check_id: ID.into(),
            kind: kind.into(),
            exit_status,
            body: body.into(),
            body_bytes: body.len() as u64,
            ..HeartbeatPing::default()
        })),
    }
}

/// Changes and records of one step.
#[derive(Default)]
struct Out {
    changes: Vec<AlertChange>,
    records: Vec<Record>,
}

fn feed(h: &mut Heartbeats, records: &[Record], now: u64) -> Out {
    let mut out = Out::default();
    for r in records {
        h.observe(r, &mut out.changes, now);
    }
    h.settle(now, &mut out.changes, &mut out.records);
    out
}

fn tick(h: &mut Heartbeats, now: u64) -> Out {
    let mut out = Out::default();
    h.tick(now, &mut out.changes, &mut out.records);
    out
}

fn statuses(out: &Out) -> Vec<(i32, i32)> {
    out.records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::HeartbeatState(s)) => Some((s.previous, s.status)),
            _ => None,
        })
        .collect()
}

fn wire(s: Status) -> i32 {
    HeartbeatStatus::from(s) as i32
}

fn heartbeats() -> Heartbeats {
    Heartbeats::new(&HeartbeatsConfig::default(), Vec::new())
}

#[test]
fn a_late_check_fires_once_and_resolves_on_the_next_ping() {
    let mut h = heartbeats();
    let out = feed(
        &mut h,
        &[
            check_record(T0 - HOUR, false, false),
            ping_record(T0, PingKind::Success, 0, ""),
        ],
        T0,
    );
    assert!(out.changes.is_empty());
    assert_eq!(statuses(&out), [(0, wire(Status::Up))]);
    assert_eq!(h.next_due(), Some(T0 + HOUR));

    let out = tick(&mut h, T0 + HOUR);
    assert_eq!(statuses(&out), [(wire(Status::Up), wire(Status::Grace))]);
    assert!(out.changes.is_empty());
    assert_eq!(h.next_due(), Some(T0 + HOUR + 10 * MIN));

    let out = tick(&mut h, T0 + HOUR + 10 * MIN);
    assert_eq!(statuses(&out), [(wire(Status::Grace), wire(Status::Down))]);
    assert_eq!(out.changes.len(), 1);
    let fired = &out.changes[0];
    assert_eq!(fired.condition, Condition::Firing);
    assert_eq!(
        fired.key,
        AlertKey {
            rule: "heartbeat".into(),
            severity: Severity::Error,
            node: None,
            site: None,
            service: Some("nightly-backup".into()),
        }
    );
    assert_eq!(
        fired.summary,
        format!(
            "heartbeat nightly-backup is down: no ping since {}",
            format_ms(T0)
        )
    );
    assert_eq!(fired.labels.get("check_id").map(String::as_str), Some(ID));
    assert_eq!(
        fired.labels.get("tags").map(String::as_str),
        Some("prod db")
    );
    assert_eq!(h.next_due(), None);

    // Later ticks (and any tick) decide nothing more.
    assert!(tick(&mut h, T0 + 5 * HOUR).changes.is_empty());

    let back = T0 + 6 * HOUR;
    let out = feed(&mut h, &[ping_record(back, PingKind::Success, 0, "")], back);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].condition, Condition::Resolved);
    assert_eq!(out.changes[0].key, fired.key);
    assert!(
        out.changes[0].summary.contains("is up again"),
        "{}",
        out.changes[0].summary
    );
}

#[test]
fn a_failure_ping_fires_with_its_log_tail() {
    let mut h = heartbeats();
    feed(&mut h, &[check_record(T0 - HOUR, false, false)], T0 - HOUR);
    let log = format!("{}\nERROR: disk full\n", "x".repeat(3000));
    let out = feed(&mut h, &[ping_record(T0, PingKind::Exit, 3, &log)], T0);
    assert_eq!(statuses(&out), [(wire(Status::New), wire(Status::Down))]);
    let fired = &out.changes[0];
    assert_eq!(fired.condition, Condition::Firing);
    assert_eq!(
        fired.summary,
        "heartbeat nightly-backup is down: exit status 3"
    );
    let description = fired.description.as_deref().unwrap();
    assert!(description.ends_with("ERROR: disk full"), "{description}");
    assert!(description.contains("(its end)"));
    assert!(description.chars().count() < livehead_heartbeat::BODY_TAIL_CHARS + 100);

    // Through the lifecycle: the notification carries it.
    let file = RulesFile::parse(
        r#"
[[receivers]]
kind = "discord"
name = "ops"
url = "https://discord.example/ops"

[route]
receiver = "ops"
group_wait = "0s"
"#,
    )
    .unwrap();
    let mut lifecycle = Lifecycle::new(&file, None, T0).unwrap();
    lifecycle.apply(&out.changes, T0);
    let due = lifecycle.due(T0 + 1);
    assert_eq!(due.len(), 1);
    let (receiver, n) = &due[0];
    assert_eq!(receiver, "ops");
    assert_eq!(n.status, NotifStatus::Firing);
    assert_eq!(n.rule, "heartbeat");
    assert_eq!(n.service.as_deref(), Some("nightly-backup"));
    assert!(
        n.description
            .as_deref()
            .unwrap()
            .contains("ERROR: disk full")
    );
    assert_eq!(
        n.labels.get("check").map(String::as_str),
        Some("nightly-backup")
    );
}

#[test]
fn a_restart_from_saved_state_does_not_alert_again() {
    let mut h = heartbeats();
    let snapshot = [
        check_record(T0 - HOUR, false, false),
        ping_record(T0, PingKind::Fail, 0, "boom"),
    ];
    let out = feed(&mut h, &snapshot, T0);
    assert_eq!(out.changes.len(), 1);
    let saved = h.saved();
    let json = serde_json::to_string(&saved).unwrap();

    let restored: Vec<SavedCheck> = serde_json::from_str(&json).unwrap();
    let mut h = Heartbeats::new(&HeartbeatsConfig::default(), restored);
    // The collector's snapshot sends the same records again.
    let out = feed(&mut h, &snapshot, T0 + MIN);
    assert!(out.changes.is_empty());
    assert!(out.records.is_empty());
    assert!(tick(&mut h, T0 + 2 * HOUR).changes.is_empty());
    // And it still resolves on the next success.
    let out = feed(
        &mut h,
        &[ping_record(T0 + 3 * HOUR, PingKind::Success, 0, "")],
        T0 + 3 * HOUR,
    );
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].condition, Condition::Resolved);
}

#[test]
fn deleting_or_pausing_a_down_check_resolves_its_alert() {
    let mut h = heartbeats();
    feed(&mut h, &[check_record(T0 - HOUR, false, false)], T0);
    let out = feed(&mut h, &[ping_record(T0, PingKind::Fail, 0, "")], T0);
    assert_eq!(out.changes[0].condition, Condition::Firing);

    let out = feed(&mut h, &[check_record(T0 + MIN, true, false)], T0 + MIN);
    assert_eq!(statuses(&out), [(wire(Status::Down), wire(Status::Paused))]);
    assert_eq!(out.changes[0].condition, Condition::Resolved);

    // Resumed: new until the next ping (Healthchecks' resume).
    let out = feed(
        &mut h,
        &[check_record(T0 + 2 * MIN, false, false)],
        T0 + 2 * MIN,
    );
    assert_eq!(statuses(&out), [(wire(Status::Paused), wire(Status::New))]);
    let out = feed(
        &mut h,
        &[ping_record(T0 + 3 * MIN, PingKind::Fail, 0, "")],
        T0 + 3 * MIN,
    );
    assert_eq!(out.changes[0].condition, Condition::Firing);

    let out = feed(
        &mut h,
        &[check_record(T0 + 4 * MIN, false, true)],
        T0 + 4 * MIN,
    );
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].condition, Condition::Resolved);
    assert!(h.saved().is_empty());
    // An older version arriving late changes nothing.
    let out = feed(&mut h, &[check_record(T0, false, false)], T0 + 5 * MIN);
    assert_eq!(out.changes.len(), 0);
}

#[test]
fn pings_before_their_check_are_kept_and_the_severity_is_configurable() {
    let config: HeartbeatsConfig = toml::from_str(r#"severity = "critical""#).unwrap();
    let mut h = Heartbeats::new(&config, Vec::new());
    let out = feed(&mut h, &[ping_record(T0, PingKind::Exit, 1, "")], T0);
    assert!(out.records.is_empty(), "no check yet: nothing decided");
    let out = feed(&mut h, &[check_record(T0 - HOUR, false, false)], T0 + 1);
    assert_eq!(out.changes[0].key.severity, Severity::Critical);
}
