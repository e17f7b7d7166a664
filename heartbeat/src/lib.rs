#![doc = include_str!("../README.md")]
//!
//! # API
//!
//! Times are unix milliseconds passed in by the caller; nothing here reads
//! the clock, sleeps or does I/O.
//!
//! - [`CheckSpec::from_record`]`(&HeartbeatCheck)`: the schedule (a period,
//!   or a cron expression in a zone), the grace time and the pause flag of
//!   a check version; a [`ScheduleError`] names the field at fault
//!   (`period_s`, `cron`, `tz`, `grace_s`).
//! - [`Schedule::next_after`]`(last_ms)`: when the next ping is expected
//!   after a success at `last_ms`.
//! - [`Tracker`]: one per check, fed every ping in arrival order with
//!   [`Tracker::observe`] (returns the run's duration when an end pairs
//!   with its start). Then [`Tracker::status`]`(&spec, now)`,
//!   [`Tracker::reason`]`(&spec, now)` (one line: "no ping since …",
//!   "exit status 3", "started at … and never ended"),
//!   [`Tracker::next_change`]`(&spec, now)` (when to look again with no
//!   ping), [`Tracker::last_ping`] (with its body's tail). Serde: the
//!   alerter saves it.
//! - [`run_duration`]`(&start_ping, &end_ping)`: the same pairing rule for
//!   one pair, for the collector at ping time (it has the newest start ping
//!   of the check).
//! - [`Status`]: new, up, started, grace, down, paused; `as_str()`, and
//!   conversions to and from the wire's `HeartbeatStatus`.
//!
//! A collector listing checks without a saved tracker can fold the newest
//! ping of each kind in time order into a fresh `Tracker`: the status only
//! depends on the last end and the last start.

pub mod cron;
mod schedule;
mod status;
mod tracker;

pub use cron::{CronError, MAX_CRON_LEN};
pub use schedule::{CheckSpec, MAX_PERIOD, MIN_PERIOD, Schedule, ScheduleError};
pub use status::{Status, UnspecifiedStatus};
pub use tracker::{
    Action, BODY_TAIL_CHARS, LastPing, MAX_OPEN_RUNS, MAX_RUN_MS, Observed, Tracker, format_ms,
    run_duration,
};

#[cfg(test)]
mod tests;
