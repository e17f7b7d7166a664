use std::time::Duration;

use chrono::{DateTime, Utc};
use livehead_proto::v1::{HeartbeatCheck, HeartbeatPing, HeartbeatStatus, PingKind};

use super::*;

fn ms(rfc3339: &str) -> u64 {
    let t: DateTime<Utc> = rfc3339.parse().expect("test timestamp");
    u64::try_from(t.timestamp_millis()).expect("after 1970")
}

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

/// (expression, zone, last ping, next expected), every expected value
/// computed with cronsim 2.9 (Healthchecks' cron library):
/// `next(CronSim(expr, last.astimezone(ZoneInfo(zone)))).astimezone(UTC)`.
/// Europe/Paris springs forward on 2026-03-29 at 02:00 (to 03:00) and falls
/// back on 2026-10-25 at 03:00 (to 02:00).
const CRONSIM: &[(&str, &str, &str, &str)] = &[
    // Fixed time in the skipped hour: runs at the end of the gap, 03:00 CEST.
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",
    ),
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
    ),
    (
        "0 2 * * *",
        "Europe/Paris",
        "2026-03-28T12:00:00Z",
        "2026-03-29T01:00:00Z",
    ),
    (
        "15 2,3 * * *",
        "Europe/Paris",
        "2026-03-29T00:00:00Z",
        "2026-03-29T01:00:00Z",
    ),
    // Fixed time in the repeated hour: once, at the first pass (CEST)...
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",
    ),
    // ... and not again at the second pass (CET): the next day.
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
    ),
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-25T01:30:00Z",
        "2026-10-26T01:30:00Z",
    ),
    // A ping during the second pass, before 02:30: cronsim answers the first
    // pass's 02:30, which is already past (the check goes late at once).
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-25T01:10:00Z",
        "2026-10-25T00:30:00Z",
    ),
    // Hourly jobs follow real time: no 02:00 in March, two in October.
    (
        "0 * * * *",
        "Europe/Paris",
        "2026-03-29T00:00:00Z",
        "2026-03-29T01:00:00Z",
    ),
    (
        "0 * * * *",
        "Europe/Paris",
        "2026-10-25T00:00:00Z",
        "2026-10-25T01:00:00Z",
    ),
    (
        "0 * * * *",
        "Europe/Paris",
        "2026-10-25T01:00:00Z",
        "2026-10-25T02:00:00Z",
    ),
    (
        "*/15 * * * *",
        "Europe/Paris",
        "2026-10-25T00:50:00Z",
        "2026-10-25T01:00:00Z",
    ),
    (
        "0 */2 * * *",
        "Europe/Paris",
        "2026-03-29T00:30:00Z",
        "2026-03-29T02:00:00Z",
    ),
    // America/New_York: spring forward 2026-03-08 02:00, fall back 11-01 02:00.
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        "2026-03-08T07:00:00Z",
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        "2026-11-01T05:30:00Z",
    ),
    // Syntax.
    (
        "*/15 9-17 * * MON-FRI",
        "UTC",
        "2026-12-04T17:50:00Z",
        "2026-12-07T09:00:00Z",
    ),
    (
        "0 0 L * *",
        "UTC",
        "2026-02-10T00:00:00Z",
        "2026-02-28T00:00:00Z",
    ),
    (
        "0 0 LW * *",
        "UTC",
        "2026-05-01T00:00:00Z",
        "2026-05-29T00:00:00Z",
    ),
    (
        "0 9 * * 5#2",
        "America/New_York",
        "2026-12-01T00:00:00Z",
        "2026-12-11T14:00:00Z",
    ),
    (
        "0 9 * * 5L",
        "America/New_York",
        "2026-12-01T00:00:00Z",
        "2026-12-25T14:00:00Z",
    ),
    // Both day fields restricted: either matches (Debian cron).
    (
        "0 0 13 * 5",
        "UTC",
        "2026-12-01T00:00:00Z",
        "2026-12-04T00:00:00Z",
    ),
    (
        "0 0 1 JAN *",
        "Asia/Tokyo",
        "2026-06-01T00:00:00Z",
        "2026-12-31T15:00:00Z",
    ),
    (
        "5/20 * * * *",
        "UTC",
        "2026-06-01T00:50:00Z",
        "2026-06-01T01:05:00Z",
    ),
    (
        "0 0 * * 7",
        "UTC",
        "2026-12-07T22:00:00Z",
        "2026-12-13T00:00:00Z",
    ),
    (
        "30 1 * * *",
        "America/Sao_Paulo",
        "2026-06-01T00:00:00Z",
        "2026-06-01T04:30:00Z",
    ),
    (
        "0 0 29 2 *",
        "UTC",
        "2026-03-01T00:00:00Z",
        "2028-02-29T00:00:00Z",
    ),
];

