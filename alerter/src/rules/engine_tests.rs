//! The engine's tests: each rule kind, each noise control, replays,
//! reload and restore.

use std::time::Duration;

use livehead_proto::v1::{
    CertTrust, ContentOutcome, FilesystemSample, NodeSample, ProbeError, ProbeResult, Record,
    ServiceState, record::Kind,
};

use super::*;

const T0: u64 = 1_700_000_000_000;
const S: u64 = 1000;

fn probe(site: &str, status: u32, ts_ms: u64) -> Record {
    Record {
        kind: Some(Kind::Probe(ProbeResult {
            site: site.to_owned(),
            status,
            error: if status == 0 {
                ProbeError::Refused as i32
            } else {
                0
            },
            latency_us: 50_000,
            ts_ms,
            ..ProbeResult::default()
        })),
    }
}

fn probe_with(site: &str, ts_ms: u64, edit: impl FnOnce(&mut ProbeResult)) -> Record {
    let mut record = probe(site, 200, ts_ms);
    if let Some(Kind::Probe(p)) = &mut record.kind {
        edit(p);
    }
    record
}

fn node(ts_ms: u64, cpu: f64) -> Record {
    Record {
        kind: Some(Kind::Node(NodeSample {
            ts_ms,
            cpu_busy_pct: cpu,
            mem_used_pct: 10.0,
            ..NodeSample::default()
        })),
    }
}

fn fs(ts_ms: u64, mountpoint: &str, used_pct: f64) -> Record {
    Record {
        kind: Some(Kind::Filesystem(FilesystemSample {
            ts_ms,
            mountpoint: mountpoint.to_owned(),
            used_pct,
            ..FilesystemSample::default()
        })),
    }
}

fn service(ts_ms: u64, unit: &str, site: &str, state: &str) -> Record {
    Record {
        kind: Some(Kind::Service(ServiceState {
            ts_ms,
            unit: unit.to_owned(),
            site: site.to_owned(),
            active_state: state.to_owned(),
            ..ServiceState::default()
        })),
    }
}

fn rule(name: &str, kind: RuleKind) -> RuleSpec {
    let severity = (!kind.has_levels()).then_some(Severity::Error);
    RuleSpec::new(name, kind, severity)
}

fn status_rule() -> RuleSpec {
    RuleSpec {
        statuses: vec![StatusMatch::Class("5xx".to_owned())],
        ..rule("Err", RuleKind::Status)
    }
}

/// Feeds `records` from `agent`, then ticks at `now`; the changes as
/// (condition, site or node) pairs.
struct Run {
    engine: Engine,
    out: Vec<AlertChange>,
}

impl Run {
    fn new(rules: &[RuleSpec]) -> Self {
        Run {
            engine: Engine::new(rules),
            out: Vec::new(),
        }
    }

    fn feed(&mut self, agent: &str, records: &[Record]) -> Vec<AlertChange> {
        for record in records {
            self.engine.observe(agent, record, &mut self.out);
        }
        std::mem::take(&mut self.out)
    }

    fn tick(&mut self, now: u64) -> Vec<AlertChange> {
        self.engine.tick(now, &mut self.out);
        std::mem::take(&mut self.out)
    }
}

fn conditions(changes: &[AlertChange]) -> Vec<Condition> {
    changes.iter().map(|c| c.condition).collect()
}

use Condition::{Firing, Pending, Resolved};

#[test]
fn status_rule_fires_after_the_failure_threshold_and_resolves_after_the_success_threshold() {
    let spec = RuleSpec {
        failure_threshold: 3,
        success_threshold: 2,
        labels: [("team".to_owned(), "web".to_owned())].into(),
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    let statuses = [
        200, 503, 503, 200, 503, 502, 500, 500, 200, 500, 200, 200, 200,
    ];
    let mut got = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        got.push(run.feed("n1", &[probe("shop.example", *status, T0 + i as u64 * S)]));
    }
    let flat: Vec<(usize, Condition)> = got
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.iter().map(move |c| (i, c.condition)))
        .collect();
    // 503 503 then 200: pending resolves; 503 502 500: fires on the third;
    // one 200 is not enough to resolve, two are.
    assert_eq!(
        flat,
        [
            (1, Pending),
            (3, Resolved),
            (4, Pending),
            (6, Firing),
            (11, Resolved)
        ]
    );
    let firing = &got[6][0];
    assert_eq!(firing.summary, "shop.example answers 500");
    assert_eq!(firing.key.node.as_deref(), Some("n1"));
    assert_eq!(firing.key.site.as_deref(), Some("shop.example"));
    assert_eq!(firing.labels["team"], "web");
    assert_eq!(firing.at_ms, T0 + 6 * S);
}

