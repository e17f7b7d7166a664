//! `livehead`: parses the command line and hands over to the component crates.

use anyhow::Context;
use clap::Parser;
use livehead::cli::{CertsArgs, Cli, Command};
use livehead_common::Shutdown;
use livehead_common::telemetry::LogFormat;
use livehead_common::traces::{TelemetryConfig, Traces, TracesSettings};

/// How long a stopping agent waits for its blocking threads: a statvfs stuck
/// on a dead NFS mount never returns, and must not keep the process alive.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    livehead_common::tls::install_crypto_provider();
    let format = cli.log_format;
    // The logs start once the configuration is read: its `[telemetry]`
    // decides whether spans are exported too.
    match cli.command {
        Command::Agent(args) => {
            let config = args.into_config().context("agent configuration")?;
            // The agent sizes its own runtime (few threads), to stay small.
            let runtime =
                livehead_agent::runtime(&config.runtime).context("starting the async runtime")?;
            let traces = logs_and_traces(format, &config.telemetry, "livehead-agent", &runtime);
            let reload = std::sync::Arc::new(tokio::sync::Notify::new());
            let result = runtime.block_on(with_signals(|shutdown| async move {
                tokio::spawn(reload_on_sighup(reload.clone(), "the watchdog's config"));
                livehead_agent::run_with_reload(config, shutdown, reload)
                    .await
                    .context("agent")
            }));
            // The exporter's last spans leave through the runtime.
            if let Some(traces) = traces {
                traces.stop();
            }
            runtime.shutdown_timeout(BLOCKING_GRACE);
            result
        }
        #[cfg(feature = "collector")]
        Command::Collector(args) => {
            let config = args.into_config().context("collector configuration")?;
            let runtime = default_runtime()?;
            let traces = logs_and_traces(format, &config.telemetry, "livehead-collector", &runtime);
            let result = runtime.block_on(with_signals(|shutdown| async move {
                livehead_collector::run(config, shutdown)
                    .await
                    .context("collector")
            }));
            if let Some(traces) = traces {
                traces.stop();
            }
            result
        }
        #[cfg(feature = "collector")]
        Command::Alerter(args) => alerter(format, args),
        Command::Certs(args) => {
            logs(format);
            certs(args)
        }
        Command::Run(args) => {
            logs(format);
            run_check(args)
        }
        #[cfg(feature = "collector")]
        Command::Up(args) => {
            logs(format);
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

/// The logs alone (commands that export no traces).
fn logs(format: LogFormat) {
    livehead_common::telemetry::init(format, "info", None);
}

/// The logs, and the trace exporter when `config` or the `OTEL_*` variables
/// set an endpoint (started inside `runtime`, where its gRPC client lives).
/// Traces that cannot start are logged and left off: they are never worth
/// not running.
fn logs_and_traces(
    format: LogFormat,
    config: &TelemetryConfig,
    service: &str,
    runtime: &tokio::runtime::Runtime,
) -> Option<Traces> {
    let started = TracesSettings::resolve(config, service, |name| std::env::var(name).ok())
        .and_then(|settings| match settings {
            Some(settings) => {
                let _inside = runtime.enter();
                Traces::start(&settings).map(|traces| Some((traces, settings)))
            }
            None => Ok(None),
        });
    match started {
        Ok(Some((traces, settings))) => {
            livehead_common::telemetry::init(format, "info", Some(&traces));
            tracing::info!(endpoint = %settings.endpoint, service = %settings.service_name,
                sampler = ?settings.sampler, "exporting traces over OTLP");
            Some(traces)
        }
        Ok(None) => {
            logs(format);
            None
        }
        Err(error) => {
            logs(format);
            tracing::warn!(%error, "traces are off");
            None
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
fn alerter(format: LogFormat, args: livehead::cli::AlerterArgs) -> anyhow::Result<()> {
    use livehead::cli::AlerterAction;
    if args.action.is_some() {
        logs(format);
    }
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
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let traces = logs_and_traces(format, &config.telemetry, "livehead-alerter", &runtime);
            let result = runtime.block_on(with_signals(|shutdown| async move {
                tokio::spawn(reload_on_sighup(reload.clone(), "the rules"));
                livehead_alerter::run(config, shutdown, reload)
                    .await
                    .context("alerter")
            }));
            if let Some(traces) = traces {
                traces.stop();
            }
            result
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
