//! `livehead alerter`: the collectors' streams feed the rules engine, whose
//! changes go through the lifecycle to the receivers, and the alert records
//! go to the store through a collector. One loop owns the engine and the
//! dispatcher; the HTTP API shares the lifecycle with it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use livehead_agent::metrics::AgentMetrics;
use livehead_agent::ship::Shipper;
use livehead_common::Shutdown;
use livehead_common::http_server::HttpLimits;
use livehead_common::listener::ListenerMetrics;
use livehead_common::tls::live::ReloadMetrics;
use livehead_proto::v1::Record;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::{Notify, mpsc};

use crate::access::Access;
use crate::api::{self, Shared};
use crate::config::AlerterConfig;
use crate::file::{FileError, RulesFile};
use crate::heartbeats::Heartbeats;
use crate::lifecycle::{Lifecycle, LifecycleError, SavedState, StateError};
use crate::model::AlertChange;
use crate::receivers::now_ms;
use crate::rules::Engine;
use crate::watch::{self, Input, WatchMetrics};
use crate::watchdog::{self, Watchdogs};
use crate::{DeliveryMetrics, DeliveryReport, Dispatcher, Notification, Receiver};

#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    #[error("no rules file: set `rules` (--rules, LIVEHEAD_RULES)")]
    NoRules,
    #[error(transparent)]
    Rules(#[from] FileError),
    #[error("state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    Receivers(#[from] crate::ReceiverError),
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error("the alert records' path to the store")]
    Ship(#[from] livehead_agent::AgentError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started alerter: where its API listens, and its task.
pub struct Running {
    pub api_addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), AlerterError>>,
}

impl Running {
    /// Waits until the alerter stopped (after `shutdown`).
    pub async fn wait(self) -> Result<(), AlerterError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "the alerter's task failed");
                Ok(())
            }
        }
    }
}

/// Runs the alerter until `shutdown`; `reload` (SIGHUP) re-reads the rules.
pub async fn run(
    config: AlerterConfig,
    shutdown: Shutdown,
    reload: Arc<Notify>,
) -> Result<(), AlerterError> {
    start(config, shutdown, reload).await?.wait().await
}

/// Checks everything, binds the API and starts the loop.
pub async fn start(
    config: AlerterConfig,
    shutdown: Shutdown,
    reload: Arc<Notify>,
) -> Result<Running, AlerterError> {
    let rules_path = config.rules.clone().ok_or(AlerterError::NoRules)?;
    let file = RulesFile::load(&rules_path)?;
    create_state_dir(&config)?;
    let state_file = config.state_file();
    let saved = SavedState::load(&state_file)?;
    let heartbeats = Heartbeats::new(
        &config.heartbeats,
        saved
            .as_ref()
            .map(|s| s.heartbeats.clone())
            .unwrap_or_default(),
    );
    let now = now_ms();
    let lifecycle = Lifecycle::new(&file, saved, now)?;
    let mut engine = Engine::new(&file.rules);
    let mut restored = 0;
    // The watchdog's and the heartbeat checks' alerts are built in: no
    // rule of the engine makes them (it would resolve them).
    for (key, condition, since) in lifecycle.active() {
        if !watchdog::is_builtin(&key.rule) && !Heartbeats::is_heartbeat(key) {
            engine.restore(key, condition, since);
        }
        restored += 1;
    }
    let mut watchdogs = Watchdogs::default();
    watchdogs.restore(&lifecycle.alerts(now));
    let registry = livehead_common::metrics::registry("livehead_alerter");
    let shared = Shared::new(
        lifecycle,
        Access::new(&config.api.tokens)?,
        registry.clone(),
    )?;
    let (reports_tx, reports) = mpsc::channel(4096);
    let delivery_metrics = DeliveryMetrics::new(&registry)?;
    let dispatcher = Dispatcher::start(
        file.receivers.clone(),
        delivery_metrics.clone(),
        Some(reports_tx.clone()),
    )?;

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| AlerterError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| AlerterError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let metrics = LoopMetrics::new(&registry);
    tokio::spawn(livehead_common::http_server::serve(
        listener,
        api::router(shared.clone()),
        shutdown.clone(),
        HttpLimits {
            max_connections: config.api.max_connections,
            ..HttpLimits::default()
        },
        metrics.listener.clone(),
    ));

    let (records, records_rx) = mpsc::channel(4096);
    let shipper = Shipper::start(
        config.records_id(),
        &config.records_batch(),
        &config.records_spool(),
        &config.collectors.records_connection(),
        records_rx,
        AgentMetrics::new(),
    )
    .await?;
    let (inputs_tx, inputs) = mpsc::channel(256);
    watch::start(
        &config.collectors,
        inputs_tx,
        WatchMetrics::new(&registry),
        ReloadMetrics::new(&registry),
        shutdown.clone(),
    )?;
    tracing::info!(%api_addr, rules = %rules_path.display(), restored,
        collectors = ?config.collectors.urls, "alerter started");

    let state = Loop {
        config,
        rules_path,
        engine,
        heartbeats,
        watchdogs,
        shared,
        receivers: file.receivers,
        dispatcher,
        delivery_metrics,
        reports_tx,
        records,
        state_file,
        snapshotting: HashSet::new(),
        heartbeats_synced: false,
        metrics,
    };
    let task = tokio::spawn(async move {
        let result = state.run(inputs, reports, shutdown, reload).await;
        let left = shipper.finish().await;
        if left.unacked_records > 0 {
            tracing::warn!(
                records = left.unacked_records,
                "alert records not yet stored stay in the spool for the next start"
            );
        }
        result
    });
    Ok(Running { api_addr, task })
}

