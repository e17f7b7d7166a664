//! Fake web sites on one loopback port, answering by `Host` header the way a
//! node's reverse proxy does, plus listeners that never answer or do not exist.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use livehead_common::certs::{DevCa, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Answers 200.
pub const OK_SITE: &str = "ok.test";
/// Answers 301 to [`SAME_LOCATION`], a subdomain of itself.
pub const SAME_SITE: &str = "same.test";
pub const SAME_LOCATION: &str = "https://www.same.test/";
/// Answers 301 to [`CROSS_LOCATION`], another registrable domain.
pub const CROSS_SITE: &str = "cross.test";
pub const CROSS_LOCATION: &str = "https://other.net/";
/// Answers 500.
pub const ERROR_SITE: &str = "error.test";
/// Answers 405 to HEAD and 200 to GET.
pub const NOHEAD_SITE: &str = "nohead.test";
/// Answers 400 to HEAD and 200 to GET.
pub const BADHEAD_SITE: &str = "badhead.test";

/// Answers 200 with an empty body (the white screen).
pub const EMPTY_SITE: &str = "empty.test";
/// Answers 200 with WordPress' fatal error page.
pub const WP_ERROR_SITE: &str = "wperror.test";
/// Answers 503 with WordPress' maintenance page.
pub const MAINTENANCE_SITE: &str = "maintenance.test";
/// Answers 200 with a page of [`BIG_PAGE_BYTES`] ending with [`BIG_PAGE_END`].
pub const BIG_SITE: &str = "big.test";
pub const BIG_PAGE_BYTES: usize = 1 << 20;
pub const BIG_PAGE_END: &str = "END-OF-BIG-PAGE";
/// The body of [`WP_ERROR_SITE`].
pub const WP_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>WordPress &rsaquo; Error</title></head>\n<body id=\"error-page\">\n<div class=\"wp-die-message\"><p>There has been a critical error on this website.</p><p><a href=\"https://wordpress.org/documentation/article/faq-troubleshooting/\">Learn more about troubleshooting WordPress.</a></p></div></body></html>\n";
/// The body of [`MAINTENANCE_SITE`].
pub const MAINTENANCE_PAGE: &str = "<!DOCTYPE html><html><body>Briefly unavailable for scheduled maintenance. Check back in a minute.</body></html>";

/// One request as the fake sites saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: Method,
    /// The `Host` header as sent (with a port if the client put one).
    pub host: String,
    pub path: String,
    pub range: Option<String>,
    pub forwarded_proto: Option<String>,
    pub user_agent: Option<String>,
    /// Whether the request came over TLS.
    pub tls: bool,
}

type Log = Arc<Mutex<Vec<RecordedRequest>>>;

/// The fake sites server; dropping it stops the server and closes its connections.
pub struct FakeSites {
    addr: SocketAddr,
    log: Log,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    overrides: Overrides,
    cert_not_after_ms: Option<i64>,
    task: JoinHandle<()>,
}

impl FakeSites {
    /// Plain http on 127.0.0.1, a free port.
    pub async fn start() -> Self {
        Self::serve(None, None).await
    }

    /// https on 127.0.0.1 with a certificate no client trusts (issued by a
    /// throw-away CA), for `ok.test`, `localhost` and `127.0.0.1`.
    pub async fn start_tls() -> Self {
        let ca = DevCa::generate("fake sites CA").expect("fake sites CA");
        let pem = ca
            .issue(OK_SITE, &["localhost", "127.0.0.1"], Usage::Server)
            .expect("fake sites certificate");
        let cert = CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key PEM");
        Self::start_tls_with(vec![cert], key).await
    }

    /// https on 127.0.0.1 with a certificate for `name` (and `localhost`,
    /// `127.0.0.1`) issued by `ca`, the test's own CA: trusted only by a
    /// client given `ca`'s certificate.
    pub async fn start_tls_issued_by(ca: &DevCa, name: &str) -> Self {
        let pem = ca
            .issue(name, &["localhost", "127.0.0.1"], Usage::Server)
            .expect("site certificate");
        let cert = CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key PEM");
        Self::start_tls_with(vec![cert], key).await
    }

    /// https on 127.0.0.1 presenting `chain` (leaf first) with the leaf's
    /// `key`: a certificate made by the test (expired, for another name…).
    pub async fn start_tls_with(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        let leaf = chain.first().expect("a certificate");
        let not_after = livehead_common::tls::not_after_ms(leaf).expect("certificate expiry");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::serve(Some(acceptor), Some(not_after)).await
    }

    async fn serve(tls: Option<TlsAcceptor>, cert_not_after_ms: Option<i64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let log = Log::default();
        let overrides = Overrides::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            tls,
            log.clone(),
            overrides.clone(),
            accepted.clone(),
        ));
        Self {
            addr,
            log,
            accepted,
            overrides,
            cert_not_after_ms,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on every site whose name ends with `suffix` answers
    /// `status` (whatever its usual answer), until [`FakeSites::heal`].
    pub fn set_status(&self, suffix: &str, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((suffix.to_owned(), status));
    }

    /// Sites ending with `suffix` answer as usual again.
    pub fn heal(&self, suffix: &str) {
        self.overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(s, _)| s != suffix);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// TCP connections accepted so far (a client keeping connections alive
    /// makes fewer than its requests).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests whose Host header (port removed) is `host`.
    pub fn requests_for(&self, host: &str) -> Vec<RecordedRequest> {
        let mut requests = self.requests();
        requests.retain(|r| host_name(&r.host) == host);
        requests
    }

    /// Expiry (unix ms) of the certificate served by [`FakeSites::start_tls`];
    /// `None` for plain http.
    pub fn cert_not_after_ms(&self) -> Option<i64> {
        self.cert_not_after_ms
    }
}

