//! The HTTP prober: what the old `curl -I` loop did, concurrently.
//!
//! Each attempt opens its own connection (like curl), so connect time, first
//! byte and errors belong to that attempt alone; with `keep_alive` on, plain
//! http attempts reuse an idle connection to the same target when there is
//! one ([`crate::pool`]), and record a connect time of 0. HEAD goes first; a HEAD that
//! gets no answer, 400 or 405 is retried as `GET` with `Range: bytes=0-0`, and
//! the recorded result is the last attempt's, as the script recorded it.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST, LOCATION, RANGE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

pub use livehead_proto::v1::{CertTrust, ProbeError, ProbeMethod, ProbeResult};

use livehead_common::clock::unix_ms;
use livehead_common::domain::is_cross_domain;

use crate::cert_trust::{CertChecker, TrustError, Verdict};
use crate::content::{Assertions, Verdict as ContentVerdict};
use crate::pool::{Conn, Key, Limits, Pool};

const USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("livehead/", env!("CARGO_PKG_VERSION")));
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Where a site is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The node's address: connect to `host:port` (an IP or a name), send `Host: <site>` and
    /// `X-Forwarded-Proto: https`, path "/". `tls` = true for an https endpoint (SNI = the site name).
    Fixed { host: String, port: u16, tls: bool },
    /// The site's own URL (http or https), resolved by DNS; Host = the URL's authority.
    Url(Uri),
}

/// Time limits of one probe attempt, named after curl's options they replace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Name resolution, TCP connect and TLS handshake (curl `--connect-timeout`); default 3 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole attempt, HEAD and GET each (curl `--max-time`); default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most body bytes read from a GET answer before the probe stops reading (default 64 KiB).
    pub max_body_bytes: usize,
    /// PEM files of CAs that https probes trust besides the system's roots
    /// (an internal CA); default none. Read at start: a missing file, or one
    /// without a usable certificate, stops the agent.
    pub extra_ca_files: Vec<PathBuf>,
    /// Keep plain-http connections open between probes of the same target
    /// (HTTP/1.1 keep-alive): the sites behind a node address share a few
    /// connections instead of one connect and close each. Default false: a
    /// new connection per probe measures connect time, as the old script did;
    /// a reused connection's probe records `connect_us` 0. https probes
    /// always open their own connection (each handshake is the site's
    /// certificate check).
    pub keep_alive: bool,
    /// Idle connections kept per target (`host:port` connected to); default 64,
    /// `rounds.concurrency`'s default, so a round's probes in flight all find one.
    pub keep_alive_max_idle_per_target: usize,
    /// Idle connections kept in all (bounds their memory, ~20 KiB each with
    /// the kernel's socket buffers); default 128.
    pub keep_alive_max_idle: usize,
    /// An idle connection is closed after this long; default 4 s, under
    /// Apache's 5 s `KeepAliveTimeout`, so that the agent rather than the
    /// server usually closes it (a server closing it just as a request goes
    /// out costs that probe a retry on a new connection).
    #[serde(with = "humantime_serde")]
    pub keep_alive_idle_timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            extra_ca_files: Vec::new(),
            keep_alive: false,
            keep_alive_max_idle_per_target: 64,
            keep_alive_max_idle: 128,
            keep_alive_idle_timeout: Duration::from_secs(4),
        }
    }
}

