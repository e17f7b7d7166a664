//! When the next ping of a check is expected: a period, or a cron
//! expression in a time zone; and the check's definition as the status
//! logic needs it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use livehead_proto::v1::HeartbeatCheck;

use crate::cron::{Cron, CronError};

/// Shortest period and grace time accepted (Healthchecks' bounds).
pub const MIN_PERIOD: Duration = Duration::from_secs(60);
/// Longest period and grace time accepted (Healthchecks' bounds): 365 days.
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a check's schedule is refused; `field()` names the record's field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("period_s: {0}")]
    Period(String),
    #[error("cron: {0}")]
    Cron(#[from] CronError),
    #[error("tz: unknown time zone {0:?}")]
    Tz(String),
    #[error("grace_s: {0}")]
    Grace(String),
}

impl ScheduleError {
    /// The HeartbeatCheck field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Period(_) => "period_s",
            ScheduleError::Cron(_) => "cron",
            ScheduleError::Tz(_) => "tz",
            ScheduleError::Grace(_) => "grace_s",
        }
    }
}

/// When pings are expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// One ping every period.
    Period(Duration),
    /// At the times of a cron expression in a zone.
    Cron(Cron),
}

fn check_bounds(d: Duration) -> Result<(), String> {
    if d < MIN_PERIOD || d > MAX_PERIOD {
        return Err(format!(
            "{} s is outside {}..={} s",
            d.as_secs(),
            MIN_PERIOD.as_secs(),
            MAX_PERIOD.as_secs()
        ));
    }
    Ok(())
}

impl Schedule {
    /// A period check; the period is within MIN_PERIOD..=MAX_PERIOD.
    pub fn period(period: Duration) -> Result<Schedule, ScheduleError> {
        check_bounds(period).map_err(ScheduleError::Period)?;
        Ok(Schedule::Period(period))
    }

    /// A cron check: a five-field expression (see [`crate::cron`]) read in
    /// the IANA zone `tz` ("UTC" when empty).
    pub fn cron(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let zone = parse_tz(tz)?;
        Ok(Schedule::Cron(Cron::new(expr, zone)?))
    }

    /// When the next ping is expected after a ping at `last_ms` (unix ms);
    /// None when a cron expression never fires again.
    pub fn next_after(&self, last_ms: u64) -> Option<u64> {
        match self {
            Schedule::Period(p) => {
                Some(last_ms.saturating_add(u64::try_from(p.as_millis()).unwrap_or(u64::MAX)))
            }
            Schedule::Cron(c) => {
                let last = DateTime::<Utc>::from_timestamp_millis(i64::try_from(last_ms).ok()?)?;
                let next = c.next_after(last)?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

fn parse_tz(tz: &str) -> Result<Tz, ScheduleError> {
    if tz.is_empty() {
        return Ok(Tz::UTC);
    }
    tz.parse::<Tz>()
        .map_err(|_| ScheduleError::Tz(tz.chars().take(64).collect()))
}

/// What the status of a check depends on, from its newest HeartbeatCheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub schedule: Schedule,
    /// How late a ping may be, and how long a run may last, before the
    /// check is down.
    pub grace: Duration,
    pub paused: bool,
}

impl CheckSpec {
    /// The spec of a check version. Exactly one of `period_s` and `cron`
    /// is set; `grace_s` is within MIN_PERIOD..=MAX_PERIOD.
    pub fn from_record(check: &HeartbeatCheck) -> Result<CheckSpec, ScheduleError> {
        let schedule = match (check.period_s, check.cron.is_empty()) {
            (0, true) => {
                return Err(ScheduleError::Period(
                    "set period_s or cron (neither is set)".into(),
                ));
            }
            (_, false) if check.period_s != 0 => {
                return Err(ScheduleError::Period(
                    "set period_s or cron, not both".into(),
                ));
            }
            (0, false) => Schedule::cron(&check.cron, &check.tz)?,
            (p, _) => Schedule::period(Duration::from_secs(p))?,
        };
        let grace = Duration::from_secs(check.grace_s);
        check_bounds(grace).map_err(ScheduleError::Grace)?;
        Ok(CheckSpec {
            schedule,
            grace,
            paused: check.paused,
        })
    }

    pub(crate) fn grace_ms(&self) -> u64 {
        u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX)
    }
}
