//! The sampler: what the agent measures of its node, its pods, its sites and
//! its services, sent as [`Record`]s on the agent's record channel.
//!
//! It runs on its own timers, beside the probe rounds and never in their
//! way:
//! - every `interval` (default 10 s) one tick reads the node (`/proc/stat`,
//!   `loadavg`, `meminfo`, `diskstats`, `net/dev`, PSI, `file-nr`, `uptime`),
//!   the pod cgroups (v2 only), the processes of the sites' users and the
//!   systemd units, and measures the filesystems with statvfs under a
//!   timeout. File reads run on the blocking pool, `systemctl` as a child
//!   process with a timeout.
//! - every `site_walk_interval` (default 10 min) a background walk counts
//!   each site's bytes and files; a walk is never started while the
//!   previous one runs.
//!
//! Rates are per second since the previous tick. The first sight of
//! anything that has rates (the node's CPU, a disk, an interface, a pod, a
//! site user's processes) is only a baseline: it is sampled from the second
//! tick on, so no sample ever carries a made-up 0 or a since-boot average.
//! Filesystems, services and site walks have no rates and are sent from the
//! first tick. A counter that went backwards gives a rate of 0.
//!
//! What cannot be read is skipped, logged (a warning the first time, debug
//! after) and counted in `sample_read_errors_total{source}`; the rest of the
//! tick still goes out. No cgroup v2 (no `cgroup.controllers` at the cgroup
//! root), or no systemd (no `/run/systemd/system`), is said once at start,
//! and that part is skipped.
//!
//! When the record channel is full, a tick waits for room (records are not
//! dropped) and `sample_channel_full_total` counts it; a tick that is late
//! delays the next one rather than bunching them.

pub mod cgroup;
pub mod config;
pub mod fs;
pub mod metrics;
pub mod node;
pub mod procfs;
pub mod read;
pub mod service;
pub mod site;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use livehead_common::Shutdown;
use livehead_common::clock::unix_ms;
use livehead_proto::v1::{Record, SiteDiskSample, record::Kind};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

pub use config::{SampleConfig, SampleConfigError};
pub use metrics::SampleMetrics;

use read::ReadError;

/// Where systemd says it runs the host.
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// Samples until `shutdown` fires or the channel closes. Returns at once
/// when `config.enabled` is false, and with an error when the config is
/// invalid.
pub async fn run(
    config: SampleConfig,
    tx: mpsc::Sender<Record>,
    metrics: SampleMetrics,
    shutdown: Shutdown,
) -> Result<(), SampleConfigError> {
    config.validate()?;
    if !config.enabled {
        tracing::info!("sampling disabled");
        return Ok(());
    }
    let mut sampler = Sampler::new(&config, metrics.clone(), Path::new(SYSTEMD_RUN_DIR))?;
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut walks = tokio::time::interval(config.site_walk_interval);
    walks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut walker: site::Walker<(f64, Result<Vec<SiteDiskSample>, ReadError>)> =
        site::Walker::default();
    let stop_walk = Arc::new(AtomicBool::new(false));
    tracing::info!(
        interval = ?config.interval,
        proc_root = %config.proc_root.display(),
        web_root = ?config.web_root,
        "sampler started"
    );
    loop {
        let records = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => sampler.tick().await,
            _ = walks.tick(), if config.web_root.is_some() => {
                start_walk(&config, &mut walker, &metrics, &stop_walk);
                continue;
            }
            Some((secs, result)) = walker.finished() => {
                metrics.site_walk_seconds.set(secs);
                match result {
                    Ok(samples) => samples.into_iter().map(|s| record(Kind::SiteDisk(s))).collect(),
                    Err(e) => {
                        sampler.report(&e);
                        continue;
                    }
                }
            }
        };
        if !send_all(&tx, records, &metrics, &shutdown).await {
            break;
        }
    }
    // A walk still running ends at its next entry, not in ten minutes.
    stop_walk.store(true, Ordering::Relaxed);
    tracing::info!("sampler stopped");
    Ok(())
}

