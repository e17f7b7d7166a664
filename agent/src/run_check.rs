//! `livehead run`: runs a command between two heartbeat pings, as `runitor`
//! does. Start ping (`/start?rid=`), the command with its output passed
//! through and its tail kept, then `/<exit-status>?rid=` with the tail as
//! body; the exit status is the command's (128 + signal when a signal ended
//! it).
//!
//! A ping that fails never changes the exit status nor holds the command up
//! for long: each attempt has a timeout, a few attempts with a short
//! backoff, then the failure is logged (stderr) and the run goes on.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// Default bytes of the command's output (stdout and stderr, in arrival
/// order) sent with the end ping; the collector keeps the first
/// `heartbeats.body_limit` bytes of a body (10 KB by default).
pub const DEFAULT_TAIL_BYTES: usize = 10 * 1024;
/// After the command exits, how long its pipes are still read: a daemon it
/// started in the background may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// The exit status when the command cannot be started: not found (as a
/// shell says it) or not executable.
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_CANNOT_RUN: i32 = 126;

/// What `livehead run` does; every limit explicit.
#[derive(Debug, Clone)]
pub struct RunCheckConfig {
    /// The collector's HTTP base URL (`http://collector:8080`); the pings go
    /// to `<url>/ping/...`.
    pub url: String,
    /// The check's ping id (a UUID), or its slug with `ping_key`.
    pub check: String,
    pub ping_key: Option<String>,
    /// The command and its arguments (run without a shell).
    pub command: Vec<String>,
    /// Bytes of output kept for the end ping (default DEFAULT_TAIL_BYTES).
    pub tail_bytes: usize,
    /// One ping attempt's time limit, connection included (default 10 s).
    pub ping_timeout: Duration,
    /// Attempts per ping (default 3), 0.5 s then 1 s, 2 s... apart.
    pub ping_attempts: u32,
    /// A CA (PEM) trusted for https besides the public roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl RunCheckConfig {
    /// A config with the documented defaults.
    pub fn new(url: String, check: String, command: Vec<String>) -> Self {
        Self {
            url,
            check,
            ping_key: None,
            command,
            tail_bytes: DEFAULT_TAIL_BYTES,
            ping_timeout: Duration::from_secs(10),
            ping_attempts: 3,
            ca_file: None,
        }
    }
}

/// Refusals before anything runs: the flags are wrong.
#[derive(Debug, thiserror::Error)]
pub enum RunCheckError {
    #[error("no command to run (livehead run --check ID -- COMMAND...)")]
    NoCommand,
    #[error("no ping URL: set --url or LIVEHEAD_PING_URL")]
    NoUrl,
    #[error("ping URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error("check {0:?} is not a UUID, and a slug needs --ping-key (or LIVEHEAD_PING_KEY)")]
    SlugWithoutKey(String),
    #[error("check {0:?}: a slug or ping key may hold only letters, digits, '-' and '_'")]
    BadCheck(String),
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
}

/// Why one ping did not land.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("timed out")]
    Timeout,
    #[error("connection: {0}")]
    Connect(io::Error),
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered {0}")]
    Status(StatusCode),
}

impl PingError {
    /// A 4xx other than 429 (an unknown check, a bad request) will not
    /// change on retry.
    fn is_permanent(&self) -> bool {
        matches!(self, PingError::Status(s) if s.is_client_error() && *s != StatusCode::TOO_MANY_REQUESTS)
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Where the pings of one run go: `<base>/ping/<uuid>` or
/// `<base>/ping/<key>/<slug>`, plus `?rid=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingUrls {
    check_path: String,
    rid: String,
    /// The ping key, kept out of the logs.
    key: Option<String>,
}

impl PingUrls {
    pub fn new(config: &RunCheckConfig, rid: String) -> Result<Self, RunCheckError> {
        let base = config.url.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(RunCheckError::NoUrl);
        }
        let check = config.check.trim();
        let mut secret = None;
        let path = if is_uuid(check) {
            format!("{base}/ping/{}", check.to_ascii_lowercase())
        } else {
            let key = config
                .ping_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| RunCheckError::SlugWithoutKey(check.to_owned()))?;
            if !is_token(check) || !is_token(key) {
                return Err(RunCheckError::BadCheck(check.to_owned()));
            }
            secret = Some(key.to_owned());
            format!("{base}/ping/{key}/{check}")
        };
        let urls = Self {
            check_path: path,
            rid,
            key: secret,
        };
        let probe = urls.start();
        let uri: Uri = probe.parse().map_err(|e: http::uri::InvalidUri| {
            RunCheckError::BadUrl(base.into(), e.to_string())
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(RunCheckError::BadUrl(
                base.into(),
                "expected http://host[:port] or https://host[:port]".into(),
            ));
        }
        Ok(urls)
    }

