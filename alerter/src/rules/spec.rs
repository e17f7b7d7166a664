//! The `[[rules]]` format. One flat table per rule, its `kind` saying which
//! keys apply: a flat struct keeps toml's own errors (unknown key, bad
//! duration, wrong type) pointing at the exact line, which serde's
//! internally tagged enums would lose. [`super::check()`] then refuses keys
//! that do not apply to the rule's kind, also by line.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::Severity;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A site's probe got no answer (`error` set or status 0).
    Unreachable,
    /// A site answers a status of `statuses`.
    Status,
    /// A site's probe took longer than `latency`.
    Latency,
    /// A site's certificate expires within `days`.
    CertExpiry,
    /// A site's certificate is not trusted (expired, unknown issuer, name
    /// mismatch, self-signed, invalid).
    CertUntrusted,
    /// A site's redirect target differs from its previous answer's.
    RedirectChanged,
    /// A site redirects to another registrable domain.
    CrossDomain,
    /// A site's content check failed (the agent's `[content]` assertions).
    Content,
    /// A site down from one vantage and not another: which side broke
    /// (down inside: the pod; down elsewhere only: edge, DNS or ingress).
    Vantage,
    /// Share of failing probes over a `window`, per `group`.
    ErrorRate,
    /// Latency quantile over a `window`, per `group`.
    LatencyQuantile,
    /// A node's `cpu_busy_pct` over `warning` / `critical`.
    Cpu,
    /// A node's `mem_used_pct` over `warning` / `critical`.
    Memory,
    /// Any filesystem's `used_pct` over `warning` / `critical`.
    Disk,
    /// A systemd unit not `active`.
    ServiceDown,
    /// Every unit of a site not `active`.
    SiteServicesDown,
    /// A node that sent nothing for longer than `after`.
    Missing,
    /// A share of one node's sites failing together.
    Fleet,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Unreachable => "unreachable",
            RuleKind::Status => "status",
            RuleKind::Latency => "latency",
            RuleKind::CertExpiry => "cert_expiry",
            RuleKind::CertUntrusted => "cert_untrusted",
            RuleKind::RedirectChanged => "redirect_changed",
            RuleKind::CrossDomain => "cross_domain",
            RuleKind::Content => "content",
            RuleKind::Vantage => "vantage",
            RuleKind::ErrorRate => "error_rate",
            RuleKind::LatencyQuantile => "latency_quantile",
            RuleKind::Cpu => "cpu",
            RuleKind::Memory => "memory",
            RuleKind::Disk => "disk",
            RuleKind::ServiceDown => "service_down",
            RuleKind::SiteServicesDown => "site_services_down",
            RuleKind::Missing => "missing",
            RuleKind::Fleet => "fleet",
        }
    }

    /// Node threshold kinds have `warning`/`critical` levels instead of
    /// one `severity`, and one alert key per level.
    pub fn has_levels(self) -> bool {
        matches!(self, RuleKind::Cpu | RuleKind::Memory | RuleKind::Disk)
    }

    /// Kinds decided on `tick` (windows, silence, shares) rather than one
    /// sample at a time: consecutive-count thresholds mean nothing there.
    pub fn evaluated_on_tick(self) -> bool {
        matches!(
            self,
            RuleKind::ErrorRate | RuleKind::LatencyQuantile | RuleKind::Missing | RuleKind::Fleet
        )
    }

    /// The TWOINE defaults (warning, critical), in percent.
    pub fn default_levels(self) -> (f64, f64) {
        match self {
            RuleKind::Cpu => (70.0, 90.0),
            RuleKind::Memory => (75.0, 90.0),
            _ => (80.0, 95.0),
        }
    }

    /// The keys a rule of this kind may set besides the common ones.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            RuleKind::Unreachable
            | RuleKind::CrossDomain
            | RuleKind::RedirectChanged
            | RuleKind::CertUntrusted
            | RuleKind::Content => &["sites", "vantage"],
            RuleKind::Status => &["sites", "statuses", "vantage"],
            RuleKind::Vantage => &["sites", "statuses"],
            RuleKind::Latency => &["sites", "latency", "vantage"],
            RuleKind::CertExpiry => &["sites", "days", "vantage"],
            RuleKind::ErrorRate => &[
                "sites",
                "vantage",
                "statuses",
                "window",
                "group",
                "share",
                "min_samples",
            ],
            RuleKind::LatencyQuantile => &[
                "sites",
                "vantage",
                "latency",
                "quantile",
                "window",
                "group",
                "min_samples",
            ],
            RuleKind::Cpu | RuleKind::Memory => &["warning", "critical"],
            RuleKind::Disk => &["warning", "critical", "mountpoints", "max_listed"],
            RuleKind::ServiceDown => &["units", "sites"],
            RuleKind::SiteServicesDown => &["sites"],
            RuleKind::Missing => &["after"],
            RuleKind::Fleet => &[
                "sites",
                "statuses",
                "share",
                "min_sites",
                "max_listed",
                "vantage",
            ],
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys every rule may set (`severity` only where the kind has no levels,
/// the thresholds only where the kind is decided one sample at a time).
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "severity",
    "labels",
    "summary",
    "nodes",
    "failure_threshold",
    "success_threshold",
    "for",
    "keep_firing_for",
];

