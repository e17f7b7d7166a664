//! A stand-in for Slack, Discord, PagerDuty or a webhook: an HTTP server on
//! loopback that records every request and answers from a script (200 once
//! the script is done), so tests check exactly what the alerter sent and how
//! it reacts to refusals, waits and hangs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    /// The query string without `?` (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    /// The body as sent.
    pub raw: Bytes,
    /// The body as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, unix ms.
    pub at_unix_ms: u64,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
}

/// An answer with `status`, no headers and an empty body.
pub fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: "",
    }
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    arrived: Arc<Notify>,
    /// When set, answers wait for a permit: a receiver that hangs.
    hold: Option<Arc<Semaphore>>,
}

pub struct FakeReceiver {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl FakeReceiver {
    /// Answers 200 ("ok") to everything.
    pub async fn start() -> Self {
        Self::scripted(Vec::new(), None).await
    }

    /// Answers `script` in order, then 200; with `hold`, each answer waits
    /// for one of its permits first.
    pub async fn scripted(script: Vec<Reply>, hold: Option<Arc<Semaphore>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let shared = Shared {
            script: Arc::new(Mutex::new(script.into())),
            hold,
            ..Shared::default()
        };
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "the receiver got {} requests, expected {n}: {:#?}",
                    got.len(),
                    got.iter().map(|r| &r.json).collect::<Vec<_>>()
                );
                return got;
            }
        }
    }
}

impl Drop for FakeReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(record(request, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn record(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let raw = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    shared
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            json: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
            raw,
            at: Instant::now(),
            at_unix_ms,
        });
    shared.arrived.notify_waiters();
    if let Some(hold) = &shared.hold {
        let _permit = hold.acquire().await;
    }
    let next = shared
        .script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front();
    let Some(scripted) = next else {
        return Response::new(Full::new(Bytes::from_static(b"ok")));
    };
    let mut response = Response::new(Full::new(Bytes::from_static(scripted.body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(scripted.status).expect("a valid HTTP status");
    for (name, value) in scripted.headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}
