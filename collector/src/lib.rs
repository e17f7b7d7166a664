#![doc = include_str!("../README.md")]

pub mod access;
pub mod api;
pub mod config;
pub mod dashboard;
pub mod group_commit;
pub mod grpc;
pub mod heartbeats;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod ready;
pub mod stats;
pub mod store;
pub mod validate;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use livehead_common::Shutdown;
use livehead_common::http_server::HttpLimits;
use livehead_common::tls::live::{LiveTls, ReloadMetrics};
use livehead_common::tls::{TlsAcceptor, TlsError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::CollectorConfig;

use crate::group_commit::{GroupCommit, QueueBounds};
use crate::ingest::Ingest;
use crate::ingest::server::IngestServer;
use crate::metrics::CollectorMetrics;
use crate::ready::Readiness;
use crate::store::timed::Timed;
use crate::store::{AnyStore, Store, StoreError};
use crate::watch::WatchServer;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] api::TokenError),
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "TLS is required: set tls.ca, tls.cert and tls.key (--tls-*), or pass --insecure for plain-text gRPC"
    )]
    MissingTls,
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    PingKeys(#[from] heartbeats::KeysError),
    #[error("heartbeats.checks_file {0}")]
    ChecksFile(#[from] heartbeats::CodeError),
    #[error(transparent)]
    Dashboard(#[from] dashboard::DashboardError),
}

/// A started collector: where it listens, and its server task.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), CollectorError>>,
}

impl Running {
    /// Waits until the servers stop (after `shutdown`).
    pub async fn wait(self) -> Result<(), CollectorError> {
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Runs the collector until `shutdown`.
pub async fn run(config: CollectorConfig, shutdown: Shutdown) -> Result<(), CollectorError> {
    start(config, shutdown).await?.wait().await
}

/// Connects the store (running migrations), binds both listeners and starts
/// serving; returns once the collector accepts connections.
pub async fn start(config: CollectorConfig, shutdown: Shutdown) -> Result<Running, CollectorError> {
    let metrics = CollectorMetrics::new();
    let live_tls = match (&config.tls, config.insecure) {
        (_, true) => None,
        (Some(files), false) => Some(LiveTls::load(files, ReloadMetrics::new(&metrics.registry))?),
        (None, false) => return Err(CollectorError::MissingTls),
    };
    let tls = match &live_tls {
        Some(live) => Some(TlsAcceptor::new(
            live.server_config()?,
            config.limits.tls_handshake_timeout,
        )),
        None => None,
    };
    let tokens = api::Tokens::from_config(&config.api.push_tokens)?;
    if tokens.is_empty() {
        tracing::warn!("no api.push_tokens configured: POST /push refuses every request");
    }
    let access = Arc::new(access::Access::from_config(&config.api)?);
    let ping_keys = heartbeats::PingKeys::from_config(&config.heartbeats)?;
    if access.is_empty() {
        tracing::warn!("no api.tokens configured: /stats refuses every request");
        if !access.open_reads() && !config.api.read_requires_token {
            tracing::warn!(
                "api.open_reads is false and no api.tokens configured: \
                 /last and /dump_last refuse every request"
            );
        }
    }
    let readiness = Readiness::new(metrics.clone());
    let store = Arc::new(Timed::new(
        AnyStore::open(&config.storage).await?,
        &config.storage,
        metrics.clone(),
        readiness.clone(),
    ));
    let grpc = bind(config.grpc_listen).await?;
    let http = bind(config.http_listen).await?;
    let (grpc_addr, http_addr) = (local_addr(&grpc)?, local_addr(&http)?);

    spawn_maintenance(
        store.clone(),
        metrics.clone(),
        config.maintenance_interval,
        shutdown.clone(),
    );
    ready::spawn_store_probe(
        store.clone(),
        readiness.clone(),
        config.ready_interval,
        shutdown.clone(),
    );
    let bounds = QueueBounds {
        rows: config.limits.max_queued_rows,
        bytes: config.limits.max_queued_bytes,
    };
    let writer = GroupCommit::start_with(
        store.clone(),
        bounds,
        metrics.clone(),
        config.watch.buffer_batches,
    );
    let service = IngestServer::new(
        Ingest::new(
            writer.clone(),
            metrics.clone(),
            config.limits.clone(),
            tls.is_some(),
        )
        .rotating_with(live_tls.clone()),
    );
    if config.watch.allow.is_empty() {
        tracing::info!("no watch.allow configured: WatchService refuses every subscriber");
    }
    let watch = WatchServer::new(
        store.clone(),
        writer.clone(),
        config.watch.clone(),
        tls.is_some(),
        metrics.clone(),
        shutdown.clone(),
    )
    .rotating_with(live_tls.clone());
    if let Some(live) = &live_tls {
        live.spawn_polling(shutdown.clone());
    }
    let grpc_server = bounded_drain(
        serve_grpc(
            grpc,
            tls,
            GrpcServices {
                ingest: service,
                watch,
            },
            &config,
            &metrics,
            shutdown.clone(),
        ),
        shutdown.clone(),
        config.limits.shutdown_grace,
    );
    let heartbeats = heartbeats::HeartbeatsState::new(heartbeats::Parts {
        store: store.clone(),
        writer: writer.clone(),
        access: access.clone(),
        metrics: metrics.clone(),
        limits: config.limits.clone(),
        config: config.heartbeats.clone(),
        keys: ping_keys,
        clock: heartbeats::wall_clock(),
    });
    heartbeats::apply_checks_file(&heartbeats).await?;
    let dashboard = dashboard::DashboardState::new(dashboard::Parts {
        store: store.clone(),
        access: access.clone(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        config: config.dashboard.clone(),
        stats_fresh: config.api.stats_fresh,
        shutdown: shutdown.clone(),
    })?;
    let api = api::router(api::ApiState::new(
        store.clone(),
        writer,
        tokens,
        access.clone(),
        metrics.clone(),
        config.limits.clone(),
        config.api.clone(),
    ))
    .merge(stats::router(stats::StatsState::new(
        store.clone(),
        access,
        metrics.clone(),
        &config.api,
    )))
    .merge(heartbeats::router(heartbeats))
    .merge(dashboard::router(dashboard));
    let limits = HttpLimits {
        max_connections: config.limits.max_connections,
        header_timeout: config.limits.header_timeout,
        ..HttpLimits::default()
    };
    let http_server = livehead_common::http_server::serve(
        http,
        http::router(&metrics, &readiness, api),
        shutdown,
        limits,
        metrics.listener("http"),
    );
    tracing::info!(
        %grpc_addr,
        %http_addr,
        mtls = !config.insecure,
        store = store.kind(),
        "collector listening"
    );
    let task = tokio::spawn(async move {
        let (grpc, http) = tokio::join!(grpc_server, http_server);
        grpc?;
        http.map_err(CollectorError::Http)
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        task,
    })
}

type GrpcServer = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The gRPC server, given at most `grace` after `shutdown` to finish: an
/// agent's stream only ends when the agent stops, so a graceful stop that
/// waited for every stream would never come.
async fn bounded_drain(
    server: GrpcServer,
    shutdown: Shutdown,
    grace: std::time::Duration,
) -> Result<(), tonic::transport::Error> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::info!(?grace, "gRPC streams still open after limits.shutdown_grace: closed");
            Ok(())
        }
    }
}

/// The services of the gRPC port.
struct GrpcServices<S> {
    ingest: IngestServer,
    watch: WatchServer<S>,
}

/// The gRPC server on `listener`: mTLS when `tls` is set (the handshake done
/// by [`grpc::incoming`]), plain text otherwise.
fn serve_grpc<S: Store>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    services: GrpcServices<S>,
    config: &CollectorConfig,
    metrics: &CollectorMetrics,
    shutdown: Shutdown,
) -> GrpcServer {
    let limits = &config.limits;
    let mut server = grpc::server(limits);
    let router = server
        .add_service(services.ingest)
        .add_service(services.watch.service());
    let signal = {
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    };
    match tls {
        Some(acceptor) => {
            let incoming = grpc::incoming(listener, limits, metrics, shutdown, move |conn| {
                let acceptor = acceptor.clone();
                async move { acceptor.accept(conn).await }
            });
            Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
        }
        None => {
            let timeout = limits.tls_handshake_timeout;
            let incoming = grpc::incoming(listener, limits, metrics, shutdown, move |conn| {
                grpc::first_bytes(conn, timeout)
            });
            Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, CollectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, CollectorError> {
    listener.local_addr().map_err(CollectorError::Http)
}

fn spawn_maintenance<S: Store>(
    store: Arc<S>,
    metrics: CollectorMetrics,
    every: std::time::Duration,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(error) = store.maintain().await {
                metrics.maintenance_errors.inc();
                tracing::error!(%error, "store upkeep failed");
            }
        }
    });
}
