//! The engine: records in, [`AlertChange`]s out. Pure: no I/O, no clock
//! (time comes in as `ts_ms` of the records and `now_ms` of [`Engine::tick`]).
//!
//! Per record the cost is a few hash lookups per rule: per-site state lives
//! in maps keyed by site, and only while a site is failing (except
//! `redirect_changed`, which remembers each site's last location); the
//! fleet's shares are counters updated per probe. What depends on time or
//! on several records at once (windows, silence, shares, disks, a site's
//! units) is decided on `tick`.
//!
//! Bounds: one timestamp per series (site, node, mountpoint, unit, device…)
//! for the replay check; at most 60 buckets per aggregate group; state per
//! site only while it fails; a node's mountpoints and a site's units not
//! seen for [`STALE_MS`] are forgotten.

use std::collections::{HashMap, HashSet};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use livehead_common::vantage::{INSIDE, or_inside};
use livehead_proto::v1::{CertTrust, ContentOutcome, ProbeResult, Record, record::Kind};

use super::noise::{Noise, Params, millis};
use super::spec::{
    DEFAULT_AFTER, DEFAULT_CERT_DAYS, DEFAULT_ERROR_SHARE, DEFAULT_FLEET_SHARE, DEFAULT_MAX_LISTED,
    DEFAULT_MIN_SAMPLES, DEFAULT_MIN_SITES, DEFAULT_QUANTILE, DEFAULT_WINDOW, Group, RuleKind,
    RuleSpec, StatusMatch,
};
use super::template::render;
use super::window::Window;
use crate::{AlertChange, AlertKey, Condition, Severity};

/// A mountpoint or a unit not reported for this long (behind the newest
/// sample of its node or site) is forgotten: it was unmounted or removed.
pub const STALE_MS: u64 = 10 * 60 * 1000;

const DAY_MS: u64 = 86_400_000;

/// Margin of the percentage comparisons (floating point rounding).
const EPSILON: f64 = 1e-9;

/// Evaluates rules as records arrive. See the module's documentation.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    /// Newest `ts_ms` per series: a record not newer is a replay. Sites
    /// apart, so a probe of a known site costs no allocation; a site's
    /// probes from another vantage than inside are their own series
    /// (`site@vantage`).
    sites: HashMap<String, u64>,
    series: HashMap<Series, u64>,
    /// Newest `ts_ms` of any record per agent (missing data).
    last_seen: HashMap<String, u64>,
    /// Resolutions decided outside `observe`/`tick` (reload, restore of
    /// alerts no rule makes any more), emitted at the next call.
    queued: Vec<AlertChange>,
    now_ms: u64,
}

/// A node's series: (node, kind of record, mountpoint, unit, device…).
type Series = (String, &'static str, String);

#[derive(Debug)]
struct Rule {
    spec: RuleSpec,
    p: Params,
    /// `spec.failing_statuses()`, computed once rather than per probe.
    failing: Vec<StatusMatch>,
    scope: Scope,
    state: State,
}

#[derive(Debug, Default)]
struct Scope {
    sites: Option<GlobSet>,
    nodes: Option<GlobSet>,
    units: Option<GlobSet>,
    mounts: Option<GlobSet>,
}

fn allows(set: &Option<GlobSet>, value: &str) -> bool {
    set.as_ref().is_none_or(|set| set.is_match(value))
}

impl Scope {
    fn new(spec: &RuleSpec) -> Self {
        Scope {
            // Host names are case-insensitive.
            sites: globs(&spec.sites, true),
            nodes: globs(&spec.nodes, false),
            units: globs(&spec.units, false),
            mounts: globs(&spec.mountpoints, false),
        }
    }
}

fn globs(patterns: &[String], case_insensitive: bool) -> Option<GlobSet> {
    if patterns.is_empty() {
        return None;
    }
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        match GlobBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .literal_separator(false)
            .build()
        {
            Ok(glob) => {
                set.add(glob);
            }
            // The check refuses bad globs; one slipping through matches nothing.
            Err(error) => tracing::warn!(%pattern, %error, "glob ignored"),
        }
    }
    set.build().ok()
}

#[derive(Debug)]
enum State {
    Site(HashMap<String, SiteTrack>),
    Window(HashMap<String, WindowTrack>),
    Level(HashMap<String, Vec<Noise>>, HashMap<String, f64>),
    Disk(HashMap<String, DiskTrack>, HashSet<String>),
    Service(HashMap<(String, String), ServiceTrack>),
    SiteServices(
        HashMap<(String, String), UnitsTrack>,
        HashSet<(String, String)>,
    ),
    Missing(HashMap<String, Noise>),
    Fleet(HashMap<String, FleetTrack>, HashMap<String, String>),
}

#[derive(Debug, Default)]
struct SiteTrack {
    node: String,
    noise: Noise,
    facts: Facts,
    /// `redirect_changed`: the last answered probe's location.
    location: Option<String>,
    /// `vantage`: the newest probe from each vantage.
    vantages: HashMap<String, Seen>,
    /// `vantage`: the side the active alert blames.
    side: &'static str,
}

/// `vantage`: what a vantage's newest probe said.
#[derive(Debug, Clone)]
struct Seen {
    agent: String,
    status: u32,
    error: &'static str,
    down: bool,
}

/// What the last probe said, for the summary.
#[derive(Debug, Default, Clone)]
struct Facts {
    status: u32,
    error: &'static str,
    latency_us: u64,
    location: String,
    previous_location: String,
    days: i64,
    /// Why the certificate is not trusted, in words ("" when it is, or
    /// was not checked).
    reason: &'static str,
    cert_error: String,
    content_failure: String,
    excerpt: String,
    /// `vantage`: which side broke, the vantages down and up (comma
    /// separated), and what each said (the description).
    side: &'static str,
    down: String,
    up: String,
    vantages: String,
}

#[derive(Debug)]
struct WindowTrack {
    window: Window,
    noise: Noise,
    /// Probes arrived since the track was made: a track restored after a
    /// restart decides nothing before its data comes back.
    fed: bool,
}

#[derive(Debug, Default)]
struct DiskTrack {
    /// Mountpoint → (ts_ms, used_pct).
    mounts: HashMap<String, (u64, f64)>,
    newest: u64,
    noises: Vec<Noise>,
}

#[derive(Debug, Default)]
struct ServiceTrack {
    site: String,
    state: String,
    noise: Noise,
}

#[derive(Debug, Default)]
struct UnitsTrack {
    /// Unit → (ts_ms, active).
    units: HashMap<String, (u64, bool)>,
    newest: u64,
    noise: Noise,
}

