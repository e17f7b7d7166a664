//! Part: alert latency. From the probe that sees a site fail to the webhook
//! receiver getting the notification, through the whole pipeline: agent
//! batching, gRPC to the collector, the store write, the collector's watch
//! stream, the alerter's rules and routing (`group_wait`), HTTP delivery.
//!
//! Several configurations run side by side, each its own stack (collector on
//! SQLite, one agent, one alerter, one fake webhook receiver) probing its own
//! sites of one `FakeSites` server: a wave flips the same site numbers to 500
//! in every stack at once, waits for every stack's firing notifications, then
//! heals them. Every incident is a site never flipped before in that stack,
//! so incidents never share an alert or a group.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use livehead_testkit::free_port;
use livehead_testkit::receiver::{FakeReceiver, Received};
use livehead_testkit::sites::FakeSites;
use rand::seq::SliceRandom;
use tokio::runtime::Runtime;

use crate::livehead::{Collector, Env, StoreKind, agent_command};
use crate::proc::Service;
use crate::table::{Table, num};

// Every part's options are named `Args`: no group, or their names clash.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Sites each configuration's agent probes.
    #[arg(id = "alert-sites", long = "alert-sites", default_value_t = 200)]
    pub sites: usize,
    /// Incidents per configuration; each fails a site of its own, so at most
    /// --alert-sites.
    #[arg(
        id = "alert-incidents",
        long = "alert-incidents",
        default_value_t = 120
    )]
    pub incidents: usize,
    /// Sites flipped to 500 together in one wave.
    #[arg(id = "alert-wave", long = "alert-wave", default_value_t = 6)]
    pub wave: usize,
    /// The agents' round interval (every site is probed once per round).
    #[arg(
        id = "alert-interval",
        long = "alert-interval",
        default_value = "1s",
        value_parser = humantime::parse_duration
    )]
    pub interval: Duration,
    /// Fraction of the interval over which each round's probes start (the
    /// agent's `--spread`): 1 makes records flow steadily, as on a node with
    /// many sites, so a failing probe lands anywhere in a batch's window.
    #[arg(id = "alert-spread", long = "alert-spread", default_value_t = 1.0)]
    pub spread: f64,
    /// The agent's `[batch] max_delay` in the configurations that shorten it.
    #[arg(
        id = "alert-fast-max-delay",
        long = "alert-fast-max-delay",
        default_value = "50ms",
        value_parser = humantime::parse_duration
    )]
    pub fast_max_delay: Duration,
    /// Longest wait for a wave's firing notifications before the run fails.
    #[arg(
        id = "alert-timeout",
        long = "alert-timeout",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub timeout: Duration,
}

/// The routes' default `group_interval`: resolved notifications of the
/// configurations that keep it arrive this long after the firing one.
const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(60);
/// The p99 the issue asks for.
const TARGET_P99_MS: f64 = 1000.0;

/// One configuration under test.
struct Variant {
    /// Also the agent's name (the alert's `node`) and the sites' domain.
    name: &'static str,
    label: &'static str,
    /// What it sets, for the table's notes.
    settings: String,
    /// Keys added to the rule, TOML.
    rule: &'static str,
    /// Keys added to the root route, TOML.
    route: &'static str,
    /// The agent's `[batch] max_delay`; `None` keeps its default (250ms).
    max_delay: Option<Duration>,
}

fn variants(args: &Args) -> Vec<Variant> {
    let fast = humantime::format_duration(args.fast_max_delay).to_string();
    vec![
        Variant {
            name: "fastest",
            label: "fastest",
            settings: format!(
                "rule `failure_threshold = 1`, no `for`; route `group_wait = \"0s\"`, \
                 `group_interval = \"0s\"`; agent `[batch] max_delay = \"{fast}\"`"
            ),
            rule: "failure_threshold = 1\n",
            route: "group_wait = \"0s\"\ngroup_interval = \"0s\"\n",
            max_delay: Some(args.fast_max_delay),
        },
        Variant {
            name: "defaults",
            label: "defaults",
            settings: "the rule's and the route's defaults (`failure_threshold` 1, no `for`, \
                       `group_wait` 500ms, `group_interval` 1m), the agent's default batch \
                       `max_delay` (250ms)"
                .into(),
            rule: "",
            route: "",
            max_delay: None,
        },
        Variant {
            name: "batch",
            label: "defaults, agent max_delay short",
            settings: format!(
                "the defaults above except the agent's `[batch] max_delay = \"{fast}\"`: \
                 the difference with `defaults` is the agent's batching"
            ),
            rule: "",
            route: "",
            max_delay: Some(args.fast_max_delay),
        },
    ]
}

