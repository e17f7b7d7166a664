//! Flags and environment variables of every subcommand, and how they override
//! the TOML config file (defaults ← file ← environment ← flags; clap resolves
//! environment vs flag, this module applies the result over the file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use livehead_agent::AgentConfig;
use livehead_agent::config::Compression;
#[cfg(feature = "collector")]
use livehead_collector::CollectorConfig;
#[cfg(feature = "collector")]
use livehead_collector::config::PushToken;
use livehead_common::config::load_or_default;
use livehead_common::telemetry::LogFormat;
use livehead_common::tls::TlsFiles;
#[cfg(feature = "collector")]
use livehead_up::UpConfig;

/// `livehead --version`: the crate's version and the commit it was built
/// from (`build.rs`; `unknown` outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIVEHEAD_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "livehead",
    version = VERSION,
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
    Agent(Box<AgentArgs>),
    /// Receive agents' batches, write them to ClickHouse or the embedded
    /// SQLite store, and serve the HTTP API.
    #[cfg(feature = "collector")]
    Collector(Box<CollectorArgs>),
    /// Evaluate alert rules on what the collectors accept and notify Slack,
    /// Discord, PagerDuty and webhooks; `check` and `test` a rules file.
    #[cfg(feature = "collector")]
    Alerter(AlerterArgs),
    /// Write a development CA and collector/agent certificates.
    Certs(CertsArgs),
    /// Run a command between two heartbeat pings (start, then its exit
    /// status with its output's tail) and exit with its status.
    Run(RunArgs),
    /// Run a collector (embedded SQLite store) and an agent in one process, for a laptop.
    #[cfg(feature = "collector")]
    Up(UpArgs),
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
    /// How often the TLS files are read again for renewed certificates
    /// (tls.reload_interval; 0 turns it off).
    #[arg(long, env = "LIVEHEAD_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Option<std::time::Duration>,
    /// Time within which streams opened before a renewal are closed to
    /// reconnect with the new certificates (tls.rotation_grace).
    #[arg(long, env = "LIVEHEAD_TLS_ROTATION_GRACE", value_parser = humantime::parse_duration)]
    pub tls_rotation_grace: Option<std::time::Duration>,
}

impl TlsArgs {
    /// The file's TLS settings with the flags applied; all three paths must end up set.
    fn apply(self, from_file: Option<TlsFiles>) -> anyhow::Result<Option<TlsFiles>> {
        let (reload, grace) = (self.tls_reload_interval, self.tls_rotation_grace);
        let files = self.apply_paths(from_file)?;
        Ok(files.map(|mut files| {
            files.reload_interval = reload.unwrap_or(files.reload_interval);
            files.rotation_grace = grace.unwrap_or(files.rotation_grace);
            files
        }))
    }

