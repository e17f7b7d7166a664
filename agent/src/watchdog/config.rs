//! `[watchdog]`: the local apps the agent watches and how it brings them back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Shortest check interval accepted (10ms, so tests run in milliseconds;
/// a real app wants seconds).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest duration accepted for any watchdog setting (one day): a larger
/// value is almost certainly a unit mistake.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `[watchdog]`. Default: no apps, and the watchdog does not run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// The watched apps (`[[watchdog.apps]]`). Default none.
    pub apps: Vec<AppConfig>,
    /// Tokens of the watchdog's admin API on the agent's HTTP listener
    /// (`metrics_listen`): `GET /watchdog/apps` takes any of them,
    /// `POST /watchdog/apps/<name>/rearm` an `admin` one. Same format as
    /// the collector's and alerter's `api.tokens`
    /// (`{ name, sha256, role, sites }`). Default none: both answer 403.
    pub admin_tokens: Vec<livehead_common::roles::RoleToken>,
}

/// One watched app: its checks (all must pass), and the ordered recovery
/// steps run when they keep failing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Unique name, used in events and logs. Required.
    pub name: String,
    /// Time between two checks. Default 60s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Process name that must be running, matched against `/proc/*/comm`
    /// or the basename of the command line's first word. Default unset.
    pub process: Option<String>,
    /// File holding the pid of a process that must be alive (not a
    /// zombie). Default unset.
    pub pidfile: Option<PathBuf>,
    /// `host:port` that must accept a TCP connection within `tcp_timeout`.
    /// Default unset.
    pub tcp: Option<String>,
    /// Longest wait for the `tcp` connection. Default 5s.
    #[serde(with = "humantime_serde")]
    pub tcp_timeout: Duration,
    /// An `http://` URL that must answer `GET` with an expected status.
    /// Default unset.
    pub http: Option<HttpCheck>,
    /// Floor of `MemAvailable` (`/proc/meminfo`): bytes (`536870912`,
    /// `"512MiB"`) or a share of `MemTotal` (`"10%"`). Default unset.
    pub min_available_memory: Option<MemoryFloor>,
    /// Consecutive failed checks before a recovery. Default 2.
    pub failure_threshold: u32,
    /// Shortest time between the starts of two recoveries. Default 5m.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Recoveries in a row that did not bring the app back before the
    /// watchdog gives up on it (exhausted) until re-armed. Default 3.
    pub max_recoveries: u32,
    /// Wait after the recovery steps before the check that says whether
    /// the app is back. Default 10s.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Ordered recovery steps; the first one that fails or times out ends
    /// the sequence. Required (at least one).
    pub recovery: Vec<RecoveryStep>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            interval: Duration::from_secs(60),
            process: None,
            pidfile: None,
            tcp: None,
            tcp_timeout: Duration::from_secs(5),
            http: None,
            min_available_memory: None,
            failure_threshold: 2,
            cooldown: Duration::from_secs(5 * 60),
            max_recoveries: 3,
            settle: Duration::from_secs(10),
            recovery: Vec::new(),
        }
    }
}

/// One recovery command.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryStep {
    /// Program and arguments, run directly (no shell): `["systemctl",
    /// "restart", "app"]`. With `shell = true`, exactly one string, run by
    /// `sh -c`. Required.
    pub argv: Vec<String>,
    /// Longest run; past it the step's whole process group is killed.
    /// Default 60s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Run `argv[0]` with `sh -c`. Default false.
    pub shell: bool,
}

impl Default for RecoveryStep {
    fn default() -> Self {
        Self {
            argv: Vec::new(),
            timeout: Duration::from_secs(60),
            shell: false,
        }
    }
}

/// `[watchdog.apps.http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCheck {
    /// `http://host[:port]/path` (plain HTTP: the app is local). Required.
    pub url: String,
    /// Status the answer must have. Default 200.
    pub status: u16,
    /// Longest wait for the status line. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            url: String::new(),
            status: 200,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The available-memory floor: bytes, or a percentage of `MemTotal`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryFloor {
    Bytes(u64),
    Percent(f64),
}

