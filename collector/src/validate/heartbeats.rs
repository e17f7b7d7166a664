//! Validation of the heartbeat records (`livehead/v1/heartbeats.proto`):
//! checks and pings, which the collector's ping endpoints and management API
//! build, and status changes, which the alerter sends. From the wire message
//! to its row, or the first thing wrong named `heartbeat_check.<field>`,
//! `heartbeat_ping.<field>` or `heartbeat_state.<field>`.
//!
//! Rules: `ts_ms` within the limits of every record; ids (`check_id`, a
//! ping's `rid`) are UUIDs, stored lowercase with hyphens; names at most
//! `limits.max_name_bytes` without control characters; a slug is lowercase
//! letters, digits, `-` and `_`, and comes with its project; a check has
//! exactly one of `period_s` and `cron`, a period and a grace time within
//! [`MIN_SECONDS`]–[`MAX_SECONDS`]; a ping's kind is known, its exit status
//! set only on an exit ping and at most 255, its method HEAD, GET or POST,
//! its body at most `limits.max_log_bytes` (any characters) and at most its
//! `body_bytes`; enums are stored as their lowercase names. A check's
//! schedule must also be one the alerter can follow: its cron expression and
//! zone parse with the heartbeat crate ([`CheckSpec::from_record`]), so a
//! check written by another tool than the collector's API cannot reach the
//! store and then stall the alerter's tracker.

use livehead_heartbeat::{CheckSpec, ScheduleError};
use livehead_proto::v1::{
    HeartbeatCheck, HeartbeatPing, HeartbeatState, HeartbeatStatus, PingKind,
};
use uuid::Uuid;

use super::alerts::{opt_name, text};
use super::samples::Ctx;
use super::{Invalid, check_log, invalid, label};
use crate::store::samples::{HeartbeatCheckRow, HeartbeatPingRow, HeartbeatStateRow};

/// Shortest and longest period and grace time, in seconds: the heartbeat
/// crate's bounds (1 s to 365 days).
pub const MIN_SECONDS: u64 = livehead_heartbeat::MIN_PERIOD.as_secs();
pub const MAX_SECONDS: u64 = livehead_heartbeat::MAX_PERIOD.as_secs();
/// Longest cron expression and zone name.
pub const MAX_CRON_BYTES: usize = 256;
/// Where a check's version comes from.
pub const SOURCES: &[&str] = &["api", "config", "ping"];
/// The methods a ping may use.
pub const METHODS: &[&str] = &["HEAD", "GET", "POST"];

/// The stored name of a ping kind, `None` for UNSPECIFIED.
pub fn ping_kind_label(kind: PingKind) -> Option<&'static str> {
    Some(match kind {
        PingKind::Unspecified => return None,
        PingKind::Success => "success",
        PingKind::Start => "start",
        PingKind::Fail => "fail",
        PingKind::Log => "log",
        PingKind::Exit => "exit",
    })
}

/// The stored name of a status, `None` for UNSPECIFIED.
pub fn status_label(status: HeartbeatStatus) -> Option<&'static str> {
    use HeartbeatStatus as S;
    Some(match status {
        S::Unspecified => return None,
        S::New => "new",
        S::Up => "up",
        S::Started => "started",
        S::Grace => "grace",
        S::Down => "down",
        S::Paused => "paused",
    })
}

/// A UUID in its stored form (lowercase, hyphenated).
pub fn uuid(field: &'static str, value: &str) -> Result<String, Invalid> {
    Uuid::parse_str(value)
        .map(|id| id.hyphenated().to_string())
        .map_err(|e| invalid(field, format!("{value:?} is not a UUID: {e}")))
}

/// A slug: what `/ping/<ping-key>/<slug>` names.
pub fn slug(field: &'static str, value: &str, max: usize) -> Result<String, Invalid> {
    let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    if value.is_empty() || value.len() > max || !value.bytes().all(valid) {
        return Err(invalid(
            field,
            format!("{value:?} is not a slug (1-{max} of a-z, 0-9, '-', '_')"),
        ));
    }
    Ok(value.to_owned())
}

