//! Fixtures shared by livehead's tests. Everything binds loopback on free
//! ports and lives in temporary directories; nothing relies on a system service.

pub mod clickhouse;
pub mod pki;
pub mod readme;
pub mod sites;

/// A free TCP port on 127.0.0.1 (bound then released; fine for tests that
/// start a server right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