#[test]
fn cron_next_matches_cronsim_including_dst_changes() {
    for (expr, tz, last, want) in CRONSIM {
        let s = Schedule::cron(expr, tz).expect("valid expression");
        let got = s.next_after(ms(last)).map(format_ms);
        assert_eq!(got.as_deref(), Some(*want), "{expr} in {tz} after {last}");
    }
}

#[test]
fn cron_next_is_after_the_second_of_the_ping() {
    let s = Schedule::cron("0 * * * *", "UTC").expect("valid");
    // A ping at 10:00:00.400 (the job itself) expects 11:00, not 10:00.
    let next = s.next_after(ms("2026-12-07T10:00:00Z") + 400);
    assert_eq!(next, Some(ms("2026-12-07T11:00:00Z")));
}

#[test]
fn cron_refusals_name_the_field() {
    let cases = [
        ("0 0 31 2 *", "UTC", "cron", "bad day-of-month field"),
        ("61 * * * *", "UTC", "cron", "bad minute field"),
        ("0 0 * * 8", "UTC", "cron", "bad day-of-week field"),
        ("* * * *", "UTC", "cron", "5 fields"),
        ("0 0 * * *", "Mars/Olympus", "tz", "unknown time zone"),
    ];
    for (expr, tz, field, msg) in cases {
        let err = Schedule::cron(expr, tz).expect_err(expr);
        assert_eq!(err.field(), field, "{expr}");
        assert!(err.to_string().contains(msg), "{expr}: {err}");
    }
    let long = format!("0 0 * * {}", "1,".repeat(60));
    assert_eq!(
        Schedule::cron(&long, "UTC").expect_err("too long"),
        ScheduleError::Cron(CronError::TooLong)
    );
    // cronsim accepts these: so do we.
    for expr in [
        "1-1/2 * * * *",
        "0 0 L/2 * *",
        "0 12 * * sun",
        "0 0 1 jan-mar/2 *",
    ] {
        Schedule::cron(expr, "").expect(expr);
    }
}

fn check(period_s: u64, cron: &str, tz: &str, grace_s: u64) -> HeartbeatCheck {
    HeartbeatCheck {
        check_id: "7c3e5f0e-8d1b-4a57-9a8e-2f0b1c9d4e6a".into(),
        name: "nightly-backup".into(),
        period_s,
        cron: cron.into(),
        tz: tz.into(),
        grace_s,
        ..HeartbeatCheck::default()
    }
}

#[test]
fn spec_from_record_names_the_field() {
    let field = |c: HeartbeatCheck| CheckSpec::from_record(&c).expect_err("refused").field();
    assert_eq!(field(check(0, "", "", 60)), "period_s");
    assert_eq!(field(check(3600, "0 * * * *", "", 60)), "period_s");
    assert_eq!(field(check(30, "", "", 60)), "period_s");
    assert_eq!(field(check(3600, "", "", 0)), "grace_s");
    assert_eq!(field(check(0, "0 * * *", "", 60)), "cron");
    assert_eq!(field(check(0, "0 * * * *", "Nowhere/City", 60)), "tz");
    let spec = CheckSpec::from_record(&check(3600, "", "", 300)).expect("valid");
    assert_eq!(spec.schedule, Schedule::Period(Duration::from_secs(3600)));
    assert_eq!(spec.grace, Duration::from_secs(300));
    assert!(!spec.paused);
}