fn seconds(field: &'static str, value: u64) -> Result<u64, Invalid> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&value) {
        return Err(invalid(
            field,
            format!("{value} s is not within {MIN_SECONDS}-{MAX_SECONDS} s"),
        ));
    }
    Ok(value)
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<String, Invalid> {
    if !allowed.contains(&value) {
        return Err(invalid(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ));
    }
    Ok(value.to_owned())
}

fn short(field: &'static str, value: &str) -> Result<String, Invalid> {
    super::check_text(field, value, MAX_CRON_BYTES)?;
    Ok(value.to_owned())
}

pub fn check_check(c: &HeartbeatCheck, ctx: &Ctx<'_>) -> Result<HeartbeatCheckRow, Invalid> {
    let (project, slug) = match (c.project.is_empty(), c.slug.is_empty()) {
        (true, true) => (String::new(), String::new()),
        (false, false) => (
            ctx.name("heartbeat_check.project", &c.project)?,
            slug("heartbeat_check.slug", &c.slug, ctx.limits.max_name_bytes)?,
        ),
        (true, false) => return Err(invalid("heartbeat_check.project", "empty beside a slug")),
        (false, true) => return Err(invalid("heartbeat_check.slug", "empty beside a project")),
    };
    let (period_s, cron) = match (c.period_s, c.cron.is_empty()) {
        (0, true) => {
            return Err(invalid(
                "heartbeat_check.period_s",
                "0 and no cron: one is needed",
            ));
        }
        (0, false) => (0, short("heartbeat_check.cron", &c.cron)?),
        (period, true) => (seconds("heartbeat_check.period_s", period)?, String::new()),
        (_, false) => {
            return Err(invalid(
                "heartbeat_check.cron",
                "set beside period_s: one or the other",
            ));
        }
    };
    CheckSpec::from_record(c).map_err(schedule_invalid)?;
    Ok(HeartbeatCheckRow {
        agent: ctx.agent.into(),
        ts: ctx.ts("heartbeat_check.ts_ms", c.ts_ms)?,
        check_id: uuid("heartbeat_check.check_id", &c.check_id)?,
        project,
        slug,
        name: ctx.name("heartbeat_check.name", &c.name)?,
        tags: text(ctx, "heartbeat_check.tags", &c.tags)?,
        period_s,
        cron,
        tz: short("heartbeat_check.tz", &c.tz)?,
        grace_s: seconds("heartbeat_check.grace_s", c.grace_s)?,
        paused: c.paused,
        deleted: c.deleted,
        source: one_of("heartbeat_check.source", &c.source, SOURCES)?,
        actor: opt_name(ctx, "heartbeat_check.actor", &c.actor)?,
    })
}

/// A schedule the heartbeat crate refuses, named by its field.
fn schedule_invalid(err: ScheduleError) -> Invalid {
    let field = match err {
        ScheduleError::Period(_) => "heartbeat_check.period_s",
        ScheduleError::Cron(_) => "heartbeat_check.cron",
        ScheduleError::Tz(_) => "heartbeat_check.tz",
        ScheduleError::Grace(_) => "heartbeat_check.grace_s",
    };
    invalid(field, err.to_string())
}

