//! Helpers for tests that run the real `livehead` binary as separate processes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `livehead` process whose stderr goes to a log file; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Where stdout goes, when it is kept.
    out: Option<PathBuf>,
}

impl Proc {
    /// Starts `livehead args`; stdout is discarded.
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> Self {
        Self::start(name, args, &[], log_dir, false)
    }

    /// [`Proc::spawn`] with environment variables added (`OTEL_*`, say).
    pub fn spawn_with_env(
        name: &str,
        args: &[String],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> Self {
        Self::start(name, args, env, log_dir, false)
    }

    /// Starts `livehead args`, keeping stdout in `<log_dir>/<name>.out` (read
    /// it with [`Proc::stdout`]).
    pub fn spawn_keeping_stdout(name: &str, args: &[String], log_dir: &Path) -> Self {
        Self::start(name, args, &[], log_dir, true)
    }

    /// Starts `command` (another program than `livehead`, e.g. `podman run`),
    /// its stderr to the log; stdout is discarded.
    pub fn spawn_command(name: &str, command: Command, log_dir: &Path) -> Self {
        Self::start_command(name, command, log_dir, false)
    }

    fn start(
        name: &str,
        args: &[String],
        env: &[(&str, String)],
        log_dir: &Path,
        keep_stdout: bool,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_livehead"));
        command
            .args(args)
            .env("RUST_LOG", "info,livehead_agent::transport=debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::start_command(name, command, log_dir, keep_stdout)
    }

    fn start_command(name: &str, mut command: Command, log_dir: &Path, keep_stdout: bool) -> Self {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file")
        };
        let log = log_dir.join(format!("{name}.log"));
        let out = keep_stdout.then(|| log_dir.join(format!("{name}.out")));
        let stdout = out.as_deref().map_or_else(Stdio::null, |p| open(p).into());
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(open(&log))
            .spawn()
            .expect("start livehead");
        Self {
            name: name.to_owned(),
            child,
            log,
            out,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the process printed on stdout so far (empty unless kept).
    pub fn stdout(&self) -> String {
        self.out
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} still runs after {timeout:?}: {}", self.name, self.log());
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "{} exited with {status}: {}",
                    self.name,
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not stop within {timeout:?}: {}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`
/// with `what` and the given context.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut context: impl FnMut() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` over plain HTTP/1.0 on loopback: (status, body), None when
/// nothing answers yet.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Any request over plain HTTP/1.0 on loopback, with extra header lines
/// (`"Name: value"`) and a body: (status, body), None when nothing answers.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Writes dev certificates with the real `livehead certs`.
pub fn certs(dir: &Path, agents: &[&str]) {
    let mut args = vec![
        "certs".to_owned(),
        "--out".into(),
        dir.display().to_string(),
    ];
    for a in agents {
        args.extend(["--agent".to_owned(), (*a).to_owned()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_livehead"))
        .args(&args)
        .output()
        .expect("livehead certs");
    assert!(
        out.status.success(),
        "livehead certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn tls_args(dir: &Path, stem: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        dir.join(format!("{stem}.pem")).display().to_string(),
        "--tls-key".into(),
        dir.join(format!("{stem}-key.pem")).display().to_string(),
    ]
}

/// An agent config that batches within 50 ms and reconnects within half a
/// second, so the end-to-end tests see records and reconnections quickly.
pub const QUICK_AGENT_CONFIG: &str = "[batch]\nmax_delay = \"50ms\"\n[collector]\n\
     reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n";

/// `livehead agent` arguments: mTLS as `<dir>/certs/<cert>.pem` to the
/// collector on `grpc` (named `localhost`), the sites of `list`, metrics on
/// `metrics`, then `extra` (target, interval, config, …).
pub fn agent_args(
    dir: &Path,
    cert: &str,
    grpc: u16,
    list: &Path,
    metrics: u16,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "agent",
        "--collector-url",
        &format!("https://127.0.0.1:{grpc}"),
        "--server-name",
        "localhost",
        "--sites-file",
        &list.display().to_string(),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(tls_args(&dir.join("certs"), cert));
    args
}

/// Sums every sample of a Prometheus metric family in a /metrics body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits for `GET /health` on `port` to answer 200, showing `proc`'s log if
/// it never does.
pub async fn wait_healthy(proc: &Proc, port: u16) {
    wait_for(
        "/health",
        Duration::from_secs(30),
        || proc.log(),
        || http_get(loopback(port), "/health").filter(|(s, _)| *s == 200),
    )
    .await;
}

/// `livehead collector` named `name` on loopback ports, with the dev PKI
/// of `<dir>/certs`, letting the `alerter` identity watch; `flags` add to
/// them (the store's, `--config`).
pub fn start_collector(name: &str, dir: &Path, grpc: u16, http: u16, flags: &[String]) -> Proc {
    let mut args: Vec<String> = vec![
        "collector".into(),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--watch-allow".into(),
        "alerter".into(),
    ];
    args.extend_from_slice(flags);
    args.extend(tls_args(&dir.join("certs"), "collector"));
    Proc::spawn(name, &args, dir)
}

/// `livehead alerter` watching the collectors on `grpcs` with the rules of
/// `<dir>/rules.toml`, its state in `<dir>/alerter-state`, its API on `api`;
/// `settings` is appended to its config file (TOML after the top-level keys
/// and `[collectors]`, `[api]`: e.g. `[[api.tokens]]`, `[heartbeats]`).
pub fn start_alerter(dir: &Path, grpcs: &[u16], api: u16, settings: &str) -> Proc {
    let config = dir.join("alerter.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\nexternal_url = \"https://livehead.test\"\n\
             [collectors]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n{settings}",
            state = dir.join("alerter-state").display().to_string(),
        ),
    )
    .expect("alerter config");
    let mut args: Vec<String> = vec![
        "alerter".into(),
        "--config".into(),
        config.display().to_string(),
        "--rules".into(),
        dir.join("rules.toml").display().to_string(),
        "--server-name".into(),
        "localhost".into(),
    ];
    for grpc in grpcs {
        args.extend([
            "--collector-url".into(),
            format!("https://127.0.0.1:{grpc}"),
        ]);
    }
    args.extend(tls_args(&dir.join("certs"), "agent-alerter"));
    Proc::spawn("alerter", &args, dir)
}