#[derive(Debug, Default)]
struct FleetTrack {
    /// Site → (failing, effective status).
    sites: HashMap<String, (bool, u32)>,
    failing: u32,
    noise: Noise,
}

impl Rule {
    fn new(spec: &RuleSpec) -> Self {
        let evaluated_on_tick = spec.kind.evaluated_on_tick();
        let (failure, success) = if evaluated_on_tick {
            (1, 1)
        } else {
            (spec.failure_threshold, spec.success_threshold)
        };
        let state = match spec.kind {
            RuleKind::ErrorRate | RuleKind::LatencyQuantile => State::Window(HashMap::new()),
            RuleKind::Cpu | RuleKind::Memory => State::Level(HashMap::new(), HashMap::new()),
            RuleKind::Disk => State::Disk(HashMap::new(), HashSet::new()),
            RuleKind::ServiceDown => State::Service(HashMap::new()),
            RuleKind::SiteServicesDown => State::SiteServices(HashMap::new(), HashSet::new()),
            RuleKind::Missing => State::Missing(HashMap::new()),
            RuleKind::Fleet => State::Fleet(HashMap::new(), HashMap::new()),
            _ => State::Site(HashMap::new()),
        };
        Rule {
            spec: spec.clone(),
            p: Params::new(failure, success, spec.for_, spec.keep_firing_for),
            failing: spec.failing_statuses(),
            scope: Scope::new(spec),
            state,
        }
    }

    fn severity(&self) -> Severity {
        self.spec.severity.unwrap_or(Severity::Error)
    }

    fn key(
        &self,
        severity: Severity,
        node: Option<&str>,
        site: Option<&str>,
        service: Option<&str>,
    ) -> AlertKey {
        AlertKey {
            rule: self.spec.name.clone(),
            severity,
            node: node.map(str::to_owned),
            site: site.map(str::to_owned),
            service: service.map(str::to_owned),
        }
    }

    /// Builds the change: the summary from the rule's template (or the
    /// kind's), the key's fields added to `vars`.
    fn change(
        &self,
        key: AlertKey,
        condition: Condition,
        at_ms: u64,
        mut vars: Vec<(&'static str, String)>,
        description: Option<String>,
    ) -> AlertChange {
        vars.push(("rule", key.rule.clone()));
        vars.push(("severity", key.severity.as_str().to_owned()));
        for (name, value) in [
            ("node", &key.node),
            ("site", &key.site),
            ("unit", &key.service),
        ] {
            if let Some(value) = value {
                vars.push((name, value.clone()));
            }
        }
        let template = self
            .spec
            .summary
            .as_deref()
            .unwrap_or_else(|| default_summary(self.spec.kind));
        AlertChange {
            summary: render(template, &vars),
            key,
            condition,
            at_ms,
            description,
            labels: self.spec.labels.clone(),
            notice: false,
        }
    }

    fn levels(&self) -> Vec<(Severity, f64)> {
        self.spec.levels()
    }
}

/// The summary of a rule that sets none.
pub fn default_summary(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Unreachable => "{site} is unreachable ({error})",
        RuleKind::Status => "{site} answers {status}",
        RuleKind::Latency => "{site} answered in {latency}",
        RuleKind::CertExpiry => "the certificate of {site} expires in {days} days",
        RuleKind::CertUntrusted => "the certificate of {site} is not trusted: {reason}",
        RuleKind::RedirectChanged => "{site} now redirects to {location} (was {previous_location})",
        RuleKind::CrossDomain => "{site} redirects to another domain: {location}",
        RuleKind::Content => "{site} fails its content check ({content_failure}): {excerpt}",
        RuleKind::Vantage => "{site}: {side} (down from {down}; up from {up})",
        RuleKind::ErrorRate => "{value} % of probes failing on {group} over {window}",
        RuleKind::LatencyQuantile => {
            "latency above {latency} on {group}: {value} % of probes slower over {window}"
        }
        RuleKind::Cpu => "CPU at {value} % on {node} (level {level} %)",
        RuleKind::Memory => "memory at {value} % on {node} (level {level} %)",
        RuleKind::Disk => "disk over {level} % on {node}: {mountpoints}",
        RuleKind::ServiceDown => "{unit} is {state} on {node}",
        RuleKind::SiteServicesDown => "every service of {site} is down on {node}",
        RuleKind::Missing => "{node} has sent nothing for {silence}",
        RuleKind::Fleet => "{count} of {total} sites failing on {node}",
    }
}

impl Engine {
    /// An engine evaluating `rules` (already checked).
    pub fn new(rules: &[RuleSpec]) -> Self {
        Engine {
            rules: rules.iter().map(Rule::new).collect(),
            sites: HashMap::new(),
            series: HashMap::new(),
            last_seen: HashMap::new(),
            queued: Vec::new(),
            now_ms: 0,
        }
    }

    /// New rules (SIGHUP). A rule whose definition is unchanged keeps its
    /// state; the active alerts of a removed or changed rule resolve (the
    /// changes come out of the next `observe` or `tick`); new and changed
    /// rules start fresh.
    pub fn reload(&mut self, rules: &[RuleSpec]) {
        let mut old: Vec<Option<Rule>> = std::mem::take(&mut self.rules)
            .into_iter()
            .map(Some)
            .collect();
        self.rules = rules
            .iter()
            .map(|spec| {
                old.iter_mut()
                    .find(|rule| rule.as_ref().is_some_and(|rule| rule.spec == *spec))
                    .and_then(Option::take)
                    .unwrap_or_else(|| Rule::new(spec))
            })
            .collect();
        for rule in old.into_iter().flatten() {
            for (key, _) in active(&rule) {
                let mut change = rule.change(key, Condition::Resolved, 0, Vec::new(), None);
                // Without its data the rule's template would render half empty.
                change.summary = format!("{}: rule removed or changed", rule.spec.name);
                self.queued.push(change);
            }
        }
    }

    /// After a restart: the lifecycle knew `key` as `condition` since
    /// `since_ms`. The engine carries on from there (no second `Firing`;
    /// `Resolved` when the data recovers). An alert no current rule makes
    /// resolves at the next call.
    pub fn restore(&mut self, key: &AlertKey, condition: Condition, since_ms: u64) {
        if condition == Condition::Resolved {
            return;
        }
        let restored = self
            .rules
            .iter_mut()
            .filter(|rule| rule.spec.name == key.rule)
            .any(|rule| restore(rule, key, condition, since_ms));
        if !restored {
            let change = AlertChange {
                key: key.clone(),
                condition: Condition::Resolved,
                at_ms: 0,
                summary: format!("{}: rule removed or changed", key.rule),
                description: None,
                labels: Default::default(),
                notice: false,
            };
            self.queued.push(change);
        }
    }