pub fn check_ping(p: &HeartbeatPing, ctx: &Ctx<'_>) -> Result<HeartbeatPingRow, Invalid> {
    let kind = label("heartbeat_ping.kind", p.kind, ping_kind_label)?;
    let exit = p.kind == PingKind::Exit as i32;
    if p.exit_status > 255 || (!exit && p.exit_status != 0) {
        return Err(invalid(
            "heartbeat_ping.exit_status",
            format!(
                "{} on a {kind} ping (0-255, on exit pings only)",
                p.exit_status
            ),
        ));
    }
    let rid = if p.rid.is_empty() {
        String::new()
    } else {
        uuid("heartbeat_ping.rid", &p.rid)?
    };
    check_log("heartbeat_ping.body", &p.body, ctx.limits.max_log_bytes)?;
    if (p.body.len() as u64) > p.body_bytes {
        return Err(invalid(
            "heartbeat_ping.body_bytes",
            format!(
                "{} is less than the body kept ({} bytes)",
                p.body_bytes,
                p.body.len()
            ),
        ));
    }
    Ok(HeartbeatPingRow {
        agent: ctx.agent.into(),
        ts: ctx.ts("heartbeat_ping.ts_ms", p.ts_ms)?,
        check_id: uuid("heartbeat_ping.check_id", &p.check_id)?,
        kind,
        exit_status: p.exit_status,
        rid,
        method: one_of("heartbeat_ping.method", &p.method, METHODS)?,
        remote: opt_name(ctx, "heartbeat_ping.remote", &p.remote)?,
        user_agent: text(ctx, "heartbeat_ping.user_agent", &p.user_agent)?,
        body: p.body.clone(),
        body_bytes: p.body_bytes,
        duration_ms: p.duration_ms,
    })
}

