//! The `[route]` tree and the `[[inhibit]]` rules of a rules file, as
//! written, and their compiled form. Semantic errors (unknown receiver, bad
//! matcher, bad regex, bad duration) name the line through `toml::Spanned`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::matcher::{Matcher, all_match};
use crate::file::RulesFile;

/// Default `group_wait`: long enough to gather what one batch of probes
/// fails together (a pod's 200 sites arrive within one agent batch), short
/// enough to keep the first notification within a second of the probe.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_millis(500);
/// Default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(60);
/// Default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// Default `group_by`.
pub const DEFAULT_GROUP_BY: [&str; 2] = ["alertname", "node"];

/// A `[route]` table or one of its nested `[[route.routes]]`, as in
/// Alertmanager. Unset fields are inherited from the parent route.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSpec {
    /// Receiver name (one of `[[receivers]]`). Required at the root when
    /// receivers are configured; inherited below.
    pub receiver: Option<Spanned<String>>,
    /// Which alerts this route takes (`label=value`, `label!=value`,
    /// `label=~regex`, `label!~regex`), all must match. The root takes
    /// every alert whatever its matchers. Default none (every alert).
    pub matchers: Vec<Spanned<String>>,
    /// Labels whose values make a group; `["..."]` groups by every label
    /// (one group per alert). Default `["alertname", "node"]`.
    pub group_by: Option<Vec<String>>,
    /// Wait before a new group's first notification, gathering the alerts
    /// that fire together. Default `500ms`.
    pub group_wait: Option<Spanned<String>>,
    /// Wait between two notifications of a group that changed. Default `1m`.
    pub group_interval: Option<Spanned<String>>,
    /// Wait before a group still firing (not acknowledged) is notified
    /// again. Default `4h`.
    pub repeat_interval: Option<Spanned<String>>,
    /// Notify when alerts resolve. Default true.
    pub send_resolved: Option<bool>,
    /// Go on matching the next sibling routes after this one matched.
    /// Default false. Not inherited.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    /// Child routes, tried in order. Default none.
    pub routes: Vec<RouteSpec>,
}

/// One `[[inhibit]]` table: while an alert matching `source_matchers` is
/// firing (or acknowledged), alerts matching `target_matchers` that have
/// the same values of the `equal` labels are not notified.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InhibitSpec {
    /// Default none (every alert).
    pub source_matchers: Vec<Spanned<String>>,
    /// Default none (every alert).
    pub target_matchers: Vec<Spanned<String>>,
    /// Default none.
    pub equal: Vec<String>,
}

/// A routing tree node, inheritance resolved.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable name of the route's place in the tree ("0", "0.2.1"), so
    /// groups keep their state across a reload that keeps the tree's shape.
    pub path: String,
    pub receiver: Option<String>,
    pub matchers: Vec<Matcher>,
    /// `None`: every label.
    pub group_by: Option<BTreeSet<String>>,
    pub group_wait_ms: u64,
    pub group_interval_ms: u64,
    pub repeat_interval_ms: u64,
    pub send_resolved: bool,
    pub continue_matching: bool,
    pub routes: Vec<Route>,
}