fn create_state_dir(config: &AlerterConfig) -> Result<(), AlerterError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .map_err(|source| AlerterError::StateDir {
            path: config.state_dir.clone(),
            source,
        })
}

/// Counters of the loop, on the alerter's `/metrics`.
#[derive(Clone)]
struct LoopMetrics {
    listener: ListenerMetrics,
    changes: IntCounter,
    records_dropped: IntCounter,
    state_save_failures: IntCounter,
    reload_failures: IntCounter,
}

impl LoopMetrics {
    fn new(registry: &Registry) -> Self {
        use livehead_common::metrics::register;
        let counter = |name: &str, help: &str| {
            register(registry, IntCounter::new(name, help).expect("valid metric"))
        };
        Self {
            listener: ListenerMetrics {
                open: register(
                    registry,
                    IntGauge::new("http_connections", "API connections open")
                        .expect("valid metric"),
                ),
                accept_errors: counter(
                    "http_accept_errors_total",
                    "Failed accepts on the API port",
                ),
            },
            changes: counter("alert_changes_total", "Changes the rules decided"),
            records_dropped: counter(
                "records_dropped_total",
                "Alert records not sent to the store: their queue was full",
            ),
            state_save_failures: counter(
                "state_save_failures_total",
                "Failed writes of the state file",
            ),
            reload_failures: counter(
                "reload_failures_total",
                "Rules files refused on reload (the previous rules stay)",
            ),
        }
    }
}

/// What the loop owns.
struct Loop {
    config: AlerterConfig,
    rules_path: PathBuf,
    engine: Engine,
    heartbeats: Heartbeats,
    /// The agents' watchdog records as alerts (built in).
    watchdogs: Watchdogs,
    shared: Arc<Shared>,
    receivers: Vec<Receiver>,
    dispatcher: Dispatcher,
    delivery_metrics: DeliveryMetrics,
    reports_tx: mpsc::Sender<DeliveryReport>,
    records: mpsc::Sender<Record>,
    state_file: PathBuf,
    /// Replicas whose snapshot is being read: windows and fleet shares are
    /// not decided on a partial picture.
    snapshotting: HashSet<SocketAddr>,
    /// A snapshot was read in full since the start: until then the saved
    /// trackers miss the pings of the time the alerter was down, and a
    /// check pinged meanwhile would look late.
    heartbeats_synced: bool,
    metrics: LoopMetrics,
}