/// One entry of `statuses`: a code (`404`, `0` for no answer) or a class
/// (`"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    Code(u32),
    Class(String),
}

impl StatusMatch {
    /// Whether a probe that answered `status` (0: no answer) matches. A
    /// class that is not `1xx`..`5xx` matches nothing (the check refuses it).
    pub fn matches(&self, status: u32) -> bool {
        match self {
            StatusMatch::Code(code) => *code == status,
            StatusMatch::Class(class) => {
                class_digit(class).is_some_and(|d| status / 100 == d && status != 0)
            }
        }
    }
}

/// `"5xx"` → 5.
pub(crate) fn class_digit(class: &str) -> Option<u32> {
    let bytes = class.as_bytes();
    match bytes {
        [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(u32::from(d - b'0')),
        _ => None,
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(code) => write!(f, "{code}"),
            StatusMatch::Class(class) => f.write_str(class),
        }
    }
}

/// What an aggregate rule groups probes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// One window per node (the agent that sent the probes).
    #[default]
    Node,
    /// The same as `node`: a record's agent is its node.
    Agent,
    /// One window for every probe.
    Fleet,
}

/// One `[[rules]]` table. Keys a kind does not use are refused by the
/// check; the defaults below apply where the kind uses the key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The alert's name (`alertname`); unique in the file. Required.
    pub name: String,
    /// What the rule watches. Required.
    pub kind: RuleKind,
    /// Required, except for `cpu`, `memory` and `disk` (they have levels).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// `cpu`/`memory`/`disk`: the warning level in percent. Default: 70
    /// (cpu), 75 (memory), 80 (disk), unless only `critical` is set.
    #[serde(default)]
    pub warning: Option<f64>,
    /// `cpu`/`memory`/`disk`: the critical level in percent. Default: 90
    /// (cpu, memory), 95 (disk), unless only `warning` is set.
    #[serde(default)]
    pub critical: Option<f64>,
    /// Labels added to the alert (routing, inhibition). Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One line with `{placeholders}` (see the README). Default: one per kind.
    #[serde(default)]
    pub summary: Option<String>,
    /// Site globs the rule applies to. Default: every site.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Probe kinds but `vantage`: the vantage whose probes the rule reads
    /// (the agents' `vantage` option). Default `inside`, so an outside
    /// prober does not double every site alert.
    #[serde(default)]
    pub vantage: Option<String>,
    /// Node (agent) globs the rule applies to. Default: every node.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// `service_down`: unit globs. Default: every unit.
    #[serde(default)]
    pub units: Vec<String>,
    /// `disk`: mountpoint globs. Default: every filesystem.
    #[serde(default)]
    pub mountpoints: Vec<String>,
    /// Statuses that count as failing: codes (`0` = no answer, error
    /// included) and classes (`"5xx"`). Required for `status`; default
    /// `["5xx", 0]` for `error_rate`, `fleet` and `vantage`.
    #[serde(default)]
    pub statuses: Vec<StatusMatch>,
    /// `latency`, `latency_quantile`: the threshold. Required.
    #[serde(default, with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// `cert_expiry`: fires when the certificate expires in fewer days.
    /// Default 14.
    #[serde(default)]
    pub days: Option<u32>,
    /// `latency_quantile`: which quantile, in (0, 1). Default 0.95.
    #[serde(default)]
    pub quantile: Option<f64>,
    /// Aggregates: the window. Default `5m`.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Aggregates: `node` (default), `agent` (the same) or `fleet`.
    #[serde(default)]
    pub group: Group,
    /// Percent, (0, 100]: `error_rate` fires above it (default 5), `fleet`
    /// at or above it (default 50).
    #[serde(default)]
    pub share: Option<f64>,
    /// Aggregates: fewer probes in the window decide nothing. Default 10.
    #[serde(default)]
    pub min_samples: Option<u32>,
    /// `fleet`: at least this many failing sites too. Default 3.
    #[serde(default)]
    pub min_sites: Option<u32>,
    /// `disk`, `fleet`: how many mountpoints/sites the text lists before
    /// "and N more". Default 20.
    #[serde(default)]
    pub max_listed: Option<u32>,
    /// `missing`: silence longer than this fires. Default `2m`.
    #[serde(default, with = "humantime_serde")]
    pub after: Option<Duration>,
    /// Consecutive failing samples before firing. Default 1.
    #[serde(default = "one")]
    pub failure_threshold: u32,
    /// Consecutive good samples before resolving. Default 1.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// How long the condition must hold before firing. Default `0s`.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// How long a firing alert stays firing once the condition stops.
    /// Default `0s`.
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
}