fn start_walk(
    config: &SampleConfig,
    walker: &mut site::Walker<(f64, Result<Vec<SiteDiskSample>, ReadError>)>,
    metrics: &SampleMetrics,
    stop: &Arc<AtomicBool>,
) {
    let Some(root) = config.web_root.clone() else {
        return;
    };
    let max = config.site_walk_max_files;
    let ignore = config.site_ignore.clone();
    let stop = Arc::clone(stop);
    let started = walker.try_start(move || {
        let t = Instant::now();
        let result = site::walk_web_root(&root, ignore.as_ref(), max, unix_ms(), &stop);
        (t.elapsed().as_secs_f64(), result)
    });
    if started.is_err() {
        metrics.site_walks_skipped.inc();
        tracing::warn!("site walk skipped: the previous one is still running");
    }
}

fn record(kind: Kind) -> Record {
    Record { kind: Some(kind) }
}

fn kind_label(kind: &Kind) -> &'static str {
    match kind {
        Kind::Probe(_) => "probe",
        Kind::Node(_) => "node",
        Kind::Filesystem(_) => "filesystem",
        Kind::Disk(_) => "disk",
        Kind::Interface(_) => "interface",
        Kind::Pod(_) => "pod",
        Kind::SiteDisk(_) => "site_disk",
        Kind::SiteProcess(_) => "site_process",
        Kind::Service(_) => "service",
        Kind::Alert(_) => "alert",
        Kind::Delivery(_) => "delivery",
        Kind::Watchdog(_) => "watchdog",
        Kind::HeartbeatCheck(_) => "heartbeat_check",
        Kind::HeartbeatPing(_) => "heartbeat_ping",
        Kind::HeartbeatState(_) => "heartbeat_state",
    }
}

/// Sends a tick's records, waiting for room when the channel is full.
/// False when the channel is closed or shutdown fired meanwhile.
async fn send_all(
    tx: &mpsc::Sender<Record>,
    records: Vec<Record>,
    metrics: &SampleMetrics,
    shutdown: &Shutdown,
) -> bool {
    let mut waited = false;
    for rec in records {
        if let Some(kind) = &rec.kind {
            metrics.records.with_label_values(&[kind_label(kind)]).inc();
        }
        let rec = match tx.try_send(rec) {
            Ok(()) => continue,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(rec)) => rec,
        };
        if !waited {
            waited = true;
            metrics.channel_full.inc();
            tracing::warn!("record channel full: the sampler waits for room");
        }
        tokio::select! {
            sent = tx.send(rec) => if sent.is_err() { return false },
            () = shutdown.cancelled() => return false,
        }
    }
    true
}

/// The parts read with plain file I/O, moved to the blocking pool for a
/// tick and back.
struct Blocking {
    node: node::NodeSampler,
    pods: Option<cgroup::PodSampler>,
    users: Option<SiteUsers>,
}

/// The sites' Unix users: which user each site maps to, and their processes.
struct SiteUsers {
    sampler: site::UserSampler,
    web_root: PathBuf,
    ignore: Option<regex::Regex>,
    pattern: String,
    passwd: PathBuf,
}

impl SiteUsers {
    /// (site, user, uid) of every site whose user exists in passwd.
    fn resolve(&self) -> Result<Vec<(String, String, u32)>, ReadError> {
        let sites = site::list_sites(&self.web_root, self.ignore.as_ref())
            .map_err(|e| ReadError::new("web_root", &self.web_root, e))?;
        let passwd = std::fs::read_to_string(&self.passwd)
            .map_err(|e| ReadError::new("passwd", &self.passwd, e))?;
        let uids = site::parse_passwd(&passwd);
        Ok(sites
            .into_iter()
            .filter_map(|s| {
                let user = self.pattern.replace("{site}", &s);
                let uid = *uids.get(&user)?;
                Some((s, user, uid))
            })
            .collect())
    }
}

