#![doc = include_str!("../README.md")]

pub mod plan;
pub mod sites;
pub mod state;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use livehead_agent::AgentError;
use livehead_agent::discovery::{DefaultTarget, Discovery, DiscoveryError};
use livehead_collector::CollectorError;
use livehead_common::Shutdown;
use livehead_common::certs::CertError;

use crate::plan::Ready;
use crate::sites::SitesPlan;
use crate::state::Layout;

/// What `livehead up` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct UpConfig {
    /// Certificates, push token, database. Default `.livehead`.
    pub state_dir: PathBuf,
    /// The HTTP API (and the collector's `/metrics`). Default 127.0.0.1:7080.
    pub listen: SocketAddr,
    /// Time between rounds. Default 1m.
    pub interval: Duration,
    /// Where named sites are probed, as the agent's `target`. Default: each at
    /// `https://<name>/`.
    pub target: Option<String>,
    /// The SITES arguments: directories, files, URLs, host names (see [`sites::classify`]).
    pub sites: Vec<String>,
    /// Keep `health_history`. Default true.
    pub history: bool,
    /// Days of history kept; `None` is the collector's default.
    pub retention_days: Option<u32>,
    /// A rules file: runs the alerter too. Default none.
    pub rules: Option<PathBuf>,
    /// The alerter's API. Default 127.0.0.1:7090.
    pub alerter_listen: SocketAddr,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(".livehead"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7080)),
            interval: Duration::from_secs(60),
            target: None,
            sites: Vec::new(),
            history: true,
            retention_days: None,
            rules: None,
            alerter_listen: SocketAddr::from(([127, 0, 0, 1], 7090)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("no sites: give a web root, a list file, URLs or host names")]
    NoSites,
    #[error("site argument {arg:?}: {reason}")]
    BadSite { arg: String, reason: String },
    #[error("only one web root can be given ({} and {})", first.display(), second.display())]
    TwoWebRoots { first: PathBuf, second: PathBuf },
    #[error("the interval must be positive")]
    ZeroInterval,
    #[error(transparent)]
    Target(#[from] DiscoveryError),
    #[error("cannot create state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dev certificates")]
    Certs(#[from] CertError),
    #[error("token file {}", path.display())]
    PushToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {} is empty or holds spaces or control characters", path.display())]
    BadPushToken { path: PathBuf },
    #[error("cannot read site list {}", path.display())]
    ReadSites {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write site list {}", path.display())]
    WriteSites {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("collector")]
    Collector(#[from] CollectorError),
    #[error("agent")]
    Agent(#[from] AgentError),
    #[error("alerter")]
    Alerter(#[from] livehead_alerter::AlerterError),
    #[error("the agent task failed")]
    AgentTask(#[source] tokio::task::JoinError),
    #[error("the collector stopped on its own")]
    CollectorStopped,
}

/// Runs a collector and an agent until `shutdown`. The agent stops first and
/// gets its last batches acknowledged; then the collector stops. If either
/// fails, the other is stopped and the error returned.
pub async fn run(
    config: UpConfig,
    shutdown: Shutdown,
    reload: std::sync::Arc<tokio::sync::Notify>,
) -> Result<(), UpError> {
    if config.interval.is_zero() {
        return Err(UpError::ZeroInterval);
    }
    let layout = Layout::new(&config.state_dir);
    let args = config
        .sites
        .iter()
        .map(|arg| sites::classify(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let sites = sites::plan(&args, &layout.sites)?;
    // Checked now rather than by the agent after the banner says "up".
    DefaultTarget::parse(config.target.as_deref())?;

    state::create_dir(&layout)?;
    state::ensure_pki(&layout)?;
    let (token, created) = state::push_token(&layout.push_token)?;
    if created {
        tracing::info!(path = %layout.push_token.display(), "push token generated");
    }
    let (admin, created) = state::push_token(&layout.admin_token)?;
    if created {
        tracing::info!(path = %layout.admin_token.display(), "admin token generated");
    }
    // 64 hex characters: a dashboard session key (at least 32 bytes).
    state::push_token(&layout.session_key)?;
    write_site_list(&sites, &layout)?;

    let tokens = plan::Tokens {
        push_sha256: state::token_sha256(&token),
        admin_sha256: state::token_sha256(&admin),
    };
    let collector_config = plan::collector_config(&config, &layout, &tokens);
    // The collector outlives the agent so the agent's last batches get acked.
    let collector_stop = Shutdown::new();
    let running = livehead_collector::start(collector_config, collector_stop.clone()).await?;
    let (grpc_addr, http_addr) = (running.grpc_addr, running.http_addr);
    // The alerter stops after the agent and before the collector, so its
    // last records are stored.
    let alerter_stop = Shutdown::new();
    let alerter = match &config.rules {
        Some(rules) => {
            let alerter_config = plan::alerter_config(&config, rules, &layout, &tokens, grpc_addr);
            match livehead_alerter::start(alerter_config, alerter_stop.clone(), reload).await {
                Ok(alerter) => Some(alerter),
                Err(error) => {
                    collector_stop.cancel();
                    return Err(error.into());
                }
            }
        }
        None => None,
    };
    let alerter_addr = alerter.as_ref().map(|a| a.api_addr);
    let agent_stop = shutdown.child_token();
    let agent_config = plan::agent_config(&config, &layout, &sites, grpc_addr);
    let found = match livehead_agent::discovery(&agent_config) {
        Ok(discovery) => discover(&discovery),
        Err(error) => {
            collector_stop.cancel();
            return Err(error.into());
        }
    };
    let mut agent = tokio::spawn(livehead_agent::run(agent_config, agent_stop.clone()));

    print_banner(&plan::banner(&Ready {
        sites: found.len(),
        example_site: found.first().map(String::as_str),
        interval: config.interval,
        target: config.target.as_deref(),
        http_addr,
        layout: &layout,
        alerter: alerter_addr.zip(config.rules.as_deref()),
    }));
    tracing::info!(%http_addr, %grpc_addr, state = %layout.dir.display(), sites = found.len(), "livehead up");

    let collector = running.wait();
    tokio::pin!(collector);
    let stop_alerter = || async {
        alerter_stop.cancel();
        match alerter {
            Some(alerter) => alerter.wait().await,
            None => Ok(()),
        }
    };
    tokio::select! {
        agent_result = &mut agent => {
            let alerter_result = stop_alerter().await;
            collector_stop.cancel();
            let collector_result = collector.await;
            agent_result.map_err(UpError::AgentTask)??;
            alerter_result?;
            collector_result?;
            Ok(())
        }
        collector_result = &mut collector => {
            agent_stop.cancel();
            let agent_result = agent.await;
            let alerter_result = stop_alerter().await;
            collector_result?;
            agent_result.map_err(UpError::AgentTask)??;
            alerter_result?;
            // A collector that ends cleanly before being asked to is still a failure here.
            Err(UpError::CollectorStopped)
        }
    }
}

/// Writes the merged site list, or removes a stale one from an earlier run so
/// nobody mistakes it for what is probed.
fn write_site_list(sites: &SitesPlan, layout: &Layout) -> Result<(), UpError> {
    let write_err = |source| UpError::WriteSites {
        path: layout.sites.clone(),
        source,
    };
    match &sites.merged {
        Some(merged) => {
            std::fs::write(&merged.path, merged.render()?).map_err(write_err)?;
            let (path, names, files) = (
                merged.path.display(),
                merged.direct.len(),
                merged.list_files.len(),
            );
            if files == 0 {
                tracing::info!(%path, names, "site list written from the SITES arguments");
            } else {
                // Unlike a lone list file, a merged one is not re-read from its sources.
                tracing::info!(
                    %path,
                    names,
                    list_files = files,
                    "site lists merged into one at start; restart to pick up changes to them"
                );
            }
        }
        None => match std::fs::remove_file(&layout.sites) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_err(e)),
            _ => {}
        },
    }
    Ok(())
}

/// The sites found now, by name, with the agent's own discovery; problems are
/// logged (the agent logs them again each round).
fn discover(discovery: &Discovery) -> Vec<String> {
    let found = discovery.discover();
    for error in &found.errors {
        tracing::warn!(%error, "site source unreadable");
    }
    for (line, text) in &found.bad_lines {
        tracing::warn!(
            line,
            text,
            "site list line is neither a host name nor a URL"
        );
    }
    found.sites.into_iter().map(|s| s.name).collect()
}

/// The banner goes to stdout, apart from the log on stderr, so it can be read
/// (or piped) on its own. A closed stdout is not a reason to stop.
fn print_banner(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(%error, "cannot print the banner");
    }
}
