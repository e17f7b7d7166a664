//! Rule unit tests, like `promtool test rules`: a TOML file next to the
//! rules gives input series (per site, node and unit, one value per
//! `interval`) and the alerts expected active at given times. The engine
//! runs on them with a simulated clock; a test passes when, at each `at`,
//! the pending and firing alerts are exactly the expected ones.
//!
//! Series are space-separated values, value `i` at time `i × interval`;
//! `_` means no sample at that step and `VxN` repeats `V` N times
//! (`"200x3 500x2"`). Location series are not expanded (URLs may contain
//! an `x`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_proto::v1::{
    CertTrust, ContentOutcome, FilesystemSample, NodeSample, ProbeError, ProbeMethod, ProbeResult,
    Record, ServiceState, record::Kind,
};
use serde::Deserialize;

use super::engine::Engine;
use super::noise::millis;
use super::spec::RuleSpec;
use crate::{AlertChange, AlertKey, Condition, RulesFile, Severity};

/// Time 0 of every test (2023-11-14), so certificate dates are plausible.
pub const BASE_MS: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;
/// Latency of a probe whose test gives none.
const DEFAULT_LATENCY_US: u64 = 100_000;

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Rules files, relative to the test file.
    rule_files: Vec<PathBuf>,
    #[serde(default)]
    tests: Vec<TestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    name: String,
    /// Time between two values of a series. Default `1m`.
    #[serde(default = "one_minute", with = "humantime_serde")]
    interval: Duration,
    #[serde(default)]
    sites: Vec<SiteSeries>,
    #[serde(default)]
    nodes: Vec<NodeSeries>,
    #[serde(default)]
    services: Vec<ServiceSeries>,
    #[serde(default)]
    expect: Vec<Expectation>,
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteSeries {
    site: String,
    node: String,
    /// Statuses; `0` = no answer (a time-out).
    values: String,
    /// Durations (`120ms`, `2s`). Default 100ms.
    #[serde(default)]
    latency: Option<String>,
    /// `Location` headers, `_` for none; not expanded.
    #[serde(default)]
    location: Option<String>,
    /// `0`/`1`.
    #[serde(default)]
    cross_domain: Option<String>,
    /// Days the certificate has left at each probe. Default: plain http.
    #[serde(default)]
    cert_days: Option<String>,
    /// The certificate's verdict at each probe (`trusted`, `expired`,
    /// `unknown_issuer`, `name_mismatch`, `self_signed`, `invalid`; `_` for
    /// not checked). Default: not checked.
    #[serde(default)]
    cert_trust: Option<String>,
    /// Content check of each probe: `ok`, `fail`, `_` for none (the
    /// default: HEAD probes between content checks).
    #[serde(default)]
    content: Option<String>,
    /// The probing agent's vantage (`outside`...). Default `inside`.
    #[serde(default)]
    vantage: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSeries {
    node: String,
    /// `cpu_busy_pct` values.
    #[serde(default)]
    cpu: Option<String>,
    /// `mem_used_pct` values.
    #[serde(default)]
    memory: Option<String>,
    /// Mountpoint → `used_pct` values.
    #[serde(default)]
    disk: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSeries {
    node: String,
    unit: String,
    #[serde(default)]
    site: String,
    /// `active_state` values (`active`, `failed`, `inactive`…).
    states: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    /// Time since the start of the test.
    #[serde(with = "humantime_serde")]
    at: Duration,
    /// Exactly the alerts pending or firing then.
    #[serde(default)]
    alerts: Vec<ExpectedAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedAlert {
    rule: String,
    /// Default: the rule's `severity` (required for level kinds).
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    site: Option<String>,
    /// The unit, for `service_down`; the side (`pod`, `edge`) for `vantage`.
    #[serde(default)]
    service: Option<String>,
    /// Default `firing`.
    #[serde(default = "firing")]
    condition: Condition,
}

fn firing() -> Condition {
    Condition::Firing
}

/// Why a test file could not run (not a failing test).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Rules(#[from] crate::FileError),
    #[error("{path}: test `{test}`: {message}")]
    Test {
        path: String,
        test: String,
        message: String,
    },
}

/// The outcome of one test: its failures, empty when it passed.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub name: String,
    pub failures: Vec<String>,
}

/// Every test of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReport {
    pub file: String,
    pub tests: Vec<TestOutcome>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.tests.iter().all(|t| t.failures.is_empty())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.tests.iter().filter(|t| !t.failures.is_empty()).count();
        for test in &self.tests {
            if test.failures.is_empty() {
                writeln!(f, "PASS {}", test.name)?;
            } else {
                writeln!(f, "FAIL {}", test.name)?;
                for failure in &test.failures {
                    writeln!(f, "  {}", failure.replace('\n', "\n  "))?;
                }
            }
        }
        writeln!(
            f,
            "{}: {} tests, {} passed, {failed} failed",
            self.file,
            self.tests.len(),
            self.tests.len() - failed
        )
    }
}

