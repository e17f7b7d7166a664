//! A check's pings folded into what its status needs, Healthchecks' way
//! (`Check.ping`, `Check.get_status`, `Check.going_down_after`).

use chrono::{DateTime, SecondsFormat, Utc};
use livehead_proto::v1::{HeartbeatPing, PingKind};
use serde::{Deserialize, Serialize};

use crate::schedule::CheckSpec;
use crate::status::Status;

/// A start older than this is not paired with an end: no duration
/// (Healthchecks' MAX_DURATION).
pub const MAX_RUN_MS: u64 = 72 * 3600 * 1000;
/// Starts kept waiting for their end (overlapping runs with `rid`); the
/// oldest is dropped past it.
pub const MAX_OPEN_RUNS: usize = 32;
/// The last ping's body is kept to its last this many characters (the
/// alert message's log tail).
pub const BODY_TAIL_CHARS: usize = 1000;

/// What a ping does to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `/ping/<id>` or exit status 0.
    Success,
    Start,
    /// `/fail` (no exit status) or an exit status 1-255.
    Fail {
        exit_status: Option<u32>,
    },
    /// `/log`: kept, changes no status.
    Log,
}

impl Action {
    /// None for PING_KIND_UNSPECIFIED or an unknown kind (the collector
    /// refuses them).
    pub fn of(ping: &HeartbeatPing) -> Option<Action> {
        Some(match PingKind::try_from(ping.kind).ok()? {
            PingKind::Unspecified => return None,
            PingKind::Success => Action::Success,
            PingKind::Start => Action::Start,
            PingKind::Fail => Action::Fail { exit_status: None },
            PingKind::Log => Action::Log,
            PingKind::Exit if ping.exit_status == 0 => Action::Success,
            PingKind::Exit => Action::Fail {
                exit_status: Some(ping.exit_status),
            },
        })
    }

    fn is_end(self) -> bool {
        matches!(self, Action::Success | Action::Fail { .. })
    }
}

/// The last ping of a check, any kind, as the alert message shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPing {
    pub ts_ms: u64,
    pub action: Action,
    pub rid: String,
    /// The body's last BODY_TAIL_CHARS characters.
    pub body_tail: String,
    /// The body's full size as the collector saw it.
    pub body_bytes: u64,
}

/// What observing a ping told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// An end ping paired with its start: the run's duration.
    pub duration_ms: Option<u64>,
    /// False when the ping was left out: an unknown kind, or older than a
    /// ping already observed (the snapshot and the live stream overlap).
    pub applied: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Start {
    ts_ms: u64,
    rid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct End {
    ts_ms: u64,
    action: Action,
}

/// One check's state, folded from its pings in arrival order. Saved by
/// the alerter (serde) so a restart neither forgets nor re-alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tracker {
    /// The last success or failure (Healthchecks' `last_ping` + stored
    /// up/down); None while new.
    last_end: Option<End>,
    /// The newest start not ended (Healthchecks' `last_start`, `_rid`).
    last_start: Option<Start>,
    /// Starts waiting for their end, oldest first: durations of
    /// overlapping runs.
    open_runs: Vec<Start>,
    last_ping: Option<LastPing>,
}

/// Unix ms as "2026-12-07T03:00:00Z".
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

fn tail_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

/// The duration of the run `end` closes, if `start` opened it: a start
/// ping, the same `rid` (both may be empty), at most MAX_RUN_MS before.
/// The collector calls it at ping time with the newest start ping.
pub fn run_duration(start: &HeartbeatPing, end: &HeartbeatPing) -> Option<u64> {
    let ends = Action::of(end).is_some_and(Action::is_end);
    let starts = Action::of(start) == Some(Action::Start);
    if !ends || !starts || start.rid != end.rid {
        return None;
    }
    let d = end.ts_ms.checked_sub(start.ts_ms)?;
    (d <= MAX_RUN_MS).then_some(d)
}

impl Tracker {
    /// A tracker that has seen nothing: new.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Fold one ping in.
    pub fn observe(&mut self, ping: &HeartbeatPing) -> Observed {
        let Some(action) = Action::of(ping) else {
            return Observed::default();
        };
        if self
            .last_ping
            .as_ref()
            .is_some_and(|l| ping.ts_ms < l.ts_ms)
        {
            return Observed::default();
        }
        self.last_ping = Some(LastPing {
            ts_ms: ping.ts_ms,
            action,
            rid: ping.rid.clone(),
            body_tail: tail_chars(&ping.body, BODY_TAIL_CHARS),
            body_bytes: ping.body_bytes,
        });
        let duration_ms = match action {
            Action::Log => None,
            Action::Start => {
                self.start(ping.ts_ms, &ping.rid);
                None
            }
            Action::Success | Action::Fail { .. } => self.end(ping.ts_ms, &ping.rid, action),
        };
        Observed {
            duration_ms,
            applied: true,
        }
    }

