//! Grouping and flushing: which alerts go out together, to which receiver,
//! and when (`group_wait`, `group_interval`, `repeat_interval`).
//!
//! A group is one route's alerts sharing the values of its `group_by`
//! labels. It remembers what it last notified per alert (`notified`), and
//! sends when that would change: a new alert firing, one acknowledged, one
//! resolved (with `send_resolved`), or when `repeat_interval` has passed
//! with something still firing. An alert never notified firing (pending
//! only, silenced or inhibited all along) is never notified resolved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::Route;
use super::matcher::all_match;
use super::{Alert, Lifecycle, Outgoing, State, records};
use crate::receivers::{Notification, Severity, Status};

/// One route's group of alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Route path, receiver and group labels: unique and stable.
    pub key: String,
    /// 16 hex digits of SHA-256 over `key`: the id of its notifications
    /// when they cover several alerts.
    pub id: String,
    pub route: String,
    pub receiver: String,
    pub labels: BTreeMap<String, String>,
    /// Alert ids; resolved ones leave at the next flush.
    pub members: BTreeSet<String>,
    /// What the receiver was last told, per alert (firing or acknowledged).
    pub notified: BTreeMap<String, Status>,
    /// The id of the incident open at the receiver: kept while it is open so
    /// that PagerDuty's trigger, acknowledge and resolve share one
    /// `dedup_key` even as alerts join the group.
    pub notification_id: Option<String>,
    pub last_sent_ms: Option<u64>,
    /// When to look at the group again; `None`: only after a change.
    pub next_flush_ms: Option<u64>,
}