#[test]
fn status_sets_match_codes_classes_and_no_answer() {
    let spec = RuleSpec {
        statuses: vec![
            StatusMatch::Class("4xx".to_owned()),
            StatusMatch::Code(0),
            StatusMatch::Code(302),
        ],
        ..rule("Odd", RuleKind::Status)
    };
    let mut run = Run::new(&[spec]);
    for (i, (status, fires)) in [
        (404, true),
        (200, false),
        (0, true),
        (500, false),
        (302, true),
        (301, false),
    ]
    .into_iter()
    .enumerate()
    {
        let site = format!("s{i}.example");
        let changes = run.feed("n1", &[probe(&site, status, T0)]);
        assert_eq!(!changes.is_empty(), fires, "status {status}");
    }
    // An error with a status still set counts as no answer.
    let changes = run.feed(
        "n1",
        &[probe_with("t.example", T0, |p| {
            p.status = 200;
            p.error = ProbeError::Timeout as i32;
        })],
    );
    assert_eq!(conditions(&changes), [Firing]);
}

#[test]
fn unreachable_names_the_error() {
    let mut run = Run::new(&[rule("Down", RuleKind::Unreachable)]);
    let changes = run.feed("n1", &[probe("a.example", 0, T0)]);
    assert_eq!(changes[0].summary, "a.example is unreachable (refused)");
    assert!(run.feed("n1", &[probe("a.example", 500, T0 + S)])[0].condition == Resolved);
}

#[test]
fn latency_counts_answered_probes_only() {
    let spec = RuleSpec {
        latency: Some(Duration::from_secs(1)),
        ..rule("Slow", RuleKind::Latency)
    };
    let mut run = Run::new(&[spec]);
    let slow = |ts| probe_with("a.example", ts, |p| p.latency_us = 1_500_000);
    let changes = run.feed("n1", &[slow(T0)]);
    assert_eq!(changes[0].summary, "a.example answered in 1.5s");
    // A time-out says nothing about the answer's latency.
    assert!(run.feed("n1", &[probe("a.example", 0, T0 + S)]).is_empty());
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 200, T0 + 2 * S)])),
        [Resolved]
    );
}

#[test]
fn certificate_expiry_within_days_and_plain_http_says_nothing() {
    let spec = RuleSpec {
        days: Some(10),
        ..rule("Cert", RuleKind::CertExpiry)
    };
    let mut run = Run::new(&[spec]);
    let cert =
        |ts: u64, days: u64| probe_with("a.example", ts, |p| p.cert_expiry_ms = ts + days * DAY_MS);
    assert!(run.feed("n1", &[cert(T0, 30)]).is_empty());
    let changes = run.feed("n1", &[cert(T0 + S, 9)]);
    assert_eq!(
        changes[0].summary,
        "the certificate of a.example expires in 9 days"
    );
    assert!(
        run.feed("n1", &[probe("a.example", 0, T0 + 2 * S)])
            .is_empty()
    );
    assert_eq!(
        conditions(&run.feed("n1", &[cert(T0 + 3 * S, 90)])),
        [Resolved]
    );
}

#[test]
fn cert_untrusted_names_the_reason_and_unchecked_probes_say_nothing() {
    let mut run = Run::new(&[rule("Trust", RuleKind::CertUntrusted)]);
    let verdict = |ts: u64, trust: CertTrust, error: &str| {
        let error = error.to_owned();
        probe_with("a.example", ts, move |p| {
            p.cert_trust = trust as i32;
            p.cert_error = error;
        })
    };
    assert!(
        run.feed("n1", &[verdict(T0, CertTrust::Trusted, "")])
            .is_empty()
    );
    let changes = run.feed(
        "n1",
        &[verdict(
            T0 + S,
            CertTrust::NameMismatch,
            "certificate not valid for name \"a.example\"",
        )],
    );
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "the certificate of a.example is not trusted: name mismatch"
    );
    assert_eq!(
        changes[0].description.as_deref(),
        Some("certificate not valid for name \"a.example\"")
    );
    // Plain http, or no handshake: not checked, so no change either way.
    assert!(
        run.feed("n1", &[probe("a.example", 200, T0 + 2 * S)])
            .is_empty()
    );
    assert!(
        run.feed("n1", &[probe("a.example", 0, T0 + 3 * S)])
            .is_empty()
    );
    assert_eq!(
        conditions(&run.feed("n1", &[verdict(T0 + 4 * S, CertTrust::Trusted, "")])),
        [Resolved]
    );
    for (trust, reason) in [
        (CertTrust::Expired, "expired"),
        (CertTrust::UnknownIssuer, "unknown issuer"),
        (CertTrust::SelfSigned, "self-signed"),
        (CertTrust::Invalid, "invalid"),
    ] {
        let mut run = Run::new(&[rule("Trust", RuleKind::CertUntrusted)]);
        let changes = run.feed("n1", &[verdict(T0, trust, "why")]);
        assert_eq!(
            changes[0].summary,
            format!("the certificate of a.example is not trusted: {reason}")
        );
    }
}

