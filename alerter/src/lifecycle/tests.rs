// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use livehead_proto::v1::{DeliveryOutcome, record};

use super::*;
use crate::receivers::{ReceiverError, Severity, Status};
use crate::{Attempt, DeliveryReport};

const RECEIVERS: &str = r#"
[[receivers]]
kind = "discord"
name = "discord-warn"
url = "https://discord.example/warn"

[[receivers]]
kind = "discord"
name = "discord-crit"
url = "https://discord.example/crit"

[[receivers]]
kind = "pagerduty"
name = "pagerduty"
routing_key = "0123456789abcdef0123456789abcdef"
"#;

/// The issue's example: warnings to one Discord channel, critical to
/// another plus PagerDuty; per-site alerts under a failing node inhibited.
const ROUTES: &str = r#"
[route]
receiver = "discord-warn"
group_wait = "500ms"

[[route.routes]]
matchers = ["severity=critical"]
receiver = "discord-crit"
continue = true

[[route.routes]]
matchers = ["severity=critical"]
receiver = "pagerduty"

[[inhibit]]
source_matchers = ["alertname=NodeDown"]
target_matchers = ["alertname=SiteDown"]
equal = ["node"]
"#;

fn file(extra: &str) -> RulesFile {
    RulesFile::parse(&format!("{RECEIVERS}{extra}")).unwrap()
}

fn lifecycle(extra: &str) -> Lifecycle {
    Lifecycle::new(&file(extra), None, 0).unwrap()
}

fn key(rule: &str, severity: Severity, node: &str, site: Option<&str>) -> AlertKey {
    AlertKey {
        rule: rule.to_owned(),
        severity,
        node: Some(node.to_owned()),
        site: site.map(str::to_owned),
        service: None,
    }
}

fn site(n: usize) -> AlertKey {
    key(
        "SiteDown",
        Severity::Warning,
        "n1",
        Some(&format!("s{n}.example")),
    )
}

fn change(key: &AlertKey, condition: Condition, at_ms: u64) -> AlertChange {
    AlertChange {
        key: key.clone(),
        condition,
        at_ms,
        summary: format!("{} {:?}", key.rule, key.site),
        description: None,
        labels: BTreeMap::new(),
        notice: false,
    }
}

fn fire(l: &mut Lifecycle, key: &AlertKey, at: u64) {
    l.apply(&[change(key, Condition::Firing, at)], at);
}

fn resolve(l: &mut Lifecycle, key: &AlertKey, at: u64) {
    l.apply(&[change(key, Condition::Resolved, at)], at);
}

/// (receiver, id, status) of what is due at `now`.
fn due(l: &mut Lifecycle, now: u64) -> Vec<(String, String, Status)> {
    l.due(now)
        .into_iter()
        .map(|(r, n)| (r, n.id, n.status))
        .collect()
}

fn one(receiver: &str, key: &AlertKey, status: Status) -> Vec<(String, String, Status)> {
    vec![(receiver.to_owned(), key.id(), status)]
}

#[test]
fn dedup_same_key_twice_is_one_notification() {
    let mut l = lifecycle(ROUTES);
    let k = site(1);
    fire(&mut l, &k, 1000);
    fire(&mut l, &k, 1200);
    assert_eq!(l.next_due(), Some(1500));
    assert!(due(&mut l, 1499).is_empty());
    assert_eq!(due(&mut l, 1500), one("discord-warn", &k, Status::Firing));
    fire(&mut l, &k, 2000);
    assert!(due(&mut l, 100_000).is_empty());
}

#[test]
fn group_wait_batches_alerts_arriving_together() {
    let mut l = lifecycle(ROUTES);
    for n in 0..3 {
        fire(&mut l, &site(n), 1000 + n as u64 * 100);
    }
    let sent = l.due(1500);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (receiver, n) = &sent[0];
    assert_eq!(receiver, "discord-warn");
    assert_eq!(n.status, Status::Firing);
    assert!(
        n.summary
            .starts_with("3 alerts (3 firing): SiteDown · node n1"),
        "{}",
        n.summary
    );
    assert_eq!(n.description.as_deref().unwrap().lines().count(), 3);
    assert_eq!(n.node.as_deref(), Some("n1"));
    assert_eq!(n.site, None);
    // Another node is another group.
    fire(
        &mut l,
        &key("SiteDown", Severity::Warning, "n2", Some("x")),
        1600,
    );
    assert_eq!(l.due(2100).len(), 1);
}