impl<'de> Deserialize<'de> for MemoryFloor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Self::Bytes(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for MemoryFloor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || {
            format!(
                "min_available_memory {s:?}: expected bytes (\"512MiB\", 536870912) or a percentage (\"10%\")"
            )
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Self::Percent(p));
        }
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(digits);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Self::Bytes).ok_or_else(bad)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WatchdogConfigError {
    #[error("watchdog.apps: an app has no name")]
    NoName,
    #[error("watchdog.apps: two apps are named {0:?}")]
    Duplicate(String),
    #[error(
        "watchdog app {0:?} has no check: set process, pidfile, tcp, http or min_available_memory"
    )]
    NoCheck(String),
    #[error("watchdog app {0:?} has no recovery step")]
    NoRecovery(String),
    #[error("watchdog app {app:?}: recovery step {step} has an empty argv")]
    EmptyArgv { app: String, step: usize },
    #[error(
        "watchdog app {app:?}: recovery step {step} has shell = true and must then have exactly one argv string (the script), not {len}"
    )]
    ShellArgv {
        app: String,
        step: usize,
        len: usize,
    },
    #[error("watchdog app {app:?}: {field} is {value:?}, it must be between {min:?} and 24h")]
    Duration {
        app: String,
        field: String,
        value: Duration,
        min: Duration,
    },
    #[error("watchdog app {app:?}: {field} must be at least 1")]
    Zero { app: String, field: &'static str },
    #[error("watchdog app {app:?}: tcp {addr:?} is not host:port")]
    Tcp { app: String, addr: String },
    #[error("watchdog app {app:?}: http.url {url:?} must be an http:// URL with a host")]
    HttpUrl { app: String, url: String },
    #[error("watchdog app {app:?}: http.status {status} is not an HTTP status (100-599)")]
    HttpStatus { app: String, status: u16 },
}

impl WatchdogConfig {
    /// Checks every app, naming the app and the option at fault.
    pub fn validate(&self) -> Result<(), WatchdogConfigError> {
        let mut names = HashSet::new();
        for app in &self.apps {
            app.validate()?;
            if !names.insert(app.name.as_str()) {
                return Err(WatchdogConfigError::Duplicate(app.name.clone()));
            }
        }
        Ok(())
    }
}

impl AppConfig {
    fn validate(&self) -> Result<(), WatchdogConfigError> {
        let app = || self.name.clone();
        if self.name.trim().is_empty() {
            return Err(WatchdogConfigError::NoName);
        }
        if self.process.is_none()
            && self.pidfile.is_none()
            && self.tcp.is_none()
            && self.http.is_none()
            && self.min_available_memory.is_none()
        {
            return Err(WatchdogConfigError::NoCheck(app()));
        }
        let ms = Duration::from_millis;
        let mut durations = vec![
            ("interval".to_owned(), self.interval, MIN_INTERVAL),
            ("tcp_timeout".to_owned(), self.tcp_timeout, ms(1)),
            ("cooldown".to_owned(), self.cooldown, Duration::ZERO),
            ("settle".to_owned(), self.settle, Duration::ZERO),
        ];
        if let Some(http) = &self.http {
            durations.push(("http.timeout".to_owned(), http.timeout, ms(1)));
        }
        for (i, step) in self.recovery.iter().enumerate() {
            durations.push((format!("recovery[{i}].timeout"), step.timeout, ms(1)));
        }
        for (field, value, min) in durations {
            if value < min || value > MAX_DURATION {
                return Err(WatchdogConfigError::Duration {
                    app: app(),
                    field,
                    value,
                    min,
                });
            }
        }
        if self.failure_threshold == 0 {
            return Err(WatchdogConfigError::Zero {
                app: app(),
                field: "failure_threshold",
            });
        }
        if self.max_recoveries == 0 {
            return Err(WatchdogConfigError::Zero {
                app: app(),
                field: "max_recoveries",
            });
        }
        if self.recovery.is_empty() {
            return Err(WatchdogConfigError::NoRecovery(app()));
        }
        for (step, s) in self.recovery.iter().enumerate() {
            if s.argv.is_empty() || s.argv[0].trim().is_empty() {
                return Err(WatchdogConfigError::EmptyArgv { app: app(), step });
            }
            if s.shell && s.argv.len() != 1 {
                return Err(WatchdogConfigError::ShellArgv {
                    app: app(),
                    step,
                    len: s.argv.len(),
                });
            }
        }
        if let Some(addr) = &self.tcp {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(WatchdogConfigError::Tcp {
                    app: app(),
                    addr: addr.clone(),
                });
            }
        }
        if let Some(http) = &self.http {
            let uri: Option<http::Uri> = http.url.parse().ok();
            if !uri.is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some()) {
                return Err(WatchdogConfigError::HttpUrl {
                    app: app(),
                    url: http.url.clone(),
                });
            }
            if !(100..=599).contains(&http.status) {
                return Err(WatchdogConfigError::HttpStatus {
                    app: app(),
                    status: http.status,
                });
            }
        }
        Ok(())
    }
}