/// Probes sites; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProbeConfig,
    tls: TlsConnector,
    trust: CertChecker,
    /// Idle plain-http connections, with `keep_alive` on.
    pool: Option<Pool>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Prober {
    /// Reads the trusted roots (the system's and `extra_ca_files`).
    pub fn new(config: ProbeConfig) -> Result<Self, TrustError> {
        let trust = CertChecker::load(&config.extra_ca_files)?;
        let pool = config.keep_alive.then(|| {
            Pool::new(Limits {
                per_target: config.keep_alive_max_idle_per_target,
                total: config.keep_alive_max_idle,
                idle_timeout: config.keep_alive_idle_timeout,
            })
        });
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                tls: TlsConnector::from(Arc::new(tls_config())),
                trust,
            }),
        })
    }

    /// Probes one site; never fails: errors become status 0 + error kind.
    pub async fn probe(&self, site: &str, target: &Target) -> ProbeResult {
        let ts_ms = unix_ms();
        let (method, attempt) = match Endpoint::new(site, target) {
            Ok(endpoint) => self.head_then_get(&endpoint).await,
            // Nothing was sent, so no method produced this result.
            Err(kind) => (ProbeMethod::Unspecified, Attempt::failed(kind)),
        };
        result(site, target, ts_ms, method, attempt)
    }

    /// Probes one site with a content check: one plain `GET` (no HEAD first,
    /// no Range) reading at most `max_body_bytes` of the body, which is then
    /// judged by `assertions`. A probe without an answer checks nothing.
    pub async fn probe_content(
        &self,
        site: &str,
        target: &Target,
        assertions: &Assertions,
        max_body_bytes: usize,
    ) -> ProbeResult {
        let ts_ms = unix_ms();
        let fetch = Fetch::Body {
            limit: max_body_bytes,
        };
        let (method, mut attempt) = match Endpoint::new(site, target) {
            Ok(endpoint) => (ProbeMethod::Get, self.attempt(&endpoint, fetch).await),
            Err(kind) => (ProbeMethod::Unspecified, Attempt::failed(kind)),
        };
        let body = attempt.body.take();
        let mut out = result(site, target, ts_ms, method, attempt);
        if let (Some(body), 1..) = (body, out.status) {
            let status = u16::try_from(out.status).unwrap_or(0);
            record_verdict(&mut out, assertions.judge(status, &body));
        }
        out
    }
}

/// Fills the content fields of `out`; `None` (nothing asserted) leaves them unset.
fn record_verdict(out: &mut ProbeResult, verdict: Option<ContentVerdict>) {
    let Some(verdict) = verdict else { return };
    out.content = verdict.outcome() as i32;
    if let ContentVerdict::Failed { failure, excerpt } = verdict {
        out.content_failure = failure;
        out.content_excerpt = excerpt;
    }
}

/// The record of a probe from its last attempt.
fn result(
    site: &str,
    target: &Target,
    ts_ms: u64,
    method: ProbeMethod,
    attempt: Attempt,
) -> ProbeResult {
    let (target_label, port) = describe(target);
    let location = attempt.location.unwrap_or_default();
    ProbeResult {
        site: site.to_owned(),
        status: attempt.status.into(),
        error: attempt.error as i32,
        method: method as i32,
        latency_us: attempt.latency_us,
        connect_us: attempt.connect_us,
        first_byte_us: attempt.first_byte_us,
        port: port.into(),
        cross_domain: !location.is_empty() && is_cross_domain(site, &location),
        location,
        ts_ms,
        cert_expiry_ms: attempt.cert_expiry_ms,
        target: target_label,
        cert_trust: attempt.cert.trust as i32,
        cert_error: attempt.cert.error,
        // A content check fills its fields in `probe_content`.
        ..ProbeResult::default()
    }
}

impl Prober {
    async fn head_then_get(&self, endpoint: &Endpoint<'_>) -> (ProbeMethod, Attempt) {
        let head = self.attempt(endpoint, Fetch::Head).await;
        // Servers that reject HEAD (or whose HEAD path is broken) may still serve GET.
        let retry = matches!(head.status, 0 | 400 | 405);
        if !retry {
            return (ProbeMethod::Head, head);
        }
        (
            ProbeMethod::Get,
            self.attempt(endpoint, Fetch::RangeGet).await,
        )
    }

