//! Validation of the watchdog's events (`livehead/v1/watchdog.proto`), sent
//! by the agents: from the wire message to its row, or the first thing wrong
//! named `watchdog.<field>`.
//!
//! Rules: `ts_ms` within the limits of every record; the app a name (at most
//! `limits.max_name_bytes`, no control characters); the kind known and not
//! UNSPECIFIED; a recovery step says how it ended (`step_end`), other kinds
//! say nothing of steps; an exit status or signal at most 255; reason and
//! command at most `limits.max_text_bytes`; the output at most
//! `limits.max_log_bytes`, any characters. Enums are stored as their
//! lowercase names (`recovery_step`, `timed_out`), `step_end` empty when
//! UNSPECIFIED.

use livehead_proto::v1::{StepEnd, WatchdogEvent, WatchdogEventKind};

use super::alerts::text;
use super::samples::Ctx;
use super::{Invalid, check_log, invalid, label};
use crate::store::samples::WatchdogEventRow;

/// The stored name of an event kind, `None` for UNSPECIFIED.
pub fn kind_label(kind: WatchdogEventKind) -> Option<&'static str> {
    use WatchdogEventKind as K;
    Some(match kind {
        K::Unspecified => return None,
        K::CheckFailed => "check_failed",
        K::RecoveryStarted => "recovery_started",
        K::RecoveryStep => "recovery_step",
        K::Recovered => "recovered",
        K::RecoveryFailed => "recovery_failed",
        K::Exhausted => "exhausted",
        K::Rearmed => "rearmed",
    })
}

/// The stored name of a step's end, `None` for UNSPECIFIED.
pub fn step_end_label(end: StepEnd) -> Option<&'static str> {
    Some(match end {
        StepEnd::Unspecified => return None,
        StepEnd::Exited => "exited",
        StepEnd::Signaled => "signaled",
        StepEnd::TimedOut => "timed_out",
        StepEnd::Cancelled => "cancelled",
        StepEnd::SpawnFailed => "spawn_failed",
    })
}

/// Highest exit status or signal number.
const MAX_EXIT_STATUS: u32 = 255;

pub fn check_watchdog(w: &WatchdogEvent, ctx: &Ctx<'_>) -> Result<WatchdogEventRow, Invalid> {
    let kind = label("watchdog.kind", w.kind, kind_label)?;
    let step = w.kind == WatchdogEventKind::RecoveryStep as i32;
    let step_end = match (step, w.step_end) {
        (true, _) => label("watchdog.step_end", w.step_end, step_end_label)?,
        (false, 0) => String::new(),
        (false, _) => {
            return Err(invalid(
                "watchdog.step_end",
                format!("set on a {kind} event (only recovery steps end)"),
            ));
        }
    };
    if w.exit_status > MAX_EXIT_STATUS {
        return Err(invalid(
            "watchdog.exit_status",
            format!("{} is over {MAX_EXIT_STATUS}", w.exit_status),
        ));
    }
    check_log("watchdog.output", &w.output, ctx.limits.max_log_bytes)?;
    Ok(WatchdogEventRow {
        node: ctx.agent.into(),
        ts: ctx.ts("watchdog.ts_ms", w.ts_ms)?,
        app: ctx.name("watchdog.app", &w.app)?,
        kind,
        attempt: w.attempt,
        reason: text(ctx, "watchdog.reason", &w.reason)?,
        command: text(ctx, "watchdog.command", &w.command)?,
        step_end,
        exit_status: w.exit_status,
        duration_ms: w.duration_ms,
        output: w.output.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::validate::samples::tests::{Case, refused};

    const NOW: u64 = 1_800_000_000_000;

    fn step() -> WatchdogEvent {
        WatchdogEvent {
            ts_ms: NOW - 1000,
            app: "shop".into(),
            kind: WatchdogEventKind::RecoveryStep as i32,
            attempt: 2,
            reason: String::new(),
            command: "pm2 restart shop".into(),
            step_end: StepEnd::TimedOut as i32,
            exit_status: 0,
            duration_ms: 30_000,
            output: "stopping\n\x1b[32mstarted\x1b[0m\n".into(),
        }
    }

    #[test]
    fn a_step_is_stored_with_its_output_as_it_is() {
        let limits = Limits::default();
        let ctx = Ctx {
            agent: "node-1",
            now_ms: NOW,
            limits: &limits,
        };
        let row = check_watchdog(&step(), &ctx).expect("valid");
        assert_eq!(row.node, "node-1");
        assert_eq!(row.kind, "recovery_step");
        assert_eq!(row.step_end, "timed_out");
        assert_eq!(row.output, step().output);
        let exhausted = WatchdogEvent {
            kind: WatchdogEventKind::Exhausted as i32,
            step_end: 0,
            output: String::new(),
            ..step()
        };
        let row = check_watchdog(&exhausted, &ctx).expect("valid");
        assert_eq!(
            (row.kind.as_str(), row.step_end.as_str()),
            ("exhausted", "")
        );
    }

    #[test]
    fn each_wrong_field_is_named() {
        let cases: Vec<Case<WatchdogEvent>> = vec![
            (|w| w.app.clear(), "watchdog.app"),
            (|w| w.kind = 0, "watchdog.kind"),
            (|w| w.kind = 99, "watchdog.kind"),
            (|w| w.step_end = 0, "watchdog.step_end"),
            (
                |w| w.kind = WatchdogEventKind::Recovered as i32,
                "watchdog.step_end",
            ),
            (|w| w.exit_status = 256, "watchdog.exit_status"),
            (|w| w.output = "x".repeat(10_241), "watchdog.output"),
            (|w| w.command = "a\nb".into(), "watchdog.command"),
            (|w| w.ts_ms = 0, "watchdog.ts_ms"),
        ];
        refused(&step(), check_watchdog, cases);
    }
}