    pub fn start(&self) -> String {
        format!("{}/start?rid={}", self.check_path, self.rid)
    }

    pub fn exit(&self, status: i32) -> String {
        format!("{}/{status}?rid={}", self.check_path, self.rid)
    }

    /// `url` as logs show it: the ping key replaced.
    pub fn shown(&self, url: &str) -> String {
        match &self.key {
            Some(key) => url.replace(&format!("/ping/{key}/"), "/ping/<ping-key>/"),
            None => url.to_owned(),
        }
    }
}

/// A random (version 4) UUID: the run's `rid`.
pub fn new_rid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex_lower(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends pings: plain http, or https against the public roots plus an
/// optional private CA.
#[derive(Clone)]
pub struct Pinger {
    tls: TlsConnector,
    attempt_timeout: Duration,
    attempts: u32,
}

impl Pinger {
    pub fn new(config: &RunCheckConfig) -> Result<Self, RunCheckError> {
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls_config(config.ca_file.as_deref())?)),
            attempt_timeout: config.ping_timeout,
            attempts: config.ping_attempts.max(1),
        })
    }

    /// Sends one ping, retrying what may pass on retry; never longer than
    /// attempts × (timeout + backoff).
    /// `shown` is the URL as logs may show it (no ping key).
    pub async fn ping(&self, url: &str, shown: &str, body: Bytes) -> Result<(), PingError> {
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let result = timeout(self.attempt_timeout, self.send(url, body.clone()))
                .await
                .unwrap_or(Err(PingError::Timeout));
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_permanent() || attempt >= self.attempts => return Err(e),
                Err(error) => {
                    tracing::warn!(url = shown, attempt, %error, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "heartbeat ping failed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    async fn send(&self, url: &str, body: Bytes) -> Result<(), PingError> {
        // The URL was checked when the run started (PingUrls::new).
        let uri: Uri = url
            .parse()
            .map_err(|_| PingError::Status(StatusCode::BAD_REQUEST))?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(PingError::Connect)?;
        let request = ping_request(&uri, body)?;
        if !tls {
            return exchange(tcp, request).await;
        }
        let name = ServerName::try_from(host).map_err(|e| {
            PingError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;
        let stream = self.tls.connect(name, tcp).await.map_err(PingError::Tls)?;
        exchange(stream, request).await
    }
}

fn ping_request(uri: &Uri, body: Bytes) -> Result<Request<Full<Bytes>>, PingError> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(
            HOST,
            HeaderValue::from_str(authority)
                .map_err(|_| PingError::Status(StatusCode::BAD_REQUEST))?,
        )
        .header(
            USER_AGENT,
            concat!("livehead-run/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body))
        .map_err(|_| PingError::Status(StatusCode::BAD_REQUEST))
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(), PingError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(request).await;
    let outcome = match response {
        Ok(r) if r.status().is_success() => {
            // The answer's body says nothing we need; a bounded read lets
            // the connection close cleanly.
            let _ = timeout(Duration::from_secs(1), r.into_body().collect()).await;
            Ok(())
        }
        Ok(r) => Err(PingError::Status(r.status())),
        Err(e) => Err(PingError::Http(e)),
    };
    conn.abort();
    outcome
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, RunCheckError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| RunCheckError::Ca {
                path: path.to_owned(),
                source,
            })?;
        // A certificate the store cannot parse is skipped; it then
        // verifies nothing, which the handshake reports.
        roots.add_parsable_certificates(certs);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RunCheckError::BadUrl(String::new(), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    /// It could not be started (not found, not executable).
    NotStarted {
        status: i32,
        error: String,
    },
}

impl Outcome {
    /// The exit status `livehead run` ends with and reports.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Signaled(signal) => 128 + signal,
            Outcome::NotStarted { status, .. } => *status,
        }
    }
}

/// The last `limit` bytes written to it.
#[derive(Debug)]
struct Tail {
    limit: usize,
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let excess = self.buf.len().saturating_sub(self.limit);
        self.buf.drain(..excess);
    }
}

/// Runs the command (no shell), its output copied to ours and its last
/// `tail_bytes` kept; SIGTERM sent to us is passed on to it.
pub async fn run_command(argv: &[String], tail_bytes: usize) -> (Outcome, Vec<u8>) {
    let Some((program, args)) = argv.split_first() else {
        return (
            not_started(&io::Error::from(io::ErrorKind::NotFound)),
            Vec::new(),
        );
    };
    let signals = Signals::catch();
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let outcome = not_started(&e);
            let message = format!("livehead run: cannot run {program:?}: {e}\n");
            return (outcome, message.into_bytes());
        }
    };
    let tail = Arc::new(Mutex::new(Tail {
        limit: tail_bytes,
        buf: Vec::new(),
    }));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(copy_out(o, tokio::io::stdout(), tail.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(copy_out(e, tokio::io::stderr(), tail.clone()))),
    ];
    let status = wait_forwarding_sigterm(&mut child, signals).await;
    for mut reader in readers.into_iter().flatten() {
        if timeout(PIPE_GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
    }
    let outcome = match status {
        Ok(s) => exit_outcome(s),
        Err(e) => Outcome::NotStarted {
            status: EXIT_CANNOT_RUN,
            error: e.to_string(),
        },
    };
    let bytes = tail.lock().map(|t| t.buf.clone()).unwrap_or_default();
    (outcome, bytes)
}