    /// One attempt; with keep-alive on, on an idle connection to the same
    /// plain-http target when there is one. A reused connection the server
    /// closed (a reset, or the end of stream before an answer) is not the
    /// site's failure: the attempt is made again, once, on a new connection,
    /// and only that one is recorded.
    async fn attempt(&self, endpoint: &Endpoint<'_>, method: Fetch) -> Attempt {
        let pooled = self.pooled(endpoint);
        if let Some((pool, key)) = &pooled {
            if let Some(mut conn) = pool.checkout(key) {
                let clock = self.clock();
                let mut out = Attempt::default();
                // connect_us stays 0: nothing was connected for this probe.
                match self
                    .send(&mut conn, endpoint, method, &clock, &mut out)
                    .await
                {
                    Err(ProbeError::Reset) => tracing::debug!(
                        host = endpoint.host,
                        port = endpoint.port,
                        "kept-alive connection closed by the server; retrying on a new one"
                    ),
                    sent => return finish(out, sent, &clock, pool, key, conn),
                }
            }
        }
        let clock = self.clock();
        let mut out = Attempt::default();
        let sent = self.exchange(endpoint, method, &clock, &mut out).await;
        match (sent, &pooled) {
            (Ok(Some(conn)), Some((pool, key))) => finish(out, Ok(true), &clock, pool, key, conn),
            (sent, _) => finish_unpooled(out, sent.map(|_| ()), &clock),
        }
    }

    /// The pool and its key when `endpoint`'s connections may be kept.
    fn pooled(&self, endpoint: &Endpoint<'_>) -> Option<(&Pool, Key)> {
        let pool = self.inner.pool.as_ref().filter(|_| !endpoint.tls)?;
        Some((pool, (endpoint.host.to_owned(), endpoint.port)))
    }

    fn clock(&self) -> Clock {
        let config = &self.inner.config;
        let start = Instant::now();
        let deadline = start + config.timeout;
        Clock {
            start,
            deadline,
            connect_deadline: deadline.min(start + config.connect_timeout),
        }
    }

    /// A new connection and one request on it; the connection when it may
    /// serve another request (plain http, answer read to its end).
    async fn exchange(
        &self,
        endpoint: &Endpoint<'_>,
        method: Fetch,
        clock: &Clock,
        out: &mut Attempt,
    ) -> Result<Option<Conn>, ProbeError> {
        let tcp = connect_tcp(endpoint, clock).await?;
        out.connect_us = micros(clock.start.elapsed());
        if !endpoint.tls {
            let mut conn = handshake(tcp).await?;
            let complete = self.send(&mut conn, endpoint, method, clock, out).await?;
            return Ok(complete.then_some(conn));
        }
        let tls = self.tls_handshake(tcp, endpoint, clock).await?;
        out.cert_expiry_ms = peer_cert_expiry_ms(&tls);
        out.cert = self.cert_verdict(&tls, endpoint);
        let mut conn = handshake(tls).await?;
        self.send(&mut conn, endpoint, method, clock, out).await?;
        Ok(None)
    }

    async fn tls_handshake(
        &self,
        tcp: TcpStream,
        endpoint: &Endpoint<'_>,
        clock: &Clock,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
        let name = ServerName::try_from(endpoint.sni.to_owned()).map_err(|_| ProbeError::Tls)?;
        timeout_at(clock.connect_deadline, self.inner.tls.connect(name, tcp))
            .await
            .map_err(|_| ProbeError::Timeout)?
            // A handshake that fails for any reason (alert, bad record, peer hanging up
            // mid-handshake, plain http on the port) means https does not work there.
            .map_err(|_| ProbeError::Tls)
    }

    /// Whether the certificate the server presented is trusted for the name
    /// asked (the SNI: the site, or the URL's host).
    fn cert_verdict(
        &self,
        tls: &tokio_rustls::client::TlsStream<TcpStream>,
        endpoint: &Endpoint<'_>,
    ) -> Verdict {
        let (_, connection) = tls.get_ref();
        let chain = connection.peer_certificates().unwrap_or_default();
        // The handshake used this name already, so it parses.
        let Ok(name) = ServerName::try_from(endpoint.sni) else {
            return Verdict::default();
        };
        self.inner.trust.verdict(chain, &name, UnixTime::now())
    }