    /// Every alert the rules hold pending or firing.
    pub fn active_alerts(&self) -> Vec<(AlertKey, Condition)> {
        self.rules.iter().flat_map(active).collect()
    }

    fn flush(&mut self, at_ms: u64, out: &mut Vec<AlertChange>) {
        for mut change in self.queued.drain(..) {
            change.at_ms = at_ms;
            out.push(change);
        }
    }

    /// One record from `agent` (its node). A record not newer than the
    /// last one of the same series is a replay and ignored.
    pub fn observe(&mut self, agent: &str, record: &Record, out: &mut Vec<AlertChange>) {
        let Some(kind) = &record.kind else { return };
        let Some((series, ts_ms)) = series_of(kind) else {
            return;
        };
        if !self.queued.is_empty() {
            self.flush(self.now_ms.max(ts_ms), out);
        }
        newest(&mut self.last_seen, agent, ts_ms);
        let fresh = match series {
            SeriesOf::Site(site, "" | INSIDE) => newest(&mut self.sites, site, ts_ms),
            SeriesOf::Site(site, vantage) => {
                newest(&mut self.sites, &format!("{site}@{vantage}"), ts_ms)
            }
            SeriesOf::Node(what, name) => {
                let key = (agent.to_owned(), what, name.to_owned());
                newest(&mut self.series, &key, ts_ms)
            }
        };
        if !fresh {
            return;
        }
        for rule in &mut self.rules {
            if !allows(&rule.scope.nodes, agent) {
                continue;
            }
            match kind {
                Kind::Probe(probe) => observe_probe(rule, agent, probe, out),
                Kind::Node(sample) => observe_node(rule, agent, sample, out),
                Kind::Filesystem(fs) => observe_filesystem(rule, agent, fs),
                Kind::Service(service) => observe_service(rule, agent, service, out),
                _ => {}
            }
        }
    }

    /// Time passed: `for` and `keep_firing_for`, windows, missing data,
    /// and what several records decide together (disks, a site's units,
    /// fleet shares). Call it every 250 ms to 1 s and after each batch.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<AlertChange>) {
        self.now_ms = now_ms;
        self.flush(now_ms, out);
        for rule in &mut self.rules {
            tick_rule(rule, now_ms, &self.last_seen, out);
        }
    }
}

/// Records `ts_ms` as the newest of `key` in `map`; false when it is not
/// newer than what was there.
fn newest<K, Q>(map: &mut HashMap<K, u64>, key: &Q, ts_ms: u64) -> bool
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    match map.get_mut(key) {
        Some(last) if *last >= ts_ms => false,
        Some(last) => {
            *last = ts_ms;
            true
        }
        None => {
            map.insert(key.to_owned(), ts_ms);
            true
        }
    }
}

/// Which series a record belongs to, borrowed from it.
enum SeriesOf<'a> {
    /// A site and the vantage of its probe.
    Site(&'a str, &'a str),
    Node(&'static str, &'a str),
}

fn series_of(kind: &Kind) -> Option<(SeriesOf<'_>, u64)> {
    let node = |what: &'static str, name, ts: u64| Some((SeriesOf::Node(what, name), ts));
    match kind {
        Kind::Probe(p) => Some((SeriesOf::Site(&p.site, &p.vantage), p.ts_ms)),
        Kind::Node(n) => node("node", "", n.ts_ms),
        Kind::Filesystem(f) => node("fs", &f.mountpoint, f.ts_ms),
        Kind::Disk(d) => node("disk", &d.device, d.ts_ms),
        Kind::Interface(i) => node("if", &i.interface, i.ts_ms),
        Kind::Pod(p) => node("pod", &p.pod, p.ts_ms),
        Kind::SiteDisk(s) => node("site_disk", &s.site, s.ts_ms),
        Kind::SiteProcess(s) => node("site_proc", &s.site, s.ts_ms),
        Kind::Service(s) => node("service", &s.unit, s.ts_ms),
        // The alerter's own records say nothing about the fleet.
        Kind::Alert(_) | Kind::Delivery(_) => None,
        // Watchdog events and heartbeats have alerts of their own.
        Kind::Watchdog(_)
        | Kind::HeartbeatCheck(_)
        | Kind::HeartbeatPing(_)
        | Kind::HeartbeatState(_) => None,
    }
}

/// The status a probe counts as: 0 when there was no answer.
fn effective_status(probe: &ProbeResult) -> u32 {
    if probe.error != 0 { 0 } else { probe.status }
}

fn failing(statuses: &[StatusMatch], probe: &ProbeResult) -> bool {
    let status = effective_status(probe);
    statuses.iter().any(|s| s.matches(status))
}

/// Whether a site rule's condition holds for this probe; `None` when the
/// probe says nothing about it (no answer for latency, redirects and
/// certificates; no certificate).
fn site_holds(spec: &RuleSpec, probe: &ProbeResult, previous: Option<&str>) -> Option<bool> {
    let answered = effective_status(probe) != 0;
    match spec.kind {
        RuleKind::Unreachable => Some(!answered),
        RuleKind::Status => Some(failing(&spec.statuses, probe)),
        RuleKind::Latency => {
            let limit = spec
                .latency
                .map_or(u64::MAX, |l| l.as_micros().try_into().unwrap_or(u64::MAX));
            answered.then_some(probe.latency_us > limit)
        }
        RuleKind::CertExpiry => {
            let days = u64::from(spec.days.unwrap_or(DEFAULT_CERT_DAYS));
            (probe.cert_expiry_ms != 0)
                .then(|| probe.cert_expiry_ms < probe.ts_ms.saturating_add(days * DAY_MS))
        }
        RuleKind::CertUntrusted => match probe.cert_trust() {
            CertTrust::Unspecified => None,
            trust => Some(trust != CertTrust::Trusted),
        },
        RuleKind::RedirectChanged => {
            answered.then(|| previous.is_some_and(|previous| previous != probe.location))
        }
        RuleKind::CrossDomain => answered.then_some(probe.cross_domain),
        // Probes without a content check (most of them: it has its own
        // cadence) say nothing either way.
        RuleKind::Content => match probe.content() {
            ContentOutcome::Failed => Some(true),
            ContentOutcome::Ok => Some(false),
            ContentOutcome::Unspecified => None,
        },
        _ => None,
    }
}

fn facts(probe: &ProbeResult, previous: Option<&str>) -> Facts {
    let days = (i128::from(probe.cert_expiry_ms) - i128::from(probe.ts_ms)) / i128::from(DAY_MS);
    Facts {
        status: effective_status(probe),
        error: probe.error().as_label(),
        latency_us: probe.latency_us,
        location: probe.location.clone(),
        previous_location: previous.unwrap_or_default().to_owned(),
        days: i64::try_from(days).unwrap_or_default(),
        content_failure: probe.content_failure.clone(),
        excerpt: probe.content_excerpt.clone(),
        reason: untrusted_reason(probe.cert_trust()),
        cert_error: probe.cert_error.clone(),
        ..Facts::default()
    }
}