impl Blocking {
    fn tick(&mut self, ts_ms: u64, now: Instant) -> (Vec<Record>, Vec<ReadError>) {
        let node = self.node.tick(ts_ms, now);
        let mut errors = node.errors;
        let mut out: Vec<Record> = node
            .node
            .into_iter()
            .map(|n| record(Kind::Node(n)))
            .collect();
        out.extend(node.disks.into_iter().map(|d| record(Kind::Disk(d))));
        out.extend(
            node.interfaces
                .into_iter()
                .map(|i| record(Kind::Interface(i))),
        );
        if let Some(pods) = &mut self.pods {
            let (samples, errs) = pods.tick(ts_ms, now);
            out.extend(samples.into_iter().map(|p| record(Kind::Pod(p))));
            errors.extend(errs);
        }
        if let Some(users) = &mut self.users {
            match users
                .resolve()
                .and_then(|list| users.sampler.tick(ts_ms, now, &list))
            {
                Ok(samples) => {
                    out.extend(samples.into_iter().map(|s| record(Kind::SiteProcess(s))))
                }
                Err(e) => errors.push(e),
            }
        }
        (out, errors)
    }
}

/// Everything a tick needs between ticks.
struct Sampler {
    blocking: Option<Blocking>,
    config: SampleConfig,
    /// Checked once at start: a node does not switch cgroup versions live.
    pods_v2: bool,
    fs: fs::FsSampler,
    services: Option<service::ServiceSampler>,
    /// The last systemctl call failed: the next failure logs at debug.
    services_failing: bool,
    metrics: SampleMetrics,
    /// Sources already warned about; later failures log at debug.
    reported: HashSet<String>,
}

/// Bound of `reported`: pids and cgroups come and go.
const MAX_REPORTED: usize = 1000;

impl Sampler {
    fn new(
        config: &SampleConfig,
        metrics: SampleMetrics,
        systemd_dir: &Path,
    ) -> Result<Self, SampleConfigError> {
        let services = if config.services.is_empty() {
            None
        } else if !service::systemd_running(systemd_dir) {
            tracing::warn!(
                units = ?config.services,
                "systemd is not running here (no {}): services are not sampled",
                systemd_dir.display()
            );
            None
        } else {
            Some(service::ServiceSampler::new(
                &config.services,
                config.site_regex()?,
                config.systemctl_timeout,
            ))
        };
        let pods_v2 = cgroup::is_v2(&config.cgroup_root);
        if !pods_v2 {
            tracing::warn!(
                cgroup_root = %config.cgroup_root.display(),
                "no cgroup v2 hierarchy (cgroup v1 or none): pods are not sampled"
            );
        }
        Ok(Self {
            blocking: Some(blocking(config, pods_v2)),
            pods_v2,
            config: config.clone(),
            fs: fs::FsSampler::new(config.proc_root.clone(), config.statvfs_timeout)
                .with_root_fs(config.root_fs.clone()),
            services,
            services_failing: false,
            metrics,
            reported: HashSet::new(),
        })
    }