#[test]
fn redirect_changed_compares_with_the_previous_answer() {
    let mut run = Run::new(&[rule("Moved", RuleKind::RedirectChanged)]);
    let to = |ts, location: &str| {
        let location = location.to_owned();
        probe_with("a.example", ts, move |p| {
            p.status = 301;
            p.location = location;
        })
    };
    assert!(
        run.feed("n1", &[to(T0, "https://a.example/")]).is_empty(),
        "nothing to compare with"
    );
    assert!(
        run.feed("n1", &[to(T0 + S, "https://a.example/")])
            .is_empty()
    );
    // No answer: neither a change nor a new reference.
    assert!(
        run.feed("n1", &[probe("a.example", 0, T0 + 2 * S)])
            .is_empty()
    );
    let changes = run.feed("n1", &[to(T0 + 3 * S, "https://b.example/")]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "a.example now redirects to https://b.example/ (was https://a.example/)"
    );
    assert_eq!(
        conditions(&run.feed("n1", &[to(T0 + 4 * S, "https://b.example/")])),
        [Resolved]
    );
}

#[test]
fn cross_domain_holds_while_the_redirect_leaves_the_domain() {
    let mut run = Run::new(&[rule("Cross", RuleKind::CrossDomain)]);
    let cross = |ts, yes| {
        probe_with("a.example", ts, move |p| {
            p.status = 302;
            p.location = "https://elsewhere.example/".to_owned();
            p.cross_domain = yes;
        })
    };
    assert!(run.feed("n1", &[cross(T0, false)]).is_empty());
    let changes = run.feed("n1", &[cross(T0 + S, true)]);
    assert_eq!(
        changes[0].summary,
        "a.example redirects to another domain: https://elsewhere.example/"
    );
    assert!(run.feed("n1", &[cross(T0 + 2 * S, true)]).is_empty());
    assert_eq!(
        conditions(&run.feed("n1", &[cross(T0 + 3 * S, false)])),
        [Resolved]
    );
}

#[test]
fn content_holds_on_a_failed_check_and_probes_without_one_say_nothing() {
    let spec = RuleSpec {
        failure_threshold: 2,
        ..rule("Content", RuleKind::Content)
    };
    let mut run = Run::new(&[spec]);
    let failed = |ts| {
        probe_with("blog.example", ts, |p| {
            p.content = ContentOutcome::Failed as i32;
            p.content_failure =
                "not_contains = \"There has been a critical error on this website\"".to_owned();
            p.content_excerpt =
                "<p>There has been a critical error on this website.</p>".to_owned();
        })
    };
    let checked_ok = |ts| {
        probe_with("blog.example", ts, |p| {
            p.content = ContentOutcome::Ok as i32;
        })
    };
    assert_eq!(conditions(&run.feed("n1", &[failed(T0)])), [Pending]);
    // HEAD probes between content checks neither count nor resolve.
    let plain = probe("blog.example", 200, T0 + S);
    assert!(run.feed("n1", &[plain]).is_empty());
    let changes = run.feed("n1", &[failed(T0 + 2 * S)]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "blog.example fails its content check (not_contains = \"There has been a critical error \
         on this website\"): <p>There has been a critical error on this website.</p>"
    );
    let plain = probe("blog.example", 200, T0 + 3 * S);
    assert!(run.feed("n1", &[plain]).is_empty());
    assert_eq!(
        conditions(&run.feed("n1", &[checked_ok(T0 + 4 * S)])),
        [Resolved]
    );
}

#[test]
fn for_fires_once_the_condition_held_long_enough_and_a_short_blip_resolves_pending() {
    let spec = RuleSpec {
        for_: Duration::from_secs(30),
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 500, T0)])),
        [Pending]
    );
    assert!(run.tick(T0 + 29 * S).is_empty());
    let fired = run.tick(T0 + 30 * S);
    assert_eq!(conditions(&fired), [Firing]);
    assert_eq!(fired[0].at_ms, T0 + 30 * S);
    assert!(run.tick(T0 + 31 * S).is_empty(), "each change only once");
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 200, T0 + 40 * S)])),
        [Resolved]
    );
    // A blip shorter than `for`: pending, then resolved, never firing.
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 500, T0 + 50 * S)])),
        [Pending]
    );
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 200, T0 + 60 * S)])),
        [Resolved]
    );
    assert!(run.tick(T0 + 200 * S).is_empty());
}

