//! Flags and environment variables of every subcommand, and how they override
//! the TOML config file (defaults ← file ← environment ← flags; clap resolves
//! environment vs flag, this module applies the result over the file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use livehead_agent::AgentConfig;
use livehead_collector::CollectorConfig;
use livehead_common::config::load_or_default;
use livehead_common::telemetry::LogFormat;
use livehead_common::tls::TlsFiles;

#[derive(Debug, Parser)]
#[command(
    name = "livehead",
    version,
    about = "Watches fleets of websites and the hosts behind them"
)]
pub struct Cli {
    /// Log line format: text or json.
    #[arg(
        long,
        global = true,
        env = "LIVEHEAD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe this node's sites and stream the results to a collector.
    Agent(AgentArgs),
    /// Receive agents' batches and write them to ClickHouse.
    Collector(CollectorArgs),
    /// Write a development CA and collector/agent certificates.
    Certs(CertsArgs),
}

/// mTLS files; any flag given overrides the same key of the config file.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) the peer must chain to.
    #[arg(long, env = "LIVEHEAD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This side's certificate (PEM).
    #[arg(long, env = "LIVEHEAD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long, env = "LIVEHEAD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The file's TLS settings with the flags applied; all three paths must end up set.
    fn apply(self, from_file: Option<TlsFiles>) -> anyhow::Result<Option<TlsFiles>> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() && self.tls_key.is_none() {
            return Ok(from_file);
        }
        let base = from_file.unwrap_or_default();
        let pick = |flag: Option<PathBuf>, file: PathBuf, name: &str| {
            flag.or((!file.as_os_str().is_empty()).then_some(file))
                .with_context(|| {
                    format!("--{name} is missing (TLS needs --tls-ca, --tls-cert and --tls-key)")
                })
        };
        Ok(Some(TlsFiles {
            ca: pick(self.tls_ca, base.ca, "tls-ca")?,
            cert: pick(self.tls_cert, base.cert, "tls-cert")?,
            key: pick(self.tls_key, base.key, "tls-key")?,
        }))
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (see the README's configuration reference).
    #[arg(long, env = "LIVEHEAD_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Agent id. With mTLS leave it unset: the certificate names the agent and
    /// the collector refuses a different id.
    #[arg(long, env = "LIVEHEAD_AGENT_ID")]
    pub id: Option<String>,
    /// Collector gRPC URL, e.g. https://collector:7070.
    #[arg(long, env = "LIVEHEAD_COLLECTOR_URL")]
    pub collector_url: Option<String>,
    /// Name the collector's certificate must carry (default: the URL's host).
    #[arg(long, env = "LIVEHEAD_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Directory whose subdirectories are the sites.
    #[arg(long, env = "LIVEHEAD_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// File listing sites (host names or URLs), one per line.
    #[arg(long, env = "LIVEHEAD_SITES_FILE")]
    pub sites_file: Option<PathBuf>,
    /// Regex of web-root directory names that are not sites.
    #[arg(long, env = "LIVEHEAD_IGNORE")]
    pub ignore: Option<String>,
    /// Where named sites are probed: HOST:PORT, http://HOST:PORT or https://HOST:PORT.
    #[arg(long, env = "LIVEHEAD_TARGET")]
    pub target: Option<String>,
    /// Time between rounds, e.g. 30m, 60s.
    #[arg(long, env = "LIVEHEAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Fraction of the interval over which probes are spread (0-1).
    #[arg(long, env = "LIVEHEAD_SPREAD")]
    pub spread: Option<f64>,
    /// Probes in flight at once.
    #[arg(long, env = "LIVEHEAD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Plain-text gRPC to an http:// collector URL, without certificates.
    #[arg(long, env = "LIVEHEAD_INSECURE")]
    pub insecure: bool,
    /// Address of the agent's /metrics endpoint.
    #[arg(long, env = "LIVEHEAD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl AgentArgs {
    pub fn into_config(self) -> anyhow::Result<AgentConfig> {
        let mut c: AgentConfig = load_or_default(self.config.as_deref())?;
        c.id = self.id.or(c.id);
        set(&mut c.collector.url, self.collector_url);
        c.collector.server_name = self.server_name.or(c.collector.server_name);
        c.sites.web_root = self.web_root.or(c.sites.web_root);
        c.sites.list_file = self.sites_file.or(c.sites.list_file);
        set(&mut c.sites.ignore, self.ignore);
        c.target = self.target.or(c.target);
        set(&mut c.rounds.interval, self.interval);
        set(&mut c.rounds.spread, self.spread);
        set(&mut c.rounds.concurrency, self.concurrency);
        c.collector.tls = self.tls.apply(c.collector.tls)?;
        c.collector.insecure |= self.insecure;
        c.metrics_listen = self.metrics_listen.or(c.metrics_listen);
        if !(0.0..=1.0).contains(&c.rounds.spread) {
            bail!(
                "rounds.spread must be between 0 and 1, got {}",
                c.rounds.spread
            );
        }
        if c.rounds.interval.is_zero() {
            bail!("rounds.interval must be positive");
        }
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// TOML config file (see the README's configuration reference).
    #[arg(long, env = "LIVEHEAD_COLLECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC ingest address.
    #[arg(long, env = "LIVEHEAD_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP address (/health, /metrics).
    #[arg(long, env = "LIVEHEAD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// ClickHouse HTTP URL, e.g. http://clickhouse:8123.
    #[arg(long, env = "LIVEHEAD_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database.
    #[arg(long, env = "LIVEHEAD_CLICKHOUSE_DATABASE")]
    pub database: Option<String>,
    /// ClickHouse user.
    #[arg(long, env = "LIVEHEAD_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password (prefer the environment variable).
    #[arg(long, env = "LIVEHEAD_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,
    /// Do not keep health_history (only health_last).
    #[arg(long, env = "LIVEHEAD_NO_HISTORY")]
    pub no_history: bool,
    /// Days of history kept (0 = forever).
    #[arg(long, env = "LIVEHEAD_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Plain-text gRPC without client certificates.
    #[arg(long, env = "LIVEHEAD_INSECURE")]
    pub insecure: bool,
}

impl CollectorArgs {
    pub fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut c: CollectorConfig = load_or_default(self.config.as_deref())?;
        set(&mut c.grpc_listen, self.grpc_listen);
        set(&mut c.http_listen, self.http_listen);
        c.storage.clickhouse_url = self.clickhouse_url.or(c.storage.clickhouse_url);
        set(&mut c.storage.database, self.database);
        set(&mut c.storage.user, self.clickhouse_user);
        set(&mut c.storage.password, self.clickhouse_password);
        c.storage.history &= !self.no_history;
        set(&mut c.storage.retention_days, self.retention_days);
        c.tls = self.tls.apply(c.tls)?;
        c.insecure |= self.insecure;
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (an existing CA there is reused).
    #[arg(long, env = "LIVEHEAD_CERTS_DIR", default_value = "livehead-certs")]
    pub out: PathBuf,
    /// Extra DNS names or IPs of the collector (localhost and 127.0.0.1 are always included).
    #[arg(long = "collector-name")]
    pub collector_names: Vec<String>,
    /// Agent names, one client certificate each.
    #[arg(long = "agent", default_value = "agent")]
    pub agents: Vec<String>,
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "target = \"10.0.0.1:80\"\n[rounds]\ninterval = \"5m\"\nconcurrency = 3\n",
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "livehead",
            "agent",
            "--config",
            file.to_str().expect("utf8"),
            "--concurrency",
            "9",
            "--insecure",
        ])
        .expect("parse");
        let Command::Agent(args) = cli.command else {
            panic!("agent")
        };
        let c = args.into_config().expect("config");
        assert_eq!(c.target.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(c.rounds.interval, Duration::from_secs(300));
        assert_eq!(c.rounds.concurrency, 9);
        assert!(c.collector.insecure);
    }

    #[test]
    fn unknown_config_keys_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[storage]\nclickhouse_ur = \"x\"\n").expect("write");
        let cli = Cli::try_parse_from([
            "livehead",
            "collector",
            "--config",
            file.to_str().expect("utf8"),
        ])
        .expect("parse");
        let Command::Collector(args) = cli.command else {
            panic!("collector")
        };
        let err = format!("{:#}", args.into_config().expect_err("typo"));
        assert!(err.contains("clickhouse_ur"), "{err}");
    }

    #[test]
    fn partial_tls_flags_name_the_missing_one() {
        let cli = Cli::try_parse_from([
            "livehead",
            "collector",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
        ])
        .expect("parse");
        let Command::Collector(args) = cli.command else {
            panic!("collector")
        };
        let err = format!("{:#}", args.into_config().expect_err("missing key"));
        assert!(err.contains("--tls-key"), "{err}");
    }
}
