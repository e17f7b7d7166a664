//! The watchdog: checks local apps (a process, a pidfile, a TCP port, an
//! HTTP URL, available memory) and runs their configured recovery steps
//! when they keep failing, with loop protection (threshold, cooldown,
//! exhaustion). `config` is `[watchdog]`, `state` the pure decision logic,
//! `check` and `step` the I/O of checks and recovery commands, `run` the
//! loop that ties them and reports [`WatchdogEvent`]s; `record` turns them
//! into the records the collector stores, `supervise` runs the watchdog in
//! the agent (records, reload on SIGHUP) and `admin` is its HTTP API.
//!
//! It never runs anything not in its configuration, and refuses a config
//! file others may write ([`check_config_permissions`]).

pub mod admin;
pub mod check;
pub mod config;
pub mod record;
pub mod run;
pub mod state;
pub mod status;
pub mod step;
pub mod supervise;

pub use admin::Admin;
pub use config::{
    AppConfig, HttpCheck, MemoryFloor, PermissionError, RecoveryStep, WatchdogConfig,
    WatchdogConfigError, check_config_permissions,
};
pub use run::{Control, EventKind, Rearm, WatchdogEvent, run, run_controlled, run_with_rearm};
pub use state::AppPhase;
pub use status::{AppStatus, Statuses};
pub use step::{StepOutcome, StepReport};
pub use supervise::{ReloadError, Supervised, WatchdogMetrics, supervise};
