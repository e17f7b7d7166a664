//! Stored rows into the dashboard's JSON shapes (`docs/dashboard.md`). Pure:
//! the handlers read the store, these functions shape and filter.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use crate::store::ProbeRow;
use crate::store::samples::{AlertEventRow, HeartbeatStateRow, NodeRow};

/// Sites listed per failing node in the overview.
pub const FAILING_SITES_PER_NODE: usize = 50;
/// Rows of the overview's other lists (cross-domain redirects, certificates).
pub const OVERVIEW_LIST: usize = 50;
/// Certificates expiring within this are listed.
pub const CERT_WARNING_MS: u64 = 14 * 86_400_000;

/// A status class: what the page colours and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Up,
    Redirect,
    Down,
    Error,
}

impl Class {
    /// 2xx up, 3xx redirect, 4xx (and anything else answered) error, 5xx
    /// or no answer down.
    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => Self::Up,
            300..=399 => Self::Redirect,
            0 | 500..=599 => Self::Down,
            _ => Self::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Redirect => "redirect",
            Self::Down => "down",
            Self::Error => "error",
        }
    }

    pub fn failing(self) -> bool {
        matches!(self, Self::Down | Self::Error)
    }
}

/// A site row: the newest probe of a site as the page shows it. `node` is
/// the agent that probed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteRow {
    pub site: String,
    pub node: String,
    pub status: u16,
    pub class: Class,
    pub error: String,
    pub latency_ms: u32,
    pub ts_ms: u64,
    pub location: String,
    pub cross_domain: bool,
    pub cert_expiry_ms: u64,
    pub cert_trust: String,
    pub content: String,
}

impl From<&ProbeRow> for SiteRow {
    fn from(p: &ProbeRow) -> Self {
        Self {
            site: p.site.clone(),
            node: p.agent.clone(),
            status: p.status,
            class: Class::of(p.status),
            error: p.error.clone(),
            latency_ms: p.ms,
            ts_ms: p.ts,
            location: p.location.clone(),
            cross_domain: p.cross != 0,
            cert_expiry_ms: p.cert_expiry,
            cert_trust: p.cert_trust.clone(),
            content: p.content.clone(),
        }
    }
}

/// An alert as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub rule: String,
    pub severity: String,
    pub node: String,
    pub site: String,
    pub service: String,
    pub state: String,
    pub summary: String,
    pub since_ms: u64,
    pub ts_ms: u64,
    pub actor: String,
}

impl From<&AlertEventRow> for AlertRow {
    fn from(a: &AlertEventRow) -> Self {
        Self {
            alert_id: a.alert_id.clone(),
            rule: a.rule.clone(),
            severity: a.severity.clone(),
            node: a.node.clone(),
            site: a.site.clone(),
            service: a.service.clone(),
            state: a.state.clone(),
            summary: a.summary.clone(),
            since_ms: a.since_ms,
            ts_ms: a.ts,
            actor: a.actor.clone(),
        }
    }
}

/// A site's change of status class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub site: String,
    pub node: String,
    pub from: Class,
    pub to: Class,
    pub ts_ms: u64,
}

/// A heartbeat check's state, as the overview and the live stream show it.
pub fn heartbeat(row: &HeartbeatStateRow) -> Value {
    json!({
        "check": row.name,
        "check_id": row.check_id,
        "status": row.status,
        "previous": row.previous,
        "reason": row.reason,
        "ts_ms": row.ts,
    })
}

/// A heartbeat state the overview lists: late (`grace`) or `down`.
pub fn heartbeat_needs_eyes(row: &HeartbeatStateRow) -> bool {
    matches!(row.status.as_str(), "grace" | "down")
}

/// A node sample as the live stream's `server` event.
pub fn server(row: &NodeRow) -> Value {
    json!({
        "node": row.node,
        "ts_ms": row.ts,
        "cpu_busy_pct": row.cpu_busy_pct,
        "mem_used_pct": row.mem_used_pct,
        "load1": row.load1,
        "psi_cpu_some": row.psi_cpu_some,
        "psi_memory_some": row.psi_memory_some,
        "psi_io_some": row.psi_io_some,
    })
}

/// The newest row of each alert among `events` (any order).
pub fn newest_alerts(events: &[AlertEventRow]) -> Vec<AlertRow> {
    let mut newest: HashMap<&str, &AlertEventRow> = HashMap::new();
    for event in events {
        let slot = newest.entry(event.alert_id.as_str()).or_insert(event);
        if event.ts > slot.ts {
            *slot = event;
        }
    }
    let mut alerts: Vec<AlertRow> = newest.into_values().map(AlertRow::from).collect();
    alerts.sort_by(|a, b| b.ts_ms.cmp(&a.ts_ms).then(a.alert_id.cmp(&b.alert_id)));
    alerts
}

/// Whether an alert of `site` is the caller's: alerts of no site (a node,
/// a service) are admins' only, as in the alerter's API.
pub fn alert_visible(site: &str, admin: bool, may_read: impl Fn(&str) -> bool) -> bool {
    admin || (!site.is_empty() && may_read(site))
}

