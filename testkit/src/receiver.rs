//! A stand-in for Slack, Discord, PagerDuty or a webhook: an HTTP server on
//! loopback that answers 200 to every POST and records it, so tests check
//! what the alerter sent, exactly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, unix ms.
    pub at_unix_ms: u64,
}

type Log = Arc<Mutex<Vec<Received>>>;

pub struct FakeReceiver {
    addr: SocketAddr,
    log: Log,
    task: JoinHandle<()>,
}

impl FakeReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let log = Log::default();
        let task = tokio::spawn(accept_loop(listener, log.clone()));
        Self { addr, log, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, expected {n}: {:#?}",
                got.len(),
                got.iter().map(|r| &r.json).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, log: Log) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let log = log.clone();
                async move { Ok::<_, Infallible>(record(request, &log).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn record(request: Request<Incoming>, log: &Log) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            at: Instant::now(),
            at_unix_ms,
        });
    Response::new(Full::new(Bytes::from_static(b"ok")))
}