    /// One request on `conn`; fills status, location and first byte. True
    /// when the answer was read to its end, so the connection may serve
    /// another request.
    async fn send(
        &self,
        conn: &mut Conn,
        endpoint: &Endpoint<'_>,
        method: Fetch,
        clock: &Clock,
        out: &mut Attempt,
    ) -> Result<bool, ProbeError> {
        timeout_at(clock.connect_deadline, conn.sender.ready())
            .await
            .map_err(|_| ProbeError::Timeout)?
            .map_err(|e| classify_hyper(&e))?;
        let request = endpoint.request(method);
        let response = timeout_at(clock.deadline, conn.sender.send_request(request))
            .await
            .map_err(|_| ProbeError::Timeout)?
            .map_err(|e| classify_hyper(&e))?;
        out.first_byte_us = micros(clock.start.elapsed());
        out.status = response.status().as_u16();
        out.location = redirect_location(&response);
        let complete = match method {
            Fetch::Head => true,
            Fetch::RangeGet => {
                // The status is the answer; a body cut short or too slow does not undo it.
                let limit = self.inner.config.max_body_bytes;
                timeout_at(clock.deadline, drain(response.into_body(), limit))
                    .await
                    .unwrap_or(false)
            }
            Fetch::Body { limit } => {
                // A body cut short or too slow is judged on what arrived in time.
                let mut body = Vec::new();
                let complete = timeout_at(
                    clock.deadline,
                    read_body(response.into_body(), limit, &mut body),
                )
                .await
                .unwrap_or(false);
                out.body = Some(body);
                complete
            }
        };
        Ok(complete)
    }
}

/// Ends an attempt made where connections are kept: `conn` goes back to
/// the pool when its answer was read to the end, else it is closed (a
/// transport error leaves a connection in an unknown state).
fn finish(
    out: Attempt,
    sent: Result<bool, ProbeError>,
    clock: &Clock,
    pool: &Pool,
    key: &Key,
    conn: Conn,
) -> Attempt {
    let keep = matches!(sent, Ok(true));
    let out = finish_unpooled(out, sent.map(|_| ()), clock);
    if keep {
        pool.checkin(key.clone(), conn);
    }
    out
}

/// Status 0 and the error kind for a failed attempt; its latency.
fn finish_unpooled(mut out: Attempt, sent: Result<(), ProbeError>, clock: &Clock) -> Attempt {
    if let Err(kind) = sent {
        out.status = 0;
        out.error = kind;
    }
    out.latency_us = micros(clock.start.elapsed());
    out
}

/// HTTP/1.1 over `stream`, its connection driven by a task of its own.
async fn handshake<S>(stream: S) -> Result<Conn, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify_hyper(&e))?;
    let task = tokio::spawn(async move {
        // Its errors reach the request that was waiting on it.
        let _ = connection.await;
    });
    Ok(Conn::new(sender, task))
}

/// What one request needs, borrowed from the site and target.
struct Endpoint<'a> {
    /// Name or IP to connect to, without IPv6 brackets.
    host: &'a str,
    port: u16,
    tls: bool,
    /// TLS server name.
    sni: &'a str,
    host_header: HeaderValue,
    path: Uri,
    /// Only the node address sits behind a TLS-terminating proxy whose header
    /// the sites expect; a public URL gets what a browser would send.
    forwarded_https: bool,
}

impl<'a> Endpoint<'a> {
    fn new(site: &'a str, target: &'a Target) -> Result<Self, ProbeError> {
        match target {
            Target::Fixed { host, port, tls } => Ok(Self {
                host: unbracket(host),
                port: *port,
                tls: *tls,
                sni: site,
                host_header: HeaderValue::from_str(site).map_err(|_| ProbeError::Other)?,
                path: Uri::from_static("/"),
                forwarded_https: true,
            }),
            Target::Url(uri) => Self::from_url(uri),
        }
    }