/// A certificate verdict in a summary's words.
fn untrusted_reason(trust: CertTrust) -> &'static str {
    match trust {
        CertTrust::Unspecified | CertTrust::Trusted => "",
        CertTrust::Expired => "expired",
        CertTrust::UnknownIssuer => "unknown issuer",
        CertTrust::NameMismatch => "name mismatch",
        CertTrust::SelfSigned => "self-signed",
        CertTrust::Invalid => "invalid",
    }
}

fn site_vars(facts: &Facts) -> Vec<(&'static str, String)> {
    let error = if facts.error.is_empty() {
        "no answer"
    } else {
        facts.error
    };
    vec![
        ("status", facts.status.to_string()),
        ("error", error.to_owned()),
        ("latency", fmt_us(facts.latency_us)),
        ("location", facts.location.clone()),
        ("previous_location", facts.previous_location.clone()),
        ("days", facts.days.to_string()),
        ("reason", facts.reason.to_owned()),
        ("cert_error", facts.cert_error.clone()),
        ("content_failure", facts.content_failure.clone()),
        ("excerpt", facts.excerpt.clone()),
        ("side", facts.side.to_owned()),
        ("down", facts.down.clone()),
        ("up", facts.up.clone()),
    ]
}

/// `250ms`, `1.5s`.
fn fmt_us(us: u64) -> String {
    if us < 1_000_000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

fn fmt_pct(value: f64) -> String {
    format!("{value:.1}")
}

fn observe_probe(rule: &mut Rule, agent: &str, probe: &ProbeResult, out: &mut Vec<AlertChange>) {
    if !allows(&rule.scope.sites, &probe.site) {
        return;
    }
    let wanted = rule.spec.vantage.as_deref().unwrap_or(INSIDE);
    if rule.spec.kind != RuleKind::Vantage && or_inside(&probe.vantage) != wanted {
        return;
    }
    match rule.spec.kind {
        RuleKind::Vantage => observe_vantage(rule, agent, probe, out),
        RuleKind::ErrorRate | RuleKind::LatencyQuantile => observe_window(rule, agent, probe),
        RuleKind::Fleet => observe_fleet(rule, agent, probe),
        _ => observe_site(rule, agent, probe, out),
    }
}

fn observe_site(rule: &mut Rule, agent: &str, probe: &ProbeResult, out: &mut Vec<AlertChange>) {
    let remembers_location = rule.spec.kind == RuleKind::RedirectChanged;
    let State::Site(sites) = &mut rule.state else {
        return;
    };
    let previous = sites.get(&probe.site).and_then(|t| t.location.as_deref());
    let Some(holds) = site_holds(&rule.spec, probe, previous) else {
        return;
    };
    // Healthy sites cost no state (but `redirect_changed` remembers them).
    if !holds && !remembers_location && !sites.contains_key(&probe.site) {
        return;
    }
    let facts = facts(probe, previous);
    if !sites.contains_key(&probe.site) {
        let track = SiteTrack {
            node: agent.to_owned(),
            ..SiteTrack::default()
        };
        sites.insert(probe.site.clone(), track);
    }
    let Some(track) = sites.get_mut(&probe.site) else {
        return;
    };
    let mut changes = Vec::new();
    if track.node != agent {
        // The site moved to another node: its alert there is over.
        if track.noise.active() {
            changes.push((track.node.clone(), Condition::Resolved, track.facts.clone()));
        }
        track.noise = Noise::default();
        track.node = agent.to_owned();
    }
    if let Some(condition) = track.noise.sample(&rule.p, holds, probe.ts_ms) {
        changes.push((agent.to_owned(), condition, facts.clone()));
    }
    track.facts = facts;
    if remembers_location && effective_status(probe) != 0 {
        track.location = Some(probe.location.clone());
    }
    if !remembers_location && track.noise.idle() {
        sites.remove(&probe.site);
    }
    for (node, condition, facts) in changes {
        let key = rule.key(rule.severity(), Some(&node), Some(&probe.site), None);
        // The verifier's own words, for whoever renews the certificate.
        let description = (rule.spec.kind == RuleKind::CertUntrusted
            && !facts.cert_error.is_empty())
        .then(|| facts.cert_error.clone());
        out.push(rule.change(key, condition, probe.ts_ms, site_vars(&facts), description));
    }
}

/// `vantage`: the side blamed when the inside vantage is down (whatever
/// the others say), and when only other vantages are.
const POD: &str = "the pod";
const EDGE: &str = "edge, DNS or ingress";

/// `vantage`: the side as the alert's `service` field (and label), so that
/// each side is an alert of its own (the blame moving is a new alert) and
/// routes can send each to its team.
fn side_tag(side: &str) -> Option<&'static str> {
    match side {
        POD => Some("pod"),
        EDGE => Some("edge"),
        _ => None,
    }
}

fn side_of_tag(tag: &str) -> Option<&'static str> {
    match tag {
        "pod" => Some(POD),
        "edge" => Some(EDGE),
        _ => None,
    }
}

/// `vantage`: the newest probe of each vantage of a site compared. The
/// inside vantage and at least one other must have been heard from:
/// without them nothing is decided (an inside-only failure is the other
/// rules', an outside-only one theirs with `vantage = "outside"`).
fn observe_vantage(rule: &mut Rule, agent: &str, probe: &ProbeResult, out: &mut Vec<AlertChange>) {
    let down = failing(&rule.failing, probe);
    let State::Site(sites) = &mut rule.state else {
        return;
    };
    let track = sites.entry(probe.site.clone()).or_default();
    let seen = Seen {
        agent: agent.to_owned(),
        status: effective_status(probe),
        error: probe.error().as_label(),
        down,
    };
    track
        .vantages
        .insert(or_inside(&probe.vantage).to_owned(), seen);
    // Nothing to compare: a site probed from inside only is the other
    // rules' (which would fire on the same probes).
    let Some(inside) = track
        .vantages
        .get(INSIDE)
        .filter(|_| track.vantages.len() > 1)
    else {
        return;
    };
    let facts = vantage_facts(&track.vantages);
    let side = match (inside.down, facts.down.is_empty()) {
        (true, _) => POD,
        (false, false) => EDGE,
        (false, true) => "",
    };
    let node = inside.agent.clone();
    let mut changes = Vec::new();
    // The other side broke: the alert blaming the first one is over, and
    // the new one is news.
    if track.noise.active() && !side.is_empty() && side != track.side {
        changes.push((track.node.clone(), Condition::Resolved, track.facts.clone()));
        track.noise = Noise::default();
    }
    if track.noise.idle() {
        track.node = node;
    }
    if let Some(condition) = track.noise.sample(&rule.p, !side.is_empty(), probe.ts_ms) {
        // A resolution names the side that recovered.
        let blamed = if side.is_empty() { track.side } else { side };
        let shown = Facts {
            side: blamed,
            ..facts.clone()
        };
        changes.push((track.node.clone(), condition, shown));
    }
    if !side.is_empty() {
        track.side = side;
    }
    track.facts = Facts { side, ..facts };
    for (node, condition, facts) in changes {
        let tag = side_tag(facts.side);
        let key = rule.key(rule.severity(), Some(&node), Some(&probe.site), tag);
        let description = Some(facts.vantages.clone());
        out.push(rule.change(key, condition, probe.ts_ms, site_vars(&facts), description));
    }
}

