#![doc = include_str!("../README.md")]

pub mod batch;
pub mod cert_trust;
pub mod config;
pub mod content;
pub mod discovery;
pub mod metrics;
mod pool;
pub mod probe;
pub mod rounds;
pub mod run_check;
pub mod sample;
pub mod ship;
pub mod split;
pub mod spool;
pub mod transport;
pub mod watchdog;

use std::sync::Arc;

use livehead_common::Shutdown;
use livehead_proto::v1::Record;
use regex::Regex;
use tokio::sync::{Notify, mpsc};

pub use config::AgentConfig;

use crate::discovery::{DefaultTarget, Discovery, DiscoveryError};
use crate::metrics::AgentMetrics;
use crate::ship::Shipper;
use crate::spool::{DiskError, DiskStore, SharedSpool};
use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("no site source: set sites.web_root and/or sites.list_file (--web-root, --sites-file)")]
    NoSites,
    #[error(
        "{batches} batches ({records} records) of the round were not acknowledged by the collector in time{kept}"
    )]
    Unacknowledged {
        batches: usize,
        records: usize,
        /// Where they wait for the next run, if anywhere.
        kept: String,
    },
    #[error("cannot open the disk spool: {0}")]
    Spool(#[from] DiskError),
    #[error(transparent)]
    Trust(#[from] cert_trust::TrustError),
    #[error("vantage: {0}")]
    Vantage(#[from] livehead_common::vantage::VantageError),
    #[error(transparent)]
    Sample(#[from] sample::SampleConfigError),
    #[error(transparent)]
    Content(#[from] content::ContentConfigError),
    #[error(transparent)]
    WatchdogConfig(#[from] watchdog::WatchdogConfigError),
    #[error(transparent)]
    WatchdogPermissions(#[from] watchdog::PermissionError),
    #[error(transparent)]
    WatchdogTokens(#[from] livehead_common::roles::AccessError),
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` fires (or, with `rounds.once`, until its
/// round is done), then lets the collector acknowledge what is pending for up
/// to `collector.drain_timeout`. With `rounds.once`, results left
/// unacknowledged are an error, so a cron job sees them.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    run_with_reload(config, shutdown, Arc::new(Notify::new())).await
}

/// [`run`], with the watchdog's `[watchdog]` re-read from the config file
/// at each `reload` notification (the binary's SIGHUP).
pub async fn run_with_reload(
    config: AgentConfig,
    shutdown: Shutdown,
    reload: Arc<Notify>,
) -> Result<(), AgentError> {
    let discovery = discovery(&config)?;
    livehead_common::vantage::check_vantage(&config.vantage)?;
    let content = content::ContentChecks::new(&config.content)?;
    let sample_config = sample_config(&config)?;
    let watchdog = watchdog_config(&config)?;
    let tokens = watchdog::supervise::admin_tokens(&config.watchdog)?;
    let metrics = AgentMetrics::new();
    let admin = watchdog::Admin::default();
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, &metrics, &admin, shutdown.clone()).await?;
    }
    let (records_tx, records_rx) = records_channel(&config.batch);
    let shipper = Shipper::start(
        config.batch_agent_id(),
        &config.batch,
        &config.spool,
        &config.collector,
        records_rx,
        metrics.clone(),
    )
    .await?;

    let schedule = if config.rounds.once {
        rounds::Schedule::once(config.rounds.concurrency)
    } else {
        rounds::Schedule::new(
            config.rounds.interval,
            config.rounds.spread,
            config.rounds.concurrency,
        )
    }
    .with_content(content, config.rounds.interval)
    .with_vantage(&config.vantage);
    let prober = probe::Prober::new(config.probe.clone())?;
    // A one-shot run (`--once`, from cron) probes only: rates need two samples.
    let sampler = (!config.rounds.once).then(|| {
        tokio::spawn(sample::run(
            sample_config,
            records_tx.clone(),
            sample::SampleMetrics::new(&metrics.registry),
            shutdown.clone(),
        ))
    });
    // A one-shot run has no watchdog, and nothing to reload.
    let watchdog = (!config.rounds.once).then(|| {
        let supervised = watchdog::Supervised {
            config_file: config.config_file.clone(),
            records: records_tx.clone(),
            metrics: metrics.watchdog.clone(),
            admin,
            reload,
        };
        let config = watchdog.unwrap_or_default();
        tokio::spawn(watchdog::supervise(
            config,
            tokens,
            supervised,
            shutdown.clone(),
        ))
    });
    let mut rounds = tokio::spawn(rounds::run(
        schedule,
        discovery,
        prober,
        records_tx,
        metrics.clone(),
        shutdown.clone(),
    ));
    tracing::info!(id = %config.batch_agent_id(), collector = %config.collector.url,
        vantage = %config.vantage, "agent started");

    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = &mut rounds, if config.rounds.once => {}
    }
    shutdown.cancel();
    // Producers stop, dropping their senders, which closes the records
    // channel; the batcher then flushes.
    if !rounds.is_finished() {
        let _ = rounds.await;
    }
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    let left = shipper.finish().await;
    let (unacked, unacked_records) = (left.unacked_batches, left.unacked_records);
    // Operators (and the crash-recovery test) read what was lost, if anything.
    tracing::info!(
        records_spooled = left.records_spooled,
        dropped_records = left.dropped_records,
        unacked_batches = unacked,
        "agent stopped"
    );
    if config.rounds.once && unacked > 0 {
        let kept = config
            .spool
            .dir
            .as_ref()
            .map(|d| {
                format!(
                    "; they stay in the disk spool {} for the next run",
                    d.display()
                )
            })
            .unwrap_or_default();
        return Err(AgentError::Unacknowledged {
            batches: unacked,
            records: unacked_records,
            kept,
        });
    }
    Ok(())
}

/// The runtime the agent runs on: `worker_threads` workers (the binary's
/// other commands keep tokio's default of one per core) and at most
/// `max_blocking_threads` blocking threads, to keep the agent's resident
/// memory small and independent of the node's core count.
pub fn runtime(config: &config::RuntimeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .max_blocking_threads(config.max_blocking_threads.max(1))
        .thread_name("livehead-agent")
        .enable_all()
        .build()
}

/// The channel every producer (probe rounds, the sampler) sends its records
/// to, whatever their kind; the batcher reads it. Clone the sender for each
/// producer: the batcher flushes and ends once every clone is dropped.
/// Bounded (two batches' worth of records) so a stalled batcher slows the
/// producers down instead of growing the agent's memory.
pub fn records_channel(
    batch: &config::BatchConfig,
) -> (mpsc::Sender<Record>, mpsc::Receiver<Record>) {
    mpsc::channel(batch.max_records.max(1) * 2)
}

/// The memory spool, or the disk spool with what earlier runs left in it
/// (read on the blocking pool: up to `disk_max_bytes` of files).
pub(crate) async fn open_spool(
    config: &config::SpoolConfig,
    metrics: &AgentMetrics,
) -> Result<SharedSpool, AgentError> {
    let Some(dir) = &config.dir else {
        return Ok(SharedSpool::memory(config.max_bytes, metrics.clone()));
    };
    let path = dir.clone();
    let (store, opened) = tokio::task::spawn_blocking(move || DiskStore::open(&path))
        .await
        .map_err(|e| DiskError::Task(e.to_string()))??;
    for error in &opened.corrupt {
        metrics.spool_corrupt_files.inc();
        tracing::warn!(%error, "disk spool: unreadable file set aside (*.corrupt); its batches are lost");
    }
    let records: usize = opened
        .entries
        .iter()
        .flat_map(|e| &e.pieces)
        .map(|p| p.records)
        .sum();
    tracing::info!(dir = %dir.display(), files = opened.entries.len(), records,
        interrupted_writes = opened.partial_writes, "disk spool opened");
    Ok(SharedSpool::on_disk(
        store,
        opened.entries,
        config.disk_max_bytes,
        metrics.clone(),
    ))
}

/// The site sources `config` names, checked (at least one source, the ignore
/// regex, the target), as every round reads them.
pub fn discovery(config: &AgentConfig) -> Result<Discovery, AgentError> {
    if config.sites.web_root.is_none() && config.sites.list_file.is_none() {
        return Err(AgentError::NoSites);
    }
    Ok(Discovery {
        web_root: config.sites.web_root.clone(),
        list_file: config.sites.list_file.clone(),
        ignore: Regex::new(&config.sites.ignore).map_err(DiscoveryError::from)?,
        default_target: DefaultTarget::parse(config.target.as_deref())?,
    })
}

/// `[sample]`, checked, with the sites' web root and ignore pattern when it
/// names no web root of its own.
fn sample_config(config: &AgentConfig) -> Result<sample::SampleConfig, AgentError> {
    let mut sample = config.sample.clone();
    if sample.web_root.is_none() {
        sample.web_root.clone_from(&config.sites.web_root);
        sample.site_ignore = Some(Regex::new(&config.sites.ignore).map_err(DiscoveryError::from)?);
    }
    sample.validate()?;
    Ok(sample)
}

/// `[watchdog]`, checked, when it has apps and the run is not one-shot
/// (a cron round has no time to watch anything); with a config file, only
/// if nobody but its owner may write it.
fn watchdog_config(config: &AgentConfig) -> Result<Option<watchdog::WatchdogConfig>, AgentError> {
    if config.watchdog.apps.is_empty() || config.rounds.once {
        return Ok(None);
    }
    config.watchdog.validate()?;
    if let Some(file) = &config.config_file {
        watchdog::check_config_permissions(file)?;
    }
    Ok(Some(config.watchdog.clone()))
}

/// `/metrics` and the watchdog's admin API, on `metrics_listen`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: &AgentMetrics,
    admin: &watchdog::Admin,
    shutdown: Shutdown,
) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Metrics { addr, source })?;
    let router = livehead_common::metrics::router(metrics.registry.clone())
        .merge(watchdog::admin::router(admin.clone()));
    tokio::spawn(async move {
        if let Err(error) = livehead_common::metrics::serve(listener, router, shutdown).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_has_the_configured_workers_and_at_least_one() {
        let small = config::RuntimeConfig {
            worker_threads: 0,
            max_blocking_threads: 0,
        };
        let rt = runtime(&small).expect("runtime");
        assert_eq!(rt.metrics().num_workers(), 1);
        // Blocking work still runs with a cap of 0 taken as 1.
        let answer = rt.block_on(async { tokio::task::spawn_blocking(|| 42).await });
        assert_eq!(answer.expect("blocking task"), 42);
        let two = config::RuntimeConfig {
            worker_threads: 2,
            ..config::RuntimeConfig::default()
        };
        assert_eq!(runtime(&two).expect("runtime").metrics().num_workers(), 2);
    }
}