    async fn tick(&mut self) -> Vec<Record> {
        let ts_ms = unix_ms();
        let now = Instant::now();
        self.metrics.ticks.inc();
        let mut b = self
            .blocking
            .take()
            .unwrap_or_else(|| blocking(&self.config, self.pods_v2));
        let (mut records, errors) = match tokio::task::spawn_blocking(move || {
            let out = b.tick(ts_ms, now);
            (b, out)
        })
        .await
        {
            Ok((b, out)) => {
                self.blocking = Some(b);
                out
            }
            Err(e) => {
                // The baselines are lost; the next tick starts afresh.
                tracing::error!(error = %e, "sampling tick failed");
                (Vec::new(), Vec::new())
            }
        };
        for e in &errors {
            self.report(e);
        }
        let (filesystems, errors) = self.fs.tick(ts_ms).await;
        for e in &errors {
            self.report(e);
        }
        records.extend(filesystems.into_iter().map(|f| record(Kind::Filesystem(f))));
        if let Some(services) = &self.services {
            match services.tick(ts_ms).await {
                Ok(states) => {
                    self.services_failing = false;
                    records.extend(states.into_iter().map(|s| record(Kind::Service(s))));
                }
                Err(e) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["systemctl"])
                        .inc();
                    // Warn when it starts failing, not every tick after.
                    if std::mem::replace(&mut self.services_failing, true) {
                        tracing::debug!(error = %e, "cannot read the services");
                    } else {
                        tracing::warn!(error = %e, "cannot read the services");
                    }
                }
            }
        }
        records
    }

    fn report(&mut self, e: &ReadError) {
        self.metrics.read_errors.with_label_values(&[e.what]).inc();
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        if self.reported.insert(format!("{}\0{}", e.what, e.path)) {
            tracing::warn!(source = e.what, path = %e.path, error = %e.source, "cannot sample");
        } else {
            tracing::debug!(source = e.what, path = %e.path, error = %e.source, "cannot sample");
        }
    }
}

