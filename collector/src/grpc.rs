//! The gRPC port's connections: limited in number ([`limited`]), each with
//! TCP keepalive, and handed to tonic only once its TLS handshake completed
//! within `limits.tls_handshake_timeout` (with `insecure`: once it sent its
//! first bytes within that time). Handshakes run concurrently, so a client
//! that stalls in one holds its own connection slot and nothing else.
//!
//! The handshake is done here rather than by tonic (`tls_config`) because
//! tonic has no handshake timeout; tonic reads the client certificate from the
//! `tokio_rustls` stream all the same (`Request::peer_certs`).

use std::future::Future;
use std::io;
use std::time::Duration;

use futures::StreamExt;
use livehead_common::Shutdown;
use livehead_common::listener::{Limited, limited};
use livehead_common::tls::HandshakeError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::config::Limits;
use crate::metrics::CollectorMetrics;

/// Connections whose handshake completed, ready for tonic.
pub type Incoming<IO> = ReceiverStream<Result<IO, io::Error>>;

/// tonic's server with the per-connection bounds of `limits`.
pub fn server(limits: &Limits) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
}

/// Accepts on `listener` until `shutdown`, runs `handshake` on each
/// connection and yields those that completed it.
pub fn incoming<IO, F, Fut>(
    listener: TcpListener,
    limits: &Limits,
    metrics: &CollectorMetrics,
    shutdown: Shutdown,
    handshake: F,
) -> Incoming<IO>
where
    IO: Send + 'static,
    F: Fn(Limited<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<IO, HandshakeError>> + Send + 'static,
{
    let (ready, incoming) = mpsc::channel(64);
    let accepted = limited(
        listener,
        limits.max_connections,
        metrics.listener("grpc"),
        "grpc",
    );
    let keepalive = limits.keepalive_interval;
    let failures = metrics.tls_handshake_failures.clone();
    tokio::spawn(async move {
        futures::pin_mut!(accepted);
        loop {
            let conn = tokio::select! {
                conn = accepted.next() => conn,
                () = shutdown.cancelled() => return,
            };
            let Some(Ok(conn)) = conn else { return };
            set_keepalive(conn.get_ref(), keepalive);
            let (handshake, ready, failures) = (handshake(conn), ready.clone(), failures.clone());
            tokio::spawn(async move {
                match handshake.await {
                    Ok(io) => {
                        let _ = ready.send(Ok(io)).await;
                    }
                    Err(error) => {
                        let reason = match error {
                            HandshakeError::TimedOut(_) => "timeout",
                            HandshakeError::Failed(_) => "error",
                        };
                        failures.with_label_values(&[reason]).inc();
                        tracing::debug!(%error, "gRPC connection closed before its handshake");
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// The plain-text (`insecure`) "handshake": the client's first bytes, within
/// `timeout`, so a silent connection does not hold a slot.
pub async fn first_bytes(
    conn: Limited<TcpStream>,
    timeout: Duration,
) -> Result<Limited<TcpStream>, HandshakeError> {
    // `peek` waits for a byte (or the end of the stream); `readable` may
    // answer at once on a fresh socket.
    let mut first = [0u8; 1];
    tokio::time::timeout(timeout, conn.get_ref().peek(&mut first))
        .await
        .map_err(|_| HandshakeError::TimedOut(timeout))??;
    Ok(conn)
}

/// TCP keepalive, so a peer that vanished without a FIN is noticed even
/// between HTTP/2 PINGs. Best effort: a failure only loses that.
fn set_keepalive(stream: &TcpStream, time: Duration) {
    let keepalive = socket2::TcpKeepalive::new().with_time(time);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "setting TCP keepalive failed");
    }
}