#[test]
fn group_interval_spaces_changes_and_repeat_interval_repeats() {
    let mut l = lifecycle(&ROUTES.replace(
        "group_wait = \"500ms\"",
        "group_wait = \"500ms\"\ngroup_interval = \"10s\"\nrepeat_interval = \"1h\"",
    ));
    fire(&mut l, &site(1), 0);
    let first = l.due(500);
    assert_eq!(first.len(), 1);
    let group_id = {
        fire(&mut l, &site(2), 1000);
        // Not before group_interval after the last notification.
        assert_eq!(l.next_due(), Some(10_500));
        assert!(l.due(10_499).is_empty());
        let second = l.due(10_500);
        assert_eq!(second.len(), 1);
        // The incident keeps its first id (PagerDuty's dedup_key).
        assert_eq!(second[0].1.id, first[0].1.id);
        assert!(second[0].1.summary.starts_with("2 alerts"));
        second[0].1.id.clone()
    };
    assert_eq!(l.next_due(), Some(10_500 + 3_600_000));
    let repeat = due(&mut l, 10_500 + 3_600_000);
    assert_eq!(
        repeat,
        vec![("discord-warn".to_owned(), group_id, Status::Firing)]
    );
}

#[test]
fn acknowledged_stops_repeats_and_sends_one_acknowledge() {
    let mut l = lifecycle(ROUTES);
    let k = key("NodeDown", Severity::Critical, "n1", None);
    fire(&mut l, &k, 0);
    let sent = due(&mut l, 500);
    assert_eq!(sent.len(), 2, "discord-crit and pagerduty: {sent:?}");
    l.acknowledge(&k.id(), "alice", 1000).unwrap();
    // Now, not at group_interval.
    assert_eq!(l.next_due(), Some(1000));
    let acks = due(&mut l, 1000);
    assert_eq!(
        acks,
        vec![
            ("discord-crit".to_owned(), k.id(), Status::Acknowledged),
            ("pagerduty".to_owned(), k.id(), Status::Acknowledged),
        ]
    );
    // Acknowledging again changes nothing; no repeat ever.
    l.acknowledge(&k.id(), "alice", 2000).unwrap();
    assert!(due(&mut l, 2000).is_empty());
    assert_eq!(l.next_due(), None);
    assert!(due(&mut l, 100 * 3_600_000).is_empty());
    let view = l.alerts(3000);
    assert_eq!(view[0].state, State::Acknowledged);
    assert_eq!(view[0].acknowledged_by.as_deref(), Some("alice"));
    // The rules resolving it sends the resolve.
    resolve(&mut l, &k, 5000);
    let resolved = due(&mut l, 61_000);
    assert_eq!(resolved.len(), 2);
    assert!(
        resolved
            .iter()
            .all(|(_, id, s)| *id == k.id() && *s == Status::Resolved)
    );
}

#[test]
fn acknowledge_refuses_what_is_not_firing() {
    let mut l = lifecycle(ROUTES);
    assert_eq!(
        l.acknowledge("nope", "a", 0),
        Err(LifecycleError::UnknownAlert("nope".to_owned()))
    );
    let k = site(1);
    l.apply(&[change(&k, Condition::Pending, 0)], 0);
    assert!(matches!(
        l.acknowledge(&k.id(), "a", 0),
        Err(LifecycleError::NotFiring {
            state: "pending",
            ..
        })
    ));
}

#[test]
fn resolved_notifications_per_route() {
    let mut l = lifecycle(
        r#"
[route]
receiver = "discord-warn"
[[route.routes]]
matchers = ["severity=critical"]
receiver = "pagerduty"
continue = true
[[route.routes]]
matchers = ["severity=critical"]
receiver = "discord-crit"
send_resolved = false
"#,
    );
    let k = key("NodeDown", Severity::Critical, "n1", None);
    fire(&mut l, &k, 0);
    assert_eq!(l.due(500).len(), 2);
    resolve(&mut l, &k, 1000);
    // pagerduty gets the resolve; discord-crit does not want it.
    assert_eq!(due(&mut l, 60_500), one("pagerduty", &k, Status::Resolved));
    assert_eq!(l.next_due(), None);
}

