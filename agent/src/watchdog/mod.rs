//! The watchdog: checks local apps (a process, a pidfile, a TCP port, an
//! HTTP URL, available memory) and runs their configured recovery steps
//! when they keep failing, with loop protection (threshold, cooldown,
//! exhaustion). `config` is `[watchdog]`, `state` the pure decision logic,
//! `check` and `step` the I/O of checks and recovery commands, `run` the
//! loop that ties them and reports [`WatchdogEvent`]s.
//!
//! It never runs anything not in its configuration, and refuses a config
//! file others may write ([`check_config_permissions`]).

pub mod check;
pub mod config;
pub mod run;
pub mod state;
pub mod step;

pub use config::{
    AppConfig, HttpCheck, MemoryFloor, PermissionError, RecoveryStep, WatchdogConfig,
    WatchdogConfigError, check_config_permissions,
};
pub use run::{EventKind, Rearm, WatchdogEvent, run, run_with_rearm};
pub use step::{StepOutcome, StepReport};
