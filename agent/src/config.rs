//! The agent's configuration: a TOML file, overridden by flags and environment
//! (see the binary). Every field has a documented default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use livehead_common::tls::TlsFiles;
use serde::Deserialize;

use crate::probe::ProbeConfig;

/// Directories under a web root that are not sites (the old script's IGNORE_REGEX).
pub const DEFAULT_IGNORE: &str = r"^(update|backups|readyz|new|lost\+found)$";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent id sent in batches. With mTLS the certificate's name is the
    /// identity: leave this unset (a different value is refused by the
    /// collector). With `insecure` it names the agent; default the host name.
    pub id: Option<String>,
    /// Where the sites come from.
    pub sites: SitesConfig,
    /// Where sites given by name are probed: `10.0.0.7:8080`, `http://10.0.0.7:8080`
    /// or `https://10.0.0.7:8443` (the node's address, the site goes in the Host
    /// header). Unset: each name is probed directly at `https://<name>/`.
    pub target: Option<String>,
    /// Where this agent probes from, sent with every probe: `inside` (on the
    /// nodes, the default) or another label of `[a-z0-9_-]`, at most 32 bytes,
    /// e.g. `outside` for an agent probing the public URLs from another host.
    /// The collector keeps the newest probe of a site per vantage, and the
    /// alerter's `vantage` rules compare them.
    pub vantage: String,
    /// Probe time-outs and limits.
    pub probe: ProbeConfig,
    /// Content checks: assertions on a `GET` of each site, on their own
    /// cadence (`[content]`; see `content::ContentConfig`). Default on, with
    /// the WordPress failure pages.
    pub content: crate::content::ContentConfig,
    /// Round scheduling.
    pub rounds: RoundsConfig,
    /// How results are grouped into batches.
    pub batch: BatchConfig,
    /// Unacknowledged batches kept, in memory or on disk.
    pub spool: SpoolConfig,
    /// The collector connection.
    pub collector: CollectorConnConfig,
    /// Address of the `/metrics` endpoint; unset disables it. Default 127.0.0.1:7091.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads of the agent's async runtime.
    pub runtime: RuntimeConfig,
    /// What the agent samples of its node, pods, sites and services, and how
    /// often (`[sample]`; see `sample::SampleConfig`).
    pub sample: crate::sample::SampleConfig,
    /// Local apps to check and bring back when they fail (`[watchdog]`;
    /// see `watchdog::WatchdogConfig`). Default: none.
    pub watchdog: crate::watchdog::WatchdogConfig,
    /// OpenTelemetry traces (`[telemetry]`): off unless an OTLP endpoint is
    /// set here or in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub telemetry: livehead_common::traces::TelemetryConfig,
    /// The file this configuration was read from (`--config`), set by the
    /// binary: the watchdog refuses to run from a file others may write.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: None,
            sites: SitesConfig::default(),
            target: None,
            vantage: livehead_common::vantage::INSIDE.to_owned(),
            probe: ProbeConfig::default(),
            content: crate::content::ContentConfig::default(),
            rounds: RoundsConfig::default(),
            batch: BatchConfig::default(),
            spool: SpoolConfig::default(),
            collector: CollectorConnConfig::default(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7091))),
            runtime: RuntimeConfig::default(),
            sample: crate::sample::SampleConfig::default(),
            watchdog: crate::watchdog::WatchdogConfig::default(),
            telemetry: livehead_common::traces::TelemetryConfig::default(),
            config_file: None,
        }
    }
}

