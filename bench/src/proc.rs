//! Processes the benchmarks start and what they cost: whole runs timed by GNU
//! `time` (wall, CPU, peak RSS of the process tree's largest process), and
//! long-running services sampled from `/proc`.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const GNU_TIME: &str = "/usr/bin/time";

/// What one finished run cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall: Duration,
    /// User + system CPU seconds, children included (the curls of a script).
    pub cpu_seconds: f64,
    /// Peak resident set of the largest single process of the run, KiB.
    pub max_rss_kib: u64,
}

impl Usage {
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// Runs `command` to completion under GNU `time`; its stdout and stderr go to
/// `log`. Returns the usage and the command's exit status.
pub fn measure(command: &mut Command, log: &Path) -> anyhow::Result<(Usage, ExitStatus)> {
    let report = tempfile::NamedTempFile::new().context("temporary file for GNU time")?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut timed = Command::new(GNU_TIME);
    timed
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(report.path())
        .arg(command.get_program())
        .args(command.get_args())
        .envs(command.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let status = timed
        .status()
        .with_context(|| format!("running {GNU_TIME} (apt-get install time)"))?;
    let text = std::fs::read_to_string(report.path())?;
    // GNU time prefixes "Command exited with non-zero status N" on failure.
    let line = text.lines().last().unwrap_or_default();
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("GNU time printed {text:?}"))?;
    let [wall, user, sys, rss] = fields[..] else {
        bail!("GNU time printed {text:?}");
    };
    Ok((
        Usage {
            wall: Duration::from_secs_f64(wall),
            cpu_seconds: user + sys,
            max_rss_kib: rss as u64,
        },
        status,
    ))
}

/// A background process killed (and reaped) on drop.
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// Waits until `addr` accepts connections (or the process dies).
    pub fn wait_for_port(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("{} does not listen on {addr} after 30 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// SIGTERM rather than SIGKILL: nginx's master takes its workers with it only
/// when it is allowed to stop cleanly.
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// CPU time and memory of a running process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    /// Peak resident set so far (VmHWM).
    pub hwm_kib: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("/proc/{pid}/stat is short: {stat:?}"))?
            .parse::<f64>()?)
    };
    let cpu_seconds = (ticks(11)? + ticks(12)?) / clock_ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        cpu_seconds,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// `USER_HZ`; 100 on every Linux architecture we run on, asked once anyway.
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