fn ping(ts_ms: u64, kind: PingKind) -> HeartbeatPing {
    HeartbeatPing {
        ts_ms,
        check_id: "7c3e5f0e-8d1b-4a57-9a8e-2f0b1c9d4e6a".into(),
        kind: kind.into(),
        ..HeartbeatPing::default()
    }
}

fn exit(ts_ms: u64, status: u32, body: &str) -> HeartbeatPing {
    HeartbeatPing {
        exit_status: status,
        body: body.into(),
        body_bytes: body.len() as u64,
        ..ping(ts_ms, PingKind::Exit)
    }
}

fn with_rid(mut p: HeartbeatPing, rid: &str) -> HeartbeatPing {
    p.rid = rid.into();
    p
}

fn hourly(grace_min: u64) -> CheckSpec {
    CheckSpec::from_record(&check(3600, "", "", grace_min * 60)).expect("valid")
}

const T0: u64 = 1_796_000_000_000;

#[test]
fn period_check_goes_up_grace_down_and_back_up() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    assert_eq!(t.status(&spec, T0), Status::New);
    assert_eq!(t.next_change(&spec, T0), None);
    assert_eq!(t.reason(&spec, T0), "never pinged");

    t.observe(&ping(T0, PingKind::Success));
    assert_eq!(t.status(&spec, T0), Status::Up);
    assert_eq!(t.next_change(&spec, T0), Some(T0 + HOUR));
    assert_eq!(t.status(&spec, T0 + HOUR - 1), Status::Up);
    assert_eq!(t.status(&spec, T0 + HOUR), Status::Grace);
    assert_eq!(t.next_change(&spec, T0 + HOUR), Some(T0 + HOUR + 10 * MIN));
    assert_eq!(t.status(&spec, T0 + HOUR + 10 * MIN - 1), Status::Grace);
    assert_eq!(t.status(&spec, T0 + HOUR + 10 * MIN), Status::Down);
    assert_eq!(t.next_change(&spec, T0 + HOUR + 10 * MIN), None);
    assert_eq!(
        t.reason(&spec, T0 + 2 * HOUR),
        format!("no ping since {}", format_ms(T0))
    );

    let back = T0 + 3 * HOUR;
    t.observe(&ping(back, PingKind::Success));
    assert_eq!(t.status(&spec, back), Status::Up);
    assert_eq!(t.next_change(&spec, back), Some(back + HOUR));
}

#[test]
fn cron_check_in_paris_across_both_dst_changes() {
    let spec = CheckSpec::from_record(&check(0, "30 2 * * *", "Europe/Paris", 600)).expect("ok");
    let mut t = Tracker::new();
    // Saturday 2026-03-28 02:30 CET; the next run is at 03:00 CEST, the end
    // of the skipped hour, i.e. 01:00 UTC.
    t.observe(&ping(ms("2026-03-28T01:30:00Z"), PingKind::Success));
    let due = ms("2026-03-29T01:00:00Z");
    assert_eq!(t.next_change(&spec, ms("2026-03-28T12:00:00Z")), Some(due));
    assert_eq!(t.status(&spec, due - 1), Status::Up);
    assert_eq!(t.status(&spec, due), Status::Grace);
    assert_eq!(t.status(&spec, due + 10 * MIN), Status::Down);

    // Autumn: a run at 02:30 CEST (the first pass) expects the next one
    // tomorrow at 02:30 CET, 25 hours later, not at the second 02:30.
    let run = ms("2026-10-25T00:30:00Z");
    t.observe(&ping(run, PingKind::Success));
    assert_eq!(t.next_change(&spec, run), Some(run + 25 * HOUR));
    assert_eq!(t.status(&spec, ms("2026-10-25T01:30:00Z")), Status::Up);
    assert_eq!(t.status(&spec, run + 25 * HOUR + 10 * MIN), Status::Down);
}