impl Lifecycle {
    /// Puts a firing alert in the group of each route it matches.
    pub(super) fn route_alert(&mut self, id: &str) {
        let Some(alert) = self.alerts.get(id) else {
            return;
        };
        for route in self.routing.routes_for(&alert.labels) {
            let Some(receiver) = &route.receiver else {
                continue;
            };
            let labels = route.group_labels(&alert.labels);
            let key = group_key(&route.path, receiver, &labels);
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                id: short_hash(&key),
                key,
                route: route.path.clone(),
                receiver: receiver.clone(),
                labels,
                members: BTreeSet::new(),
                notified: BTreeMap::new(),
                notification_id: None,
                last_sent_ms: None,
                next_flush_ms: None,
            });
            group.members.insert(id.to_owned());
        }
    }

    /// Schedules the groups holding `id` for their next allowed flush.
    pub(super) fn touch_alert(&mut self, id: &str, now_ms: u64) {
        let routing = &self.routing;
        for group in self.groups.values_mut().filter(|g| g.members.contains(id)) {
            schedule(group, routing.route(&group.route), now_ms);
        }
    }

    /// Schedules every group (silences and inhibition changed what shows).
    pub(super) fn touch_all(&mut self, now_ms: u64) {
        let routing = &self.routing;
        for group in self.groups.values_mut() {
            schedule(group, routing.route(&group.route), now_ms);
        }
    }

    /// A person acted: their groups go out now, not at `group_interval`.
    pub(super) fn urgent(&mut self, id: &str, now_ms: u64) {
        for group in self.groups.values_mut().filter(|g| g.members.contains(id)) {
            group.next_flush_ms = Some(now_ms);
        }
    }

    /// Rebuilds the groups for the current routes, keeping the state of
    /// those that still exist.
    pub(super) fn regroup(&mut self, now_ms: u64) {
        let old = std::mem::take(&mut self.groups);
        let members: Vec<String> = old
            .values()
            .flat_map(|g| g.members.iter().cloned())
            .collect();
        let firing: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.state.is_active())
            .map(|a| a.id.clone())
            .collect();
        for id in firing.iter().chain(&members) {
            self.route_alert(id);
        }
        for (key, group) in &mut self.groups {
            if let Some(previous) = old.get(key) {
                let members = std::mem::take(&mut group.members);
                *group = previous.clone();
                group.members.extend(members);
            }
        }
        self.touch_all(now_ms);
    }

    /// Whether alert `id` matches the source of some inhibition rule.
    pub(super) fn is_source(&self, id: &str) -> bool {
        self.alerts.get(id).is_some_and(|a| {
            self.routing
                .inhibit
                .iter()
                .any(|rule| all_match(&rule.source, &a.labels))
        })
    }

    /// Per inhibition rule, the alerts that inhibit now (firing or
    /// acknowledged sources).
    pub(super) fn sources(&self) -> Vec<Vec<&Alert>> {
        self.routing
            .inhibit
            .iter()
            .map(|rule| {
                self.alerts
                    .values()
                    .filter(|a| a.state.is_active() && all_match(&rule.source, &a.labels))
                    .collect()
            })
            .collect()
    }

    pub(super) fn is_inhibited(&self, alert: &Alert, sources: &[Vec<&Alert>]) -> bool {
        self.routing
            .inhibit
            .iter()
            .zip(sources)
            .any(|(rule, sources)| {
                all_match(&rule.target, &alert.labels)
                    && sources.iter().any(|source| {
                        source.id != alert.id
                            && rule
                                .equal
                                .iter()
                                .all(|l| source.labels.get(l) == alert.labels.get(l))
                    })
            })
    }

    /// What to send now, each with its receiver's name. Everything returned
    /// is kept in the outbox (saved) until [`Lifecycle::delivered`] reports it.
    pub fn due(&mut self, now_ms: u64) -> Vec<(String, Notification)> {
        let mut out = std::mem::take(&mut self.resend);
        if self.silence_boundary_passed(now_ms) {
            self.touch_all(now_ms);
        }
        let ready: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.next_flush_ms.is_some_and(|t| t <= now_ms))
            .map(|g| g.key.clone())
            .collect();
        if !ready.is_empty() {
            let sources = self.sources();
            let mut flushed = Vec::new();
            for key in ready {
                if let Some(group) = self.groups.get(&key) {
                    flushed.push((key, self.flush(group, &sources, now_ms)));
                }
            }
            for (key, flush) in flushed {
                self.commit(&key, flush, now_ms, &mut out);
            }
        }
        self.prune(now_ms);
        self.prune_silences(now_ms);
        out
    }

    /// When `due()` has something next, if ever; the past means now.
    pub fn next_due(&self) -> Option<u64> {
        let resend = (!self.resend.is_empty()).then_some(0);
        let groups = self.groups.values().filter_map(|g| g.next_flush_ms);
        resend
            .into_iter()
            .chain(groups)
            .chain(self.next_silence_boundary())
            .min()
    }

    /// Decides a due group's flush without changing anything.
    fn flush(&self, group: &Group, sources: &[Vec<&Alert>], now_ms: u64) -> Flush {
        let Some(route) = self.routing.route(&group.route) else {
            return Flush::default();
        };
        let mut visible = BTreeMap::new();
        for alert in group.members.iter().filter_map(|id| self.alerts.get(id)) {
            let status = match alert.state {
                State::Pending => continue,
                State::Firing | State::Acknowledged => {
                    if self.is_silenced(alert, now_ms) || self.is_inhibited(alert, sources) {
                        continue;
                    }
                    if alert.state == State::Firing {
                        Status::Firing
                    } else {
                        Status::Acknowledged
                    }
                }
                State::Resolved => {
                    // A notice ends quietly: its one notification was it.
                    if alert.notice
                        || !(route.send_resolved && group.notified.contains_key(&alert.id))
                    {
                        continue;
                    }
                    Status::Resolved
                }
            };
            visible.insert(alert.id.clone(), status);
        }
        let changed = visible
            .iter()
            .any(|(id, status)| group.notified.get(id) != Some(status));
        let firing = visible.values().any(|s| *s == Status::Firing);
        let repeat = firing
            && group
                .last_sent_ms
                .is_some_and(|t| t.saturating_add(route.repeat_interval_ms) <= now_ms);
        let notification = (changed || repeat).then(|| self.notification(group, &visible));
        let resolved = group
            .members
            .iter()
            .filter(|id| {
                self.alerts
                    .get(*id)
                    .is_none_or(|a| a.state == State::Resolved)
            })
            .cloned()
            .collect();
        Flush {
            notification,
            visible,
            resolved,
            repeat_ms: firing.then_some(route.repeat_interval_ms),
        }
    }

    fn commit(
        &mut self,
        key: &str,
        flush: Flush,
        now_ms: u64,
        out: &mut Vec<(String, Notification)>,
    ) {
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        self.dirty = true;
        let mut notices = Vec::new();
        if let Some(notification) = flush.notification {
            notices = flush
                .visible
                .iter()
                .filter(|(_, s)| **s == Status::Firing)
                .map(|(id, _)| id.clone())
                .collect();
            group.notification_id = Some(notification.id.clone());
            group.notified = flush
                .visible
                .into_iter()
                .filter(|(_, s)| *s != Status::Resolved)
                .collect();
            group.last_sent_ms = Some(now_ms);
            tracing::debug!(receiver = %group.receiver, id = %notification.id, status = notification.status.as_str(), "notification due");
            self.outbox.push(Outgoing {
                receiver: group.receiver.clone(),
                notification: notification.clone(),
                handed_ms: now_ms,
            });
            out.push((group.receiver.clone(), notification));
        }
        for id in &flush.resolved {
            group.members.remove(id);
            group.notified.remove(id);
        }
        if group.notified.is_empty() {
            group.notification_id = None;
        }
        group.next_flush_ms = flush
            .repeat_ms
            .map(|repeat| group.last_sent_ms.unwrap_or(now_ms).saturating_add(repeat));
        if group.members.is_empty() {
            self.groups.remove(key);
        }
        for id in notices {
            self.end_notice(&id, now_ms);
        }
    }

    /// Resolves alert `id` if it is a firing notice, now that its
    /// notification is out; [`Self::flush`] never notifies that.
    fn end_notice(&mut self, id: &str, now_ms: u64) {
        let Some(alert) = self.alerts.get_mut(id) else {
            return;
        };
        if !alert.notice || alert.state != State::Firing {
            return;
        }
        // Routed to several receivers: it ends once each one was told.
        let told_everywhere = self
            .groups
            .values()
            .filter(|g| g.members.contains(id))
            .all(|g| g.notified.get(id) == Some(&Status::Firing));
        if !told_everywhere {
            return;
        }
        let Some(alert) = self.alerts.get_mut(id) else {
            return;
        };
        alert.state = State::Resolved;
        alert.ended_ms = Some(now_ms);
        alert.changed_ms = now_ms;
        self.transition(id, "", now_ms);
    }

    /// The group's notification for the alerts in `visible`.
    fn notification(&self, group: &Group, visible: &BTreeMap<String, Status>) -> Notification {
        let alerts: Vec<(&Alert, Status)> = visible
            .iter()
            .filter_map(|(id, s)| self.alerts.get(id).map(|a| (a, *s)))
            .collect();
        let status = if alerts.iter().any(|(_, s)| *s == Status::Firing) {
            Status::Firing
        } else if alerts.iter().any(|(_, s)| *s == Status::Acknowledged) {
            Status::Acknowledged
        } else {
            Status::Resolved
        };
        let single = alerts.len() == 1;
        let id = group
            .notification_id
            .clone()
            .unwrap_or_else(|| match (single, alerts.first()) {
                (true, Some((alert, _))) => alert.id.clone(),
                _ => group.id.clone(),
            });
        match (single, alerts.first()) {
            (true, Some((alert, _))) => single_notification(alert, id, status),
            _ => group_notification(&alerts, id, status),
        }
    }
}

