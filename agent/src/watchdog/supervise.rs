//! The watchdog as the agent runs it: its events become records on the
//! agent's records channel (batched, spooled, shipped like every record),
//! a config reload (SIGHUP) restarts it with the file's new `[watchdog]`,
//! and the admin API ([`Admin`]) follows the running instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use livehead_common::Shutdown;
use livehead_common::roles::{AccessError, RoleTokens};
use livehead_proto::v1::Record;
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::{Notify, mpsc};

use super::admin::{Admin, TOKENS_KEY};
use super::config::{
    PermissionError, WatchdogConfig, WatchdogConfigError, check_config_permissions,
};
use super::record::to_record;
use super::run::{Control, EventKind, Rearm, WatchdogEvent, run_controlled};
use super::status::{Statuses, unix_ms};

/// Events waiting between the apps' tasks and the records channel.
const EVENTS_QUEUE: usize = 64;

/// Why a reloaded config is refused (the running watchdog stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the agent was started without --config: nothing to re-read")]
    NoFile,
    #[error(transparent)]
    File(#[from] livehead_common::config::ConfigError),
    #[error(transparent)]
    Watchdog(#[from] WatchdogConfigError),
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    #[error(transparent)]
    Tokens(#[from] AccessError),
}

/// The counters of the watchdog on the agent's `/metrics`.
#[derive(Clone)]
pub struct WatchdogMetrics {
    /// Events by kind (`check_failed`, `recovered`, ...).
    pub events: IntCounterVec,
    /// Reloads refused; the previous watchdog kept running.
    pub reloads_refused: IntCounter,
    /// Events that could not become records: the agent was stopping.
    pub events_dropped: IntCounter,
}

/// The admin tokens of `config`, checked.
pub fn admin_tokens(config: &WatchdogConfig) -> Result<RoleTokens, AccessError> {
    RoleTokens::new(TOKENS_KEY, &config.admin_tokens)
}

/// Re-reads `[watchdog]` from the agent's config file, checked as at
/// start: valid apps and tokens, and a file only its owner may write.
pub fn reload_config(file: Option<&Path>) -> Result<(WatchdogConfig, RoleTokens), ReloadError> {
    let file = file.ok_or(ReloadError::NoFile)?;
    let config: crate::AgentConfig = livehead_common::config::load_toml(file)?;
    let watchdog = config.watchdog;
    watchdog.validate()?;
    let tokens = admin_tokens(&watchdog)?;
    if !watchdog.apps.is_empty() {
        check_config_permissions(file)?;
    }
    Ok((watchdog, tokens))
}

/// What [`supervise`] needs besides the config.
pub struct Supervised {
    pub config_file: Option<PathBuf>,
    pub records: mpsc::Sender<Record>,
    pub metrics: WatchdogMetrics,
    pub admin: Admin,
    pub reload: Arc<Notify>,
}

/// Runs `config`'s watchdog until `shutdown`, restarting it on each
/// `reload` notification with the config file's new `[watchdog]`: fresh
/// state, so apps that were exhausted are re-armed (a `Rearmed` event
/// each). A refused file leaves the running watchdog alone.
pub async fn supervise(
    config: WatchdogConfig,
    tokens: RoleTokens,
    s: Supervised,
    shutdown: Shutdown,
) {
    let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUE);
    let forward = tokio::spawn(forward(
        events_rx,
        s.records,
        s.metrics.clone(),
        shutdown.clone(),
    ));
    let mut running = start(config, tokens, &events_tx, &s.admin, &shutdown);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = s.reload.notified() => {}
        }
        let (config, tokens) = match reload_config(s.config_file.as_deref()) {
            Ok(new) => new,
            Err(error) => {
                s.metrics.reloads_refused.inc();
                tracing::error!(%error, "watchdog: config not reloaded; the running watchdog stays");
                continue;
            }
        };
        let exhausted = running.stop().await;
        for app in exhausted {
            if config.apps.iter().any(|a| a.name == app) {
                let event = WatchdogEvent {
                    app,
                    kind: EventKind::Rearmed,
                    ts_ms: unix_ms(),
                };
                tracing::info!(app = %event.app, event = "rearmed", "watchdog: re-armed by a config reload");
                let _ = events_tx.send(event).await;
            }
        }
        tracing::info!(apps = config.apps.len(), "watchdog: config reloaded");
        running = start(config, tokens, &events_tx, &s.admin, &shutdown);
    }
    running.stop().await;
    drop(events_tx);
    let _ = forward.await;
}

/// One started watchdog instance.
struct Running {
    control: Control,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops it between checks (a running recovery finishes first) and
    /// returns the apps it left exhausted.
    async fn stop(mut self) -> Vec<String> {
        let exhausted = self.control.statuses.exhausted(Instant::now());
        self.control.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        exhausted
    }
}