#[test]
fn keep_firing_for_holds_a_firing_alert_after_the_condition_stops() {
    let spec = RuleSpec {
        keep_firing_for: Duration::from_secs(60),
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 500, T0)])),
        [Firing]
    );
    assert!(
        run.feed("n1", &[probe("a.example", 200, T0 + 10 * S)])
            .is_empty()
    );
    assert!(run.tick(T0 + 69 * S).is_empty());
    // Failing again inside the window: still the same firing alert.
    assert!(
        run.feed("n1", &[probe("a.example", 500, T0 + 69 * S)])
            .is_empty()
    );
    assert!(
        run.feed("n1", &[probe("a.example", 200, T0 + 70 * S)])
            .is_empty()
    );
    assert!(run.tick(T0 + 129 * S).is_empty());
    assert_eq!(conditions(&run.tick(T0 + 130 * S)), [Resolved]);
}

#[test]
fn replayed_and_older_records_are_not_counted_twice() {
    let spec = RuleSpec {
        failure_threshold: 2,
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    let first = probe("a.example", 500, T0);
    assert_eq!(
        conditions(&run.feed("n1", std::slice::from_ref(&first))),
        [Pending]
    );
    // The collector's snapshot after a reconnection repeats the latest state.
    assert!(run.feed("n1", &[first.clone(), first]).is_empty());
    assert!(
        run.feed("n1", &[probe("a.example", 500, T0 - S)])
            .is_empty(),
        "older"
    );
    assert_eq!(
        conditions(&run.feed("n1", &[probe("a.example", 500, T0 + S)])),
        [Firing]
    );
    // The same for node samples: one sample per (node, kind).
    let cpu = RuleSpec {
        failure_threshold: 2,
        critical: Some(90.0),
        ..rule("Cpu", RuleKind::Cpu)
    };
    let mut run = Run::new(&[cpu]);
    assert_eq!(conditions(&run.feed("n1", &[node(T0, 95.0)])), [Pending]);
    assert!(run.feed("n1", &[node(T0, 95.0)]).is_empty());
    assert!(
        run.feed("n2", &[node(T0, 95.0)]).len() == 1,
        "another node is another series"
    );
    assert_eq!(conditions(&run.feed("n1", &[node(T0 + S, 95.0)])), [Firing]);
}

#[test]
fn scope_globs_filter_sites_and_nodes() {
    let spec = RuleSpec {
        sites: vec!["*.shop.example".to_owned()],
        nodes: vec!["pod-*".to_owned()],
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    assert!(
        run.feed("pod-1", &[probe("blog.example", 500, T0)])
            .is_empty()
    );
    assert!(
        run.feed("vm-1", &[probe("a.shop.example", 500, T0)])
            .is_empty()
    );
    assert_eq!(
        run.feed("pod-1", &[probe("B.Shop.Example", 500, T0)]).len(),
        1,
        "host names ignore case"
    );
}

#[test]
fn a_site_that_moves_to_another_node_resolves_its_old_alert() {
    let mut run = Run::new(&[status_rule()]);
    run.feed("n1", &[probe("a.example", 500, T0)]);
    let changes = run.feed("n2", &[probe("a.example", 500, T0 + S)]);
    let got: Vec<(Condition, Option<&str>)> = changes
        .iter()
        .map(|c| (c.condition, c.key.node.as_deref()))
        .collect();
    assert_eq!(got, [(Resolved, Some("n1")), (Firing, Some("n2"))]);
}

#[test]
fn healthy_sites_leave_no_state_behind() {
    let mut run = Run::new(&[status_rule(), rule("Down", RuleKind::Unreachable)]);
    for i in 0..1000 {
        run.feed("n1", &[probe(&format!("s{i}.example"), 200, T0)]);
    }
    run.feed(
        "n1",
        &[
            probe("s1.example", 500, T0 + S),
            probe("s1.example", 200, T0 + 2 * S),
        ],
    );
    for rule in &run.engine.rules {
        let State::Site(sites) = &rule.state else {
            panic!("site rule")
        };
        assert!(
            sites.is_empty(),
            "{} keeps {} sites",
            rule.spec.name,
            sites.len()
        );
    }
}

#[test]
fn error_rate_over_a_window_per_node_with_min_samples() {
    let spec = RuleSpec {
        window: Some(Duration::from_secs(60)),
        share: Some(10.0),
        min_samples: Some(5),
        ..rule("Rate", RuleKind::ErrorRate)
    };
    let mut run = Run::new(&[spec]);
    // 4 probes, 2 failing: too few to decide.
    for (i, status) in [200, 500, 0, 200].into_iter().enumerate() {
        run.feed("n1", &[probe(&format!("s{i}.example"), status, T0)]);
    }
    assert!(run.tick(T0).is_empty());
    run.feed("n1", &[probe("s9.example", 200, T0 + S)]);
    let changes = run.tick(T0 + S);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "40.0 % of probes failing on node n1 over 1m"
    );
    assert_eq!(changes[0].key.node.as_deref(), Some("n1"));
    assert!(run.tick(T0 + 30 * S).is_empty());
    // A minute later the failing probes left the window.
    for i in 0..10 {
        run.feed("n1", &[probe(&format!("s{i}.example"), 200, T0 + 61 * S)]);
    }
    assert_eq!(conditions(&run.tick(T0 + 61 * S)), [Resolved]);
}

#[test]
fn error_rate_for_the_whole_fleet_has_no_node() {
    let spec = RuleSpec {
        group: Group::Fleet,
        min_samples: Some(2),
        ..rule("Rate", RuleKind::ErrorRate)
    };
    let mut run = Run::new(&[spec]);
    run.feed("n1", &[probe("a.example", 503, T0)]);
    run.feed("n2", &[probe("b.example", 200, T0)]);
    let changes = run.tick(T0);
    assert_eq!(changes[0].key.node, None);
    assert_eq!(
        changes[0].summary,
        "50.0 % of probes failing on the fleet over 5m"
    );
}

#[test]
fn latency_quantile_counts_the_share_of_slow_probes() {
    let spec = RuleSpec {
        latency: Some(Duration::from_millis(500)),
        quantile: Some(0.9),
        min_samples: Some(10),
        ..rule("P90", RuleKind::LatencyQuantile)
    };
    let mut run = Run::new(&[spec]);
    let timed = |i: u64, ms: u64| {
        probe_with(&format!("s{i}.example"), T0, move |p| {
            p.latency_us = ms * 1000
        })
    };
    for i in 0..9 {
        run.feed("n1", &[timed(i, 100)]);
    }
    run.feed("n1", &[timed(9, 900)]);
    // 1 slow of 10: the p90 is not above 500ms.
    assert!(run.tick(T0).is_empty());
    run.feed("n1", &[timed(10, 900)]);
    // 2 of 11 (18 %): it is.
    assert_eq!(conditions(&run.tick(T0 + S)), [Firing]);
}

#[test]
fn node_levels_give_one_key_per_level() {
    let mut run = Run::new(&[rule("Cpu", RuleKind::Cpu)]);
    let changes = run.feed("n1", &[node(T0, 95.0)]);
    let got: Vec<(Severity, Condition)> = changes
        .iter()
        .map(|c| (c.key.severity, c.condition))
        .collect();
    assert_eq!(
        got,
        [(Severity::Warning, Firing), (Severity::Critical, Firing)]
    );
    assert_eq!(changes[1].summary, "CPU at 95.0 % on n1 (level 90.0 %)");
    let changes = run.feed("n1", &[node(T0 + S, 80.0)]);
    let got: Vec<(Severity, Condition)> = changes
        .iter()
        .map(|c| (c.key.severity, c.condition))
        .collect();
    assert_eq!(got, [(Severity::Critical, Resolved)]);
    // Only `warning` set: only that level.
    let spec = RuleSpec {
        warning: Some(80.0),
        ..rule("Mem", RuleKind::Memory)
    };
    assert_eq!(spec.levels(), [(Severity::Warning, 80.0)]);
}

#[test]
fn disk_lists_the_mountpoints_over_the_level_and_forgets_vanished_ones() {
    let spec = RuleSpec {
        critical: Some(90.0),
        max_listed: Some(2),
        ..rule("Disk", RuleKind::Disk)
    };
    let mut run = Run::new(&[spec]);
    run.feed(
        "n1",
        &[
            fs(T0, "/", 95.0),
            fs(T0, "/var", 99.0),
            fs(T0, "/srv", 91.0),
            fs(T0, "/home", 10.0),
        ],
    );
    let changes = run.tick(T0);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "disk over 90.0 % on n1: /, /srv, and 1 more"
    );
    assert_eq!(
        changes[0].description.as_deref(),
        Some("/ 95.0 %\n/srv 91.0 %\nand 1 more")
    );
    // Two filesystems freed; /var unmounted (no sample for longer than STALE_MS).
    let later = T0 + STALE_MS + S;
    run.feed(
        "n1",
        &[
            fs(later, "/", 50.0),
            fs(later, "/srv", 50.0),
            fs(later, "/home", 10.0),
        ],
    );
    assert_eq!(conditions(&run.tick(later)), [Resolved]);
}