#[test]
fn hourly_cron_in_paris_counts_real_hours() {
    let spec = CheckSpec::from_record(&check(0, "0 * * * *", "Europe/Paris", 300)).expect("ok");
    let mut t = Tracker::new();
    // 02:00 CEST on the fall-back night: the next is 02:00 CET, one hour on.
    let run = ms("2026-10-25T00:00:00Z");
    t.observe(&ping(run, PingKind::Success));
    assert_eq!(t.next_change(&spec, run), Some(run + HOUR));
    // 01:00 CET on the spring-forward night: the next is 03:00 CEST, one hour on.
    let run = ms("2026-03-29T00:00:00Z");
    let mut t = Tracker::new();
    t.observe(&ping(run, PingKind::Success));
    assert_eq!(t.next_change(&spec, run), Some(run + HOUR));
}

#[test]
fn start_then_end_gives_the_duration() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    let seen = t.observe(&ping(T0, PingKind::Start));
    assert_eq!(seen.duration_ms, None);
    assert_eq!(t.status(&spec, T0 + MIN), Status::Started);
    assert_eq!(t.reason(&spec, T0), format!("started at {}", format_ms(T0)));
    assert_eq!(t.next_change(&spec, T0), Some(T0 + 10 * MIN));
    let seen = t.observe(&ping(T0 + 3 * MIN, PingKind::Success));
    assert_eq!(seen.duration_ms, Some(3 * MIN));
    assert_eq!(t.status(&spec, T0 + 3 * MIN), Status::Up);
    assert_eq!(
        run_duration(
            &ping(T0, PingKind::Start),
            &ping(T0 + 3 * MIN, PingKind::Success)
        ),
        Some(3 * MIN)
    );
    // A start older than MAX_RUN_MS pairs with nothing.
    assert_eq!(
        run_duration(
            &ping(T0, PingKind::Start),
            &ping(T0 + MAX_RUN_MS + 1, PingKind::Success)
        ),
        None
    );
}

#[test]
fn a_start_never_ended_is_down_after_the_grace_time() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&ping(T0, PingKind::Success));
    t.observe(&ping(T0 + HOUR - MIN, PingKind::Start));
    let start = T0 + HOUR - MIN;
    assert_eq!(t.status(&spec, start + 9 * MIN), Status::Started);
    assert_eq!(t.status(&spec, start + 10 * MIN), Status::Down);
    assert_eq!(
        t.reason(&spec, start + 10 * MIN),
        format!("started at {} and never ended", format_ms(start))
    );
}

#[test]
fn failure_by_exit_status_is_down_until_the_next_success() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&ping(T0, PingKind::Start));
    let seen = t.observe(&exit(T0 + MIN, 3, "disk full\n"));
    assert_eq!(seen.duration_ms, Some(MIN));
    assert_eq!(t.status(&spec, T0 + MIN), Status::Down);
    assert_eq!(t.reason(&spec, T0 + MIN), "exit status 3");
    assert_eq!(t.next_change(&spec, T0 + MIN), None);
    let last = t.last_ping().expect("a ping");
    assert_eq!(last.body_tail, "disk full\n");
    assert_eq!(
        last.action,
        Action::Fail {
            exit_status: Some(3)
        }
    );
    // A log ping changes nothing; a fail ping without status says so.
    t.observe(&ping(T0 + 2 * MIN, PingKind::Log));
    assert_eq!(t.status(&spec, T0 + 2 * MIN), Status::Down);
    t.observe(&ping(T0 + 3 * MIN, PingKind::Fail));
    assert_eq!(
        t.reason(&spec, T0 + 3 * MIN),
        format!("failure reported at {}", format_ms(T0 + 3 * MIN))
    );
    t.observe(&exit(T0 + 4 * MIN, 0, ""));
    assert_eq!(t.status(&spec, T0 + 4 * MIN), Status::Up);
}

#[test]
fn overlapping_runs_pair_by_rid() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&with_rid(ping(T0, PingKind::Start), "a"));
    t.observe(&with_rid(ping(T0 + MIN, PingKind::Start), "b"));
    // a ends: b still runs (Healthchecks keeps the newest start).
    let a = t.observe(&with_rid(ping(T0 + 5 * MIN, PingKind::Success), "a"));
    assert_eq!(a.duration_ms, Some(5 * MIN));
    assert_eq!(t.status(&spec, T0 + 5 * MIN), Status::Started);
    let b = t.observe(&with_rid(ping(T0 + 7 * MIN, PingKind::Success), "b"));
    assert_eq!(b.duration_ms, Some(6 * MIN));
    assert_eq!(t.status(&spec, T0 + 7 * MIN), Status::Up);
    // An end without a start pairs with nothing.
    let c = t.observe(&with_rid(ping(T0 + 8 * MIN, PingKind::Success), "c"));
    assert_eq!(c.duration_ms, None);
}