pub fn check_state(s: &HeartbeatState, ctx: &Ctx<'_>) -> Result<HeartbeatStateRow, Invalid> {
    let previous = if s.previous == 0 {
        String::new()
    } else {
        label("heartbeat_state.previous", s.previous, status_label)?
    };
    Ok(HeartbeatStateRow {
        agent: ctx.agent.into(),
        ts: ctx.ts("heartbeat_state.ts_ms", s.ts_ms)?,
        check_id: uuid("heartbeat_state.check_id", &s.check_id)?,
        name: ctx.name("heartbeat_state.name", &s.name)?,
        status: label("heartbeat_state.status", s.status, status_label)?,
        previous,
        reason: text(ctx, "heartbeat_state.reason", &s.reason)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::validate::samples::tests::{Case, refused};

    const NOW: u64 = 1_800_000_000_000;
    const ID: &str = "5BF7E3C1-0F5E-4D3A-9C56-7D1B2E3F4A5B";

    fn check() -> HeartbeatCheck {
        HeartbeatCheck {
            ts_ms: NOW - 1000,
            check_id: ID.into(),
            project: "ops".into(),
            slug: "nightly-backup".into(),
            name: "Nightly backup".into(),
            tags: "backup prod".into(),
            period_s: 0,
            cron: "30 2 * * *".into(),
            tz: "Europe/Paris".into(),
            grace_s: 3600,
            paused: false,
            deleted: false,
            source: "config".into(),
            actor: "checks.toml".into(),
        }
    }

    fn ping() -> HeartbeatPing {
        HeartbeatPing {
            ts_ms: NOW - 1000,
            check_id: ID.into(),
            kind: PingKind::Exit as i32,
            exit_status: 3,
            rid: "0e6a1bb8-52a4-4b39-8d8e-3f4b1f0a9c11".into(),
            method: "POST".into(),
            remote: "10.0.0.7".into(),
            user_agent: "curl/8.5".into(),
            body: "rsync: connection refused\n\texit 3\n".into(),
            body_bytes: 40_000,
            duration_ms: 61_000,
        }
    }

    fn state() -> HeartbeatState {
        HeartbeatState {
            ts_ms: NOW - 1000,
            check_id: ID.into(),
            name: "Nightly backup".into(),
            status: HeartbeatStatus::Down as i32,
            previous: HeartbeatStatus::Grace as i32,
            reason: "no ping since 2027-01-15T02:30:00Z".into(),
        }
    }

    fn ctx(limits: &Limits) -> Ctx<'_> {
        Ctx {
            agent: "heartbeats",
            now_ms: NOW,
            limits,
        }
    }

    #[test]
    fn rows_keep_what_was_sent_with_ids_in_their_stored_form() {
        let limits = Limits::default();
        let row = check_check(&check(), &ctx(&limits)).expect("valid");
        assert_eq!(row.check_id, ID.to_ascii_lowercase());
        assert_eq!((row.period_s, row.cron.as_str()), (0, "30 2 * * *"));
        let row = check_ping(&ping(), &ctx(&limits)).expect("valid");
        assert_eq!((row.kind.as_str(), row.exit_status), ("exit", 3));
        assert_eq!(row.body, ping().body);
        let row = check_state(&state(), &ctx(&limits)).expect("valid");
        assert_eq!(
            (row.status.as_str(), row.previous.as_str()),
            ("down", "grace")
        );
        let first = HeartbeatState {
            previous: 0,
            ..state()
        };
        assert_eq!(
            check_state(&first, &ctx(&limits)).expect("valid").previous,
            ""
        );
        let period = HeartbeatCheck {
            period_s: 900,
            cron: String::new(),
            project: String::new(),
            slug: String::new(),
            ..check()
        };
        assert_eq!(
            check_check(&period, &ctx(&limits)).expect("valid").period_s,
            900
        );
    }

    #[test]
    fn each_wrong_check_field_is_named() {
        let cases: Vec<Case<HeartbeatCheck>> = vec![
            (
                |c| c.check_id = "nightly".into(),
                "heartbeat_check.check_id",
            ),
            (|c| c.project.clear(), "heartbeat_check.project"),
            (|c| c.slug.clear(), "heartbeat_check.slug"),
            (|c| c.slug = "Nightly Backup".into(), "heartbeat_check.slug"),
            (|c| c.name.clear(), "heartbeat_check.name"),
            (|c| c.cron.clear(), "heartbeat_check.period_s"),
            (|c| c.period_s = 60, "heartbeat_check.cron"),
            (
                |c| {
                    c.cron.clear();
                    c.period_s = MAX_SECONDS + 1;
                },
                "heartbeat_check.period_s",
            ),
            (|c| c.grace_s = 0, "heartbeat_check.grace_s"),
            (|c| c.tz = "x".repeat(300), "heartbeat_check.tz"),
            (|c| c.tz = "Mars/Olympus_Mons".into(), "heartbeat_check.tz"),
            (|c| c.cron = "61 * * * *".into(), "heartbeat_check.cron"),
            (|c| c.cron = "every day".into(), "heartbeat_check.cron"),
            (|c| c.source = "agent".into(), "heartbeat_check.source"),
            (|c| c.ts_ms = 0, "heartbeat_check.ts_ms"),
        ];
        refused(&check(), check_check, cases);
    }

    #[test]
    fn each_wrong_ping_or_state_field_is_named() {
        let cases: Vec<Case<HeartbeatPing>> = vec![
            (|p| p.kind = 0, "heartbeat_ping.kind"),
            (|p| p.exit_status = 256, "heartbeat_ping.exit_status"),
            (
                |p| p.kind = PingKind::Fail as i32,
                "heartbeat_ping.exit_status",
            ),
            (|p| p.rid = "run-1".into(), "heartbeat_ping.rid"),
            (|p| p.method = "PUT".into(), "heartbeat_ping.method"),
            (|p| p.body = "x".repeat(10_241), "heartbeat_ping.body"),
            (|p| p.body_bytes = 1, "heartbeat_ping.body_bytes"),
            (|p| p.check_id.clear(), "heartbeat_ping.check_id"),
        ];
        refused(&ping(), check_ping, cases);
        let cases: Vec<Case<HeartbeatState>> = vec![
            (|s| s.status = 0, "heartbeat_state.status"),
            (|s| s.previous = 42, "heartbeat_state.previous"),
            (|s| s.name.clear(), "heartbeat_state.name"),
            (|s| s.reason = "a\u{7}".into(), "heartbeat_state.reason"),
        ];
        refused(&state(), check_state, cases);
    }
}