    fn apply_paths(self, from_file: Option<TlsFiles>) -> anyhow::Result<Option<TlsFiles>> {
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
            ..base
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
    /// Where this agent probes from: inside (the default, on the nodes),
    /// outside (public URLs from another host) or another [a-z0-9_-] label.
    #[arg(long, env = "LIVEHEAD_VANTAGE")]
    pub vantage: Option<String>,
    /// Time between rounds, e.g. 30m, 60s.
    #[arg(long, env = "LIVEHEAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Fraction of the interval over which probes are spread (0-1).
    #[arg(long, env = "LIVEHEAD_SPREAD")]
    pub spread: Option<f64>,
    /// Probes in flight at once.
    #[arg(long, env = "LIVEHEAD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Run one round, unspread, get its results acknowledged and exit (non-zero
    /// when some were not): for a cron job.
    #[arg(long, env = "LIVEHEAD_ONCE")]
    pub once: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Plain-text gRPC to an http:// collector URL, without certificates.
    #[arg(long, env = "LIVEHEAD_INSECURE")]
    pub insecure: bool,
    /// Address of the agent's /metrics endpoint.
    #[arg(long, env = "LIVEHEAD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the disk spool: unacknowledged batches are kept there, one
    /// file each, and survive restarts (unset: kept in memory).
    #[arg(long, env = "LIVEHEAD_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Compression of the batches sent: none (the default) or zstd.
    #[arg(long, env = "LIVEHEAD_COMPRESSION")]
    pub compression: Option<Compression>,
    /// Worker threads of the agent's runtime (default 1).
    #[arg(long, env = "LIVEHEAD_AGENT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Probe only: no sampling of the node, its pods, sites and services.
    #[arg(long, env = "LIVEHEAD_NO_SAMPLE")]
    pub no_sample: bool,
    /// HEAD-first probes only: no content checks.
    #[arg(long, env = "LIVEHEAD_NO_CONTENT")]
    pub no_content: bool,
    /// Keep plain-http connections to a target open between probes
    /// (HTTP/1.1 keep-alive; connect time is then recorded as 0).
    #[arg(long, env = "LIVEHEAD_KEEP_ALIVE")]
    pub keep_alive: bool,
    /// Time between two samples of the node (5s to 5m; default 10s).
    #[arg(long, env = "LIVEHEAD_SAMPLE_INTERVAL", value_parser = humantime::parse_duration)]
    pub sample_interval: Option<Duration>,
}

impl AgentArgs {
    pub fn into_config(self) -> anyhow::Result<AgentConfig> {
        let mut c: AgentConfig = load_or_default(self.config.as_deref())?;
        c.config_file.clone_from(&self.config);
        c.id = self.id.or(c.id);
        set(&mut c.collector.url, self.collector_url);
        c.collector.server_name = self.server_name.or(c.collector.server_name);
        c.sites.web_root = self.web_root.or(c.sites.web_root);
        c.sites.list_file = self.sites_file.or(c.sites.list_file);
        set(&mut c.sites.ignore, self.ignore);
        c.target = self.target.or(c.target);
        set(&mut c.vantage, self.vantage);
        set(&mut c.rounds.interval, self.interval);
        set(&mut c.rounds.spread, self.spread);
        set(&mut c.rounds.concurrency, self.concurrency);
        c.rounds.once |= self.once;
        c.collector.tls = self.tls.apply(c.collector.tls)?;
        c.collector.insecure |= self.insecure;
        c.metrics_listen = self.metrics_listen.or(c.metrics_listen);
        c.spool.dir = self.spool_dir.or(c.spool.dir);
        set(&mut c.collector.compression, self.compression);
        set(&mut c.runtime.worker_threads, self.worker_threads);
        c.sample.enabled &= !self.no_sample;
        c.content.enabled &= !self.no_content;
        c.probe.keep_alive |= self.keep_alive;
        set(&mut c.sample.interval, self.sample_interval);
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

#[cfg(feature = "collector")]
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// TOML config file (see the README's configuration reference).
    #[arg(long, env = "LIVEHEAD_COLLECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC ingest address.
    #[arg(long, env = "LIVEHEAD_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP address: the API (/health, /push, /last, /dump_last) and /metrics.
    #[arg(long, env = "LIVEHEAD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// ClickHouse HTTP URL, e.g. http://clickhouse:8123. Unset: the embedded
    /// SQLite store (--sqlite-path).
    #[arg(long, env = "LIVEHEAD_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// The embedded SQLite store's file, used without --clickhouse-url
    /// (created when missing).
    #[arg(long, env = "LIVEHEAD_SQLITE_PATH")]
    pub sqlite_path: Option<PathBuf>,
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
    /// A token POST /push accepts, as NAME=SHA256 (the token's SHA-256 in hex:
    /// `printf %s "$TOKEN" | sha256sum`); repeat the flag, or separate with
    /// commas in the variable. Replaces the config file's api.push_tokens.
    #[arg(
        long = "push-token",
        env = "LIVEHEAD_PUSH_TOKENS",
        value_name = "NAME=SHA256",
        value_delimiter = ',',
        value_parser = parse_push_token
    )]
    pub push_tokens: Vec<PushToken>,
    /// A heartbeat ping key, as PROJECT=SHA256 (the key's SHA-256 in hex:
    /// `printf %s "$KEY" | sha256sum`); repeat the flag, or separate with
    /// commas in the variable. Replaces the config file's heartbeats.ping_keys.
    #[arg(
        long = "ping-key",
        env = "LIVEHEAD_PING_KEYS",
        value_name = "PROJECT=SHA256",
        value_delimiter = ',',
        value_parser = parse_push_token
    )]
    pub ping_keys: Vec<PushToken>,
    /// Largest /push body in bytes.
    #[arg(long, env = "LIVEHEAD_MAX_PUSH_BYTES")]
    pub max_push_bytes: Option<usize>,
    /// /last and /dump_last need a push token too.
    #[arg(long, env = "LIVEHEAD_READ_REQUIRES_TOKEN")]
    pub read_requires_token: bool,
    /// A certificate name that may subscribe to WatchService (the alerter),
    /// or "*" for any; repeat the flag, or separate with commas in the
    /// variable. Replaces the config file's watch.allow.
    #[arg(
        long = "watch-allow",
        env = "LIVEHEAD_WATCH_ALLOW",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub watch_allow: Vec<String>,
    /// Do not serve the browser dashboard (/ui).
    #[arg(long, env = "LIVEHEAD_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// The file (at least 32 bytes) dashboard sessions are signed with;
    /// unset: a random key per process.
    #[arg(long, env = "LIVEHEAD_DASHBOARD_SESSION_KEY_FILE")]
    pub dashboard_session_key_file: Option<PathBuf>,
    /// Mark the dashboard's session cookie Secure (behind an https proxy).
    #[arg(long, env = "LIVEHEAD_DASHBOARD_SECURE_COOKIE")]
    pub dashboard_secure_cookie: bool,
    /// The alerter's API the dashboard forwards alert actions to, e.g.
    /// http://127.0.0.1:7090.
    #[arg(long, env = "LIVEHEAD_DASHBOARD_ALERTER_URL")]
    pub dashboard_alerter_url: Option<String>,
    /// A file holding an admin token of the alerter's API.
    #[arg(long, env = "LIVEHEAD_DASHBOARD_ALERTER_TOKEN_FILE")]
    pub dashboard_alerter_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Plain-text gRPC without client certificates.
    #[arg(long, env = "LIVEHEAD_INSECURE")]
    pub insecure: bool,
}

