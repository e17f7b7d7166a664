//! Fixtures shared by livehead's tests. Everything binds loopback on free
//! ports and lives in temporary directories; nothing relies on a system service.

pub mod clickhouse;
pub mod pki;
pub mod readme;
pub mod receiver;
pub mod sites;
pub mod zookeeper;

/// A free TCP port on 127.0.0.1 (bound then released; fine for tests that
/// start a server right away), never the same twice in one test process.
///
/// Taken below Linux's ephemeral range (32768-60999 unless changed): a port
/// the kernel picked for `bind(0)` can be reused at once as the local end of
/// some outgoing connection (an agent's probe), and the server then fails to
/// listen on it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each process starts at its own place, so concurrent test binaries
    // rarely try the same ports.
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// A plain-HTTP client for tests. reqwest is built with rustls for the
/// alerter (features are unified across the workspace's tests), and then
/// needs a crypto provider installed before its first client.
pub fn http_client() -> reqwest::Client {
    livehead_common::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// Sends `signal` ("STOP", "CONT", "KILL") to process `pid`: how tests stall,
/// resume and kill a server they started.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The collector's two stores, for tests written once and run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    ClickHouse,
}

/// Writes the two `#[tokio::test]`s of each `async fn name(Backend)` in
/// scope: `sqlite::name` and `clickhouse::name`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
        mod clickhouse {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Backend::ClickHouse).await;
                }
            )*
        }
    };
}
