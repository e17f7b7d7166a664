//! The watchdog's I/O edge: one task per app checks it at its interval,
//! feeds the outcome to its [`AppState`], runs the recovery steps it asks
//! for, and reports every step as a [`WatchdogEvent`].

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use livehead_common::Shutdown;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, mpsc};

use super::check::check_app;
use super::config::{AppConfig, WatchdogConfig, WatchdogConfigError};
use super::state::{AppState, Decision, Limits};
use super::status::Statuses;
use super::step::{StepOutcome, StepReport, run_step};

/// Something the watchdog saw or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogEvent {
    /// The app's configured name.
    pub app: String,
    pub kind: EventKind,
    /// When it happened, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A check failed (the first failing check's reason).
    CheckFailed { reason: String },
    /// Recovery number `attempt` (1 after a success) starts.
    RecoveryStarted { attempt: u32 },
    /// One recovery step of recovery number `attempt` ran.
    RecoveryStep { attempt: u32, report: StepReport },
    /// The check after `settle` passed.
    Recovered { attempt: u32 },
    /// The check after `settle` failed.
    RecoveryFailed { attempt: u32, reason: String },
    /// `attempts` recoveries in a row failed: the watchdog leaves the app
    /// alone until re-armed ([`Rearm::app`], or the agent's restart).
    /// `reason` is the last failed check's.
    Exhausted { attempts: u32, reason: String },
    /// A person re-armed the exhausted app: checks and recoveries resume.
    Rearmed,
}

impl EventKind {
    /// A stable name for logs and, later, the record kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CheckFailed { .. } => "check_failed",
            Self::RecoveryStarted { .. } => "recovery_started",
            Self::RecoveryStep { .. } => "recovery_step",
            Self::Recovered { .. } => "recovered",
            Self::RecoveryFailed { .. } => "recovery_failed",
            Self::Exhausted { .. } => "exhausted",
            Self::Rearmed => "rearmed",
        }
    }
}

/// Re-arms exhausted apps while [`run_with_rearm`] runs: the hook for an
/// admin API call.
#[derive(Debug, Clone)]
pub struct Rearm(broadcast::Sender<String>);

impl Default for Rearm {
    fn default() -> Self {
        Self(broadcast::channel(16).0)
    }
}

impl Rearm {
    /// Re-arms the app named `name` if it is exhausted (else does nothing).
    /// False when no watchdog is running.
    pub fn app(&self, name: &str) -> bool {
        self.0.send(name.to_owned()).is_ok()
    }

    /// The requests, as an app's task receives them.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

/// Watches every app of `config` until `shutdown` fires. Events go to
/// `events` (a full channel slows the watchdog down; a closed one is
/// ignored) and to the log. An exhausted app stays so until the agent
/// restarts; see [`run_with_rearm`].
pub async fn run(
    config: WatchdogConfig,
    events: mpsc::Sender<WatchdogEvent>,
    shutdown: Shutdown,
) -> Result<(), WatchdogConfigError> {
    run_with_rearm(config, events, &Rearm::default(), shutdown).await
}

/// [`run`], with exhausted apps re-armed through `rearm`.
pub async fn run_with_rearm(
    config: WatchdogConfig,
    events: mpsc::Sender<WatchdogEvent>,
    rearm: &Rearm,
    shutdown: Shutdown,
) -> Result<(), WatchdogConfigError> {
    let control = Control {
        rearm: rearm.clone(),
        statuses: Statuses::default(),
        stop: shutdown.clone(),
    };
    run_controlled(config, events, control, shutdown).await
}

/// How the agent steers a running watchdog: re-arms, the apps' statuses
/// for the admin API, and `stop`, which ends it between checks (a config
/// reload) without interrupting a recovery that runs: only `shutdown`
/// (the agent stopping) kills a running step.
#[derive(Debug, Clone)]
pub struct Control {
    pub rearm: Rearm,
    pub statuses: Statuses,
    pub stop: Shutdown,
}

/// [`run_with_rearm`], steered by `control`.
pub async fn run_controlled(
    config: WatchdogConfig,
    events: mpsc::Sender<WatchdogEvent>,
    control: Control,
    shutdown: Shutdown,
) -> Result<(), WatchdogConfigError> {
    config.validate()?;
    let mut tasks = tokio::task::JoinSet::new();
    for app in config.apps {
        tracing::info!(app = %app.name, interval = ?app.interval, steps = app.recovery.len(), "watchdog: watching");
        let task = AppTask {
            rearm: control.rearm.subscribe(),
            statuses: control.statuses.clone(),
            stop: control.stop.clone(),
            shutdown: shutdown.clone(),
        };
        control.statuses.publish(&app.name, |_| {});
        tasks.spawn(watch_app(app, events.clone(), task));
    }
    drop(events);
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "watchdog: an app's task ended abnormally");
        }
    }
    Ok(())
}

/// What one app's task listens to besides its config.
struct AppTask {
    rearm: broadcast::Receiver<String>,
    statuses: Statuses,
    stop: Shutdown,
    shutdown: Shutdown,
}