impl Loop {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut reports: mpsc::Receiver<DeliveryReport>,
        shutdown: Shutdown,
        reload: Arc<Notify>,
    ) -> Result<(), AlerterError> {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = Vec::new();
        loop {
            let next_due = [
                self.shared.read(Lifecycle::next_due),
                self.heartbeats.next_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let due_in = next_due.map(|at| at.saturating_sub(now_ms()));
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.input(input, &mut changes),
                    None => break,
                },
                _ = tick.tick() => {
                    if self.snapshotting.is_empty() {
                        self.engine.tick(now_ms(), &mut changes);
                    }
                }
                Some(report) = reports.recv() => {
                    self.shared.update(|l| l.delivered(&report, now_ms()));
                }
                () = self.shared.changed.notified() => {}
                () = sleep_ms(due_in) => {}
                () = reload.notified() => self.reload(),
                () = shutdown.cancelled() => break,
            }
            self.settle(&mut changes);
        }
        // What the receivers confirmed meanwhile is not sent again.
        while let Ok(report) = reports.try_recv() {
            self.shared.update(|l| l.delivered(&report, now_ms()));
        }
        self.save();
        tracing::info!("alerter stopped");
        Ok(())
    }

    fn input(&mut self, input: Input, changes: &mut Vec<AlertChange>) {
        match input {
            Input::Records {
                replica,
                agent,
                records,
                live,
            } => {
                if !live {
                    self.snapshotting.insert(replica);
                }
                // The alerter's own records come back on the stream too; the
                // engine ignores them (`series_of`).
                let now = now_ms();
                for record in &records {
                    self.engine.observe(&agent, record, changes);
                    self.heartbeats.observe(record, changes, now);
                    self.watchdogs.observe(&agent, record, now, changes);
                }
            }
            Input::Synced { replica } => {
                self.snapshotting.remove(&replica);
                self.heartbeats_synced = true;
                if self.snapshotting.is_empty() {
                    self.engine.tick(now_ms(), changes);
                }
            }
            Input::Lost { replica, .. } => {
                self.snapshotting.remove(&replica);
            }
        }
    }

    /// Applies the rules' changes, saves, then hands out what is due: a
    /// crash after the save and before the delivery re-sends it from the
    /// saved outbox; the reverse order would send it twice.
    fn settle(&mut self, changes: &mut Vec<AlertChange>) {
        let now = now_ms();
        let mut heartbeat_states = Vec::new();
        // As for the rules: no status decided on a partial snapshot.
        if self.heartbeats_synced && self.snapshotting.is_empty() {
            self.heartbeats.settle(now, changes, &mut heartbeat_states);
            self.heartbeats.tick(now, changes, &mut heartbeat_states);
        }
        self.metrics.changes.inc_by(changes.len() as u64);
        // A span only for a pass that changed something: most passes are
        // ticks that decide nothing.
        let span = if changes.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "alerter.evaluate",
                changes = changes.len(),
                notifications = tracing::field::Empty
            )
        };
        let _evaluating = span.enter();
        let (due, records) = self.shared.update(|l| {
            if !changes.is_empty() {
                l.apply(changes, now);
            }
            (l.due(now), l.drain_records())
        });
        changes.clear();
        self.save();
        span.record("notifications", due.len());
        for (receiver, notification) in due {
            self.notify(receiver, notification, now);
        }
        for record in heartbeat_states.into_iter().chain(records) {
            if self.records.try_send(record).is_err() {
                self.metrics.records_dropped.inc();
                tracing::warn!("alert record dropped: the queue to the store is full");
            }
        }
    }

    fn notify(&self, receiver: String, mut notification: Notification, now: u64) {
        if notification.link.is_none() {
            notification.link = self
                .config
                .link(notification.node.as_deref(), notification.site.as_deref());
        }
        let id = notification.id.clone();
        if let Err(error) = self.dispatcher.notify(&receiver, notification) {
            tracing::warn!(%receiver, %id, %error, "notification not queued");
            let report = DeliveryReport {
                receiver,
                id,
                attempts: 0,
                tries: Vec::new(),
                result: Err(error),
            };
            self.shared.update(|l| l.delivered(&report, now));
        }
    }

    fn save(&mut self) {
        let dirty = self.heartbeats.is_dirty();
        let saved = self
            .shared
            .read(|l| (dirty || l.is_dirty()).then(|| l.saved()));
        let Some(mut saved) = saved else { return };
        saved.heartbeats = self.heartbeats.saved();
        match saved.save(&self.state_file) {
            Ok(()) => {
                self.shared.update(Lifecycle::mark_saved);
                self.heartbeats.mark_saved();
            }
            Err(error) => {
                self.metrics.state_save_failures.inc();
                tracing::error!(%error, path = %self.state_file.display(), "cannot save the alerter's state");
            }
        }
    }

    /// SIGHUP: the new rules take over, or the old ones stay with the
    /// reason logged.
    fn reload(&mut self) {
        let file = match RulesFile::load(&self.rules_path) {
            Ok(file) => file,
            Err(error) => {
                self.metrics.reload_failures.inc();
                tracing::error!(%error, "rules not reloaded; the previous rules stay");
                return;
            }
        };
        if file.receivers != self.receivers {
            match Dispatcher::start(
                file.receivers.clone(),
                self.delivery_metrics.clone(),
                Some(self.reports_tx.clone()),
            ) {
                Ok(dispatcher) => {
                    let old = std::mem::replace(&mut self.dispatcher, dispatcher);
                    // What the old receivers hold is still delivered.
                    tokio::spawn(old.close());
                    self.receivers = file.receivers.clone();
                }
                Err(error) => {
                    self.metrics.reload_failures.inc();
                    tracing::error!(%error, "rules not reloaded; the previous rules stay");
                    return;
                }
            }
        }
        if let Err(error) = self.shared.update(|l| l.reload(&file, now_ms())) {
            self.metrics.reload_failures.inc();
            tracing::error!(%error, "routes not reloaded; the previous routes stay");
            return;
        }
        self.engine.reload(&file.rules);
        tracing::info!(
            rules = file.rules.len(),
            receivers = file.receivers.len(),
            "rules reloaded"
        );
    }
}

async fn sleep_ms(ms: Option<u64>) {
    match ms {
        Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}