fn one() -> u32 {
    1
}

pub const DEFAULT_CERT_DAYS: u32 = 14;
pub const DEFAULT_QUANTILE: f64 = 0.95;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
pub const DEFAULT_ERROR_SHARE: f64 = 5.0;
pub const DEFAULT_FLEET_SHARE: f64 = 50.0;
pub const DEFAULT_MIN_SAMPLES: u32 = 10;
pub const DEFAULT_MIN_SITES: u32 = 3;
pub const DEFAULT_MAX_LISTED: u32 = 20;
pub const DEFAULT_AFTER: Duration = Duration::from_secs(120);

impl RuleSpec {
    /// A rule of `kind` with every default: handy for code and tests.
    pub fn new(name: &str, kind: RuleKind, severity: Option<Severity>) -> Self {
        RuleSpec {
            name: name.to_owned(),
            kind,
            severity,
            warning: None,
            critical: None,
            labels: BTreeMap::new(),
            summary: None,
            sites: Vec::new(),
            vantage: None,
            nodes: Vec::new(),
            units: Vec::new(),
            mountpoints: Vec::new(),
            statuses: Vec::new(),
            latency: None,
            days: None,
            quantile: None,
            window: None,
            group: Group::Node,
            share: None,
            min_samples: None,
            min_sites: None,
            max_listed: None,
            after: None,
            failure_threshold: 1,
            success_threshold: 1,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
        }
    }

    /// The levels in force, (severity, percent), warning first. Only one
    /// set: only that one; none: both defaults.
    pub fn levels(&self) -> Vec<(Severity, f64)> {
        let (warning, critical) = self.kind.default_levels();
        match (self.warning, self.critical) {
            (None, None) => vec![(Severity::Warning, warning), (Severity::Critical, critical)],
            (w, c) => [(Severity::Warning, w), (Severity::Critical, c)]
                .into_iter()
                .filter_map(|(s, v)| v.map(|v| (s, v)))
                .collect(),
        }
    }

    /// The failing statuses in force (`["5xx", 0]` when none are given).
    pub fn failing_statuses(&self) -> Vec<StatusMatch> {
        if self.statuses.is_empty() {
            vec![StatusMatch::Class("5xx".to_owned()), StatusMatch::Code(0)]
        } else {
            self.statuses.clone()
        }
    }
}
