//! A [`WatchdogEvent`] as the record the collector stores (Record kind
//! `Watchdog`). Pure: the I/O is the agent's records channel.

use livehead_proto::v1 as pb;
use livehead_proto::v1::record::Kind;

use super::run::{EventKind, WatchdogEvent};
use super::step::{OUTPUT_TAIL_BYTES, StepOutcome};

/// Longest `reason` and `command` sent (their start is kept): the
/// collector's default `limits.max_text_bytes`, which refuses longer ones.
pub const MAX_TEXT_BYTES: usize = 2048;

/// The record of `event`.
pub fn to_record(event: &WatchdogEvent) -> pb::Record {
    pb::Record {
        kind: Some(Kind::Watchdog(to_proto(event))),
    }
}

/// The wire form of `event`: `StepOutcome` becomes `StepEnd` and
/// `exit_status`, argv is joined by spaces (a shell step's argv is its one
/// line), the output keeps its last [`OUTPUT_TAIL_BYTES`].
pub fn to_proto(event: &WatchdogEvent) -> pb::WatchdogEvent {
    use pb::WatchdogEventKind as K;
    let mut out = pb::WatchdogEvent {
        ts_ms: event.ts_ms,
        app: event.app.clone(),
        ..Default::default()
    };
    let kind = match &event.kind {
        EventKind::CheckFailed { reason } => {
            out.reason = head(reason, MAX_TEXT_BYTES);
            K::CheckFailed
        }
        EventKind::RecoveryStarted { attempt } => {
            out.attempt = *attempt;
            K::RecoveryStarted
        }
        EventKind::RecoveryStep { attempt, report } => {
            out.attempt = *attempt;
            out.command = head(&report.argv.join(" "), MAX_TEXT_BYTES);
            let (end, status, reason) = step_end(&report.outcome);
            out.step_end = end as i32;
            out.exit_status = status;
            out.reason = head(&reason, MAX_TEXT_BYTES);
            out.duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
            out.output = tail(&report.output_tail, OUTPUT_TAIL_BYTES);
            K::RecoveryStep
        }
        EventKind::Recovered { attempt } => {
            out.attempt = *attempt;
            K::Recovered
        }
        EventKind::RecoveryFailed { attempt, reason } => {
            out.attempt = *attempt;
            out.reason = head(reason, MAX_TEXT_BYTES);
            K::RecoveryFailed
        }
        EventKind::Exhausted { attempts, reason } => {
            out.attempt = *attempts;
            out.reason = head(reason, MAX_TEXT_BYTES);
            K::Exhausted
        }
        EventKind::Rearmed => K::Rearmed,
    };
    out.kind = kind as i32;
    out
}

/// `StepEnd`, `exit_status` (the code, or the signal) and the reason.
fn step_end(outcome: &StepOutcome) -> (pb::StepEnd, u32, String) {
    match outcome {
        // A code below 0 only stands for "no code and no signal".
        StepOutcome::Exited(code) => (
            pb::StepEnd::Exited,
            u32::try_from(*code).unwrap_or(255),
            String::new(),
        ),
        StepOutcome::Signaled(signal) => (
            pb::StepEnd::Signaled,
            u32::try_from(*signal).unwrap_or_default(),
            String::new(),
        ),
        StepOutcome::TimedOut => (pb::StepEnd::TimedOut, 0, "timed out".to_owned()),
        StepOutcome::Cancelled => (pb::StepEnd::Cancelled, 0, "agent stopping".to_owned()),
        StepOutcome::SpawnFailed(error) => (pb::StepEnd::SpawnFailed, 0, error.clone()),
    }
}