#[cfg(feature = "collector")]
/// `NAME=SHA256`; clap names the flag (or variable) in the error.
fn parse_push_token(value: &str) -> Result<PushToken, String> {
    let (name, sha256) = value
        .split_once('=')
        .ok_or("expected NAME=SHA256 (the token's name, `=`, its SHA-256 in hex)")?;
    let (name, sha256) = (name.trim(), sha256.trim());
    if name.is_empty() {
        return Err("the token's name before `=` is empty".into());
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "token {name:?}: expected its SHA-256 as 64 hex digits after `=` (not the token itself)"
        ));
    }
    Ok(PushToken {
        name: name.to_owned(),
        // Hex digests are compared as text; sha256sum prints lower case.
        sha256: sha256.to_ascii_lowercase(),
    })
}

#[cfg(feature = "collector")]
impl CollectorArgs {
    pub fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut c: CollectorConfig = load_or_default(self.config.as_deref())?;
        set(&mut c.grpc_listen, self.grpc_listen);
        set(&mut c.http_listen, self.http_listen);
        c.storage.clickhouse_url = self.clickhouse_url.or(c.storage.clickhouse_url);
        set(&mut c.storage.sqlite_path, self.sqlite_path);
        set(&mut c.storage.database, self.database);
        set(&mut c.storage.user, self.clickhouse_user);
        set(&mut c.storage.password, self.clickhouse_password);
        c.storage.history &= !self.no_history;
        set(&mut c.storage.retention_days, self.retention_days);
        if !self.push_tokens.is_empty() {
            c.api.push_tokens = self.push_tokens;
        }
        if !self.ping_keys.is_empty() {
            c.heartbeats.ping_keys = self
                .ping_keys
                .into_iter()
                .map(|key| (key.name, key.sha256))
                .collect();
        }
        set(&mut c.api.max_push_bytes, self.max_push_bytes);
        c.api.read_requires_token |= self.read_requires_token;
        let watch_allow: Vec<String> = self
            .watch_allow
            .iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        if !watch_allow.is_empty() {
            c.watch.allow = watch_allow;
        }
        c.dashboard.enabled &= !self.no_dashboard;
        c.dashboard.secure_cookie |= self.dashboard_secure_cookie;
        let d = &mut c.dashboard;
        d.session_key_file = self
            .dashboard_session_key_file
            .or(d.session_key_file.take());
        d.alerter_url = self.dashboard_alerter_url.or(d.alerter_url.take());
        d.alerter_token_file = self
            .dashboard_alerter_token_file
            .or(d.alerter_token_file.take());
        c.tls = self.tls.apply(c.tls)?;
        c.insecure |= self.insecure;
        Ok(c)
    }
}