    fn from_url(uri: &'a Uri) -> Result<Self, ProbeError> {
        let (tls, port) = url_scheme(uri).ok_or(ProbeError::Other)?;
        let authority = uri.authority().ok_or(ProbeError::Other)?;
        let host = unbracket(authority.host());
        // Credentials in the URL belong in an Authorization header, never in Host.
        let host_port = authority
            .as_str()
            .rsplit('@')
            .next()
            .unwrap_or(authority.as_str());
        Ok(Self {
            host,
            port,
            tls,
            sni: host,
            host_header: HeaderValue::from_str(host_port).map_err(|_| ProbeError::Other)?,
            path: uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())),
            forwarded_https: false,
        })
    }

    fn request(&self, fetch: Fetch) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = match fetch {
            Fetch::Head => Method::HEAD,
            Fetch::RangeGet | Fetch::Body { .. } => Method::GET,
        };
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host_header.clone());
        headers.insert(USER_AGENT, USER_AGENT_VALUE);
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        if self.forwarded_https {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        }
        if fetch == Fetch::RangeGet {
            headers.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        }
        request
    }
}

/// What one attempt asks for and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// The head only.
    Head,
    /// `GET` with `Range: bytes=0-0` (the HEAD fallback), body drained and dropped.
    RangeGet,
    /// A plain `GET` whose body's first `limit` bytes are kept (content checks).
    Body { limit: usize },
}

/// Deadlines of one attempt.
struct Clock {
    start: Instant,
    deadline: Instant,
    connect_deadline: Instant,
}

/// What one attempt saw.
#[derive(Debug, Default)]
struct Attempt {
    status: u16,
    error: ProbeError,
    latency_us: u64,
    connect_us: u64,
    first_byte_us: u64,
    location: Option<String>,
    cert_expiry_ms: u64,
    /// UNSPECIFIED unless a TLS handshake completed.
    cert: Verdict,
    /// The body read by [`Fetch::Body`], at most its limit.
    body: Option<Vec<u8>>,
}

impl Attempt {
    fn failed(error: ProbeError) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }
}

/// Resolves (curl counts it in the connect time too) and connects to the
/// first address that accepts.
async fn connect_tcp(endpoint: &Endpoint<'_>, clock: &Clock) -> Result<TcpStream, ProbeError> {
    let addrs = timeout_at(
        clock.connect_deadline,
        tokio::net::lookup_host((endpoint.host, endpoint.port)),
    )
    .await
    // A resolver too slow to answer within the connect time is a DNS problem,
    // not the site's: say so rather than "timeout".
    .map_err(|_| ProbeError::Dns)?
    .map_err(|_| ProbeError::Dns)?;
    let mut error = ProbeError::Dns;
    for addr in addrs {
        match timeout_at(clock.connect_deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ProbeError::Timeout),
            Ok(Ok(tcp)) => {
                // Requests are one small write each; do not let Nagle hold them back.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => error = classify_io(&e),
        }
    }
    Err(error)
}

/// (tls, port) of an http or https URL.
fn url_scheme(uri: &Uri) -> Option<(bool, u16)> {
    let tls = match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("http") => false,
        s if s.eq_ignore_ascii_case("https") => true,
        _ => return None,
    };
    Some((tls, uri.port_u16().unwrap_or(if tls { 443 } else { 80 })))
}

/// The `target` label and port of a result.
fn describe(target: &Target) -> (String, u16) {
    match target {
        Target::Fixed { host, port, tls } => {
            let scheme = if *tls { "https://" } else { "" };
            let host = unbracket(host);
            let label = if host.contains(':') {
                format!("{scheme}[{host}]:{port}")
            } else {
                format!("{scheme}{host}:{port}")
            };
            (label, *port)
        }
        Target::Url(uri) => {
            let port = url_scheme(uri).map_or(0, |(_, port)| port);
            (uri.to_string(), port)
        }
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn redirect_location(response: &Response<Incoming>) -> Option<String> {
    let redirect = matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    let value = response.headers().get(LOCATION).filter(|_| redirect)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Reads up to `limit` body bytes so latency covers the answer, not just its
/// head; true when that was the whole body.
async fn drain(mut body: Incoming, limit: usize) -> bool {
    let mut read = 0;
    while read < limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            None => return true,
            Some(Err(_)) => return false,
        }
    }
    body.is_end_stream()
}

/// Keeps the first `limit` body bytes; once there, stops reading (the
/// connection is then closed, so the rest is never transferred); true when
/// that was the whole body.
async fn read_body(mut body: Incoming, limit: usize, out: &mut Vec<u8>) -> bool {
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = limit - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            None => return true,
            Some(Err(_)) => return false,
        }
    }
    body.is_end_stream()
}