#[test]
fn manual_resolve_sends_the_resolve_now() {
    let mut l = lifecycle(ROUTES);
    let k = site(1);
    fire(&mut l, &k, 0);
    assert_eq!(l.due(500).len(), 1);
    assert_eq!(
        l.resolve("nope", "admin", 1000),
        Err(LifecycleError::UnknownAlert("nope".to_owned()))
    );
    l.resolve(&k.id(), "admin", 1000).unwrap();
    assert_eq!(due(&mut l, 1000), one("discord-warn", &k, Status::Resolved));
    assert_eq!(
        l.resolve(&k.id(), "admin", 1001),
        Err(LifecycleError::AlreadyResolved(k.id()))
    );
    assert_eq!(l.alerts(1001)[0].resolved_by.as_deref(), Some("admin"));
    // The engine restarted from `active()` no longer holds it.
    assert_eq!(l.active().count(), 0);
}

#[test]
fn routing_tree_by_severity_with_continue() {
    let mut l = lifecycle(ROUTES);
    let warning = key("HighLatency", Severity::Warning, "n1", Some("a"));
    let critical = key("SiteDown", Severity::Critical, "n2", Some("b"));
    fire(&mut l, &warning, 0);
    fire(&mut l, &critical, 0);
    let mut sent = due(&mut l, 500);
    sent.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        sent,
        vec![
            ("discord-crit".to_owned(), critical.id(), Status::Firing),
            ("discord-warn".to_owned(), warning.id(), Status::Firing),
            ("pagerduty".to_owned(), critical.id(), Status::Firing),
        ]
    );
}

#[test]
fn without_continue_the_first_matching_route_wins() {
    let mut l = lifecycle(&ROUTES.replace("continue = true", "continue = false"));
    let critical = key("SiteDown", Severity::Critical, "n2", Some("b"));
    fire(&mut l, &critical, 0);
    assert_eq!(
        due(&mut l, 500),
        one("discord-crit", &critical, Status::Firing)
    );
}

#[test]
fn a_node_alert_inhibits_its_200_site_alerts() {
    let mut l = lifecycle(ROUTES);
    let node = key("NodeDown", Severity::Warning, "n1", None);
    let other = key("SiteDown", Severity::Warning, "n2", Some("elsewhere"));
    let mut changes: Vec<AlertChange> = (0..200)
        .map(|n| change(&site(n), Condition::Firing, 100))
        .collect();
    changes.push(change(&node, Condition::Firing, 150));
    changes.push(change(&other, Condition::Firing, 150));
    l.apply(&changes, 150);
    let mut sent = due(&mut l, 650);
    sent.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    // One about the node, and the other node's site (not covered).
    let mut expected = vec![
        ("discord-warn".to_owned(), node.id(), Status::Firing),
        ("discord-warn".to_owned(), other.id(), Status::Firing),
    ];
    expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(sent, expected);
    let views = l.alerts(700);
    assert_eq!(views.iter().filter(|a| a.inhibited).count(), 200);
    assert!(views.iter().all(|a| a.state == State::Firing));
    // Resolved together: one resolved notification, about the node.
    let mut resolved: Vec<AlertChange> = (0..200)
        .map(|n| change(&site(n), Condition::Resolved, 10_000))
        .collect();
    resolved.push(change(&node, Condition::Resolved, 10_000));
    l.apply(&resolved, 10_000);
    let sent = due(&mut l, 60_650);
    assert_eq!(sent, one("discord-warn", &node, Status::Resolved));
    assert!(due(&mut l, 200_000).is_empty());
}

#[test]
fn sites_still_firing_when_the_node_recovers_are_notified() {
    let mut l = lifecycle(ROUTES);
    let node = key("NodeDown", Severity::Warning, "n1", None);
    fire(&mut l, &node, 0);
    fire(&mut l, &site(1), 0);
    fire(&mut l, &site(2), 0);
    assert_eq!(due(&mut l, 500), one("discord-warn", &node, Status::Firing));
    resolve(&mut l, &node, 1000);
    resolve(&mut l, &site(2), 1000);
    let mut sent = due(&mut l, 60_500);
    sent.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut expected = vec![
        ("discord-warn".to_owned(), node.id(), Status::Resolved),
        ("discord-warn".to_owned(), site(1).id(), Status::Firing),
    ];
    expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        sent, expected,
        "site 2 resolved while inhibited: never sent"
    );
}