impl Route {
    /// The routes an alert with `labels` goes to (Alertmanager's walk:
    /// the deepest matching routes, siblings after a match only with
    /// `continue`). Only routes with a receiver are returned.
    pub fn find<'a>(&'a self, labels: &BTreeMap<String, String>, out: &mut Vec<&'a Route>) {
        let before = out.len();
        for child in &self.routes {
            if all_match(&child.matchers, labels) {
                child.find(labels, out);
                if !child.continue_matching {
                    break;
                }
            }
        }
        if out.len() == before && self.receiver.is_some() {
            out.push(self);
        }
    }

    /// Every route of the tree, depth first.
    pub fn walk<'a>(&'a self, out: &mut Vec<&'a Route>) {
        out.push(self);
        for child in &self.routes {
            child.walk(out);
        }
    }

    /// The labels that name the group of an alert with `labels`.
    pub fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.group_by {
            None => labels.clone(),
            Some(names) => labels
                .iter()
                .filter(|(k, _)| names.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// A compiled `[[inhibit]]`.
#[derive(Debug, Clone)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// The routing tree and inhibition rules, compiled and checked.
#[derive(Debug, Clone)]
pub struct Routing {
    pub root: Route,
    pub inhibit: Vec<Inhibit>,
}

/// Checks `[route]` and `[[inhibit]]` of `file`, parsed from `text` (for
/// the line numbers); the error names the line.
pub fn check(file: &RulesFile, text: &str) -> Result<(), String> {
    Routing::compile(file)
        .map(|_| ())
        .map_err(|err| err.render(text))
}

/// A semantic error of the routing config, with the byte span it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub span: Option<std::ops::Range<usize>>,
    pub message: String,
}

impl ConfigError {
    fn at<T>(spanned: &Spanned<T>, message: String) -> Self {
        ConfigError {
            span: Some(spanned.span()),
            message,
        }
    }

    /// "line 12, column 3: …" from the span's place in `text`.
    pub fn render(&self, text: &str) -> String {
        let Some(span) = &self.span else {
            return self.message.clone();
        };
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: {}", self.message)
    }
}

impl Routing {
    /// Compiles the tree; receivers are checked against `file.receivers`.
    pub fn compile(file: &RulesFile) -> Result<Self, ConfigError> {
        let receivers: BTreeSet<&str> = file.receivers.iter().map(|r| r.name()).collect();
        let defaults = Route {
            path: "0".to_owned(),
            receiver: None,
            matchers: Vec::new(),
            group_by: Some(DEFAULT_GROUP_BY.iter().map(|s| (*s).to_owned()).collect()),
            group_wait_ms: millis(DEFAULT_GROUP_WAIT),
            group_interval_ms: millis(DEFAULT_GROUP_INTERVAL),
            repeat_interval_ms: millis(DEFAULT_REPEAT_INTERVAL),
            send_resolved: true,
            continue_matching: false,
            routes: Vec::new(),
        };
        let mut root = compile_route(&file.route, &defaults, "0".to_owned(), &receivers)?;
        // The root takes every alert, whatever it says.
        root.matchers.clear();
        if root.receiver.is_none() && !receivers.is_empty() {
            return Err(ConfigError {
                span: None,
                message: format!(
                    "[route]: `receiver` is required at the root (one of: {})",
                    names(&receivers)
                ),
            });
        }
        let inhibit = file
            .inhibit
            .iter()
            .map(|spec| {
                Ok(Inhibit {
                    source: matchers(&spec.source_matchers)?,
                    target: matchers(&spec.target_matchers)?,
                    equal: spec.equal.clone(),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Routing { root, inhibit })
    }

    /// The routes `labels` go to.
    pub fn routes_for(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        let mut out = Vec::new();
        self.root.find(labels, &mut out);
        out
    }

    pub fn route(&self, path: &str) -> Option<&Route> {
        let mut all = Vec::new();
        self.root.walk(&mut all);
        all.into_iter().find(|r| r.path == path)
    }
}

fn compile_route(
    spec: &RouteSpec,
    parent: &Route,
    path: String,
    receivers: &BTreeSet<&str>,
) -> Result<Route, ConfigError> {
    let receiver = match &spec.receiver {
        Some(name) if receivers.contains(name.get_ref().as_str()) => Some(name.get_ref().clone()),
        Some(name) => {
            return Err(ConfigError::at(
                name,
                format!(
                    "route receiver {:?} is not one of the [[receivers]] ({})",
                    name.get_ref(),
                    names(receivers)
                ),
            ));
        }
        None => parent.receiver.clone(),
    };
    let duration = |field: &Option<Spanned<String>>, key: &str, inherited: u64| {
        match field {
        None => Ok(inherited),
        Some(text) => humantime::parse_duration(text.get_ref().trim())
            .map(millis)
            .map_err(|err| {
                ConfigError::at(
                    text,
                    format!("route {key}: {:?} is not a duration like \"500ms\", \"1m\" or \"4h\": {err}", text.get_ref()),
                )
            }),
    }
    };
    let group_by = match &spec.group_by {
        None => parent.group_by.clone(),
        Some(labels) if labels.iter().any(|l| l == "...") => None,
        Some(labels) => Some(labels.iter().cloned().collect()),
    };
    let mut route = Route {
        path: path.clone(),
        receiver,
        matchers: matchers(&spec.matchers)?,
        group_by,
        group_wait_ms: duration(&spec.group_wait, "group_wait", parent.group_wait_ms)?,
        group_interval_ms: duration(
            &spec.group_interval,
            "group_interval",
            parent.group_interval_ms,
        )?,
        repeat_interval_ms: duration(
            &spec.repeat_interval,
            "repeat_interval",
            parent.repeat_interval_ms,
        )?,
        send_resolved: spec.send_resolved.unwrap_or(parent.send_resolved),
        continue_matching: spec.continue_matching,
        routes: Vec::new(),
    };
    for (i, child) in spec.routes.iter().enumerate() {
        let child = compile_route(child, &route, format!("{path}.{i}"), receivers)?;
        route.routes.push(child);
    }
    Ok(route)
}

fn matchers(specs: &[Spanned<String>]) -> Result<Vec<Matcher>, ConfigError> {
    specs
        .iter()
        .map(|text| {
            Matcher::parse(text.get_ref()).map_err(|err| ConfigError::at(text, err.to_string()))
        })
        .collect()
}

fn names(receivers: &BTreeSet<&str>) -> String {
    if receivers.is_empty() {
        "none configured".to_owned()
    } else {
        receivers.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
