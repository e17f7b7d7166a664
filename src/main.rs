//! `livehead`: parses the command line and hands over to the component crates.

use anyhow::Context;
use clap::Parser;
use livehead::cli::{CertsArgs, Cli, Command};
use livehead_common::Shutdown;

/// How long a stopping agent waits for its blocking threads: a statvfs stuck
/// on a dead NFS mount never returns, and must not keep the process alive.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    livehead_common::telemetry::init(cli.log_format, "info");
    livehead_common::tls::install_crypto_provider();
    match cli.command {
        Command::Agent(args) => {
            let config = args.into_config().context("agent configuration")?;
            // The agent sizes its own runtime (few threads), to stay small.
            let runtime =
                livehead_agent::runtime(&config.runtime).context("starting the async runtime")?;
            let reload = std::sync::Arc::new(tokio::sync::Notify::new());
            let result = runtime.block_on(with_signals(|shutdown| async move {
                tokio::spawn(reload_on_sighup(reload.clone(), "the watchdog's config"));
                livehead_agent::run_with_reload(config, shutdown, reload)
                    .await
                    .context("agent")
            }));
            runtime.shutdown_timeout(BLOCKING_GRACE);
            result
        }
        #[cfg(feature = "collector")]
        Command::Collector(args) => {
            let config = args.into_config().context("collector configuration")?;
            default_runtime()?.block_on(with_signals(|shutdown| async move {
                livehead_collector::run(config, shutdown)
                    .await
                    .context("collector")
            }))
        }
        #[cfg(feature = "collector")]
        Command::Alerter(args) => alerter(args),
        Command::Certs(args) => certs(args),
        Command::Run(args) => run_check(args),
        #[cfg(feature = "collector")]
        Command::Up(args) => {
            let config = args.into_config();
            let state = config.state_dir.display().to_string();
            let runtime = default_runtime()?;
            let reload = std::sync::Arc::new(tokio::sync::Notify::new());
            let result = runtime.block_on(with_signals(|shutdown| async move {
                tokio::spawn(reload_on_sighup(reload.clone(), "the rules"));
                livehead_up::run(config, shutdown, reload)
                    .await
                    .with_context(|| format!("livehead up (state in {state})"))
            }));
            runtime.shutdown_timeout(BLOCKING_GRACE);
            result
        }
    }
}

#[cfg(feature = "collector")]
fn default_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Runs `task` with a shutdown that SIGINT or SIGTERM fires.
async fn with_signals<F, Fut>(task: F) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = Shutdown::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    task(shutdown).await
}

#[cfg(feature = "collector")]
fn alerter(args: livehead::cli::AlerterArgs) -> anyhow::Result<()> {
    use livehead::cli::AlerterAction;
    match args.action {
        Some(AlerterAction::Check { file }) => {
            let rules = livehead_alerter::RulesFile::load(&file)?;
            println!(
                "{}: {} rules, {} receivers, {} inhibit rules: OK",
                file.display(),
                rules.rules.len(),
                rules.receivers.len(),
                rules.inhibit.len()
            );
            Ok(())
        }
        Some(AlerterAction::Test { file }) => {
            let report = livehead_alerter::rules::run_test_file(&file)?;
            print!("{report}");
            anyhow::ensure!(
                report.passed(),
                "{}: some rule tests failed",
                file.display()
            );
            Ok(())
        }
        None => {
            let config = args.into_config().context("alerter configuration")?;
            let reload = std::sync::Arc::new(tokio::sync::Notify::new());
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")?
                .block_on(with_signals(|shutdown| async move {
                    tokio::spawn(reload_on_sighup(reload.clone(), "the rules"));
                    livehead_alerter::run(config, shutdown, reload)
                        .await
                        .context("alerter")
                }))
        }
    }
}

/// SIGHUP re-reads `what`: the alerter's rules file, the agent's
/// `[watchdog]`.
async fn reload_on_sighup(reload: std::sync::Arc<tokio::sync::Notify>, what: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, what, "cannot listen for SIGHUP: reload disabled");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!(what, "SIGHUP: reloading");
        reload.notify_one();
    }
}

/// `livehead run`: ends the process with the command's exit status.
fn run_check(args: livehead::cli::RunArgs) -> anyhow::Result<()> {
    let config = args.into_config();
    // One thread: two pings and a child process need no more.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = runtime
        .block_on(livehead_agent::run_check::run(&config))
        .context("livehead run")?;
    drop(runtime);
    std::process::exit(status)
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let files =
        livehead_common::certs::write_dev_pki(&args.out, &args.collector_names, &args.agents)
            .with_context(|| format!("writing certificates to {}", args.out.display()))?;
    for path in &files.written {
        println!("{}", path.display());
    }
    Ok(())
}

/// SIGINT or SIGTERM starts a graceful stop (Kubernetes sends SIGTERM).
async fn cancel_on_signal(shutdown: Shutdown) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
}