#[test]
fn a_success_with_another_rid_leaves_the_run_going() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&with_rid(ping(T0, PingKind::Start), "a"));
    t.observe(&with_rid(ping(T0 + MIN, PingKind::Success), "z"));
    assert_eq!(t.status(&spec, T0 + MIN), Status::Started);
    assert_eq!(t.status(&spec, T0 + 10 * MIN), Status::Down);
    // A failure with any rid ends it.
    t.observe(&with_rid(ping(T0 + 11 * MIN, PingKind::Fail), "z"));
    t.observe(&ping(T0 + 12 * MIN, PingKind::Success));
    assert_eq!(t.status(&spec, T0 + 12 * MIN), Status::Up);
}

#[test]
fn pause_and_resume() {
    let mut spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&ping(T0, PingKind::Success));
    spec.paused = true;
    assert_eq!(t.status(&spec, T0 + 5 * HOUR), Status::Paused);
    assert_eq!(t.next_change(&spec, T0), None);
    assert_eq!(t.reason(&spec, T0), "paused");
    // Pings while paused are kept; the check stays paused.
    t.observe(&exit(T0 + HOUR, 1, ""));
    assert_eq!(t.status(&spec, T0 + HOUR), Status::Paused);
    spec.paused = false;
    t.resume();
    assert_eq!(t.status(&spec, T0 + 5 * HOUR), Status::New);
    t.observe(&ping(T0 + 6 * HOUR, PingKind::Success));
    assert_eq!(t.status(&spec, T0 + 6 * HOUR), Status::Up);
}

#[test]
fn log_pings_change_nothing_and_new_stays_new() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    let seen = t.observe(&HeartbeatPing {
        body: "x".repeat(BODY_TAIL_CHARS + 10) + "end",
        ..ping(T0, PingKind::Log)
    });
    assert!(seen.applied);
    assert_eq!(t.status(&spec, T0 + 10 * HOUR), Status::New);
    let last = t.last_ping().expect("kept");
    assert_eq!(last.action, Action::Log);
    assert_eq!(last.body_tail.chars().count(), BODY_TAIL_CHARS);
    assert!(last.body_tail.ends_with("end"));
}

#[test]
fn older_and_unknown_pings_are_left_out() {
    let spec = hourly(10);
    let mut t = Tracker::new();
    t.observe(&ping(T0, PingKind::Success));
    assert!(!t.observe(&exit(T0 - 1, 2, "")).applied);
    assert!(!t.observe(&ping(T0 + 1, PingKind::Unspecified)).applied);
    assert_eq!(t.status(&spec, T0 + 1), Status::Up);
}

#[test]
fn tracker_round_trips_through_serde() {
    let mut t = Tracker::new();
    t.observe(&with_rid(ping(T0, PingKind::Start), "a"));
    t.observe(&exit(T0 + MIN, 4, "oops"));
    let json = serde_json::to_string(&t).expect("serialize");
    let back: Tracker = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, t);
    let empty: Tracker = serde_json::from_str("{}").expect("defaults");
    assert_eq!(empty, Tracker::new());
}

#[test]
fn status_converts_to_and_from_the_wire() {
    for s in [
        Status::New,
        Status::Up,
        Status::Started,
        Status::Grace,
        Status::Down,
        Status::Paused,
    ] {
        let wire = HeartbeatStatus::from(s);
        assert_eq!(Status::try_from(wire), Ok(s));
        assert_eq!(Status::from_proto_i32(wire as i32), Some(s));
    }
    assert_eq!(Status::from_proto_i32(0), None);
    assert_eq!(Status::from_proto_i32(99), None);
    assert_eq!(Status::Grace.as_str(), "grace");
}