#[test]
fn service_down_per_unit_and_all_of_a_sites_services() {
    let specs = [
        RuleSpec {
            units: vec!["php*".to_owned()],
            ..rule("Svc", RuleKind::ServiceDown)
        },
        rule("SiteSvc", RuleKind::SiteServicesDown),
    ];
    let mut run = Run::new(&specs);
    let changes = run.feed(
        "n1",
        &[
            service(T0, "php-a.service", "a.example", "failed"),
            service(T0, "nginx-a.service", "a.example", "active"),
            service(T0, "nginx-b.service", "b.example", "failed"),
        ],
    );
    assert_eq!(changes.len(), 1, "nginx is out of the unit globs");
    assert_eq!(changes[0].key.service.as_deref(), Some("php-a.service"));
    assert_eq!(changes[0].key.site.as_deref(), Some("a.example"));
    assert_eq!(changes[0].summary, "php-a.service is failed on n1");
    let changes = run.tick(T0);
    // b.example's only unit is down: all of its services are.
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key.site.as_deref(), Some("b.example"));
    run.feed(
        "n1",
        &[service(T0 + S, "nginx-a.service", "a.example", "inactive")],
    );
    let changes = run.tick(T0 + S);
    assert_eq!(changes[0].key.site.as_deref(), Some("a.example"));
    assert_eq!(
        changes[0].description.as_deref(),
        Some("units: nginx-a.service, php-a.service")
    );
}

