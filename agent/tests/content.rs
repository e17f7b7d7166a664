//! Content checks against fake sites on loopback: each WordPress failure,
//! the byte limit, a per-site override, and the cadence over rounds.

use std::time::Duration;

use http::Method;
use livehead_agent::content::{ContentChecks, ContentConfig, ContentOutcome};
use livehead_agent::discovery::Site;
use livehead_agent::metrics::AgentMetrics;
use livehead_agent::probe::{ProbeConfig, ProbeMethod, ProbeResult, Prober, Target};
use livehead_agent::rounds::{Schedule, run_round};
use livehead_proto::v1::record::Kind;
use livehead_testkit::sites::{
    BIG_PAGE_END, BIG_SITE, EMPTY_SITE, FakeSites, MAINTENANCE_SITE, OK_SITE, WP_ERROR_SITE,
};

fn fixed(port: u16) -> Target {
    Target::Fixed {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }
}

fn checks(toml_text: &str) -> ContentChecks {
    let config: ContentConfig = toml::from_str(toml_text).expect("valid [content]");
    ContentChecks::new(&config)
        .expect("compiles")
        .expect("enabled")
}

async fn check(sites: &FakeSites, checks: &ContentChecks, site: &str) -> ProbeResult {
    let assertions = checks.for_site(site).expect("site is checked");
    Prober::new(ProbeConfig::default())
        .expect("prober")
        .probe_content(
            site,
            &fixed(sites.port()),
            assertions,
            checks.max_body_bytes(),
        )
        .await
}

#[tokio::test]
async fn a_working_page_passes_with_one_plain_get() {
    let sites = FakeSites::start().await;
    let result = check(&sites, &checks(""), OK_SITE).await;
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(result.method(), ProbeMethod::Get);
    assert_eq!(result.content(), ContentOutcome::Ok, "{result:?}");
    assert_eq!(result.content_failure, "");
    assert_eq!(result.content_excerpt, "");
    let requests = sites.requests_for(OK_SITE);
    assert_eq!(requests.len(), 1, "no HEAD first: {requests:?}");
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].range, None, "the whole page is asked for");
}

#[tokio::test]
async fn an_empty_200_fails_the_minimum_size() {
    let sites = FakeSites::start().await;
    let result = check(&sites, &checks(""), EMPTY_SITE).await;
    assert_eq!(result.status, 200);
    assert_eq!(result.content(), ContentOutcome::Failed, "{result:?}");
    assert_eq!(result.content_failure, "min_body_bytes = 1 (got 0)");
    assert_eq!(result.content_excerpt, "");
}

#[tokio::test]
async fn a_wordpress_error_page_with_200_fails_with_an_excerpt() {
    let sites = FakeSites::start().await;
    let result = check(&sites, &checks(""), WP_ERROR_SITE).await;
    assert_eq!(result.status, 200);
    assert_eq!(result.content(), ContentOutcome::Failed, "{result:?}");
    assert_eq!(
        result.content_failure,
        "not_contains = \"There has been a critical error on this website\""
    );
    assert!(
        result
            .content_excerpt
            .contains("There has been a critical error on this website"),
        "{result:?}"
    );
    assert!(result.content_excerpt.len() <= 200);
    assert!(
        !result.content_excerpt.contains('\n'),
        "control characters become spaces"
    );
}

