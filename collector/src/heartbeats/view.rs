//! A check as the API shows it: its definition, and its status computed now
//! from the newest ping of each kind (the heartbeat crate's `Tracker`: the
//! status depends on the last end and the last start only).

use livehead_heartbeat::{CheckSpec, Tracker};
use serde::Serialize;

use super::{check_record, ping_record};
use crate::store::samples::{HeartbeatCheckRow, HeartbeatPingRow};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckView {
    pub id: String,
    pub name: String,
    pub project: String,
    pub slug: String,
    pub tags: Vec<String>,
    /// Set on period checks.
    pub period_s: Option<u64>,
    /// Set on cron checks, with their zone.
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub grace_s: u64,
    pub paused: bool,
    /// Who wrote the newest version: api, config or ping.
    pub source: String,
    pub actor: String,
    /// When the newest version was written (unix ms).
    pub updated: u64,
    /// new, up, started, grace, down or paused, now.
    pub status: String,
    /// The newest ping (unix ms) and its kind.
    pub last_ping: Option<u64>,
    pub last_ping_kind: Option<String>,
    /// When the next ping is due (unix ms); null while new, down by a
    /// failure or paused.
    pub next_expected: Option<u64>,
    /// `/ping/<uuid>`; with a project and slug, also
    /// `/ping/<ping-key>/<slug>` (the key is never shown).
    pub ping_url: String,
    pub slug_url: Option<String>,
}

/// `check` with its status at `now_ms`, from `pings` (its newest of each
/// kind, any order).
pub fn check_view(
    check: &HeartbeatCheckRow,
    pings: &[&HeartbeatPingRow],
    now_ms: u64,
) -> CheckView {
    let mut sorted: Vec<&&HeartbeatPingRow> = pings.iter().collect();
    sorted.sort_by_key(|p| p.ts);
    let mut tracker = Tracker::new();
    for ping in &sorted {
        tracker.observe(&ping_record(ping));
    }
    let last = sorted.last();
    let (status, next_expected) = match CheckSpec::from_record(&check_record(check)) {
        Ok(spec) => (
            tracker.status(&spec, now_ms).as_str().to_owned(),
            tracker.next_expected(&spec).filter(|_| !spec.paused),
        ),
        // Stored before the rules it breaks existed: shown, not judged.
        Err(_) => ("unknown".to_owned(), None),
    };
    let cron = (!check.cron.is_empty()).then(|| check.cron.clone());
    CheckView {
        id: check.check_id.clone(),
        name: check.name.clone(),
        project: check.project.clone(),
        slug: check.slug.clone(),
        tags: check.tags.split_whitespace().map(str::to_owned).collect(),
        period_s: (check.period_s != 0).then_some(check.period_s),
        tz: cron.as_ref().map(|_| check.tz.clone()),
        cron,
        grace_s: check.grace_s,
        paused: check.paused,
        source: check.source.clone(),
        actor: check.actor.clone(),
        updated: check.ts,
        status,
        last_ping: last.map(|p| p.ts),
        last_ping_kind: last.map(|p| p.kind.clone()),
        next_expected,
        ping_url: format!("/ping/{}", check.check_id),
        slug_url: (!check.slug.is_empty()).then(|| format!("/ping/<ping-key>/{}", check.slug)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const HOUR: u64 = 3_600_000;

    fn check() -> HeartbeatCheckRow {
        HeartbeatCheckRow {
            check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
            name: "backup".into(),
            tags: "prod  backup".into(),
            period_s: 86_400,
            grace_s: 3600,
            source: "api".into(),
            ..HeartbeatCheckRow::default()
        }
    }

    fn ping(ts: u64, kind: &str, exit_status: u32) -> HeartbeatPingRow {
        HeartbeatPingRow {
            ts,
            check_id: check().check_id,
            kind: kind.into(),
            exit_status,
            ..HeartbeatPingRow::default()
        }
    }

    #[test]
    fn status_at_a_fixed_clock() {
        let view = check_view(&check(), &[], NOW);
        assert_eq!((view.status.as_str(), view.next_expected), ("new", None));
        assert_eq!(view.tags, ["prod", "backup"]);

        let success = ping(NOW - 2 * HOUR, "success", 0);
        let view = check_view(&check(), &[&success], NOW);
        assert_eq!(view.status, "up");
        assert_eq!(view.next_expected, Some(NOW + 22 * HOUR));
        let view = check_view(&check(), &[&success], NOW + 22 * HOUR + 1);
        assert_eq!(view.status, "grace");
        let view = check_view(&check(), &[&success], NOW + 23 * HOUR);
        assert_eq!(view.status, "down");

        let start = ping(NOW - HOUR / 2, "start", 0);
        let view = check_view(&check(), &[&start, &success], NOW);
        assert_eq!(
            (view.status.as_str(), view.last_ping_kind.as_deref()),
            ("started", Some("start"))
        );
        let failed = ping(NOW - HOUR / 4, "exit", 3);
        assert_eq!(check_view(&check(), &[&failed, &start], NOW).status, "down");

        let paused = HeartbeatCheckRow {
            paused: true,
            ..check()
        };
        let view = check_view(&paused, &[&success], NOW);
        assert_eq!((view.status.as_str(), view.next_expected), ("paused", None));
    }
}