/// The vantages down and up, in name order, and what each said.
fn vantage_facts(vantages: &HashMap<String, Seen>) -> Facts {
    let mut names: Vec<&String> = vantages.keys().collect();
    names.sort();
    let list = |down: bool| {
        let picked: Vec<&str> = names
            .iter()
            .filter(|n| vantages[n.as_str()].down == down)
            .map(|n| n.as_str())
            .collect();
        if picked.is_empty() {
            "none".to_owned()
        } else {
            picked.join(", ")
        }
    };
    let said: Vec<String> = names
        .iter()
        .map(|name| {
            let seen = &vantages[name.as_str()];
            let answer = match (seen.status, seen.error) {
                (0, "") => "no answer".to_owned(),
                (0, error) => format!("no answer ({error})"),
                (status, _) => status.to_string(),
            };
            format!("{name}: {answer} from {}", seen.agent)
        })
        .collect();
    let down = list(true);
    Facts {
        down: if down == "none" { String::new() } else { down },
        up: list(false),
        vantages: said.join("; "),
        ..Facts::default()
    }
}

fn group_of(rule: &Rule, agent: &str) -> String {
    match rule.spec.group {
        Group::Node | Group::Agent => agent.to_owned(),
        Group::Fleet => String::new(),
    }
}

fn observe_window(rule: &mut Rule, agent: &str, probe: &ProbeResult) {
    let group = group_of(rule, agent);
    let window_ms = millis(rule.spec.window.unwrap_or(DEFAULT_WINDOW));
    let bad = if rule.spec.kind == RuleKind::ErrorRate {
        failing(&rule.failing, probe)
    } else if effective_status(probe) == 0 {
        // A probe without an answer has no latency worth ranking.
        return;
    } else {
        let limit = rule
            .spec
            .latency
            .map_or(u64::MAX, |l| millis(l).saturating_mul(1000));
        probe.latency_us > limit
    };
    let State::Window(groups) = &mut rule.state else {
        return;
    };
    let track = groups.entry(group).or_insert_with(|| WindowTrack {
        window: Window::new(window_ms),
        noise: Noise::default(),
        fed: false,
    });
    track.window.add(probe.ts_ms, bad);
    track.fed = true;
}

fn observe_fleet(rule: &mut Rule, agent: &str, probe: &ProbeResult) {
    let is_failing = failing(&rule.failing, probe);
    let status = effective_status(probe);
    let State::Fleet(nodes, site_node) = &mut rule.state else {
        return;
    };
    if let Some(old) = site_node.get(&probe.site).filter(|old| *old != agent) {
        if let Some(track) = nodes.get_mut(old) {
            if let Some((true, _)) = track.sites.remove(&probe.site) {
                track.failing -= 1;
            }
        }
    }
    site_node.insert(probe.site.clone(), agent.to_owned());
    let track = nodes.entry(agent.to_owned()).or_default();
    let was = track.sites.insert(probe.site.clone(), (is_failing, status));
    let was_failing = matches!(was, Some((true, _)));
    match (was_failing, is_failing) {
        (false, true) => track.failing += 1,
        (true, false) => track.failing -= 1,
        _ => {}
    }
}

fn observe_node(
    rule: &mut Rule,
    agent: &str,
    sample: &livehead_proto::v1::NodeSample,
    out: &mut Vec<AlertChange>,
) {
    let value = match rule.spec.kind {
        RuleKind::Cpu => sample.cpu_busy_pct,
        RuleKind::Memory => sample.mem_used_pct,
        _ => return,
    };
    let levels = rule.levels();
    let State::Level(nodes, values) = &mut rule.state else {
        return;
    };
    let noises = nodes
        .entry(agent.to_owned())
        .or_insert_with(|| vec![Noise::default(); levels.len()]);
    values.insert(agent.to_owned(), value);
    let mut changes = Vec::new();
    for ((severity, level), noise) in levels.iter().zip(noises.iter_mut()) {
        if let Some(condition) = noise.sample(&rule.p, value > *level, sample.ts_ms) {
            changes.push((*severity, *level, condition));
        }
    }
    if noises.iter().all(Noise::idle) {
        nodes.remove(agent);
        values.remove(agent);
    }
    for (severity, level, condition) in changes {
        let key = rule.key(severity, Some(agent), None, None);
        let vars = vec![("value", fmt_pct(value)), ("level", fmt_pct(level))];
        out.push(rule.change(key, condition, sample.ts_ms, vars, None));
    }
}

fn observe_filesystem(rule: &mut Rule, agent: &str, fs: &livehead_proto::v1::FilesystemSample) {
    if rule.spec.kind != RuleKind::Disk || !allows(&rule.scope.mounts, &fs.mountpoint) {
        return;
    }
    let levels = rule.levels().len();
    let State::Disk(nodes, dirty) = &mut rule.state else {
        return;
    };
    let track = nodes.entry(agent.to_owned()).or_insert_with(|| DiskTrack {
        noises: vec![Noise::default(); levels],
        ..DiskTrack::default()
    });
    track
        .mounts
        .insert(fs.mountpoint.clone(), (fs.ts_ms, fs.used_pct));
    track.newest = track.newest.max(fs.ts_ms);
    dirty.insert(agent.to_owned());
}