fn start(
    config: WatchdogConfig,
    tokens: RoleTokens,
    events: &mpsc::Sender<WatchdogEvent>,
    admin: &Admin,
    shutdown: &Shutdown,
) -> Running {
    let control = Control {
        rearm: Rearm::default(),
        statuses: Statuses::default(),
        stop: shutdown.child_token(),
    };
    admin.replace(Some(control.clone()), tokens);
    let task = (!config.apps.is_empty()).then(|| {
        let (control, events, shutdown) = (control.clone(), events.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = run_controlled(config, events, control, shutdown).await {
                tracing::error!(%error, "watchdog stopped");
            }
        })
    });
    Running { control, task }
}

/// Turns events into records. A full records channel is waited for (the
/// batcher empties it into the spool, which never blocks: it drops its
/// oldest batches when full), so a recovery waits at most for the batcher;
/// only the agent stopping ends the wait.
async fn forward(
    mut events: mpsc::Receiver<WatchdogEvent>,
    records: mpsc::Sender<Record>,
    metrics: WatchdogMetrics,
    shutdown: Shutdown,
) {
    while let Some(event) = events.recv().await {
        metrics.events.with_label_values(&[event.kind.name()]).inc();
        let record = to_record(&event);
        let sent = tokio::select! {
            sent = records.send(record) => sent.is_ok(),
            () = shutdown.cancelled() => records.try_send(to_record(&event)).is_ok(),
        };
        if !sent {
            metrics.events_dropped.inc();
            tracing::warn!(app = %event.app, event = event.kind.name(), "watchdog event not sent: the agent is stopping");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use livehead_proto::v1::WatchdogEventKind as K;
    use livehead_proto::v1::record::Kind;

    use super::*;
    use crate::metrics::AgentMetrics;

    /// A guard against a hung test, not a speed goal.
    const GUARD: Duration = Duration::from_secs(20);

    fn app_toml(dir: &Path) -> String {
        format!(
            "[[watchdog.apps]]\nname = \"app\"\ninterval = \"20ms\"\npidfile = {:?}\n\
             failure_threshold = 1\nmax_recoveries = 1\nsettle = \"10ms\"\ncooldown = \"0s\"\n\
             [[watchdog.apps.recovery]]\nargv = [\"true\"]\n",
            dir.join("never.pid")
        )
    }

    fn write(file: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(file, text).expect("write");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    async fn until(rx: &mut mpsc::Receiver<Record>, kind: K) -> Vec<K> {
        let mut seen = Vec::new();
        tokio::time::timeout(GUARD, async {
            while let Some(record) = rx.recv().await {
                let Some(Kind::Watchdog(event)) = record.kind else {
                    continue;
                };
                seen.push(event.kind());
                if event.kind() == kind {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("records so far: {seen:?}"));
        seen
    }

    #[tokio::test]
    async fn a_reload_rearms_exhausted_apps_and_a_bad_file_keeps_the_watchdog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agent.toml");
        write(&file, &app_toml(dir.path()));
        let (config, tokens) = reload_config(Some(&file)).expect("valid file");
        let (records, mut rx) = mpsc::channel(256);
        let metrics = AgentMetrics::new().watchdog;
        let reload = Arc::new(Notify::new());
        let admin = Admin::default();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(supervise(
            config,
            tokens,
            Supervised {
                config_file: Some(file.clone()),
                records,
                metrics: metrics.clone(),
                admin,
                reload: reload.clone(),
            },
            shutdown.clone(),
        ));
        let first = until(&mut rx, K::Exhausted).await;
        assert_eq!(first[..2], [K::CheckFailed, K::RecoveryStarted]);
        assert_eq!(metrics.events.with_label_values(&["exhausted"]).get(), 1);

        // Not valid TOML for the agent: refused, the exhausted app stays so.
        write(&file, "[watchdog]\nunknown = 1\n");
        reload.notify_one();
        tokio::time::timeout(GUARD, async {
            while metrics.reloads_refused.get() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the bad file is refused");
        assert!(rx.try_recv().is_err(), "nothing restarted");

        write(&file, &app_toml(dir.path()));
        reload.notify_one();
        let again = until(&mut rx, K::RecoveryStarted).await;
        assert_eq!(again[0], K::Rearmed, "{again:?}");
        shutdown.cancel();
        tokio::time::timeout(GUARD, task)
            .await
            .expect("stops")
            .expect("task");
    }

    #[test]
    fn a_reload_checks_the_file_as_the_start_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(reload_config(None), Err(ReloadError::NoFile)));
        let file = dir.path().join("agent.toml");
        write(&file, &app_toml(dir.path()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(
            reload_config(Some(&file)),
            Err(ReloadError::Permissions(_))
        ));
        write(&file, &app_toml(dir.path()).replace("[\"true\"]", "[]"));
        assert!(matches!(
            reload_config(Some(&file)),
            Err(ReloadError::Watchdog(_))
        ));
        write(
            &file,
            "[watchdog]\nadmin_tokens = [{ name = \"x\", sha256 = \"short\", role = \"admin\" }]\n",
        );
        assert!(matches!(
            reload_config(Some(&file)),
            Err(ReloadError::Tokens(_))
        ));
    }
}