async fn watch_app(app: AppConfig, events: mpsc::Sender<WatchdogEvent>, mut task: AppTask) {
    let emit = Emitter {
        app: &app.name,
        events: &events,
    };
    let mut state = AppState::new(Limits::from(&app));
    let mut next = Instant::now();
    loop {
        task.statuses.set_state(&app.name, &state);
        tokio::select! {
            () = task.stop.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let outcome = tokio::select! {
            () = task.stop.cancelled() => return,
            outcome = check_app(&app, Path::new("/proc")) => outcome,
        };
        let now = Instant::now();
        task.statuses.checked(&app.name, outcome.as_ref().err());
        if let Err(reason) = &outcome {
            emit.send(EventKind::CheckFailed {
                reason: reason.clone(),
            })
            .await;
        }
        next = now + app.interval;
        match state.on_check(now, outcome.is_ok()) {
            Decision::Recover { attempt } => {
                task.statuses.set_state(&app.name, &state);
                task.statuses.publish(&app.name, |s| s.recoveries += 1);
                emit.send(EventKind::RecoveryStarted { attempt }).await;
                if !recover(&app, attempt, &emit, &task.shutdown).await {
                    return;
                }
                if let Decision::Verify { at } = state.recovery_finished(Instant::now()) {
                    next = at;
                }
            }
            Decision::Recovered { attempt } => {
                task.statuses.publish(&app.name, |s| s.recovered += 1);
                emit.send(EventKind::Recovered { attempt }).await;
            }
            Decision::RecoveryFailed { attempt } => {
                let reason = outcome.err().unwrap_or_default();
                emit.send(EventKind::RecoveryFailed { attempt, reason })
                    .await;
            }
            Decision::Exhausted { attempts } => {
                let reason = outcome.err().unwrap_or_default();
                if !exhausted(attempts, reason, &emit, &state, &mut task).await {
                    return;
                }
                state.rearm();
                next = Instant::now();
            }
            Decision::Nothing | Decision::Verify { .. } => {}
        }
    }
}

/// Reports the exhaustion and waits until the app is re-armed (true) or
/// the watchdog stops (false).
async fn exhausted(
    attempts: u32,
    reason: String,
    emit: &Emitter<'_>,
    state: &AppState,
    task: &mut AppTask,
) -> bool {
    // Requests sent before this exhaustion are not for it; one sent once
    // the status says exhausted is.
    while !matches!(
        task.rearm.try_recv(),
        Err(TryRecvError::Empty | TryRecvError::Closed)
    ) {}
    task.statuses.set_state(emit.app, state);
    emit.send(EventKind::Exhausted { attempts, reason }).await;
    let rearmed = rearmed(emit.app, &mut task.rearm, &task.stop).await;
    if rearmed {
        emit.send(EventKind::Rearmed).await;
    }
    rearmed
}

/// Waits until `name` is re-armed (true) or the watchdog stops (false).
async fn rearmed(name: &str, rearm: &mut broadcast::Receiver<String>, stop: &Shutdown) -> bool {
    use broadcast::error::RecvError;
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            request = rearm.recv() => match request {
                Ok(app) if app == name => return true,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    stop.cancelled().await;
                    return false;
                }
            },
        }
    }
}

/// Runs the steps in order, stopping at the first that does not succeed;
/// false when the agent is stopping.
async fn recover(app: &AppConfig, attempt: u32, emit: &Emitter<'_>, shutdown: &Shutdown) -> bool {
    for step in &app.recovery {
        let report = run_step(step, shutdown).await;
        let (ok, cancelled) = (
            report.outcome.succeeded(),
            report.outcome == StepOutcome::Cancelled,
        );
        emit.send(EventKind::RecoveryStep { attempt, report }).await;
        if cancelled {
            return false;
        }
        if !ok {
            break;
        }
    }
    true
}

struct Emitter<'a> {
    app: &'a str,
    events: &'a mpsc::Sender<WatchdogEvent>,
}

impl Emitter<'_> {
    async fn send(&self, kind: EventKind) {
        log(self.app, &kind);
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let event = WatchdogEvent {
            app: self.app.to_owned(),
            kind,
            ts_ms,
        };
        // A closed channel means nobody forwards events; the log has them.
        let _ = self.events.send(event).await;
    }
}

fn log(app: &str, kind: &EventKind) {
    let event = kind.name();
    match kind {
        EventKind::CheckFailed { reason } => {
            tracing::warn!(app, event, %reason, "watchdog: check failed")
        }
        EventKind::RecoveryStarted { attempt } => {
            tracing::warn!(app, event, attempt, "watchdog: recovery started")
        }
        EventKind::RecoveryStep { report: r, .. } => {
            let outcome = format!("{:?}", r.outcome);
            let tail = r.output_tail.lines().last().unwrap_or_default();
            if r.outcome.succeeded() {
                tracing::info!(app, event, argv = ?r.argv, outcome, duration = ?r.duration, last_output_line = tail, "watchdog: recovery step");
            } else {
                tracing::warn!(app, event, argv = ?r.argv, outcome, duration = ?r.duration, last_output_line = tail, "watchdog: recovery step failed");
            }
        }
        EventKind::Recovered { attempt } => {
            tracing::info!(app, event, attempt, "watchdog: app recovered")
        }
        EventKind::RecoveryFailed { attempt, reason } => {
            tracing::warn!(app, event, attempt, %reason, "watchdog: recovery did not bring the app back");
        }
        EventKind::Exhausted { attempts, reason } => {
            tracing::error!(
                app,
                event,
                attempts,
                %reason,
                "watchdog: recovery exhausted; leaving the app alone until re-armed"
            );
        }
        EventKind::Rearmed => tracing::info!(app, event, "watchdog: re-armed"),
    }
}