fn observe_service(
    rule: &mut Rule,
    agent: &str,
    service: &livehead_proto::v1::ServiceState,
    out: &mut Vec<AlertChange>,
) {
    let up = service.active_state == "active";
    match &mut rule.state {
        State::Service(units) => {
            if !allows(&rule.scope.units, &service.unit)
                || (rule.scope.sites.is_some() && !allows(&rule.scope.sites, &service.site))
            {
                return;
            }
            let id = (agent.to_owned(), service.unit.clone());
            if up && !units.contains_key(&id) {
                return;
            }
            let track = units.entry(id.clone()).or_default();
            track.site = service.site.clone();
            track.state = if service.sub_state.is_empty() {
                service.active_state.clone()
            } else {
                format!("{} ({})", service.active_state, service.sub_state)
            };
            let change = track.noise.sample(&rule.p, !up, service.ts_ms);
            let state = track.state.clone();
            if track.noise.idle() {
                units.remove(&id);
            }
            if let Some(condition) = change {
                let site = Some(service.site.as_str()).filter(|s| !s.is_empty());
                let key = rule.key(rule.severity(), Some(agent), site, Some(&service.unit));
                out.push(rule.change(key, condition, service.ts_ms, vec![("state", state)], None));
            }
        }
        State::SiteServices(groups, dirty) => {
            if service.site.is_empty() || !allows(&rule.scope.sites, &service.site) {
                return;
            }
            let id = (agent.to_owned(), service.site.clone());
            let track = groups.entry(id.clone()).or_default();
            track
                .units
                .insert(service.unit.clone(), (service.ts_ms, up));
            track.newest = track.newest.max(service.ts_ms);
            dirty.insert(id);
        }
        _ => {}
    }
}

/// A change decided on `tick`, before its summary is rendered.
struct Decided {
    key: AlertKey,
    condition: Condition,
    at_ms: u64,
    vars: Vec<(&'static str, String)>,
    description: Option<String>,
}

/// What every `tick_*` needs of its rule (borrowed apart from its state).
struct Ctx<'a> {
    spec: &'a RuleSpec,
    scope: &'a Scope,
    p: Params,
    severity: Severity,
    levels: Vec<(Severity, f64)>,
    now_ms: u64,
}

impl Ctx<'_> {
    fn decided(
        &self,
        (severity, node, site, service): (Severity, Option<&str>, Option<&str>, Option<&str>),
        (condition, at_ms): (Condition, u64),
        vars: Vec<(&'static str, String)>,
        description: Option<String>,
    ) -> Decided {
        Decided {
            key: AlertKey {
                rule: self.spec.name.clone(),
                severity,
                node: node.map(str::to_owned),
                site: site.map(str::to_owned),
                service: service.map(str::to_owned),
            },
            condition,
            at_ms,
            vars,
            description,
        }
    }
}

fn tick_rule(
    rule: &mut Rule,
    now_ms: u64,
    last_seen: &HashMap<String, u64>,
    out: &mut Vec<AlertChange>,
) {
    let ctx = Ctx {
        spec: &rule.spec,
        scope: &rule.scope,
        p: rule.p,
        severity: rule.spec.severity.unwrap_or(Severity::Error),
        levels: rule.spec.levels(),
        now_ms,
    };
    let decided = match &mut rule.state {
        State::Site(sites) => tick_sites(&ctx, sites),
        State::Window(groups) => tick_windows(&ctx, groups),
        State::Level(nodes, values) => tick_levels(&ctx, nodes, values),
        State::Disk(nodes, dirty) => tick_disks(&ctx, nodes, dirty),
        State::Service(units) => tick_services(&ctx, units),
        State::SiteServices(groups, dirty) => tick_site_services(&ctx, groups, dirty),
        State::Missing(nodes) => tick_missing(&ctx, nodes, last_seen),
        State::Fleet(nodes, _) => tick_fleet(&ctx, nodes),
    };
    for d in decided {
        out.push(rule.change(d.key, d.condition, d.at_ms, d.vars, d.description));
    }
}

/// Only time changes a site's state here: `for`, `keep_firing_for`.
fn tick_sites(ctx: &Ctx<'_>, sites: &mut HashMap<String, SiteTrack>) -> Vec<Decided> {
    let mut out = Vec::new();
    if !ctx.p.timed() {
        return out;
    }
    for (site, track) in sites.iter_mut() {
        if let Some(c) = track.noise.tick(&ctx.p, ctx.now_ms) {
            let key = (
                ctx.severity,
                Some(track.node.as_str()),
                Some(site.as_str()),
                None,
            );
            out.push(ctx.decided(key, (c, ctx.now_ms), site_vars(&track.facts), None));
        }
    }
    let keep = ctx.spec.kind == RuleKind::RedirectChanged;
    sites.retain(|_, t| keep || !t.noise.idle());
    out
}

fn tick_windows(ctx: &Ctx<'_>, groups: &mut HashMap<String, WindowTrack>) -> Vec<Decided> {
    let mut out = Vec::new();
    for (group, track) in groups.iter_mut() {
        if !track.fed {
            continue;
        }
        track.window.expire(ctx.now_ms);
        let counts = track.window.counts();
        let holds = window_holds(ctx.spec, counts);
        if let Some(c) = track.noise.sample(&ctx.p, holds, ctx.now_ms) {
            let node = (!group.is_empty()).then_some(group.as_str());
            let vars = window_vars(ctx.spec, group, counts);
            out.push(ctx.decided(
                (ctx.severity, node, None, None),
                (c, ctx.now_ms),
                vars,
                None,
            ));
        }
    }
    groups.retain(|_, t| !(t.window.is_empty() && t.noise.idle()));
    out
}

fn tick_levels(
    ctx: &Ctx<'_>,
    nodes: &mut HashMap<String, Vec<Noise>>,
    values: &HashMap<String, f64>,
) -> Vec<Decided> {
    let mut out = Vec::new();
    if !ctx.p.timed() {
        return out;
    }
    for (node, noises) in nodes.iter_mut() {
        let value = values.get(node).copied().unwrap_or_default();
        for ((severity, level), noise) in ctx.levels.iter().zip(noises.iter_mut()) {
            if let Some(c) = noise.tick(&ctx.p, ctx.now_ms) {
                let vars = vec![("value", fmt_pct(value)), ("level", fmt_pct(*level))];
                let key = (*severity, Some(node.as_str()), None, None);
                out.push(ctx.decided(key, (c, ctx.now_ms), vars, None));
            }
        }
    }
    out
}