#[test]
fn missing_data_fires_after_the_silence_and_resolves_when_the_node_reports() {
    let spec = RuleSpec {
        after: Some(Duration::from_secs(60)),
        ..rule("Gone", RuleKind::Missing)
    };
    let mut run = Run::new(&[spec]);
    run.feed("n1", &[node(T0, 1.0)]);
    run.feed("n2", &[probe("a.example", 200, T0)]);
    assert!(run.tick(T0 + 60 * S).is_empty());
    run.feed("n2", &[probe("a.example", 200, T0 + 60 * S)]);
    let changes = run.tick(T0 + 61 * S);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(changes[0].key.node.as_deref(), Some("n1"));
    assert_eq!(changes[0].summary, "n1 has sent nothing for 1m 1s");
    assert!(run.tick(T0 + 90 * S).is_empty());
    run.feed("n1", &[node(T0 + 91 * S, 1.0)]);
    assert_eq!(conditions(&run.tick(T0 + 91 * S)), [Resolved]);
}

#[test]
fn fleet_rule_is_one_alert_about_the_node_listing_its_failing_sites() {
    let spec = RuleSpec {
        share: Some(50.0),
        min_sites: Some(3),
        max_listed: Some(20),
        ..rule("Pod", RuleKind::Fleet)
    };
    let mut run = Run::new(&[spec]);
    for i in 0..25 {
        run.feed("pod-1", &[probe(&format!("s{i:02}.example"), 200, T0)]);
    }
    // Another node's failures do not count for pod-1.
    for i in 0..5 {
        run.feed("pod-2", &[probe(&format!("t{i}.example"), 200, T0)]);
    }
    assert!(run.tick(T0).is_empty());
    for i in 0..24 {
        let status = if i == 0 { 0 } else { 503 };
        run.feed(
            "pod-1",
            &[probe(&format!("s{i:02}.example"), status, T0 + S)],
        );
    }
    let changes = run.tick(T0 + S);
    assert_eq!(conditions(&changes), [Firing]);
    let alert = &changes[0];
    assert_eq!(alert.key.node.as_deref(), Some("pod-1"));
    assert_eq!(alert.key.site, None);
    assert_eq!(
        alert.key.labels().get("node").map(String::as_str),
        Some("pod-1")
    );
    assert_eq!(alert.summary, "24 of 25 sites failing on pod-1");
    let description = alert.description.as_deref().unwrap_or_default();
    let lines: Vec<&str> = description.lines().collect();
    assert_eq!(lines.len(), 22, "{description}");
    assert_eq!(lines[1], "s00.example (no answer)");
    assert_eq!(lines[2], "s01.example (503)");
    assert_eq!(lines[21], "and 4 more");
    // Half of them recover: still 12 of 25, under 50 %.
    for i in 0..12 {
        run.feed(
            "pod-1",
            &[probe(&format!("s{i:02}.example"), 200, T0 + 2 * S)],
        );
    }
    assert_eq!(conditions(&run.tick(T0 + 2 * S)), [Resolved]);
}

#[test]
fn reload_keeps_unchanged_rules_and_resolves_removed_ones() {
    let keep = status_rule();
    let drop = rule("Down", RuleKind::Unreachable);
    let mut run = Run::new(&[keep.clone(), drop.clone()]);
    run.feed(
        "n1",
        &[probe("a.example", 500, T0), probe("b.example", 0, T0)],
    );
    let changed = RuleSpec {
        failure_threshold: 5,
        ..drop.clone()
    };
    run.engine.reload(&[keep.clone(), changed]);
    // Unchanged: a still failing site emits nothing new.
    let changes = run.feed("n1", &[probe("a.example", 500, T0 + S)]);
    let got: Vec<(&str, Condition)> = changes
        .iter()
        .map(|c| (c.key.rule.as_str(), c.condition))
        .collect();
    // The changed rule's alert resolved (first), nothing from the kept one.
    assert_eq!(got, [("Down", Resolved)]);
    assert_eq!(changes[0].at_ms, T0 + S);
    assert_eq!(changes[0].summary, "Down: rule removed or changed");
    assert_eq!(changes[0].key.site.as_deref(), Some("b.example"));
    // The changed rule starts fresh: one failure is pending of five.
    assert_eq!(
        conditions(&run.feed("n1", &[probe("b.example", 0, T0 + S)])),
        [Pending]
    );
    run.engine.reload(&[]);
    let mut got: Vec<(String, Condition)> = run
        .tick(T0 + 2 * S)
        .into_iter()
        .map(|c| (c.key.rule, c.condition))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [("Down".to_owned(), Resolved), ("Err".to_owned(), Resolved)]
    );
    assert!(run.engine.active_alerts().is_empty());
}