#[tokio::test]
async fn a_maintenance_503_fails_and_keeps_its_status() {
    let sites = FakeSites::start().await;
    let result = check(&sites, &checks(""), MAINTENANCE_SITE).await;
    assert_eq!(result.status, 503);
    assert_eq!(result.content(), ContentOutcome::Failed, "{result:?}");
    assert!(
        result.content_failure.contains("Briefly unavailable"),
        "{result:?}"
    );
    // With expected statuses, the status is the first assertion to fail.
    let strict = checks("statuses = [200]");
    let result = check(&sites, &strict, MAINTENANCE_SITE).await;
    assert_eq!(result.content_failure, "statuses = [200] (got 503)");
    assert!(
        result.content_excerpt.contains("Briefly unavailable"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_page_over_the_limit_is_judged_on_its_first_bytes() {
    let sites = FakeSites::start().await;
    let marker = format!("contains = [{BIG_PAGE_END:?}]\nmax_body_bytes = 4096\n");
    let result = check(&sites, &checks(&marker), BIG_SITE).await;
    assert_eq!(result.status, 200);
    assert_eq!(result.content(), ContentOutcome::Failed, "{result:?}");
    assert_eq!(
        result.content_failure,
        format!("contains = {BIG_PAGE_END:?}")
    );
    // What lies past the limit is not read, so it cannot fail a check either.
    let beyond = format!("not_contains = [{BIG_PAGE_END:?}]\nmax_body_bytes = 4096\n");
    let result = check(&sites, &checks(&beyond), BIG_SITE).await;
    assert_eq!(result.content(), ContentOutcome::Ok, "{result:?}");
    // With a limit past the page, the end is seen.
    let whole = format!("contains = [{BIG_PAGE_END:?}]\nmax_body_bytes = 2000000\n");
    let result = check(&sites, &checks(&whole), BIG_SITE).await;
    assert_eq!(result.content(), ContentOutcome::Ok, "{result:?}");
}

#[tokio::test]
async fn a_site_rule_overrides_the_global_assertions() {
    let sites = FakeSites::start().await;
    let config = checks(
        r#"
        contains = ["fake site"]
        [[sites]]
        sites = ["wperror.*"]
        wordpress_defaults = false
        contains = ["wp-die-message"]
        [[sites]]
        sites = ["ok.*"]
        contains = ["Add to cart"]
        "#,
    );
    let result = check(&sites, &config, WP_ERROR_SITE).await;
    assert_eq!(result.content(), ContentOutcome::Ok, "{result:?}");
    let result = check(&sites, &config, OK_SITE).await;
    assert_eq!(result.content_failure, "contains = \"Add to cart\"");
    assert_eq!(result.content_excerpt, "fake site");
    // Sites no rule names keep the global assertions.
    let result = check(&sites, &config, EMPTY_SITE).await;
    assert_eq!(result.content_failure, "min_body_bytes = 1 (got 0)");
}

#[tokio::test]
async fn a_probe_without_an_answer_checks_nothing() {
    let port = livehead_testkit::sites::closed_port();
    let checks = checks("");
    let assertions = checks.for_site(OK_SITE).expect("checked");
    let result = Prober::new(ProbeConfig::default())
        .expect("prober")
        .probe_content(OK_SITE, &fixed(port), assertions, 1024)
        .await;
    assert_eq!(result.status, 0);
    assert_eq!(result.content(), ContentOutcome::Unspecified);
    assert_eq!(result.content_failure, "");
}

/// Runs rounds `0..rounds` over `names`; returns per round the sites that
/// got a content check.
async fn checked_per_round(
    sites: &FakeSites,
    schedule: &Schedule,
    names: &[String],
    rounds: u64,
) -> Vec<Vec<String>> {
    let prober = Prober::new(ProbeConfig::default()).expect("prober");
    let metrics = AgentMetrics::new();
    let mut out = Vec::new();
    for round in 0..rounds {
        let (tx, mut rx) = tokio::sync::mpsc::channel(names.len() * 2);
        let targets = names
            .iter()
            .map(|name| Site {
                name: name.clone(),
                target: fixed(sites.port()),
            })
            .collect();
        run_round(schedule, round, targets, &prober, &tx, &metrics).await;
        drop(tx);
        let mut checked = Vec::new();
        while let Some(record) = rx.recv().await {
            let Some(Kind::Probe(result)) = record.kind else {
                panic!("a probe record");
            };
            if result.content() == ContentOutcome::Unspecified {
                assert_eq!(result.method(), ProbeMethod::Head, "{result:?}");
            } else {
                assert_eq!(result.method(), ProbeMethod::Get, "{result:?}");
                checked.push(result.site);
            }
        }
        checked.sort();
        out.push(checked);
    }
    out
}

#[tokio::test]
async fn each_site_is_content_checked_every_nth_round() {
    let sites = FakeSites::start().await;
    let names: Vec<String> = (0..30).map(|i| format!("site{i}.test")).collect();
    let schedule =
        Schedule::once(8).with_content(Some(checks("every_rounds = 3")), Duration::from_secs(60));
    let per_round = checked_per_round(&sites, &schedule, &names, 6).await;
    for name in &names {
        let rounds: Vec<usize> = (0..6).filter(|r| per_round[*r].contains(name)).collect();
        assert_eq!(rounds.len(), 2, "{name}: {rounds:?}");
        assert_eq!(rounds[1] - rounds[0], 3, "{name}: {rounds:?}");
    }
    // A round does not fetch every site at once.
    for checked in &per_round[..3] {
        assert!(checked.len() < names.len(), "{per_round:?}");
    }
    // Without content checks every probe is the HEAD-first one.
    let plain = Schedule::once(8);
    let per_round = checked_per_round(&sites, &plain, &names, 2).await;
    assert!(per_round.iter().all(Vec::is_empty), "{per_round:?}");
}
