//! The sampler's configuration (`[sample]`).

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

/// Shortest and longest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
pub const MAX_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Kubernetes pod cgroups under the systemd cgroup driver (guaranteed pods
/// directly under `kubepods.slice`, burstable and best-effort one level down)
/// and under the cgroupfs driver.
pub const DEFAULT_POD_CGROUPS: &[&str] = &[
    "kubepods.slice/kubepods-pod*.slice",
    "kubepods.slice/kubepods-*.slice/kubepods-*-pod*.slice",
    "kubepods/pod*",
    "kubepods/*/pod*",
];

/// What the agent samples of its node, pods, sites and services. In a
/// DaemonSet the node's `/proc` and `/sys` are mounted read-only under
/// `/host`: set `proc_root = "/host/proc"`, `sys_root = "/host/sys"` and
/// `cgroup_root = "/host/sys/fs/cgroup"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// Sample at all. Default true.
    pub enabled: bool,
    /// Time between two samples of the node, pods, site processes and
    /// services; rates are per second over it. 5s to 5m. Default 10s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where procfs is mounted. Mounts are read from `<proc_root>/1/mountinfo`
    /// (the host's init, so the host's filesystems when this is the host's
    /// procfs) and, unless this is `/proc`, reached for statvfs through
    /// `<proc_root>/1/root` (which needs root with CAP_SYS_PTRACE, as
    /// node_exporter's host filesystems do). Default `/proc`.
    pub proc_root: PathBuf,
    /// Where the host's root filesystem is mounted (`/host/root` in the
    /// DaemonSet, as node_exporter's `--path.rootfs`): filesystems are
    /// measured at `<root_fs>/<mount point>`, which needs no privileges.
    /// Default unset.
    pub root_fs: Option<PathBuf>,
    /// Where sysfs is mounted (tells disks from partitions). Default `/sys`.
    pub sys_root: PathBuf,
    /// The cgroup v2 hierarchy. Default `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Directory whose subdirectories are sites, each walked for its disk
    /// use. Default unset: `sites.web_root` (and its `sites.ignore`); no site
    /// sampling when both are unset.
    pub web_root: Option<PathBuf>,
    /// Directory names under `web_root` that are not sites: `sites.ignore`,
    /// set by the agent.
    #[serde(skip)]
    pub site_ignore: Option<Regex>,
    /// Time between two walks of the web root. Default 10m.
    #[serde(with = "humantime_serde")]
    pub site_walk_interval: Duration,
    /// Entries (files, directories, links) one site's walk visits at most;
    /// past it the walk stops and its sample says `truncated`. Default 1000000.
    pub site_walk_max_files: u64,
    /// Unix user a site's processes run as, a template where `{site}` stands
    /// for the site's directory name, e.g. `"{site}"` or `"web_{site}"`.
    /// Default unset: no per-site process sampling.
    pub site_user_pattern: Option<String>,
    /// The passwd file mapping those user names to uids. Default `/etc/passwd`.
    pub passwd_path: PathBuf,
    /// Glob patterns, relative to `cgroup_root`, of the pod or container
    /// cgroups to sample. Default: the Kubernetes pod cgroups of both cgroup
    /// drivers ([`DEFAULT_POD_CGROUPS`]).
    pub pod_cgroups: Vec<String>,
    /// systemd units to report, names or globs (`nginx`, `php*-fpm`); a name
    /// without a suffix means `.service`. Default empty: no service sampling.
    pub services: Vec<String>,
    /// Regex with a named group `site` taking the site out of a unit name,
    /// e.g. `^php-fpm@(?P<site>.+)\.service$`. Default unset: no site.
    pub service_site_pattern: Option<String>,
    /// Longest wait for one filesystem's statvfs; a mount that does not
    /// answer in time (a stuck NFS server) is skipped, and not asked again
    /// until that call returns. Default 2s.
    #[serde(with = "humantime_serde")]
    pub statvfs_timeout: Duration,
    /// Longest wait for one `systemctl` call. Default 5s.
    #[serde(with = "humantime_serde")]
    pub systemctl_timeout: Duration,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            proc_root: PathBuf::from("/proc"),
            root_fs: None,
            sys_root: PathBuf::from("/sys"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            web_root: None,
            site_ignore: None,
            site_walk_interval: Duration::from_secs(10 * 60),
            site_walk_max_files: 1_000_000,
            site_user_pattern: None,
            passwd_path: PathBuf::from("/etc/passwd"),
            pod_cgroups: DEFAULT_POD_CGROUPS.iter().map(|&p| p.to_owned()).collect(),
            services: Vec::new(),
            service_site_pattern: None,
            statvfs_timeout: Duration::from_secs(2),
            systemctl_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SampleConfigError {
    #[error("sample.interval is {0:?}, it must be between 5s and 5m")]
    Interval(Duration),
    #[error("sample.{0} must be more than 0")]
    Zero(&'static str),
    #[error("sample.site_user_pattern {0:?} must contain {{site}}")]
    UserPattern(String),
    #[error("sample.pod_cgroups pattern {pattern:?} is not a valid glob: {reason}")]
    PodGlob { pattern: String, reason: String },
    #[error("sample.service_site_pattern is not a valid regex: {0}")]
    SiteRegex(String),
    #[error("sample.service_site_pattern {0:?} has no named group `site`")]
    SiteGroup(String),
    #[error("sample.services entry {0:?} is empty or starts with '-'")]
    Unit(String),
}

impl SampleConfig {
    /// Checks every bound and pattern, naming the option at fault.
    pub fn validate(&self) -> Result<(), SampleConfigError> {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return Err(SampleConfigError::Interval(self.interval));
        }
        for (name, d) in [
            ("site_walk_interval", self.site_walk_interval),
            ("statvfs_timeout", self.statvfs_timeout),
            ("systemctl_timeout", self.systemctl_timeout),
        ] {
            if d.is_zero() {
                return Err(SampleConfigError::Zero(name));
            }
        }
        if self.site_walk_max_files == 0 {
            return Err(SampleConfigError::Zero("site_walk_max_files"));
        }
        if let Some(p) = &self.site_user_pattern
            && !p.contains("{site}")
        {
            return Err(SampleConfigError::UserPattern(p.clone()));
        }
        for p in &self.pod_cgroups {
            glob::Pattern::new(p).map_err(|e| SampleConfigError::PodGlob {
                pattern: p.clone(),
                reason: e.msg.to_owned(),
            })?;
        }
        // An entry starting with '-' would reach systemctl as an option.
        if let Some(u) = self
            .services
            .iter()
            .find(|u| u.trim().is_empty() || u.starts_with('-'))
        {
            return Err(SampleConfigError::Unit(u.clone()));
        }
        self.site_regex()?;
        Ok(())
    }

    /// The compiled `service_site_pattern`.
    pub fn site_regex(&self) -> Result<Option<Regex>, SampleConfigError> {
        let Some(p) = &self.service_site_pattern else {
            return Ok(None);
        };
        let re = Regex::new(p).map_err(|e| SampleConfigError::SiteRegex(e.to_string()))?;
        if !re.capture_names().any(|n| n == Some("site")) {
            return Err(SampleConfigError::SiteGroup(p.clone()));
        }
        Ok(Some(re))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = SampleConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.services.is_empty());
    }

    #[test]
    fn interval_outside_bounds_is_refused_by_name() {
        for secs in [4, 301] {
            let c = SampleConfig {
                interval: Duration::from_secs(secs),
                ..SampleConfig::default()
            };
            let err = c.validate().expect_err("refused");
            assert!(err.to_string().contains("sample.interval"), "{err}");
        }
        for secs in [5, 300] {
            let c = SampleConfig {
                interval: Duration::from_secs(secs),
                ..SampleConfig::default()
            };
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let c = SampleConfig {
            service_site_pattern: Some("^php-(.+)$".into()),
            ..SampleConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(SampleConfigError::SiteGroup("^php-(.+)$".into()))
        );
        let c = SampleConfig {
            service_site_pattern: Some("(".into()),
            ..SampleConfig::default()
        };
        assert!(matches!(c.validate(), Err(SampleConfigError::SiteRegex(_))));
        let c = SampleConfig {
            site_user_pattern: Some("web".into()),
            ..SampleConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(SampleConfigError::UserPattern(_))
        ));
        let c = SampleConfig {
            services: vec!["--all".into()],
            ..SampleConfig::default()
        };
        assert!(matches!(c.validate(), Err(SampleConfigError::Unit(_))));
        let c = SampleConfig {
            pod_cgroups: vec!["kubepods/[".into()],
            ..SampleConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(SampleConfigError::PodGlob { .. })
        ));
    }

    #[test]
    fn parses_from_toml_with_documented_names() {
        let c: SampleConfig = toml::from_str(
            r#"
            interval = "30s"
            proc_root = "/host/proc"
            services = ["nginx", "php*-fpm"]
            service_site_pattern = '^php-fpm@(?P<site>.+)\.service$'
            "#,
        )
        .expect("test value");
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.proc_root, PathBuf::from("/host/proc"));
        assert_eq!(c.validate(), Ok(()));
        assert!(toml::from_str::<SampleConfig>("intervall = \"30s\"").is_err());
    }
}