#[cfg(feature = "collector")]
#[derive(Debug, Args)]
pub struct AlerterArgs {
    #[command(subcommand)]
    pub action: Option<AlerterAction>,
    /// TOML config file (see the README's configuration reference).
    #[arg(long, env = "LIVEHEAD_ALERTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The rules file: rules, receivers, routes, inhibition (reloaded on SIGHUP).
    #[arg(long, env = "LIVEHEAD_RULES")]
    pub rules: Option<PathBuf>,
    /// Directory of the alerter's state and of its records' spool.
    #[arg(long, env = "LIVEHEAD_ALERTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Collector gRPC URL; repeat the flag (or separate with commas in the
    /// variable) for several. A host resolving to several addresses is one
    /// replica per address. Replaces the config file's collectors.urls.
    #[arg(
        long = "collector-url",
        env = "LIVEHEAD_COLLECTOR_URLS",
        value_delimiter = ','
    )]
    pub collector_urls: Vec<String>,
    /// Name the collectors' certificate must carry (default: the URL's host).
    #[arg(long, env = "LIVEHEAD_SERVER_NAME")]
    pub server_name: Option<String>,
    /// HTTP address of the API (/alerts, /silences, /health, /metrics).
    #[arg(long, env = "LIVEHEAD_ALERTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Plain-text gRPC to the collectors (http:// URLs, no certificates).
    #[arg(long, env = "LIVEHEAD_INSECURE")]
    pub insecure: bool,
}

/// What `livehead alerter` does besides running.
#[cfg(feature = "collector")]
#[derive(Debug, Subcommand)]
pub enum AlerterAction {
    /// Check a rules file and exit: 0 when valid, 1 with the lines at fault.
    Check { file: PathBuf },
    /// Run the rule unit tests of a test file (input series, expected alerts).
    Test { file: PathBuf },
}

#[cfg(feature = "collector")]
impl AlerterArgs {
    pub fn into_config(self) -> anyhow::Result<livehead_alerter::config::AlerterConfig> {
        let mut c: livehead_alerter::config::AlerterConfig =
            load_or_default(self.config.as_deref())?;
        c.rules = self.rules.or(c.rules);
        set(&mut c.state_dir, self.state_dir);
        if !self.collector_urls.is_empty() {
            c.collectors.urls = self.collector_urls;
        }
        c.collectors.server_name = self.server_name.or(c.collectors.server_name);
        set(&mut c.api.listen, self.listen);
        c.collectors.tls = self.tls.apply(c.collectors.tls)?;
        c.collectors.insecure |= self.insecure;
        if c.rules.is_none() {
            bail!("no rules file: set --rules (LIVEHEAD_RULES) or `rules` in the config file");
        }
        Ok(c)
    }
}