/// The overview's figures over the sites a caller sees.
#[derive(Debug, Default, Serialize)]
pub struct Overview {
    pub counts: Counts,
    pub failing: Vec<FailingNode>,
    pub cross_domain: Vec<SiteRow>,
    pub certs_expiring: Vec<Value>,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub up: usize,
    pub down: usize,
    pub redirect: usize,
    pub error: usize,
    pub total: usize,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct FailingNode {
    pub node: String,
    /// Every failing site of the node, though `sites` lists the first 50.
    pub count: usize,
    pub sites: Vec<SiteRow>,
}

/// One pass over the newest probe of every site: counts by class, failing
/// sites grouped by node (most failing first), cross-domain redirects and
/// certificates expiring before `now_ms` + 14 days.
pub fn overview(probes: &[ProbeRow], now_ms: u64, keep: impl Fn(&str) -> bool) -> Overview {
    let mut out = Overview::default();
    let mut failing: BTreeMap<&str, FailingNode> = BTreeMap::new();
    let mut certs: Vec<&ProbeRow> = Vec::new();
    for probe in probes.iter().filter(|p| keep(&p.site)) {
        let class = Class::of(probe.status);
        out.counts.total += 1;
        match class {
            Class::Up => out.counts.up += 1,
            Class::Redirect => out.counts.redirect += 1,
            Class::Down => out.counts.down += 1,
            Class::Error => out.counts.error += 1,
        }
        if class.failing() {
            let node = failing
                .entry(probe.agent.as_str())
                .or_insert_with(|| FailingNode {
                    node: probe.agent.clone(),
                    count: 0,
                    sites: Vec::new(),
                });
            node.count += 1;
            if node.sites.len() < FAILING_SITES_PER_NODE {
                node.sites.push(SiteRow::from(probe));
            }
        }
        if probe.cross != 0 && out.cross_domain.len() < OVERVIEW_LIST {
            out.cross_domain.push(SiteRow::from(probe));
        }
        if probe.cert_expiry != 0 && probe.cert_expiry < now_ms.saturating_add(CERT_WARNING_MS) {
            certs.push(probe);
        }
    }
    out.failing = failing.into_values().collect();
    out.failing
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.node.cmp(&b.node)));
    certs.sort_by_key(|p| (p.cert_expiry, p.site.clone()));
    out.certs_expiring = certs
        .into_iter()
        .take(OVERVIEW_LIST)
        .map(|p| {
            json!({
                "site": p.site,
                "node": p.agent,
                "cert_expiry_ms": p.cert_expiry,
                "cert_trust": p.cert_trust,
                "cert_error": p.cert_error,
            })
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(site: &str, node: &str, status: u16) -> ProbeRow {
        ProbeRow {
            site: site.into(),
            agent: node.into(),
            status,
            ts: 1_000,
            ..ProbeRow::default()
        }
    }

    #[test]
    fn classes_follow_the_status() {
        assert_eq!(Class::of(200), Class::Up);
        assert_eq!(Class::of(301), Class::Redirect);
        assert_eq!(Class::of(404), Class::Error);
        assert_eq!(Class::of(503), Class::Down);
        assert_eq!(Class::of(0), Class::Down);
    }

    #[test]
    fn the_overview_groups_failing_sites_by_node_and_counts_all() {
        let mut probes: Vec<ProbeRow> = (0..120)
            .map(|i| probe(&format!("s{i:03}.example"), "web-1", 500))
            .collect();
        probes.push(probe("ok.example", "web-2", 200));
        probes.push(probe("gone.example", "web-2", 404));
        probes.push(ProbeRow {
            cross: 1,
            location: "https://elsewhere.example/".into(),
            ..probe("moved.example", "web-2", 301)
        });
        probes.push(ProbeRow {
            cert_expiry: 2_000,
            ..probe("cert.example", "web-2", 200)
        });
        let o = overview(&probes, 1_000, |_| true);
        assert_eq!(
            o.counts,
            Counts {
                up: 2,
                down: 120,
                redirect: 1,
                error: 1,
                total: 124
            }
        );
        assert_eq!(o.failing.len(), 2);
        assert_eq!(o.failing[0].node, "web-1");
        assert_eq!(o.failing[0].count, 120);
        assert_eq!(o.failing[0].sites.len(), FAILING_SITES_PER_NODE);
        assert_eq!(o.failing[1].count, 1);
        assert_eq!(o.cross_domain.len(), 1);
        assert_eq!(o.certs_expiring.len(), 1);
        let only_web2 = overview(&probes, 1_000, |s| !s.starts_with('s'));
        assert_eq!(only_web2.counts.total, 4);
        assert_eq!(only_web2.failing.len(), 1);
    }

    #[test]
    fn newest_alerts_keep_each_alerts_last_state() {
        let event = |id: &str, ts, state: &str| AlertEventRow {
            alert_id: id.into(),
            ts,
            state: state.into(),
            ..AlertEventRow::default()
        };
        let alerts = newest_alerts(&[
            event("a", 1, "firing"),
            event("a", 3, "acknowledged"),
            event("b", 2, "firing"),
        ]);
        let states: Vec<(&str, &str)> = alerts
            .iter()
            .map(|a| (a.alert_id.as_str(), a.state.as_str()))
            .collect();
        assert_eq!(states, [("a", "acknowledged"), ("b", "firing")]);
    }
}
