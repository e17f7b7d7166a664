//! Serving an axum router over HTTP/1.1 with the bounds a server facing the
//! network needs: at most `max_connections` open (see [`crate::listener`]),
//! and a request's headers must arrive within `header_timeout`, counted from
//! the connection's start or the previous answer, so it also closes idle
//! keep-alive connections and clients that trickle their headers.
//!
//! hyper answers requests it cannot parse (a `"` in the URI, a NUL in a
//! header, headers over its buffer) itself, with an empty body, before any
//! service sees them. [`JsonRefusals`] rewrites those answers on their way out
//! so that every answer carries the `{"ok":false,"error":..}` body the API's
//! clients parse.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::listener::{ListenerMetrics, limited};

/// Bounds of one HTTP port.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time to receive a request's headers, from the connection's start or
    /// the previous answer.
    pub header_timeout: Duration,
    /// Longest graceful shutdown: connections still busy then are dropped.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets open
/// requests finish (up to `limits.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: crate::Shutdown,
    limits: HttpLimits,
    metrics: ListenerMetrics,
) -> io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    {
        let incoming = limited(listener, limits.max_connections, metrics, "http");
        futures::pin_mut!(incoming);
        loop {
            let conn = tokio::select! {
                conn = incoming.next() => conn,
                () = shutdown.cancelled() => break,
            };
            let Some(Ok(conn)) = conn else { break };
            // The client's address, for handlers that record it (heartbeat
            // pings): axum's `ConnectInfo` extractor reads this extension.
            let peer = conn.get_ref().peer_addr().ok();
            let service = TowerToHyperService::new(router.clone().map_request(
                move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                    if let Some(peer) = peer {
                        request
                            .extensions_mut()
                            .insert(axum::extract::ConnectInfo(peer));
                    }
                    request
                },
            ));
            let conn = builder.serve_connection(TokioIo::new(JsonRefusals::new(conn)), service);
            let served = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(error) = served.await {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
            });
        }
        // Dropping `incoming` here closes the listening socket.
    }
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "HTTP connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// An I/O stream whose bodiless `400`/`414`/`431` answers (only hyper sends
/// those: every answer of ours has a body) get a JSON body.
pub struct JsonRefusals<C> {
    inner: C,
    /// A rewritten answer being written: its bytes, how many are written, and
    /// the length of the original that the caller is told was written.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<C> JsonRefusals<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer replacing `head`, when it is one of hyper's own refusals.
fn json_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let message = match text.get(..13)? {
        "HTTP/1.1 400 " | "HTTP/1.0 400 " => "request: malformed (request line or header)",
        "HTTP/1.1 414 " | "HTTP/1.0 414 " => "request: URI too long",
        "HTTP/1.1 431 " | "HTTP/1.0 431 " => "request: headers too large",
        _ => return None,
    };
    let (lines, rest) = text.split_once("\r\n\r\n")?;
    let bodiless = lines
        .split("\r\n")
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !rest.is_empty() || !bodiless {
        return None;
    }
    let body = format!(r#"{{"ok":false,"error":"{message}"}}"#);
    let kept: Vec<&str> = lines
        .split("\r\n")
        .filter(|l| !l.eq_ignore_ascii_case("content-length: 0"))
        .collect();
    Some(
        format!(
            "{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            kept.join("\r\n"),
            body.len()
        )
        .into_bytes(),
    )
}

impl<C: AsyncRead + Unpin> AsyncRead for JsonRefusals<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match json_refusal(buf) {
                Some(answer) => this.pending = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let Some((answer, written, original)) = this.pending.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let original = *original;
        this.pending = None;
        Poll::Ready(Ok(original))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head as one buffer, which
    // `json_refusal` can recognise.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_refusals_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_refusal(head).expect("rewritten")).expect("UTF-8");
        let body = r#"{"ok":false,"error":"request: headers too large"}"#;
        assert_eq!(
            answer,
            format!(
                "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ndate: x\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn other_answers_pass_unchanged() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"ok\":false}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n",
            b"{\"ok\":true}",
            b"HTTP/1.1 4",
        ] {
            assert_eq!(
                json_refusal(head),
                None,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