/// Nodes with new filesystem samples are evaluated once per tick (one
/// round of samples counts once toward the thresholds).
fn tick_disks(
    ctx: &Ctx<'_>,
    nodes: &mut HashMap<String, DiskTrack>,
    dirty: &mut HashSet<String>,
) -> Vec<Decided> {
    let mut out = Vec::new();
    let max_listed = ctx.spec.max_listed.unwrap_or(DEFAULT_MAX_LISTED) as usize;
    for (node, track) in nodes.iter_mut() {
        let evaluate = dirty.remove(node);
        if evaluate {
            let newest = track.newest;
            track
                .mounts
                .retain(|_, (ts, _)| ts.saturating_add(STALE_MS) >= newest);
        }
        for ((severity, level), noise) in ctx.levels.iter().zip(track.noises.iter_mut()) {
            let change = if evaluate {
                let holds = track.mounts.values().any(|(_, pct)| pct > level);
                noise
                    .sample(&ctx.p, holds, track.newest)
                    .map(|c| (c, track.newest))
            } else {
                noise.tick(&ctx.p, ctx.now_ms).map(|c| (c, ctx.now_ms))
            };
            if let Some(change) = change {
                let (list, description) = mounts_over(&track.mounts, *level, max_listed);
                let vars = vec![("level", fmt_pct(*level)), ("mountpoints", list)];
                let key = (*severity, Some(node.as_str()), None, None);
                out.push(ctx.decided(key, change, vars, description));
            }
        }
    }
    out
}

fn tick_services(
    ctx: &Ctx<'_>,
    units: &mut HashMap<(String, String), ServiceTrack>,
) -> Vec<Decided> {
    let mut out = Vec::new();
    if !ctx.p.timed() {
        return out;
    }
    for ((node, unit), track) in units.iter_mut() {
        if let Some(c) = track.noise.tick(&ctx.p, ctx.now_ms) {
            let site = Some(track.site.as_str()).filter(|s| !s.is_empty());
            let vars = vec![("state", track.state.clone())];
            let key = (ctx.severity, Some(node.as_str()), site, Some(unit.as_str()));
            out.push(ctx.decided(key, (c, ctx.now_ms), vars, None));
        }
    }
    units.retain(|_, t| !t.noise.idle());
    out
}

/// Like disks: a site's units are evaluated together, once per tick.
fn tick_site_services(
    ctx: &Ctx<'_>,
    groups: &mut HashMap<(String, String), UnitsTrack>,
    dirty: &mut HashSet<(String, String)>,
) -> Vec<Decided> {
    let mut out = Vec::new();
    for (id, track) in groups.iter_mut() {
        let change = if dirty.remove(id) {
            let newest = track.newest;
            track
                .units
                .retain(|_, (ts, _)| ts.saturating_add(STALE_MS) >= newest);
            let holds = !track.units.is_empty() && track.units.values().all(|(_, up)| !up);
            track
                .noise
                .sample(&ctx.p, holds, newest)
                .map(|c| (c, newest))
        } else {
            track
                .noise
                .tick(&ctx.p, ctx.now_ms)
                .map(|c| (c, ctx.now_ms))
        };
        if let Some(change) = change {
            let mut units: Vec<&str> = track.units.keys().map(String::as_str).collect();
            units.sort_unstable();
            let description = Some(format!("units: {}", units.join(", ")));
            let key = (ctx.severity, Some(id.0.as_str()), Some(id.1.as_str()), None);
            out.push(ctx.decided(key, change, Vec::new(), description));
        }
    }
    out
}

fn tick_missing(
    ctx: &Ctx<'_>,
    nodes: &mut HashMap<String, Noise>,
    last_seen: &HashMap<String, u64>,
) -> Vec<Decided> {
    let mut out = Vec::new();
    let after = millis(ctx.spec.after.unwrap_or(DEFAULT_AFTER));
    for (node, last) in last_seen {
        if !allows(&ctx.scope.nodes, node) {
            continue;
        }
        let silence = ctx.now_ms.saturating_sub(*last);
        let holds = silence > after;
        if !holds && !nodes.contains_key(node) {
            continue;
        }
        let noise = nodes.entry(node.clone()).or_default();
        if let Some(c) = noise.sample(&ctx.p, holds, ctx.now_ms) {
            let silence = std::time::Duration::from_secs(silence / 1000);
            let vars = vec![("silence", humantime::format_duration(silence).to_string())];
            let key = (ctx.severity, Some(node.as_str()), None, None);
            out.push(ctx.decided(key, (c, ctx.now_ms), vars, None));
        }
    }
    nodes.retain(|_, noise| !noise.idle());
    out
}

fn tick_fleet(ctx: &Ctx<'_>, nodes: &mut HashMap<String, FleetTrack>) -> Vec<Decided> {
    let mut out = Vec::new();
    let share = ctx.spec.share.unwrap_or(DEFAULT_FLEET_SHARE);
    let min_sites = u64::from(ctx.spec.min_sites.unwrap_or(DEFAULT_MIN_SITES));
    for (node, track) in nodes.iter_mut() {
        let total = track.sites.len() as u64;
        if total == 0 {
            // Restored after a restart, its sites not reported yet.
            continue;
        }
        let failing = u64::from(track.failing);
        let holds = failing >= min_sites && percent(failing, total) + EPSILON >= share;
        if let Some(c) = track.noise.sample(&ctx.p, holds, ctx.now_ms) {
            let vars = vec![
                ("count", failing.to_string()),
                ("total", total.to_string()),
                ("value", fmt_pct(percent(failing, total))),
            ];
            let description = (c != Condition::Resolved).then(|| fleet_list(track, ctx.spec));
            let key = (ctx.severity, Some(node.as_str()), None, None);
            out.push(ctx.decided(key, (c, ctx.now_ms), vars, description));
        }
    }
    out
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

fn window_holds(spec: &RuleSpec, (total, bad): (u64, u64)) -> bool {
    let min = u64::from(spec.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES));
    if total == 0 || total < min {
        return false;
    }
    let share = percent(bad, total);
    let limit = match spec.kind {
        RuleKind::ErrorRate => spec.share.unwrap_or(DEFAULT_ERROR_SHARE),
        _ => (1.0 - spec.quantile.unwrap_or(DEFAULT_QUANTILE)) * 100.0,
    };
    // (1 - 0.9) × 100 is 9.999999999999998: compare with a margin so 1
    // slow probe in 10 is not "above" 10 %.
    share > limit + EPSILON
}

fn window_vars(
    spec: &RuleSpec,
    group: &str,
    (total, bad): (u64, u64),
) -> Vec<(&'static str, String)> {
    let group = if group.is_empty() {
        "the fleet".to_owned()
    } else {
        format!("node {group}")
    };
    let window = spec.window.unwrap_or(DEFAULT_WINDOW);
    vec![
        ("group", group),
        ("window", humantime::format_duration(window).to_string()),
        ("value", fmt_pct(percent(bad, total))),
        ("count", bad.to_string()),
        ("total", total.to_string()),
        (
            "latency",
            spec.latency
                .map(|l| fmt_us(millis(l).saturating_mul(1000)))
                .unwrap_or_default(),
        ),
    ]
}