    fn start(&mut self, ts_ms: u64, rid: &str) {
        let start = Start {
            ts_ms,
            rid: rid.to_owned(),
        };
        self.last_start = Some(start.clone());
        self.open_runs.retain(|s| s.rid != rid);
        self.open_runs.push(start);
        if self.open_runs.len() > MAX_OPEN_RUNS {
            self.open_runs.remove(0);
        }
    }

    fn end(&mut self, ts_ms: u64, rid: &str, action: Action) -> Option<u64> {
        // Healthchecks: a matching rid ends the run; a failure, or a
        // success without rid, ends whatever run was going on.
        if let Some(s) = &self.last_start {
            let fail = matches!(action, Action::Fail { .. });
            if s.rid == rid || fail || rid.is_empty() {
                self.last_start = None;
            }
        }
        self.last_end = Some(End { ts_ms, action });
        self.open_runs
            .retain(|s| ts_ms.saturating_sub(s.ts_ms) <= MAX_RUN_MS);
        let i = self.open_runs.iter().rposition(|s| s.rid == rid)?;
        let start = self.open_runs.remove(i);
        ts_ms.checked_sub(start.ts_ms)
    }

    /// Forget the runs and the last end, as Healthchecks' resume does: the
    /// check is new until its next ping (call it when a check is unpaused).
    pub fn resume(&mut self) {
        self.last_end = None;
        self.last_start = None;
        self.open_runs.clear();
    }

    /// The last ping observed, any kind.
    pub fn last_ping(&self) -> Option<&LastPing> {
        self.last_ping.as_ref()
    }

    /// When the grace time starts after the last success: the next expected
    /// ping. None while new, down by failure, or never expected again.
    pub fn next_expected(&self, spec: &CheckSpec) -> Option<u64> {
        match self.last_end {
            Some(End {
                ts_ms,
                action: Action::Success,
            }) => spec.schedule.next_after(ts_ms),
            _ => None,
        }
    }

    /// The status at `now_ms`.
    pub fn status(&self, spec: &CheckSpec, now_ms: u64) -> Status {
        if spec.paused {
            return Status::Paused;
        }
        if let Some(s) = &self.last_start {
            return if now_ms >= s.ts_ms.saturating_add(spec.grace_ms()) {
                Status::Down
            } else {
                Status::Started
            };
        }
        match self.last_end {
            None => Status::New,
            Some(End {
                action: Action::Fail { .. },
                ..
            }) => Status::Down,
            Some(_) => match self.next_expected(spec) {
                None => Status::Up,
                Some(due) if now_ms >= due.saturating_add(spec.grace_ms()) => Status::Down,
                Some(due) if now_ms >= due => Status::Grace,
                Some(_) => Status::Up,
            },
        }
    }

    /// The next instant after `now_ms` at which the status may change with
    /// no ping (the alerter's timer). It may be an instant where nothing
    /// changes after all: call `status` then and ask again.
    pub fn next_change(&self, spec: &CheckSpec, now_ms: u64) -> Option<u64> {
        if spec.paused {
            return None;
        }
        let grace = spec.grace_ms();
        let run_end = self
            .last_start
            .as_ref()
            .map(|s| s.ts_ms.saturating_add(grace));
        let due = self.next_expected(spec);
        [run_end, due, due.map(|d| d.saturating_add(grace))]
            .into_iter()
            .flatten()
            .filter(|t| *t > now_ms)
            .min()
    }

    /// Why the check has its status at `now_ms`, in one line.
    pub fn reason(&self, spec: &CheckSpec, now_ms: u64) -> String {
        let status = self.status(spec, now_ms);
        match (status, &self.last_start, self.last_end) {
            (Status::Paused, ..) => "paused".into(),
            (Status::New, ..) => "never pinged".into(),
            (Status::Started, Some(s), _) => format!("started at {}", format_ms(s.ts_ms)),
            (Status::Down, Some(s), _) => {
                format!("started at {} and never ended", format_ms(s.ts_ms))
            }
            (_, _, Some(end)) => end_reason(status, end, self.next_expected(spec)),
            _ => status.as_str().into(),
        }
    }
}

fn end_reason(status: Status, end: End, due: Option<u64>) -> String {
    match (status, end.action) {
        (
            _,
            Action::Fail {
                exit_status: Some(n),
            },
        ) => format!("exit status {n}"),
        (_, Action::Fail { exit_status: None }) => {
            format!("failure reported at {}", format_ms(end.ts_ms))
        }
        (Status::Grace, _) => format!(
            "no ping since {}, expected at {}",
            format_ms(end.ts_ms),
            due.map_or_else(|| "?".into(), format_ms)
        ),
        (Status::Down, _) => format!("no ping since {}", format_ms(end.ts_ms)),
        _ => format!("last ping at {}", format_ms(end.ts_ms)),
    }
}