/// The first `max` bytes of `text` as one line, cut at a character
/// boundary: the collector refuses control characters in free text (a
/// multi-line shell step, an error with a newline) and would drop the
/// whole record.
fn head(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::watchdog::StepReport;

    fn event(kind: EventKind) -> pb::WatchdogEvent {
        let record = to_record(&WatchdogEvent {
            app: "web".into(),
            kind,
            ts_ms: 42,
        });
        let Some(Kind::Watchdog(event)) = record.kind else {
            panic!("{record:?}")
        };
        assert_eq!((event.app.as_str(), event.ts_ms), ("web", 42));
        event
    }

    fn step(argv: &[&str], outcome: StepOutcome, output: &str) -> EventKind {
        EventKind::RecoveryStep {
            attempt: 2,
            report: StepReport {
                argv: argv.iter().map(|&a| a.to_owned()).collect(),
                outcome,
                duration: Duration::from_millis(1500),
                output_tail: output.to_owned(),
            },
        }
    }

    #[test]
    fn every_kind_has_its_wire_kind_and_fields() {
        use pb::WatchdogEventKind as K;
        let failed = event(EventKind::CheckFailed {
            reason: "port 80 closed".into(),
        });
        assert_eq!(failed.kind(), K::CheckFailed);
        assert_eq!(
            (failed.attempt, failed.reason.as_str()),
            (0, "port 80 closed")
        );
        let started = event(EventKind::RecoveryStarted { attempt: 1 });
        assert_eq!((started.kind(), started.attempt), (K::RecoveryStarted, 1));
        let recovered = event(EventKind::Recovered { attempt: 3 });
        assert_eq!((recovered.kind(), recovered.attempt), (K::Recovered, 3));
        let no = event(EventKind::RecoveryFailed {
            attempt: 2,
            reason: "pid 7 is gone".into(),
        });
        assert_eq!(
            (no.kind(), no.attempt, no.reason.as_str()),
            (K::RecoveryFailed, 2, "pid 7 is gone")
        );
        let exhausted = event(EventKind::Exhausted {
            attempts: 3,
            reason: "down".into(),
        });
        assert_eq!(
            (
                exhausted.kind(),
                exhausted.attempt,
                exhausted.reason.as_str()
            ),
            (K::Exhausted, 3, "down")
        );
        let rearmed = event(EventKind::Rearmed);
        assert_eq!((rearmed.kind(), rearmed.attempt), (K::Rearmed, 0));
    }

    #[test]
    fn a_step_carries_its_command_end_status_duration_and_output() {
        let ok = event(step(
            &["systemctl", "restart", "web"],
            StepOutcome::Exited(0),
            "done\n",
        ));
        assert_eq!(ok.kind(), pb::WatchdogEventKind::RecoveryStep);
        assert_eq!(ok.command, "systemctl restart web");
        assert_eq!((ok.step_end(), ok.exit_status), (pb::StepEnd::Exited, 0));
        assert_eq!((ok.attempt, ok.duration_ms), (2, 1500));
        assert_eq!(ok.output, "done\n");
        let code = event(step(&["false"], StepOutcome::Exited(3), ""));
        assert_eq!(
            (code.step_end(), code.exit_status),
            (pb::StepEnd::Exited, 3)
        );
        let signal = event(step(&["x"], StepOutcome::Signaled(9), ""));
        assert_eq!(
            (signal.step_end(), signal.exit_status),
            (pb::StepEnd::Signaled, 9)
        );
        let shell = event(step(
            &["pm2 restart app && echo ok"],
            StepOutcome::TimedOut,
            "",
        ));
        assert_eq!(shell.command, "pm2 restart app && echo ok");
        assert_eq!(shell.step_end(), pb::StepEnd::TimedOut);
        assert_eq!(shell.reason, "timed out");
        let cancelled = event(step(&["x"], StepOutcome::Cancelled, ""));
        assert_eq!(cancelled.step_end(), pb::StepEnd::Cancelled);
        let spawn = event(step(
            &["/nope"],
            StepOutcome::SpawnFailed("No such file".into()),
            "",
        ));
        assert_eq!(
            (spawn.step_end(), spawn.reason.as_str()),
            (pb::StepEnd::SpawnFailed, "No such file")
        );
    }

    #[test]
    fn the_output_keeps_its_last_10_kb_and_texts_their_start() {
        let long = format!("{}é{}", "a".repeat(OUTPUT_TAIL_BYTES), "z".repeat(100));
        let e = event(step(&["x"], StepOutcome::Exited(0), &long));
        assert!(e.output.len() <= OUTPUT_TAIL_BYTES);
        assert!(e.output.ends_with(&"z".repeat(100)));
        let reason = "é".repeat(MAX_TEXT_BYTES);
        let e = event(EventKind::CheckFailed { reason });
        assert!(e.reason.len() <= MAX_TEXT_BYTES && e.reason.starts_with('é'));
        // One line: the collector refuses control characters in text.
        let e = event(step(
            &["if true; then\n\tpm2 restart web\nfi"],
            StepOutcome::Exited(0),
            "a\nb\n",
        ));
        assert_eq!(e.command, "if true; then  pm2 restart web fi");
        assert_eq!(e.output, "a\nb\n", "the output is a log: kept as it is");
    }
}