impl Drop for FakeSites {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks; aborting it aborts them.
        self.task.abort();
    }
}

/// Statuses forced by [`FakeSites::set_status`]: (name suffix, status), the
/// latest first to match.
type Overrides = Arc<Mutex<Vec<(String, StatusCode)>>>;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    log: Log,
    overrides: Overrides,
    count: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    count.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(
                        tcp,
                        tls.clone(),
                        log.clone(),
                        overrides.clone(),
                    ));
                }
                // Out of descriptors under load: let connections close, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    log: Log,
    overrides: Overrides,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve_http(tcp, false, log, overrides).await,
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(tcp).await {
                serve_http(stream, true, log, overrides).await;
            }
        }
    }
}

async fn serve_http<S>(stream: S, tls: bool, log: Log, overrides: Overrides)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (log, overrides) = (log.clone(), overrides.clone());
        async move { Ok::<_, Infallible>(answer(&request, tls, &log, &overrides)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn answer(
    request: &Request<Incoming>,
    tls: bool,
    log: &Log,
    overrides: &Overrides,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let host = header_string(headers, header::HOST.as_str()).unwrap_or_default();
    let is_head = request.method() == Method::HEAD;
    let forced = overrides
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .rev()
        .find(|(suffix, _)| host_name(&host).ends_with(suffix.as_str()))
        .map(|(_, status)| *status);
    let (status, location) = match forced {
        Some(status) => (status, None),
        None => route(host_name(&host), is_head),
    };
    let body = if forced.is_some() {
        Bytes::from_static(b"fake site\n")
    } else {
        page(host_name(&host))
    };
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: request.method().clone(),
            host,
            path: request.uri().to_string(),
            range: header_string(headers, header::RANGE.as_str()),
            forwarded_proto: header_string(headers, "x-forwarded-proto"),
            user_agent: header_string(headers, header::USER_AGENT.as_str()),
            tls,
        });
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(location) = location {
        response
            .headers_mut()
            .insert(header::LOCATION, http::HeaderValue::from_static(location));
    }
    response
}

fn route(host: &str, is_head: bool) -> (StatusCode, Option<&'static str>) {
    match host {
        SAME_SITE => (StatusCode::MOVED_PERMANENTLY, Some(SAME_LOCATION)),
        CROSS_SITE => (StatusCode::MOVED_PERMANENTLY, Some(CROSS_LOCATION)),
        ERROR_SITE => (StatusCode::INTERNAL_SERVER_ERROR, None),
        NOHEAD_SITE if is_head => (StatusCode::METHOD_NOT_ALLOWED, None),
        BADHEAD_SITE if is_head => (StatusCode::BAD_REQUEST, None),
        MAINTENANCE_SITE => (StatusCode::SERVICE_UNAVAILABLE, None),
        _ => (StatusCode::OK, None),
    }
}

/// The body a site answers with (HEAD answers drop it).
fn page(host: &str) -> Bytes {
    match host {
        EMPTY_SITE => Bytes::new(),
        WP_ERROR_SITE => Bytes::from_static(WP_ERROR_PAGE.as_bytes()),
        MAINTENANCE_SITE => Bytes::from_static(MAINTENANCE_PAGE.as_bytes()),
        BIG_SITE => {
            let mut page = vec![b'x'; BIG_PAGE_BYTES - BIG_PAGE_END.len()];
            page.extend_from_slice(BIG_PAGE_END.as_bytes());
            Bytes::from(page)
        }
        _ => Bytes::from_static(b"fake site\n"),
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    }
}

/// A listener that accepts connections, reads what is sent and never answers.
pub struct SilentListener {
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl SilentListener {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// First line of what each connection sent ("HEAD / HTTP/1.1"), in order.
    pub fn request_lines(&self) -> Vec<String> {
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        received
            .iter()
            .map(|bytes| {
                let text = String::from_utf8_lossy(bytes);
                text.lines().next().unwrap_or_default().to_owned()
            })
            .collect()
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback listener that never answers: probes of it time out.
pub async fn silent_listener() -> (SocketAddr, SilentListener) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let received = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn(silent_accept_loop(listener, received.clone()));
    (addr, SilentListener { received, task })
}

async fn silent_accept_loop(listener: TcpListener, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut connections = JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        let slot = {
            let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
            received.push(Vec::new());
            received.len() - 1
        };
        connections.spawn(swallow(tcp, slot, received.clone()));
    }
}

/// Reads until the peer hangs up, keeping the bytes, answering nothing.
async fn swallow(mut tcp: TcpStream, slot: usize, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = tcp.read(&mut buf).await {
        let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bytes) = received.get_mut(slot) {
            bytes.extend_from_slice(&buf[..n]);
        }
    }
}

/// A loopback port nothing listens on: connections to it are refused.
pub fn closed_port() -> u16 {
    // Bound then released; the kernel does not hand it out again right away.
    crate::free_port()
}
