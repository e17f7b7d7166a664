//! The watchdog with real processes: an app (a `sleep` behind a pidfile)
//! killed by the test and restarted by its recovery script, the cooldown
//! and the attempt limit (and a re-arm after it), a hanging recovery step killed at its timeout,
//! and a config file others may write refused by the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_agent::watchdog::{
    self, AppConfig, EventKind, Rearm, RecoveryStep, StepOutcome, WatchdogConfig, WatchdogEvent,
};
use livehead_common::Shutdown;
use tokio::sync::mpsc;

/// A guard against a hung test, not a speed goal.
const GUARD: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn step(argv: &[&str], shell: bool, timeout: Duration) -> RecoveryStep {
    RecoveryStep {
        argv: argv.iter().map(|&s| s.to_owned()).collect(),
        timeout,
        shell,
    }
}

/// An app checked by pidfile every 20ms, with short loop protection.
fn app(pidfile: &Path, recovery: Vec<RecoveryStep>) -> AppConfig {
    AppConfig {
        name: "app".into(),
        interval: ms(20),
        pidfile: Some(pidfile.to_owned()),
        failure_threshold: 2,
        cooldown: Duration::ZERO,
        max_recoveries: 3,
        settle: ms(50),
        recovery,
        ..AppConfig::default()
    }
}

fn start(app: AppConfig) -> (mpsc::Receiver<WatchdogEvent>, Shutdown, Rearm) {
    let (tx, rx) = mpsc::channel(256);
    let shutdown = Shutdown::new();
    let rearm = Rearm::default();
    let config = WatchdogConfig {
        apps: vec![app],
        ..WatchdogConfig::default()
    };
    let (r, s) = (rearm.clone(), shutdown.clone());
    tokio::spawn(async move { watchdog::run_with_rearm(config, tx, &r, s).await });
    (rx, shutdown, rearm)
}