/// `livehead run --check ID [--url URL] [--ping-key KEY] -- COMMAND...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The check: its ping id (a UUID), or its slug with --ping-key.
    #[arg(long)]
    pub check: String,
    /// The collector's HTTP base URL (http or https); pings go to URL/ping/...
    #[arg(long, env = "LIVEHEAD_PING_URL")]
    pub url: Option<String>,
    /// The project's ping key, for a check named by its slug.
    #[arg(long, env = "LIVEHEAD_PING_KEY")]
    pub ping_key: Option<String>,
    /// Bytes of the command's output (its last ones) sent with the end ping.
    #[arg(long, env = "LIVEHEAD_RUN_TAIL_BYTES", default_value_t = livehead_agent::run_check::DEFAULT_TAIL_BYTES)]
    pub tail_bytes: usize,
    /// Time limit of one ping attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,
    /// Attempts per ping before giving up on it (the command's status never
    /// depends on it).
    #[arg(long, default_value_t = 3)]
    pub ping_attempts: u32,
    /// A CA certificate (PEM) trusted for an https URL besides the public roots.
    #[arg(long, env = "LIVEHEAD_PING_CA")]
    pub ca: Option<PathBuf>,
    /// The command and its arguments, after `--` (run without a shell).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl RunArgs {
    pub fn into_config(self) -> livehead_agent::run_check::RunCheckConfig {
        let mut c = livehead_agent::run_check::RunCheckConfig::new(
            self.url.unwrap_or_default(),
            self.check,
            self.command,
        );
        c.ping_key = self.ping_key;
        c.tail_bytes = self.tail_bytes;
        c.ping_timeout = self.ping_timeout;
        c.ping_attempts = self.ping_attempts;
        c.ca_file = self.ca;
        c
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

#[cfg(feature = "collector")]
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for the dev certificates, the push token and the SQLite
    /// database; created (mode 0700) on first run and reused afterwards.
    #[arg(long, env = "LIVEHEAD_STATE_DIR", default_value = ".livehead")]
    pub state_dir: PathBuf,
    /// HTTP address of the API (/health, /push, /last, /dump_last, /metrics).
    #[arg(long, env = "LIVEHEAD_UP_LISTEN", default_value = "127.0.0.1:7080")]
    pub listen: SocketAddr,
    /// Time between rounds, e.g. 1m, 30s.
    #[arg(long, env = "LIVEHEAD_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Where named sites are probed: HOST:PORT, http://HOST:PORT or
    /// https://HOST:PORT, the site in the Host header (default: each site at
    /// https://<site>/).
    #[arg(long, env = "LIVEHEAD_TARGET")]
    pub target: Option<String>,
    /// Do not keep health_history (only health_last).
    #[arg(long, env = "LIVEHEAD_NO_HISTORY")]
    pub no_history: bool,
    /// Days of history kept (0 = forever).
    #[arg(long, env = "LIVEHEAD_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// A rules file (see `livehead alerter check`): also runs the alerter,
    /// which can post to a real Slack channel from a laptop.
    #[arg(long, env = "LIVEHEAD_RULES")]
    pub rules: Option<PathBuf>,
    /// HTTP address of the alerter's API (with --rules).
    #[arg(
        long,
        env = "LIVEHEAD_ALERTER_LISTEN",
        default_value = "127.0.0.1:7090"
    )]
    pub alerter_listen: SocketAddr,
    /// What to probe: a directory (web root: each subdirectory is a site), a
    /// file (one host name or URL per line), an http(s) URL, or a host name.
    #[arg(value_name = "SITES", required = true)]
    pub sites: Vec<String>,
}

#[cfg(feature = "collector")]
impl UpArgs {
    pub fn into_config(self) -> UpConfig {
        UpConfig {
            state_dir: self.state_dir,
            listen: self.listen,
            interval: self.interval,
            target: self.target,
            sites: self.sites,
            history: !self.no_history,
            retention_days: self.retention_days,
            rules: self.rules,
            alerter_listen: self.alerter_listen,
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

// The tests parse every subcommand; the default build has them all.
#[cfg(all(test, feature = "collector"))]
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
            "--spool-dir",
            "/var/lib/livehead/spool",
            "--compression",
            "zstd",
            "--worker-threads",
            "2",
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
        assert_eq!(
            c.spool.dir.as_deref(),
            Some(std::path::Path::new("/var/lib/livehead/spool"))
        );
        assert_eq!(c.spool.disk_max_bytes, 256 << 20);
        assert_eq!(c.batch.max_bytes, 1 << 20);
        assert_eq!(
            c.collector.compression,
            livehead_agent::config::Compression::Zstd
        );
        assert_eq!(c.runtime.worker_threads, 2);
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

    const SHA: &str = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";

    fn collector(args: &[&str]) -> Result<CollectorArgs, clap::Error> {
        let argv = ["livehead", "collector"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Collector(args) => Ok(*args),
            other => panic!("collector expected, got {other:?}"),
        }
    }

    #[test]
    fn api_and_sqlite_flags_reach_the_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!("[[api.push_tokens]]\nname = \"old\"\nsha256 = \"{SHA}\"\n"),
        )
        .expect("write");
        let c = collector(&["--config", file.to_str().expect("utf8")])
            .expect("parse")
            .into_config()
            .expect("config");
        assert_eq!(c.api.push_tokens[0].name, "old");
        assert!(!c.api.read_requires_token);

        let c = collector(&[
            "--config",
            file.to_str().expect("utf8"),
            "--sqlite-path",
            "/var/lib/livehead/db.sqlite",
            "--push-token",
            &format!("pods-eu={SHA}"),
            "--push-token",
            &format!(" ci = {}", SHA.to_lowercase()),
            "--max-push-bytes",
            "1024",
            "--read-requires-token",
        ])
        .expect("parse")
        .into_config()
        .expect("config");
        assert_eq!(
            c.storage.sqlite_path,
            PathBuf::from("/var/lib/livehead/db.sqlite")
        );
        let tokens: Vec<_> = c
            .api
            .push_tokens
            .iter()
            .map(|t| (t.name.as_str(), t.sha256.as_str()))
            .collect();
        let lower = SHA.to_lowercase();
        assert_eq!(
            tokens,
            [("pods-eu", lower.as_str()), ("ci", lower.as_str())]
        );
        assert_eq!(c.api.max_push_bytes, 1024);
        assert!(c.api.read_requires_token);
    }

