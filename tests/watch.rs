//! `WatchService` of the real `livehead collector` binary: `--watch-allow`
//! lets the alerter's certificate (from `livehead certs --agent alerter`)
//! watch and not an agent's, `/metrics` counts the stream, and a SIGTERM
//! ends the stream cleanly and the process with it.

mod support;

use std::path::Path;
use std::time::Duration;

use livehead_common::tls::{TlsFiles, client_config};
use livehead_proto::v1::WatchRequest;
use livehead_proto::v1::watch_response::Event;
use livehead_proto::v1::watch_service_client::WatchServiceClient;
use livehead_testkit::free_port;
use support::{Proc, certs, loopback, metric_sum, tls_args, wait_for};
use tonic::transport::Endpoint;

/// Bounds each wait, so a hang fails the test (not a speed goal).
const WAIT: Duration = Duration::from_secs(30);

async fn watch(
    certs: &Path,
    who: &str,
    grpc: u16,
) -> Result<tonic::Streaming<livehead_proto::v1::WatchResponse>, tonic::Status> {
    livehead_common::tls::install_crypto_provider();
    let files = TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("agent-{who}.pem")),
        key: certs.join(format!("agent-{who}-key.pem")),
        ..TlsFiles::default()
    };
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{grpc}"))
        .expect("uri")
        .tls_config(client_config(&files, "localhost").expect("client TLS"))
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    Ok(WatchServiceClient::new(channel)
        .watch(WatchRequest {
            skip_snapshot: false,
        })
        .await?
        .into_inner())
}

// Multi-threaded: `terminate` blocks its thread while the stream's
// connection still needs a runtime to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_binary_serves_watch_to_the_allowed_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["node-1", "alerter"]);
    let (grpc, http) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "collector",
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--sqlite-path",
        &dir.path().join("livehead.db").display().to_string(),
        "--watch-allow",
        "alerter",
    ]
    .map(String::from)
    .to_vec();
    args.extend(tls_args(&certs_dir, "collector"));
    let mut collector = Proc::spawn("collector", &args, dir.path());
    wait_for(
        "collector /health",
        WAIT,
        || collector.log(),
        || support::http_get(loopback(http), "/health").filter(|(s, _)| *s == 200),
    )
    .await;

    let denied = watch(&certs_dir, "node-1", grpc)
        .await
        .expect_err("an agent may not watch");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    let mut stream = watch(&certs_dir, "alerter", grpc)
        .await
        .expect("the alerter may watch");
    // An empty store: no snapshot chunk, only `Synced`.
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("in time")
        .expect("no error")
        .expect("a message");
    assert!(matches!(first.event, Some(Event::Synced(_))), "{first:?}");
    let (status, metrics) = support::http_get(loopback(http), "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric_sum(&metrics, "livehead_collector_watch_subscribers"),
        1.0
    );
    assert_eq!(
        metric_sum(&metrics, "livehead_collector_watch_events_total"),
        1.0
    );

    collector.terminate(WAIT);
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
}