/// Events up to and including the first for which `last` is true.
async fn events_until(
    rx: &mut mpsc::Receiver<WatchdogEvent>,
    last: impl Fn(&EventKind) -> bool,
) -> Vec<WatchdogEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(GUARD, async {
        while let Some(e) = rx.recv().await {
            let done = last(&e.kind);
            seen.push(e);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watchdog events so far: {seen:#?}"));
    seen
}

/// The script that starts the app (a `sleep` in the background, detached
/// from the script's output) and writes its pid.
fn write_start_script(dir: &Path) -> PathBuf {
    let script = dir.join("start.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 300 </dev/null >/dev/null 2>&1 &\necho $! > \"$1\"\necho \"restarted as $!\"\n",
    )
    .expect("test value");
    script
}

fn read_pid(pidfile: &Path) -> u32 {
    std::fs::read_to_string(pidfile)
        .expect("test value")
        .trim()
        .parse()
        .expect("test value")
}

/// Running: `/proc/<pid>` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        !matches!(state, Some(Some('Z' | 'X')))
    })
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn a_killed_app_is_restarted_by_its_recovery_script_and_verified() {
    let dir = tempfile::tempdir().expect("test value");
    let pidfile = dir.path().join("app.pid");
    let script = write_start_script(dir.path());
    let (script, pidfile_arg) = (
        script.to_str().expect("test value"),
        pidfile.to_str().expect("test value"),
    );
    let started = std::process::Command::new("sh")
        .args([script, pidfile_arg])
        .output()
        .expect("test value");
    assert!(started.status.success());
    let first = read_pid(&pidfile);
    assert!(alive(first));

    let recovery = vec![step(&["sh", script, pidfile_arg], false, ms(5000))];
    let (mut rx, shutdown, _rearm) = start(app(&pidfile, recovery));
    kill(first);
    let events = events_until(&mut rx, |k| matches!(k, EventKind::Recovered { .. })).await;
    shutdown.cancel();

    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    let started_at = kinds
        .iter()
        .position(|&k| k == "recovery_started")
        .expect("a recovery");
    assert!(
        kinds[..started_at]
            .iter()
            .filter(|&&k| k == "check_failed")
            .count()
            >= 2,
        "threshold of 2 failed checks: {kinds:?}"
    );
    assert_eq!(
        &kinds[started_at..],
        ["recovery_started", "recovery_step", "recovered"]
    );
    let EventKind::RecoveryStep { report, .. } = &events[started_at + 1].kind else {
        unreachable!()
    };
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    assert_eq!(report.argv, ["sh", script, pidfile_arg]);
    let second = read_pid(&pidfile);
    assert_ne!(second, first);
    assert!(alive(second), "the restarted app runs");
    assert!(
        report
            .output_tail
            .contains(&format!("restarted as {second}")),
        "{report:?}"
    );
    assert!(events.iter().all(|e| e.app == "app" && e.ts_ms > 0));
    kill(second);
}

#[tokio::test]
async fn recoveries_respect_the_cooldown_and_stop_at_the_attempt_limit() {
    let dir = tempfile::tempdir().expect("test value");
    // Never written: every check fails, and `true` brings nothing back.
    let pidfile = dir.path().join("never.pid");
    let cooldown = ms(250);
    let config = AppConfig {
        failure_threshold: 1,
        cooldown,
        max_recoveries: 2,
        settle: ms(10),
        ..app(&pidfile, vec![step(&["true"], false, ms(5000))])
    };
    let (mut rx, shutdown, rearm) = start(config);
    let events = events_until(&mut rx, |k| matches!(k, EventKind::Exhausted { .. })).await;

    let starts: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RecoveryStarted { attempt } => Some((attempt, e.ts_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
    let gap = starts[1].1 - starts[0].1;
    assert!(
        gap >= u64::try_from(cooldown.as_millis()).expect("test value"),
        "recoveries {gap}ms apart"
    );
    let failed: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::RecoveryFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    let EventKind::RecoveryFailed { attempt: 1, reason } = failed[0] else {
        panic!("{failed:?}")
    };
    assert!(reason.contains("never.pid"), "{reason}");
    assert_eq!(
        events.last().map(|e| &e.kind),
        Some(&EventKind::Exhausted {
            attempts: 2,
            reason: reason.clone()
        })
    );

    // Exhausted: nothing more is checked or run, well past a cooldown,
    // nor when another app is re-armed.
    assert!(rearm.app("another"));
    tokio::time::sleep(cooldown * 2).await;
    assert!(rx.try_recv().is_err(), "no event after exhaustion");
    // Re-armed by a person: it starts over, from attempt 1.
    assert!(rearm.app("app"));
    let again = events_until(&mut rx, |k| matches!(k, EventKind::RecoveryStarted { .. })).await;
    assert_eq!(again[0].kind, EventKind::Rearmed);
    assert_eq!(
        again.last().map(|e| &e.kind),
        Some(&EventKind::RecoveryStarted { attempt: 1 })
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_hanging_recovery_step_and_its_children_are_killed_at_its_timeout() {
    let dir = tempfile::tempdir().expect("test value");
    let child_pid = dir.path().join("child.pid");
    let hang = format!(
        "sleep 30 & echo $! > {}; echo hanging; wait",
        child_pid.display()
    );
    let never_run = dir.path().join("never-run");
    let timeout = ms(300);
    let config = AppConfig {
        failure_threshold: 1,
        max_recoveries: 1,
        settle: ms(10),
        ..app(
            &dir.path().join("never.pid"),
            vec![
                step(&[&hang], true, timeout),
                step(
                    &["touch", never_run.to_str().expect("test value")],
                    false,
                    ms(5000),
                ),
            ],
        )
    };
    let (mut rx, shutdown, _rearm) = start(config);
    let events = events_until(&mut rx, |k| matches!(k, EventKind::Exhausted { .. })).await;
    shutdown.cancel();

    let steps: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RecoveryStep { report, .. } => Some(report),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 1, "the sequence stops at the failed step");
    assert_eq!(steps[0].outcome, StepOutcome::TimedOut);
    assert!(steps[0].duration >= timeout, "{:?}", steps[0].duration);
    assert_eq!(steps[0].output_tail, "hanging\n");
    assert!(!never_run.exists());
    // SIGKILL went to the whole group; the child may take a moment to go.
    let sleeper = read_pid(&child_pid);
    tokio::time::timeout(GUARD, async {
        while alive(sleeper) {
            tokio::time::sleep(ms(10)).await;
        }
    })
    .await
    .expect("the step's background child was killed too");
}

#[tokio::test]
async fn the_agent_refuses_to_watch_from_a_config_file_others_may_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("test value");
    let file = dir.path().join("agent.toml");
    let sites = dir.path().join("sites.txt");
    std::fs::write(&sites, "example.invalid\n").expect("test value");
    let toml = format!(
        "[sites]\nlist_file = {sites:?}\n[collector]\ninsecure = true\nurl = \"http://127.0.0.1:9\"\n\
         [[watchdog.apps]]\nname = \"web\"\ntcp = \"127.0.0.1:9\"\n\
         [[watchdog.apps.recovery]]\nargv = [\"true\"]\n"
    );
    std::fs::write(&file, toml).expect("test value");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).expect("test value");
    let mut config: livehead_agent::AgentConfig =
        toml::from_str(&std::fs::read_to_string(&file).expect("test value")).expect("test value");
    config.metrics_listen = None;
    config.config_file = Some(file.clone());

    let err = livehead_agent::run(config, Shutdown::new())
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("0646"),
        "{err}"
    );
    assert!(err.contains("other users"), "{err}");
}