/// What one flush decided.
#[derive(Debug, Default)]
struct Flush {
    notification: Option<Notification>,
    visible: BTreeMap<String, Status>,
    /// Members leaving the group (resolved).
    resolved: Vec<String>,
    /// The group still fires: look again after this long.
    repeat_ms: Option<u64>,
}

/// Moves the group's next flush to its earliest allowed time: `group_wait`
/// from now for a group that never sent, else `group_interval` after its
/// last notification.
fn schedule(group: &mut Group, route: Option<&Route>, now_ms: u64) {
    let Some(route) = route else {
        group.next_flush_ms = Some(now_ms);
        return;
    };
    let at = match group.last_sent_ms {
        None => now_ms.saturating_add(route.group_wait_ms),
        Some(last) => last.saturating_add(route.group_interval_ms).max(now_ms),
    };
    group.next_flush_ms = Some(group.next_flush_ms.map_or(at, |t| t.min(at)));
}

fn single_notification(alert: &Alert, id: String, status: Status) -> Notification {
    Notification {
        id,
        rule: alert.key.rule.clone(),
        severity: alert.key.severity,
        status,
        summary: alert.summary.clone(),
        description: alert.description.clone(),
        node: alert.key.node.clone(),
        site: alert.key.site.clone(),
        service: alert.key.service.clone(),
        since_ms: alert.since_ms,
        ended_ms: (status == Status::Resolved)
            .then_some(alert.ended_ms.unwrap_or(alert.changed_ms)),
        labels: rule_labels(&alert.labels),
        link: None,
    }
}