    #[test]
    fn ping_key_flags_replace_the_files_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("[heartbeats.ping_keys]\nold = \"{SHA}\"\n")).expect("write");
        let path = file.to_str().expect("utf8");
        let c = collector(&["--config", path])
            .expect("parse")
            .into_config()
            .expect("config");
        assert_eq!(c.heartbeats.ping_keys.keys().collect::<Vec<_>>(), ["old"]);
        let c = collector(&["--config", path, "--ping-key", &format!("ops={SHA}")])
            .expect("parse")
            .into_config()
            .expect("config");
        assert_eq!(
            c.heartbeats.ping_keys.get("ops").map(String::as_str),
            Some(SHA.to_lowercase().as_str())
        );
        assert_eq!(c.heartbeats.ping_keys.len(), 1);
    }

    #[test]
    fn watch_allow_flags_replace_the_files_list() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[watch]\nallow = [\"old\"]\nmax_subscribers = 2\n").expect("write");
        let path = file.to_str().expect("utf8");
        let c = collector(&["--config", path])
            .expect("parse")
            .into_config()
            .expect("config");
        assert_eq!(
            (c.watch.allow.as_slice(), c.watch.max_subscribers),
            (&["old".to_owned()][..], 2)
        );
        let c = collector(&[
            "--config",
            path,
            "--watch-allow",
            "alerter",
            "--watch-allow",
            " alerter-2 ",
        ])
        .expect("parse")
        .into_config()
        .expect("config");
        assert_eq!(c.watch.allow, ["alerter", "alerter-2"]);
        assert_eq!(c.watch.max_subscribers, 2);
    }

    #[test]
    fn a_bad_push_token_names_the_flag() {
        for bad in [SHA, "=abc", "name=not-a-digest"] {
            let err = collector(&["--push-token", bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("--push-token"), "{bad}: {err}");
        }
    }

    #[test]
    fn up_needs_sites_and_has_laptop_defaults() {
        let err = Cli::try_parse_from(["livehead", "up"]).expect_err("no sites");
        assert!(err.to_string().contains("SITES"), "{err}");

        let cli = Cli::try_parse_from(["livehead", "up", "sites.txt", "https://example.com/"])
            .expect("parse");
        let Command::Up(args) = cli.command else {
            panic!("up")
        };
        let c = args.into_config();
        assert_eq!(c.state_dir, PathBuf::from(".livehead"));
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 7080)));
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.sites, ["sites.txt", "https://example.com/"]);
        assert!(c.history);
        assert_eq!(c.target, None);
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

    #[test]
    fn run_takes_the_command_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "livehead",
            "run",
            "--check",
            "nightly",
            "--url",
            "http://c:8080",
            "--ping-key",
            "k",
            "--ping-timeout",
            "3s",
            "--",
            "backup.sh",
            "--full",
        ])
        .expect("parse");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        let c = args.into_config();
        assert_eq!(c.command, ["backup.sh", "--full"]);
        assert_eq!(c.check, "nightly");
        assert_eq!(c.ping_key.as_deref(), Some("k"));
        assert_eq!(c.ping_timeout, Duration::from_secs(3));
        assert_eq!(c.tail_bytes, 10 * 1024);
        assert_eq!(c.ping_attempts, 3);
        assert!(Cli::try_parse_from(["livehead", "run", "--check", "x"]).is_err());
    }
}
