//! Accepting TCP connections under a limit, for every server livehead runs.
//!
//! [`limited`] turns a listener into a stream of connections, each holding a
//! permit of a per-port semaphore until it is dropped (when the server closes
//! the connection). While every permit is taken nothing is accepted: new
//! clients wait in the kernel's backlog instead of costing a file descriptor
//! and memory each, and are served as soon as a connection closes.
//!
//! A failing `accept` (EMFILE/ENFILE: out of file descriptors) does not end
//! the stream, nor spin on it: the loop backs off (100 ms doubling to 1 s),
//! counts every failure and logs at most once per [`LOG_EVERY`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// First pause after a failed accept.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between accepts while they keep failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this period about failing accepts.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Something that accepts connections; [`TcpListener`] in production, a
/// scripted fake in tests.
pub trait Accept: Send + 'static {
    type Conn: Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// What one port's connections are counted in.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Failed `accept` calls.
    pub accept_errors: IntCounter,
}

/// A connection holding its port's permit; the permit returns when it drops.
pub struct Limited<C> {
    conn: C,
    open: IntGauge,
    _permit: OwnedSemaphorePermit,
}

impl<C> Limited<C> {
    pub fn get_ref(&self) -> &C {
        &self.conn
    }
}

impl<C> Drop for Limited<C> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Limited<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Limited<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}

/// tonic reads the peer's address (and, through a TLS stream over this, its
/// certificates) from the connection itself.
impl<C: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<C> {
    type ConnectInfo = C::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.connect_info()
    }
}

/// The pause before the next accept while accepts fail: doubles from
/// [`BACKOFF_MIN`] to [`BACKOFF_MAX`], back to nothing after a success.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The pause after one more failure.
    pub fn failed(&mut self) -> Duration {
        let pause = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((pause * 2).min(BACKOFF_MAX));
        pause
    }

    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Errors that concern one connection that went away before it was accepted;
/// the next accept may succeed at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

struct State<A> {
    acceptor: A,
    limit: Arc<Semaphore>,
    metrics: ListenerMetrics,
    port: &'static str,
    backoff: Backoff,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl<A: Accept> State<A> {
    /// The next connection, once a permit is free and an accept succeeds.
    /// `None` only when the semaphore was closed.
    async fn next(&mut self) -> Option<Limited<A::Conn>> {
        let permit = Arc::clone(&self.limit).acquire_owned().await.ok()?;
        loop {
            match self.acceptor.accept().await {
                Ok(conn) => {
                    self.backoff.succeeded();
                    self.metrics.open.inc();
                    return Some(Limited {
                        conn,
                        open: self.metrics.open.clone(),
                        _permit: permit,
                    });
                }
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    self.metrics.accept_errors.inc();
                    let pause = self.backoff.failed();
                    self.log(&error, pause);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn log(&mut self, error: &io::Error, pause: Duration) {
        let due = self.last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if !due {
            self.unlogged += 1;
            return;
        }
        tracing::error!(
            port = self.port,
            %error,
            pause_ms = pause.as_millis() as u64,
            failures_not_logged = self.unlogged,
            "accepting a connection failed (out of file descriptors?); backing off"
        );
        self.last_log = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// The connections `acceptor` accepts, at most `max_connections` open at a
/// time. `port` names the listener in logs. Never ends, never yields an error
/// (the error type only fits servers that take a `Result` stream).
pub fn limited<A: Accept>(
    acceptor: A,
    max_connections: usize,
    metrics: ListenerMetrics,
    port: &'static str,
) -> impl Stream<Item = Result<Limited<A::Conn>, io::Error>> + Send + 'static {
    let state = State {
        acceptor,
        limit: Arc::new(Semaphore::new(
            max_connections.clamp(1, Semaphore::MAX_PERMITS),
        )),
        metrics,
        port,
        backoff: Backoff::default(),
        last_log: None,
        unlogged: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        let conn = state.next().await?;
        Some((Ok(conn), state))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures::StreamExt;

    use super::*;

    fn metrics() -> ListenerMetrics {
        ListenerMetrics {
            open: IntGauge::new("open", "open").expect("metric"),
            accept_errors: IntCounter::new("errors", "errors").expect("metric"),
        }
    }

    /// Answers its script, then waits forever.
    struct Scripted(VecDeque<io::Result<u32>>);

    impl Accept for Scripted {
        type Conn = u32;

        async fn accept(&mut self) -> io::Result<u32> {
            match self.0.pop_front() {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }
    }

    fn emfile() -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(24))
    }

    #[test]
    fn backoff_doubles_to_its_maximum_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..6).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), BACKOFF_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_and_are_counted() {
        let m = metrics();
        let script = [emfile(), emfile(), emfile(), Ok(7), emfile(), Ok(8)];
        let mut incoming = Box::pin(limited(
            Scripted(script.into_iter().collect()),
            10,
            m.clone(),
            "test",
        ));
        let started = tokio::time::Instant::now();
        let first = incoming.next().await.expect("a connection").expect("ok");
        assert_eq!(*first.get_ref(), 7);
        // 100 + 200 + 400 ms of pauses (virtual time), not a spin.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        let second = incoming.next().await.expect("a connection").expect("ok");
        assert_eq!(*second.get_ref(), 8);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(800),
            "a success resets the backoff"
        );
        assert_eq!(m.accept_errors.get(), 4);
        assert_eq!(m.open.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_errors_are_retried_at_once() {
        let m = metrics();
        let reset = Err(io::Error::from(io::ErrorKind::ConnectionAborted));
        let mut incoming = Box::pin(limited(
            Scripted([reset, Ok(1)].into_iter().collect()),
            10,
            m.clone(),
            "test",
        ));
        let started = tokio::time::Instant::now();
        assert!(incoming.next().await.is_some());
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(m.accept_errors.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_accepted_while_the_limit_is_held() {
        let m = metrics();
        let mut incoming = Box::pin(limited(
            Scripted([Ok(1), Ok(2), Ok(3)].into_iter().collect()),
            2,
            m.clone(),
            "test",
        ));
        let one = incoming.next().await.expect("1").expect("ok");
        let _two = incoming.next().await.expect("2").expect("ok");
        let third = tokio::time::timeout(Duration::from_secs(60), incoming.next()).await;
        assert!(third.is_err(), "a third connection while two are open");
        assert_eq!(m.open.get(), 2);
        drop(one);
        let three = incoming.next().await.expect("3").expect("ok");
        assert_eq!(*three.get_ref(), 3);
        assert_eq!(m.open.get(), 2);
    }
}