/// Runs the tests of `path` against its `rule_files`.
pub fn run_test_file(path: &Path) -> Result<TestReport, TestError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TestError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: TestFile = toml::from_str(&text).map_err(|e| TestError::Invalid {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut rules: Vec<RuleSpec> = Vec::new();
    for rule_file in &file.rule_files {
        let loaded = RulesFile::load(&dir.join(rule_file))?;
        for rule in loaded.rules {
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(TestError::Invalid {
                    path: shown,
                    message: format!("rule `{}` is defined by two rule files", rule.name),
                });
            }
            rules.push(rule);
        }
    }
    let tests = file
        .tests
        .iter()
        .map(|test| {
            run_test(&rules, test).map_err(|message| TestError::Test {
                path: shown.clone(),
                test: test.name.clone(),
                message,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TestReport { file: shown, tests })
}

/// One step's records, by agent.
type Steps = BTreeMap<u64, Vec<(String, Record)>>;

fn run_test(rules: &[RuleSpec], test: &TestSpec) -> Result<TestOutcome, String> {
    if test.interval.is_zero() {
        return Err("`interval` must be above zero".to_owned());
    }
    let interval = millis(test.interval);
    let steps = records(test, interval)?;
    let mut expected: BTreeMap<u64, Alerts> = BTreeMap::new();
    for expectation in &test.expect {
        let set = expectation
            .alerts
            .iter()
            .map(|alert| expected_key(rules, alert))
            .collect::<Result<_, _>>()?;
        expected.insert(BASE_MS + millis(expectation.at), set);
    }
    let times: BTreeSet<u64> = steps.keys().chain(expected.keys()).copied().collect();
    let mut engine = Engine::new(rules);
    let mut active: BTreeMap<AlertKey, Condition> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut out = Vec::new();
    for now in times {
        for (agent, record) in steps.get(&now).into_iter().flatten() {
            engine.observe(agent, record, &mut out);
        }
        engine.tick(now, &mut out);
        for change in out.drain(..) {
            if let Err(problem) = apply(&mut active, &change) {
                failures.push(format!("at {}: {problem}", at(now)));
            }
        }
        if let Some(want) = expected.get(&now) {
            if let Some(diff) = diff(want, &active) {
                failures.push(format!("at {}:\n{diff}", at(now)));
            }
        }
    }
    Ok(TestOutcome {
        name: test.name.clone(),
        failures,
    })
}

/// Tracks what is active; an engine change that makes no sense (a second
/// `firing`, `resolved` of nothing) is a failure of its own.
fn apply(active: &mut BTreeMap<AlertKey, Condition>, change: &AlertChange) -> Result<(), String> {
    let before = active.get(&change.key).copied();
    let sensible = matches!(
        (before, change.condition),
        (None, Condition::Pending | Condition::Firing)
            | (
                Some(Condition::Pending),
                Condition::Firing | Condition::Resolved
            )
            | (Some(Condition::Firing), Condition::Resolved)
    );
    match change.condition {
        Condition::Resolved => active.remove(&change.key),
        condition => active.insert(change.key.clone(), condition),
    };
    if sensible {
        Ok(())
    } else {
        Err(format!(
            "the engine emitted {} for {} while it was {}",
            name(change.condition),
            show(&change.key),
            before.map_or("inactive", name)
        ))
    }
}

fn name(condition: Condition) -> &'static str {
    match condition {
        Condition::Pending => "pending",
        Condition::Firing => "firing",
        Condition::Resolved => "resolved",
    }
}

fn at(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms.saturating_sub(BASE_MS))).to_string()
}