#[test]
fn silence_suppresses_then_expiry_lets_a_later_change_through() {
    let mut l = lifecycle(ROUTES);
    let silence = l
        .add_silence(
            NewSilence {
                matchers: vec!["node=n1".to_owned()],
                starts_at_ms: None,
                ends_at_ms: Some(100_000),
                duration: None,
                comment: "maintenance".to_owned(),
            },
            "bob",
            0,
        )
        .unwrap();
    fire(&mut l, &site(1), 1000);
    assert!(due(&mut l, 1500).is_empty());
    assert!(l.alerts(1500)[0].silenced);
    resolve(&mut l, &site(1), 2000);
    assert!(
        due(&mut l, 70_000).is_empty(),
        "never notified firing: no resolve"
    );
    l.expire_silence(&silence.id, 80_000).unwrap();
    assert_eq!(l.silences(80_000)[0].state, "expired");
    fire(&mut l, &site(3), 90_000);
    assert_eq!(
        due(&mut l, 90_500),
        one("discord-warn", &site(3), Status::Firing)
    );
    assert_eq!(
        l.expire_silence("nope", 0),
        Err(LifecycleError::UnknownSilence("nope".to_owned()))
    );
}

#[test]
fn a_silence_ending_by_itself_releases_what_still_fires() {
    let mut l = lifecycle(ROUTES);
    l.add_silence(
        NewSilence {
            matchers: vec!["alertname=~Site.*".to_owned()],
            starts_at_ms: Some(1000),
            ends_at_ms: None,
            duration: Some("9s".to_owned()),
            comment: "deploy".to_owned(),
        },
        "bob",
        0,
    )
    .unwrap();
    fire(&mut l, &site(1), 1000);
    assert!(due(&mut l, 1500).is_empty());
    assert_eq!(l.next_due(), Some(10_000));
    assert!(
        due(&mut l, 10_000).is_empty(),
        "group_wait after the release"
    );
    assert_eq!(
        due(&mut l, 10_500),
        one("discord-warn", &site(1), Status::Firing)
    );
}

#[test]
fn bad_silences_are_refused_with_the_reason() {
    let mut l = lifecycle(ROUTES);
    let bad = |matchers: Vec<&str>, ends: u64, comment: &str| NewSilence {
        matchers: matchers.into_iter().map(str::to_owned).collect(),
        starts_at_ms: None,
        ends_at_ms: Some(ends),
        duration: None,
        comment: comment.to_owned(),
    };
    for (new, reason) in [
        (bad(vec![], 10, "x"), "`matchers` is empty"),
        (bad(vec!["node=~("], 10, "x"), "bad regex"),
        (bad(vec!["node=a"], 10, " "), "`comment` is empty"),
        (bad(vec!["node=a"], 5, "x"), "in the past"),
    ] {
        let err = l.add_silence(new, "bob", 5).unwrap_err();
        assert!(err.to_string().contains(reason), "{err}");
    }
}

fn report(
    receiver: &str,
    id: &str,
    tries: Vec<Attempt>,
    result: Result<(), ReceiverError>,
) -> DeliveryReport {
    DeliveryReport {
        receiver: receiver.to_owned(),
        id: id.to_owned(),
        attempts: tries.len() as u32,
        result,
        tries,
    }
}

#[test]
fn restart_sends_nothing_twice_remembers_firing_and_resends_the_outbox() {
    let mut l = lifecycle(ROUTES);
    let k = key("NodeDown", Severity::Critical, "n1", None);
    let elsewhere = key("SiteDown", Severity::Warning, "n2", Some("a"));
    fire(&mut l, &k, 0);
    fire(&mut l, &elsewhere, 0);
    let sent = l.due(500);
    assert_eq!(sent.len(), 3);
    assert!(l.is_dirty());
    // discord-crit delivered; pagerduty's trigger still in flight.
    l.delivered(&report("discord-crit", &k.id(), vec![], Ok(())), 600);
    assert_eq!(l.in_flight(), 2);
    // Through JSON, as the file would.
    let json = serde_json::to_string(&l.saved()).unwrap();
    let saved: SavedState = serde_json::from_str(&json).unwrap();
    let mut l = Lifecycle::new(&file(ROUTES), Some(saved), 10_000).unwrap();
    assert_eq!(l.next_due(), Some(0));
    let mut again = due(&mut l, 10_000);
    again.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut expected = vec![
        ("pagerduty".to_owned(), k.id(), Status::Firing),
        ("discord-warn".to_owned(), elsewhere.id(), Status::Firing),
    ];
    expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(again, expected, "only what was not delivered");
    assert!(due(&mut l, 20_000).is_empty(), "nothing sent twice");
    let active: Vec<_> = l
        .active()
        .map(|(key, c, since)| (key.clone(), c, since))
        .collect();
    assert_eq!(active.len(), 2);
    assert!(active.contains(&(k.clone(), Condition::Firing, 0)));
    // Firing is remembered: its resolve still comes.
    l.delivered(&report("pagerduty", &k.id(), vec![], Ok(())), 10_100);
    resolve(&mut l, &k, 30_000);
    let resolved = due(&mut l, 60_500);
    assert_eq!(resolved.len(), 2, "{resolved:?}");
}