impl AgentConfig {
    /// The id batches carry: the configured one; else, without mTLS, the host
    /// name; else empty, so the collector takes the certificate's name.
    pub fn batch_agent_id(&self) -> String {
        match (&self.id, self.collector.insecure) {
            (Some(id), _) => id.clone(),
            (None, true) => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "agent".into()),
            (None, false) => String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SitesConfig {
    /// Every directory under it is a site named after the directory. Default: none.
    pub web_root: Option<PathBuf>,
    /// One site per line: a host name, or a URL probed directly; `#` starts a
    /// comment. Default: none.
    pub list_file: Option<PathBuf>,
    /// Directory names under `web_root` that are not sites (regex).
    pub ignore: String,
}

impl Default for SitesConfig {
    fn default() -> Self {
        Self {
            web_root: None,
            list_file: None,
            ignore: DEFAULT_IGNORE.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundsConfig {
    /// Time between the starts of two rounds. Default 30m, as the old cron job.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Fraction of the interval over which probe starts are spread (0 = start
    /// them as fast as `concurrency` allows). Default 0.5.
    pub spread: f64,
    /// Probes in flight at once. Default 64.
    pub concurrency: usize,
    /// Run a single round with no spread, wait (up to
    /// `collector.drain_timeout`) for its batches to be acknowledged, and exit:
    /// the old cron job's shape, and how the benchmarks time a round. Default false.
    pub once: bool,
}

impl Default for RoundsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30 * 60),
            spread: 0.5,
            concurrency: 64,
            once: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is sent when it holds this many records. Default 500.
    pub max_records: usize,
    /// ...or when its first record is this old. Default 250ms: part of the
    /// time from a failing probe to its alert (bench/README.md, part 5),
    /// which a batch every quarter second keeps under a second.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// ...or before the next record would take its encoded size past this
    /// many bytes. Keep it below the collector's `limits.max_message_bytes`
    /// (default 4 MiB); batches over the limits a collector announces are
    /// split before they are sent anyway. Default 1 MiB (1048576).
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_records: 500,
            max_delay: Duration::from_millis(250),
            max_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Memory spool (no `dir`): encoded bytes of unacknowledged batches kept;
    /// past it the oldest batches are dropped, and counted
    /// (`livehead_agent_spool_dropped_*`) unless a batch already sent is
    /// acknowledged after all. Default 8 MiB (8388608).
    pub max_bytes: usize,
    /// Directory of the disk spool: each batch is a file there, fsynced
    /// before it counts as spooled and deleted once acknowledged, so batches
    /// survive a restart or a crash of the agent. Only an index stays in
    /// memory. Unset (the default): the spool is in memory.
    pub dir: Option<PathBuf>,
    /// Disk spool: bytes of files kept; past it the oldest batches are
    /// dropped and counted as with `max_bytes`. Default 256 MiB (268435456).
    pub disk_max_bytes: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            dir: None,
            disk_max_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConnConfig {
    /// Collector gRPC endpoint. Default `https://127.0.0.1:7070`.
    pub url: String,
    /// Name the collector's certificate must carry. Default: the URL's host.
    pub server_name: Option<String>,
    /// CA, certificate and key for mTLS. Required unless `insecure`.
    pub tls: Option<TlsFiles>,
    /// Plain-text gRPC (`http://` URL, no certificates). Default false.
    pub insecure: bool,
    /// Batches sent before their acks are awaited. Default 32.
    pub max_in_flight: usize,
    /// First reconnect delay, doubled up to `reconnect_max`. Default 500ms.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 30s.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// On shutdown, time allowed to get pending batches acknowledged. Default 5s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Compression of the batches sent (and the acks received): `none` or
    /// `zstd`. Default `none`: tonic builds a fresh zstd context for every
    /// message, which costs the agent about 3 MiB of resident memory (see the
    /// README's measurements) to save bandwidth that batches of a few hundred
    /// KiB a minute do not need; `zstd` suits agents on a metered link.
    pub compression: Compression,
}

/// How batches travel on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed protobuf.
    #[default]
    None,
    /// zstd, each message on its own (the collector accepts both).
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "zstd" => Ok(Self::Zstd),
            other => Err(format!(
                "unknown compression {other:?}: expected \"none\" or \"zstd\""
            )),
        }
    }
}

/// The agent is I/O bound (a probe is mostly waiting), so a small runtime
/// does its work; every thread costs resident memory (its stack, and with
/// glibc its own malloc arena), and the default of one worker per core
/// would grow the agent with the node's size.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads running the probes, the batcher and the transport
    /// (0 is taken as 1). Default 1.
    pub worker_threads: usize,
    /// Most threads for blocking work at once, started on demand and
    /// stopped when idle: name resolution of sites probed by name (a lookup
    /// waiting for a thread counts in that probe's connect time, as curl
    /// counts resolution) and disk spool files. Default 16.
    pub max_blocking_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: 1,
            max_blocking_threads: 16,
        }
    }
}

impl Default for CollectorConnConfig {
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:7070".into(),
            server_name: None,
            tls: None,
            insecure: false,
            max_in_flight: 32,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            compression: Compression::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_and_runtime_are_read_from_toml_with_small_defaults() {
        let c: AgentConfig =
            toml::from_str("[collector]\ncompression = \"zstd\"\n[runtime]\nworker_threads = 2\n")
                .expect("valid");
        assert_eq!(c.collector.compression, Compression::Zstd);
        assert_eq!(c.runtime.worker_threads, 2);
        assert_eq!(c.runtime.max_blocking_threads, 16);
        let d = AgentConfig::default();
        assert_eq!(d.collector.compression, Compression::None);
        assert_eq!(d.runtime.worker_threads, 1);
    }

    #[test]
    fn keep_alive_is_off_by_default_and_read_from_toml() {
        let d = AgentConfig::default();
        assert!(!d.probe.keep_alive);
        assert_eq!(d.probe.keep_alive_max_idle_per_target, 64);
        assert_eq!(d.probe.keep_alive_max_idle, 128);
        assert_eq!(d.probe.keep_alive_idle_timeout, Duration::from_secs(4));
        let c: AgentConfig = toml::from_str(
            "[probe]\nkeep_alive = true\nkeep_alive_max_idle = 8\nkeep_alive_idle_timeout = \"30s\"\n",
        )
        .expect("valid");
        assert!(c.probe.keep_alive);
        assert_eq!(c.probe.keep_alive_max_idle, 8);
        assert_eq!(c.probe.keep_alive_max_idle_per_target, 64);
        assert_eq!(c.probe.keep_alive_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn an_unknown_compression_is_refused_by_name() {
        let err = toml::from_str::<AgentConfig>("[collector]\ncompression = \"gzip\"\n")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("gzip"), "{err}");
        let flag = "brotli".parse::<Compression>().expect_err("refused");
        assert!(flag.contains("brotli") && flag.contains("zstd"), "{flag}");
    }
}