fn show(key: &AlertKey) -> String {
    let mut parts = vec![format!("severity={}", key.severity.as_str())];
    for (name, value) in [
        ("node", &key.node),
        ("site", &key.site),
        ("service", &key.service),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    }
    format!("{}{{{}}}", key.rule, parts.join(", "))
}

/// Alerts by key, with their condition.
type Alerts = BTreeMap<AlertKey, Condition>;

/// `- expected` / `+ got` lines, `None` when equal.
fn diff(want: &Alerts, got: &Alerts) -> Option<String> {
    let mut lines = Vec::new();
    for (key, condition) in want {
        if got.get(key) != Some(condition) {
            lines.push(format!("- expected {} {}", name(*condition), show(key)));
        }
    }
    for (key, condition) in got {
        if want.get(key) != Some(condition) {
            lines.push(format!("+ got      {} {}", name(*condition), show(key)));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn expected_key(
    rules: &[RuleSpec],
    alert: &ExpectedAlert,
) -> Result<(AlertKey, Condition), String> {
    let rule = rules
        .iter()
        .find(|r| r.name == alert.rule)
        .ok_or_else(|| format!("no rule named `{}` in the rule files", alert.rule))?;
    let severity = alert.severity.or(rule.severity).ok_or_else(|| {
        format!(
            "rule `{}` has levels: the expected alert needs a `severity`",
            alert.rule
        )
    })?;
    if alert.condition == Condition::Resolved {
        return Err("expected alerts are pending or firing, not resolved".to_owned());
    }
    let key = AlertKey {
        rule: alert.rule.clone(),
        severity,
        node: alert.node.clone(),
        site: alert.site.clone(),
        service: alert.service.clone(),
    };
    Ok((key, alert.condition))
}

/// Space-separated values, `VxN` repeated, `_` kept as `None`.
fn expand(series: &str, repeat: bool) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    for token in series.split_whitespace() {
        let (value, count) = match token.rsplit_once('x') {
            Some((value, n))
                if repeat
                    && !value.is_empty()
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("bad repeat count in `{token}`"))?;
                (value, n)
            }
            _ => (token, 1),
        };
        if out.len() + count > 100_000 {
            return Err("a series longer than 100000 values".to_owned());
        }
        let value = (value != "_").then(|| value.to_owned());
        out.extend(std::iter::repeat_n(value, count));
    }
    Ok(out)
}

