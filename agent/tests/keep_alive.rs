//! The prober's keep-alive pool (`probe.keep_alive`) against loopback
//! servers that count the connections they accept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use livehead_agent::probe::{ProbeConfig, ProbeError, ProbeMethod, ProbeResult, Prober, Target};
use livehead_testkit::sites::{
    BADHEAD_SITE, CROSS_SITE, ERROR_SITE, FakeSites, NOHEAD_SITE, OK_SITE, SAME_SITE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn prober(keep_alive: bool) -> Prober {
    Prober::new(ProbeConfig {
        keep_alive,
        ..ProbeConfig::default()
    })
    .expect("prober")
}

fn fixed(port: u16) -> Target {
    Target::Fixed {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }
}

fn site(i: usize) -> String {
    format!("site{i:03}.test")
}

fn assert_ok(result: &ProbeResult) {
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(result.error(), ProbeError::Unspecified, "{result:?}");
}

#[tokio::test]
async fn sites_behind_one_target_share_kept_alive_connections() {
    let sites = FakeSites::start().await;
    let prober = prober(true);
    let target = fixed(sites.port());
    for i in 0..30 {
        let result = prober.probe(&site(i), &target).await;
        assert_ok(&result);
        // Only the first probe connected.
        assert_eq!(result.connect_us == 0, i > 0, "{result:?}");
    }
    assert_eq!(sites.connections(), 1);
    // Each request still carried its own site's Host header.
    for i in 0..30 {
        assert_eq!(sites.requests_for(&site(i)).len(), 1, "{}", site(i));
    }

    // Four probes in flight at once need at most four connections.
    for wave in 0..10 {
        let probes = (0..4).map(|i| {
            let (prober, target) = (prober.clone(), target.clone());
            async move { prober.probe(&site(100 + wave * 4 + i), &target).await }
        });
        for result in futures::future::join_all(probes).await {
            assert_ok(&result);
        }
    }
    assert!(sites.connections() <= 5, "{}", sites.connections());
}

#[tokio::test]
async fn without_keep_alive_every_probe_connects() {
    let sites = FakeSites::start().await;
    let prober = prober(false);
    for i in 0..10 {
        let result = prober.probe(&site(i), &fixed(sites.port())).await;
        assert_ok(&result);
        assert!(result.connect_us > 0, "{result:?}");
    }
    assert_eq!(sites.connections(), 10);
}

#[tokio::test]
async fn results_have_the_same_shape_with_or_without_keep_alive() {
    let sites = FakeSites::start().await;
    let target = fixed(sites.port());
    let (fresh, pooled) = (prober(false), prober(true));
    // Warm the pool so the probes below run on a reused connection.
    assert_ok(&pooled.probe(OK_SITE, &target).await);
    let expected = [
        (OK_SITE, 200, ProbeMethod::Head),
        (SAME_SITE, 301, ProbeMethod::Head),
        (CROSS_SITE, 301, ProbeMethod::Head),
        (ERROR_SITE, 500, ProbeMethod::Head),
        (NOHEAD_SITE, 200, ProbeMethod::Get),
        (BADHEAD_SITE, 200, ProbeMethod::Get),
    ];
    for (name, status, method) in expected {
        let a = fresh.probe(name, &target).await;
        let b = pooled.probe(name, &target).await;
        for r in [&a, &b] {
            assert_eq!(r.status, status, "{r:?}");
            assert_eq!(r.method(), method, "{r:?}");
            assert_eq!(r.error(), ProbeError::Unspecified, "{r:?}");
            assert!(r.latency_us >= r.first_byte_us, "{r:?}");
            assert!(r.first_byte_us > 0, "{r:?}");
        }
        assert_eq!(
            (&a.site, &a.location, a.cross_domain, &a.target, a.port),
            (&b.site, &b.location, b.cross_domain, &b.target, b.port)
        );
        assert!(a.connect_us > 0, "{a:?}");
        assert_eq!(b.connect_us, 0, "reused: {b:?}");
    }
    // One connection for the pooled prober, one per attempt for the other
    // (the two sites refusing HEAD take two each).
    assert_eq!(sites.connections(), 1 + expected.len() + 2);
}

#[tokio::test]
async fn https_probes_are_not_pooled() {
    let sites = FakeSites::start_tls().await;
    let prober = prober(true);
    let target = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    for _ in 0..3 {
        let result = prober.probe(OK_SITE, &target).await;
        assert_ok(&result);
        assert!(result.connect_us > 0, "{result:?}");
        assert!(result.cert_expiry_ms > 0, "{result:?}");
    }
    assert_eq!(sites.connections(), 3);
}

/// What the hand-written server does with a connection's second request.
#[derive(Clone, Copy)]
enum Second {
    /// Closes the connection without answering: the server's keep-alive
    /// time ran out just as the request arrived.
    Close,
    /// Never answers (and keeps the connection open).
    Hang,
}

/// A server answering 200 to each connection's first request only.
struct OneShot {
    port: u16,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl OneShot {
    async fn start(second: Second) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (a, n) = (accepted.clone(), answered.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(one_shot(tcp, second, n.clone()));
            }
        });
        Self {
            port,
            accepted,
            answered,
            _task: task,
        }
    }
}

async fn one_shot(mut tcp: TcpStream, second: Second, answered: Arc<AtomicUsize>) {
    if !read_head(&mut tcp).await {
        return;
    }
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    if tcp.write_all(reply).await.is_err() {
        return;
    }
    answered.fetch_add(1, Ordering::SeqCst);
    if !read_head(&mut tcp).await {
        return;
    }
    match second {
        Second::Close => drop(tcp),
        Second::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
}

/// Reads one request head; false at the end of stream.
async fn read_head(tcp: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_kept_connection_closed_by_the_server_is_retried_not_failed() {
    let server = OneShot::start(Second::Close).await;
    let prober = prober(true);
    for i in 0..5 {
        let result = prober.probe(&site(i), &fixed(server.port)).await;
        assert_ok(&result);
        assert_eq!(result.method(), ProbeMethod::Head, "{result:?}");
        // The retry connected: its connect time is recorded.
        assert!(result.connect_us > 0, "{result:?}");
    }
    // Probes 2 to 5 each tried their kept connection, then a new one.
    assert_eq!(server.answered.load(Ordering::SeqCst), 5);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_transport_error_on_a_kept_connection_discards_it() {
    let server = OneShot::start(Second::Hang).await;
    let prober = Prober::new(ProbeConfig {
        keep_alive: true,
        timeout: Duration::from_millis(300),
        ..ProbeConfig::default()
    })
    .expect("prober");
    let target = fixed(server.port);
    assert_ok(&prober.probe(&site(0), &target).await);
    // The kept connection's HEAD times out: the site's slowness, not a closed
    // connection, so no retry; the GET fallback then goes out on a new connection.
    let result = prober.probe(&site(1), &target).await;
    assert_ok(&result);
    assert_eq!(result.method(), ProbeMethod::Get, "{result:?}");
    assert!(result.connect_us > 0, "{result:?}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    // The timed-out connection was not kept: the next probe reuses the GET's.
    let result = prober.probe(&site(2), &target).await;
    assert_ok(&result);
    assert_eq!(result.method(), ProbeMethod::Get, "{result:?}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}