fn blocking(config: &SampleConfig, pods_v2: bool) -> Blocking {
    let pods = pods_v2
        .then(|| cgroup::PodSampler::new(config.cgroup_root.clone(), config.pod_cgroups.clone()));
    let users = match (&config.web_root, &config.site_user_pattern) {
        (Some(web_root), Some(pattern)) => Some(SiteUsers {
            sampler: site::UserSampler::new(config.proc_root.clone()),
            web_root: web_root.clone(),
            ignore: config.site_ignore.clone(),
            pattern: pattern.clone(),
            passwd: config.passwd_path.clone(),
        }),
        _ => None,
    };
    Blocking {
        node: node::NodeSampler::new(config.proc_root.clone(), config.sys_root.clone()),
        pods,
        users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs as stdfs;
    use std::time::Duration;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample")
    }

    /// A procfs root made of the captured fixtures; its init's root is `/`,
    /// so the one real filesystem in its mountinfo can be measured.
    fn fixture_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("fixture files");
        let p = dir.path();
        let fx = fixtures();
        for d in ["net", "sys/fs", "pressure", "1"] {
            stdfs::create_dir_all(p.join(d)).expect("fixture files");
        }
        for (from, to) in [
            ("live/stat", "stat"),
            ("live/meminfo", "meminfo"),
            ("live/loadavg", "loadavg"),
            ("live/uptime", "uptime"),
            ("live/file-nr", "sys/fs/file-nr"),
            ("live/diskstats", "diskstats"),
            ("odd/netdev", "net/dev"),
            ("live/psi_cpu", "pressure/cpu"),
            ("live/psi_io", "pressure/io"),
            ("live/mountinfo", "1/mountinfo"),
        ] {
            stdfs::copy(fx.join(from), p.join(to)).expect("fixture files");
        }
        std::os::unix::fs::symlink("/", p.join("1/root")).expect("fixture files");
        dir
    }

    #[tokio::test]
    async fn run_sends_every_kind_from_fixture_roots_then_stops() {
        let proc = fixture_proc();
        let web = tempfile::tempdir().expect("fixture files");
        stdfs::create_dir_all(web.path().join("a.example/wp-content")).expect("fixture files");
        stdfs::write(web.path().join("a.example/index.php"), "<?php\n").expect("fixture files");
        stdfs::write(web.path().join("a.example/wp-content/x"), vec![0u8; 4096])
            .expect("fixture files");
        let config = SampleConfig {
            interval: Duration::from_secs(5),
            proc_root: proc.path().into(),
            sys_root: PathBuf::from("/nonexistent/sys"),
            cgroup_root: fixtures().join("cgroup"),
            web_root: Some(web.path().into()),
            ..SampleConfig::default()
        };
        let registry = prometheus::Registry::new();
        let metrics = SampleMetrics::new(&registry);
        // A small channel, so the first tick finds it full and must wait.
        let (tx, mut rx) = mpsc::channel(2);
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(config, tx, metrics.clone(), shutdown.clone()));

        let mut got: HashMap<&'static str, Record> = HashMap::new();
        let wanted = [
            "node",
            "filesystem",
            "disk",
            "interface",
            "pod",
            "site_disk",
        ];
        tokio::time::timeout(Duration::from_secs(60), async {
            while !wanted.iter().all(|k| got.contains_key(k)) {
                let rec = rx.recv().await.expect("sampler alive");
                let kind = kind_label(rec.kind.as_ref().expect("test value"));
                got.insert(kind, rec);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("kinds received: {:?}", got.keys()));
        shutdown.cancel();
        // Unblock a sampler waiting on the full channel, then let it end.
        while rx.recv().await.is_some() {}
        task.await.expect("sampler task").expect("sampler task");

        let Some(Kind::Node(node)) = &got["node"].kind else {
            unreachable!()
        };
        assert_eq!(node.mem_total_bytes, 24_684_092 * 1024);
        assert_eq!(node.cpu_cores, 2);
        assert_eq!(node.psi_cpu_some, Some(20.33));
        assert_eq!(
            node.psi_memory_some, None,
            "no memory pressure file in the fixture"
        );
        let Some(Kind::Filesystem(f)) = &got["filesystem"].kind else {
            unreachable!()
        };
        assert_eq!(f.mountpoint, "/");
        assert!(f.size_bytes > 0);
        let Some(Kind::SiteDisk(s)) = &got["site_disk"].kind else {
            unreachable!()
        };
        assert_eq!(
            (s.site.as_str(), s.disk_bytes, s.file_count),
            ("a.example", 6 + 4096, 2)
        );
        let Some(Kind::Interface(i)) = &got["interface"].kind else {
            unreachable!()
        };
        assert_eq!(i.rx_bytes_per_s, 0.0, "unchanged fixture counters");
        assert!(metrics.ticks.get() >= 2);
        assert!(metrics.channel_full.get() >= 1);
        assert_eq!(metrics.records.with_label_values(&["node"]).get(), 1);
    }

    #[tokio::test]
    async fn disabled_returns_at_once_and_a_bad_config_is_refused() {
        let metrics = SampleMetrics::new(&prometheus::Registry::new());
        let (tx, _rx) = mpsc::channel(1);
        let off = SampleConfig {
            enabled: false,
            ..SampleConfig::default()
        };
        assert_eq!(
            run(off, tx.clone(), metrics.clone(), Shutdown::new()).await,
            Ok(())
        );
        let bad = SampleConfig {
            interval: Duration::from_secs(1),
            ..SampleConfig::default()
        };
        let err = run(bad, tx, metrics, Shutdown::new())
            .await
            .expect_err("refused");
        assert!(matches!(err, SampleConfigError::Interval(_)));
    }

    #[tokio::test]
    async fn live_machine_without_systemd_or_cgroup_v2_still_samples() {
        let config = SampleConfig {
            services: vec!["nginx".into()],
            ..SampleConfig::default()
        };
        let metrics = SampleMetrics::new(&prometheus::Registry::new());
        let mut s = Sampler::new(
            &config,
            metrics,
            Path::new("/nonexistent/run/systemd/system"),
        )
        .expect("test value");
        assert!(s.services.is_none(), "no systemd: said once, skipped");
        s.tick().await;
        let records = s.tick().await;
        assert!(
            records
                .iter()
                .any(|r| matches!(r.kind, Some(Kind::Node(_))))
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(r.kind, Some(Kind::Filesystem(_))))
        );
    }
}