fn parse_all<T>(
    series: Option<&str>,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<Option<T>>, String> {
    let Some(series) = series else {
        return Ok(Vec::new());
    };
    expand(series, true)?
        .into_iter()
        .map(|value| match value {
            None => Ok(None),
            Some(text) => parse(&text)
                .map(Some)
                .ok_or_else(|| format!("`{text}` is not a valid {what}")),
        })
        .collect()
}

/// A test probe with a content check of `outcome` (`None`: no check).
fn with_content(mut probe: ProbeResult, outcome: Option<ContentOutcome>) -> ProbeResult {
    let Some(outcome) = outcome else {
        return probe;
    };
    probe.method = ProbeMethod::Get as i32;
    probe.content = outcome as i32;
    if outcome == ContentOutcome::Failed {
        probe.content_failure = "contains = \"test\"".to_owned();
        probe.content_excerpt = "test page".to_owned();
    }
    probe
}

fn records(test: &TestSpec, interval: u64) -> Result<Steps, String> {
    let mut steps = Steps::new();
    let mut push = |i: usize, agent: &str, kind: Kind| {
        let ts = BASE_MS + interval * i as u64;
        steps
            .entry(ts)
            .or_default()
            .push((agent.to_owned(), Record { kind: Some(kind) }));
    };
    for s in &test.sites {
        let statuses = parse_all(Some(&s.values), "status", |t| t.parse::<u32>().ok())?;
        let latency = parse_all(s.latency.as_deref(), "latency", |t| {
            humantime::parse_duration(t).ok()
        })?;
        let cross = parse_all(s.cross_domain.as_deref(), "0/1", |t| match t {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        })?;
        let cert = parse_all(s.cert_days.as_deref(), "number of days", |t| {
            t.parse::<u64>().ok()
        })?;
        let trust = parse_all(s.cert_trust.as_deref(), "certificate verdict", |t| {
            CertTrust::CHECKED.into_iter().find(|v| v.as_label() == t)
        })?;
        let content = parse_all(s.content.as_deref(), "content (ok/fail/_)", |t| match t {
            "ok" => Some(ContentOutcome::Ok),
            "fail" => Some(ContentOutcome::Failed),
            _ => None,
        })?;
        let location = s
            .location
            .as_deref()
            .map(|l| expand(l, false))
            .transpose()?
            .unwrap_or_default();
        for (i, status) in statuses.iter().enumerate() {
            let Some(status) = *status else { continue };
            let ts = BASE_MS + interval * i as u64;
            let latency_us = latency
                .get(i)
                .copied()
                .flatten()
                .map_or(DEFAULT_LATENCY_US, |l| millis(l) * 1000);
            let probe = ProbeResult {
                site: s.site.clone(),
                status,
                error: if status == 0 {
                    ProbeError::Timeout as i32
                } else {
                    0
                },
                method: ProbeMethod::Head as i32,
                latency_us,
                location: location.get(i).cloned().flatten().unwrap_or_default(),
                cross_domain: cross.get(i).copied().flatten().unwrap_or(false),
                ts_ms: ts,
                cert_expiry_ms: cert
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or(0, |d| ts + d * DAY_MS),
                cert_trust: trust.get(i).copied().flatten().unwrap_or_default() as i32,
                vantage: s.vantage.clone(),
                ..ProbeResult::default()
            };
            let probe = with_content(probe, content.get(i).copied().flatten());
            push(i, &s.node, Kind::Probe(probe));
        }
    }
    for n in &test.nodes {
        let cpu = parse_all(n.cpu.as_deref(), "percentage", |t| t.parse::<f64>().ok())?;
        let memory = parse_all(n.memory.as_deref(), "percentage", |t| t.parse::<f64>().ok())?;
        for i in 0..cpu.len().max(memory.len()) {
            let (c, m) = (
                cpu.get(i).copied().flatten(),
                memory.get(i).copied().flatten(),
            );
            if c.is_none() && m.is_none() {
                continue;
            }
            let sample = NodeSample {
                ts_ms: BASE_MS + interval * i as u64,
                cpu_busy_pct: c.unwrap_or_default(),
                mem_used_pct: m.unwrap_or_default(),
                ..NodeSample::default()
            };
            push(i, &n.node, Kind::Node(sample));
        }
        for (mountpoint, values) in &n.disk {
            let values = parse_all(Some(values), "percentage", |t| t.parse::<f64>().ok())?;
            for (i, pct) in values.iter().enumerate() {
                let Some(pct) = *pct else { continue };
                let fs = FilesystemSample {
                    ts_ms: BASE_MS + interval * i as u64,
                    mountpoint: mountpoint.clone(),
                    used_pct: pct,
                    ..FilesystemSample::default()
                };
                push(i, &n.node, Kind::Filesystem(fs));
            }
        }
    }
    for s in &test.services {
        for (i, state) in expand(&s.states, true)?.into_iter().enumerate() {
            let Some(state) = state else { continue };
            let sub_state = if state == "active" { "running" } else { "dead" };
            let service = ServiceState {
                ts_ms: BASE_MS + interval * i as u64,
                unit: s.unit.clone(),
                site: s.site.clone(),
                active_state: state,
                sub_state: sub_state.to_owned(),
                ..ServiceState::default()
            };
            push(i, &s.node, Kind::Service(service));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_expand_repeats_and_gaps() {
        let got = expand("200x2 _ 500 https://a.example/x1", true).expect("valid");
        assert_eq!(got.len(), 5);
        assert_eq!(got[1].as_deref(), Some("200"));
        assert_eq!(got[2], None);
        // A URL ending in "x1" would read as a repeat: locations are not expanded.
        let loc = expand("https://a.example/x1", false).expect("valid");
        assert_eq!(loc[0].as_deref(), Some("https://a.example/x1"));
    }

    #[test]
    fn the_example_rules_pass_their_tests() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/rules_test.toml");
        let report = run_test_file(&path).expect("the example runs");
        assert!(report.tests.len() >= 8, "{report}");
        assert!(report.passed(), "{report}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    }

    const RULES: &str = "[[rules]]\nname = \"Err\"\nkind = \"status\"\nseverity = \"error\"\nstatuses = [\"5xx\"]\n";

    #[test]
    fn a_failing_test_shows_what_differs() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "rules.toml", RULES);
        let tests = r#"
rule_files = ["rules.toml"]
[[tests]]
name = "wrong on purpose"
[[tests.sites]]
site = "a.example"
node = "n1"
values = "500 200"
[[tests.expect]]
at = "0m"
alerts = [{ rule = "Err", node = "n1", site = "b.example" }]
[[tests.expect]]
at = "1m"
alerts = []
"#;
        let report = run_test_file(&write(dir.path(), "t.toml", tests)).expect("runs");
        assert!(!report.passed());
        let text = report.to_string();
        assert!(
            text.contains("FAIL wrong on purpose\n  at 0s:\n  - expected firing Err{severity=error, node=n1, site=b.example}\n  + got      firing Err{severity=error, node=n1, site=a.example}\n"),
            "{text}"
        );
        assert!(text.contains("1 tests, 0 passed, 1 failed"), "{text}");
    }

    #[test]
    fn bad_input_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "rules.toml", RULES);
        let bad_value = "rule_files = [\"rules.toml\"]\n[[tests]]\nname = \"t\"\n[[tests.sites]]\nsite = \"a\"\nnode = \"n\"\nvalues = \"200 OK\"\n";
        let error = run_test_file(&write(dir.path(), "t.toml", bad_value)).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("test `t`: `OK` is not a valid status"),
            "{error}"
        );
        let unknown_rule = "rule_files = [\"rules.toml\"]\n[[tests]]\nname = \"t\"\n[[tests.expect]]\nat = \"1m\"\nalerts = [{ rule = \"Nope\" }]\n";
        let error = run_test_file(&write(dir.path(), "t.toml", unknown_rule)).expect_err("refused");
        assert!(
            error.to_string().contains("no rule named `Nope`"),
            "{error}"
        );
        let missing = "rule_files = [\"absent.toml\"]\n";
        let error = run_test_file(&write(dir.path(), "t.toml", missing)).expect_err("refused");
        assert!(error.to_string().contains("absent.toml"), "{error}");
        let typo = "rule_files = [\"rules.toml\"]\n[[tests]]\nname = \"t\"\nintervl = \"1m\"\n";
        let error = run_test_file(&write(dir.path(), "t.toml", typo)).expect_err("refused");
        assert!(error.to_string().contains("line 4"), "{error}");
    }
}