#[test]
fn the_state_file_is_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    assert_eq!(SavedState::load(&path).unwrap(), None);
    let mut l = lifecycle(ROUTES);
    fire(&mut l, &site(1), 0);
    l.saved().save(&path).unwrap();
    l.mark_saved();
    assert!(!l.is_dirty());
    let back = SavedState::load(&path).unwrap().unwrap();
    assert_eq!(back, l.saved());
    std::fs::write(&path, "{}").unwrap();
    let err = SavedState::load(&path).unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
}

#[test]
fn records_one_event_per_transition_and_one_delivery_per_attempt() {
    let mut l = lifecycle(ROUTES);
    let k = site(1);
    l.apply(&[change(&k, Condition::Pending, 10)], 10);
    fire(&mut l, &k, 20);
    fire(&mut l, &k, 30); // no transition
    let sent = l.due(520);
    l.acknowledge(&k.id(), "alice", 600).unwrap();
    let events: Vec<(i32, String)> = l
        .drain_records()
        .into_iter()
        .filter_map(|r| match r.kind {
            Some(record::Kind::Alert(e)) => Some((e.state, e.actor)),
            _ => None,
        })
        .collect();
    use livehead_proto::v1::AlertState as S;
    assert_eq!(
        events,
        vec![
            (S::Pending as i32, String::new()),
            (S::Firing as i32, String::new()),
            (S::Acknowledged as i32, "alice".to_owned()),
        ]
    );
    let failed = Attempt {
        at_ms: 700,
        http_status: 503,
        error: Some("HTTP 503: busy".to_owned()),
    };
    let ok = Attempt {
        at_ms: 900,
        http_status: 204,
        error: None,
    };
    l.delivered(
        &report("discord-warn", &sent[0].1.id, vec![failed, ok], Ok(())),
        900,
    );
    l.delivered(
        &report(
            "discord-warn",
            "x",
            vec![],
            Err(ReceiverError::QueueFull {
                receiver: "discord-warn".to_owned(),
                capacity: 1,
                id: "x".to_owned(),
            }),
        ),
        950,
    );
    let deliveries: Vec<(u32, i32, u32, i32)> = l
        .drain_records()
        .into_iter()
        .filter_map(|r| match r.kind {
            Some(record::Kind::Delivery(d)) => Some((d.attempt, d.outcome, d.http_status, d.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        deliveries,
        vec![
            (1, DeliveryOutcome::Retry as i32, 503, S::Firing as i32),
            (2, DeliveryOutcome::Sent as i32, 204, S::Firing as i32),
            (0, DeliveryOutcome::Dropped as i32, 0, S::Unspecified as i32),
        ]
    );
    assert!(l.drain_records().is_empty());
}

#[test]
fn reload_keeps_alerts_and_follows_new_routes() {
    let mut l = lifecycle(ROUTES);
    let k = key("SiteDown", Severity::Critical, "n1", Some("a"));
    fire(&mut l, &k, 0);
    assert_eq!(l.due(500).len(), 2);
    let only_warn = file("[route]\nreceiver = \"discord-warn\"\n");
    l.reload(&only_warn, 1000).unwrap();
    // Same alert, new route: notified there once.
    assert_eq!(due(&mut l, 1500), one("discord-warn", &k, Status::Firing));
    assert!(due(&mut l, 100_000).is_empty());
}

fn config_error(text: &str) -> String {
    RulesFile::parse(&format!("{RECEIVERS}{text}")).unwrap_err()
}

/// The line of `needle` in the full text given to `parse`.
fn line_of(text: &str, needle: &str) -> usize {
    let full = format!("{RECEIVERS}{text}");
    full.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn config_errors_name_the_line() {
    let cases = [
        (
            "[route]\nreceiver = \"discord-warn\"\n[[route.routes]]\nreceiver = \"slack-typo\"\n",
            "slack-typo",
            "is not one of the [[receivers]]",
        ),
        (
            "[route]\nreceiver = \"discord-warn\"\n[[route.routes]]\nmatchers = [\"severity=~(\"]\n",
            "severity=~(",
            "bad regex",
        ),
        (
            "[route]\nreceiver = \"discord-warn\"\nmatchers = [\"severity\"]\n",
            "matchers",
            "expected `label=value`",
        ),
        (
            "[route]\nreceiver = \"discord-warn\"\ngroup_wait = \"soon\"\n",
            "soon",
            "not a duration",
        ),
        (
            "[route]\nreceiver = \"discord-warn\"\n[[inhibit]]\nsource_matchers = [\"1a=b\"]\n",
            "1a=b",
            "must be letters",
        ),
    ];
    for (text, needle, reason) in cases {
        let err = config_error(text);
        let line = line_of(text, needle);
        assert!(
            err.starts_with(&format!("line {line}, ")),
            "{needle}: {err}"
        );
        assert!(err.contains(reason), "{err}");
    }
    // Unknown keys: toml names the line itself.
    let err = config_error("[route]\nreceiver = \"discord-warn\"\ngroup_wiat = \"1s\"\n");
    assert!(
        err.contains(&format!(
            "line {}",
            line_of(
                "[route]\nreceiver = \"discord-warn\"\ngroup_wiat = \"1s\"\n",
                "group_wiat"
            )
        )),
        "{err}"
    );
    let err = config_error("");
    assert!(err.contains("`receiver` is required at the root"), "{err}");
    // A file without receivers needs no route.
    assert!(RulesFile::parse("").is_ok());
}

#[test]
fn defaults_are_documented_values() {
    let routing = Routing::compile(&file("[route]\nreceiver = \"discord-warn\"\n")).unwrap();
    let root = &routing.root;
    assert_eq!(root.group_wait_ms, 500);
    assert_eq!(root.group_interval_ms, 60_000);
    assert_eq!(root.repeat_interval_ms, 4 * 3_600_000);
    assert!(root.send_resolved);
    assert_eq!(
        root.group_by,
        Some(
            ["alertname", "node"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        )
    );
}

#[test]
fn an_unreported_notification_is_forgotten_after_an_hour() {
    let mut l = lifecycle(ROUTES);
    fire(&mut l, &site(1), 0);
    assert_eq!(l.due(500).len(), 1);
    assert_eq!(l.in_flight(), 1);
    l.due(500 + OUTBOX_MAX_AGE_MS - 1);
    assert_eq!(l.in_flight(), 1);
    l.due(500 + OUTBOX_MAX_AGE_MS);
    assert_eq!(l.in_flight(), 0);
}

#[test]
fn the_readme_example_parses_and_routes() {
    let readme = include_str!("../../README.md");
    let start = readme.find("### Example\n\n```toml\n").unwrap() + "### Example\n\n```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let mut l = lifecycle(&readme[start..end]);
    let k = key("NodeDown", Severity::Critical, "n1", None);
    fire(&mut l, &k, 0);
    fire(&mut l, &site(1), 0);
    let mut sent = due(&mut l, 500);
    sent.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        sent,
        vec![
            ("discord-crit".to_owned(), k.id(), Status::Firing),
            ("pagerduty".to_owned(), k.id(), Status::Firing),
        ]
    );
}

#[test]
fn a_notice_reaches_each_of_its_receivers_once_and_ends_without_a_resolve() {
    let mut l = Lifecycle::new(
        &RulesFile::parse(&format!(
            r#"{RECEIVERS}
[route]
receiver = "discord-warn"

[[route.routes]]
matchers = ["severity=info"]
receiver = "discord-warn"
group_wait = "100ms"
continue = true

[[route.routes]]
matchers = ["severity=info"]
receiver = "discord-crit"
group_wait = "2s"
"#
        ))
        .unwrap(),
        None,
        0,
    )
    .unwrap();
    let k = key("watchdog_restarted", Severity::Info, "n1", None);
    let mut notice = change(&k, Condition::Firing, 1000);
    notice.notice = true;
    l.apply(&[notice], 1000);
    assert_eq!(due(&mut l, 1100), one("discord-warn", &k, Status::Firing));
    // Still firing: the second receiver has not been told yet.
    assert_eq!(l.alert(&k.id(), 1100).unwrap().state, State::Firing);
    assert_eq!(due(&mut l, 3000), one("discord-crit", &k, Status::Firing));
    assert_eq!(l.alert(&k.id(), 3000).unwrap().state, State::Resolved);
    assert!(due(&mut l, 10_000_000).is_empty());
}