/// The config file can name any command the agent (often root) will run, so
/// nobody but its owner may be able to change it.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error("cannot read the permissions of the watchdog's config file {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the watchdog refuses to start: its config file {path} has mode {mode:04o}, writable by {who}; run `chmod go-w {path}`"
    )]
    Writable {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
}

/// Refuses a config file that group or others may write.
pub fn check_config_permissions(path: &Path) -> Result<(), PermissionError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| PermissionError::Stat {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "other users",
        (true, true) => "its group and other users",
    };
    Err(PermissionError::Writable {
        path: path.to_owned(),
        mode,
        who,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> WatchdogConfig {
        toml::from_str(s).expect("valid toml")
    }

    const APP: &str = r#"
[[apps]]
name = "web"
tcp = "127.0.0.1:8080"
[[apps.recovery]]
argv = ["systemctl", "restart", "web"]
"#;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(APP);
        c.validate().expect("valid");
        let a = &c.apps[0];
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!(a.failure_threshold, 2);
        assert_eq!(a.cooldown, Duration::from_secs(300));
        assert_eq!(a.max_recoveries, 3);
        assert_eq!(a.settle, Duration::from_secs(10));
        assert_eq!(a.recovery[0].timeout, Duration::from_secs(60));
        assert!(!a.recovery[0].shell);
        assert!(WatchdogConfig::default().apps.is_empty());
    }

    #[test]
    fn bad_configs_are_refused_naming_the_fault() {
        let dup = parse(&format!("{APP}{APP}"));
        assert_eq!(
            dup.validate(),
            Err(WatchdogConfigError::Duplicate("web".into()))
        );
        let empty = parse(&APP.replace(r#"["systemctl", "restart", "web"]"#, "[]"));
        assert!(matches!(
            empty.validate(),
            Err(WatchdogConfigError::EmptyArgv { step: 0, .. })
        ));
        let shell = parse(&format!("{APP}shell = true\n"));
        assert!(matches!(
            shell.validate(),
            Err(WatchdogConfigError::ShellArgv { len: 3, .. })
        ));
        let zero = parse(&APP.replace("name = \"web\"", "name = \"web\"\ninterval = \"0s\""));
        let err = zero.validate().expect_err("refused").to_string();
        assert!(err.contains("interval") && err.contains("web"), "{err}");
        let no_check = parse(&APP.replace("tcp = \"127.0.0.1:8080\"", ""));
        assert_eq!(
            no_check.validate(),
            Err(WatchdogConfigError::NoCheck("web".into()))
        );
        let https = parse(&APP.replace(
            "tcp = \"127.0.0.1:8080\"",
            "http = { url = \"https://x/\" }",
        ));
        assert!(matches!(
            https.validate(),
            Err(WatchdogConfigError::HttpUrl { .. })
        ));
        let unknown = toml::from_str::<WatchdogConfig>(&format!("{APP}restart = true\n"));
        assert!(
            unknown
                .expect_err("refused")
                .to_string()
                .contains("restart")
        );
    }

    #[test]
    fn memory_floor_is_bytes_or_a_percentage() {
        assert_eq!("10%".parse(), Ok(MemoryFloor::Percent(10.0)));
        assert_eq!("512MiB".parse(), Ok(MemoryFloor::Bytes(512 << 20)));
        assert_eq!("2048".parse(), Ok(MemoryFloor::Bytes(2048)));
        assert!("150%".parse::<MemoryFloor>().is_err());
        assert!("lots".parse::<MemoryFloor>().is_err());
        let c = parse(&APP.replace("tcp = \"127.0.0.1:8080\"", "min_available_memory = 1000"));
        assert_eq!(
            c.apps[0].min_available_memory,
            Some(MemoryFloor::Bytes(1000))
        );
    }

    #[test]
    fn a_config_file_writable_by_others_is_refused_by_name_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = check_config_permissions(&path)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("agent.toml") && err.contains("0666"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).expect("chmod");
        let err = check_config_permissions(&path)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("its group"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        check_config_permissions(&path).expect("accepted");
        let missing = check_config_permissions(&dir.path().join("none.toml"));
        assert!(
            missing
                .expect_err("refused")
                .to_string()
                .contains("none.toml")
        );
    }
}
