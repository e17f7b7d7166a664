//! Runs one recovery step (I/O): no shell unless configured, in its own
//! process group so a timeout kills everything the step started and is
//! still waiting on, with the tail of its output kept.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::config::RecoveryStep;

/// Bytes of a step's output (stdout and stderr, in arrival order) kept.
pub const OUTPUT_TAIL_BYTES: usize = 10 * 1024;
/// After the step exits, how long its pipes are still read: a daemon it
/// started in the background may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_millis(200);

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// It exited with this code (0 is success).
    Exited(i32),
    /// It was ended by this signal.
    Signaled(i32),
    /// It ran past its timeout; its process group was killed.
    TimedOut,
    /// The agent was stopping; its process group was killed.
    Cancelled,
    /// It could not be started.
    SpawnFailed(String),
}

impl StepOutcome {
    pub fn succeeded(&self) -> bool {
        *self == Self::Exited(0)
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub argv: Vec<String>,
    pub outcome: StepOutcome,
    pub duration: Duration,
    /// The last [`OUTPUT_TAIL_BYTES`] of its output, lossily UTF-8.
    pub output_tail: String,
}

/// Runs `step`, killing it at its timeout or when `shutdown` fires.
pub async fn run_step(step: &RecoveryStep, shutdown: &livehead_common::Shutdown) -> StepReport {
    let started = Instant::now();
    let report = |outcome, output_tail| StepReport {
        argv: step.argv.clone(),
        outcome,
        duration: started.elapsed(),
        output_tail,
    };
    let mut command = command(step);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return report(StepOutcome::SpawnFailed(e.to_string()), String::new()),
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(read_into(o, tail.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(read_into(e, tail.clone()))),
    ];
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_outcome(s),
            Err(e) => StepOutcome::SpawnFailed(e.to_string()),
        },
        () = tokio::time::sleep(step.timeout) => StepOutcome::TimedOut,
        () = shutdown.cancelled() => StepOutcome::Cancelled,
    };
    if matches!(outcome, StepOutcome::TimedOut | StepOutcome::Cancelled) {
        kill_group(&mut child).await;
    }
    for mut reader in readers.into_iter().flatten() {
        if tokio::time::timeout(PIPE_GRACE, &mut reader).await.is_err() {
            // A daemon the step started holds the pipe: stop reading it.
            reader.abort();
            tracing::debug!(argv = ?step.argv, "recovery step output still open after it exited; not read further");
        }
    }
    let output = tail.lock().map(|t| t.text()).unwrap_or_default();
    report(outcome, output)
}

fn command(step: &RecoveryStep) -> tokio::process::Command {
    if step.shell {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").args(&step.argv);
        c
    } else {
        let mut c = tokio::process::Command::new(&step.argv[0]);
        c.args(&step.argv[1..]);
        c
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> StepOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => StepOutcome::Exited(code),
        (None, Some(signal)) => StepOutcome::Signaled(signal),
        (None, None) => StepOutcome::Exited(-1),
    }
}

/// Kills the step's process group (the step leads it), then reaps the step.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|id| {
        i32::try_from(id)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
    }) {
        if let Err(error) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        {
            tracing::warn!(%error, pid = pid.as_raw_nonzero().get(), "cannot kill a recovery step's process group");
        }
    }
    let _ = child.kill().await;
}

async fn read_into(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut t) = tail.lock() {
            t.push(&buf[..n]);
        }
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] bytes written to it.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        let excess = self.0.len().saturating_sub(OUTPUT_TAIL_BYTES);
        self.0.drain(..excess);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(argv: &[&str], shell: bool, timeout: Duration) -> RecoveryStep {
        RecoveryStep {
            argv: argv.iter().map(|&s| s.to_owned()).collect(),
            timeout,
            shell,
        }
    }

    #[tokio::test]
    async fn a_step_returns_when_it_exits_even_if_a_daemon_it_started_keeps_its_output() {
        let shutdown = livehead_common::Shutdown::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; echo started", pid.display());
        let r = run_step(&step(&[&script], true, Duration::from_secs(20)), &shutdown).await;
        assert_eq!(r.outcome, StepOutcome::Exited(0));
        assert_eq!(r.output_tail, "started\n");
        let daemon = std::fs::read_to_string(&pid).expect("pid");
        let _ = std::process::Command::new("kill")
            .arg(daemon.trim())
            .status();
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; OUTPUT_TAIL_BYTES]);
        t.push(b"end");
        assert_eq!(t.0.len(), OUTPUT_TAIL_BYTES);
        assert!(t.text().ends_with("aend"));
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell_and_reports_exit_and_output() {
        let shutdown = livehead_common::Shutdown::new();
        // Without a shell, `$HOME` and `;` are plain arguments.
        let r = run_step(
            &step(&["echo", "$HOME;", "x"], false, Duration::from_secs(30)),
            &shutdown,
        )
        .await;
        assert_eq!(r.outcome, StepOutcome::Exited(0));
        assert_eq!(r.output_tail, "$HOME; x\n");
        let r = run_step(
            &step(
                &["echo out; echo err >&2; exit 3"],
                true,
                Duration::from_secs(30),
            ),
            &shutdown,
        )
        .await;
        assert_eq!(r.outcome, StepOutcome::Exited(3));
        assert!(
            r.output_tail.contains("out") && r.output_tail.contains("err"),
            "{}",
            r.output_tail
        );
        let r = run_step(
            &step(&["/no/such/program"], false, Duration::from_secs(30)),
            &shutdown,
        )
        .await;
        assert!(
            matches!(r.outcome, StepOutcome::SpawnFailed(_)),
            "{:?}",
            r.outcome
        );
    }
}