/// "3 alerts: SiteDown · node n1", the list in the description, the
/// fields the alerts share, the worst severity.
fn group_notification(alerts: &[(&Alert, Status)], id: String, status: Status) -> Notification {
    let common = |f: fn(&Alert) -> Option<&String>| -> Option<String> {
        let first = alerts.first().and_then(|(a, _)| f(a))?;
        alerts
            .iter()
            .all(|(a, _)| f(a) == Some(first))
            .then(|| first.clone())
    };
    let rule = common(|a| Some(&a.key.rule)).unwrap_or_else(|| "several rules".to_owned());
    let node = common(|a| a.key.node.as_ref());
    let site = common(|a| a.key.site.as_ref());
    let service = common(|a| a.key.service.as_ref());
    let severity = alerts
        .iter()
        .map(|(a, _)| a.key.severity)
        .min()
        .unwrap_or(Severity::Info);
    let mut labels: BTreeMap<String, String> = alerts
        .first()
        .map(|(a, _)| rule_labels(&a.labels))
        .unwrap_or_default();
    labels.retain(|k, v| alerts.iter().all(|(a, _)| a.labels.get(k) == Some(v)));
    let mut place: Vec<String> = vec![rule.clone()];
    place.extend(node.iter().map(|n| format!("node {n}")));
    place.extend(site.iter().map(|s| format!("site {s}")));
    let counts = [Status::Firing, Status::Acknowledged, Status::Resolved]
        .into_iter()
        .filter_map(|s| {
            let n = alerts.iter().filter(|(_, st)| *st == s).count();
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let description = alerts
        .iter()
        .map(|(a, s)| format!("[{}] {}", s.as_str(), a.summary))
        .collect::<Vec<_>>()
        .join("\n");
    let ended = alerts.iter().filter_map(|(a, _)| a.ended_ms).max();
    Notification {
        id,
        rule,
        severity,
        status,
        summary: format!("{} alerts ({counts}): {}", alerts.len(), place.join(" · ")),
        description: Some(description),
        node,
        site,
        service,
        since_ms: alerts.iter().map(|(a, _)| a.since_ms).min().unwrap_or(0),
        ended_ms: if status == Status::Resolved {
            ended
        } else {
            None
        },
        labels,
        link: None,
    }
}

/// The labels beyond those the notification has as fields.
fn rule_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "alertname" | "severity" | "node" | "site" | "service"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn group_key(route: &str, receiver: &str, labels: &BTreeMap<String, String>) -> String {
    // Debug quoting keeps `a=b,c` and `a="b,c"` apart.
    format!("{route}|{receiver:?}|{labels:?}")
}

pub(super) fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

impl Lifecycle {
    /// Reports a delivery from the dispatcher: the notification leaves the
    /// outbox (delivered or given up), and each attempt becomes a record.
    pub fn delivered(&mut self, report: &crate::DeliveryReport, now_ms: u64) {
        let position = self
            .outbox
            .iter()
            .position(|o| o.receiver == report.receiver && o.notification.id == report.id);
        let status = position.map(|i| self.outbox.remove(i).notification.status);
        self.records
            .extend(records::deliveries(report, status, now_ms));
        self.dirty = true;
    }
}
