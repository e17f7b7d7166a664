//! systemd units, through `systemctl`: `list-units` resolves the configured
//! globs to loaded units (units come and go, so every tick), then one
//! `show --property=...` reads them all. systemctl is used rather than
//! D-Bus because it needs no client library in the agent (no zbus) and its
//! `show` output is a stable key=value interface.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use livehead_proto::v1::ServiceState;
use regex::Regex;

/// Properties read of each unit.
pub const PROPERTIES: &str = "Id,ActiveState,SubState,MainPID,MemoryCurrent,CPUUsageNSec,NRestarts";

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".slice",
    ".scope",
    ".path",
    ".swap",
    ".device",
];

/// A unit name or glob as systemd names it: `.service` added when it has
/// no unit suffix (`php*-fpm` becomes `php*-fpm.service`).
pub fn unit_name(pattern: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|s| pattern.ends_with(s)) {
        pattern.to_owned()
    } else {
        format!("{pattern}.service")
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Unit names, the first column of `systemctl list-units --plain --no-legend`.
pub fn parse_list_units(text: &str) -> Vec<String> {
    text.lines()
        // Some versions flag a failed unit with a leading "●", even with --plain.
        .filter_map(|l| l.split_ascii_whitespace().find(|t| *t != "●"))
        .map(str::to_owned)
        .collect()
}

/// The blocks of `systemctl show` output (one per unit, separated by blank
/// lines) as service states. `[not set]`, empty and 2^64-1 (systemd's
/// "infinity") values mean unknown and read as 0.
pub fn parse_show(text: &str, ts_ms: u64, site_re: Option<&Regex>) -> Vec<ServiceState> {
    let mut out = Vec::new();
    let mut cur = ServiceState {
        ts_ms,
        ..ServiceState::default()
    };
    let mut any = false;
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim_end();
        if line.is_empty() {
            if any && !cur.unit.is_empty() {
                cur.site = site_of(&cur.unit, site_re);
                out.push(std::mem::replace(
                    &mut cur,
                    ServiceState {
                        ts_ms,
                        ..ServiceState::default()
                    },
                ));
            }
            any = false;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        any = true;
        match key {
            "Id" => cur.unit = value.to_owned(),
            "ActiveState" => cur.active_state = value.to_owned(),
            "SubState" => cur.sub_state = value.to_owned(),
            "MainPID" => cur.main_pid = u32::try_from(number(value)).unwrap_or(0),
            "MemoryCurrent" => cur.memory_bytes = number(value),
            "CPUUsageNSec" => cur.cpu_time_us = number(value) / 1000,
            "NRestarts" => cur.restarts = u32::try_from(number(value)).unwrap_or(u32::MAX),
            _ => {}
        }
    }
    out
}

fn number(value: &str) -> u64 {
    match value.parse::<u64>() {
        Ok(u64::MAX) | Err(_) => 0,
        Ok(v) => v,
    }
}

fn site_of(unit: &str, re: Option<&Regex>) -> String {
    re.and_then(|re| re.captures(unit))
        .and_then(|c| c.name("site"))
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default()
}

/// True when systemd runs the host (what `sd_booted()` checks).
pub fn systemd_running(run_systemd_system: &Path) -> bool {
    run_systemd_system.is_dir()
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {command} did not answer within {timeout:?}")]
    Timeout {
        program: String,
        command: &'static str,
        timeout: Duration,
    },
    #[error("{program} {command} failed ({status}): {stderr}")]
    Failed {
        program: String,
        command: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Reads the configured units' states.
#[derive(Debug, Clone)]
pub struct ServiceSampler {
    program: String,
    patterns: Vec<String>,
    site_re: Option<Regex>,
    timeout: Duration,
}

impl ServiceSampler {
    pub fn new(patterns: &[String], site_re: Option<Regex>, timeout: Duration) -> Self {
        Self::with_program("systemctl", patterns, site_re, timeout)
    }

    /// With another program standing in for systemctl (tests).
    pub fn with_program(
        program: &str,
        patterns: &[String],
        site_re: Option<Regex>,
        timeout: Duration,
    ) -> Self {
        Self {
            program: program.to_owned(),
            patterns: patterns.iter().map(|p| unit_name(p)).collect(),
            site_re,
            timeout,
        }
    }

    pub async fn tick(&self, ts_ms: u64) -> Result<Vec<ServiceState>, ServiceError> {
        let mut units: Vec<String> = self
            .patterns
            .iter()
            .filter(|p| !is_glob(p))
            .cloned()
            .collect();
        let globs: Vec<&str> = self
            .patterns
            .iter()
            .filter(|p| is_glob(p))
            .map(String::as_str)
            .collect();
        if !globs.is_empty() {
            let mut args = vec![
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--full",
                "--",
            ];
            args.extend(globs);
            let out = self.systemctl("list-units", &args).await?;
            for u in parse_list_units(&out) {
                if !units.contains(&u) {
                    units.push(u);
                }
            }
        }
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let property = format!("--property={PROPERTIES}");
        let mut args = vec!["show", property.as_str(), "--"];
        args.extend(units.iter().map(String::as_str));
        let out = self.systemctl("show", &args).await?;
        Ok(parse_show(&out, ts_ms, self.site_re.as_ref()))
    }

    async fn systemctl(
        &self,
        command: &'static str,
        args: &[&str],
    ) -> Result<String, ServiceError> {
        let child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ServiceError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| ServiceError::Timeout {
                program: self.program.clone(),
                command,
                timeout: self.timeout,
            })?
            .map_err(|source| ServiceError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ServiceError::Failed {
                program: self.program.clone(),
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/sample/systemctl/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("test value")
    }

    #[test]
    fn unit_names_get_the_service_suffix() {
        assert_eq!(unit_name("nginx"), "nginx.service");
        assert_eq!(unit_name("php*-fpm"), "php*-fpm.service");
        assert_eq!(unit_name("php8.2-fpm"), "php8.2-fpm.service");
        assert_eq!(unit_name("backup.timer"), "backup.timer");
    }

    #[test]
    fn show_blocks_with_unknown_values() {
        let re = Regex::new(r"^php-fpm@(?P<site>.+)\.service$").expect("parses");
        let s = parse_show(&fixture("show.txt"), 42, Some(&re));
        assert_eq!(s.len(), 4, "{s:?}");
        let nginx = &s[0];
        assert_eq!(nginx.unit, "nginx.service");
        assert_eq!(
            (nginx.active_state.as_str(), nginx.sub_state.as_str()),
            ("active", "running")
        );
        assert_eq!(nginx.main_pid, 812);
        assert_eq!(nginx.memory_bytes, 24_215_552);
        assert_eq!(nginx.cpu_time_us, 5_123_456);
        assert_eq!(nginx.restarts, 0);
        assert_eq!(nginx.site, "");
        assert_eq!(nginx.ts_ms, 42);
        let fpm = &s[1];
        assert_eq!(fpm.unit, "php-fpm@a.example.service");
        assert_eq!(fpm.site, "a.example");
        assert_eq!(fpm.restarts, 3);
        let failed = &s[2];
        assert_eq!(
            (failed.active_state.as_str(), failed.sub_state.as_str()),
            ("failed", "failed")
        );
        assert_eq!(
            (failed.main_pid, failed.memory_bytes, failed.cpu_time_us),
            (0, 0, 0)
        );
        // An older systemd says "infinity" as 2^64-1.
        let old = &s[3];
        assert_eq!(old.unit, "missing.service");
        assert_eq!((old.memory_bytes, old.cpu_time_us), (0, 0));
        assert!(parse_show("", 1, None).is_empty());
    }

    #[test]
    fn list_units_first_column() {
        assert_eq!(
            parse_list_units(&fixture("list-units.txt")),
            [
                "php-fpm@a.example.service",
                "php-fpm@b.example.service",
                "php8.2-fpm.service"
            ]
        );
    }

    #[test]
    fn this_machine_has_no_systemd_running() {
        assert!(!systemd_running(Path::new(
            "/nonexistent/run/systemd/system"
        )));
    }

    #[tokio::test]
    async fn resolves_globs_then_shows_through_the_program() {
        let dir = tempfile::tempdir().expect("fixture files");
        let fx = format!(
            "{}/tests/fixtures/sample/systemctl",
            env!("CARGO_MANIFEST_DIR")
        );
        let script = dir.path().join("systemctl");
        let log = dir.path().join("args");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\ncase \"$1\" in\n  list-units) cat {fx}/list-units.txt ;;\n  show) cat {fx}/show.txt ;;\nesac\n",
                log = log.display()
            ),
        )
        .expect("test value");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("fixture files");
        let s = ServiceSampler::with_program(
            &script.to_string_lossy(),
            &["nginx".into(), "php*-fpm".into()],
            None,
            Duration::from_secs(30),
        );
        let states = s.tick(1).await.expect("tick");
        assert_eq!(states.len(), 4);
        let args = std::fs::read_to_string(&log).expect("fixture files");
        let lines: Vec<&str> = args.lines().collect();
        assert_eq!(
            lines,
            [
                "list-units --all --plain --no-legend --full -- php*-fpm.service",
                "show --property=Id,ActiveState,SubState,MainPID,MemoryCurrent,CPUUsageNSec,NRestarts -- nginx.service php-fpm@a.example.service php-fpm@b.example.service php8.2-fpm.service",
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_systemctl_is_an_error_with_its_stderr() {
        let s =
            ServiceSampler::with_program("false", &["nginx".into()], None, Duration::from_secs(30));
        let err = s.tick(1).await.expect_err("tick");
        assert!(
            matches!(
                err,
                ServiceError::Failed {
                    command: "show",
                    ..
                }
            ),
            "{err}"
        );
        let s = ServiceSampler::with_program(
            "/nonexistent/systemctl",
            &["nginx".into()],
            None,
            Duration::from_secs(30),
        );
        assert!(matches!(s.tick(1).await, Err(ServiceError::Spawn { .. })));
    }
}