/// A configuration's processes and its receiver. Fields drop in order: the
/// alerter and the agent stop before the collector they talk to.
struct Stack {
    variant: Variant,
    alerter: Service,
    alerter_api: SocketAddr,
    agent: Service,
    collector: Collector,
    receiver: FakeReceiver,
}

impl Stack {
    fn site(&self, index: usize) -> String {
        site_name(self.variant.name, index)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        self.alerter.check_running()?;
        self.agent.check_running()?;
        self.collector.service.check_running()
    }
}

fn site_name(domain: &str, index: usize) -> String {
    format!("s{index:03}.{domain}.test")
}

/// One notification the webhook receiver got, as Alertmanager's format
/// says it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notified {
    site: String,
    firing: bool,
    /// `startsAt`: the failing probe's timestamp.
    starts_ms: u64,
    /// `endsAt` of a resolved alert: the first good probe's timestamp.
    ends_ms: Option<u64>,
    /// When the receiver got it.
    at_ms: u64,
}

pub fn run(env: &Env, args: &Args) -> anyhow::Result<Vec<Table>> {
    check_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sites = runtime.block_on(FakeSites::start());
    let variants = variants(args);
    let mut names: Vec<String> = variants.iter().map(|v| v.name.to_owned()).collect();
    names.push("alerter".to_owned());
    let pki = env.pki(&names)?;
    let mut stacks = Vec::new();
    for variant in variants {
        stacks.push(start_stack(env, &runtime, &pki, &sites, variant, args)?);
    }
    wait_ready(&runtime, &mut stacks, args)?;
    eprintln!("alert: {} stacks ready, starting the waves", stacks.len());
    let started = Instant::now();
    let flipped = waves(&sites, &mut stacks, args)?;
    let waves_took = started.elapsed();
    let resolved = wait_resolves(&mut stacks, &flipped, args)?;
    let results = stacks
        .iter()
        .map(|stack| summarize(stack, &flipped, resolved))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(tables(&stacks, &results, args, waves_took))
}

fn check_args(args: &Args) -> anyhow::Result<()> {
    ensure!(args.sites > 0, "--alert-sites must be at least 1");
    ensure!(
        args.incidents > 0 && args.incidents <= args.sites,
        "--alert-incidents must be between 1 and --alert-sites ({}): each incident fails a \
         site never failed before",
        args.sites
    );
    ensure!(args.wave > 0, "--alert-wave must be at least 1");
    ensure!(
        (0.0..=1.0).contains(&args.spread),
        "--alert-spread is a fraction of the interval, between 0 and 1"
    );
    ensure!(
        !args.interval.is_zero(),
        "--alert-interval must be above zero"
    );
    Ok(())
}