fn not_started(e: &io::Error) -> Outcome {
    let status = if e.kind() == io::ErrorKind::NotFound {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_RUN
    };
    Outcome::NotStarted {
        status,
        error: e.to_string(),
    }
}

/// SIGINT and SIGHUP from a terminal reach the whole process group, the
/// command included: we only outlive them to report. A SIGTERM (systemd,
/// timeout(1), kill) reaches us alone: we pass it on. Caught before the
/// command starts, so none falls between.
struct Signals {
    term: tokio::signal::unix::Signal,
    _int: tokio::signal::unix::Signal,
    _hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let caught = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        match caught {
            (Ok(term), Ok(_int), Ok(_hup)) => Some(Self { term, _int, _hup }),
            _ => {
                tracing::warn!("cannot catch signals: SIGTERM is not passed on to the command");
                None
            }
        }
    }
}

/// Waits for the child, passing SIGTERM on.
async fn wait_forwarding_sigterm(
    child: &mut tokio::process::Child,
    signals: Option<Signals>,
) -> io::Result<std::process::ExitStatus> {
    let Some(mut signals) = signals else {
        return child.wait().await;
    };
    loop {
        tokio::select! {
            status = child.wait() => return status,
            Some(()) = signals.term.recv() => forward_term(child),
        }
    }
}

fn forward_term(child: &tokio::process::Child) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        if let Err(error) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            tracing::warn!(%error, "cannot pass SIGTERM on to the command");
        }
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signaled(signal),
        (None, None) => Outcome::Exited(EXIT_CANNOT_RUN),
    }
}

async fn copy_out(
    mut pipe: impl AsyncRead + Unpin,
    mut out: impl AsyncWrite + Unpin,
    tail: Arc<Mutex<Tail>>,
) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        // Our own stdout closed (a pipe reader gone) must not stop the
        // command: keep reading, keep the tail.
        let _ = out.write_all(&buf[..n]).await;
        let _ = out.flush().await;
        if let Ok(mut t) = tail.lock() {
            t.push(&buf[..n]);
        }
    }
}

/// The whole run: start ping, command, end ping. Returns the exit status
/// to end with; ping failures are logged, never returned.
pub async fn run(config: &RunCheckConfig) -> Result<i32, RunCheckError> {
    if config.command.is_empty() {
        return Err(RunCheckError::NoCommand);
    }
    let urls = PingUrls::new(config, new_rid())?;
    let pinger = Pinger::new(config)?;
    let start = urls.start();
    if let Err(error) = pinger.ping(&start, &urls.shown(&start), Bytes::new()).await {
        tracing::error!(url = %urls.shown(&start), %error, "heartbeat start ping not delivered; running the command anyway");
    }
    let (outcome, tail) = run_command(&config.command, config.tail_bytes).await;
    if let Outcome::NotStarted { error, .. } = &outcome {
        tracing::error!(command = ?config.command, %error, "cannot start the command");
    }
    let status = outcome.exit_status();
    let end = urls.exit(status.clamp(0, 255));
    if let Err(error) = pinger
        .ping(&end, &urls.shown(&end), Bytes::from(tail))
        .await
    {
        tracing::error!(url = %urls.shown(&end), %error, "heartbeat end ping not delivered");
    }
    Ok(status)
}

#[cfg(test)]
mod tests;
