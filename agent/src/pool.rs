//! Idle HTTP/1.1 keep-alive connections of the prober, per plain-http target.
//!
//! hyper's connection (`client::conn::http1`) already does keep-alive: it
//! knows when a connection is ready for the next request and when the server
//! closed it. What it lacks is somewhere to keep idle ones between probes;
//! this is that list, bounded per target and in total, with idle connections
//! closed after `idle_timeout`. hyper-util's pooled client was not used: it
//! keys connections by the request URI (the node target sends each site's
//! own Host header to one address), has no total cap, and cannot tell the
//! prober whether a failed request went out on a reused connection, which is
//! what decides the retry on a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where pooled connections go: the address connected to (name or IP, port).
pub(crate) type Key = (String, u16);

/// Limits of the pool (from [`crate::probe::ProbeConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub per_target: usize,
    pub total: usize,
    pub idle_timeout: Duration,
}

/// One HTTP/1.1 connection: the request side and the task driving the socket.
pub(crate) struct Conn {
    pub sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Conn {
    pub fn new(sender: SendRequest<Empty<Bytes>>, task: JoinHandle<()>) -> Self {
        Self { sender, task }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Aborting closes the socket at once instead of leaving it to the server.
        self.task.abort();
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct State {
    idle: HashMap<Key, VecDeque<Idle>>,
    total: usize,
}

/// Cheap to clone; clones share the idle connections.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    state: Mutex<State>,
    reaper_started: AtomicBool,
}

impl Pool {
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                state: Mutex::new(State::default()),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// The most recently used idle connection to `key` that is still open
    /// and within its idle time; those found closed or expired are dropped.
    pub fn checkout(&self, key: &Key) -> Option<Conn> {
        let now = Instant::now();
        let mut state = self.lock();
        let State { idle, total } = &mut *state;
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop_back() {
            *total -= 1;
            if usable(&entry, now, self.inner.limits.idle_timeout) {
                found = Some(entry.conn);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps `conn` for the next request to `key`, unless it is closed or a
    /// limit is reached (then it is closed).
    pub fn checkin(&self, key: Key, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let limits = self.inner.limits;
        let mut state = self.lock();
        if state.total >= limits.total {
            return;
        }
        let State { idle, total } = &mut *state;
        let list = idle.entry(key).or_default();
        if list.len() >= limits.per_target {
            return;
        }
        list.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        *total += 1;
        drop(state);
        self.start_reaper();
    }

    /// Idle connections kept now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().total
    }

    /// Closes idle connections past their idle time, or closed by their
    /// server, so that sockets are not held open between rounds.
    fn reap(&self) {
        let now = Instant::now();
        let timeout = self.inner.limits.idle_timeout;
        let mut state = self.lock();
        let State { idle, total } = &mut *state;
        idle.retain(|_, list| {
            let before = list.len();
            list.retain(|entry| usable(entry, now, timeout));
            *total -= before - list.len();
            !list.is_empty()
        });
    }

    /// Started by the first check-in (inside the runtime); ends with the pool.
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = self
            .inner
            .limits
            .idle_timeout
            .max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Pool { inner }.reap();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a list of connections: one left half-updated by a
        // panic is still a valid list.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn usable(entry: &Idle, now: Instant, idle_timeout: Duration) -> bool {
    !entry.conn.sender.is_closed() && now.duration_since(entry.since) < idle_timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// A connection to a loopback listener that accepts and holds it.
    async fn conn(listener: &tokio::net::TcpListener) -> (Conn, tokio::net::TcpStream) {
        let addr = listener.local_addr().expect("address");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (Conn::new(sender, task), server)
    }

    fn key(port: u16) -> Key {
        ("127.0.0.1".into(), port)
    }

    fn pool(per_target: usize, total: usize, idle_timeout: Duration) -> Pool {
        Pool::new(Limits {
            per_target,
            total,
            idle_timeout,
        })
    }

    #[tokio::test]
    async fn idle_connections_are_capped_per_target_and_in_total() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let pool = pool(2, 3, Duration::from_secs(60));
        let mut servers = Vec::new();
        for port in [1, 1, 1, 2, 2] {
            let (c, server) = conn(&listener).await;
            servers.push(server);
            pool.checkin(key(port), c);
        }
        // Two for port 1 (the third is over its cap), one for port 2 (total 3).
        assert_eq!(pool.idle_count(), 3);
        assert!(pool.checkout(&key(1)).is_some());
        assert!(pool.checkout(&key(1)).is_some());
        assert!(pool.checkout(&key(1)).is_none());
        assert!(pool.checkout(&key(2)).is_some());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let pool = pool(4, 4, Duration::from_secs(60));
        let (c, server) = conn(&listener).await;
        pool.checkin(key(1), c);
        // The server hangs up: hyper's connection task sees the end of stream.
        drop(server);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !pool.lock().idle[&key(1)][0].conn.sender.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("hyper notices the close");
        assert!(pool.checkout(&key(1)).is_none());

        let pool = self::pool(4, 4, Duration::from_millis(200));
        let (c, _server) = conn(&listener).await;
        pool.checkin(key(1), c);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(pool.checkout(&key(1)).is_none(), "expired");
    }

    #[tokio::test]
    async fn the_reaper_closes_expired_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let pool = pool(4, 4, Duration::from_millis(100));
        let (c, _server) = conn(&listener).await;
        pool.checkin(key(1), c);
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle_count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("reaped");
    }
}