#[test]
fn restored_alerts_do_not_fire_twice_and_resolve_when_data_recovers() {
    let specs = [
        RuleSpec {
            failure_threshold: 2,
            ..status_rule()
        },
        RuleSpec {
            share: Some(50.0),
            min_sites: Some(1),
            ..rule("Pod", RuleKind::Fleet)
        },
    ];
    let mut run = Run::new(&specs);
    let site_key = AlertKey {
        rule: "Err".to_owned(),
        severity: Severity::Error,
        node: Some("n1".to_owned()),
        site: Some("a.example".to_owned()),
        service: None,
    };
    let pod_key = AlertKey {
        rule: "Pod".to_owned(),
        site: None,
        ..site_key.clone()
    };
    let gone = AlertKey {
        rule: "Removed".to_owned(),
        ..site_key.clone()
    };
    run.engine.restore(&site_key, Firing, T0 - 60 * S);
    run.engine.restore(&pod_key, Firing, T0 - 60 * S);
    run.engine.restore(&gone, Pending, T0 - 60 * S);
    assert_eq!(run.engine.active_alerts().len(), 2);
    // Before any data: the fleet alert keeps its state, the unknown one resolves.
    let changes = run.tick(T0);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].key.clone(), changes[0].condition),
        (gone, Resolved)
    );
    // The snapshot still shows the failure: nothing new.
    assert!(run.feed("n1", &[probe("a.example", 500, T0)]).is_empty());
    assert!(run.tick(T0 + S).is_empty());
    // It recovers: both resolve, once.
    let changes = run.feed("n1", &[probe("a.example", 200, T0 + 2 * S)]);
    assert_eq!(
        (changes[0].key.clone(), changes[0].condition),
        (site_key, Resolved)
    );
    let changes = run.tick(T0 + 2 * S);
    assert_eq!(
        (changes[0].key.clone(), changes[0].condition),
        (pod_key, Resolved)
    );
    assert!(run.tick(T0 + 3 * S).is_empty());
}

#[test]
fn a_restored_pending_alert_fires_when_its_for_elapses() {
    let spec = RuleSpec {
        for_: Duration::from_secs(60),
        ..status_rule()
    };
    let mut run = Run::new(&[spec]);
    let key = AlertKey {
        rule: "Err".to_owned(),
        severity: Severity::Error,
        node: Some("n1".to_owned()),
        site: Some("a.example".to_owned()),
        service: None,
    };
    run.engine.restore(&key, Pending, T0);
    assert!(
        run.feed("n1", &[probe("a.example", 500, T0 + 30 * S)])
            .is_empty()
    );
    assert_eq!(conditions(&run.tick(T0 + 60 * S)), [Firing]);
}

#[test]
fn fleet_counters_stay_equal_to_a_recount_through_churn_and_moves() {
    let spec = RuleSpec {
        min_sites: Some(1),
        ..rule("Pod", RuleKind::Fleet)
    };
    let mut run = Run::new(&[spec]);
    // A deterministic walk: sites fail, recover and move between 3 nodes.
    let mut state: u64 = 7;
    for step in 0..3000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let site = format!("s{}.example", (state >> 33) % 50);
        let node = format!("n{}", (state >> 20) % 3);
        let status = if (state >> 40) % 3 == 0 { 503 } else { 200 };
        run.feed(&node, &[probe(&site, status, T0 + step)]);
    }
    let State::Fleet(nodes, site_node) = &run.engine.rules[0].state else {
        panic!("fleet rule");
    };
    let mut sites = 0;
    for (node, track) in nodes {
        let recount = track.sites.values().filter(|(failing, _)| *failing).count();
        assert_eq!(track.failing as usize, recount, "node {node}");
        for site in track.sites.keys() {
            assert_eq!(
                site_node.get(site),
                Some(node),
                "{site} counted on one node only"
            );
        }
        sites += track.sites.len();
    }
    assert_eq!(sites, site_node.len());
}

fn from(vantage: &str, site: &str, status: u32, ts_ms: u64) -> Record {
    let mut record = probe(site, status, ts_ms);
    if let Some(Kind::Probe(p)) = &mut record.kind {
        p.vantage = vantage.to_owned();
    }
    record
}