fn peer_cert_expiry_ms(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> u64 {
    let (_, connection) = tls.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| livehead_common::tls::not_after_ms(leaf).ok())
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or(0)
}

fn classify_hyper(error: &hyper::Error) -> ProbeError {
    if error.is_timeout() {
        return ProbeError::Timeout;
    }
    if let Some(kind) = classify_cause(error) {
        return kind;
    }
    // The server closed the connection before (or while) sending the head.
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return ProbeError::Reset;
    }
    ProbeError::Other
}

/// The kind of the first I/O or TLS error in `error`'s cause chain.
fn classify_cause(error: &(dyn StdError + 'static)) -> Option<ProbeError> {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return Some(ProbeError::Tls);
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            // io::Error::source skips the wrapped error itself, so look at it here.
            let tls = io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>());
            return Some(if tls {
                ProbeError::Tls
            } else {
                classify_io(io)
            });
        }
        next = error.source();
    }
    None
}

fn classify_io(error: &io::Error) -> ProbeError {
    use io::ErrorKind::*;
    match error.kind() {
        TimedOut => ProbeError::Timeout,
        ConnectionRefused => ProbeError::Refused,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            ProbeError::Reset
        }
        _ => ProbeError::Other,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The prober speaks HTTP/1.1 only; do not let a server pick h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts every certificate chain. A monitor must reach sites whose
/// certificate is self-signed, expired or for another name and report their
/// status and expiry; refusing the handshake would hide exactly those sites.
/// The chain is judged after the handshake ([`crate::cert_trust`]).
/// Handshake signatures are still checked, so the peer holds the key of the
/// certificate whose expiry and trust are recorded.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_script() {
        let config = ProbeConfig::default();
        assert_eq!(config.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.max_body_bytes, 65536);
    }

    #[test]
    fn targets_are_labelled_with_their_port() {
        let fixed = Target::Fixed {
            host: "10.0.0.7".into(),
            port: 8080,
            tls: false,
        };
        assert_eq!(describe(&fixed), ("10.0.0.7:8080".to_owned(), 8080));
        let tls = Target::Fixed {
            host: "::1".into(),
            port: 443,
            tls: true,
        };
        assert_eq!(describe(&tls), ("https://[::1]:443".to_owned(), 443));
        let url = Target::Url(Uri::from_static("https://example.com/health"));
        assert_eq!(
            describe(&url),
            ("https://example.com/health".to_owned(), 443)
        );
        let url = Target::Url(Uri::from_static("http://example.com:81"));
        assert_eq!(describe(&url).1, 81);
    }

    #[test]
    fn url_endpoint_uses_authority_without_credentials() {
        let uri = Uri::from_static("http://user:pw@[::1]:8080/a?b=1");
        let endpoint = Endpoint::from_url(&uri).expect("http URL");
        assert_eq!(endpoint.host, "::1");
        assert_eq!(endpoint.port, 8080);
        assert_eq!(endpoint.host_header, "[::1]:8080");
        assert_eq!(endpoint.path, "/a?b=1");
        assert!(!endpoint.forwarded_https);
        let ftp = Uri::from_static("ftp://example.com/");
        assert!(matches!(Endpoint::from_url(&ftp), Err(ProbeError::Other)));
    }

    #[test]
    fn io_errors_are_classified_by_kind() {
        let kind = |k| classify_io(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), ProbeError::Refused);
        assert_eq!(kind(io::ErrorKind::ConnectionReset), ProbeError::Reset);
        assert_eq!(kind(io::ErrorKind::UnexpectedEof), ProbeError::Reset);
        assert_eq!(kind(io::ErrorKind::TimedOut), ProbeError::Timeout);
        assert_eq!(kind(io::ErrorKind::PermissionDenied), ProbeError::Other);
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(classify_cause(&tls), Some(ProbeError::Tls));
    }
}