/// The mountpoints over `level`, sorted: a short list for the summary and
/// one line each for the description, both cut at `max_listed`.
fn mounts_over(
    mounts: &HashMap<String, (u64, f64)>,
    level: f64,
    max_listed: usize,
) -> (String, Option<String>) {
    let mut over: Vec<(&str, f64)> = mounts
        .iter()
        .filter(|(_, (_, pct))| *pct > level)
        .map(|(m, (_, pct))| (m.as_str(), *pct))
        .collect();
    over.sort_by(|a, b| a.0.cmp(b.0));
    let lines: Vec<String> = over
        .iter()
        .map(|(m, pct)| format!("{m} {} %", fmt_pct(*pct)))
        .collect();
    let names: Vec<&str> = over.iter().map(|(m, _)| *m).collect();
    let summary = bounded(&names, max_listed, ", ");
    let description = (!lines.is_empty()).then(|| bounded(&lines, max_listed, "\n"));
    (summary, description)
}

/// The first `max` items joined, then "and N more".
fn bounded<T: AsRef<str>>(items: &[T], max: usize, separator: &str) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(AsRef::as_ref).collect();
    let mut text = shown.join(separator);
    if items.len() > max {
        text.push_str(&format!("{separator}and {} more", items.len() - max));
    }
    text
}

/// The failing sites of a node, sorted, each with its status.
fn fleet_list(track: &FleetTrack, spec: &RuleSpec) -> String {
    let max = spec.max_listed.unwrap_or(DEFAULT_MAX_LISTED) as usize;
    let mut failing: Vec<(&str, u32)> = track
        .sites
        .iter()
        .filter(|(_, (f, _))| *f)
        .map(|(site, (_, status))| (site.as_str(), *status))
        .collect();
    failing.sort_unstable();
    let lines: Vec<String> = failing
        .iter()
        .map(|(site, status)| match status {
            0 => format!("{site} (no answer)"),
            status => format!("{site} ({status})"),
        })
        .collect();
    format!("failing sites:\n{}", bounded(&lines, max, "\n"))
}

/// The alerts a rule holds active.
fn active(rule: &Rule) -> Vec<(AlertKey, Condition)> {
    let mut out = Vec::new();
    let severity = rule.severity();
    let levels = rule.levels();
    let mut push =
        |noise: &Noise, severity, node: Option<&str>, site: Option<&str>, service: Option<&str>| {
            if let Some(condition) = noise.cond {
                out.push((rule.key(severity, node, site, service), condition));
            }
        };
    match &rule.state {
        State::Site(sites) => {
            let vantage = rule.spec.kind == RuleKind::Vantage;
            for (site, t) in sites {
                let tag = side_tag(t.side).filter(|_| vantage);
                push(&t.noise, severity, Some(&t.node), Some(site), tag);
            }
        }
        State::Window(groups) => {
            for (group, t) in groups {
                let node = (!group.is_empty()).then_some(group.as_str());
                push(&t.noise, severity, node, None, None);
            }
        }
        State::Level(nodes, _) => {
            for (node, noises) in nodes {
                for ((sev, _), noise) in levels.iter().zip(noises) {
                    push(noise, *sev, Some(node), None, None);
                }
            }
        }
        State::Disk(nodes, _) => {
            for (node, t) in nodes {
                for ((sev, _), noise) in levels.iter().zip(&t.noises) {
                    push(noise, *sev, Some(node), None, None);
                }
            }
        }
        State::Service(units) => {
            for ((node, unit), t) in units {
                let site = Some(t.site.as_str()).filter(|s| !s.is_empty());
                push(&t.noise, severity, Some(node), site, Some(unit));
            }
        }
        State::SiteServices(groups, _) => {
            for ((node, site), t) in groups {
                push(&t.noise, severity, Some(node), Some(site), None);
            }
        }
        State::Missing(nodes) => {
            for (node, noise) in nodes {
                push(noise, severity, Some(node), None, None);
            }
        }
        State::Fleet(nodes, _) => {
            for (node, t) in nodes {
                push(&t.noise, severity, Some(node), None, None);
            }
        }
    }
    out
}

/// Puts a remembered alert back into `rule`'s state; false when the key
/// is not one the rule makes.
fn restore(rule: &mut Rule, key: &AlertKey, condition: Condition, since_ms: u64) -> bool {
    let noise = Noise::restored(&rule.p, condition, since_ms);
    let level = rule.levels().iter().position(|(s, _)| *s == key.severity);
    let own_severity = rule.spec.severity == Some(key.severity);
    let node = key.node.clone();
    let site = key.site.clone();
    let service = key.service.clone();
    match (&mut rule.state, node, site, service) {
        (State::Site(sites), Some(node), Some(site), None) if own_severity => {
            let track = sites.entry(site).or_default();
            track.node = node;
            track.noise = noise;
        }
        (State::Site(sites), Some(node), Some(site), Some(tag))
            if own_severity && rule.spec.kind == RuleKind::Vantage =>
        {
            let Some(side) = side_of_tag(&tag) else {
                return false;
            };
            let track = sites.entry(site).or_default();
            track.node = node;
            track.noise = noise;
            track.side = side;
        }
        (State::Window(groups), node, None, None) if own_severity => {
            let window_ms = millis(rule.spec.window.unwrap_or(DEFAULT_WINDOW));
            let fleet = rule.spec.group == Group::Fleet;
            if fleet != node.is_none() {
                return false;
            }
            groups.insert(
                node.unwrap_or_default(),
                WindowTrack {
                    window: Window::new(window_ms),
                    noise,
                    fed: false,
                },
            );
        }
        (State::Level(nodes, _), Some(node), None, None) => {
            let (Some(level), count) = (level, rule.spec.levels().len()) else {
                return false;
            };
            nodes
                .entry(node)
                .or_insert_with(|| vec![Noise::default(); count])[level] = noise;
        }
        (State::Disk(nodes, _), Some(node), None, None) => {
            let (Some(level), count) = (level, rule.spec.levels().len()) else {
                return false;
            };
            let track = nodes.entry(node).or_insert_with(|| DiskTrack {
                noises: vec![Noise::default(); count],
                ..DiskTrack::default()
            });
            track.noises[level] = noise;
        }
        (State::Service(units), Some(node), site, Some(unit)) if own_severity => {
            let track = units.entry((node, unit)).or_default();
            track.site = site.unwrap_or_default();
            track.noise = noise;
        }
        (State::SiteServices(groups, _), Some(node), Some(site), None) if own_severity => {
            groups.entry((node, site)).or_default().noise = noise;
        }
        (State::Missing(nodes), Some(node), None, None) if own_severity => {
            nodes.insert(node, noise);
        }
        (State::Fleet(nodes, _), Some(node), None, None) if own_severity => {
            nodes.entry(node).or_default().noise = noise;
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