#[test]
fn vantage_names_the_side_that_broke_and_flips_with_it() {
    let mut run = Run::new(&[rule("Side", RuleKind::Vantage)]);
    // Up from both: nothing. The inside probe comes without a label (an
    // older agent), which is inside.
    assert!(
        run.feed("node-1", &[from("", "a.example", 200, T0)])
            .is_empty()
    );
    assert!(
        run.feed("prober", &[from("outside", "a.example", 200, T0 + S)])
            .is_empty()
    );
    // Down outside, up inside: the edge.
    let changes = run.feed("prober", &[from("outside", "a.example", 502, T0 + 2 * S)]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "a.example: edge, DNS or ingress (down from outside; up from inside)"
    );
    assert_eq!(
        changes[0].description.as_deref(),
        Some("inside: 200 from node-1; outside: 502 from prober")
    );
    // The alert is keyed on the node of the pod, and the side.
    assert_eq!(changes[0].key.node.as_deref(), Some("node-1"));
    assert_eq!(changes[0].key.service.as_deref(), Some("edge"));
    // Still the edge: no news.
    assert!(
        run.feed("prober", &[from("outside", "a.example", 502, T0 + 3 * S)])
            .is_empty()
    );
    // Down inside too: the pod, whatever outside says; the edge alert ends.
    let changes = run.feed("node-1", &[from("inside", "a.example", 0, T0 + 4 * S)]);
    assert_eq!(conditions(&changes), [Resolved, Firing]);
    assert!(changes[0].summary.contains("edge, DNS or ingress"));
    assert_eq!(changes[0].key.service.as_deref(), Some("edge"));
    assert_eq!(changes[1].key.service.as_deref(), Some("pod"));
    // What a restarted alerter gets back.
    let active = run.engine.active_alerts();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].0, changes[1].key);
    let mut restarted = Run::new(&[rule("Side", RuleKind::Vantage)]);
    restarted.engine.restore(&active[0].0, Firing, T0 + 4 * S);
    assert_eq!(restarted.engine.active_alerts(), active);
    assert_eq!(
        changes[1].summary,
        "a.example: the pod (down from inside, outside; up from none)"
    );
    assert_eq!(
        changes[1].description.as_deref(),
        Some("inside: no answer (refused) from node-1; outside: 502 from prober")
    );
    // Outside comes back, inside still down: still the pod.
    assert!(
        run.feed("prober", &[from("outside", "a.example", 200, T0 + 5 * S)])
            .is_empty()
    );
    // Both up: resolved, naming the side that recovered.
    let changes = run.feed("node-1", &[from("inside", "a.example", 200, T0 + 6 * S)]);
    assert_eq!(conditions(&changes), [Resolved]);
    assert!(changes[0].summary.starts_with("a.example: the pod"));
}

#[test]
fn vantage_compares_only_sites_seen_from_inside_and_elsewhere() {
    let mut run = Run::new(&[rule("Side", RuleKind::Vantage)]);
    assert!(
        run.feed("prober", &[from("outside", "a.example", 503, T0)])
            .is_empty()
    );
    // Down inside with nothing to compare: the status rules' business.
    assert!(
        run.feed("node-1", &[from("inside", "b.example", 500, T0)])
            .is_empty()
    );
    // Once outside has been heard from, down inside is the pod.
    let changes = run.feed("prober", &[from("outside", "b.example", 500, T0 + S)]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(
        changes[0].summary,
        "b.example: the pod (down from inside, outside; up from none)"
    );
}

#[test]
fn site_rules_read_inside_probes_unless_they_name_a_vantage() {
    let outside_rule = RuleSpec {
        name: "Public".into(),
        vantage: Some("outside".into()),
        ..status_rule()
    };
    let mut run = Run::new(&[status_rule(), outside_rule]);
    let changes = run.feed("prober", &[from("outside", "a.example", 502, T0)]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(changes[0].key.rule, "Public");
    let changes = run.feed("node-1", &[from("", "a.example", 500, T0 + S)]);
    assert_eq!(conditions(&changes), [Firing]);
    assert_eq!(changes[0].key.rule, "Err");
}

#[test]
fn each_vantage_of_a_site_is_its_own_series() {
    let mut run = Run::new(&[rule("Side", RuleKind::Vantage)]);
    assert!(
        run.feed("node-1", &[from("inside", "a.example", 200, T0 + 5 * S)])
            .is_empty()
    );
    // Older than the inside probe, but the first from outside: not a replay.
    let changes = run.feed("prober", &[from("outside", "a.example", 502, T0)]);
    assert_eq!(conditions(&changes), [Firing]);
    // A replay of it is.
    assert!(
        run.feed("prober", &[from("outside", "a.example", 200, T0)])
            .is_empty()
    );
}