fn start_stack(
    env: &Env,
    runtime: &Runtime,
    pki: &Path,
    sites: &FakeSites,
    variant: Variant,
    args: &Args,
) -> anyhow::Result<Stack> {
    let name = variant.name;
    let receiver = runtime.block_on(FakeReceiver::start());
    let collector = Collector::start(
        env,
        &format!("alert-{name}-collector"),
        pki,
        &StoreKind::Sqlite(env.path(&format!("alert-{name}.db"))),
        "[watch]\nallow = [\"alerter\"]\n",
    )?;
    let rules_path = env.path(&format!("alert-{name}-rules.toml"));
    std::fs::write(&rules_path, rules(&variant, &receiver))?;
    let alerter_api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = env.livehead();
    command
        .arg("alerter")
        .arg("--rules")
        .arg(&rules_path)
        .arg("--state-dir")
        .arg(env.path(&format!("alert-{name}-state")))
        .arg("--collector-url")
        .arg(collector.grpc_url())
        .arg("--listen")
        .arg(alerter_api.to_string())
        .arg("--tls-ca")
        .arg(pki.join("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.join("agent-alerter.pem"))
        .arg("--tls-key")
        .arg(pki.join("agent-alerter-key.pem"))
        .env("RUST_LOG", "warn");
    let mut alerter = Service::spawn(
        &format!("alerter ({name})"),
        &mut command,
        &env.path(&format!("alert-{name}-alerter.log")),
    )?;
    alerter.wait_for_port(alerter_api)?;
    let agent = start_agent(env, pki, sites, &variant, &collector, args)?;
    Ok(Stack {
        variant,
        alerter,
        alerter_api,
        agent,
        collector,
        receiver,
    })
}

/// One rule (a 5xx answer), one webhook receiver, one route grouping by
/// site so that every incident is its own group and notification.
fn rules(variant: &Variant, receiver: &FakeReceiver) -> String {
    format!(
        "[[rules]]\nname = \"SiteServerError\"\nkind = \"status\"\nseverity = \"error\"\n\
         statuses = [\"5xx\"]\n{rule}\n\
         [[receivers]]\nkind = \"webhook\"\nname = \"bench\"\nurl = \"{url}\"\n\n\
         [route]\nreceiver = \"bench\"\ngroup_by = [\"alertname\", \"site\"]\n{route}",
        rule = variant.rule,
        route = variant.route,
        url = receiver.url("/hook"),
    )
}

fn start_agent(
    env: &Env,
    pki: &Path,
    sites: &FakeSites,
    variant: &Variant,
    collector: &Collector,
    args: &Args,
) -> anyhow::Result<Service> {
    let name = variant.name;
    let list = env.path(&format!("alert-{name}-sites.txt"));
    let names: Vec<String> = (0..args.sites).map(|i| site_name(name, i)).collect();
    std::fs::write(&list, names.join("\n"))?;
    let mut command = agent_command(env, pki, name, collector);
    command
        .arg("--sites-file")
        .arg(&list)
        .arg("--target")
        .arg(sites.addr().to_string())
        .arg("--interval")
        .arg(humantime::format_duration(args.interval).to_string())
        .arg("--spread")
        .arg(args.spread.to_string())
        .arg("--no-sample");
    if let Some(delay) = variant.max_delay {
        let config = env.path(&format!("alert-{name}-agent.toml"));
        std::fs::write(
            &config,
            format!(
                "[batch]\nmax_delay = \"{}\"\n",
                humantime::format_duration(delay)
            ),
        )?;
        command.arg("--config").arg(config);
    }
    Service::spawn(
        &format!("agent ({name})"),
        &mut command,
        &env.path(&format!("alert-{name}-agent.log")),
    )
}

/// Waits until every alerter has seen two full rounds on its live stream,
/// so the first wave does not measure a connection being set up; and checks
/// that healthy sites notified nothing.
fn wait_ready(runtime: &Runtime, stacks: &mut [Stack], args: &Args) -> anyhow::Result<()> {
    let client = livehead_testkit::http_client();
    let want = 2.0 * args.sites as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    for stack in stacks.iter_mut() {
        let url = format!("http://{}/metrics", stack.alerter_api);
        loop {
            stack.check_running()?;
            let body = runtime.block_on(async {
                client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            });
            let live = body.map_or(0.0, |b| {
                metric(&b, "livehead_alerter_watch_records_total", "live")
            });
            if live >= want {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "alerter ({}) saw {live} live records after 60 s, expected {want}",
                    stack.variant.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let got = stack.receiver.received();
        ensure!(
            got.is_empty(),
            "alerter ({}) notified before any site failed: {:?}",
            stack.variant.name,
            got.iter().map(|r| &r.json).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The value of `name{source="<source>"}` in a Prometheus text body.
fn metric(body: &str, name: &str, source: &str) -> f64 {
    let prefix = format!("{name}{{source=\"{source}\"}}");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the waves; returns the sites failed, by index, with the time each
/// was flipped (unix ms).
fn waves(
    sites: &FakeSites,
    stacks: &mut [Stack],
    args: &Args,
) -> anyhow::Result<BTreeMap<usize, u64>> {
    let mut flipped = BTreeMap::new();
    // Sites in random order: a batch is cut at the same place of every
    // round, so the first sites of the list would all ride in a batch about
    // to leave and measure no batching at all.
    let mut order: Vec<usize> = (0..args.sites).collect();
    order.shuffle(&mut rand::rng());
    order.truncate(args.incidents);
    let mut next = 0;
    for wave in order.chunks(args.wave) {
        next += wave.len();
        // A random phase against the rounds, as real failures have.
        let pause_ms = rand::random_range(0..args.interval.as_millis().max(1) as u64);
        std::thread::sleep(Duration::from_millis(pause_ms));
        let now = unix_ms();
        for stack in stacks.iter() {
            for &i in wave {
                sites.set_status(&stack.site(i), 500);
            }
        }
        for &i in wave {
            flipped.insert(i, now);
        }
        wait_firing(stacks, wave, args)?;
        for stack in stacks.iter() {
            for &i in wave {
                sites.heal(&stack.site(i));
            }
        }
        eprintln!("alert: {next}/{} incidents notified", args.incidents);
    }
    Ok(flipped)
}

/// Waits until every stack's receiver got the firing notification of every
/// site of the wave.
fn wait_firing(stacks: &mut [Stack], wave: &[usize], args: &Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.timeout;
    for stack in stacks.iter_mut() {
        let want: BTreeSet<String> = wave.iter().map(|&i| stack.site(i)).collect();
        loop {
            let got: BTreeSet<String> = notified(&stack.receiver.received())?
                .into_iter()
                .filter(|n| n.firing)
                .map(|n| n.site)
                .collect();
            if want.is_subset(&got) {
                break;
            }
            stack.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "alerter ({}): no firing notification for {:?} after {}",
                    stack.variant.name,
                    want.difference(&got).collect::<Vec<_>>(),
                    humantime::format_duration(args.timeout)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Waits for every incident's resolved notification, as long as the
/// slowest configuration's `group_interval` allows; returns whether they
/// all came.
fn wait_resolves(
    stacks: &mut [Stack],
    flipped: &BTreeMap<usize, u64>,
    args: &Args,
) -> anyhow::Result<bool> {
    eprintln!("alert: waiting for the resolved notifications (up to group_interval, 1m)");
    let deadline = Instant::now() + DEFAULT_GROUP_INTERVAL + args.timeout;
    for stack in stacks.iter_mut() {
        let want: BTreeSet<String> = flipped.keys().map(|&i| stack.site(i)).collect();
        loop {
            let got: BTreeSet<String> = notified(&stack.receiver.received())?
                .into_iter()
                .filter(|n| !n.firing)
                .map(|n| n.site)
                .collect();
            if want.is_subset(&got) {
                break;
            }
            stack.check_running()?;
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(true)
}

/// Every request of a webhook receiver, one alert each (groups by site).
fn notified(received: &[Received]) -> anyhow::Result<Vec<Notified>> {
    received.iter().map(parse_notification).collect()
}

fn parse_notification(r: &Received) -> anyhow::Result<Notified> {
    let alerts = r.json["alerts"]
        .as_array()
        .with_context(|| format!("a webhook body without `alerts`: {}", r.json))?;
    let [alert] = alerts.as_slice() else {
        bail!(
            "a webhook body with {} alerts, expected one (group_by site): {}",
            alerts.len(),
            r.json
        );
    };
    let site = alert["labels"]["site"]
        .as_str()
        .with_context(|| format!("an alert without `labels.site`: {alert}"))?
        .to_owned();
    let firing = match alert["status"].as_str() {
        Some("firing") => true,
        Some("resolved") => false,
        _ => bail!("an alert whose status is neither firing nor resolved: {alert}"),
    };
    let time = |key: &str| -> anyhow::Result<u64> {
        let text = alert[key]
            .as_str()
            .with_context(|| format!("an alert without `{key}`: {alert}"))?;
        let at = humantime::parse_rfc3339(text)
            .with_context(|| format!("`{key}` is not RFC 3339: {text:?}"))?;
        Ok(at.duration_since(UNIX_EPOCH)?.as_millis() as u64)
    };
    Ok(Notified {
        site,
        firing,
        starts_ms: time("startsAt")?,
        ends_ms: if firing { None } else { Some(time("endsAt")?) },
        at_ms: r.at_unix_ms,
    })
}

/// What one configuration measured.
struct Summary {
    firing_ms: Vec<f64>,
    resolved_ms: Vec<f64>,
    /// Flip → failing probe: the round's phase, not counted.
    detect_ms: Vec<f64>,
}

/// Latencies of one stack; fails on any notification the incidents do not
/// explain (a duplicate, a site never failed).
fn summarize(
    stack: &Stack,
    flipped: &BTreeMap<usize, u64>,
    all_resolved: bool,
) -> anyhow::Result<Summary> {
    let by_site: BTreeMap<String, u64> =
        flipped.iter().map(|(&i, &t)| (stack.site(i), t)).collect();
    let mut summary = Summary {
        firing_ms: Vec::new(),
        resolved_ms: Vec::new(),
        detect_ms: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for n in notified(&stack.receiver.received())? {
        let name = stack.variant.name;
        let Some(&flipped_ms) = by_site.get(&n.site) else {
            bail!("alerter ({name}) notified {} which never failed", n.site);
        };
        ensure!(
            seen.insert((n.site.clone(), n.firing)),
            "alerter ({name}) notified {} {} twice",
            n.site,
            if n.firing { "firing" } else { "resolved" }
        );
        if n.firing {
            summary.firing_ms.push(delta(n.at_ms, n.starts_ms));
            summary.detect_ms.push(delta(n.starts_ms, flipped_ms));
        } else if let Some(ends) = n.ends_ms {
            summary.resolved_ms.push(delta(n.at_ms, ends));
        }
    }
    ensure!(
        summary.firing_ms.len() == flipped.len(),
        "alerter ({}): {} firing notifications for {} incidents",
        stack.variant.name,
        summary.firing_ms.len(),
        flipped.len()
    );
    ensure!(
        !all_resolved || summary.resolved_ms.len() == flipped.len(),
        "alerter ({}): {} resolved notifications for {} incidents",
        stack.variant.name,
        summary.resolved_ms.len(),
        flipped.len()
    );
    for list in [
        &mut summary.firing_ms,
        &mut summary.resolved_ms,
        &mut summary.detect_ms,
    ] {
        list.sort_by(f64::total_cmp);
    }
    Ok(summary)
}

/// `later - earlier` in ms, negative if the clocks say so (one machine,
/// one clock: it would show a bug, not drift).
fn delta(later: u64, earlier: u64) -> f64 {
    later as f64 - earlier as f64
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn tables(stacks: &[Stack], results: &[Summary], args: &Args, took: Duration) -> Vec<Table> {
    let mut firing = Table::new(
        &format!(
            "Alert latency: failing probe → webhook receiver ({} sites per agent probed every {}, \
             collector on SQLite)",
            args.sites,
            humantime::format_duration(args.interval)
        ),
        &[
            "configuration",
            "incidents",
            "p50 (ms)",
            "p90 (ms)",
            "p99 (ms)",
            "max (ms)",
            "p99 < 1 s",
        ],
    );
    for (stack, summary) in stacks.iter().zip(results) {
        let l = &summary.firing_ms;
        let p99 = percentile(l, 99.0);
        firing.row(vec![
            stack.variant.label.to_owned(),
            l.len().to_string(),
            num(percentile(l, 50.0)),
            num(percentile(l, 90.0)),
            num(p99),
            num(percentile(l, 100.0)),
            if p99 < TARGET_P99_MS { "met" } else { "missed" }.to_owned(),
        ]);
    }
    firing.note(
        "Latency = the receiver's arrival time − `startsAt` (the timestamp of the probe that \
         got the 500, taken when the probe starts). It includes the probe's own answer, the \
         agent's batching (`max_delay`), gRPC to the collector, the SQLite write (group \
         commit), the collector's watch stream, the alerter's evaluation, state save and \
         routing (`group_wait`) and the webhook's HTTP delivery. Not included: the time from \
         the site failing to the next probe (the round interval's phase).",
    );
    firing.note(
        "Every configuration: one `status` rule on `5xx`, a `webhook` receiver, \
         `group_by = [\"alertname\", \"site\"]` (one group per incident).",
    );
    for stack in stacks {
        firing.note(format!(
            "- {}: {}.",
            stack.variant.label, stack.variant.settings
        ));
    }
    firing.note(format!(
        "{} incidents per configuration in waves of {} sites, each a site never failed \
         before (picked at random), all configurations flipped at the same moment, healed \
         once every configuration notified; the waves took {:.0} s. Agents: `--spread {}`. \
         Flip → failing probe (not counted) p50 {} ms, max {} ms.",
        args.incidents,
        args.wave,
        took.as_secs_f64(),
        args.spread,
        num(results
            .first()
            .map_or(f64::NAN, |s| percentile(&s.detect_ms, 50.0))),
        num(results
            .first()
            .map_or(f64::NAN, |s| percentile(&s.detect_ms, 100.0))),
    ));
    let mut resolved = Table::new(
        "Resolve latency: first good probe → webhook receiver (reported apart)",
        &[
            "configuration",
            "resolved",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
        ],
    );
    for (stack, summary) in stacks.iter().zip(results) {
        let l = &summary.resolved_ms;
        resolved.row(vec![
            stack.variant.label.to_owned(),
            format!("{}/{}", l.len(), summary.firing_ms.len()),
            num(percentile(l, 50.0)),
            num(percentile(l, 99.0)),
            num(percentile(l, 100.0)),
        ]);
    }
    resolved.note(
        "From `endsAt` (the first probe answering 200 again) to the receiver. A group that \
         notified waits `group_interval` (1m by default) before its next notification, its \
         resolve included: that is the defaults' figure.",
    );
    vec![firing, resolved]
}

fn unix_ms() -> u64 {
    livehead_common::clock::unix_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 100.0);
        assert_eq!(percentile(&values, 99.0), 198.0);
        assert_eq!(percentile(&values, 100.0), 200.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn reads_the_live_records_counter() {
        let body = "# HELP watch_records_total Records\n\
                    watch_records_total{source=\"live\"} 400\n\
                    watch_records_total{source=\"snapshot\"} 12\n";
        assert_eq!(metric(body, "watch_records_total", "live"), 400.0);
        assert_eq!(metric(body, "watch_records_total", "snapshot"), 12.0);
        assert_eq!(metric(body, "watch_streams", "live"), 0.0);
    }

    fn received(json: serde_json::Value, at_unix_ms: u64) -> Received {
        Received {
            method: http::Method::POST,
            path: "/hook".into(),
            query: String::new(),
            headers: Default::default(),
            raw: serde_json::to_vec(&json).unwrap_or_default().into(),
            json,
            at: Instant::now(),
            at_unix_ms,
        }
    }

    #[test]
    fn reads_alertmanager_webhook_bodies() {
        let firing = serde_json::json!({
            "version": "4",
            "status": "firing",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "SiteServerError", "site": "s007.fastest.test"},
                "startsAt": "2026-01-01T00:00:00.250Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }],
        });
        let n = parse_notification(&received(firing, 1_767_225_600_400)).expect("a firing body");
        assert_eq!(
            n,
            Notified {
                site: "s007.fastest.test".into(),
                firing: true,
                starts_ms: 1_767_225_600_250,
                ends_ms: None,
                at_ms: 1_767_225_600_400,
            }
        );
        let resolved = serde_json::json!({
            "alerts": [{
                "status": "resolved",
                "labels": {"site": "s007.fastest.test"},
                "startsAt": "2026-01-01T00:00:00.250Z",
                "endsAt": "2026-01-01T00:00:01Z",
            }],
        });
        let n = parse_notification(&received(resolved, 0)).expect("a resolved body");
        assert_eq!(n.ends_ms, Some(1_767_225_601_000));
        assert!(!n.firing);
    }

    #[test]
    fn refuses_grouped_or_siteless_bodies() {
        let two = serde_json::json!({"alerts": [{}, {}]});
        let err = parse_notification(&received(two, 0)).expect_err("two alerts");
        assert!(err.to_string().contains("2 alerts"), "{err}");
        let no_site = serde_json::json!({"alerts": [{"status": "firing", "labels": {}}]});
        let err = parse_notification(&received(no_site, 0)).expect_err("no site");
        assert!(err.to_string().contains("labels.site"), "{err}");
    }

    #[test]
    fn site_names_do_not_suffix_each_other() {
        assert_eq!(site_name("fastest", 7), "s007.fastest.test");
        assert!(!site_name("batch", 17).ends_with(&site_name("batch", 7)));
        assert!(!site_name("batch", 107).ends_with(&site_name("batch", 7)));
    }
}
