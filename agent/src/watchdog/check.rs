//! The checks of one app (I/O): processes and memory from `/proc`, a TCP
//! connect, an HTTP GET. Parsers are pure and tested here.

use std::path::Path;
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::config::{AppConfig, HttpCheck, MemoryFloor};

/// Runs every configured check of `app`; the first failure is the reason.
pub async fn check_app(app: &AppConfig, proc_root: &Path) -> Result<(), String> {
    if let Some(name) = &app.process {
        let (root, wanted) = (proc_root.to_owned(), name.clone());
        let found = tokio::task::spawn_blocking(move || process_running(&root, &wanted))
            .await
            .map_err(|e| format!("process check: {e}"))?;
        if !found {
            return Err(format!("no process named {name:?} is running"));
        }
    }
    if let Some(pidfile) = &app.pidfile {
        let (root, file) = (proc_root.to_owned(), pidfile.clone());
        tokio::task::spawn_blocking(move || pidfile_alive(&root, &file))
            .await
            .map_err(|e| format!("pidfile check: {e}"))??;
    }
    if let Some(addr) = &app.tcp {
        tcp_check(addr, app.tcp_timeout).await?;
    }
    if let Some(http) = &app.http {
        http_check(http).await?;
    }
    if let Some(floor) = app.min_available_memory {
        let meminfo = tokio::fs::read_to_string(proc_root.join("meminfo"))
            .await
            .map_err(|e| format!("cannot read meminfo: {e}"))?;
        memory_check(&meminfo, floor)?;
    }
    Ok(())
}

/// True if a process's `comm` or first command-line word's basename is `name`.
fn process_running(proc_root: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return false;
    };
    entries.flatten().any(|e| {
        let is_pid = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            return false;
        }
        let dir = e.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        !is_zombie(&stat) && process_matches(name, &comm, &cmdline)
    })
}

pub(crate) fn process_matches(name: &str, comm: &str, cmdline: &[u8]) -> bool {
    if comm.trim_end_matches('\n') == name {
        return true;
    }
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    !argv0.is_empty() && argv0.rsplit('/').next() == Some(name)
}

/// A zombie has exited: it only waits for its parent to read its status.
fn is_zombie(stat: &str) -> bool {
    // The state follows the command name's closing parenthesis.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state == 'Z' || state == 'X')
}

fn pidfile_alive(proc_root: &Path, pidfile: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(pidfile)
        .map_err(|e| format!("cannot read pidfile {}: {e}", pidfile.display()))?;
    let pid: u32 = text.trim().parse().map_err(|_| {
        format!(
            "pidfile {} holds no pid: {:?}",
            pidfile.display(),
            text.trim()
        )
    })?;
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) if !is_zombie(&stat) => Ok(()),
        Ok(_) => Err(format!(
            "process {pid} (pidfile {}) has exited",
            pidfile.display()
        )),
        Err(_) => Err(format!(
            "process {pid} (pidfile {}) is not running",
            pidfile.display()
        )),
    }
}

async fn tcp_check(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no connection within {timeout:?}")),
    }
}

async fn http_check(check: &HttpCheck) -> Result<(), String> {
    let url = &check.url;
    let status = tokio::time::timeout(check.timeout, http_get(url))
        .await
        .map_err(|_| format!("http {url}: no answer within {:?}", check.timeout))??;
    if status != check.status {
        return Err(format!(
            "http {url}: status {status}, expected {}",
            check.status
        ));
    }
    Ok(())
}

async fn http_get(url: &str) -> Result<u16, String> {
    let fail = |e: &dyn std::fmt::Display| format!("http {url}: {e}");
    let uri: http::Uri = url.parse().map_err(|e| fail(&e))?;
    let host = uri.host().ok_or_else(|| fail(&"no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    let conn = tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "livehead-watchdog")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| fail(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fail(&e));
    // The status is all we want; the body is not read.
    conn.abort();
    Ok(response?.status().as_u16())
}

fn memory_check(meminfo: &str, floor: MemoryFloor) -> Result<(), String> {
    let (available, total) = parse_meminfo(meminfo)
        .ok_or_else(|| "meminfo has no MemAvailable or MemTotal".to_owned())?;
    let min = match floor {
        MemoryFloor::Bytes(b) => b,
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        MemoryFloor::Percent(p) => (total as f64 * p / 100.0) as u64,
    };
    if available < min {
        return Err(format!(
            "available memory {available} bytes is below the floor of {min} bytes"
        ));
    }
    Ok(())
}

/// `(MemAvailable, MemTotal)` in bytes.
pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    Some((field("MemAvailable")?, field("MemTotal")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_matches_by_comm_or_command_basename() {
        assert!(process_matches("nginx", "nginx\n", b""));
        assert!(process_matches(
            "node",
            "MainThread\n",
            b"/usr/bin/node\0app.js\0"
        ));
        assert!(!process_matches("node", "bash\n", b"/bin/bash\0node\0"));
        assert!(!process_matches("x", "\n", b""));
    }

    #[test]
    fn zombies_are_not_running() {
        assert!(is_zombie("42 (sleep) Z 1 42 42"));
        assert!(is_zombie("42 (a) b) Z 1"));
        assert!(!is_zombie("42 (sleep) S 1 42 42"));
    }

    #[test]
    fn meminfo_floor_in_bytes_and_percent() {
        let m = "MemTotal:       1000 kB\nMemFree: 10 kB\nMemAvailable:    200 kB\n";
        assert_eq!(parse_meminfo(m), Some((200 * 1024, 1000 * 1024)));
        assert!(memory_check(m, MemoryFloor::Percent(10.0)).is_ok());
        let err = memory_check(m, MemoryFloor::Percent(30.0)).expect_err("below");
        assert!(err.contains("below"), "{err}");
        assert!(memory_check(m, MemoryFloor::Bytes(300 * 1024)).is_err());
        assert!(memory_check("MemTotal: 1 kB\n", MemoryFloor::Bytes(1)).is_err());
    }

    #[tokio::test]
    async fn tcp_check_needs_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        assert_eq!(tcp_check(&addr, Duration::from_secs(5)).await, Ok(()));
        drop(listener);
        let err = tcp_check(&addr, Duration::from_secs(5))
            .await
            .expect_err("closed");
        assert!(err.contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn http_check_wants_the_expected_status() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let mut check = HttpCheck {
            url: format!("http://{addr}/health"),
            ..HttpCheck::default()
        };
        let err = http_check(&check).await.expect_err("503");
        assert!(err.contains("503") && err.contains("200"), "{err}");
        check.status = 503;
        assert_eq!(http_check(&check).await, Ok(()));
    }

    #[tokio::test]
    async fn pidfile_and_process_checks_see_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("app.pid");
        std::fs::write(&pidfile, std::process::id().to_string()).expect("write");
        let proc_root = Path::new("/proc");
        assert_eq!(pidfile_alive(proc_root, &pidfile), Ok(()));
        std::fs::write(&pidfile, "nope").expect("write");
        assert!(
            pidfile_alive(proc_root, &pidfile)
                .expect_err("bad")
                .contains("no pid")
        );
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(process_running(proc_root, comm.trim()));
        assert!(!process_running(proc_root, "no-such-process-livehead"));
    }
}
